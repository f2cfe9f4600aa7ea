"""LightXML's label clustering: balanced spherical 2-means applied recursively to label features.

Definitions (LightXML, Jiang et al. 2021, Sec. 3.2, which reuses the label tree of AttentionXML, You et al.
2019, Sec. 3.2):

* A label's feature is the L2-normalised sum of the L2-normalised TF-IDF vectors of the training documents
  tagged with it: ``F = normalize(Y^T normalize(X))``.
* The labels are split in two *balanced* halves by spherical 2-means: every split puts exactly
  ``floor(n/2)`` labels on the left and ``ceil(n/2)`` on the right. The assignment step sorts the labels by
  ``cos(f, c_right) - cos(f, c_left)`` and cuts the order in the middle; the update step sets each centroid
  to the L2-normalised mean of its half. It stops when the mean similarity of the labels to their own
  centroid grows by less than ``tol`` (AttentionXML's ``eps``, 1e-4), or after ``max_iter`` assignments.
* Every node is split again until the leaves hold at most ``leaf_size`` labels. All leaves sit at the same
  depth ``D``, the smallest with ``ceil(L / 2^D) <= leaf_size``, as in PECOS's binary hierarchical k-means;
  for Amazon-670K (L = 670,091, leaf 100) this is AttentionXML's and LightXML's 2^13 = 8192 clusters.
  Because halving keeps all sizes at one depth within 1 of each other, the leaves differ by at most 1.

Implementation: the tree is grown one level at a time. ``perm`` is a permutation of the label ids in which
every node of the current level is a contiguous segment; splitting a node reorders its segment (left half
first) in place. The nodes of a level are split by a numba kernel on a thread pool, in parallel over nodes.
Each worker keeps two dense vocabulary-sized centroid buffers and only touches the columns of its node's rows,
so the features stay sparse and no L x vocab or L x L matrix is ever built. Per 2-means iteration a node costs
one pass over its rows (dot products with both centroids) plus the rows that changed side (centroid update).

Choices of our own, documented because they decide the tree:

* Initial centroids: k-means++ seeding for k = 2 (Arthur & Vassilvitskii 2007) with the spherical distance
  ``1 - cos``: the first centroid is a uniformly random label of the node, the second is drawn with
  probability proportional to its distance from the first, among at most ``SEED_CANDIDATES`` evenly spaced
  labels of the node (so seeding costs O(1) rows, not a pass). AttentionXML draws both uniformly;
  when the two draws are near-duplicates every similarity difference is 0 and the split stalls on an
  arbitrary order. The random numbers are drawn per level in Python from ``numpy.random.default_rng(seed)``,
  so the tree is deterministic for a seed and independent of the number of threads.
* Ties: the half split keeps the ``floor(n/2)`` smallest differences, ties broken by position in the node.
  Positions follow ascending label id (splits keep the relative order of their labels), so ties go to the
  left half in label-id order.
* Labels with no training documents have an all-zero feature: their similarity to both centroids is 0, so
  their difference is 0 and they sit between the labels that lean left (< 0) and those that lean right
  (> 0); they fall on whichever side the median lands, in label-id order, and they add nothing to centroids.
  They therefore get ordinary, deterministic leaves (grouped with each other and with labels that have no
  preference), never a leaf of their own by rule.
"""

from __future__ import annotations

import math
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
from numba import njit
from scipy import sparse

from xmlbench.errors import UserError
from xmlbench.io import atomic_path

#: Rows among which the second initial centroid of a split is drawn (see ``_seed_centroids``).
SEED_CANDIDATES = 1024

#: Format of the cache files written by :func:`cached_clusters`; bump it when the layout changes.
CACHE_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------
# Label features
# ---------------------------------------------------------------------------------------------------------


def label_features(X: sparse.csr_matrix, Y: sparse.csr_matrix, top_k: int | None = None,
                   block_labels: int = 100_000) -> sparse.csr_matrix:
    """Label features ``normalize(Y^T normalize(X))`` (LightXML Sec. 3.2 / AttentionXML Sec. 3.2).

    ``X`` is the (n_docs x vocab) TF-IDF matrix, ``Y`` the (n_docs x L) label matrix (any non-zero counts as
    "tagged"). Returns an (L x vocab) float32 CSR with L2-normalised rows and sorted indices; a label with no
    training document gets an all-zero row.

    ``top_k``: keep each label's ``top_k`` largest entries (ties: the smaller word id) before normalising,
    computed ``block_labels`` labels at a time, so memory is bounded by the kept entries (about 8 bytes
    each) instead of the exact product's. ``None`` is the exact definition. At Amazon-3M's shape (22 documents
    of ~70 words per label, 2.8M labels) the exact product has ~2-3 billion entries, more than 24 GB; real
    Amazon-670K's label features average ~95 entries per label, which ``top_k = 128`` keeps whole.
    """
    if X.shape[0] != Y.shape[0]:
        raise UserError(
            f"label features need one label row per document: X has {X.shape[0]} rows, Y has {Y.shape[0]}"
        )
    X = sparse.csr_matrix(X, dtype=np.float32)
    Y = sparse.csr_matrix(Y)
    # normalize(X) is diag(1/||x_d||) X, and Y^T diag(w) X = (diag(w) Y)^T X: putting the document weights on
    # Y's (binary) entries normalises the documents without copying X.
    doc_weight = _inverse_norms(_row_norms(X))
    weighted_y = sparse.csr_matrix(
        (np.repeat(doc_weight, np.diff(Y.indptr)).astype(np.float32), Y.indices, Y.indptr), shape=Y.shape
    )
    weighted_y.eliminate_zeros()  # explicit zeros in Y and empty documents tag nothing
    label_docs = weighted_y.T.tocsr()
    if top_k is None:
        features = sparse.csr_matrix(label_docs @ X, dtype=np.float32)
        features.sum_duplicates()  # also sorts the indices
    else:
        blocks = []
        for start in range(0, label_docs.shape[0], block_labels):
            block = sparse.csr_matrix(label_docs[start:start + block_labels] @ X, dtype=np.float32)
            block.sum_duplicates()
            blocks.append(_keep_top_k_per_row(block, top_k))
        features = sparse.vstack(blocks, format="csr", dtype=np.float32) if blocks else \
            sparse.csr_matrix((0, X.shape[1]), dtype=np.float32)
    features.data *= np.repeat(_inverse_norms(_row_norms(features)), np.diff(features.indptr))
    features.eliminate_zeros()
    return features


def _keep_top_k_per_row(m: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each row's ``k`` largest entries (ties: the smaller column), columns kept in ascending order."""
    indptr = np.asarray(m.indptr, dtype=np.int64)
    keep = _top_k_mask(indptr, m.indices, m.data, k)
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])  # kept entries before each position
    new_indptr = kept_before[indptr]
    return sparse.csr_matrix((m.data[keep], m.indices[keep], new_indptr), shape=m.shape)


@njit(nogil=True, cache=True)
def _top_k_mask(indptr, indices, data, k):
    keep = np.zeros(data.shape[0], dtype=np.bool_)
    for row in range(indptr.shape[0] - 1):
        lo, hi = indptr[row], indptr[row + 1]
        if hi - lo <= k:
            keep[lo:hi] = True
            continue
        # stable sort of -value keeps the smaller column first among equal values (columns are sorted)
        order = np.argsort(-data[lo:hi], kind="mergesort")
        for j in order[:k]:
            keep[lo + j] = True
    return keep


def _row_norms(matrix: sparse.csr_matrix) -> np.ndarray:
    """Euclidean norm of every row of a CSR matrix, in float64 (no copy of the matrix)."""
    return _csr_row_norms(np.asarray(matrix.indptr, dtype=np.int64), matrix.data)


@njit(nogil=True, cache=True)
def _csr_row_norms(indptr, data):
    norms = np.zeros(indptr.shape[0] - 1, dtype=np.float64)
    for row in range(norms.shape[0]):
        total = 0.0
        for p in range(indptr[row], indptr[row + 1]):
            total += float(data[p]) * float(data[p])
        norms[row] = math.sqrt(total)
    return norms


def _inverse_norms(norms: np.ndarray) -> np.ndarray:
    """1/norm, and 0 for zero rows so that they stay zero instead of becoming NaN."""
    inverse = np.zeros_like(norms)
    np.divide(1.0, norms, out=inverse, where=norms > 0)
    return inverse


# ---------------------------------------------------------------------------------------------------------
# Balanced clustering
# ---------------------------------------------------------------------------------------------------------


def tree_depth(n_labels: int, leaf_size: int) -> int:
    """Smallest depth D with ``ceil(n_labels / 2^D) <= leaf_size`` (0 when everything fits in one leaf)."""
    depth = 0
    while -(-n_labels // (1 << depth)) > leaf_size:
        depth += 1
    return depth


def balanced_clusters(
    features: sparse.csr_matrix,
    leaf_size: int = 100,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 20,
    progress: bool = False,
) -> list[np.ndarray]:
    """Leaves of LightXML's balanced 2-means label tree, as int32 arrays of label ids (see module docstring).

    ``features`` is the (L x vocab) label-feature CSR, rows L2-normalised (zero rows allowed). The leaves come
    in tree order (siblings adjacent), each sorted by label id; together they partition ``range(L)``, all hold
    at most ``leaf_size`` labels and their sizes differ by at most 1. Deterministic for a seed.
    """
    if leaf_size < 1:
        raise UserError(f"leaf_size must be at least 1, got {leaf_size}")
    if max_iter < 1:
        raise UserError(f"max_iter must be at least 1, got {max_iter}")
    indptr, indices, data = _kernel_arrays(features)
    n_labels, vocab = features.shape
    if n_labels == 0:
        return []
    perm = np.arange(n_labels, dtype=np.int32)
    # node k of the current level is perm[bounds[k]:bounds[k + 1]]
    bounds = np.array([0, n_labels], dtype=np.int64)
    rng = np.random.default_rng(seed)
    depth = tree_depth(n_labels, leaf_size)
    for level in range(depth):
        started = time.perf_counter()
        starts, sizes = bounds[:-1], np.diff(bounds)
        splittable = sizes >= 2  # only false for leaf_size == 1, where a split would leave an empty leaf
        first_pick, second_draw = _initial_draws(rng, sizes[splittable])
        iterations = _split_level(
            indptr, indices, data, perm, starts[splittable], sizes[splittable], first_pick, second_draw,
            vocab, float(tol), int(max_iter),
        )
        bounds = np.sort(np.concatenate([bounds, starts[splittable] + sizes[splittable] // 2]))
        if progress:
            print(
                f"cluster level {level + 1}/{depth}: {len(bounds) - 1} nodes, "
                f"{iterations.mean():.1f} iterations on average, {time.perf_counter() - started:.1f}s",
                file=sys.stderr, flush=True,
            )
    return [leaf for leaf in np.split(perm, bounds[1:-1])]


def _kernel_arrays(features: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays with the dtypes the kernels are compiled for (int64 indptr, int32 indices, float32 data)."""
    if not sparse.issparse(features) or features.format != "csr":
        raise UserError(f"label features must be a scipy CSR matrix, got {type(features).__name__}")
    return (
        np.ascontiguousarray(features.indptr, dtype=np.int64),
        np.ascontiguousarray(features.indices, dtype=np.int32),
        np.ascontiguousarray(features.data, dtype=np.float32),
    )


def _initial_draws(rng: np.random.Generator, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per node: the position of the first centroid (uniform) and a uniform [0, 1) draw for the second."""
    first_pick = rng.integers(0, sizes).astype(np.int64) if sizes.size else np.zeros(0, np.int64)
    second_draw = rng.random(sizes.size)
    return first_pick, second_draw


def _split_level(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, perm: np.ndarray, starts: np.ndarray,
    sizes: np.ndarray, first_pick: np.ndarray, second_draw: np.ndarray, vocab: int, tol: float, max_iter: int,
) -> np.ndarray:
    """Split every node ``perm[starts[k]:starts[k]+sizes[k]]`` in place; returns the iterations per node.

    Runs numba kernels (which release the GIL) on a pool of Python threads, in parallel over nodes, or inside
    each node when there are fewer than two nodes per thread (the top levels). Python threads rather than
    ``numba.prange`` because compiling a parallel kernel takes about a minute, which every cold cache (CI, a
    fresh checkout) would pay.
    """
    threads = _thread_count()
    iterations = np.zeros(len(starts), dtype=np.int32)
    node_args = (indptr, indices, data, perm, starts, sizes, first_pick, second_draw, vocab, tol, max_iter)
    if threads > 1 and 2 * len(starts) <= threads:
        _split_nodes_one_by_one(threads, *node_args, iterations)
    else:
        _split_nodes_in_parallel(threads, *node_args, iterations)
    return iterations


def _split_nodes_one_by_one(
    threads: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, perm: np.ndarray,
    starts: np.ndarray, sizes: np.ndarray, first_pick: np.ndarray, second_draw: np.ndarray, vocab: int,
    tol: float, max_iter: int, iterations: np.ndarray,
) -> None:
    """Split the nodes one after the other, each with its dot products spread over all threads."""
    centroids = np.zeros(2 * vocab, dtype=np.float32)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for node, (start, size) in enumerate(zip(starts, sizes)):
            iterations[node] = _split_node_threaded(
                pool, 4 * threads, indptr, indices, data, perm[start:start + size], int(first_pick[node]),
                float(second_draw[node]), centroids, tol, max_iter,
            )


def _split_nodes_in_parallel(
    threads: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, perm: np.ndarray,
    starts: np.ndarray, sizes: np.ndarray, first_pick: np.ndarray, second_draw: np.ndarray, vocab: int,
    tol: float, max_iter: int, iterations: np.ndarray,
) -> None:
    """Deal the nodes round-robin into a few chunks per thread (so uneven nodes balance out); each chunk is
    one kernel call that splits its nodes one by one."""
    n_chunks = max(1, min(len(starts), 4 * threads))

    def run_chunk(chunk: int) -> None:
        _split_chunk(
            indptr, indices, data, perm, starts, sizes, first_pick, second_draw, vocab, tol, max_iter,
            chunk, n_chunks, iterations,
        )

    if threads == 1 or n_chunks == 1:
        for chunk in range(n_chunks):
            run_chunk(chunk)
    else:
        with ThreadPoolExecutor(max_workers=min(threads, n_chunks)) as pool:
            list(pool.map(run_chunk, range(n_chunks)))  # list() re-raises a failed chunk's exception


def _thread_count() -> int:
    """Worker threads: numba's setting (``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``)."""
    return numba.get_num_threads()


@njit(nogil=True, cache=True)
def _split_chunk(indptr, indices, data, perm, starts, sizes, first_pick, second_draw, vocab, tol, max_iter,
                 chunk, n_chunks, iterations):
    """Split nodes ``chunk, chunk + n_chunks, ...`` of the level, writing their iteration counts.

    One pair of centroid buffers serves all the chunk's nodes (each node leaves them all-zero again), so they
    are allocated once per chunk rather than once per node.
    """
    # centroids[2*j] and centroids[2*j+1] are column j of the left and right centroid sums: interleaved, so
    # the dot products with both centroids read one cache line per non-zero. float32 halves the cache
    # footprint; the sums are accumulated per row in float64 and the cosines only steer the split.
    centroids = np.zeros(2 * vocab, dtype=np.float32)
    for node in range(chunk, starts.shape[0], n_chunks):
        segment = perm[starts[node]:starts[node] + sizes[node]]
        iterations[node] = _split_node(
            indptr, indices, data, segment, first_pick[node], second_draw[node], centroids, tol, max_iter
        )


@njit(nogil=True, cache=True)
def _split_node(indptr, indices, data, labels, first_pick, second_draw, centroids, tol, max_iter):
    """Balanced spherical 2-means on one node; reorders ``labels`` in place (left half first).

    ``centroids`` holds the (unnormalised) sums of the rows assigned to each centroid. Cosines are
    ``x . sum / ||sum||`` and ``||sum||^2 = sum over members of x . sum``, so the norms come for free from the
    dot products of the assignment step. When labels move, only their rows are added to or subtracted from the
    sums, which makes the late iterations (few moves) cheap. Returns the number of assignment steps.
    """
    owner, side, dot_left, dot_right, difference = _node_state(labels.shape[0])
    _seed_centroids(indptr, indices, data, labels, first_pick, second_draw, centroids, owner, dot_left)
    previous = -np.inf
    iteration = 0
    while True:
        iteration += 1
        _dots(indptr, indices, data, labels, centroids, dot_left, dot_right)
        objective = _assign(dot_left, dot_right, owner, side, difference)
        if objective - previous < tol or iteration >= max_iter:
            break
        previous = objective
        _move_rows(indptr, indices, data, labels, owner, side, centroids)
    _finish_node(indptr, indices, labels, side, centroids)
    return iteration


def _split_node_threaded(
    pool: ThreadPoolExecutor, n_slices: int, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
    labels: np.ndarray, first_pick: int, second_draw: float, centroids: np.ndarray, tol: float, max_iter: int,
) -> int:
    """:func:`_split_node` for a node too big to leave to one thread: the dot products, which are most of the
    work, run on ``pool`` in ``n_slices`` slices of the node. They are computed row by row exactly as in
    ``_split_node`` and everything else runs in the same order, so the tree does not depend on the threads.
    """
    owner, side, dot_left, dot_right, difference = _node_state(len(labels))
    _seed_centroids(indptr, indices, data, labels, first_pick, second_draw, centroids, owner, dot_left)
    bounds = np.linspace(0, len(labels), n_slices + 1).astype(np.int64)
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]

    def dots(part: slice) -> None:
        _dots(indptr, indices, data, labels[part], centroids, dot_left[part], dot_right[part])

    previous = -np.inf
    iteration = 0
    while True:
        iteration += 1
        list(pool.map(dots, slices))
        objective = _assign(dot_left, dot_right, owner, side, difference)
        if objective - previous < tol or iteration >= max_iter:
            break
        previous = objective
        _move_rows(indptr, indices, data, labels, owner, side, centroids)
    _finish_node(indptr, indices, labels, side, centroids)
    return iteration


@njit(nogil=True, cache=True)
def _node_state(n):
    """Work arrays of a node: ``owner[i]``, which centroid sum row i is in (0 left, 1 right, 2 none yet);
    ``side[i]``, its new side; its dot products with both sums; their cosine difference."""
    owner = np.full(n, 2, dtype=np.int8)
    side = np.empty(n, dtype=np.int8)
    dot_left = np.empty(n, dtype=np.float64)
    dot_right = np.empty(n, dtype=np.float64)
    difference = np.empty(n, dtype=np.float64)
    return owner, side, dot_left, dot_right, difference


@njit(nogil=True, cache=True)
def _assign(dot_left, dot_right, owner, side, difference):
    """Assignment step: the balanced split of the cosine differences into ``side``; returns the objective,
    the mean cosine of the labels to their new side's centroid."""
    n = dot_left.shape[0]
    inv_left = _inverse_norm(_member_sum(dot_left, owner, 0))
    inv_right = _inverse_norm(_member_sum(dot_right, owner, 1))
    for i in range(n):
        difference[i] = dot_right[i] * inv_right - dot_left[i] * inv_left
    _exact_half(difference, n // 2, side)
    objective = 0.0
    for i in range(n):
        objective += dot_left[i] * inv_left if side[i] == 0 else dot_right[i] * inv_right
    return objective / n


@njit(nogil=True, cache=True)
def _finish_node(indptr, indices, labels, side, centroids):
    """Leave the centroid buffers all-zero for the next node and put the left half first."""
    _clear_centroids(indptr, indices, labels, centroids)
    _reorder_by_side(labels, side)


@njit(nogil=True, cache=True)
def _seed_centroids(indptr, indices, data, labels, first_pick, second_draw, centroids, owner, weights):
    """k-means++ seeding for k = 2 on a sample: the left sum becomes row ``first_pick``; the right sum a row
    drawn, among at most ``SEED_CANDIDATES`` evenly spaced other rows, with probability proportional to its
    distance ``1 - cos`` to the first (uniformly if all are at distance 0). Marks both in ``owner``.

    Sampling the candidates keeps the seeding at O(1) rows per node instead of a pass over the node.
    """
    n = labels.shape[0]
    n_candidates = min(n - 1, SEED_CANDIDATES)
    _add_row(indptr, indices, data, labels[first_pick], centroids, 0, 1.0)
    first_norm_sq = _row_dot(indptr, indices, data, labels[first_pick], centroids, 0)
    inv_first = 1.0 / math.sqrt(first_norm_sq) if first_norm_sq > 1e-12 else 0.0
    total = 0.0
    for k in range(n_candidates):
        position = _candidate(first_pick, k, n, n_candidates)
        cosine = _row_dot(indptr, indices, data, labels[position], centroids, 0) * inv_first
        weights[k] = max(0.0, 1.0 - cosine)
        total += weights[k]
    chosen = min(int(second_draw * n_candidates), n_candidates - 1)
    if total > 0.0:
        target = second_draw * total
        running = 0.0
        for k in range(n_candidates):
            running += weights[k]
            if weights[k] > 0.0:
                chosen = k  # the last positive weight also catches a target rounded past the final sum
                if running > target:
                    break
    second = _candidate(first_pick, chosen, n, n_candidates)
    _add_row(indptr, indices, data, labels[second], centroids, 1, 1.0)
    owner[first_pick] = 0
    owner[second] = 1


@njit(nogil=True, cache=True)
def _candidate(first_pick, k, n, n_candidates):
    """Position of seeding candidate k: evenly spaced over the node after ``first_pick``, never on it."""
    return (first_pick + 1 + (k * (n - 1)) // n_candidates) % n


@njit(nogil=True, cache=True)
def _row_dot(indptr, indices, data, row, centroids, which):
    """``x_row . centroid[which]``."""
    total = 0.0
    for p in range(indptr[row], indptr[row + 1]):
        total += data[p] * centroids[2 * indices[p] + which]
    return total


@njit(nogil=True, cache=True)
def _dots(indptr, indices, data, labels, centroids, dot_left, dot_right):
    """Dot product of every row of the node with both centroid sums."""
    for i in range(labels.shape[0]):
        row = labels[i]
        left = 0.0
        right = 0.0
        for p in range(indptr[row], indptr[row + 1]):
            value = data[p]
            column = 2 * indices[p]
            left += value * centroids[column]
            right += value * centroids[column + 1]
        dot_left[i] = left
        dot_right[i] = right


@njit(nogil=True, cache=True)
def _member_sum(dots, owner, which):
    """Sum of ``dots`` over the rows that make up centroid ``which``: the squared norm of that sum."""
    total = 0.0
    for i in range(dots.shape[0]):
        if owner[i] == which:
            total += dots[i]
    return total


@njit(nogil=True, cache=True)
def _inverse_norm(norm_sq):
    """1/||c||, and 0 for an (all-zero-rows) empty centroid, whose cosines we define as 0."""
    return 1.0 / math.sqrt(norm_sq) if norm_sq > 1e-12 else 0.0


@njit(nogil=True, cache=True)
def _exact_half(difference, half, side):
    """``side[i] = 0`` for the ``half`` smallest differences (ties by position), 1 for the others.

    Equivalent to a stable argsort cut at ``half``, in linear time: find the half-th smallest value, take
    everything below it, then the first tied positions until the left half is full.
    """
    n = difference.shape[0]
    threshold = _kth_smallest(difference.copy(), half - 1)
    below = 0
    for i in range(n):
        if difference[i] < threshold:
            below += 1
    ties_left = half - below
    for i in range(n):
        if difference[i] < threshold:
            side[i] = 0
        elif difference[i] == threshold and ties_left > 0:
            side[i] = 0
            ties_left -= 1
        else:
            side[i] = 1


@njit(nogil=True, cache=True)
def _kth_smallest(values, k):
    """The k-th smallest (0-based) of ``values``, which it reorders: Hoare's quickselect, median-of-3 pivot.

    Our own instead of ``np.partition``, whose numba implementation takes seconds to compile. Hoare's
    partition stops on values equal to the pivot, so many ties (e.g. all-zero features) do not make it
    quadratic.
    """
    low, high = 0, values.shape[0] - 1
    while low < high:
        middle = (low + high) // 2
        pivot = _median3(values[low], values[middle], values[high])
        i, j = low, high
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        # now values[low..j] <= pivot <= values[i..high], and everything strictly between j and i equals pivot
        if k <= j:
            high = j
        elif k >= i:
            low = i
        else:
            return values[k]
    return values[k]


@njit(nogil=True, cache=True)
def _median3(a, b, c):
    return max(min(a, b), min(max(a, b), c))


@njit(nogil=True, cache=True)
def _move_rows(indptr, indices, data, labels, owner, side, centroids):
    """Update step: move every row whose side changed from its old centroid sum to its new one."""
    for i in range(labels.shape[0]):
        if owner[i] != side[i]:
            if owner[i] != 2:
                _add_row(indptr, indices, data, labels[i], centroids, owner[i], -1.0)
            _add_row(indptr, indices, data, labels[i], centroids, side[i], 1.0)
            owner[i] = side[i]


@njit(nogil=True, cache=True)
def _add_row(indptr, indices, data, row, centroids, which, sign):
    """``centroid[which] += sign * x_row``."""
    for p in range(indptr[row], indptr[row + 1]):
        centroids[2 * indices[p] + which] += sign * data[p]


@njit(nogil=True, cache=True)
def _clear_centroids(indptr, indices, labels, centroids):
    """Zero the centroid buffers for the next node.

    A small node touched only its rows' columns, and zeroing those is cheaper than zeroing the vocabulary;
    a big node touched most of it, and one contiguous fill is cheaper than scattered writes.
    """
    node_nnz = 0
    for i in range(labels.shape[0]):
        node_nnz += indptr[labels[i] + 1] - indptr[labels[i]]
    if node_nnz * 16 > centroids.shape[0]:
        centroids[:] = 0.0
        return
    for i in range(labels.shape[0]):
        row = labels[i]
        for p in range(indptr[row], indptr[row + 1]):
            centroids[2 * indices[p]] = 0.0
            centroids[2 * indices[p] + 1] = 0.0


@njit(nogil=True, cache=True)
def _reorder_by_side(labels, side):
    """Stable partition of ``labels``: the left side first, each side in its previous relative order."""
    original = labels.copy()
    position = 0
    for wanted in range(2):
        for i in range(original.shape[0]):
            if side[i] == wanted:
                labels[position] = original[i]
                position += 1


# ---------------------------------------------------------------------------------------------------------
# Plain-array form and cache
# ---------------------------------------------------------------------------------------------------------


def clusters_to_arrays(leaves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Leaves as plain tensors: ``label_to_cluster`` (L,) int32 and ``cluster_labels`` (K, max_leaf) int32.

    ``cluster_labels[k]`` lists leaf k's labels, padded with -1. The leaves must partition ``range(L)``.
    """
    sizes = np.array([len(leaf) for leaf in leaves], dtype=np.int64)
    n_labels = int(sizes.sum())
    cluster_labels = np.full((len(leaves), int(sizes.max(initial=0))), -1, dtype=np.int32)
    label_to_cluster = np.full(n_labels, -1, dtype=np.int32)
    for k, leaf in enumerate(leaves):
        leaf = np.asarray(leaf)
        if leaf.size and (leaf.min() < 0 or leaf.max() >= n_labels):
            raise ValueError(f"leaves do not partition range({n_labels}): leaf {k} has an id out of range")
        cluster_labels[k, : leaf.size] = leaf
        label_to_cluster[leaf] = k
    # the sizes add up to L, so if every label got a cluster, no label is in two leaves
    if (label_to_cluster < 0).any():
        raise ValueError(f"leaves do not partition range({n_labels}): some labels are repeated")
    return label_to_cluster, cluster_labels


def arrays_to_clusters(cluster_labels: np.ndarray) -> list[np.ndarray]:
    """Inverse of :func:`clusters_to_arrays`: the leaves as int32 arrays, with the -1 padding dropped."""
    return [np.ascontiguousarray(row[row >= 0], dtype=np.int32) for row in np.asarray(cluster_labels)]


def cached_clusters(cache_dir: Path, key: str, compute: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """Leaves from ``cache_dir/clusters-{key}.npz``, or from ``compute()``, saved there atomically.

    The caller builds ``key`` as ``f"{dataset_fingerprint}-seed{seed}-leaf{leaf_size}"``. The file holds plain
    int32 arrays (no pickle); an unreadable or foreign file is recomputed and overwritten.
    """
    if not key or any(c in key for c in "/\\") or key.startswith("."):
        raise UserError(f"cluster cache key must be a plain file name, got {key!r}")
    path = Path(cache_dir) / f"clusters-{key}.npz"
    if path.exists():
        leaves = _read_cache(path)
        if leaves is not None:
            return leaves
    leaves = compute()
    _, cluster_labels = clusters_to_arrays(leaves)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, format=np.int32(CACHE_FORMAT), cluster_labels=cluster_labels)
    return arrays_to_clusters(cluster_labels)


def _read_cache(path: Path) -> list[np.ndarray] | None:
    """The leaves stored at ``path``, or None if the file is unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if int(stored["format"]) != CACHE_FORMAT:
                return None
            return arrays_to_clusters(stored["cluster_labels"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # truncated or foreign: recompute
        return None
