"""Every registered model, automatically: fit on tiny data through the runner, predict, save, reload from the
run folder alone, and predict exactly the same top-k again; reloaded for a copy of the data whose labels have
other ids, it predicts the same labels by name. A new registration is tested without editing this file
(timm's habit: one test parametrised over the registry)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from xmlbench.data.labels import remap_ids
from xmlbench.models import MODELS
from xmlbench.runs.predict import load_run_model
from xmlbench.runs.record import read_predictions
from xmlbench.runs.runner import RunOptions, run

# Neural models: their smoke preset (the tiny random encoder) cut to a few steps; enough to exercise fit,
# checkpoints and prediction, not to learn.
NEURAL_BUDGET = {"max_len": 16, "epochs": 1, "max_steps": 3, "batch_size": 16, "swa_warmup": -1,
                 "checkpoint_every": 0}


def _missing(requires: tuple[str, ...]) -> list[str]:
    return [name for name in requires if importlib.util.find_spec(name) is None]


def _options(name: str, dataset: Path, out: Path) -> RunOptions:
    entry = MODELS.get(name)
    preset = "smoke" if "smoke" in entry.presets else "default"
    return RunOptions(dataset=str(dataset), model=name, preset=preset, out=str(out), progress=False,
                      overrides=dict(NEURAL_BUDGET) if entry.neural else {})


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_fits_saves_reloads_and_predicts_the_same(name, tiny_dataset, tiny_shuffled, tmp_path):
    missing = _missing(MODELS.get(name).requires)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    record = run(_options(name, tiny_dataset, tmp_path / name))
    assert record["status"] == "complete" and record["model"] == name
    assert 0.0 <= record["metrics"]["test"]["P@1"] <= 100.0

    saved_ids, saved_scores = read_predictions(tmp_path / name)
    model, ds = load_run_model(tmp_path / name)  # from the run folder alone
    ids, scores = model.predict(ds.test, saved_ids.shape[1])
    assert ids.shape == saved_ids.shape
    np.testing.assert_array_equal(ids, saved_ids)
    np.testing.assert_allclose(scores, saved_scores, rtol=1e-5, atol=1e-6)

    # Its label names are saved with it: loaded for the shuffled copy (same labels, other ids), it predicts
    # the same labels, in that copy's ids.
    moved, other = load_run_model(tmp_path / name, str(tiny_shuffled))
    assert other.label_names != ds.label_names
    ids, scores = moved.predict(other.test, saved_ids.shape[1])
    np.testing.assert_array_equal(ids, remap_ids(saved_ids, ds.label_names, other.label_names))
    np.testing.assert_allclose(scores, saved_scores, rtol=1e-5, atol=1e-6)
