"""The optimisers: AdamW, and for parameters with sparse gradients a lazy AdamW that moves only the rows
a step's gradient names.

Why a lazy update: the clustered head's label embedding has one row per label (Amazon-670K: 670,091 x
400; Amazon-3M: 2.8M x 300) but a step touches only its candidates (batch x top_b x leaf_size rows, a few
percent). A dense AdamW step reads and writes every row four times (weight, gradient, two moments) and
keeps a dense gradient as large as the table. With ``nn.Embedding(sparse=True)`` the gradient holds the
touched rows only, and ``LazyAdamW`` updates those rows' moments and weights.

What it changes in the recipe (the original used one dense AdamW): a row absent from a step does not move
at all in that step. Dense AdamW keeps moving it along its decaying first moment (m * 0.9^k over
sqrt(v) * 0.999^(k/2)) and applies weight decay to it every step; the lazy one applies both only when the
row is a candidate. Bias correction uses the parameter's step count, as dense AdamW does, so a row that
is touched in every step follows dense AdamW exactly (tested against ``torch.optim.AdamW``)."""

from __future__ import annotations

import math
from typing import Any

import torch


class LazyAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, torch's update rule and eps placement) for sparse gradients."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update_rows(p, group)
        return loss

    def _update_rows(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        if not p.grad.is_sparse:
            raise TypeError("LazyAdamW takes sparse gradients only (nn.Embedding(sparse=True)); "
                            "dense parameters belong to AdamW")
        grad = p.grad.coalesce()  # accumulated steps and repeated candidates: one entry per row
        rows, values = grad.indices()[0], grad.values()
        state = self.state[p]
        if not state:
            state["step"] = 0  # a Python int: no device round trip per step
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        lr, t = group["lr"], state["step"]
        exp_avg = state["exp_avg"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
        weights = p[rows].mul_(1 - lr * group["weight_decay"])
        denom = exp_avg_sq.sqrt().div_(math.sqrt(1 - beta2**t)).add_(group["eps"])
        weights.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**t))
        p.index_copy_(0, rows, weights)


class OptimizerPair:
    """AdamW for the dense groups and ``LazyAdamW`` for the sparse ones, seen by the loop as one optimiser:
    ``param_groups`` lists both (the schedule and the loss scaler walk it), ``step``, ``zero_grad`` and the
    state dict cover both."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: LazyAdamW) -> None:
        self.dense, self.sparse = dense, sparse

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.dense.param_groups + self.sparse.param_groups

    def step(self, closure=None):
        loss = self.dense.step(closure)
        self.sparse.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"dense", "sparse"}:
            raise ValueError("a dense optimiser's state (this run updates its label embedding sparsely)")
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def make_optimizer(groups: list[dict], lr: float, device: torch.device, eps: float = 1e-8):
    """AdamW; on a GPU the fused kernel (one launch for all parameters instead of several per tensor).
    Groups marked ``"sparse": True`` (parameters with sparse gradients) go to ``LazyAdamW`` instead.
    ``eps`` is torch's default; the original's ``transformers.AdamW`` used 1e-6 (``adam_eps``)."""
    dense = [g for g in groups if not g.get("sparse")]
    sparse = [{k: v for k, v in g.items() if k != "sparse"} for g in groups if g.get("sparse")]
    adamw = torch.optim.AdamW(dense, lr=lr, eps=eps, fused=device.type == "cuda")
    if not sparse:
        return adamw
    return OptimizerPair(adamw, LazyAdamW(sparse, lr=lr, eps=eps))
