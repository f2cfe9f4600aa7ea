"""Numba kernels behind :func:`xmlbench.metrics.evaluate`.

``rank_sums_kernel`` makes one parallel pass over the rows and sums hits and propensity weights by rank
(and by min(|y|, k_max)); ``metrics_from_rank_sums`` turns those few numbers into every metric at every k.
``evaluate`` chains the two. The conventions (repeats, missing predictions, empty rows, nDCG and propensity
normalisation) are documented in :mod:`xmlbench.metrics`.

Determinism: rows are cut into chunks whose size depends on n only, never on the thread count; each chunk
sums its rows in order into its own slot and the slots are added in chunk order afterwards, so the result
is bit-identical for 1, 2 or 64 threads.

``precision_only_kernel`` is the yardstick for the benchmark: the simplest parallel P@k there is.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

CHUNK_ROWS = 1024
"""Smallest number of rows per reduction chunk."""
MAX_CHUNKS = 64
"""At most this many chunks (each holds O(k_max^2) partial sums). The chunking depends on n and these two
constants only, never on the thread count, so sums are reproducible."""

@njit(cache=True, inline="always")
def _in_sorted_row(indices, start, end, label) -> bool:
    """Binary search of ``label`` in ``indices[start:end]`` (sorted ascending)."""
    lo = start
    hi = end
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < label:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and indices[lo] == label


@njit(cache=True, inline="always")
def _repeats_earlier(topk, row, rank, label) -> bool:
    """True when ``label`` already appears at a better rank of the row (a repeat scores 0)."""
    for q in range(rank):
        if topk[row, q] == label:
            return True
    return False


@njit(cache=True, inline="always")
def _largest_weights(weights, indices, start, end, out) -> int:
    """Write the largest ``len(out)`` values of ``weights[indices[start:end]]`` into ``out``, descending.

    Returns how many were written (min(len(out), end - start)). Insertion into a short sorted buffer:
    rows hold a handful of labels, so this beats any sort.
    """
    cap = out.shape[0]
    filled = 0
    for t in range(start, end):
        w = weights[indices[t]]
        if filled == cap:
            if w <= out[cap - 1]:
                continue
            pos = cap - 1
        else:
            pos = filled
            filled += 1
        while pos > 0 and out[pos - 1] < w:
            out[pos] = out[pos - 1]
            pos -= 1
        out[pos] = w
    return filled


@njit(cache=True)
def _discounts(k_max):
    """discount[r] = 1 / log2(r + 2), the DCG weight of 0-based rank r; ideal[m] = sum_{r<m} discount[r]."""
    discount = np.empty(k_max, dtype=np.float64)
    ideal = np.zeros(k_max + 1, dtype=np.float64)
    for r in range(k_max):
        discount[r] = 1.0 / np.log2(r + 2.0)
        ideal[r + 1] = ideal[r] + discount[r]
    return discount, ideal


@njit(parallel=True, cache=True)
def rank_sums_kernel(topk, indptr, indices, k_max, inv_prop, use_ps, n_labels):
    """One pass over the rows; sums of hits and weights by rank, from which every metric at every k follows.

    Why by rank: a row's contribution to P@k, nDCG@k, ... at every k is a sum over its ranks r < k, so
    summing per rank (and per m = min(|y|, k_max), which fixes IDCG@min(k, |y|) for every k <= k_max) costs
    one update per hit instead of one per (k, family). ``metrics_from_rank_sums`` does the rest.

    Returns float64 arrays, summed over rows with at least one true label:
      hits[r, m]    number of hits at rank r in rows with min(|y|, k_max) = m
      recall[r]     sum of 1/|y| over hits at rank r
      ps_hits[r, m] sum of 1/p_l over hits at rank r (zeros unless ``use_ps``)
      ps_best[r, m] sum of the r-th largest 1/p_l of y (rows with |y| > r)
    """
    n, width = topk.shape
    scan = min(k_max, width)  # ranks beyond the width are missing predictions: misses
    n_chunks = min((n + CHUNK_ROWS - 1) // CHUNK_ROWS, MAX_CHUNKS)
    chunk = (n + n_chunks - 1) // max(n_chunks, 1)
    hits = np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64)
    recall = np.zeros((n_chunks, k_max), dtype=np.float64)
    ps_hits = np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64)
    ps_best = np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64)
    for c in prange(n_chunks):
        # Chunk-local sums and scratch: no sharing between threads inside the row loop.
        c_hits = np.zeros((k_max, k_max + 1), dtype=np.float64)
        c_recall = np.zeros(k_max, dtype=np.float64)
        c_ps_hits = np.zeros((k_max, k_max + 1), dtype=np.float64)
        c_ps_best = np.zeros((k_max, k_max + 1), dtype=np.float64)
        best = np.empty(k_max, dtype=np.float64)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            start = indptr[i]
            end = indptr[i + 1]
            n_true = end - start
            if n_true == 0:
                continue  # convention (c): counted in n by the caller, contributes 0 everywhere
            m = min(n_true, k_max)
            inv_n_true = 1.0 / n_true
            for r in range(scan):
                label = topk[i, r]
                if (
                    label >= 0
                    and label < n_labels
                    and _in_sorted_row(indices, start, end, label)
                    and not _repeats_earlier(topk, i, r, label)
                ):
                    c_hits[r, m] += 1.0
                    c_recall[r] += inv_n_true
                    if use_ps:
                        c_ps_hits[r, m] += inv_prop[label]
            if use_ps:
                n_best = _largest_weights(inv_prop, indices, start, end, best)
                for r in range(n_best):
                    c_ps_best[r, m] += best[r]
        hits[c] = c_hits
        recall[c] = c_recall
        ps_hits[c] = c_ps_hits
        ps_best[c] = c_ps_best
    return _sum_in_order(hits), _sum_in_order(recall), _sum_in_order(ps_hits), _sum_in_order(ps_best)


@njit(cache=True)
def _sum_in_order(parts):
    """Sum over the first axis, chunk 0 first: the same rounding whatever thread produced each part."""
    total = np.zeros(parts.shape[1:], dtype=np.float64)
    for c in range(parts.shape[0]):
        total += parts[c]
    return total


@njit(cache=True)
def metrics_from_rank_sums(hits, recall, ps_hits, ps_best, ks, n_rows):
    """Metric values (fractions, not percent) as a (5, len(ks)) array: P, nDCG, R, PSP, PSnDCG rows.

    With d_r = 1/log2(r+2), I(m) = sum_{r<m} d_r and m = min(|y|, k_max):
      P@k = sum_{r<k} sum_m hits[r,m] / (n k)      nDCG@k = sum_{r<k} sum_m hits[r,m] d_r / I(min(k,m)) / n
      R@k = sum_{r<k} recall[r] / n                PSP@k = sum_{r<k,m} ps_hits / sum_{r<k,m} ps_best
      PSnDCG@k = sum_{r<k,m} ps_hits d_r / I(min(k,m))  /  same with ps_best
    A zero denominator (no rows, no true labels) gives 0.
    """
    k_max = hits.shape[0]
    discount, ideal = _discounts(k_max)
    out = np.zeros((5, ks.shape[0]), dtype=np.float64)
    for j in range(ks.shape[0]):
        k = ks[j]
        n_hits = 0.0
        ndcg = 0.0
        rec = 0.0
        psp_num = 0.0
        psp_den = 0.0
        psn_num = 0.0
        psn_den = 0.0
        for r in range(k):
            rec += recall[r]
            for m in range(1, k_max + 1):
                scale = discount[r] / ideal[min(k, m)]
                n_hits += hits[r, m]
                ndcg += hits[r, m] * scale
                psp_num += ps_hits[r, m]
                psp_den += ps_best[r, m]
                psn_num += ps_hits[r, m] * scale
                psn_den += ps_best[r, m] * scale
        if n_rows > 0:
            out[0, j] = n_hits / (n_rows * k)
            out[1, j] = ndcg / n_rows
            out[2, j] = rec / n_rows
        if psp_den > 0:
            out[3, j] = psp_num / psp_den
        if psn_den > 0:
            out[4, j] = psn_num / psn_den
    return out


@njit(parallel=True, cache=True)
def precision_only_kernel(topk, indptr, indices, k):
    """P@k in percent, nothing else: the benchmark's yardstick.

    Binary search of each of the first k predicted ids in the sorted CSR row. No range check is needed
    (-1 and ids >= L are never found) and repeats are not special-cased; integer hit counts make the
    parallel reduction exact.
    """
    n, width = topk.shape
    scan = min(k, width)
    hits = 0
    for i in prange(n):
        start = indptr[i]
        end = indptr[i + 1]
        for r in range(scan):
            if _in_sorted_row(indices, start, end, topk[i, r]):
                hits += 1
    if n == 0:
        return 0.0
    return 100.0 * hits / (n * k)
