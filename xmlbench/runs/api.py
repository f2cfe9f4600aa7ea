"""The Python API over a finished run: ``xmlbench.load(RUN)`` and what ``xmlbench predict --texts`` writes.

    import xmlbench
    model = xmlbench.load("runs/tiny/tfidf-ovr/seed0")
    model.predict(["some text", "another"], k=5)  # per text [(label name, score), ...], best first
    model.label_names                             # the model's labels, in the order of its own ids
    model.evaluate("eurlex4k", split="test")      # metrics on any dataset, labels matched by name

Only the run folder is needed: the model is rebuilt on a dataset holding no documents and no labels
(:func:`xmlbench.data.dataset.label_space`), because every model rebuilds its own label space from its
folder (``Model.restore``). Raw texts become an in-memory :class:`~xmlbench.data.dataset.Split` with an
empty label matrix, which every model's ``predict`` takes like a dataset split: no temporary files.

Empty texts (an empty line, or one that preprocessing empties) still get a row. What a model makes of
one: tfidf-ovr scores an all-zero TF-IDF row, so it ranks labels by their biases alone (the same labels
for every empty text); LightXML encodes just the special tokens ([CLS] [SEP]); label-frequency predicts
its prior, as for every text. Scores are each model's own (tfidf-ovr: raw SVM margins, often negative;
LightXML: probabilities); a row of ``scores.npz`` is ranked by its stored values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.data.dataset import Split, label_space, open_dataset
from xmlbench.data.labels import names_array
from xmlbench.data.readers import TextLines, scan_lines
from xmlbench.errors import UserError
from xmlbench.io import atomic_path, read_json, write_text
from xmlbench.runs import record as rec

FORMATS = ("jsonl", "tsv")
SCORES = "scores.npz"
LABEL_NAMES = "label_names.txt"


class TrainedModel:
    """A saved run's model, predicting in its own label ids (those of ``label_names``)."""

    def __init__(self, run_dir: Path, model, record: dict) -> None:
        self.run_dir = run_dir
        self.model = model
        self.record = record

    @property
    def label_names(self) -> list[str]:
        return list(self.model.label_names)

    @property
    def name(self) -> str:
        return self.model.name

    def predict_arrays(self, texts: Sequence[str] | TextLines, k: int = 5,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), (n, k), best first; ids index ``label_names``, -1 where fewer than k labels."""
        k = check_k(k)
        if isinstance(texts, str):
            raise TypeError("predict takes a list of texts, not one string")
        lines = texts if isinstance(texts, TextLines) else list(texts)
        if len(lines) == 0:  # a neural token cache of 0 documents is refused; nothing to compute anyway
            return np.zeros((0, k), dtype=np.int32), np.zeros((0, k), dtype=np.float32)
        split = Split.of_texts(lines, len(self.label_names))
        ids, scores = self.model.predict_own(split, k, progress=progress)
        return ids[:, :k], scores[:, :k]

    def predict(self, texts: Sequence[str], k: int = 5,
                progress: bool = False) -> list[list[tuple[str, float]]]:
        """Per text its top-k (label name, score), best first (fewer when the model has fewer labels)."""
        ids, scores = self.predict_arrays(texts, k, progress)
        return ranked(ids, scores, self.label_names)

    def evaluate(self, dataset: str | Path, split: str = "test", progress: bool = False) -> dict:
        """Metrics (P@k, nDCG@k, PSP@k, ...) on a dataset's split, its labels matched by name: the same
        numbers as ``xmlbench predict RUN --dataset D``."""
        from xmlbench.runs.predict import score_split

        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', not {split!r}")
        ds = open_dataset(str(dataset))
        self.model.map_labels_onto(ds)
        try:
            return score_split(self.model, ds, split, None, progress)
        finally:
            self.model.label_map = None  # back to its own label ids, which predict() reports

    def __repr__(self) -> str:
        return f"<xmlbench model {self.name} from {self.run_dir} ({len(self.label_names)} labels)>"


def load(run_dir: str | Path) -> TrainedModel:
    """The model of a finished run, from its folder alone (no dataset needed)."""
    from xmlbench.data.manifest import DATASETS
    from xmlbench.models import MODELS

    run_dir = Path(run_dir)
    folder = run_dir / "model"
    if not (folder / "model.json").is_file():
        raise UserError(f"{run_dir}: no saved model (expected {folder / 'model.json'})")
    meta = read_json(folder / "model.json")
    record = rec.read_record(run_dir) if (run_dir / rec.RECORD).is_file() else {}
    made_on = record.get("dataset", {})
    name = made_on.get("name") or run_dir.name
    # The manifest (not the files) of a registered dataset, as the run had it: LightXML's "auto" mode reads
    # it. A folder given by path had none, even one that happens to bear a registered name.
    info = DATASETS.get(name) if name in DATASETS else None
    recorded = str(made_on.get("path", ""))  # the registered name itself, or (older records) its folder
    if info is not None and recorded not in (name, *info.aliases) and \
            Path(recorded).resolve() != Path(info.folder).resolve():
        info = None
    model = MODELS.get(meta["model"]).cls.restore(folder, label_space(name, [], info))
    if model.label_names_assumed:
        raise UserError(f"{folder} was saved without its label names, so its predictions cannot be named; "
                        f"use 'xmlbench predict {run_dir}' on its own dataset")
    return TrainedModel(run_dir, model, record)


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"k (--top-k) must be a positive whole number, not {k!r}")
    return int(k)


def ranked(ids: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[list[tuple[str, float]]]:
    return [[(names[j], float(s)) for j, s in zip(row_ids, row_scores) if j >= 0]
            for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]


def scores_matrix(ids: np.ndarray, scores: np.ndarray, n_labels: int) -> sp.csr_matrix:
    """The top-k as a CSR (n_texts x n_labels), float32, indices sorted; padding (-1) is left out. Kept
    entries stay stored even when their score is 0, so a row holds exactly the labels predicted."""
    keep = ids >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    m = sp.csr_matrix((scores[keep].astype(np.float32), ids[keep].astype(np.int32), indptr),
                      shape=(ids.shape[0], n_labels))
    m.has_sorted_indices = False
    m.sort_indices()
    return m


def output_paths(out: Path, fmt: str) -> list[Path]:
    return [out / f"predictions.{fmt}", out / SCORES, out / LABEL_NAMES]


def check_out(out: Path, fmt: str) -> None:
    """Refused: a run folder (or a folder inside one) and any existing output file, before any work."""
    out = out.resolve()
    for folder in (out, *out.parents):
        if (folder / rec.RECORD).is_file() or (folder / "model" / "model.json").is_file():
            raise UserError(f"--out {out}: inside the run folder {folder}; write predictions elsewhere")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    taken = [p.name for p in output_paths(out, fmt) if p.exists()]
    if taken:
        raise UserError(f"--out {out}: already holds {', '.join(taken)}; choose a new folder")


def predict_texts_file(run_dir: Path, texts: Path, k: int, fmt: str, out: Path, progress: bool) -> dict:
    """``xmlbench predict RUN --texts FILE``: every line of FILE (UTF-8, blank lines included) is a text."""
    k = check_k(k)
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    check_out(out, fmt)
    lines = scan_lines(Path(texts))  # one line for a missing file or a non-UTF-8 byte (file:line)
    if len(lines) == 0:
        raise UserError(f"{texts}: no texts (the file is empty)")
    model = load(run_dir)
    ids, scores = model.predict_arrays(lines, k, progress)
    write_outputs(out, fmt, ids, scores, model.label_names)
    return {"texts": len(lines), "k": k, "out": str(out), "files": [str(p) for p in output_paths(out, fmt)]}


def write_outputs(out: Path, fmt: str, ids: np.ndarray, scores: np.ndarray, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = ranked(ids, scores, names)
    if fmt == "jsonl":
        text = "".join(json.dumps({"labels": [[n, s] for n, s in row]}) + "\n" for row in rows)
    else:  # line i is text i: label, score, label, score, ... tab-separated (names hold no whitespace)
        text = "".join("\t".join(f"{n}\t{s:.7g}" for n, s in row) + "\n" for row in rows)
    write_text(out / f"predictions.{fmt}", text)
    with atomic_path(out / SCORES) as tmp, open(tmp, "wb") as f:
        sp.save_npz(f, scores_matrix(ids, scores, len(names)))
    write_text(out / LABEL_NAMES, "".join(f"{n}\n" for n in names_array(names).tolist()))
