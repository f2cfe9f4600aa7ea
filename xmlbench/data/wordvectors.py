"""Pretrained word vectors from a text file: GloVe (``word v1 ... vd`` per line) or word2vec's text
format (the same lines after a ``count dim`` header line).

The file is the user's: a malformed line is one error naming the file, the line number and what was
expected, never a traceback. Only the words asked for (``wanted``) are kept, so a 400k-word GloVe file
costs the memory of the vocabulary that uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xmlbench.errors import UserError

FORMAT_HINT = "each line is 'word v1 ... vd' (GloVe), optionally after a 'count dim' header (word2vec text)"


def read_word_vectors(path: str | Path, wanted: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(words, (n, d) float32 vectors) of the file's words that are in ``wanted`` (all when None), in file
    order; a word repeated later in the file keeps its first vector."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"word vectors {path}: no such file (give a GloVe or word2vec text file)")
    keep = None if wanted is None else set(wanted)
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for lineno, line in enumerate(f, start=1):
                parts = line.rstrip("\n").rstrip("\r").split(" ")
                if parts and parts[-1] == "":
                    parts = parts[:-1]  # GloVe lines sometimes end in a space
                if not parts or parts == [""]:
                    raise UserError(f"{path}:{lineno}: empty line; {FORMAT_HINT}")
                if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    dim = int(parts[1])  # word2vec header: count dim
                    if dim < 1:
                        raise UserError(f"{path}:1: the header declares {dim} dimensions; {FORMAT_HINT}")
                    continue
                n_values = len(parts) - 1
                if dim is None:
                    if n_values < 1:
                        raise UserError(f"{path}:{lineno}: a word with no numbers; {FORMAT_HINT}")
                    dim = n_values
                if n_values != dim:
                    raise UserError(f"{path}:{lineno}: expected {dim} numbers after the word, found {n_values}; "
                                    f"{FORMAT_HINT}")
                word = parts[0]
                if word in seen or (keep is not None and word not in keep):
                    continue
                try:
                    vector = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    bad = next(p for p in parts[1:] if not _is_float(p))
                    raise UserError(f"{path}:{lineno}: {bad!r} is not a number; {FORMAT_HINT}") from None
                if not np.isfinite(vector).all():
                    raise UserError(f"{path}:{lineno}: the vector holds nan or inf; {FORMAT_HINT}")
                seen.add(word)
                words.append(word)
                rows.append(vector)
        except UnicodeDecodeError as e:
            raise UserError(f"word vectors {path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                            f"{FORMAT_HINT}") from None
    if dim is None:
        raise UserError(f"word vectors {path}: the file holds no vectors; {FORMAT_HINT}")
    matrix = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return words, matrix


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
