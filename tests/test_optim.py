"""The lazy AdamW of the sparse label-embedding update, against two peer implementations (torch's dense
AdamW where every row is touched, torch's SparseAdam without weight decay), and its place in LightXML."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmlbench.engine.optim import LazyAdamW, OptimizerPair, make_optimizer
from xmlbench.models.lightxml.clustering import clusters_to_arrays
from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet, lightxml_param_groups

ROWS, DIM = 20, 4


def _trained_table(optimiser, sparse: bool, rows_of_step, steps: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights after ``steps`` steps, weights before) of a table trained on a fixed quadratic loss."""
    torch.manual_seed(0)
    table = torch.nn.Embedding(ROWS, DIM, sparse=sparse)
    start = table.weight.detach().clone()
    opt = optimiser(table.parameters())
    scale = torch.arange(1.0, DIM + 1)
    for step in range(steps):
        rows = rows_of_step(step)
        (table(rows) ** 2 * scale + table(rows)).sum().backward()
        opt.step()
        opt.zero_grad()
    return table.weight.detach(), start


def _random_rows(step: int) -> torch.Tensor:
    # 7 draws of 20 rows: repeats within a step (summed by coalesce) and rows skipped for several steps
    return torch.randint(0, ROWS, (7,), generator=torch.Generator().manual_seed(step))


def _every_row_twice(step: int) -> torch.Tensor:
    return torch.cat([torch.arange(ROWS), torch.arange(ROWS).flip(0)])


def test_lazy_adamw_is_adamw_when_every_row_is_touched_every_step():
    dense, _ = _trained_table(lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.05), False, _every_row_twice)
    lazy, _ = _trained_table(lambda p: LazyAdamW(p, lr=0.1, weight_decay=0.05), True, _every_row_twice)
    torch.testing.assert_close(lazy, dense, rtol=0, atol=1e-6)


def test_lazy_adamw_without_decay_is_torch_sparse_adam():
    # SparseAdam adds eps to sqrt(v) before bias correction, AdamW after: equal up to eps-sized terms
    peer, _ = _trained_table(lambda p: torch.optim.SparseAdam(p, lr=0.1), True, _random_rows)
    lazy, _ = _trained_table(lambda p: LazyAdamW(p, lr=0.1), True, _random_rows)
    torch.testing.assert_close(lazy, peer, rtol=0, atol=1e-5)


def test_rows_absent_from_every_step_do_not_move_while_dense_adamw_decays_them():
    touched = torch.unique(torch.cat([_random_rows(s) for s in range(6)]))
    untouched = torch.tensor(sorted(set(range(ROWS)) - set(touched.tolist())))
    assert len(untouched) > 0
    lazy, start = _trained_table(lambda p: LazyAdamW(p, lr=0.1, weight_decay=0.05), True, _random_rows)
    dense, _ = _trained_table(lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.05), False, _random_rows)
    assert torch.equal(lazy[untouched], start[untouched])
    assert not torch.equal(dense[untouched], start[untouched])  # what the lazy update changes
    assert not torch.equal(lazy[touched], start[touched])


def test_a_skipped_row_keeps_its_moments_and_resumes_from_them():
    """By hand: a row with gradient 1 at steps 1 and 3 (absent at step 2), lr 0.1, no decay. Its moments
    see two updates, bias correction sees step 3 (the parameter's count)."""
    p = torch.nn.Parameter(torch.zeros(2, 1))
    opt = LazyAdamW([p], lr=0.1, eps=0.0)
    for rows in ([0], [1], [0]):
        p.grad = torch.sparse_coo_tensor(torch.tensor([rows]), torch.ones(1, 1), (2, 1), check_invariants=True)
        opt.step()
    m = 0.1 * 0.9 + 0.1  # (1 - b1) g, then b1 m + (1 - b1) g
    v = 0.001 * 0.999 + 0.001
    first = -0.1 * (0.1 / (1 - 0.9)) / (0.001 / (1 - 0.999)) ** 0.5  # step 1: -lr
    third = -0.1 * (m / (1 - 0.9**3)) / (v / (1 - 0.999**3)) ** 0.5
    assert p[0].item() == pytest.approx(first + third, rel=1e-6)
    assert opt.state[p]["step"] == 3


def test_lazy_adamw_refuses_a_dense_gradient():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.ones(3, 2)
    with pytest.raises(TypeError, match="sparse gradients only"):
        LazyAdamW([p]).step()


def _net(update: str, leaves=None) -> LightXMLNet:
    from xmlbench.encoders import load_encoder

    torch.manual_seed(0)
    enc = load_encoder("tiny", seed=0)
    if leaves is None:
        leaves = [np.arange(i, i + 5, dtype=np.int32) for i in range(0, 40, 5)]  # 8 clusters of 5
    cfg = LightXMLConfig(encoder="tiny", hidden=16, top_b=2, dropout=0.0, label_embedding_update=update)
    return LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, 40, cfg, clusters_to_arrays(leaves))


def _one_step(net: LightXMLNet, positives=None):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (4, 12), generator=g)
    if positives is None:
        positives = torch.tensor([[0, 7], [12, -1], [3, 18], [25, 26]])
    doc, state = net.embed(ids, torch.ones_like(ids))
    cands, _ = net.candidates(net.generator(doc), positives)
    optimizer = make_optimizer(lightxml_param_groups(net, net.cfg), 1e-3, torch.device("cpu"))
    before = net.label_embedding.weight.detach().clone()
    net(ids, torch.ones_like(ids), positives).backward()
    grad = net.label_embedding.weight.grad
    optimizer.step()
    net.last_candidates = cands  # with their -1 padding
    return optimizer, grad, before, net.label_embedding.weight.detach(), torch.unique(cands[cands >= 0])


def test_sparse_update_moves_exactly_the_candidate_rows_of_the_step():
    optimizer, grad, before, after, cands = _one_step(_net("sparse"))
    assert isinstance(optimizer, OptimizerPair) and grad.is_sparse
    assert torch.equal(torch.unique(grad.coalesce().indices()[0]), cands)
    moved = torch.nonzero((after != before).any(1)).flatten()
    assert torch.equal(moved, cands) and len(cands) < 40
    sparse_groups = [g for g in optimizer.sparse.param_groups]
    assert len(sparse_groups) == 1 and sparse_groups[0]["weight_decay"] == 0.01
    assert sparse_groups[0]["lr"] == 1e-3  # the heads' learning rate
    assert all(p is not optimizer.sparse.param_groups[0]["params"][0]
               for g in optimizer.dense.param_groups for p in g["params"])


def test_candidate_padding_moves_no_label_row_in_the_sparse_update():
    # Label 0 alone in a cluster of 1 that no document reaches, labels 1-5 in one of 5 (the padded width),
    # the rest in clusters of 3, so candidate lists carry -1 padding. Before the spare padding row, padding
    # read label 0's row: it came into the sparse gradient with zeros, and the lazy AdamW decayed and moved
    # it in every such step.
    leaves = [np.array([0]), np.arange(1, 6)] + [np.arange(i, min(i + 3, 40)) for i in range(6, 40, 3)]
    net = _net("sparse", [leaf.astype(np.int32) for leaf in leaves])
    with torch.no_grad():  # the generator never picks cluster 0
        net.generator.bias[0] = -1e4
    optimizer, grad, before, after, cands = _one_step(net, positives=torch.tensor([[7, 10], [12, -1], [30, 18],
                                                                                   [25, 26]]))
    assert 0 not in cands.tolist() and bool((net.last_candidates < 0).any())
    assert net.label_embedding.weight.shape[0] == 41 and net.label_embedding.padding_idx == 40
    touched = torch.unique(grad.coalesce().indices()[0])
    assert torch.equal(touched, cands)  # neither label 0 nor the padding row
    assert torch.equal(after[0], before[0]) and not bool(after[40].any())
    assert torch.equal(torch.nonzero((after != before).any(1)).flatten(), cands)


def test_sparse_and_dense_tables_start_from_the_same_label_rows():
    assert torch.equal(_net("sparse").label_embedding.weight[:40], _net("dense").label_embedding.weight)


def test_dense_update_moves_every_row_and_stays_one_adamw():
    optimizer, grad, before, after, cands = _one_step(_net("dense"))
    assert isinstance(optimizer, torch.optim.AdamW) and not grad.is_sparse
    assert bool((after != before).any(1).all())  # weight decay reaches every row


def test_the_original_protocol_keeps_one_dense_adamw():
    from xmlbench.models.lightxml.presets import original_protocol

    assert original_protocol(None, "bert-base")["label_embedding_update"] == "dense"


def test_auto_is_sparse_above_the_threshold_only(monkeypatch):
    from xmlbench.models.lightxml import model

    assert not _net("auto").label_embedding.sparse  # 40 labels
    monkeypatch.setattr(model, "SPARSE_ABOVE", 39)
    net = _net("auto")
    assert net.label_embedding.sparse
    groups = lightxml_param_groups(net, net.cfg)
    assert [g["params"] for g in groups if g.get("sparse")] == [[net.label_embedding.weight]]
    assert not _net("dense").label_embedding.sparse


def test_sparse_gradients_are_refused_where_they_cannot_go(monkeypatch):
    from xmlbench.engine import distributed, loop
    from xmlbench.errors import UserError
    from xmlbench.models.neural import NeuralConfig

    net = _net("sparse")
    groups = lightxml_param_groups(net, net.cfg)
    loop.check_sparse_fits(groups, NeuralConfig())  # one process, no compile: fine
    with pytest.raises(UserError, match="torch.compile cannot compile a sparse embedding"):
        loop.check_sparse_fits(groups, NeuralConfig(compile=True))
    monkeypatch.setattr(distributed, "backend", lambda: "nccl")
    with pytest.raises(UserError, match="NCCL cannot all-reduce sparse gradients"):
        loop.check_sparse_fits(groups, NeuralConfig())
    dense = _net("dense")
    loop.check_sparse_fits(lightxml_param_groups(dense, dense.cfg), NeuralConfig(compile=True))
