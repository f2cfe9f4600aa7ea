"""The dataset object every model sees: splits with CSR label matrices over one label vocabulary.

Label ids: labels of the training file first (in order of first appearance), then those first seen in a
validation file, then those seen only in test. Test-only labels are kept and counted, never given garbage
ids; a model simply has no training signal for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.data.formats import (
    SVMLIGHT_SUFFIXES,
    file_digest,
    read_jsonl,
    read_pecos_split,
    read_svmlight,
    svmlight_label_name,
)
from xmlbench.data.manifest import DATASETS, DatasetInfo
from xmlbench.data.readers import (
    LabelRows,
    LabelVocab,
    TextLines,
    TextList,
    check_declared_sizes,
    read_bow,
    read_label_lines,
    scan_lines,
)
from xmlbench.errors import UserError
from xmlbench.paths import datasets_dir


@dataclass
class Split:
    """Documents of one split. ``rows`` index the underlying file (texts or features) when the split is a
    subset of it, e.g. the validation split carved from train; token caches are keyed by that file."""

    name: str
    labels: sp.csr_matrix  # (n, L) float32, sorted int32 indices
    texts: TextLines | TextList | None = None
    features: sp.csr_matrix | None = None  # bag-of-words datasets only
    rows: np.ndarray | None = None  # rows of the underlying file; None = all, in order

    @classmethod
    def of_texts(cls, texts: TextLines | TextList | list[str], n_labels: int, name: str = "texts") -> Split:
        """Documents without labels (raw texts to predict): an empty (n, n_labels) label matrix."""
        lines = TextList(texts) if isinstance(texts, list) else texts
        labels = sp.csr_matrix((len(lines), n_labels), dtype=np.float32)
        labels.indices = labels.indices.astype(np.int32)
        return cls(name, labels=labels, texts=lines)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def file_rows(self) -> np.ndarray:
        return np.arange(len(self)) if self.rows is None else self.rows

    def iter_texts(self) -> Iterator[str]:
        if self.texts is None:
            raise UserError(f"the {self.name} split has no texts (bag-of-words dataset); use a text model")
        return self.texts.iter_lines(self.rows)

    def subset(self, idx: np.ndarray, name: str | None = None) -> Split:
        idx = np.asarray(idx, dtype=np.int64)
        return Split(
            name=name or self.name,
            labels=self.labels[idx],
            texts=self.texts,
            features=self.features,
            rows=self.file_rows[idx],
        )

    def feature_rows(self) -> sp.csr_matrix:
        if self.features is None:
            raise UserError(f"the {self.name} split has no bag-of-words features")
        return self.features if self.rows is None else self.features[self.rows]


@dataclass
class Dataset:
    name: str
    path: Path
    format: str
    label_names: list[str]
    train: Split
    test: Split
    valid: Split | None  # from valid_* files, when the dataset ships them
    fingerprint: str
    info: DatasetInfo | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""  # how records name it: a registered name or preset, else the absolute folder

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    def label_counts(self) -> np.ndarray:
        """Training documents per label (int64, length n_labels)."""
        return np.bincount(self.train.labels.indices, minlength=self.n_labels).astype(np.int64)

    def inv_propensity(self) -> np.ndarray:
        from xmlbench.metrics.propensity import inv_propensity

        a = self.info.propensity_a if self.info else 0.55
        b = self.info.propensity_b if self.info else 1.5
        return inv_propensity(self.label_counts(), len(self.train), A=a, B=b)

    @property
    def has_texts(self) -> bool:
        return self.train.texts is not None


def label_space(name: str, label_names: list[str], info: DatasetInfo | None = None) -> Dataset:
    """A dataset with labels and no documents: what a saved model is rebuilt on when only its run folder
    is at hand (models rebuild their own label space from their folder, see ``Model.restore``). Its
    splits are empty text splits, so text models accept it."""
    empty = Split.of_texts([], len(label_names), "train")
    return Dataset(name=name, path=Path("."), format="text", label_names=list(label_names), train=empty,
                   test=Split.of_texts([], len(label_names), "test"), valid=None, fingerprint="", info=info)


def resolve_dataset_path(name_or_path: str) -> tuple[Path, DatasetInfo | None]:
    """A registered name (or alias), a synthetic preset (generated on first use), or a folder path."""
    if name_or_path in DATASETS:
        info = DATASETS.get(name_or_path)
        if not _has_files(info.folder):
            raise UserError(
                f"dataset {info.name!r} is not in {info.folder}: run 'xmlbench data download {info.name}' "
                f"or unpack its files ({info.train_texts}, train_labels.txt, ...) there"
            )
        missing = missing_files(info.folder)
        if missing:
            raise UserError(f"dataset {info.name!r} in {info.folder} is incomplete: "
                            f"missing {', '.join(missing)}")
        return info.folder, info
    from xmlbench.data.synth import PRESETS, write_synthetic

    if name_or_path in PRESETS:
        folder = datasets_dir() / name_or_path
        if not _synthetic_is_current(folder, name_or_path):
            write_synthetic(name_or_path, folder, seed=0)
        return folder, None
    path = Path(name_or_path)
    if path.is_dir():
        return path, None
    known = ", ".join(DATASETS.names() + PRESETS.names())
    raise UserError(f"unknown dataset {name_or_path!r}: not a registered name nor a folder; known: {known}")


def _synthetic_is_current(folder: Path, preset: str) -> bool:
    """A generated folder is reused only if it was made from the preset as it is now (specs evolve)."""
    import json

    from xmlbench.config import to_dict
    from xmlbench.data.synth import PRESETS

    try:
        meta = json.loads((folder / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("seed") == 0 and meta.get("spec") == to_dict(PRESETS.get(preset))


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("train*"))


UNLABELLED = ("error", "drop", "keep")  # --unlabelled: what becomes of documents without labels

# The files each format requires in a dataset folder (split -> candidate names, the first found is read);
# "text" and "bow" are the native formats (readers.py), the others are read by formats.py.
FORMAT_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "text": {"train": ("train_texts.txt", "train_raw_texts.txt"), "train labels": ("train_labels.txt",),
             "test": ("test_texts.txt", "test_raw_texts.txt"), "test labels": ("test_labels.txt",)},
    "svmlight": {"train": tuple(f"train{s}" for s in SVMLIGHT_SUFFIXES),
                 "test": tuple(f"test{s}" for s in SVMLIGHT_SUFFIXES)},
    "pecos": {"train": ("X.trn.npz",), "train labels": ("Y.trn.npz",), "test": ("X.tst.npz",),
              "test labels": ("Y.tst.npz",)},
    "jsonl": {"train": ("train.jsonl",), "test": ("test.jsonl",)},
}


def dataset_format(folder: Path) -> str:
    """The format of the files in ``folder``, by their names: text (LightXML), bow (Extreme Classification
    Repository), svmlight, pecos or jsonl. A folder holding the train files of two formats is refused in
    one line (which would be read is a guess); one holding none is taken as text, whose messages then name
    the files it lacks."""
    if not folder.is_dir():
        return "text"
    found: dict[str, list[str]] = {}
    for fmt, files in FORMAT_FILES.items():
        names = [n for key in ("train", "train labels") for n in files.get(key, ()) if (folder / n).is_file()]
        if names:
            found[fmt] = names
    bow = _bow_files(folder)
    if bow:
        found["bow"] = [bow["train"].name]
    if len(found) > 1:
        parts = "; ".join(f"{fmt}: {', '.join(names)}" for fmt, names in found.items())
        raise UserError(f"{folder}: holds the files of {len(found)} dataset formats ({parts}); keep one "
                        "format per folder (move the others elsewhere)")
    return next(iter(found), "text")


def missing_files(folder: Path) -> list[str]:
    """The files a dataset folder lacks ([] when complete) for the format its files are in (text when
    none is recognised): each split's texts (or features) and labels, train and test."""
    fmt = dataset_format(folder)
    if fmt == "bow":
        return []
    return [" or ".join(names) for names in FORMAT_FILES[fmt].values()
            if not any((folder / n).is_file() for n in names)]


def open_dataset(name_or_path: str, progress: bool = False, unlabelled: str = "error") -> Dataset:
    """The dataset a name, preset or folder names. ``unlabelled``: documents without labels are an error
    naming their file and line (``error``, the default), removed from their split (``drop``) or kept with
    an empty label row (``keep``; they count in P@k's denominator as misses); ``ds.meta["unlabelled"]``
    counts them per split."""
    if unlabelled not in UNLABELLED:
        raise UserError(f"--unlabelled must be one of {', '.join(UNLABELLED)}, not {unlabelled!r}")
    path, info = resolve_dataset_path(name_or_path)
    path = path.resolve()  # a record keeps where the data was, wherever it is read from later
    name = info.name if info else (name_or_path if not Path(name_or_path).is_dir() else path.name)
    opener = {"text": _open_text, "bow": _open_bow, "svmlight": _open_svmlight, "pecos": _open_pecos,
              "jsonl": _open_jsonl}[dataset_format(path)]
    ds = opener(path, name, info, progress, unlabelled != "error")
    ds.source = dataset_source(name_or_path, path)
    return _apply_unlabelled(ds, unlabelled)


def dataset_source(name_or_path: str, folder: Path) -> str:
    """How a record names the data so that it reopens from anywhere: a registered name or synthetic preset
    stays its name (it resolves the same everywhere); a folder is stored absolute."""
    from xmlbench.data.synth import PRESETS

    if name_or_path in DATASETS or name_or_path in PRESETS:
        return name_or_path
    return str(folder.resolve())


def _apply_unlabelled(ds: Dataset, policy: str) -> Dataset:
    counts = {}
    for attr in ("train", "valid", "test"):
        split = getattr(ds, attr)
        if split is None:
            continue
        has_labels = np.diff(split.labels.indptr) > 0
        counts[attr] = int((~has_labels).sum())
        if policy == "drop" and counts[attr]:
            setattr(ds, attr, split.subset(np.flatnonzero(has_labels), split.name))
    ds.meta["unlabelled"] = {"policy": policy, **counts}
    return ds


def _find(folder: Path, split: str, kind: str, required: bool = True) -> Path | None:
    """``{split}_texts.txt`` or ``{split}_raw_texts.txt`` (kind 'texts'); ``{split}_labels.txt``."""
    names = [f"{split}_texts.txt", f"{split}_raw_texts.txt"] if kind == "texts" else [f"{split}_labels.txt"]
    for n in names:
        if (folder / n).is_file():
            return folder / n
    if required:
        raise UserError(f"{folder / names[0]}: file not found (expected one of {', '.join(names)} in {folder})")
    return None


def _open_text(path: Path, name: str, info: DatasetInfo | None, progress: bool,
               allow_empty: bool = False) -> Dataset:
    if not path.is_dir():
        raise UserError(f"{path}: dataset folder not found")
    vocab = LabelVocab()
    lines: dict[str, tuple[TextLines, LabelRows]] = {}  # split -> (texts, label rows)
    digests = []
    for split in ("train", "valid", "test"):
        texts_path = _find(path, split, "texts", required=split != "valid")
        if texts_path is None:
            continue
        labels_path = _find(path, split, "labels")
        texts = scan_lines(texts_path, progress)
        labels = read_label_lines(labels_path, vocab, progress, allow_empty=allow_empty)
        n_texts = _count_without_trailing_blanks(texts, len(labels))
        if n_texts != len(labels):
            raise UserError(
                f"{texts_path}: {n_texts} documents but {labels_path.name} has {len(labels)} lines; "
                "texts and labels must be line-aligned"
            )
        texts.offsets = texts.offsets[: len(labels) + 1]
        lines[split] = (texts, labels)
        digests += [texts.digest, labels.digest]
    return _text_dataset(path, name, info, "text", vocab, lines, digests)


def _text_dataset(path: Path, name: str, info: DatasetInfo | None, fmt: str, vocab: LabelVocab,
                  lines: dict[str, tuple[TextLines, LabelRows]], digests: list[str]) -> Dataset:
    # CSR matrices only once every split is read: test-only labels widen the vocabulary.
    splits = {name: Split(name, labels=rows.to_csr(len(vocab)), texts=texts)
              for name, (texts, rows) in lines.items()}
    return Dataset(
        name=name,
        path=path,
        format=fmt,
        label_names=vocab.names,
        train=splits["train"],
        test=splits["test"],
        valid=splits.get("valid"),
        fingerprint=_fingerprint(digests),
        info=info,
    )


def _open_jsonl(path: Path, name: str, info: DatasetInfo | None, progress: bool,
                allow_empty: bool = False) -> Dataset:
    vocab = LabelVocab()
    lines: dict[str, tuple[TextLines, LabelRows]] = {}
    for split in ("train", "valid", "test"):
        file = path / f"{split}.jsonl"
        if split == "valid" and not file.is_file():
            continue
        lines[split] = read_jsonl(file, vocab, allow_empty)
    digests = [t.digest for t, _ in lines.values()]
    return _text_dataset(path, name, info, "jsonl", vocab, lines, digests)


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _open_svmlight(path: Path, name: str, info: DatasetInfo | None, progress: bool,
                   allow_empty: bool = False) -> Dataset:
    files = {}
    for split in ("train", "valid", "test"):
        names = tuple(f"{split}{s}" for s in SVMLIGHT_SUFFIXES)
        found = _first_file(path, names)
        if found is None and split != "valid":
            raise UserError(f"{path / names[0]}: file not found (expected one of {', '.join(names)} in {path})")
        if found is not None:
            files[split] = found
    loaded = read_svmlight(list(files.values()), allow_empty)
    vocab = LabelVocab()
    label_rows = {}
    for split, (_, y) in zip(files, loaded):
        ids = [sorted({vocab.add(svmlight_label_name(v)) for v in labels}) for labels in y]
        label_rows[split] = ids
    splits = {split: Split(split, labels=_label_csr(label_rows[split], len(vocab)), features=X)
              for split, (X, _) in zip(files, loaded)}
    digests = [file_digest(f) for f in files.values()]
    return Dataset(name=name, path=path, format="svmlight", label_names=vocab.names, train=splits["train"],
                   test=splits["test"], valid=splits.get("valid"), fingerprint=_fingerprint(digests), info=info)


def _open_pecos(path: Path, name: str, info: DatasetInfo | None, progress: bool,
                allow_empty: bool = False) -> Dataset:
    Xtr, Ytr, Ttr, dtr = read_pecos_split(path, "train", allow_empty)
    Xte, Yte, Tte, dte = read_pecos_split(path, "test", allow_empty)
    if Xtr.shape[1] != Xte.shape[1]:
        raise UserError(f"{path / 'X.tst.npz'}: {Xte.shape[1]} feature columns but X.trn.npz has {Xtr.shape[1]}")
    if Ytr.shape[1] != Yte.shape[1]:
        raise UserError(f"{path / 'Y.tst.npz'}: {Yte.shape[1]} label columns but Y.trn.npz has {Ytr.shape[1]}")
    if (Ttr is None) != (Tte is None):
        have, lack = ("X.trn.txt", "X.tst.txt") if Ttr is not None else ("X.tst.txt", "X.trn.txt")
        raise UserError(f"{path / lack}: file not found (the folder has {have}; raw texts come for both "
                        "splits or neither)")
    check_declared_sizes(path / "Y.trn.npz", Ytr.shape[1], Xtr.shape[1])
    return Dataset(name=name, path=path, format="pecos", label_names=[str(i) for i in range(Ytr.shape[1])],
                   train=Split("train", labels=Ytr, features=Xtr, texts=Ttr),
                   test=Split("test", labels=Yte, features=Xte, texts=Tte), valid=None,
                   fingerprint=_fingerprint([dtr, dte]), info=info)


def _label_csr(rows: list[list[int]], n_labels: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    idx = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(idx), np.float32), idx, indptr), shape=(len(rows), n_labels))


def _count_without_trailing_blanks(texts: TextLines, n_labels: int) -> int:
    """Blank lines after the last document of a texts file are a harmless quirk."""
    n = len(texts)
    if n <= n_labels:
        return n
    sizes = np.diff(texts.offsets[n_labels:])
    if np.all(sizes <= 2):  # '\n' or '\r\n' only
        return n_labels
    return n


def _bow_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for split in ("train", "test"):
        cands = [folder / f"{split}.txt", *sorted(folder.glob(f"*_{split}.txt"))]
        cands = [c for c in cands if c.is_file() and not c.name.endswith(("_texts.txt", "_labels.txt"))]
        if cands:
            found[split] = cands[0]
    return found if len(found) == 2 else {}


def _open_bow(path: Path, name: str, info: DatasetInfo | None, progress: bool,
              allow_empty: bool = False) -> Dataset:
    files = _bow_files(path)
    Xtr, ytr, dtr, ltr = read_bow(files["train"], progress, allow_empty)
    Xte, yte, dte, lte = read_bow(files["test"], progress, allow_empty)
    if Xtr.shape[1] != Xte.shape[1]:
        raise UserError(f"{files['test']}:1: {Xte.shape[1]} features but the train file declares {Xtr.shape[1]}")
    n_labels = max(ltr, lte)
    vocab_names = [str(i) for i in range(n_labels)]
    return Dataset(
        name=name,
        path=path,
        format="bow",
        label_names=vocab_names,
        train=Split("train", labels=_label_csr(ytr, n_labels), features=Xtr),
        test=Split("test", labels=_label_csr(yte, n_labels), features=Xte),
        valid=None,
        fingerprint=_fingerprint([dtr, dte]),
        info=info,
    )


def _fingerprint(digests: list[str]) -> str:
    return hashlib.blake2b("".join(digests).encode(), digest_size=8).hexdigest()


def carve_validation(train: Split, size: float, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded random part of train for model selection (``size`` < 1: a fraction, else a count).

    Both parts keep file order (sorted rows), which keeps text streaming sequential.
    """
    n = len(train)
    n_valid = int(round(size * n)) if size < 1 else int(size)
    if not 0 < n_valid < n:
        raise UserError(f"--valid-size {size:g} leaves no training or no validation documents "
                        f"(train has {n}); use a fraction in (0, 1) or a count below {n}")
    perm = np.random.default_rng(seed).permutation(n)
    valid_idx, train_idx = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    return train.subset(train_idx, "train"), train.subset(valid_idx, "valid")


def dataset_stats(ds: Dataset, max_docs_for_lengths: int = 100_000) -> dict:
    """Statistics for ``xmlbench data check``: counts, label-frequency and document-length quantiles."""
    counts = ds.label_counts()
    n_train, n_test = len(ds.train), len(ds.test)
    train_nnz = ds.train.labels.nnz
    in_train = counts > 0
    test_labels = np.unique(ds.test.labels.indices)
    seen_outside_test = in_train.copy()
    if ds.valid is not None:
        seen_outside_test[np.unique(ds.valid.labels.indices)] = True
    stats = {
        "name": ds.name,
        "path": str(ds.path),
        "format": ds.format,
        "fingerprint": ds.fingerprint,
        "n_train": n_train,
        "n_valid": len(ds.valid) if ds.valid is not None else 0,
        "n_test": n_test,
        "n_labels": ds.n_labels,
        "n_labels_train": int(in_train.sum()),
        "n_labels_test_only": int((~seen_outside_test[test_labels]).sum()),
        "avg_labels_per_doc": train_nnz / max(n_train, 1),
        "avg_docs_per_label": train_nnz / max(int(in_train.sum()), 1),
        "test_avg_labels_per_doc": ds.test.labels.nnz / max(n_test, 1),
        "label_freq_quantiles": _quantiles(counts[in_train]),
    }
    if ds.has_texts:
        lengths = _doc_lengths(ds.train, max_docs_for_lengths)
        stats["doc_len_words_quantiles"] = _quantiles(lengths)
        stats["doc_len_sampled_docs"] = len(lengths)
    if ds.info is not None and ds.info.published:
        stats["published"] = dict(ds.info.published)
    return stats


QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    qs = np.quantile(x, QUANTILES)
    return {f"q{int(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}


def _doc_lengths(split: Split, max_docs: int) -> np.ndarray:
    """Words per document; a seeded sample of ``max_docs`` documents on large splits."""
    n = len(split)
    rows = None if n <= max_docs else np.sort(np.random.default_rng(0).choice(n, max_docs, replace=False))
    sub = split if rows is None else split.subset(rows)
    return np.fromiter((len(t.split()) for t in sub.iter_texts()), dtype=np.int64)
