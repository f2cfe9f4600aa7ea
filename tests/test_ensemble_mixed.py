"""Mixed ensembles (TF-IDF + tree): recorded as their members, scores normalised per member and document
before summing; same-model ensembles keep the original's raw sum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmlbench.cli import main
from xmlbench.experiments.ensemble import normalise_rows, sum_topk
from xmlbench.results.compare import system_name
from xmlbench.runs.record import read_predictions, read_record


def test_normalisation_by_hand():
    ids = np.array([[3, 1, 0, -1]], np.int32)
    scores = np.array([[5.0, -1.0, -3.0, 0.0]], np.float32)
    np.testing.assert_allclose(normalise_rows(ids, scores, "minmax"), [[1.0, 0.25, 0.0, 0.0]])
    np.testing.assert_allclose(normalise_rows(ids, scores, "rank"), [[1.0, 0.75, 0.5, 0.0]])
    np.testing.assert_allclose(normalise_rows(ids, np.full((1, 4), 2.0, np.float32), "minmax"), [[1, 1, 1, 0]])
    assert normalise_rows(ids, scores, "raw") is scores


def test_a_member_on_a_larger_scale_no_longer_decides_alone():
    big = (np.array([[0, 1, 2]], np.int32), np.array([[1000.0, 900.0, 0.0]], np.float32))  # margins
    small = (np.array([[1, 2, 3]], np.int32), np.array([[1.0, 0.5, 0.0]], np.float32))  # probabilities
    raw, _ = sum_topk([big, small], 4, k=1)
    normed, _ = sum_topk([(i, normalise_rows(i, s, "minmax")) for i, s in (big, small)], 4, k=1)
    assert raw[0, 0] == 0  # 1000 beats 900 + 1
    assert normed[0, 0] == 1  # 0.9 + 1 beats 1: both members agree on label 1


@pytest.fixture(scope="module")
def members(tiny_dataset, tmp_path_factory):
    pytest.importorskip("omikuji")
    root = tmp_path_factory.mktemp("members")
    for model in ("tfidf-ovr", "tree"):
        assert main(["train", str(tiny_dataset), "--model", model, "--out", str(root / model), "--no-progress"]) == 0
    assert main(["train", str(tiny_dataset), "--model", "tfidf-ovr", "--seed", "1", "--out",
                 str(root / "tfidf-ovr-1"), "--no-progress"]) == 0
    return root


def test_a_mixed_ensemble_is_recorded_as_its_members_with_normalised_scores(members, tmp_path, capsys):
    assert main(["ensemble", str(members / "tfidf-ovr"), str(members / "tree"), "--out", str(tmp_path / "e")]) == 0
    record = read_record(tmp_path / "e")
    assert record["model"] == "tfidf-ovr+tree" and record["encoder"] is None
    assert [m["model"] for m in record["ensemble"]["member_models"]] == ["tfidf-ovr", "tree"]
    assert record["ensemble"]["scores"] == "minmax"
    assert system_name(record) == "tfidf-ovr+tree (2-model ensemble)"
    ids, scores = read_predictions(tmp_path / "e")
    assert scores[ids >= 0].max() <= 2.0 + 1e-6 and scores[ids >= 0].min() >= 0.0  # two members in [0, 1]
    # the same members summed raw give other rankings: the choice is real and recorded
    assert main(["ensemble", str(members / "tfidf-ovr"), str(members / "tree"), "--out", str(tmp_path / "r"),
                 "--scores", "raw"]) == 0
    assert read_record(tmp_path / "r")["ensemble"]["scores"] == "raw"
    assert not np.array_equal(read_predictions(tmp_path / "r")[0], ids)


def test_a_same_model_ensemble_keeps_the_raw_sum_and_its_name(members, tmp_path):
    assert main(["ensemble", str(members / "tfidf-ovr"), str(members / "tfidf-ovr-1"), "--out",
                 str(tmp_path / "e")]) == 0
    record = json.loads((tmp_path / "e" / "record.json").read_text())
    assert record["model"] == "tfidf-ovr" and record["ensemble"]["scores"] == "raw"
