"""Tests of xmlbench.metrics.topk against a plain sort (score descending, then label id ascending)."""

from __future__ import annotations

import numpy as np
import pytest

from xmlbench.metrics.topk import TopKAccumulator, topk_dense, topk_sparse_rows


def reference_topk(scores: np.ndarray, k: int, col_ids: np.ndarray | None = None):
    """Best k per row by (-score, id) with a full sort; NaN dropped; -1 / -inf padding."""
    n, m = scores.shape
    col_ids = np.arange(m) if col_ids is None else col_ids
    ids = np.full((n, k), -1, dtype=np.int32)
    out = np.full((n, k), -np.inf, dtype=np.float32)
    for i in range(n):
        s = scores[i].astype(np.float32)
        keep = ~np.isnan(s)
        order = np.lexsort((col_ids[keep], -s[keep]))[:k]
        ids[i, : order.size] = col_ids[keep][order]
        out[i, : order.size] = s[keep][order]
    return ids, out


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.int32 and got[1].dtype == np.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocks_in_shuffled_order_match_a_full_sort(seed):
    rng = np.random.default_rng(seed)
    n, m, k = 37, 101, 7
    scores = np.round(rng.normal(size=(n, m)), 1)  # one decimal: many ties, broken by smaller id
    row_cuts = [0, 5, 6, 20, n]
    col_perm = rng.permutation(m)
    col_cuts = [0, 1, 30, 64, m]
    blocks = [
        (r0, r1, col_perm[c0:c1])
        for r0, r1 in zip(row_cuts, row_cuts[1:])
        for c0, c1 in zip(col_cuts, col_cuts[1:])
    ]
    acc = TopKAccumulator(n, k)
    for b in rng.permutation(len(blocks)):
        r0, r1, cols = blocks[b]
        block = scores[r0:r1][:, cols]  # float64 and float32 blocks, int32 and int64 col_ids
        block = block if b % 2 else block.astype(np.float32)
        acc.add(r0, block, col_ids=cols.astype(np.int64 if b % 3 else np.int32))
    assert_same(acc.result(), reference_topk(scores, k))


def test_topk_dense_matches_full_sort_and_pads_short_rows():
    rng = np.random.default_rng(3)
    scores = rng.random((20, 50)).astype(np.float32)
    assert_same(topk_dense(scores, 5), reference_topk(scores, 5))
    ids, vals = topk_dense(scores[:, :3], 5)  # k > number of columns
    assert (ids[:, 3:] == -1).all() and np.isneginf(vals[:, 3:]).all()
    assert_same((ids[:, :3], vals[:, :3]), reference_topk(scores[:, :3], 3))


def test_ties_go_to_the_smaller_label_id():
    acc = TopKAccumulator(1, 3)
    acc.add(0, np.array([[1.0, 2.0]]), col_ids=np.array([9, 4]))
    acc.add(0, np.array([[2.0, 1.0, 2.0]]), col_ids=np.array([7, 3, 1]))
    ids, vals = acc.result()
    assert ids.tolist() == [[1, 4, 7]]
    assert vals.tolist() == [[2.0, 2.0, 2.0]]


def test_nan_ignored_inf_kept_and_repeats_keep_the_best_score():
    acc = TopKAccumulator(2, 3)
    acc.add(0, np.array([[np.nan, -np.inf, 0.5], [1.0, 2.0, 3.0]]))
    acc.add(1, np.array([[5.0]]), col_ids=np.array([0]))  # label 0 offered again with a better score
    acc.add(1, np.array([[0.1]]), col_ids=np.array([2]))  # and label 2 with a worse one
    ids, vals = acc.result()
    assert ids.tolist() == [[2, 1, -1], [0, 2, 1]]
    assert vals.tolist() == [[0.5, -np.inf, -np.inf], [5.0, 3.0, 2.0]]


def test_rows_never_touched_stay_empty_and_result_is_a_copy():
    acc = TopKAccumulator(3, 2)
    acc.add(1, np.array([[0.3, 0.7]]))
    ids, vals = acc.result()
    assert ids.tolist() == [[-1, -1], [1, 0], [-1, -1]]
    ids[:] = 99
    assert acc.result()[0][1].tolist() == [1, 0]


def test_bad_blocks_raise():
    acc = TopKAccumulator(2, 2)
    with pytest.raises(ValueError):
        acc.add(1, np.zeros((2, 3)))  # rows 1..3 outside 0..2
    with pytest.raises(ValueError):
        acc.add(0, np.zeros((1, 3)), col_ids=np.array([0, 1]))
    with pytest.raises(ValueError):
        acc.add(0, np.zeros((1, 2)), col_ids=np.array([0, -1]))
    with pytest.raises(ValueError):
        acc.add(0, np.zeros(3))


def test_topk_sparse_rows_matches_full_sort():
    rng = np.random.default_rng(5)
    n, m, k = 40, 60, 6
    dense = np.round(rng.random((n, m)), 1)
    present = rng.random((n, m)) < 0.15
    present[3] = False  # an empty row
    indptr = np.concatenate([[0], np.cumsum(present.sum(axis=1))])
    rows, cols = np.nonzero(present)
    order = np.concatenate([rng.permutation(np.arange(a, b)) for a, b in zip(indptr, indptr[1:])])
    masked = np.where(present, dense, np.nan)  # absent candidates never appear
    got = topk_sparse_rows(indptr, cols[order], dense[rows, cols][order], k)
    assert_same(got, reference_topk(masked, k))
    assert (got[0][3] == -1).all()


def test_other_dtypes_and_strided_blocks():
    ints = np.array([[1, 3, 2], [0, 0, 5]])
    assert topk_dense(ints, 2)[0].tolist() == [[1, 2], [2, 0]]
    halves = np.array([[0.5, 0.25, 1.0]], dtype=np.float16)
    assert topk_dense(halves, 2)[0].tolist() == [[2, 0]]
    rng = np.random.default_rng(6)
    scores = rng.random((30, 40))
    assert_same(topk_dense(scores.T[:, ::2], 4), reference_topk(scores.T[:, ::2], 4))  # strided view
    ids, vals = topk_sparse_rows(
        np.array([0, 2, 3], dtype=np.int32), np.array([4, 1, 9], dtype=np.int64), np.array([0.5, 0.5, 2.0]), 2
    )
    assert ids.tolist() == [[1, 4], [9, -1]]
