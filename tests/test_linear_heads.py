"""Neural baselines: loss values on hand-computed cases, the seed's checkpoint keys, the runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmlbench.models.baselines.linear_heads import balanced_class_weights, weighted_nll


def test_weighted_nll_hand_computed_multilabel():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]])  # p2 = (1/4, 1/4, 1/2)
    positives = torch.tensor([[0, -1], [1, 2]])
    w = torch.tensor([1.0, 2.0, 1.0])
    # doc 1: w0 * log 3; doc 2 (two targets, each weight w/2): (2/2) log 4 + (1/2) log 2; normaliser 1 + 1 + 1/2
    expected = (math.log(3) + math.log(4) + 0.5 * math.log(2)) / 2.5
    assert float(weighted_nll(logits, positives, w)) == pytest.approx(expected, rel=1e-6)


def test_weighted_nll_is_the_seed_loss_on_single_label_data():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    target = torch.tensor([0, 3, 3, 1, 4, 2])
    w = torch.rand(5) + 0.1
    seed_loss = F.nll_loss(F.log_softmax(logits, dim=1), target, weight=w)  # sum w*l / sum w
    assert float(weighted_nll(logits, target[:, None], w)) == pytest.approx(float(seed_loss), rel=1e-6)


def test_balanced_class_weights():
    w = balanced_class_weights(np.array([0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([0.75, 1.5, 0.0])  # N / (L_seen * N_l)


@pytest.mark.parametrize("model", ["softmax-linear", "sigmoid-linear"])
def test_neural_baselines_through_the_runner(tiny_dataset, tmp_path, model):
    from xmlbench.config import parse_overrides
    from xmlbench.data.dataset import open_dataset
    from xmlbench.models import MODELS
    from xmlbench.runs.record import read_predictions
    from xmlbench.runs.runner import RunOptions, run

    opts = RunOptions(dataset=str(tiny_dataset), model=model, preset="smoke", out=str(tmp_path / model),
                      progress=False, overrides=parse_overrides(["max_len=24", "epochs=1"]), keep_state=True)
    record = run(opts)
    assert record["metrics"]["test"]["P@1"] >= 0 and record["resumable_state"] == "kept"
    state = torch.load(tmp_path / model / "checkpoint.pt", weights_only=True)  # the kept resumable state
    assert state["optimizer_state_dict"]["param_groups"]  # separate encoder / classifier groups
    lrs = {g["lr"] for g in state["optimizer_state_dict"]["param_groups"]}
    assert lrs == {1e-3, 1e-2}  # smoke preset: encoder_lr, classifier_lr
    ds = open_dataset(str(tiny_dataset))
    path = tmp_path / model / "init.pt"  # the seed's checkpoint schema, as --init-from files keep it
    MODELS.get(model).cls.restore(tmp_path / model / "model", ds).save_initial(path)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"config", "hierarchy", "encoder_state_dict", "classifier_state_dict",
                          "optimizer_state_dict"}  # exactly the seed's schema
    rebuilt = MODELS.get(model).cls.from_checkpoint(path, ds)
    ids, _ = rebuilt.predict(ds.test, 100)
    np.testing.assert_array_equal(ids, read_predictions(tmp_path / model)[0])
