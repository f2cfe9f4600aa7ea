"""Top-k selection that never needs the whole (rows x labels) score matrix at once.

* ``TopKAccumulator(n_rows, k)``: feed score blocks (any rows, any columns, any order) with ``add``;
  ``result()`` gives the best k label ids and scores of every row.
* ``topk_dense(scores, k)``: the same for one dense matrix.
* ``topk_sparse_rows(indptr, indices, data, k)``: the same for ragged per-row candidate lists (CSR).

Order: higher score first; equal scores go by smaller label id, so results do not depend on block order.
Missing slots (fewer than k candidates in a row) hold id -1 and score -inf. NaN scores are ignored. A label
offered twice for the same row keeps its better score (never two slots). Scores are compared and stored
as float32.

Each row keeps its k best (score, id) pairs sorted best first; a candidate is first compared with the
row's current k-th (almost always rejected once the row is full, at one comparison per score) and
otherwise inserted in place. Rows are independent, so the numba kernels run them in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

EMPTY_ID = -1


@njit(cache=True)
def _better(score_a, id_a, score_b, id_b) -> bool:
    """Strict "ranks before": higher score, or equal score and smaller id."""
    return score_a > score_b or (score_a == score_b and id_a < id_b)


@njit(cache=True)
def _offer(ids, scores, row, cand_id, cand_score) -> None:
    """Insert the candidate into the row's best-first list when it ranks among the best k."""
    k = ids.shape[1]
    if cand_score != cand_score:  # NaN: not a candidate
        return
    last = k - 1
    if ids[row, last] != EMPTY_ID and not _better(cand_score, cand_id, scores[row, last], ids[row, last]):
        return  # the common case once the row is full
    pos = last  # first slot the candidate beats (empty slots are beaten by anything)
    while pos > 0 and (
        ids[row, pos - 1] == EMPTY_ID or _better(cand_score, cand_id, scores[row, pos - 1], ids[row, pos - 1])
    ):
        pos -= 1
    stop = last  # the slot that gets overwritten by the shift: the k-th, or the candidate's old entry
    for q in range(k):
        if ids[row, q] == cand_id:
            if q < pos:
                return  # already there with a score at least as good
            stop = q
            break
    for q in range(stop, pos, -1):
        ids[row, q] = ids[row, q - 1]
        scores[row, q] = scores[row, q - 1]
    ids[row, pos] = cand_id
    scores[row, pos] = cand_score


@njit(cache=True)
def _entry_bar(ids, scores, row):
    """Scores strictly below this cannot enter the row: its k-th score when full, else -inf."""
    last = ids.shape[1] - 1
    return scores[row, last] if ids[row, last] != EMPTY_ID else np.float32(-np.inf)


@njit(cache=True)
def _offer_all(ids, scores, row, cand_ids, cand_scores) -> None:
    """Offer candidates ``cand_ids[j]`` scored ``cand_scores[j]`` to one row."""
    bar = _entry_bar(ids, scores, row)
    for j in range(cand_scores.shape[0]):
        score = np.float32(cand_scores[j])
        if score < bar:  # one comparison rejects almost everything; NaN falls through to _offer
            continue
        _offer(ids, scores, row, cand_ids[j], score)
        bar = _entry_bar(ids, scores, row)


@njit(parallel=True, cache=True)
def _merge_block(ids, scores, row_start, block, col_ids) -> None:
    """Offer every entry of ``block`` (rows row_start.., columns named by ``col_ids``) to the row top-k."""
    for b in prange(block.shape[0]):
        _offer_all(ids, scores, row_start + b, col_ids, block[b])


@njit(parallel=True, cache=True)
def _merge_ragged(ids, scores, indptr, indices, data) -> None:
    """Offer the candidates of CSR row i (ids ``indices``, scores ``data``) to row i's top-k."""
    for i in prange(indptr.shape[0] - 1):
        _offer_all(ids, scores, i, indices[indptr[i] : indptr[i + 1]], data[indptr[i] : indptr[i + 1]])


def _empty_topk(n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_rows, k), EMPTY_ID, dtype=np.int32), np.full((n_rows, k), -np.inf, dtype=np.float32)


class TopKAccumulator:
    """Running best-k labels per row over score blocks added in any order (see the module docstring)."""

    def __init__(self, n_rows: int, k: int) -> None:
        if n_rows < 0 or k < 1:
            raise ValueError(f"TopKAccumulator needs n_rows >= 0 and k >= 1, got {n_rows}, {k}")
        self.n_rows = n_rows
        self.k = k
        self._ids, self._scores = _empty_topk(n_rows, k)
        self._arange: np.ndarray = np.zeros(0, dtype=np.int32)  # reused default col_ids

    def add(self, row_start: int, scores: np.ndarray, col_ids: np.ndarray | None = None) -> None:
        """Merge a (rows x cols) block for rows ``row_start ..``; ``col_ids[j]`` is column j's label id."""
        scores = np.asarray(scores)
        if scores.ndim != 2:
            raise ValueError(f"score block must be 2-D (rows x cols), got shape {scores.shape}")
        n_block, n_cols = scores.shape
        if row_start < 0 or row_start + n_block > self.n_rows:
            raise ValueError(f"block rows {row_start}..{row_start + n_block} outside 0..{self.n_rows}")
        scores = _float_scores(scores)
        cols = self._default_cols(n_cols) if col_ids is None else _checked_col_ids(col_ids, n_cols)
        if n_block and n_cols:
            _merge_block(self._ids, self._scores, row_start, scores, cols)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 (n, k), scores float32 (n, k)), best first; -1 / -inf where a row has fewer than k."""
        return self._ids.copy(), self._scores.copy()

    def _default_cols(self, n_cols: int) -> np.ndarray:
        if self._arange.size < n_cols:
            self._arange = np.arange(n_cols, dtype=np.int32)
        return self._arange[:n_cols]


def _checked_col_ids(col_ids: np.ndarray, n_cols: int) -> np.ndarray:
    col_ids = np.asarray(col_ids)
    if col_ids.shape != (n_cols,):
        raise ValueError(f"col_ids must have one id per block column ({n_cols}), got shape {col_ids.shape}")
    if not np.issubdtype(col_ids.dtype, np.integer):
        raise ValueError(f"col_ids must be integers, got dtype {col_ids.dtype}")
    if n_cols and (col_ids.min() < 0 or col_ids.max() > np.iinfo(np.int32).max):
        raise ValueError("col_ids must be label ids in [0, 2**31)")
    return col_ids.astype(np.int32, copy=False)  # one compiled variant; a copy of one id per column


def topk_dense(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns of each row of a dense (n x m) score matrix: (ids int32, scores float32), best first."""
    scores = np.asarray(scores)
    acc = TopKAccumulator(scores.shape[0] if scores.ndim == 2 else 0, k)
    acc.add(0, scores)
    return acc.result()


def topk_sparse_rows(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k of ragged candidate lists: row i offers ``indices[indptr[i]:indptr[i+1]]`` scored by ``data``.

    Returns (ids int32 (n, k), scores float32 (n, k)), best first, -1 / -inf padding.
    """
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    data = np.asarray(data)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if indptr.ndim != 1 or indptr.size < 1 or indices.shape != data.shape or indices.size != indptr[-1]:
        raise ValueError("topk_sparse_rows needs CSR arrays: indptr (n+1), indices and data (indptr[-1])")
    if indices.size and (indices.min() < 0 or indices.max() > np.iinfo(np.int32).max):
        raise ValueError("topk_sparse_rows: candidate ids must be in [0, 2**31) (-1 marks an empty slot)")
    ids, scores = _empty_topk(indptr.size - 1, k)
    if indices.size:
        # Fixed dtypes keep numba to few compiled variants; the copies are small next to the selection.
        indptr = indptr.astype(np.int64, copy=False)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        _merge_ragged(ids, scores, indptr, indices, _float_scores(data))
    return ids, scores


def _float_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a C-contiguous float32 or float64 array (a copy only for other dtypes or strided views)."""
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float32)
    return np.ascontiguousarray(scores)
