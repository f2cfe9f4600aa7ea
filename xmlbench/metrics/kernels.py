"""Numba kernels behind :func:`xmlbench.metrics.evaluate`.

``rank_sums_kernel`` makes one parallel pass over the rows and sums hits and propensity weights by rank
(and by min(|y|, k_max)); ``metrics_from_rank_sums`` turns those few numbers into every metric at every k.
``evaluate`` chains the two. The conventions (repeats, missing predictions, empty rows, nDCG and propensity
normalisation) are documented in :mod:`xmlbench.metrics`.

Speed, per row: the predictions are matched against the (sorted) true labels by comparing every pair into
one bit mask (no data-dependent branches; binary search for rows of more than ``LINEAR_ROW`` labels); the
best achievable propensity scores come from a sorting network over the row's weights. Those weights are
random reads into megabytes (one per true label), the costly part: each row asks the cache for the weights
of the labels ``PREFETCH_AHEAD`` positions on (see :mod:`xmlbench.metrics.prefetch`), so they arrive
while the loop works on the rows between. With that, all families take 1.1-1.5x the time of the
binary-search P@k yardstick ``precision_only_kernel`` on a shared 2-core machine (``xmlbench bench
metrics``; 13.0 against 12.5 ms on one thread, taking turns); without it they took 1.3-2.2x, more when
(we infer) the machine's neighbours had pushed the weights out of the shared cache.

Determinism: rows are cut into chunks whose size depends on n and k_max only, never on the thread count;
each chunk sums its rows in order into its own slot and the slots are added in chunk order afterwards, so
the result is bit-identical for 1, 2 or 64 threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, parallel_chunksize, prange

from xmlbench.metrics.prefetch import prefetch

CHUNK_ROWS = 1024
"""Smallest number of rows per reduction chunk."""
MAX_CHUNKS = 64
"""At most this many chunks (enough to balance any thread count this runs on)."""
TABLE_BUDGET_BYTES = 32 << 20
"""Bound on all chunks' partial-sum tables together (they hold O(k_max^2) numbers each)."""
MASK_RANKS = 63
"""Up to this many ranks, a row's hits are one int64 bit mask (bit r = the prediction at rank r scores)."""
LINEAR_ROW = 32
"""Rows with at most this many true labels are matched by a branch-free scan instead of binary search."""
NETWORK_SIZE = 8
"""Rows with at most this many true labels sort their weights with a sorting network (no branches)."""
PREFETCH_AHEAD = 128
"""Each row prefetches the weights of the true labels this many CSR positions past its own end (~25 rows
on): far enough for a trip to memory, near enough that the lines are still in cache when used."""


@njit(cache=True)
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


@njit(cache=True)
def _repeats_earlier(topk, row, rank, label) -> bool:
    """True when ``label`` already appears at a better rank of the row (a repeat scores 0)."""
    for q in range(rank):
        if topk[row, q] == label:
            return True
    return False


@njit(cache=True)
def _hit_mask_by_scan(topk, row, scan, indices, start, end):
    """Bit r set when ``topk[row, r]`` (r < scan <= 63) is a true label and no better rank holds it.

    Compares every true label with every prediction: ~|y| * k equality tests with no data-dependent branch,
    faster than k binary searches on the short rows of XMC data. Each true label credits only the lowest
    rank where it appears (``x & -x``), which is convention (a). -1 and ids outside [0, L) never match.
    """
    mask = 0
    for t in range(start, end):
        label = indices[t]
        matches = 0
        for r in range(scan):
            matches |= np.int64(topk[row, r] == label) << r
        mask |= matches & -matches
    return mask


@njit(cache=True)
def _hit_mask_by_search(topk, row, scan, indices, start, end):
    """Same bit mask as ``_hit_mask_by_scan`` by binary search, for long rows."""
    mask = 0
    for r in range(scan):
        label = topk[row, r]
        if _in_sorted_row(indices, start, end, label) and not _repeats_earlier(topk, row, r, label):
            mask |= np.int64(1) << r
    return mask


@njit(cache=True, inline="always")
def _ordered(a, b):
    """(larger, smaller): one compare-exchange of a sorting network, min/max without a branch."""
    return max(a, b), min(a, b)


@njit(cache=True)
def _sort8_descending(v0, v1, v2, v3, v4, v5, v6, v7):
    """The 8 values in decreasing order: a 19-comparator network, the fewest for 8 inputs (see the tests).

    Plain locals rather than an array, so the values stay in registers.
    """
    v0, v2 = _ordered(v0, v2)
    v1, v3 = _ordered(v1, v3)
    v4, v6 = _ordered(v4, v6)
    v5, v7 = _ordered(v5, v7)
    v0, v4 = _ordered(v0, v4)
    v1, v5 = _ordered(v1, v5)
    v2, v6 = _ordered(v2, v6)
    v3, v7 = _ordered(v3, v7)
    v0, v1 = _ordered(v0, v1)
    v2, v3 = _ordered(v2, v3)
    v4, v5 = _ordered(v4, v5)
    v6, v7 = _ordered(v6, v7)
    v2, v4 = _ordered(v2, v4)
    v3, v5 = _ordered(v3, v5)
    v1, v4 = _ordered(v1, v4)
    v3, v6 = _ordered(v3, v6)
    v1, v2 = _ordered(v1, v2)
    v3, v4 = _ordered(v3, v4)
    v5, v6 = _ordered(v5, v6)
    return v0, v1, v2, v3, v4, v5, v6, v7


@njit(cache=True, inline="always")
def _weight_or_floor(weights, indices, start, end, t):
    """weights[indices[start + t]], or -inf past ``end`` (the read stays in the row, so needs no branch)."""
    v = weights[indices[min(start + t, end - 1)]]
    return v if start + t < end else -np.inf


@njit(cache=True)
def _insert_largest(weights, indices, start, end, out) -> int:
    """Largest ``len(out)`` of ``weights[indices[start:end]]`` into ``out``, descending, by insertion.

    Returns how many were written, min(len(out), end - start).
    """
    cap = out.shape[0]
    filled = 0
    for t in range(start, end):
        v = weights[indices[t]]
        if filled == cap:
            if v <= out[cap - 1]:
                continue
            pos = cap - 1
        else:
            pos = filled
            filled += 1
        while pos > 0 and out[pos - 1] < v:
            out[pos] = out[pos - 1]
            pos -= 1
        out[pos] = v
    return filled


@njit(cache=True, inline="always")
def _add_best_of_short_row(weights, indices, start, end, m, ps_best) -> None:
    """ps_best[r, m] += the (r+1)-th largest of ``weights[indices[start:end]]`` (at most ``NETWORK_SIZE``).

    A sorting network, then one add per table rank whether or not the row has that many values (adding
    0.0 changes no sum): the branchy insertion sort mispredicted on random weights, and a loop over the
    row's own length mispredicted almost as often; together they cost as much as the whole P@k pass.
    Inlined, so the eight values stay in registers.
    """
    n = end - start
    v0, v1, v2, v3, v4, v5, v6, v7 = _sort8_descending(
        _weight_or_floor(weights, indices, start, end, 0),
        _weight_or_floor(weights, indices, start, end, 1),
        _weight_or_floor(weights, indices, start, end, 2),
        _weight_or_floor(weights, indices, start, end, 3),
        _weight_or_floor(weights, indices, start, end, 4),
        _weight_or_floor(weights, indices, start, end, 5),
        _weight_or_floor(weights, indices, start, end, 6),
        _weight_or_floor(weights, indices, start, end, 7),
    )
    ranks = min(ps_best.shape[0], NETWORK_SIZE)  # ranks >= n add nothing; beyond 8 none has a value
    if ranks > 0:
        ps_best[0, m] += v0  # n >= 1: the caller skips empty rows
    if ranks > 1:
        ps_best[1, m] += v1 if n > 1 else 0.0
    if ranks > 2:
        ps_best[2, m] += v2 if n > 2 else 0.0
    if ranks > 3:
        ps_best[3, m] += v3 if n > 3 else 0.0
    if ranks > 4:
        ps_best[4, m] += v4 if n > 4 else 0.0
    if ranks > 5:
        ps_best[5, m] += v5 if n > 5 else 0.0
    if ranks > 6:
        ps_best[6, m] += v6 if n > 6 else 0.0
    if ranks > 7:
        ps_best[7, m] += v7 if n > 7 else 0.0


@njit(cache=True, inline="always")
def _prefetch_weights_ahead(weights, indices, end, last) -> None:
    """Prefetch the weights of the true labels at CSR positions end + PREFETCH_AHEAD - 7 .. + PREFETCH_AHEAD.

    A fixed eight per row, so no loop whose length varies with the row (its exit would mispredict): rows
    of up to eight labels leave no position unfetched, and a repeat costs one instruction. Positions stop
    at ``last``, the matrix's final true label.
    """
    ahead = end + PREFETCH_AHEAD
    for back in range(NETWORK_SIZE):
        prefetch(weights, indices[min(ahead - back, last)])


@njit(cache=True)
def _chunking(n, k_max):
    """(number of chunks, rows per chunk): a function of n and k_max only, so sums are reproducible."""
    if n == 0:
        return 0, 1
    table_bytes = 3 * 8 * k_max * (k_max + 1)
    n_chunks = min((n + CHUNK_ROWS - 1) // CHUNK_ROWS, MAX_CHUNKS, max(2, TABLE_BUDGET_BYTES // table_bytes))
    n_chunks = max(n_chunks, 1)
    return n_chunks, (n + n_chunks - 1) // n_chunks


def rank_sums(topk, indptr, indices, k_max, inv_prop, use_ps):
    """``rank_sums_kernel`` with chunks handed out one at a time instead of in equal static shares.

    On a shared machine a descheduled thread then no longer holds the others up at the end. (Set here,
    from Python: calling set_parallel_chunksize inside the kernel would stop numba from caching it.)
    """
    with parallel_chunksize(1):
        return rank_sums_kernel(topk, indptr, indices, k_max, inv_prop, use_ps)


@njit(parallel=True, cache=True)
def rank_sums_kernel(topk, indptr, indices, k_max, inv_prop, use_ps):
    """One pass over the rows; sums of hits and weights by rank, from which every metric at every k follows.

    Why by rank: a row's contribution to P@k, nDCG@k, ... at every k is a sum over its ranks r < k, so
    summing per rank (and per m = min(|y|, k_max), which fixes IDCG@min(k, |y|) for every k <= k_max) costs
    one update per hit instead of one per (k, family). ``metrics_from_rank_sums`` does the rest.

    Returns float64 arrays, summed over rows with at least one true label:
      hits[r, m]    number of hits at rank r in rows with min(|y|, k_max) = m
      recall[r]     sum of 1/|y| over hits at rank r
      ps_hits[r, m] sum of 1/p_l over hits at rank r (zeros unless ``use_ps``)
      ps_best[r, m] sum of the (r+1)-th largest 1/p_l of y over rows with |y| > r (zeros unless ``use_ps``)
    """
    n = topk.shape[0]
    n_chunks, chunk = _chunking(n, k_max)
    hits, recall, ps_hits, ps_best = _zero_tables(n_chunks, k_max)
    for c in prange(n_chunks):
        # The body is one plain call: parfor analysis of a big loop body is what makes compiling slow.
        _sum_rows(
            topk,
            indptr,
            indices,
            k_max,
            inv_prop,
            use_ps,
            min(n, c * chunk),
            min(n, (c + 1) * chunk),
            hits[c],
            recall[c],
            ps_hits[c],
            ps_best[c],
        )
    return _sum_in_order(hits), _sum_in_order(recall), _sum_in_order(ps_hits), _sum_in_order(ps_best)


@njit(cache=True)
def _zero_tables(n_chunks, k_max):
    """Per-chunk tables; allocated outside the parallel function, where each np.zeros would be a parfor."""
    return (
        np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64),
        np.zeros((n_chunks, k_max), dtype=np.float64),
        np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64),
        np.zeros((n_chunks, k_max, k_max + 1), dtype=np.float64),
    )


@njit(cache=True)
def _sum_rows(topk, indptr, indices, k_max, inv_prop, use_ps, lo, hi, hits, recall, ps_hits, ps_best):
    """Add rows lo..hi-1 into one chunk's tables (see ``rank_sums_kernel`` for their meaning)."""
    scan = min(k_max, topk.shape[1])  # ranks beyond the width are missing predictions: misses
    best = np.empty(k_max, dtype=np.float64)  # scratch, once per chunk rather than per row
    last = indptr[indptr.shape[0] - 1] - 1  # the final true label: only rows that have one use it
    for i in range(lo, hi):
        start = indptr[i]
        end = indptr[i + 1]
        n_true = end - start
        if n_true == 0:
            continue  # convention (c): counted in n by the caller, contributes 0 everywhere
        m = min(n_true, k_max)
        if use_ps:
            _prefetch_weights_ahead(inv_prop, indices, end, last)
            if n_true <= NETWORK_SIZE:  # the common row
                _add_best_of_short_row(inv_prop, indices, start, end, m, ps_best)
            else:
                n_best = _insert_largest(inv_prop, indices, start, end, best)
                for r in range(n_best):
                    ps_best[r, m] += best[r]
        if scan > MASK_RANKS:
            _add_hits_by_rank(topk, i, scan, indices, start, end, inv_prop, use_ps, m, hits, recall, ps_hits)
            continue
        # Inline rather than a helper: numba passes every array as ~7 scalars, and a call per row
        # with a dozen arrays measurably slowed the whole pass.
        if n_true <= LINEAR_ROW:
            mask = _hit_mask_by_scan(topk, i, scan, indices, start, end)
        else:
            mask = _hit_mask_by_search(topk, i, scan, indices, start, end)
        inv_n_true = 1.0 / n_true
        r = 0
        while mask != 0:  # visits ranks up to the last hit only
            if mask & 1:
                hits[r, m] += 1.0
                recall[r] += inv_n_true
                if use_ps:
                    ps_hits[r, m] += inv_prop[topk[i, r]]
            mask >>= 1
            r += 1


@njit(cache=True)
def _add_hits_by_rank(topk, i, scan, indices, start, end, inv_prop, use_ps, m, hits, recall, ps_hits):
    """Row i's hits into the tables, rank by rank: for k > 63, where no bit mask is wide enough."""
    inv_n_true = 1.0 / (end - start)
    for r in range(scan):
        label = topk[i, r]
        if _in_sorted_row(indices, start, end, label) and not _repeats_earlier(topk, i, r, label):
            hits[r, m] += 1.0
            recall[r] += inv_n_true
            if use_ps:
                ps_hits[r, m] += inv_prop[label]


@njit(cache=True)
def _sum_in_order(parts):
    """Sum over the first axis, chunk 0 first: the same rounding whatever thread produced each part."""
    total = np.zeros(parts.shape[1:], dtype=np.float64)
    for c in range(parts.shape[0]):
        total += parts[c]
    return total


def metrics_from_rank_sums(hits, recall, ps_hits, ps_best, ks, n_rows: int) -> np.ndarray:
    """Metric values (fractions, not percent) as a (5, len(ks)) array: P, nDCG, R, PSP, PSnDCG rows.

    Plain numpy on a few k_max^2 numbers (one numba function fewer to load in a fresh process). With
    d_r = 1/log2(r+2), I(m) = sum_{r<m} d_r and m = min(|y|, k_max):
      P@k = sum_{r<k,m} hits[r,m] / (n k)          nDCG@k = sum_{r<k,m} hits[r,m] d_r / I(min(k,m)) / n
      R@k = sum_{r<k} recall[r] / n                PSP@k = sum_{r<k,m} ps_hits / sum_{r<k,m} ps_best
      PSnDCG@k = sum_{r<k,m} ps_hits d_r / I(min(k,m))  /  the same with ps_best
    A zero denominator (no rows, no true labels) gives 0.
    """
    k_max = hits.shape[0]
    discount = 1.0 / np.log2(np.arange(k_max) + 2.0)
    ideal = np.concatenate([[1.0], np.cumsum(discount)])  # ideal[m] = I(m); I(0) = 0 would divide by 0,
    # and column m = 0 of the kernel's tables is always empty (m = min(|y|, k_max) >= 1 for every row
    # that adds anything), so any I(0) gives the same sums. Tables with entries there are not valid input.
    m = np.arange(k_max + 1)
    out = np.zeros((5, len(ks)), dtype=np.float64)
    for j, k in enumerate(ks):
        scale = discount[:k, None] / ideal[np.minimum(k, m)][None, :]
        psp_den = ps_best[:k].sum()
        psn_den = (ps_best[:k] * scale).sum()
        if n_rows > 0:
            out[0, j] = hits[:k].sum() / (n_rows * k)
            out[1, j] = (hits[:k] * scale).sum() / n_rows
            out[2, j] = recall[:k].sum() / n_rows
        out[3, j] = ps_hits[:k].sum() / psp_den if psp_den > 0 else 0.0
        out[4, j] = (ps_hits[:k] * scale).sum() / psn_den if psn_den > 0 else 0.0
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


@njit(cache=True)
def first_hit_rank(topk, indptr, indices, k_max, n_labels):
    """Per label, the best 0-based rank < k_max at which any row predicts it as a true label (k_max: never).

    Serial on purpose: a parallel min over labels would need one length-L table per thread (670k labels x
    64 chunks); a single pass of binary searches over n x k_max predictions is already a few milliseconds.
    """
    first = np.full(n_labels, k_max, dtype=np.int64)
    width = min(k_max, topk.shape[1])
    for i in range(topk.shape[0]):
        start = indptr[i]
        end = indptr[i + 1]
        for r in range(width):
            label = topk[i, r]
            if label >= 0 and label < n_labels and r < first[label]:
                if _in_sorted_row(indices, start, end, label):
                    first[label] = r
    return first
