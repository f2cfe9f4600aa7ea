"""ELMo's scalar mix over every hidden layer (variant ``scalar-mix``; Peters et al., "Deep contextualized
word representations", NAACL 2018, eq. 1):

    doc = gamma * sum_j s_j h_j,   s = softmax(w),   j = 0 (the embeddings' output) .. n_layers

where h_j is the classification-token vector of hidden state j, w (one scalar per layer) and gamma are
learned, w starts at 0 (equal weights) and gamma at 1. It REPLACES LightXML's document vector, the
concatenated [CLS] vectors of the last five layers (width 5H), by one mixed vector of width H: the heads
are built for H (hook ``document_dim``), so the model has fewer head parameters, and ``n_layers`` is not
used (every layer is mixed).

Composition: with ``loss-correction`` and ``random-negatives`` (they act on logits and shortlists).
Refused with ``se`` (it gates the five concatenated [CLS] layers, which this variant no longer uses: the
gates would do nothing) and with ``doc-rep`` (its views are built at the concatenation's width 5H, and
its [CLS] view is the concatenation this variant replaces).

Diagnostics: the softmax weights s_j (embeddings first) and gamma.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xmlbench.encoders import classification_token_index
from xmlbench.models.lightxml.variants.base import Probe, Variant, VariantContext, VariantSpec, register


@dataclass(frozen=True)
class ScalarMixConfig:
    pass  # nothing to set: ELMo's weights start equal and gamma at 1


class ScalarMix(Variant):
    def __init__(self, n_states: int, hidden_size: int, cls_position: str = "first") -> None:
        super().__init__()
        self.n_states = n_states
        self.hidden_size = hidden_size
        self.cls_position = cls_position
        self.weights = nn.Parameter(torch.zeros(n_states))  # w: s = softmax(w)
        self.gamma = nn.Parameter(torch.ones(()))

    def document_dim(self, dim: int) -> int:
        return self.hidden_size

    def mix(self, hidden, mask: torch.Tensor) -> torch.Tensor:
        """(B, H): gamma * sum_j softmax(w)_j h_j over every hidden state's classification token."""
        if len(hidden) != self.n_states:
            raise ValueError(f"scalar-mix was built for {self.n_states} hidden states, got {len(hidden)}")
        index = classification_token_index(mask, self.cls_position).to(hidden[0].device)
        rows = torch.arange(index.shape[0], device=index.device)
        stack = torch.stack([h[rows, index] for h in hidden], dim=1)  # (B, J, H)
        s = torch.softmax(self.weights, dim=0).to(stack.dtype)  # (J,)
        return self.gamma.to(stack.dtype) * torch.einsum("bjh,j->bh", stack, s)  # (B, H)

    def transform_document(self, doc: torch.Tensor, hidden, mask: torch.Tensor) -> torch.Tensor:
        """Hook 2: LightXML's (B, 5H) concatenation replaced by the (B, H) mix."""
        return self.mix(hidden, mask)

    @torch.no_grad()
    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """The learned layer weights s_j (embeddings first, summing to 1) and gamma."""
        return {"weights": torch.softmax(self.weights, dim=0).tolist(), "gamma": float(self.gamma)}


def _build(cfg: ScalarMixConfig, ctx: VariantContext) -> ScalarMix:
    return ScalarMix(ctx.n_states, ctx.hidden_size, ctx.cls_position)


register(VariantSpec("scalar-mix", ScalarMixConfig, _build,
                     "ELMo's softmax-normalised learned weights over every hidden layer's [CLS], times gamma "
                     "(instead of concatenating the last five)",
                     refuses=(("se", "se gates the five concatenated [CLS] layers, which scalar-mix replaces"),
                              ("doc-rep", "doc-rep's views have the concatenation's width 5H and its [CLS] "
                                          "view is the concatenation scalar-mix replaces"))))
