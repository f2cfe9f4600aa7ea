"""Label identity (issue 12): label ids follow first appearance in each train file, so a copy of the data
whose train lines come in another order gives every label another id. Whatever crosses datasets (predict
--dataset, compare, ensemble) must match labels by name and give exactly the numbers of the same-order
case; label sets that share no name are refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shuffled_copy
from xmlbench.cli import main
from xmlbench.data.dataset import open_dataset
from xmlbench.data.labels import label_table, remap_ids, union_names
from xmlbench.runs.predict import predict_run
from xmlbench.runs.record import PREDICTIONS, load_predictions, read_record
from xmlbench.runs.runner import RunOptions, run


# ---------------------------------------------------------------------------------------------- mapping
def test_remap_ids_maps_by_name_and_keeps_misses():
    ids = np.array([[0, 1, 2, -1], [3, 2, 9, 0]], dtype=np.int32)
    out = remap_ids(ids, ["a", "b", "c", "d"], ["c", "a", "x"])
    assert out.dtype == np.int32
    # a -> 1, b and d (absent) -> -1, c -> 0, -1 stays, 9 (no such id) -> -1
    assert out.tolist() == [[1, -1, 0, -1], [-1, 0, -1, 1]]
    assert label_table(["a", "b"], ["a", "b"]).tolist() == [0, 1]
    assert union_names([["b", "a"], ["c", "a"]]).tolist() == ["b", "a", "c"]


# ---------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def data(tiny_dataset: Path, tiny_shuffled: Path, tmp_path_factory) -> dict[str, Path]:
    """same: the tiny data; shuffled: its train lines in another order; disjoint: every label renamed."""
    disjoint = shuffled_copy(tiny_dataset, tmp_path_factory.mktemp("data") / "tiny-disjoint",
                             rename=lambda name: "other-" + name)
    same, shuffled = open_dataset(str(tiny_dataset)), open_dataset(str(tiny_shuffled))
    assert sorted(same.label_names) == sorted(shuffled.label_names)
    assert same.label_names != shuffled.label_names
    assert same.test.texts.digest == shuffled.test.texts.digest  # so compare and ensemble accept the pair
    return {"same": tiny_dataset, "shuffled": tiny_shuffled, "disjoint": disjoint}


@pytest.fixture(scope="module")
def runs(data: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    """label-frequency on each dataset (the same model by label name on "same" and "shuffled") and
    tfidf-ovr on "same". Selection on test: a carved validation split is drawn by row number, so on
    shuffled lines it would hold out other documents and train another model."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for model, where in (("label-frequency", "same"), ("label-frequency", "shuffled"),
                         ("label-frequency", "disjoint"), ("tfidf-ovr", "same")):
        out[f"{model}@{where}"] = run_dir = root / f"{model}-{where}"
        run(RunOptions(dataset=str(data[where]), model=model, select_on="test", out=str(run_dir),
                       progress=False))
    # What makes the comparisons below exact: label-frequency ranks labels by name the same way on both.
    a, b = (read_record(out[f"label-frequency@{w}"])["metrics"]["test"] for w in ("same", "shuffled"))
    assert a == b
    return out


# ------------------------------------------------------------------------------------- predict --dataset
@pytest.mark.parametrize("model", ["tfidf-ovr", "label-frequency"])
def test_predict_on_the_shuffled_copy_gives_the_same_metrics(model, runs, data, tmp_path):
    run_dir = runs[f"{model}@same"]
    baseline = predict_run(run_dir, None, "test", None, progress=False)
    assert baseline == read_record(run_dir)["metrics"]["test"]
    moved = predict_run(run_dir, str(data["shuffled"]), "test", str(tmp_path), progress=False)
    assert moved == baseline  # today's code: P@1 2.0 instead of 72.0 for tfidf-ovr
    saved = load_predictions(tmp_path)  # written in the copy's ids, with the copy's names
    assert saved.label_names.tolist() == open_dataset(str(data["shuffled"])).label_names
    own = load_predictions(run_dir)
    np.testing.assert_array_equal(remap_ids(saved.ids, saved.label_names, own.label_names), own.ids)


# ------------------------------------------------------------------------------------------------ compare
def _compare(capsys, a: Path, b: Path) -> dict:
    assert main(["compare", str(a), str(b), "--json", "--metrics", "P@1,P@3,P@5,nDCG@5"]) == 0
    return json.loads(capsys.readouterr().out)["metrics"]


@pytest.mark.parametrize("a, b", [
    ("label-frequency@shuffled", "tfidf-ovr@same"),  # scored against the shuffled copy's labels
    ("label-frequency@same", "label-frequency@shuffled"),  # the same model: delta 0 and a CI of [0, 0]
])
def test_compare_across_the_copies_gives_the_same_numbers(a, b, runs, capsys):
    same_order = {"label-frequency@shuffled": "label-frequency@same"}
    baseline = _compare(capsys, runs[same_order.get(a, a)], runs[same_order.get(b, b)])
    assert _compare(capsys, runs[a], runs[b]) == baseline
    if b == "label-frequency@shuffled":
        boot = baseline["P@1"]["bootstrap"]  # today's code: delta 0.00 next to a CI of [-16, -3]
        assert boot["delta"] == 0.0 and boot["ci95"] == [0.0, 0.0]


# ----------------------------------------------------------------------------------------------- ensemble
def _ensemble(capsys, tmp_path: Path, *members: Path) -> dict:
    out = tmp_path / "-".join(m.name for m in members)
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    capsys.readouterr()
    return read_record(out)["metrics"]["test"]


def test_an_ensemble_of_two_identical_models_scores_like_one(runs, tmp_path, capsys):
    single = read_record(runs["label-frequency@same"])["metrics"]["test"]
    across = _ensemble(capsys, tmp_path, runs["label-frequency@same"], runs["label-frequency@shuffled"])
    assert across["P@3"] == single["P@3"]  # today's code: P@3 8.00 instead of 13.00
    assert across == single


def test_an_ensemble_across_the_copies_sums_by_label_name(runs, tmp_path, capsys):
    baseline = _ensemble(capsys, tmp_path, runs["tfidf-ovr@same"], runs["label-frequency@same"])
    assert _ensemble(capsys, tmp_path, runs["tfidf-ovr@same"], runs["label-frequency@shuffled"]) == baseline


# ------------------------------------------------------------------------------------------------ refusals
def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_labels_sharing_no_name_are_refused_with_one_line(runs, data, tmp_path, capsys):
    disjoint, same = runs["label-frequency@disjoint"], runs["label-frequency@same"]
    predict = ["predict", str(runs["tfidf-ovr@same"]), "--dataset", str(data["disjoint"]), "--no-progress"]
    for argv in (predict,
                 ["compare", str(same), str(disjoint)],
                 ["ensemble", str(same), str(disjoint), "--out", str(tmp_path / "ens")]):
        assert "labels cannot be matched" in _refused(capsys, argv)


# ----------------------------------------------------------------------------------- files without names
def _without_names(run_dir: Path, dst: Path) -> Path:
    """A copy of a run folder as saved before label names were: predictions and model folder without them."""
    import shutil

    shutil.copytree(run_dir, dst)
    pred = load_predictions(dst)
    with open(dst / PREDICTIONS, "wb") as f:
        np.savez(f, ids=pred.ids, scores=pred.scores)
    (dst / "model" / "label_names.txt").unlink(missing_ok=True)
    return dst


def test_files_without_names_are_read_on_their_own_data_and_refused_elsewhere(runs, data, tmp_path, capsys):
    old = _without_names(runs["tfidf-ovr@same"], tmp_path / "old")
    assert load_predictions(old).label_names is None
    # On the data the run was made on, ids are what they were: same numbers as before.
    assert predict_run(old, None, "test", None, progress=False) == read_record(old)["metrics"]["test"]
    baseline = _compare(capsys, runs["label-frequency@same"], runs["tfidf-ovr@same"])
    assert _compare(capsys, runs["label-frequency@same"], old) == baseline
    # Anywhere else there is nothing to match them by.
    err = _refused(capsys, ["predict", str(old), "--dataset", str(data["shuffled"]), "--no-progress"])
    assert "saved without its label names" in err
    err = _refused(capsys, ["compare", str(runs["label-frequency@shuffled"]), str(old)])
    assert "has no label names" in err
