"""Tests of LightXML's balanced label clustering (xmlbench.models.lightxml.clustering) and its benchmark helpers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from xmlbench.benchmarks.cluster import bench_cluster, format_bench, random_label_features
from xmlbench.errors import UserError
from xmlbench.models.lightxml import clustering
from xmlbench.models.lightxml.clustering import (
    arrays_to_clusters,
    balanced_clusters,
    cached_clusters,
    clusters_to_arrays,
    label_features,
    tree_depth,
)


@pytest.fixture(scope="module")
def features() -> sparse.csr_matrix:
    """1,003 labels (an odd count, so the halves differ) with 40 rows left all-zero, like test-only labels."""
    matrix = random_label_features(n_labels=1003, vocab=500, nnz=20_000, seed=3, n_topics=20).tolil()
    for row in range(0, 1003, 25):
        matrix.rows[row] = []
        matrix.data[row] = []
    return matrix.tocsr()


def assert_balanced_partition(leaves: list[np.ndarray], n_labels: int, leaf_size: int) -> None:
    sizes = np.array([len(leaf) for leaf in leaves])
    assert sizes.max() <= leaf_size
    assert sizes.max() - sizes.min() <= 1
    # 2^depth leaves, except that a single label is never split into an empty leaf (only with leaf_size 1)
    assert len(leaves) == min(2 ** tree_depth(n_labels, leaf_size), n_labels)
    assert all(leaf.dtype == np.int32 for leaf in leaves)
    np.testing.assert_array_equal(np.sort(np.concatenate(leaves)), np.arange(n_labels))


@pytest.mark.parametrize("leaf_size", [1, 7, 100, 2000])
def test_leaves_are_a_balanced_partition(features, leaf_size):
    leaves = balanced_clusters(features, leaf_size=leaf_size, seed=0)
    assert_balanced_partition(leaves, features.shape[0], leaf_size)


def test_amazon_670k_shape_gives_8192_leaves():
    assert tree_depth(670_091, 100) == 13


def test_siblings_are_halves_of_their_parent(features):
    """Leaves come in tree order, so leaves 2k and 2k+1 are the floor/ceil halves of one parent."""
    leaves = balanced_clusters(features, leaf_size=100, seed=0)
    for left, right in zip(leaves[0::2], leaves[1::2]):
        assert len(right) - len(left) in (0, 1)


def test_deterministic_for_a_seed_and_different_across_seeds(features):
    first = balanced_clusters(features, leaf_size=50, seed=0)
    again = balanced_clusters(features, leaf_size=50, seed=0)
    other = balanced_clusters(features, leaf_size=50, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    first_map, _ = clusters_to_arrays(first)
    other_map, _ = clusters_to_arrays(other)
    assert not np.array_equal(first_map, other_map)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_tree_does_not_depend_on_the_thread_count(features, monkeypatch, threads):
    """8 threads take the within-node path for the top levels, 1 and 3 the per-node path: same tree."""
    reference = balanced_clusters(features, leaf_size=30, seed=4)
    monkeypatch.setattr(clustering, "_thread_count", lambda: threads)
    leaves = balanced_clusters(features, leaf_size=30, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(reference, leaves))


def test_zero_feature_labels_get_clusters(features):
    leaves = balanced_clusters(features, leaf_size=100, seed=0)
    label_to_cluster, _ = clusters_to_arrays(leaves)
    zero_rows = np.flatnonzero(np.diff(features.indptr) == 0)
    assert zero_rows.size == 41
    assert (label_to_cluster[zero_rows] >= 0).all()


def test_all_zero_features_split_by_label_id():
    """With no information at all, every split keeps label-id order: leaves are consecutive id ranges."""
    leaves = balanced_clusters(sparse.csr_matrix((10, 4), dtype=np.float32), leaf_size=3, seed=5)
    assert [leaf.tolist() for leaf in leaves] == [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]


def test_two_orthogonal_groups_are_split_exactly():
    """8 labels along two orthogonal directions, interleaved by id: leaf 4 must give back the two groups."""
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] * 4
    rows[2] = [0.9, 0.0, 0.1]  # not all identical inside a group
    features = sparse.csr_matrix(np.array(rows, dtype=np.float32))
    features = label_features(features, sparse.identity(8, format="csr"))
    for seed in range(5):
        leaves = balanced_clusters(features, leaf_size=4, seed=seed)
        assert sorted(leaf.tolist() for leaf in leaves) == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_label_features_match_dense_computation():
    X = sparse.random(30, 12, density=0.3, format="csr", dtype=np.float32, random_state=1)
    Y = sparse.random(30, 9, density=0.2, format="csr", random_state=2)
    Y.data[:] = 3.0  # any non-zero counts as tagged
    Y = Y @ sparse.diags((np.arange(9) != 4).astype(np.float64))  # label 4 has no document
    X_dense, Y_dense = X.toarray().astype(np.float64), (Y.toarray() != 0).astype(np.float64)
    X_norms = np.linalg.norm(X_dense, axis=1, keepdims=True)
    X_unit = np.divide(X_dense, X_norms, out=np.zeros_like(X_dense), where=X_norms > 0)
    sums = Y_dense.T @ X_unit
    sum_norms = np.linalg.norm(sums, axis=1, keepdims=True)
    expected = np.divide(sums, sum_norms, out=np.zeros_like(sums), where=sum_norms > 0)

    got = label_features(X, Y)
    assert got.shape == (9, 12) and got.dtype == np.float32 and got.has_sorted_indices
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-5, atol=1e-6)
    assert got[4].nnz == 0


def test_top_k_label_features_keep_each_labels_largest_entries_then_normalise():
    X = sparse.random(60, 40, density=0.2, format="csr", dtype=np.float32, random_state=3)
    Y = sparse.random(60, 11, density=0.3, format="csr", random_state=4)
    Y.data[:] = 1.0
    X_dense, Y_dense = X.toarray().astype(np.float64), (Y.toarray() != 0).astype(np.float64)
    X_unit = X_dense / np.maximum(np.linalg.norm(X_dense, axis=1, keepdims=True), 1e-30)
    sums = Y_dense.T @ X_unit
    k = 4
    expected = np.zeros_like(sums)
    for row in range(sums.shape[0]):  # by hand: the k largest sums, the smaller word id first on ties
        cols = np.flatnonzero(sums[row])
        top = cols[np.lexsort((cols, -sums[row, cols]))][:k]
        expected[row, top] = sums[row, top] / np.linalg.norm(sums[row, top])
    for block in (1, 3, 100):  # computed a few labels at a time: the same answer
        got = label_features(X, Y, top_k=k, block_labels=block)
        assert got.has_sorted_indices and np.diff(got.indptr).max() == k
        np.testing.assert_allclose(got.toarray(), expected, rtol=1e-5, atol=1e-6)
    # k at least every row's length: the exact features
    exact = label_features(X, Y)
    np.testing.assert_array_equal(label_features(X, Y, top_k=40, block_labels=5).toarray(), exact.toarray())


def test_top_k_breaks_ties_by_the_smaller_word_id():
    row = np.ones(300, dtype=np.float32)
    row[::7] = 0.5  # 300 words, most of them tied (long enough for an unstable sort to reorder them)
    X = sparse.csr_matrix(np.stack([row, np.zeros_like(row)]))
    Y = sparse.csr_matrix(np.array([[1], [1]]))
    got = label_features(X, Y, top_k=20)
    assert got.indices.tolist() == [i for i in range(300) if i % 7][:20]


def test_label_features_rejects_mismatched_rows():
    with pytest.raises(UserError, match="one label row per document"):
        label_features(sparse.csr_matrix((3, 2)), sparse.csr_matrix((4, 2)))


def test_arrays_round_trip(features):
    leaves = balanced_clusters(features, leaf_size=100, seed=2)
    label_to_cluster, cluster_labels = clusters_to_arrays(leaves)
    assert label_to_cluster.dtype == np.int32 and cluster_labels.dtype == np.int32
    assert cluster_labels.shape == (len(leaves), max(len(leaf) for leaf in leaves))
    for k, leaf in enumerate(leaves):
        assert (label_to_cluster[leaf] == k).all()
    assert all(np.array_equal(a, b) for a, b in zip(leaves, arrays_to_clusters(cluster_labels)))


def test_arrays_reject_a_non_partition():
    with pytest.raises(ValueError, match="partition"):
        clusters_to_arrays([np.array([0, 1]), np.array([1, 1])])


def test_cache_round_trip(tmp_path, features):
    calls = []

    def compute():
        calls.append(1)
        return balanced_clusters(features, leaf_size=100, seed=0)

    first = cached_clusters(tmp_path, "synth-abc-seed0-leaf100", compute)
    second = cached_clusters(tmp_path, "synth-abc-seed0-leaf100", compute)
    assert len(calls) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert [p.name for p in tmp_path.iterdir()] == ["clusters-synth-abc-seed0-leaf100.npz"]
    with np.load(tmp_path / "clusters-synth-abc-seed0-leaf100.npz", allow_pickle=False) as stored:
        assert stored["cluster_labels"].dtype == np.int32


def test_corrupt_cache_is_recomputed(tmp_path):
    (tmp_path / "clusters-k.npz").write_bytes(b"not a zip file")
    leaves = cached_clusters(tmp_path, "k", lambda: [np.array([1, 0], dtype=np.int32)])
    assert [leaf.tolist() for leaf in leaves] == [[1, 0]]
    assert [leaf.tolist() for leaf in cached_clusters(tmp_path, "k", lambda: [])] == [[1, 0]]


def test_cache_key_must_be_a_file_name(tmp_path):
    with pytest.raises(UserError):
        cached_clusters(tmp_path, "../escape", lambda: [])


def test_random_label_features_shape():
    matrix = random_label_features(n_labels=500, vocab=20_000, nnz=10_000, seed=1)
    assert matrix.shape == (500, 20_000) and matrix.dtype == np.float32
    assert 8_000 <= matrix.nnz <= 10_500  # a few draws repeat a column within a row and are merged
    assert matrix.has_sorted_indices
    np.testing.assert_allclose(np.sqrt(matrix.multiply(matrix).sum(axis=1)).ravel(), 1.0, rtol=1e-5)


def test_bench_reports_and_formats(features):
    report = bench_cluster(features, leaf_size=100, seed=0, compare_pecos=False)
    assert report["n_leaves"] == 16 and report["leaf_max"] <= 100 and report["seconds"] >= 0
    text = format_bench(report)
    assert "16 leaves" in text and "PECOS: not run" in text


def test_bench_reports_the_load_before_it_clusters(features, monkeypatch):
    # The clustering's own threads raise the load average; the report must carry the neighbours' load.
    import os

    from xmlbench.benchmarks import cluster

    ran, real = [], cluster.balanced_clusters
    monkeypatch.setattr(cluster, "balanced_clusters", lambda *a, **k: ran.append(1) or real(*a, **k))
    monkeypatch.setattr(os, "getloadavg", lambda: (1.75 if ran else 0.25, 0.0, 0.0))
    assert bench_cluster(features, leaf_size=100, seed=0, compare_pecos=False)["load_avg_1m"] == 0.25


def test_format_reports_a_failed_pecos(features):
    report = bench_cluster(features, leaf_size=100, seed=0, compare_pecos=False)
    report["pecos"] = {"error": "AttributeError: no sputils"}
    assert "PECOS: failed (AttributeError: no sputils)" in format_bench(report)
