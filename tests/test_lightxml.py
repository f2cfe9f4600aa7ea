"""LightXML: embedding, dynamic negative sampling, gradient routing, SWA, checkpoints, resume."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmlbench.encoders import ENCODERS, layer_stack, load_encoder
from xmlbench.engine.swa import SWA
from xmlbench.models.lightxml.clustering import clusters_to_arrays
from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet, is_member

N_LABELS = 40


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny", seed=0)


def make_net(encoder, clustered=True, **cfg) -> LightXMLNet:
    torch.manual_seed(0)
    leaves = [np.arange(i, i + 5, dtype=np.int32) for i in range(0, N_LABELS, 5)]  # 8 clusters of 5
    config = LightXMLConfig(encoder="tiny", hidden=16, top_b=3, dropout=0.0, **cfg)
    return LightXMLNet(encoder.model, encoder.hidden_size, encoder.cls_position, N_LABELS, config,
                       clusters_to_arrays(leaves) if clustered else None)


def batch(seed=0, b=4, t=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (b, t), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # one padded row
    positives = torch.tensor([[0, 7, -1, -1], [12, -1, -1, -1], [3, 18, 33, 39], [25, 26, -1, -1]])[:b]
    return ids, mask, positives


def test_five_layer_embedding_shape(encoder):
    net = make_net(encoder).eval()
    ids, mask, _ = batch()
    doc, (hidden, _) = net.embed(ids, mask)
    assert doc.shape == (4, 5 * encoder.hidden_size)
    expected = torch.cat([hidden[-k][:, 0] for k in range(1, 6)], dim=1)  # [CLS] of layers -1..-5
    assert torch.allclose(doc, expected)


def test_xlnet_takes_its_last_token():
    assert ENCODERS.get("xlnet").cls_position == "last"
    hidden = tuple(torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1) + 100 * i for i in range(6))
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])  # right padding: last real token is 2 and 3
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # left padding (XLNet's own): always position -1
    assert layer_stack(hidden, right, 1, "last")[:, 0, 0].tolist() == [502.0, 507.0]
    assert layer_stack(hidden, left, 1, "last")[:, 0, 0].tolist() == [503.0, 507.0]


def test_positives_always_among_training_candidates(encoder):
    net = make_net(encoder)
    torch.manual_seed(1)
    for _ in range(20):
        g = torch.randn(4, 8)
        _, _, positives = batch()
        cands, top = net.candidates(g, positives)
        assert is_member(positives.clamp(min=0), cands).logical_or(positives < 0).all()
        assert cands.shape == (4, 3 * 5)
    # Row 2 has positives in 3 clusters; forcing a 4th cluster's positive in needs replacement of negatives.
    positives = torch.tensor([[0, 7, 12, 39]])  # clusters 0, 1, 2, 7 > b = 3
    cands, _ = net.candidates(torch.zeros(1, 8), positives)
    assert set(positives[0].tolist()) <= set(cands[0].tolist())


def test_inference_candidates_do_not_see_positives(encoder):
    net = make_net(encoder).eval()
    g = torch.tensor([[5.0, 4, 3, -9, -9, -9, -9, -9]])
    cands, top = net.candidates(g, None)
    assert sorted(top[0].tolist()) == [0, 1, 2]
    assert sorted(cands[0].tolist()) == list(range(15))


def _insert_missing_positives_by_row(cands, top, positives, label_to_cluster):
    """The per-row loop the vectorised version replaced: an independent reference."""
    pos_clusters = label_to_cluster[positives.clamp(min=0)]
    covered = (pos_clusters.unsqueeze(-1) == top.unsqueeze(1)).any(-1)
    missing = (positives >= 0) & ~covered
    cands = cands.clone()
    member = is_member(cands, positives)
    for r in range(cands.shape[0]):
        want = positives[r][missing[r]]
        slots = torch.nonzero((cands[r] >= 0) & ~member[r]).flatten()
        n = min(len(want), len(slots))
        if n:
            cands[r, slots[len(slots) - n :]] = want[:n]
    return cands


def test_missing_positives_replace_the_last_negatives_as_the_row_loop_did():
    from xmlbench.models.lightxml.model import _insert_missing_positives

    g = torch.Generator().manual_seed(0)
    label_to_cluster = torch.arange(40) // 5  # 8 clusters of 5
    cluster_labels = torch.arange(40).view(8, 5)
    changed = 0
    for trial in range(200):
        b = int(torch.randint(1, 4, (1,), generator=g))
        top = torch.stack([torch.randperm(8, generator=g)[:b] for _ in range(6)])  # (6, b)
        cands = cluster_labels[top].flatten(1)
        cands[:, -2:] = torch.where(torch.rand(6, 2, generator=g) < 0.3, -1, cands[:, -2:])  # padding
        positives = torch.randint(0, 40, (6, 7), generator=g)
        positives = torch.where(torch.rand(6, 7, generator=g) < 0.3, -1, positives)
        positives = torch.sort(positives, dim=1, descending=True).values  # -1 padding last, as batches pad
        want = _insert_missing_positives_by_row(cands, top, positives, label_to_cluster)
        got = _insert_missing_positives(cands, top, positives, label_to_cluster)
        assert torch.equal(got, want), trial
        changed += int(not torch.equal(want, cands))
    assert changed > 50  # most trials had positives to force in


def _grads(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()

    def norm(module):
        gs = [p.grad for p in module.parameters() if p.grad is not None]
        return float(sum(g.abs().sum() for g in gs)) if gs else 0.0

    return {"generator": norm(net.generator), "bottleneck": norm(net.bottleneck),
            "label_embedding": norm(net.label_embedding), "encoder": norm(net.encoder)}


def _losses(net):
    ids, mask, positives = batch()
    doc, state = net.embed(ids, mask)
    g = net.generator(doc)
    from xmlbench.models.lightxml.model import cluster_targets

    loss_g = F.binary_cross_entropy_with_logits(g, cluster_targets(positives, net.label_to_cluster, 8, g.dtype))
    cands, _ = net.candidates(g, positives)
    logits = net.discriminate(doc, state, g, cands)
    valid = cands >= 0
    loss_d = F.binary_cross_entropy_with_logits(logits[valid], is_member(cands, positives)[valid].float())
    return loss_g, loss_d


def test_the_losses_are_the_means_over_real_candidates(encoder):
    """Ld averages over real candidates only: with -1 padding among them (a row forced to take positives
    from more clusters than b), the weighted sum equals BCE over logits[valid]."""
    net = make_net(encoder)
    net.cluster_labels[:, 4] = -1  # short leaves (4 labels each, padded), as uneven clusterings have
    ids, mask, positives = batch()
    doc, state = net.embed(ids, mask)
    cands, _ = net.candidates(net.generator(doc), positives)
    assert bool((cands < 0).any())  # padding present, so the mask matters
    want_g, want_d = _losses(net)
    got_g, got_d = net.clustered_losses(doc, state, positives)
    torch.testing.assert_close(got_g, want_g)
    torch.testing.assert_close(got_d, want_d)


def test_gradient_routing_of_the_original(encoder):
    """Generator head learns from Lg only, discriminator from Ld only, encoder from both."""
    net = make_net(encoder)
    loss_g, _ = _losses(net)
    from_g = _grads(net, loss_g)
    _, loss_d = _losses(net)
    from_d = _grads(net, loss_d)
    assert from_g["generator"] > 0 and from_g["encoder"] > 0
    assert from_g["bottleneck"] == 0 and from_g["label_embedding"] == 0
    assert from_d["generator"] == 0
    assert from_d["bottleneck"] > 0 and from_d["label_embedding"] > 0 and from_d["encoder"] > 0


def test_clustered_topk_scores_are_products(encoder):
    net = make_net(encoder).eval()
    ids, mask, _ = batch()
    with torch.no_grad():
        doc, state = net.embed(ids, mask)
        scores, top_ids = net.clustered_topk(doc, state, k=5)
        g = net.generator(doc)
        cands, _ = net.candidates(g, None)
        d = net.discriminate(doc, state, g, cands)
    assert scores.shape == (4, 5) and (scores[:, :-1] >= scores[:, 1:]).all()
    label = int(top_ids[0, 0])
    col = int((cands[0] == label).nonzero()[0])
    expected = torch.sigmoid(d[0, col]) * torch.sigmoid(g[0, net.label_to_cluster[label]])
    assert torch.allclose(scores[0, 0], expected)


def test_flat_mode_is_one_linear_layer(encoder):
    net = make_net(encoder, clustered=False)
    assert not net.clustered and net.classifier.out_features == N_LABELS
    ids, mask, positives = batch()
    loss = net(ids, mask, positives)
    assert torch.isfinite(loss) and loss.requires_grad


def test_swa_running_mean_and_swap():
    net = torch.nn.Linear(2, 1, bias=False)
    swa = SWA()
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            net.weight.fill_(value)
        swa.fold(net)
    assert swa.n_models == 3
    assert torch.allclose(swa.mean["weight"], torch.full((1, 2), 3.0))  # (1 + 2 + 6) / 3
    with swa.swapped_in(net):
        assert torch.allclose(net.weight, torch.full((1, 2), 3.0))
    assert torch.allclose(net.weight, torch.full((1, 2), 6.0))  # training weights restored
    restored = SWA()
    restored.load_state_dict(swa.state_dict())
    assert restored.n_models == 3 and torch.equal(restored.mean["weight"], swa.mean["weight"])


# ---------------------------------------------------------------------------- through the runner
SMALL = ["max_len=24", "epochs=2", "batch_size=32", "checkpoint_every=2", "eval_batch_size=64", "max_steps=0",
         "swa_warmup=1", "swa_step=2", "hidden=16", "top_b=4", "leaf_size=8"]


def _options(dataset, out, mode, **kw):
    from xmlbench.config import parse_overrides
    from xmlbench.runs.runner import RunOptions

    mode, _, update = mode.partition("-")  # "clustered-sparse": the lazy label-embedding update
    over = parse_overrides(SMALL + [f"mode={mode}"] + ([f"label_embedding_update={update}"] if update else []))
    return RunOptions(dataset=str(dataset), model="lightxml", preset="smoke", out=str(out), progress=False,
                      overrides=over, **kw)


@pytest.mark.parametrize("mode", ["flat", "clustered", "clustered-sparse"])
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(tiny_dataset, tmp_path, monkeypatch, mode):
    from kill_after_checkpoint import Killed, kill_after_checkpoint

    from xmlbench.engine import loop
    from xmlbench.runs.record import read_predictions
    from xmlbench.runs.runner import run

    whole = run(_options(tiny_dataset, tmp_path / "whole", mode))
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 3)
        with pytest.raises(Killed):
            run(_options(tiny_dataset, tmp_path / "killed", mode))
    # A kill lands after the history lines of steps the checkpoint does not hold: they must not stay.
    with open(tmp_path / "killed" / loop.HISTORY, "a", encoding="utf-8") as f:
        f.write('{"step": 99, "epoch": 0, "loss": 1.0}\n')
    # Pretend the killed session trained for 1000 s: the resumed record must report the whole time.
    path = tmp_path / "killed" / loop.CHECKPOINT
    saved = torch.load(path, weights_only=True)
    assert saved["train_state"]["train_seconds"] > 0
    saved["train_state"]["train_seconds"] = 1000.0
    torch.save(saved, path)
    started = time.perf_counter()
    resumed = run(_options(tiny_dataset, tmp_path / "killed", mode, resume=True))
    elapsed = time.perf_counter() - started
    assert resumed["metrics"] == whole["metrics"]
    for stage in ("fit.train", "fit"):  # the table's "fit s" reads timing_s.fit
        assert 1000.0 < resumed["timing_s"][stage] <= 1000.0 + elapsed, stage
    assert resumed["selection"]["best_step"] == whole["selection"]["best_step"]
    for a, b in zip(read_predictions(tmp_path / "whole"), read_predictions(tmp_path / "killed")):
        np.testing.assert_array_equal(a, b)
    # Every step exactly once: the history of the resumed run is the uninterrupted run's.
    assert _history_steps(tmp_path / "killed") == _history_steps(tmp_path / "whole")


def _history_steps(run_dir):
    from xmlbench.engine import loop

    lines = (run_dir / loop.HISTORY).read_text(encoding="utf-8").splitlines()
    return [(d["step"], d["epoch"], d.get("split", "train")) for d in map(json.loads, lines)]


def test_checkpoint_round_trip_without_pickle(tiny_dataset, tmp_path):
    from safetensors.torch import load_file

    from xmlbench.data.dataset import open_dataset
    from xmlbench.models.lightxml.model import LightXML
    from xmlbench.runs.predict import load_run_model
    from xmlbench.runs.runner import run

    record = run(_options(tiny_dataset, tmp_path / "r", "clustered"))
    folder = tmp_path / "r" / "model"
    saved = load_file(folder / "model.safetensors")  # plain tensors and JSON: no pickle needed
    meta = json.loads((folder / "model.json").read_text())
    assert meta["config"]["mode"] == "clustered" and meta["hierarchy"]["mode"] == "clustered"
    assert saved["hierarchy.cluster_labels"].shape[1] <= 8
    ds = open_dataset(str(tiny_dataset))
    reloaded = LightXML.restore(folder, ds)
    ids, scores = reloaded.predict(ds.test, 100)
    from xmlbench.runs.record import read_predictions

    saved_ids, saved_scores = read_predictions(tmp_path / "r")
    np.testing.assert_array_equal(ids, saved_ids)
    np.testing.assert_allclose(scores, saved_scores, rtol=1e-6)
    model, _ = load_run_model(tmp_path / "r")  # what `xmlbench predict RUN_DIR` does
    assert model.mode == "clustered" and record["selection"]["split"] == "valid"
    # tables tell flat and clustered apart; the clusters were computed, not the original's published ones
    assert record["model_details"] == {"mode": "clustered", "clusters": "computed", "label_embedding_update": "dense"}
    from xmlbench.results.compare import system_name

    assert system_name(record) == "lightxml (tiny) [clustered]"
