"""Batches for neural models: token ids from the memory-mapped token cache plus the positive label ids.

The epoch order is a pure function of (seed, epoch), so a resumed run replays exactly the batches an
uninterrupted run would see, starting at the batch it stopped at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from xmlbench.data.tokcache import TokenCache


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    positives: torch.Tensor  # (B, P) long, label ids padded with -1
    # Distillation only (``xmlbench distill``): the teacher's top-k per row, ids -1-padded, and its logits
    soft_ids: torch.Tensor | None = None  # (B, k) long
    soft_logits: torch.Tensor | None = None  # (B, k) float

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return (self.input_ids, self.attention_mask, self.positives, self.soft_ids, self.soft_logits)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in self._tensors()))

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return Batch(*(None if t is None else t.pin_memory() for t in self._tensors()))


def padded_positives(labels: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """(B, P) label ids of the given rows, padded with -1 to the batch's largest label count."""
    sub = labels[rows]
    sizes = np.diff(sub.indptr)
    width = max(int(sizes.max()) if len(sizes) else 0, 1)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    col = np.arange(sub.nnz) - np.repeat(sub.indptr[:-1], sizes)
    out[np.repeat(np.arange(len(rows)), sizes), col] = sub.indices
    return torch.from_numpy(out)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchSet(torch.utils.data.Dataset):
    """Batch ``b`` of a fixed list of row chunks; used with ``DataLoader(batch_size=None)`` so workers and
    pinned memory come for free on a GPU while the order stays ours."""

    def __init__(self, tokens: TokenCache, file_rows: np.ndarray, labels: sp.csr_matrix,
                 chunks: list[np.ndarray], soft: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.tokens, self.file_rows, self.labels, self.chunks = tokens, file_rows, labels, chunks
        self.soft = soft  # (ids, logits), each (n_rows, k), rows of the split

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, b: int) -> Batch:
        rows = self.chunks[b]  # rows of the split
        ids, mask = self.tokens.batch(self.file_rows[rows], trim=True)
        if self.soft is None:
            return Batch(ids, mask, padded_positives(self.labels, rows))
        soft_ids, soft_logits = self.soft
        return Batch(ids, mask, padded_positives(self.labels, rows), torch.from_numpy(soft_ids[rows].astype(np.int64)),
                     torch.from_numpy(soft_logits[rows].astype(np.float32)))


def loader(tokens: TokenCache, file_rows: np.ndarray, labels: sp.csr_matrix, chunks: list[np.ndarray],
           num_workers: int = 0, pin_memory: bool = False,
           soft: tuple[np.ndarray, np.ndarray] | None = None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        BatchSet(tokens, file_rows, labels, chunks, soft),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Creating a DataLoader iterator draws a worker seed from its generator; with the default (the
        # global RNG) a resumed run would draw once more than the uninterrupted one and shift dropout.
        generator=torch.Generator().manual_seed(0),
    )


def chunk(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]
