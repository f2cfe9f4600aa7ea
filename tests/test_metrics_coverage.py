"""Coverage@k and the head/torso/tail split of P@k and PSP@k, against hand computations.

Kept apart from tests/test_metrics.py, which pins the families that existed before these two."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from xmlbench.errors import UserError
from xmlbench.metrics import by_frequency_tercile, evaluate, frequency_terciles
from xmlbench.metrics.propensity import inv_propensity


def csr(rows: list[list[int]], n_labels: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([lab for r in rows for lab in r], dtype=np.int32)
    return sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(len(rows), n_labels))


# Test labels y = {0, 1}, {2}, {1, 3}, {} over L = 6 labels: T = {0, 1, 2, 3} (labels 4, 5 never occur).
TRUTH = csr([[0, 1], [2], [1, 3], []], 6)
TOPK = np.array([[0, 3, 1], [4, 2, 0], [1, 1, 3], [5, -1, 2]], dtype=np.int32)


def test_coverage_by_hand():
    cov = {k: v for k, v in evaluate(TOPK, TRUTH, ks=(1, 2, 3, 4), coverage=True).items() if "Cov" in k}
    # k=1: hits 0 (row 0), 1 (row 2); 4 at row 1 and 5 at row 3 are wrong  -> {0, 1}       2/4
    # k=2: + 2 (row 1, rank 1); 3 at row 0 is not row 0's label, 1 repeats  -> {0, 1, 2}    3/4
    # k=3: + 3 (row 2, rank 2); 2 at row 3 is not row 3's (empty) label     -> {0, 1, 2, 3} 4/4
    # k=4: beyond the 3 saved columns: nothing new (missing predictions are misses)
    assert cov == {"Cov@1": 50.0, "Cov@2": 75.0, "Cov@3": 100.0, "Cov@4": 100.0}


def test_coverage_counts_only_correct_predictions_and_is_opt_in():
    # Predicting every label everywhere but never correctly covers nothing.
    wrong = np.array([[2, 3, 4, 5], [0, 1, 3, 4], [0, 2, 4, 5], [0, 1, 2, 3]], dtype=np.int32)
    assert evaluate(wrong, TRUTH, ks=(4,), coverage=True)["Cov@4"] == 0.0
    assert not any(k.startswith("Cov") for k in evaluate(TOPK, TRUTH))  # the default keys are unchanged
    empty = sp.csr_matrix((2, 3))
    assert evaluate(np.zeros((2, 1), np.int32), empty, ks=(1,), coverage=True)["Cov@1"] == 0.0


def test_coverage_matches_a_set_computation_on_random_data():
    rng = np.random.default_rng(0)
    n, n_labels = 300, 50
    rows = [sorted(rng.choice(n_labels, size=rng.integers(0, 5), replace=False).tolist()) for _ in range(n)]
    topk = rng.integers(-1, n_labels + 3, size=(n, 8)).astype(np.int64)  # -1, out of range, repeats
    got = evaluate(topk, csr(rows, n_labels), ks=(1, 4, 8), coverage=True)
    true_labels = {lab for r in rows for lab in r}
    for k in (1, 4, 8):
        found = {int(lab) for i, r in enumerate(rows) for lab in topk[i, :k] if lab in r}
        assert got[f"Cov@{k}"] == pytest.approx(100 * len(found) / len(true_labels))


def test_terciles_split_training_occurrences_in_thirds():
    # counts 6, 3, 2, 1, 0, 0 (12 occurrences): label 0 starts at occurrence 0 -> head; label 1 at 6
    # (3*6 // 12 = 1) -> torso; label 2 at 9 (27 // 12 = 2) -> tail; 3 at 11 -> tail; unseen -> tail.
    assert frequency_terciles(np.array([6, 3, 2, 1, 0, 0])).tolist() == [0, 1, 2, 2, 2, 2]
    # ties are broken by id, so equal counts give a deterministic split: 3 labels of 2 each
    assert frequency_terciles(np.array([2, 2, 2])).tolist() == [0, 1, 2]
    assert frequency_terciles(np.zeros(3, np.int64)).tolist() == [2, 2, 2]


def test_head_torso_tail_precision_by_hand():
    counts = np.array([6, 3, 2, 1, 0, 0])  # terciles head {0}, torso {1}, tail {2, 3, 4, 5}
    got = by_frequency_tercile(TOPK, TRUTH, counts, ks=(1, 3))
    # rank 0 hits: row 0 -> 0 (head), row 2 -> 1 (torso); 4 n = 4 documents, P@1 denominator 1 x 4.
    # top-3 hits: row 0 -> 0 (head), 1 (torso); row 1 -> 2 (tail); row 2 -> 1 (torso), 1 repeated (0),
    # 3 (tail); row 3 none. Denominator 3 x 4 = 12.
    want = {"P@1/head": 25.0, "P@1/torso": 25.0, "P@1/tail": 0.0,
            "P@3/head": 100 / 12, "P@3/torso": 200 / 12, "P@3/tail": 200 / 12}
    assert got == pytest.approx(want)
    total = evaluate(TOPK, TRUTH, ks=(1, 3))
    for k in (1, 3):
        assert sum(got[f"P@{k}/{t}"] for t in ("head", "torso", "tail")) == pytest.approx(total[f"P@{k}"])


def test_head_torso_tail_psp_by_hand():
    counts = np.array([6, 3, 2, 1, 0, 0])
    w = inv_propensity(counts, 10)
    got = by_frequency_tercile(TOPK, TRUTH, counts, ks=(3,), inv_propensity=w)
    # PSP@3 denominator: per row the best min(3, |y|) weights: w0 + w1, w2, w3 + w1 (w3 > w1), 0.
    denominator = (w[0] + w[1]) + w[2] + (w[3] + w[1])
    assert got["PSP@3/head"] == pytest.approx(100 * w[0] / denominator)
    assert got["PSP@3/torso"] == pytest.approx(100 * 2 * w[1] / denominator)
    assert got["PSP@3/tail"] == pytest.approx(100 * (w[2] + w[3]) / denominator)
    total = evaluate(TOPK, TRUTH, ks=(3,), inv_propensity=w)["PSP@3"]
    assert sum(got[f"PSP@3/{t}"] for t in ("head", "torso", "tail")) == pytest.approx(total)


def test_tercile_counts_must_match_the_labels():
    with pytest.raises(UserError, match="one value per label"):
        by_frequency_tercile(TOPK, TRUTH, np.ones(4))
