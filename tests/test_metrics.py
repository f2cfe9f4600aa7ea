"""Tests of xmlbench.metrics: hand-computed values, each documented convention, a pure-Python reference."""

from __future__ import annotations

import math
import platform

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from xmlbench.errors import UserError
from xmlbench.metrics import METRICS, evaluate, kernels, metric_key, parse_metric_names
from xmlbench.metrics.kernels import CHUNK_ROWS, _sort8_descending, precision_only_kernel, rank_sums
from xmlbench.metrics.prefetch import prefetch
from xmlbench.metrics.propensity import inv_propensity

FAMILIES = ("P", "nDCG", "R")
PS_FAMILIES = ("PSP", "PSnDCG")


def csr(rows: list[list[int]], n_labels: int) -> sp.csr_matrix:
    """Binary CSR from per-row label lists (kept in the given order: may be unsorted)."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([lab for r in rows for lab in r], dtype=np.int32)
    return sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(rows), n_labels))


def d(rank: int) -> float:
    """DCG discount of 0-based rank: 1 / log2(rank + 2)."""
    return 1.0 / math.log2(rank + 2)


# ---------------------------------------------------------------- pure-Python reference


def reference_metrics(topk, truth_rows, ks, weights=None) -> dict[str, float]:
    """The definitions of the xmlbench.metrics docstring, written as plainly as possible."""
    out = {}
    n = len(truth_rows)
    for k in ks:
        p = ndcg = rec = 0.0
        psp_num = psp_den = psn_num = psn_den = 0.0
        for preds, y in zip(topk, truth_rows):
            preds = [int(x) for x in preds[:k]] + [-1] * max(0, k - len(preds))
            gains, seen = [], set()
            for lab in preds:
                gains.append(lab in y and lab not in seen)  # a repeat scores 0
                seen.add(lab)
            if not y:
                continue  # empty row: 0 everywhere, still counted in n
            idcg = sum(d(r) for r in range(min(k, len(y))))
            p += sum(gains) / k
            ndcg += sum(d(r) for r, g in enumerate(gains) if g) / idcg
            rec += sum(gains) / len(y)
            if weights is not None:
                best = sorted((weights[lab] for lab in y), reverse=True)[:k]
                psp_num += sum(weights[lab] for lab, g in zip(preds, gains) if g)
                psp_den += sum(best)
                psn_num += (
                    sum(weights[lab] * d(r) for r, (lab, g) in enumerate(zip(preds, gains)) if g) / idcg
                )
                psn_den += sum(b * d(r) for r, b in enumerate(best)) / idcg
        out[f"P@{k}"] = 100 * p / n if n else 0.0
        out[f"nDCG@{k}"] = 100 * ndcg / n if n else 0.0
        out[f"R@{k}"] = 100 * rec / n if n else 0.0
        if weights is not None:
            out[f"PSP@{k}"] = 100 * psp_num / psp_den if psp_den else 0.0
            out[f"PSnDCG@{k}"] = 100 * psn_num / psn_den if psn_den else 0.0
    return out


def random_case(seed: int, n: int = 300, n_labels: int = 80, width: int = 8):
    """Random predictions with repeats, -1s, out-of-range ids, empty rows and a few long rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 12, size=n)
    sizes[rng.random(n) < 0.05] = 45  # long rows: binary-search and insertion paths
    truth_rows = [set(rng.choice(n_labels, size=s, replace=False).tolist()) for s in sizes]
    topk = rng.integers(-1, n_labels + 5, size=(n, width))
    hits = rng.random((n, width)) < 0.4  # plant hits so every metric is far from 0
    for i, j in zip(*np.nonzero(hits)):
        if truth_rows[i]:
            topk[i, j] = rng.choice(sorted(truth_rows[i]))
    weights = 1.0 + rng.random(n_labels) * 5.0
    truth = csr([sorted(r) for r in truth_rows], n_labels)
    return topk, truth, truth_rows, weights


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), key


# ---------------------------------------------------------------- hand-made case


def test_hand_case_all_metrics():
    # row 0: y = {0, 2}, predictions 2 (hit), 5, 0 (hit)
    # row 1: y = {1},    predictions 3, 1 (hit), -1
    # row 2: y = {},     predictions 0, 1, 2 -> 0 everywhere but counted in n = 3
    truth = csr([[0, 2], [1], []], 6)
    topk = np.array([[2, 5, 0], [3, 1, -1], [0, 1, 2]], dtype=np.int32)
    w = np.arange(1.0, 7.0)  # w_l = l + 1
    got = evaluate(topk, truth, ks=(1, 3), inv_propensity=w)

    idcg2 = 1 + d(1)  # 1.6309...
    want = {
        "P@1": 100 * (1 + 0 + 0) / 3,  # 33.33
        "P@3": 100 * (2 / 3 + 1 / 3 + 0) / 3,  # 33.33
        "nDCG@1": 100 * (1 / 1 + 0 + 0) / 3,  # IDCG@min(1, 2) = 1
        "nDCG@3": 100 * ((1 + d(2)) / idcg2 + d(1) / 1) / 3,  # (0.91972 + 0.63093) / 3 = 51.69
        "R@1": 100 * (1 / 2 + 0 + 0) / 3,  # 16.67
        "R@3": 100 * (2 / 2 + 1 / 1 + 0) / 3,  # 66.67
        # PSP@1: hits weigh w_2 = 3; best: row 0 max(w_0, w_2) = 3, row 1 w_1 = 2 -> 3 / 5
        "PSP@1": 100 * 3 / (3 + 2),
        # PSP@3: hits 3 + 1 (row 0) + 2 (row 1); best 3 + 1 and 2 -> 6 / 6
        "PSP@3": 100.0,
        "PSnDCG@1": 100 * (3 / 1) / (3 / 1 + 2 / 1),
        # row 0: (3 d0 + 1 d2) / IDCG@2, best (3 d0 + 1 d1) / IDCG@2; row 1: 2 d1 / 1, best 2 d0 / 1
        "PSnDCG@3": 100 * ((3 + d(2)) / idcg2 + 2 * d(1)) / ((3 + d(1)) / idcg2 + 2),  # 80.635
    }
    assert_close(got, want)
    assert got["nDCG@3"] == pytest.approx(51.6884, abs=1e-4)
    assert got["PSnDCG@3"] == pytest.approx(80.6350, abs=1e-4)


# ---------------------------------------------------------------- conventions


def test_a_repeated_label_counts_once():
    truth = csr([[1, 2]], 4)
    got = evaluate(np.array([[1, 1, 2]]), truth, ks=(2, 3), inv_propensity=np.ones(4))
    assert got["P@2"] == pytest.approx(50.0)  # the repeat at rank 1 scores 0 but takes the rank
    assert got["P@3"] == pytest.approx(100 * 2 / 3)
    assert got["nDCG@3"] == pytest.approx(100 * (1 + d(2)) / (1 + d(1)))
    assert got["R@3"] == pytest.approx(100.0)
    assert got["PSP@3"] == pytest.approx(100.0)  # 2 hits of weight 1 over the best 2


def test_b_missing_predictions_are_misses_and_p_divides_by_k():
    truth = csr([[1]], 4)
    got = evaluate(np.array([[1]]), truth, ks=(1, 5))  # k = 5 > width 1
    assert got["P@1"] == pytest.approx(100.0)
    assert got["P@5"] == pytest.approx(20.0)
    assert got["R@5"] == pytest.approx(100.0)
    assert got["nDCG@5"] == pytest.approx(100.0)
    got = evaluate(np.array([[-1, 1]]), truth, ks=(1, 2))
    assert (got["P@1"], got["P@2"]) == (0.0, pytest.approx(50.0))
    got = evaluate(np.array([[7, 1, 2**31 - 1]]), truth, ks=(3,))  # ids >= L are misses
    assert got["P@3"] == pytest.approx(100 / 3)
    got = evaluate(
        np.array([[2**32 + 1, 1, -(2**40)]], dtype=np.int64), truth, ks=(3,)
    )  # would wrap in int32
    assert got["P@3"] == pytest.approx(100 / 3)
    got = evaluate(np.array([[1, 0]], dtype=np.uint8), truth, ks=(1,))
    assert got["P@1"] == pytest.approx(100.0)


def test_c_empty_rows_count_in_the_average_and_score_zero():
    truth = csr([[0], []], 3)
    got = evaluate(np.array([[0], [1]]), truth, ks=(1,), inv_propensity=np.ones(3))
    assert got == pytest.approx({"P@1": 50.0, "nDCG@1": 50.0, "R@1": 50.0, "PSP@1": 100.0, "PSnDCG@1": 100.0})
    got = evaluate(np.array([[0], [1]]), csr([[], []], 3), ks=(1,), inv_propensity=np.ones(3))
    assert all(v == 0.0 for v in got.values())


def test_d_ndcg_normalised_by_min_k_and_true_count():
    truth = csr([[0]], 10)
    assert evaluate(np.array([[0, 5, 6]]), truth, ks=(3,))["nDCG@3"] == pytest.approx(100.0)
    truth = csr([[0, 1, 2, 3]], 10)  # |y| = 4 > k = 2: IDCG@2
    assert evaluate(np.array([[9, 0]]), truth, ks=(2,))["nDCG@2"] == pytest.approx(100 * d(1) / (1 + d(1)))


def test_e_propensity_metrics_normalised_by_best_achievable():
    truth = csr([[0, 1, 2], [3]], 5)
    w = np.array([1.0, 5.0, 2.0, 3.0, 4.0])
    best = np.array([[1, 2, 0], [3, -1, -1]])  # each row's labels by decreasing weight
    got = evaluate(best, truth, ks=(1, 2, 3), inv_propensity=w)
    for k in (1, 2, 3):
        assert got[f"PSP@{k}"] == pytest.approx(100.0)
        assert got[f"PSnDCG@{k}"] == pytest.approx(100.0)
    # ranking the light label first: PSP@1 = (w_0 + w_3) / (w_1 + w_3) = 4 / 8
    got = evaluate(np.array([[0, 2, 1], [3, -1, -1]]), truth, ks=(1,), inv_propensity=w)
    assert got["PSP@1"] == pytest.approx(50.0)
    assert got["P@1"] == pytest.approx(100.0)


def test_unsorted_and_duplicate_truth_is_handled_without_touching_the_input():
    topk, truth, truth_rows, w = random_case(1, n=60)
    shuffled = truth.copy()
    rng = np.random.default_rng(0)
    for i in range(shuffled.shape[0]):
        a, b = shuffled.indptr[i], shuffled.indptr[i + 1]
        shuffled.indices[a:b] = rng.permutation(shuffled.indices[a:b])
    shuffled.has_sorted_indices = False
    before = shuffled.indices.copy()
    want = evaluate(topk, truth, ks=(1, 3, 5), inv_propensity=w)
    assert evaluate(topk, shuffled, ks=(1, 3, 5), inv_propensity=w) == want
    np.testing.assert_array_equal(shuffled.indices, before)
    rows = [np.repeat(truth.indices[truth.indptr[i] : truth.indptr[i + 1]], 2) for i in range(truth.shape[0])]
    doubled = csr([r.tolist() for r in rows], truth.shape[1])
    assert evaluate(topk, doubled, ks=(1, 3, 5), inv_propensity=w) == pytest.approx(want)
    assert evaluate(topk, truth.tocoo(), ks=(1, 3, 5), inv_propensity=w) == pytest.approx(want)


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_on_random_cases(seed):
    topk, truth, truth_rows, w = random_case(seed)
    ks = (1, 2, 3, 5, 8, 10)  # 10 > width 8
    assert_close(evaluate(topk, truth, ks=ks, inv_propensity=w), reference_metrics(topk, truth_rows, ks, w))
    assert_close(evaluate(topk.astype(np.int32), truth, ks=(5,)), reference_metrics(topk, truth_rows, (5,)))


def test_matches_reference_beyond_63_ranks():
    topk, truth, truth_rows, w = random_case(7, n=80, n_labels=200, width=70)
    ks = (1, 64, 70)
    assert_close(evaluate(topk, truth, ks=ks, inv_propensity=w), reference_metrics(topk, truth_rows, ks, w))


def test_int64_truth_indices_and_zero_rows():
    topk, truth, truth_rows, w = random_case(5, n=50)
    wide = sp.csr_matrix(
        (truth.data, truth.indices.astype(np.int64), truth.indptr.astype(np.int64)), shape=truth.shape
    )
    assert_close(evaluate(topk, wide, inv_propensity=w), reference_metrics(topk, truth_rows, (1, 3, 5), w))
    empty = evaluate(np.zeros((0, 5), dtype=np.int32), csr([], 4), ks=(1, 5), inv_propensity=np.ones(4))
    assert set(empty.values()) == {0.0}


def test_same_result_whatever_the_thread_count():
    topk, truth, _, w = random_case(11, n=3 * CHUNK_ROWS + 17)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = evaluate(topk, truth, ks=(1, 3, 5), inv_propensity=w)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = evaluate(topk, truth, ks=(1, 3, 5), inv_propensity=w)
    finally:
        numba.set_num_threads(threads)
    assert one == many  # bit-identical


def test_keys_order_and_propensity_keys():
    topk, truth, _, w = random_case(3, n=20)
    assert list(evaluate(topk, truth)) == [f"{f}@{k}" for f in FAMILIES for k in (1, 3, 5)]
    with_ps = evaluate(topk, truth, ks=(5, 1, 5), inv_propensity=w)
    assert list(with_ps) == [f"{f}@{k}" for f in FAMILIES + PS_FAMILIES for k in (1, 5)]


def test_precision_only_kernel_agrees_without_repeats():
    rng = np.random.default_rng(4)
    topk, truth, truth_rows, _ = random_case(4, n=200)
    # no repeats, some -1 and >= L; int32 like the benchmark (one compiled variant)
    topk = np.array([rng.permutation(90)[:8] - 1 for _ in range(200)], dtype=np.int32)
    for k in (1, 5, 12):
        want = reference_metrics(topk, truth_rows, (k,))[f"P@{k}"]
        assert precision_only_kernel(topk, truth.indptr, truth.indices, k) == pytest.approx(want)


@pytest.mark.parametrize("k_max", [1, 3, 5, 8, 10])
def test_best_propensity_table_is_bit_identical_to_sorting_each_row(k_max):
    # One chunk (n < CHUNK_ROWS), so every cell is a sum over rows in row order: the kernel's sorting
    # network and padded adds must give exactly what sorting each row's weights in Python gives.
    rng = np.random.default_rng(k_max)
    n, n_labels = 400, 60
    rows = [sorted(rng.choice(n_labels, size=s, replace=False).tolist()) for s in rng.integers(0, 13, n)]
    truth = csr(rows, n_labels)
    w = rng.random(n_labels) * 100.0  # unrounded weights: any change of order or of terms shows
    topk = rng.integers(-1, n_labels, size=(n, 6)).astype(np.int32)
    *_, ps_best = rank_sums(topk, truth.indptr, truth.indices, k_max, w, True)
    want = np.zeros((k_max, k_max + 1))
    for y in rows:
        for r, v in enumerate(sorted((w[lab] for lab in y), reverse=True)[:k_max]):
            want[r, min(len(y), k_max)] += v
    assert np.array_equal(ps_best, want)


def test_sorting_network_sorts_every_zero_one_input():
    # 0-1 principle: a comparator network that sorts all 2^8 binary inputs sorts every input.
    for mask in range(256):
        out = _sort8_descending(*[float((mask >> t) & 1) for t in range(8)])
        assert all(a >= b for a, b in zip(out, out[1:])), mask
        assert sum(out) == bin(mask).count("1")


@numba.njit(cache=False)
def _sum_with_hints(values, far):
    total = 0.0
    for i in range(values.shape[0]):
        prefetch(values, i + far)  # far beyond the array: a hint must never fault
        total += values[i]
    return total


def test_prefetch_changes_nothing_and_reaches_the_machine_code():
    values = np.arange(1000, dtype=np.float64)
    assert _sum_with_hints(values, 10**9) == values.sum()
    assert _sum_with_hints(values, -(10**9)) == values.sum()
    sig = _sum_with_hints.signatures[0]
    assert "call void @llvm.prefetch" in _sum_with_hints.inspect_llvm(sig)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "prefetcht0" in _sum_with_hints.inspect_asm(sig)


def test_kernel_prefetches_the_weights_of_rows_ahead():
    # The speed of the propensity families rests on it (xmlbench bench metrics); the values cannot show
    # it, so check the compiled row loop (an uncached compile: numba does not show cached code).
    topk, truth, _, w = random_case(2, n=30)
    row_loop = numba.njit(cache=False)(kernels._sum_rows.py_func)
    tables = (np.zeros((5, 6)), np.zeros(5), np.zeros((5, 6)), np.zeros((5, 6)))
    indptr, indices = truth.indptr.astype(np.int32), truth.indices.astype(np.int32)
    row_loop(topk.astype(np.int32), indptr, indices, 5, w, True, 0, 30, *tables)
    assert "call void @llvm.prefetch" in row_loop.inspect_llvm(row_loop.signatures[0])


# ---------------------------------------------------------------- errors


def test_user_errors():
    truth = csr([[0], [1]], 3)
    with pytest.raises(UserError, match="topk has 3 rows but truth has 2"):
        evaluate(np.zeros((3, 2), dtype=np.int32), truth)
    with pytest.raises(UserError, match="one value per label"):
        evaluate(np.zeros((2, 2), dtype=np.int32), truth, inv_propensity=np.ones(4))
    with pytest.raises(UserError, match="integer"):
        evaluate(np.zeros((2, 2)), truth)
    with pytest.raises(UserError, match="2-D"):
        evaluate(np.zeros(2, dtype=np.int32), truth)
    with pytest.raises(UserError, match="positive"):
        evaluate(np.zeros((2, 2), dtype=np.int32), truth, ks=(0,))
    with pytest.raises(UserError, match="too large"):
        evaluate(np.zeros((2, 2), dtype=np.int32), truth, ks=(1, 5000))
    with pytest.raises(UserError, match="sparse"):
        evaluate(np.zeros((2, 2), dtype=np.int32), truth.toarray())


# ---------------------------------------------------------------- registry and names


def test_registry_and_parse_metric_names():
    assert METRICS.names() == ["P", "nDCG", "R", "PSP", "PSnDCG", "Cov"]
    needs = [False, False, False, True, True, False]
    assert [METRICS.get(n).needs_propensity for n in METRICS.names()] == needs
    assert all(METRICS.get(n).description for n in METRICS.names())
    assert parse_metric_names("P@1,nDCG@5,PSP@5") == [("P", 1), ("nDCG", 5), ("PSP", 5)]
    assert parse_metric_names(" R@10 , PSnDCG@3 ,") == [("R", 10), ("PSnDCG", 3)]
    assert metric_key("P", 5) == "P@5"
    for bad in ("Q@1", "P", "P@0", "P@x", "", "nDCG@5,F1@3"):
        with pytest.raises(UserError):
            parse_metric_names(bad)


# ---------------------------------------------------------------- propensity


def test_inv_propensity_hand_values():
    n = 100
    c = (math.log(n) - 1) * 2.5**0.55  # (log N - 1)(B + 1)^A = 5.9676...
    got = inv_propensity(np.array([0, 1, 10, 99]), n)
    assert got.dtype == np.float64
    # N_l = 1: 1 + C (1 + B)^-A = 1 + (log N - 1) = log N exactly
    assert got[1] == pytest.approx(math.log(100))
    for count, value in zip([0, 1, 10, 99], got):
        p = 1 / (1 + c * math.exp(-0.55 * math.log(count + 1.5)))  # Jain et al. 2016, eq. (2)
        assert value == pytest.approx(1 / p)
    assert got[0] == pytest.approx(1 + c * 1.5**-0.55)  # finite for unseen labels: 7.42...
    assert np.all(np.diff(got) < 0)  # rarer labels weigh more
    other = inv_propensity(np.array([3]), 1000, A=0.6, B=2.6)
    assert other[0] == pytest.approx(1 + (math.log(1000) - 1) * 3.6**0.6 * 5.6**-0.6)
    with pytest.raises(UserError):
        inv_propensity(np.array([1]), 0)
    with pytest.raises(UserError):
        inv_propensity(np.array([-1]), 10)
