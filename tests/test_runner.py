"""The runner and run records: one protocol for every model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmlbench.errors import UserError
from xmlbench.runs.record import is_complete, read_predictions, read_record
from xmlbench.runs.runner import RunOptions, run


def test_label_frequency_end_to_end_record(tiny_dataset, tmp_path):
    record = run(RunOptions(dataset=str(tiny_dataset), model="label-frequency", out=str(tmp_path / "lf"),
                            progress=False, command="xmlbench train tiny --model label-frequency"))
    assert is_complete(tmp_path / "lf")
    saved = read_record(tmp_path / "lf")
    assert saved == json.loads(json.dumps(record))
    for key in ("config", "dataset", "code", "packages", "hardware", "seed", "timing_s", "peak_rss_mb",
                "metrics", "selection", "command"):
        assert key in saved
    assert saved["selection"]["split"] == "valid"
    assert set(saved["metrics"]) == {"valid", "test"}
    recorded = {"P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "PSnDCG@5", "Cov@1", "Cov@5"}
    assert recorded <= set(saved["metrics"]["test"])
    ids, scores = read_predictions(tmp_path / "lf")
    assert ids.shape == (saved["dataset"]["n_test"], min(100, saved["dataset"]["n_labels"]))
    assert ids.dtype == np.int32 and scores.dtype == np.float32
    assert not list((tmp_path / "lf").glob("*.tmp")) and not list((tmp_path / "lf").glob(".*.tmp"))


def test_finished_run_is_not_overwritten(tiny_dataset, tmp_path):
    opts = RunOptions(dataset=str(tiny_dataset), model="label-frequency", out=str(tmp_path / "x"), progress=False)
    first = run(opts)
    with pytest.raises(UserError, match="already holds a finished run"):
        run(opts)
    from dataclasses import replace

    assert run(replace(opts, resume=True)) == json.loads(json.dumps(first))  # skipped, same record


def test_test_set_selection_is_recorded(tiny_dataset, tmp_path):
    record = run(RunOptions(dataset=str(tiny_dataset), model="label-frequency", out=str(tmp_path / "t"),
                            progress=False, select_on="test"))
    assert record["selection"]["split"] == "test"
    assert "TEST" in record["selection"]["warning"]
    assert "valid" not in record["metrics"]


def test_unknown_model_and_bad_override(tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="unknown model 'nope'; known models: label-frequency, lightxml"):
        run(RunOptions(dataset=str(tiny_dataset), model="nope", out=str(tmp_path / "n"), progress=False))
    with pytest.raises(UserError, match="unknown config key 'epochz'"):
        run(RunOptions(dataset=str(tiny_dataset), model="lightxml", out=str(tmp_path / "n"), progress=False,
                       overrides={"epochz": 1}))
    with pytest.raises(UserError, match="has no preset 'huge'"):
        run(RunOptions(dataset=str(tiny_dataset), model="lightxml", preset="huge", out=str(tmp_path / "n"),
                       progress=False))


def test_predict_reloads_from_the_run_folder(tiny_dataset, tmp_path):
    from xmlbench.runs.predict import predict_run

    record = run(RunOptions(dataset=str(tiny_dataset), model="label-frequency", out=str(tmp_path / "p"),
                            progress=False))
    metrics = predict_run(tmp_path / "p", None, "test", str(tmp_path / "again"), progress=False)
    assert metrics == pytest.approx(record["metrics"]["test"])
