"""Tokenise a corpus once into memory-mapped arrays; every later run reads them back for free.

The preprocessing: lower-case the text (by default when the vocabulary is uncased; LightXML itself
lower-cases every text, whatever the tokenizer: ``lowercase=True``), keep the first ``max_len``
whitespace-separated words, tokenise with special tokens, truncate to ``max_len`` tokens and pad.

On disk, under ``cache_dir / f"{fingerprint}-{safe(tokenizer_id)}-{max_len}"/``, with ``-lower`` (or
``-cased``) appended when the texts are lower-cased although the tokenizer does not lower-case itself (or
the other way round), so that caches of the two choices never replace each other:

* ``input_ids.npy``  int32 (n_docs, max_len), padded with ``pad_id`` on ``padding_side``;
* ``lengths.npy``    int32 (n_docs,), tokens per document including special tokens (the attention mask);
* ``meta.json``      written last: the folder is complete exactly when it has one.

The folder is built under a temporary name and renamed into place, so a killed build leaves no
half-written cache behind, and the texts are streamed in batches straight into the memory maps, so a
corpus of millions of documents needs no RAM beyond one batch.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from xmlbench.errors import UserError
from xmlbench.io import make_tmp_dir, read_json_object, write_json

FORMAT_VERSION = 1
META_FILE = "meta.json"
IDS_FILE = "input_ids.npy"
LENGTHS_FILE = "lengths.npy"
META_KEYS = ("format_version", "n_docs", "max_len", "pad_id", "padding_side")


@dataclass
class TokenCache:
    """A tokenised corpus: row ``i`` of ``input_ids`` holds document ``i``, padded to ``max_len``."""

    folder: Path
    input_ids: np.ndarray  # np.memmap, int32 (n_docs, max_len), read-only
    lengths: np.ndarray  # int32 (n_docs,)
    max_len: int
    pad_id: int
    padding_side: str  # 'right' or 'left' (XLNet): where the padding sits
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> TokenCache:
        """Map a finished cache folder read-only (no data is read until it is indexed). A damaged folder
        (truncated arrays, shapes that disagree with meta.json) is a UserError naming it."""
        folder = Path(folder)
        meta = read_json_object(folder / META_FILE, required=META_KEYS)
        try:
            ids = np.load(folder / IDS_FILE, mmap_mode="r")
            lengths = np.load(folder / LENGTHS_FILE, mmap_mode="r")
        except (ValueError, EOFError, FileNotFoundError) as e:
            raise UserError(f"{folder}: damaged token cache ({type(e).__name__}); "
                            "delete the folder") from None
        n, width = int(meta["n_docs"]), int(meta["max_len"])
        if ids.shape != (n, width) or lengths.shape != (n,) or ids.dtype != np.int32 or \
                (n and not 0 <= int(lengths.min()) <= int(lengths.max()) <= width):
            raise UserError(f"{folder}: damaged token cache (arrays disagree with {META_FILE}); "
                            "delete the folder")
        return cls(
            folder=folder,
            input_ids=ids,
            lengths=lengths,
            max_len=width,
            pad_id=int(meta["pad_id"]),
            padding_side=str(meta["padding_side"]),
            meta=meta,
        )

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def attention_mask(self, lengths: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """(B, width) LongTensor mask of the real tokens, for documents of the given token counts."""
        width = self.max_len if width is None else width
        positions = torch.arange(width).unsqueeze(0)
        lengths = lengths.unsqueeze(1)
        if self.padding_side == "left":
            return (positions >= width - lengths).long()
        return (positions < lengths).long()

    def batch(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, trim: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) LongTensors for the given documents, in the given order.

        ``trim`` drops the columns that are padding in every row of the batch (same encoder output, less
        compute); by default rows keep the full ``max_len`` width, as LightXML pads them.
        """
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        rows = np.asarray(indices, dtype=np.int64)
        block = np.asarray(self.input_ids[rows], dtype=np.int64)
        vocab = int(self.meta.get("vocab_size", 0) or 0)
        # checked here: torch would fail with an IndexError deep inside the embedding
        if vocab and block.size and (block.min() < 0 or block.max() >= vocab):
            raise UserError(f"{self.folder}: damaged token cache (a token id outside the vocabulary "
                            f"of {vocab}); delete the folder")
        ids = torch.from_numpy(block)
        lengths = torch.from_numpy(np.asarray(self.lengths[rows], dtype=np.int64))
        if trim and len(rows):
            width = max(int(lengths.max()), 1)
            ids = ids[:, -width:] if self.padding_side == "left" else ids[:, :width]
            return ids, self.attention_mask(lengths, width)
        return ids, self.attention_mask(lengths)


def build_token_cache(
    texts: Iterable[str],
    n_docs: int,
    tokenizer: Any,
    tokenizer_id: str,
    max_len: int,
    fingerprint: str,
    cache_dir: Path,
    batch_size: int = 1024,
    progress: bool = True,
    lowercase: bool | None = None,
) -> TokenCache:
    """Tokenise ``texts`` (exactly ``n_docs`` of them) into a cache, or reuse the cache built earlier.

    ``fingerprint`` must identify the texts (e.g. a hash of the dataset files) and ``tokenizer_id`` the
    tokenizer (e.g. the encoder name): together with ``max_len`` and the lower-casing they name the cache
    folder, and a finished folder is reused without reading ``texts`` at all. ``lowercase`` defaults to
    whether the tokenizer itself lower-cases (uncased vocabularies).
    """
    if n_docs <= 0:
        raise ValueError(f"n_docs must be positive, got {n_docs}")
    if max_len < 2:
        raise ValueError(f"max_len must leave room for the special tokens, got {max_len}")
    own = tokenizer_lowercases(tokenizer)
    lowercase = own if lowercase is None else lowercase
    cache_dir = Path(cache_dir)
    folder = cache_dir / cache_folder_name(fingerprint, tokenizer_id, max_len, lowercase, own)
    expected = {
        "format_version": FORMAT_VERSION,
        "n_docs": n_docs,
        "max_len": max_len,
        "lowercase": lowercase,
    }
    if _is_complete(folder, expected):
        try:
            return TokenCache.open(folder)
        except UserError:
            pass  # damaged (a disk error, a hand edit): it is only a cache, so build it again below

    tmp = make_tmp_dir(cache_dir, folder.name)  # swept like every temporary file if this process is killed
    try:
        stats = _tokenise_into(tmp, texts, n_docs, tokenizer, max_len, lowercase, batch_size, progress)
        meta = {
            **expected,
            "fingerprint": fingerprint,
            "tokenizer_id": tokenizer_id,
            "tokenizer_class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "pad_id": _pad_id(tokenizer),
            "padding_side": _padding_side(tokenizer),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **stats,
        }
        write_json(tmp / META_FILE, meta)  # last: its presence marks the folder complete
        _move_into_place(tmp, folder, expected)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TokenCache.open(folder)


def cache_folder_name(fingerprint: str, tokenizer_id: str, max_len: int, lowercase: bool,
                      tokenizer_lowercases_itself: bool) -> str:
    """The cache's folder name. The tokenizer's own casing keeps the plain name (the caches built before
    the choice existed stay valid); the other choice gets a suffix, so the two never share a folder."""
    suffix = "" if lowercase == tokenizer_lowercases_itself else ("-lower" if lowercase else "-cased")
    return f"{fingerprint}-{safe_name(tokenizer_id)}-{max_len}{suffix}"


def prepare_text(text: str, max_len: int, lowercase: bool) -> str:
    """The first ``max_len`` words, lower-cased when asked (LightXML lower-cases every text)."""
    words = text.split(maxsplit=max_len)[:max_len]  # maxsplit: never split the rest of a long document
    joined = " ".join(words)
    return joined.lower() if lowercase else joined


def tokenizer_lowercases(tokenizer: Any) -> bool:
    """Whether the tokenizer lower-cases its input itself, i.e. its vocabulary is uncased."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        normalizer = backend.normalizer
        return normalizer is not None and normalizer.normalize_str("Ab") == "ab"
    return bool(getattr(tokenizer, "do_lower_case", False) or tokenizer.init_kwargs.get("do_lower_case"))


def safe_name(text: str, max_chars: int = 80) -> str:
    """``text`` as one file-name component: odd characters become '_', long names end in a short hash."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "tokenizer"
    if len(name) > max_chars:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
        name = f"{name[-(max_chars - 11) :]}-{digest}"
    return name


def _tokenise_into(
    folder: Path,
    texts: Iterable[str],
    n_docs: int,
    tokenizer: Any,
    max_len: int,
    lowercase: bool,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    """Stream ``texts`` through the tokenizer into ``folder``'s memory maps; returns build statistics."""
    pad_id, left_padded = _pad_id(tokenizer), _padding_side(tokenizer) == "left"
    ids = np.lib.format.open_memmap(folder / IDS_FILE, mode="w+", dtype=np.int32, shape=(n_docs, max_len))
    lengths = np.lib.format.open_memmap(folder / LENGTHS_FILE, mode="w+", dtype=np.int32, shape=(n_docs,))
    for name in (IDS_FILE, LENGTHS_FILE):
        _reserve(folder / name)
    start_time = time.perf_counter()
    done = 0
    bar = tqdm(total=n_docs, unit="docs", unit_scale=True, desc="tokenising", disable=not progress)
    with bar:
        for chunk in _chunks(texts, batch_size):
            if done + len(chunk) > n_docs:
                raise UserError(f"token cache: got more than the expected {n_docs} texts")
            encoded = tokenizer(
                [prepare_text(t, max_len, lowercase) for t in chunk],
                add_special_tokens=True,
                truncation=True,
                max_length=max_len,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            block = np.full((len(chunk), max_len), pad_id, dtype=np.int32)
            for row, doc_ids in enumerate(encoded):
                if left_padded:
                    block[row, max_len - len(doc_ids) :] = doc_ids
                else:
                    block[row, : len(doc_ids)] = doc_ids
            ids[done : done + len(chunk)] = block
            lengths[done : done + len(chunk)] = [len(doc_ids) for doc_ids in encoded]
            done += len(chunk)
            bar.update(len(chunk))
    if done != n_docs:
        raise UserError(f"token cache: expected {n_docs} texts but got {done}")
    seconds = time.perf_counter() - start_time
    ids.flush()
    lengths.flush()
    stats = {
        "build_seconds": round(seconds, 3),
        "docs_per_s": round(n_docs / max(seconds, 1e-9), 1),
        "mean_length": round(float(lengths.mean()), 2),
        "n_at_max_len": int((lengths == max_len).sum()),  # documents that (probably) lost tokens
    }
    del ids, lengths  # close the maps before the folder is renamed
    return stats


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of a freshly created (sparse) memory map now: on a full disk that is an
    OSError naming the file, where a write into the map would kill the process with SIGBUS later."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a file system without it
                raise OSError(e.errno, e.strerror, str(path)) from None
        except AttributeError:  # not on Linux
            pass


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _is_complete(folder: Path, expected: dict[str, Any]) -> bool:
    """A finished cache whose shape and settings match (a mismatch means stale: rebuild it)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return False
    try:
        meta = read_json_object(meta_path, required=META_KEYS)
    except UserError:
        return False  # damaged: stale
    return all(meta.get(key) == value for key, value in expected.items())


def _move_into_place(tmp: Path, folder: Path, expected: dict[str, Any]) -> None:
    """Rename the finished temporary folder to its final name, replacing a stale one."""
    if folder.exists():
        if _is_complete(folder, expected) and _opens(folder):
            return  # another process finished the same cache meanwhile: keep theirs, drop ours
        shutil.rmtree(folder)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not _is_complete(folder, expected):  # not the benign race above
            raise


def _opens(folder: Path) -> bool:
    try:
        TokenCache.open(folder)
        return True
    except UserError:
        return False


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0


def _padding_side(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "padding_side", "right") or "right")
