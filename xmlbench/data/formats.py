"""Readers for the formats other XMC tools write, beside the two native ones (``readers.py``).

* svmlight/libsvm multi-label, headerless: ``l1,l2 f:v f:v ...`` per line, as scikit-learn's
  ``dump_svmlight_file(X, Y, f, multilabel=True)`` and LibMultiLabel/LIBSVM write it (``train.svm``).
  Parsed by scikit-learn's ``load_svmlight_files`` (compiled, and one call for every split so all share
  one feature width); feature indices may be 0- or 1-based (scikit-learn's ``zero_based="auto"``, decided
  over all files together). scikit-learn's errors name no line, so a file it refuses is scanned again
  here to find the first bad line.
* PECOS: ``X.trn.npz``/``Y.trn.npz`` (+ ``X.tst.npz``/``Y.tst.npz``) written by ``scipy.sparse.save_npz``,
  features and a label indicator matrix; optional raw texts ``X.trn.txt``/``X.tst.txt``, one a line.
* JSON Lines: one object ``{"text": "...", "labels": ["a", "b"]}`` a line (``train.jsonl``). Texts stay on
  disk, read back by byte offset like every text file (:class:`JsonlTexts`).

Label names: svmlight labels are numbers, named by their decimal form (``3``); PECOS labels are column
indices (``0`` .. ``L-1``); JSON Lines labels are the strings given (numbers become their decimal form).
Errors name the file and the line (or, for .npz, the row) and exit non-zero, like the native readers.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.data.readers import NO_LABELS, LabelRows, LabelVocab, TextLines, scan_lines
from xmlbench.errors import UserError

SVMLIGHT_SUFFIXES = (".svm", ".libsvm", ".svmlight")
PECOS_TAGS = {"train": "trn", "test": "tst"}


# ------------------------------------------------------------------------------ svmlight / libsvm
def read_svmlight(paths: list[Path], allow_empty: bool = False) -> list[tuple[sp.csr_matrix, list[tuple]]]:
    """Per file (features CSR float32, label tuples as floats), every file as wide as the widest."""
    from sklearn.datasets import load_svmlight_files

    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: file not found")
    try:
        loaded = load_svmlight_files([str(p) for p in paths], multilabel=True, zero_based="auto",
                                     dtype=np.float32)
    except (ValueError, UnicodeDecodeError) as e:
        for path in paths:
            _find_bad_svmlight_line(path)  # raises naming the line, when a line is at fault
        raise UserError(f"{', '.join(map(str, paths))}: not readable as svmlight/libsvm ({e})") from None
    out = []
    for path, X, y in zip(paths, loaded[0::2], loaded[1::2]):
        X = sp.csr_matrix(X, dtype=np.float32)
        bad = _first_nonfinite_row(X)
        if bad is not None:
            raise UserError(f"{path}:{_svmlight_line_of_row(path, bad)}: a feature value is not a finite number")
        if not allow_empty:
            empty = next((i for i, labels in enumerate(y) if not labels), None)
            if empty is not None:
                raise UserError(f"{path}:{_svmlight_line_of_row(path, empty)}: {NO_LABELS}")
        out.append((X, list(y)))
    return out


def svmlight_label_name(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _data_lines(path: Path):
    """(line number, content) of the lines scikit-learn reads as documents: comments and blank lines skipped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split(b"#", 1)[0].strip()
            if line:
                yield lineno, line


def _svmlight_line_of_row(path: Path, row: int) -> int:
    for i, (lineno, _) in enumerate(_data_lines(path)):
        if i == row:
            return lineno
    return row + 1


def _find_bad_svmlight_line(path: Path) -> None:
    """The first line scikit-learn would refuse, as a UserError naming it; returns if none is found."""
    for lineno, line in _data_lines(path):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}:{lineno}: invalid UTF-8; re-encode the file as UTF-8") from None
        tokens = text.split()
        label_part = "" if ":" in tokens[0] else tokens[0]
        if label_part:
            try:
                [float(x) for x in label_part.split(",")]
            except ValueError:
                raise UserError(f"{path}:{lineno}: malformed labels {label_part!r}; expected 'l1,l2,...' "
                                "(numbers, no spaces)") from None
        last = -1
        for tok in tokens[1:] if label_part else tokens:
            key, sep, value = tok.partition(":")
            if key == "qid":
                continue
            try:
                index, _ = int(key), float(value)
            except ValueError:
                raise UserError(f"{path}:{lineno}: malformed feature {tok!r}; expected 'index:value'") from None
            if not sep or index < 0:
                raise UserError(f"{path}:{lineno}: malformed feature {tok!r}; expected 'index:value' with "
                                "index >= 0")
            if index <= last:
                raise UserError(f"{path}:{lineno}: feature indices must be increasing ({tok!r} after "
                                f"index {last})")
            last = index


def _first_nonfinite_row(X: sp.csr_matrix) -> int | None:
    bad = np.flatnonzero(~np.isfinite(X.data))
    if not len(bad):
        return None
    return int(np.searchsorted(X.indptr, bad[0], side="right") - 1)


# ------------------------------------------------------------------------------ PECOS .npz
def read_npz_matrix(path: Path) -> sp.csr_matrix:
    """A ``scipy.sparse.save_npz`` file as CSR; anything else is one line naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        m = sp.load_npz(path)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a sparse matrix written by scipy.sparse.save_npz ({e})") from None
    return sp.csr_matrix(m)


def read_pecos_split(folder: Path, split: str, allow_empty: bool = False
                     ) -> tuple[sp.csr_matrix, sp.csr_matrix, TextLines | None, str]:
    """(features float32, labels float32 0/1, raw texts or None, digest) of ``X.{tag}.npz``/``Y.{tag}.npz``."""
    import hashlib

    tag = PECOS_TAGS[split]
    x_path, y_path, t_path = folder / f"X.{tag}.npz", folder / f"Y.{tag}.npz", folder / f"X.{tag}.txt"
    X, Y = read_npz_matrix(x_path), read_npz_matrix(y_path)
    if X.shape[0] != Y.shape[0]:
        raise UserError(f"{y_path}: {Y.shape[0]} rows but {x_path.name} has {X.shape[0]}; row i of both is "
                        "document i")
    X = X.astype(np.float32)
    bad = _first_nonfinite_row(X)
    if bad is not None:
        raise UserError(f"{x_path}: row {bad} (0-based) has a feature value that is not a finite number")
    Y.eliminate_zeros()  # an explicit zero is no label
    Y = sp.csr_matrix((np.ones(Y.nnz, np.float32), Y.indices.astype(np.int32), Y.indptr), shape=Y.shape)
    Y.sort_indices()
    empty = np.flatnonzero(np.diff(Y.indptr) == 0)
    if len(empty) and not allow_empty:
        raise UserError(f"{y_path}: row {empty[0]} (0-based): {NO_LABELS}")
    digest = hashlib.blake2b(digest_size=16)
    for p in (x_path, y_path):
        digest.update(file_digest(p).encode())
    texts = None
    if t_path.is_file():
        texts = scan_lines(t_path)
        n = len(texts)
        while n > X.shape[0] and texts.offsets[n] - texts.offsets[n - 1] <= 2:  # trailing blank lines
            n -= 1
        if n != X.shape[0]:
            raise UserError(f"{t_path}: {n} lines but {x_path.name} has {X.shape[0]} rows; line i is the text "
                            "of document i")
        texts.offsets = texts.offsets[: n + 1]
        digest.update(texts.digest.encode())
    return X, Y, texts, digest.hexdigest()


def file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------ JSON Lines
class JsonlTexts(TextLines):
    """The ``"text"`` fields of a JSON Lines file, by byte offset (validated once by ``read_jsonl``)."""

    def decode(self, line: str) -> str:
        return json.loads(line)["text"]


def read_jsonl(path: Path, vocab: LabelVocab, allow_empty: bool = False) -> tuple[JsonlTexts, LabelRows]:
    """Texts and label rows of a JSON Lines file: every line an object with a string ``"text"`` and a list
    ``"labels"`` of label names (strings without whitespace, or whole numbers). Blank lines after the last
    document are dropped; a blank line anywhere else is an error naming its line."""
    lines = scan_lines(path)  # UTF-8 checked, offsets, digest
    indptr, indices = [0], []
    n_docs, blank_from = 0, None
    for lineno, line in enumerate(lines.iter_lines(), 1):
        if not line.strip():
            blank_from = blank_from or lineno
            continue
        if blank_from is not None:
            raise UserError(f"{path}:{blank_from}: blank line; every line must be one JSON object "
                            '{"text": ..., "labels": [...]}')
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.args[0].split(':')[0]})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UserError(f'{path}:{lineno}: expected an object with a string "text" and a list "labels"')
        labels = obj.get("labels")
        if not isinstance(labels, list):
            raise UserError(f'{path}:{lineno}: "labels" must be a list of label names, not '
                            f"{type(labels).__name__}")
        seen: set[int] = set()
        for name in labels:
            if isinstance(name, bool) or not isinstance(name, (str, int)) or \
                    (isinstance(name, str) and (not name or any(c.isspace() for c in name))):
                raise UserError(f"{path}:{lineno}: label {name!r} must be a non-empty string without "
                                "whitespace, or a whole number")
            i = vocab.add(str(name))
            if i not in seen:  # a label repeated on one line counts once
                seen.add(i)
                indices.append(i)
        if not seen and not allow_empty:
            raise UserError(f"{path}:{lineno}: {NO_LABELS}")
        indptr.append(len(indices))
        n_docs += 1
    texts = JsonlTexts(path=path, offsets=lines.offsets[: n_docs + 1].copy(), digest=lines.digest)
    rows = LabelRows(indptr=np.asarray(indptr, np.int64), indices=np.asarray(indices, np.int32),
                     digest=lines.digest)
    return texts, rows
