"""Stochastic weight averaging as in LightXML: from epoch ``swa_warmup`` on, every ``swa_step`` optimiser
steps (``swa_count: batches``: every ``swa_step`` batches of the epoch from 0, the original's count) the
current weights are folded into an equal-weight running mean; evaluation and the saved model use the
averaged weights (swapped in, then swapped back so training continues on the raw weights)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class SWA:
    def __init__(self) -> None:
        self.mean: dict[str, torch.Tensor] = {}
        self.n_models = 0

    @property
    def active(self) -> bool:
        return self.n_models > 0

    @torch.no_grad()
    def fold(self, net: nn.Module) -> None:
        """mean <- mean + (w - mean) / (n + 1); the first fold copies the weights (n = 1)."""
        for name, p in net.named_parameters():
            if not p.requires_grad:
                continue
            w = p.detach().float()
            if self.n_models == 0:
                self.mean[name] = w.clone()
            else:
                self.mean[name].add_((w - self.mean[name]) / (self.n_models + 1))
        self.n_models += 1

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, net: nn.Module) -> Iterator[None]:
        """Use the averaged weights inside the block (a no-op before the first fold)."""
        if not self.active:
            yield
            return
        params = dict(net.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.mean}
        for n, m in self.mean.items():
            params[n].copy_(m.to(params[n].dtype))
        try:
            yield
        finally:
            for n, w in saved.items():
                params[n].copy_(w)

    def state_dict(self) -> dict:
        return {"n_models": self.n_models, "mean": self.mean}

    def load_state_dict(self, state: dict) -> None:
        self.n_models = int(state["n_models"])
        self.mean = {k: v.float() for k, v in state["mean"].items()}
