"""The exported model folder: weights in safetensors, config and hierarchy in JSON, label names; no
optimiser state. The resumable state (the run folder's checkpoint.pt, best.pt) goes once a run has
finished unless --keep-state. Reloading predicts the same top-k; folders saved before the export and
--init-from a run folder still work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import xmlbench
from xmlbench.data.dataset import open_dataset
from xmlbench.models.lightxml.model import LightXML
from xmlbench.runs.record import read_predictions
from xmlbench.runs.runner import RunOptions, run

SMOKE = {"max_steps": 3, "max_len": 16, "epochs": 1}


def _run(tiny_dataset: Path, out: Path, **kw) -> dict:
    overrides = {**SMOKE, **kw.pop("overrides", {})}
    return run(RunOptions(dataset=str(tiny_dataset), model="lightxml", preset="smoke", out=str(out),
                          progress=False, overrides=overrides, **kw))


@pytest.fixture(scope="module")
def exported(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    _run(tiny_dataset, out, overrides={"mode": "clustered"})
    return out


def test_the_model_folder_holds_weights_config_and_names_but_no_optimiser(exported):
    from safetensors.torch import load_file

    folder = exported / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["label_names.txt", "model.json", "model.safetensors"]
    tensors = load_file(folder / "model.safetensors")
    assert all(k.startswith(("net.", "hierarchy.")) for k in tensors)
    assert not [k for k in tensors if any(w in k for w in ("optim", "exp_avg", "momentum", "step"))]
    meta = json.loads((folder / "model.json").read_text())
    assert set(meta) == {"model", "config", "weights", "hierarchy", "encoder_config"}
    assert "optimizer" not in json.dumps(meta)
    # the resumable state went once the run finished; the record says so
    assert not (exported / "checkpoint.pt").exists() and not (exported / "best.pt").exists()
    assert json.loads((exported / "record.json").read_text())["resumable_state"] == "deleted"


def test_a_reloaded_export_predicts_the_same_top_k(exported, tiny_dataset):
    saved_ids, saved_scores = read_predictions(exported)
    texts = (tiny_dataset / "test_texts.txt").read_text(encoding="utf-8").splitlines()
    ids, scores = xmlbench.load(exported).predict_arrays(texts, k=100)
    ds = open_dataset(str(tiny_dataset))  # the run's own data: its label ids are the model's
    np.testing.assert_array_equal(ids, saved_ids)
    np.testing.assert_allclose(scores, saved_scores, rtol=1e-6)
    ids2, _ = LightXML.load(exported / "model", ds).predict(ds.test, 100)
    np.testing.assert_array_equal(ids2, saved_ids)


def test_a_folder_saved_before_the_export_still_loads(exported, tiny_dataset, tmp_path):
    from xmlbench.engine import checkpoint as ckpt

    ds = open_dataset(str(tiny_dataset))
    model = LightXML.restore(exported / "model", ds)
    old = tmp_path / "old" / "model"
    old.mkdir(parents=True)
    ckpt.save(old / "checkpoint.pt", model.checkpoint({"state": {}, "param_groups": []}))  # the seed's schema
    (old / "model.json").write_text((exported / "model" / "model.json").read_text())
    ids, _ = LightXML.load(old, ds).predict(ds.test, 100)
    np.testing.assert_array_equal(ids, read_predictions(exported)[0])


def test_keep_state_keeps_the_resumable_checkpoint_and_init_from_reads_an_export(exported, tiny_dataset,
                                                                                   tmp_path):
    record = _run(tiny_dataset, tmp_path / "kept", keep_state=True, init_from=str(exported),
                  overrides={"mode": "clustered", "lr": 0.0, "swa_warmup": -1})
    assert record["resumable_state"] == "kept"
    state = torch.load(tmp_path / "kept" / "checkpoint.pt", weights_only=True)
    assert state["optimizer_state_dict"]["state"]  # Adam's moments, for --resume
    assert (tmp_path / "kept" / "best.pt").is_file()
    # lr 0 from the exported weights: the same weights, so the same test predictions
    np.testing.assert_array_equal(read_predictions(tmp_path / "kept")[0], read_predictions(exported)[0])
