"""Streaming readers for the two XMC file formats.

* LightXML/AttentionXML text format: ``{split}_texts.txt`` (or ``{split}_raw_texts.txt``) and
  ``{split}_labels.txt``, one document per line, line-aligned; labels are space-separated names.
* Extreme Classification Repository bag-of-words format: a header ``num_points num_features num_labels``,
  then ``l1,l2 f:v f:v ...`` per line.

Memory stays proportional to the CSR result: texts are never held in memory, only the byte offset of each
line (8 bytes a document), and are read back on demand.

Quirks handled on purpose (and tested): CRLF line ends, trailing blanks, repeated labels on one line
(kept once), a missing final newline, blank lines after the last document, a UTF-8 byte-order mark
(skipped: it would otherwise become part of the first label or word), tabs between the fields of a
bag-of-words line. Errors name the file and line. A bag-of-words header is checked against the file and
against this machine's memory before anything its counts size is allocated: a header that lies
(``3 5 99999999999``) is one line, not a run of the OOM killer. Feature values must be finite.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.errors import UserError
from xmlbench.runtime import available_memory_bytes, human_bytes

CHUNK = 1 << 25  # 32 MiB: big enough for throughput, small enough to bound memory
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, written by some Windows editors
# Memory that later stages hold per declared label (its name, counts, propensities, a model's per-label
# arrays) and per declared feature (idf, weights' column index): a deliberately generous estimate.
BYTES_PER_LABEL = 128
BYTES_PER_FEATURE = 32
NO_LABELS = ("document has no labels; every document needs at least one label, or pass --unlabelled drop "
             "(or keep)")


@dataclass
class TextLines:
    """Random and streaming access to the lines of a UTF-8 text file, by byte offsets."""

    path: Path
    offsets: np.ndarray  # int64 (n + 1,): start of each line, then the end of the last one
    digest: str  # blake2b of the file's bytes

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        with open(self.path, "rb") as f:
            return self._read(f, int(i))

    def _read(self, f, i: int) -> str:
        f.seek(self.offsets[i])
        raw = f.read(int(self.offsets[i + 1] - self.offsets[i]))
        return self.decode(raw.decode("utf-8").rstrip("\r\n"))

    def decode(self, line: str) -> str:
        """The text a line holds: the line itself here; a JSON Lines file's ``"text"`` field there."""
        return line

    def iter_lines(self, rows: np.ndarray | None = None) -> Iterator[str]:
        """Lines in file order (``rows`` None), or the given rows in the given order."""
        if rows is None:
            with open(self.path, "rb") as f:
                f.seek(self.offsets[0])  # past a byte-order mark
                for i, raw in enumerate(f):
                    if i >= len(self):
                        break
                    yield self.decode(raw.decode("utf-8").rstrip("\r\n"))
            return
        if len(rows) > 1 and np.all(np.diff(rows) > 0):  # sorted: stream and skip, no seeks
            wanted = np.zeros(len(self), dtype=bool)
            wanted[rows] = True
            for i, line in enumerate(self.iter_lines()):
                if wanted[i]:
                    yield line
            return
        with open(self.path, "rb") as f:
            for i in rows:
                yield self._read(f, int(i))


class TextList:
    """:class:`TextLines` over texts held in memory (raw texts given to a saved model): the same
    ``len``, indexing, ``iter_lines`` and ``digest`` (blake2b of the texts, which keys neural token caches
    like a file's bytes do), so every model's ``predict`` takes it without a temporary file."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = [str(t) for t in texts]
        digest = hashlib.blake2b(b"texts:", digest_size=16)
        for t in self.texts:  # length-prefixed, so ["ab"] and ["a", "b"] differ
            raw = t.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "little") + raw)
        self.digest = digest.hexdigest()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[int(i)]

    def iter_lines(self, rows: np.ndarray | None = None) -> Iterator[str]:
        return iter(self.texts) if rows is None else (self.texts[int(i)] for i in rows)


def scan_lines(path: Path, progress: bool = False) -> TextLines:
    """Index the lines of ``path``: offsets of each line, UTF-8 validation, and a content digest."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    digest = hashlib.blake2b(digest_size=16)
    starts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    pos = 0
    lines_before = 0
    carry = b""
    bar = _bar(path.stat().st_size, f"scan {path.name}", progress and path.stat().st_size > CHUNK, unit="B")
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            digest.update(block)
            bar.update(len(block))
            if pos == 0 and block.startswith(BOM):
                starts[0][0] = len(BOM)  # the first line starts after the mark
            data = carry + block
            cut = data.rfind(b"\n") + 1  # validate whole lines only: a UTF-8 char may straddle blocks
            whole, carry = data[:cut], data[cut:]
            _check_utf8(whole, path, lines_before)
            nl = np.flatnonzero(np.frombuffer(whole, dtype=np.uint8) == 10)
            starts.append(nl.astype(np.int64) + (pos - len(data) + len(block)) + 1)
            lines_before += len(nl)
            pos += len(block)
    bar.close()
    _check_utf8(carry, path, lines_before)
    offsets = np.concatenate(starts)
    if carry:  # last line without a final newline
        offsets = np.append(offsets, pos)
    return TextLines(path=path, offsets=offsets, digest=digest.hexdigest())


def _check_utf8(data: bytes, path: Path, lines_before: int) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lines_before + data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: invalid UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None


class LabelVocab:
    """Label name -> dense int id, in order of first appearance (train first, so test-only labels come last)."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or [])
        self.ids: dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def add(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class LabelRows:
    indptr: np.ndarray
    indices: np.ndarray
    digest: str

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def to_csr(self, n_labels: int) -> sp.csr_matrix:
        data = np.ones(len(self.indices), dtype=np.float32)
        m = sp.csr_matrix((data, self.indices, self.indptr), shape=(len(self), n_labels))
        m.sort_indices()
        return m


def read_label_lines(path: Path, vocab: LabelVocab, progress: bool = False,
                     allow_empty: bool = False) -> LabelRows:
    """Parse a labels file (space-separated names per line); every document needs at least one label
    unless ``allow_empty`` (``--unlabelled drop|keep``).

    Line i of the file is document i - 1. Blank lines after the last document are dropped; a blank line
    anywhere else is a document with no labels, an error naming its line unless ``allow_empty``.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    digest = hashlib.blake2b(digest_size=16)
    indptr = array("q", [0])
    indices = array("i")
    bar = _bar(path.stat().st_size, f"labels {path.name}", progress and path.stat().st_size > CHUNK, unit="B")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            digest.update(raw)
            bar.update(len(raw))
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            try:
                names = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise UserError(f"{path}:{lineno}: invalid UTF-8; re-encode the file as UTF-8") from None
            seen: set[int] = set()
            for name in names:
                i = vocab.add(name)
                if i not in seen:  # a label repeated on one line counts once
                    seen.add(i)
                    indices.append(i)
            indptr.append(len(indices))
    bar.close()
    ip = np.frombuffer(indptr, dtype=np.int64)
    sizes = np.diff(ip)
    n = len(sizes)
    while n > 0 and sizes[n - 1] == 0:  # trailing blank lines are a harmless quirk
        n -= 1
    empty = np.flatnonzero(sizes[:n] == 0)
    if len(empty) and not allow_empty:
        raise UserError(f"{path}:{empty[0] + 1}: {NO_LABELS} (remove it from both the texts and the labels "
                        "file)")
    ind = np.frombuffer(indices, dtype=np.int32).copy() if len(indices) else np.zeros(0, np.int32)
    return LabelRows(indptr=ip[: n + 1].copy(), indices=ind, digest=digest.hexdigest())


def read_bow(path: Path, progress: bool = False,
             allow_empty: bool = False) -> tuple[sp.csr_matrix, list[list[int]], str, int]:
    """Read an Extreme Classification Repository bag-of-words file (documents without labels only with
    ``allow_empty``).

    Returns (features CSR, label id lists, digest, declared number of labels).
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        header = f.readline()
        digest.update(header)
        parts = header.removeprefix(BOM).split()
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise UserError(
                f"{path}:1: malformed header {header.decode('utf-8', 'replace').strip()!r}; "
                "expected 'num_points num_features num_labels' (a headerless svmlight/libsvm file goes in "
                "train.svm and test.svm)"
            )
        n_points, n_features, n_labels = (int(p) for p in parts)
        indptr = array("q", [0])
        feat_idx = array("i")
        feat_val = array("f")
        labels: list[list[int]] = []
        bar = _bar(n_points, f"read {path.name}", progress, unit="doc")
        for lineno, raw in enumerate(f, 2):
            digest.update(raw)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            labels.append(_parse_bow_line(line, path, lineno, n_features, n_labels, feat_idx, feat_val,
                                          allow_empty))
            indptr.append(len(feat_idx))
            bar.update(1)
        bar.close()
    if len(labels) != n_points:
        raise UserError(f"{path}: header says {n_points} points but the file has {len(labels)} lines")
    check_declared_sizes(path, n_labels, n_features)
    X = sp.csr_matrix(
        (np.frombuffer(feat_val, np.float32), np.frombuffer(feat_idx, np.int32), np.frombuffer(indptr, np.int64)),
        shape=(n_points, n_features),
    )
    X.sum_duplicates()
    return X, labels, digest.hexdigest(), n_labels


def check_declared_sizes(path: Path, n_labels: int, n_features: int) -> None:
    """Refuse a header whose label and feature counts would need more memory than this machine has
    (every later stage allocates arrays of those sizes), before the first such allocation."""
    need = n_labels * BYTES_PER_LABEL + n_features * BYTES_PER_FEATURE
    have = available_memory_bytes()
    if need > have:
        raise UserError(
            f"{path}:1: the header declares {n_labels:,} labels and {n_features:,} features, which "
            f"need about {human_bytes(need)} of per-label and per-feature arrays; this machine has "
            f"{human_bytes(have)} available (is the header wrong?)"
        )


def _parse_bow_line(line, path, lineno, n_features, n_labels, feat_idx, feat_val, allow_empty) -> list[int]:
    tokens = line.split()  # spaces, or tabs: the fields are the same
    label_part = tokens[0] if tokens and ":" not in tokens[0] else ""
    feats = tokens[1:] if label_part else tokens
    try:
        ids = sorted({int(x) for x in label_part.split(",") if x}) if label_part else []
    except ValueError:
        raise UserError(f"{path}:{lineno}: malformed labels {label_part!r}; expected 'l1,l2,...'") from None
    if not ids and not allow_empty:
        raise UserError(f"{path}:{lineno}: {NO_LABELS}")
    if ids and ids[0] < 0 or ids[-1] >= n_labels:
        raise UserError(f"{path}:{lineno}: label id out of range [0, {n_labels})")
    for tok in feats:
        if not tok:
            continue
        k, sep, v = tok.partition(":")
        try:
            fi, fv = int(k), float(v)
        except ValueError:
            raise UserError(f"{path}:{lineno}: malformed feature {tok!r}; expected 'index:value'") from None
        if not sep or fi < 0 or fi >= n_features:
            raise UserError(f"{path}:{lineno}: feature {tok!r} out of range [0, {n_features})")
        if not math.isfinite(fv):
            raise UserError(f"{path}:{lineno}: feature {tok!r} has a value that is not a finite number")
        feat_idx.append(fi)
        feat_val.append(fv)
    return ids


def _bar(total: int, desc: str, enabled: bool, unit: str = "it"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit=unit, unit_scale=True, leave=False)
