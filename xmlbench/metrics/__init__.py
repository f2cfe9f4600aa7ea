"""Ranking metrics for extreme multi-label classification: P@k, nDCG@k, R@k, PSP@k, PSnDCG@k, Cov@k.

``evaluate(topk, truth, ks, inv_propensity)`` computes every family at every k in one parallel pass
(:mod:`xmlbench.metrics.kernels`) and returns percentages keyed ``"P@1"``, ``"nDCG@3"``, ``"R@5"``,
``"PSP@5"``, ``"PSnDCG@5"``... Notation: row i has predicted ids ``topk[i]`` (best first) and true labels
y_i (the stored entries of ``truth[i]``; values are ignored, so call ``eliminate_zeros()`` on a truth
matrix that stores explicit zeros); rel_i(r) = 1 when the prediction at 0-based rank r is a hit.

Conventions (each one is tested in tests/test_metrics.py):

(a) A label repeated within a row counts once: the first occurrence may score, a later repeat occupies its
    rank but scores 0.
(b) Fewer than k predictions (id -1, or k larger than ``topk.shape[1]``) count as misses; predicted ids
    outside [0, L) are misses too. The P@k denominator is always k.
(c) A row with no true labels is part of the average (n counts it) and scores 0 for every metric; it adds
    nothing to the propensity normalisers of (e) either.
(d) P@k = mean_i |top_k(i) ∩ y_i| / k;  R@k = mean_i |top_k(i) ∩ y_i| / |y_i|;
    nDCG@k = mean_i DCG_i@k / IDCG@min(k, |y_i|), DCG_i@k = sum_{r<k} rel_i(r) / log2(r + 2),
    IDCG@m = sum_{r<m} 1 / log2(r + 2).
(e) Propensity-scored metrics (Jain et al. 2016) follow pyxclib: each is normalised by its best
    achievable value on the same rows, ratio of sums over rows, times 100. With w_l = 1/p_l and
    w*_i(0) >= w*_i(1) >= ... the weights of y_i sorted in decreasing order:
      PSP@k    = sum_i sum_{r<k} rel_i(r) w_{topk[i,r]}  /  sum_i sum_{r<min(k,|y_i|)} w*_i(r)
      PSnDCG@k = sum_i PSDCG_i@k / IDCG@min(k,|y_i|)  /  sum_i bestPSDCG_i@k / IDCG@min(k,|y_i|)
    where PSDCG_i@k = sum_{r<k} rel_i(r) w_{topk[i,r]} / log2(r + 2) and bestPSDCG_i@k is the same for
    the ranking w*_i. A metric whose denominator is 0 (no rows, or no true labels at all) is 0.
    The weights must be finite (``xmlbench.metrics.propensity.inv_propensity`` computes them).
(f) Coverage (napkinXC's ``coverage_at_k``), only with ``coverage=True``: with T the labels that occur in
    some row's y_i and C_k the labels l such that l is in top_k(i) and in y_i for at least one row i,
      Cov@k = |C_k| / |T|   (0 when T is empty).
    It is a property of the whole test set, not a mean over rows: how many of the labels that can be
    found at all are found somewhere.

k may exceed the width of ``topk`` (see (b)) but not ``MAX_K``.

The registry ``METRICS`` names the families for ``--help`` and result tables; ``parse_metric_names``
reads a user's ``"P@1,nDCG@5,PSP@5"``. Importing this package does not import numba or scipy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from xmlbench.errors import UserError
from xmlbench.metrics.propensity import inv_propensity
from xmlbench.registry import Registry

if TYPE_CHECKING:
    import scipy.sparse

MAX_K = 1024
"""Largest k accepted: the kernel's by-rank tables hold 3 k^2 numbers per chunk (25 MB at k = 1024)."""

__all__ = [
    "METRICS", "MetricSpec", "TERCILES", "by_frequency_tercile", "evaluate", "frequency_terciles",
    "inv_propensity", "metric_key", "parse_metric_names",
]


@dataclass(frozen=True)
class MetricSpec:
    """One metric family; its values are reported as ``f"{name}@{k}"`` in percent, higher is better."""

    name: str
    description: str
    needs_propensity: bool = False
    # False: ``evaluate`` adds the family only when asked (``coverage=True``), so the default call returns
    # exactly the keys it always has and costs no extra pass.
    by_default: bool = True


# The protocol's two numbers, defined once: every run saves its TOP_K best labels per test document, and
# reports metrics at KS (any k <= TOP_K can be computed later from the saved predictions).
TOP_K = 100
KS: tuple[int, ...] = (1, 3, 5)

METRICS: Registry[MetricSpec] = Registry("metric")
for _spec in (
    MetricSpec("P", "precision@k: share of the top k predictions that are true labels"),
    MetricSpec("nDCG", "normalised discounted cumulative gain@k, ideal DCG over min(k, |y|) labels"),
    MetricSpec("R", "recall@k: share of a row's true labels found in its top k"),
    MetricSpec("PSP", "propensity-scored precision@k (Jain et al. 2016), normalised by the best", True),
    MetricSpec("PSnDCG", "propensity-scored nDCG@k (Jain et al. 2016), normalised by the best", True),
    MetricSpec("Cov", "coverage@k: share of the test labels hit in at least one row's top k", False, False),
):
    METRICS.register(_spec.name, _spec)


def metric_key(name: str, k: int) -> str:
    """The result key of one metric at one k, e.g. ``metric_key("P", 5) == "P@5"``."""
    return f"{name}@{k}"


def parse_metric_names(text: str) -> list[tuple[str, int]]:
    """Parse ``"P@1,nDCG@5,PSP@5"`` into ``[("P", 1), ("nDCG", 5), ("PSP", 5)]``; UserError if malformed."""
    parsed: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, k_text = item.partition("@")
        if not sep or not k_text.strip().isdigit() or int(k_text) < 1:
            raise UserError(f"metric {item!r} must look like NAME@K with K >= 1, e.g. P@5")
        parsed.append((METRICS.canonical(name.strip()), int(k_text)))
    if not parsed:
        raise UserError(f"no metric named in {text!r}; known metrics: {', '.join(METRICS.names())}")
    return parsed


def evaluate(
    topk: np.ndarray,
    truth: scipy.sparse.spmatrix,
    ks: Iterable[int] = KS,
    inv_propensity: np.ndarray | None = None,
    coverage: bool = False,
) -> dict[str, float]:
    """All metric families at all ``ks``, in percent (conventions in the module docstring).

    ``topk``: (n, width) int32/int64 predicted label ids, best first, -1 for none. ``truth``: n x L sparse
    binary matrix (CSR preferred; any other format is converted). ``inv_propensity``: length-L 1/p_l; when
    given, PSP@k and PSnDCG@k are added; ``coverage`` adds Cov@k (convention (f)). Keys come family by
    family: P@k..., nDCG@k..., R@k..., PSP@k..., Cov@k...
    """
    from xmlbench.metrics.kernels import metrics_from_rank_sums, rank_sums

    k_list = _checked_ks(ks)
    topk = _checked_topk(topk)
    truth = _canonical_csr(truth, topk.shape[0])
    n, n_labels = truth.shape
    topk = _int32_ids(topk, n_labels)
    indptr, indices = _int32_csr(truth)
    use_ps = inv_propensity is not None
    weights = _checked_weights(inv_propensity, n_labels) if use_ps else np.zeros(0, dtype=np.float64)
    k_max = k_list[-1]
    sums = rank_sums(topk, indptr, indices, k_max, weights, use_ps)
    values = metrics_from_rank_sums(*sums, k_list, n)
    names = [spec.name for _, spec in METRICS.items()
             if (use_ps or not spec.needs_propensity) and spec.by_default]
    out = {
        metric_key(name, k): 100.0 * float(values[FAMILY_ROW[name], j])
        for name in names
        for j, k in enumerate(k_list)
    }
    if coverage:
        out.update(_coverage(topk, indptr, indices, n_labels, k_list))
    return out


def _coverage(
    topk: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n_labels: int, k_list: list[int]
) -> dict[str, float]:
    """Cov@k for every k from one pass: the best rank at which each label is ever a hit."""
    from xmlbench.metrics.kernels import first_hit_rank

    first = first_hit_rank(topk, indptr, indices, k_list[-1], n_labels)
    n_true_labels = int(np.count_nonzero(np.bincount(indices, minlength=n_labels)))
    # first[l] == k_max means never a hit within k_max ranks; a hit at rank r counts for every k > r.
    found = np.bincount(first[first < k_list[-1]], minlength=k_list[-1]).cumsum()
    return {
        metric_key("Cov", k): 100.0 * float(found[k - 1]) / n_true_labels if n_true_labels else 0.0
        for k in k_list
    }


TERCILES = ("head", "torso", "tail")


def frequency_terciles(train_counts: np.ndarray) -> np.ndarray:
    """Tercile of each label (0 head, 1 torso, 2 tail) by training frequency, equal shares of occurrences.

    Labels are sorted by training count, most frequent first (ties by id, so the split is deterministic);
    a label falls in the third of all training label occurrences where its own occurrences begin:
    tercile = min(2, floor(3 * occurrences of the labels before it / all occurrences)). Equal occurrences,
    not equal numbers of labels, because in XMC a third of the labels by count would put nearly every
    label-document pair in the head. Labels never seen in training are tail.
    """
    counts = np.asarray(train_counts, dtype=np.int64).ravel()
    order = np.lexsort((np.arange(counts.size), -counts))
    before = np.cumsum(counts[order]) - counts[order]
    total = int(counts.sum())
    terciles = np.full(counts.size, 2, dtype=np.int64)
    if total > 0:
        terciles[order] = np.minimum(2, (3 * before) // total)
        terciles[counts == 0] = 2
    return terciles


def by_frequency_tercile(
    topk: np.ndarray,
    truth: scipy.sparse.spmatrix,
    train_counts: np.ndarray,
    ks: Iterable[int] = KS,
    inv_propensity: np.ndarray | None = None,
) -> dict[str, float]:
    """P@k (and PSP@k with ``inv_propensity``) of the predictions of head, torso and tail labels, in percent.

    Keys ``"P@5/head"``, ``"PSP@5/tail"``... With T one tercile (:func:`frequency_terciles`):
      P@k/T   = sum_i |{r < k: rel_i(r), topk[i,r] in T}| / (k n)
      PSP@k/T = sum_i sum_{r<k, topk[i,r] in T} rel_i(r) w_{topk[i,r]}  /  the PSP@k denominator (e)
    i.e. the hits on T's labels over the denominators of P@k and PSP@k themselves, so the three terciles
    add up to P@k and to PSP@k. Computed by ``evaluate`` on the predictions with every id outside T set to
    -1 (a miss), which keeps every convention of the module docstring.
    """
    topk = _checked_topk(topk)
    n_labels = truth.shape[1]
    terciles = frequency_terciles(train_counts)
    if terciles.size != n_labels:
        raise UserError(f"train_counts must have one value per label ({n_labels}), got {terciles.size}")
    valid = (topk >= 0) & (topk < n_labels)
    tercile_of = np.where(valid, terciles[np.where(valid, topk, 0)], -1)
    families = ("P", "PSP") if inv_propensity is not None else ("P",)
    out: dict[str, float] = {}
    for t, name in enumerate(TERCILES):
        values = evaluate(np.where(tercile_of == t, topk, -1), truth, ks, inv_propensity)
        out.update({f"{key}/{name}": v for key, v in values.items() if key.partition("@")[0] in families})
    return out


FAMILY_ROW = {"P": 0, "nDCG": 1, "R": 2, "PSP": 3, "PSnDCG": 4}
"""Row of each family in the array that ``metrics_from_rank_sums`` returns."""


def _checked_ks(ks: Iterable[int]) -> list[int]:
    """Distinct positive ks in increasing order (the last one is the deepest rank the kernel visits)."""
    try:
        k_list = sorted({int(k) for k in ks})
    except (TypeError, ValueError):
        raise UserError(f"ks must be positive integers, got {ks!r}") from None
    if not k_list or k_list[0] < 1:
        raise UserError(f"ks must be a non-empty list of positive integers, got {ks!r}")
    if k_list[-1] > MAX_K:
        raise UserError(f"k = {k_list[-1]} is too large: metrics are computed for k up to {MAX_K}")
    return k_list


def _checked_topk(topk: np.ndarray) -> np.ndarray:
    """The predictions as a 2-D integer array (UserError otherwise)."""
    topk = np.asarray(topk)
    if topk.ndim != 2:
        raise UserError(f"topk must be a 2-D (rows x k) array of label ids, got shape {topk.shape}")
    if not np.issubdtype(topk.dtype, np.integer):
        raise UserError(f"topk must hold integer label ids, got dtype {topk.dtype}")
    return topk


# The kernel is compiled for int32 ids and CSR arrays only: every other dtype would be one more variant to
# compile (seconds each) and to load in a fresh process. int32 inputs, the common case, are not copied.
INT32_MAX = np.iinfo(np.int32).max


def _int32_ids(topk: np.ndarray, n_labels: int) -> np.ndarray:
    """C-contiguous int32 predictions; ids outside [0, L), misses anyway, become -1 (so none can wrap)."""
    if topk.dtype != np.int32 and n_labels <= INT32_MAX:
        # filled, not np.where(..., topk, -1): numpy 2.5 refuses -1 in an unsigned dtype, and a uint64
        # beside a signed int would promote to float64
        ids = np.full(topk.shape, -1, dtype=np.int32)
        valid = (topk >= 0) & (topk < n_labels)
        ids[valid] = topk[valid]  # each below n_labels <= INT32_MAX: fits
        topk = ids
    return np.ascontiguousarray(topk)


def _int32_csr(truth: scipy.sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) as int32 whenever they fit (scipy may hand out int64 for small matrices too)."""
    indptr, indices = truth.indptr, truth.indices
    if indices.dtype != np.int32 and truth.shape[1] <= INT32_MAX:
        indices = indices.astype(np.int32)
    if indptr.dtype != np.int32 and truth.nnz <= INT32_MAX:
        indptr = indptr.astype(np.int32)
    return indptr, indices


def _canonical_csr(truth: scipy.sparse.spmatrix, n_rows: int) -> scipy.sparse.csr_matrix:
    """CSR with sorted, duplicate-free rows (the binary search needs it); the caller's matrix is untouched."""
    import scipy.sparse as sp

    if not sp.issparse(truth):
        raise UserError(f"truth must be a scipy sparse matrix, got {type(truth).__name__}")
    if truth.shape[0] != n_rows:
        raise UserError(f"topk has {n_rows} rows but truth has {truth.shape[0]}; they must match row for row")
    if truth.format != "csr":
        truth = truth.tocsr()  # a fresh matrix, safe to fix in place below
    elif not truth.has_canonical_format:
        truth = truth.copy()
    if not truth.has_canonical_format:
        truth.sum_duplicates()  # sorts indices and merges repeated entries
    return truth


def _checked_weights(inv_propensity: np.ndarray, n_labels: int) -> np.ndarray:
    weights = np.ascontiguousarray(inv_propensity, dtype=np.float64)
    if weights.shape != (n_labels,):
        raise UserError(
            f"inv_propensity must have one value per label ({n_labels}), got shape {weights.shape}"
        )
    return weights
