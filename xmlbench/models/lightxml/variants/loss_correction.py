"""Loss correction: the discriminator loss Ld also trains the generator head (variant ``loss-correction``).

Notation (LightXML, Jiang et al. 2021, Sec. 3.3-3.4): x (B, D) is the document vector, g = W x + b (B, K)
the generator's cluster logits, c a candidate label of document x with cluster k(c), d_c the
discriminator's logit of c, y_c in {0, 1} its target, and Ld = (1/N) sum_c BCE(l_c, y_c) over the N valid
candidates of the batch.

Original LightXML: l_c = d_c. The candidates come from the DETACHED generator scores, so nothing in Ld
depends on W:

    dLd/dW = 0        (the generator head learns from Lg alone; the encoder learns from Lg and Ld).

This variant: l_c = d_c + w * g_{k(c)}, with g NOT detached (``g_of_cand`` is gathered from the
differentiable g in ``LightXMLNet.discriminate``). With dBCE(l, y)/dl = sigmoid(l) - y and
dg_k/dW_k = x (row k of W):

    dLd/dW_k = (w / N) * sum over candidates c with k(c) = k of (sigmoid(l_c) - y_c) * x_{doc(c)}
    dLd/db_k = (w / N) * sum over the same candidates of (sigmoid(l_c) - y_c)

so a cluster whose shortlisted labels the discriminator over-scores (sigmoid(l_c) > y_c) has its
generator logit pushed down, and one whose positives are under-scored pushed up: the generator is
corrected by the discriminator's errors, not only by the cluster targets of Lg. Rows of W for clusters
that are not in a document's shortlist receive nothing from Ld. The encoder also gets the extra term
(w / N) sum_c (sigmoid(l_c) - y_c) W_{k(c)}.

Inference is unchanged in form: score(c) = sigmoid(d_c + w g_{k(c)}) * sigmoid(g_{k(c)}), because the hook
acts inside ``discriminate``, which both training and ``clustered_topk`` call. w = 0 gives the base logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from xmlbench.config import NonNegativeFloat
from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import (
    Probe,
    Variant,
    VariantContext,
    VariantSpec,
    register,
    train_like,
)


@dataclass(frozen=True)
class LossCorrectionConfig:
    weight: NonNegativeFloat = 1.0  # how much of the cluster's generator logit enters each candidate's logit


class LossCorrection(Variant):
    """Adds ``weight`` times the candidate's (differentiable) cluster logit to its discriminator logit."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"loss_correction.weight must be a finite number >= 0 (got {weight})")
        self.weight = float(weight)

    def candidate_logits(self, d: torch.Tensor, g_of_cand: torch.Tensor) -> torch.Tensor:
        """Hook 4: (B, C) logits d + w * g[cluster of candidate]; g keeps its graph so Ld reaches W."""
        return d + self.weight * g_of_cand.to(d.dtype)  # (B, C)

    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """w, and how much of the generator head's gradient comes from Ld, on validation batches in
        training mode (dropout on, no optimiser step; ``train_like`` restores modes, buffers and RNG).

        With G_d = dLd/d(W, b) and G_g = dLg/d(W, b) of the generator head summed over the batches:
        ``ld_grad_share`` = |G_d| / (|G_d| + |G_g|) in [0, 1], and ``ld_over_total`` = |G_d| / |G_d + G_g|
        (the two can point against each other, so this one may exceed 1). Both are exactly 0 at w = 0,
        where Ld cannot reach the generator (dLd/dg = w * ...)."""
        net = probe.net
        params = list(net.generator.parameters())
        sums = {"d": [torch.zeros_like(p) for p in params], "g": [torch.zeros_like(p) for p in params]}
        with train_like(net):
            for ids, mask, positives in probe.batches():
                doc, state = net.embed(ids, mask)
                losses = dict(zip("gd", net.clustered_losses(doc, state, positives)))
                for part, loss in losses.items():
                    grads = torch.autograd.grad(loss, params, retain_graph=part == "g", allow_unused=True)
                    for acc, grad in zip(sums[part], grads):
                        if grad is not None:  # unused: that loss does not reach the generator at all
                            acc += grad.float()
        norm_d = _norm(sums["d"])
        norm_g = _norm(sums["g"])
        norm_total = _norm([a + b for a, b in zip(sums["d"], sums["g"])])
        return {"weight": self.weight,
                "ld_grad_share": norm_d / (norm_d + norm_g) if norm_d + norm_g > 0 else 0.0,
                "ld_over_total": norm_d / norm_total if norm_total > 0 else 0.0}

    def extra_repr(self) -> str:
        return f"weight={self.weight}"


def _build(cfg: LossCorrectionConfig, ctx: VariantContext) -> LossCorrection:
    return LossCorrection(cfg.weight)


register(VariantSpec("loss-correction", LossCorrectionConfig, _build,
                     "discriminator logits include the cluster's generator logit, so Ld reaches the generator",
                     needs_clustered=True))


def _norm(tensors: list[torch.Tensor]) -> float:
    """The Euclidean norm of the tensors taken as one vector."""
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))
