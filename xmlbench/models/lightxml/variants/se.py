"""Squeeze-and-excitation over LightXML's stack of [CLS] layers (variant ``se``).

Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) rescales the channels of
a feature map by gates computed from the map itself. Here the channels are the n_layers (5) [CLS] vectors
of the last encoder layers, each of width H:

* squeeze:  s_c = mean_h x_{c,h}                                    (B, C)      one scalar per layer
* excite:   e = sigmoid(W_3 relu(W_2 relu(W_1 s + b_1) + b_2) + b_3)  (B, C)
  where W_1: C -> ``expand`` (> C), W_2: ``expand`` -> ``reduction``, W_3: ``reduction`` -> C are 1x1
  convolutions over the channel axis;
* scale:    y_{c,h} = e_c * x_{c,h}                                  (B, C, H)   before concatenation.

Expanding first matters with so few channels: the usual C -> C/r bottleneck would squeeze five numbers
into one or two, which cannot express per-layer gates. The sigmoid keeps every gate in (0, 1), so the
module can only re-weight layers, never flip or amplify them without bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from xmlbench.config import Range
from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import Variant, VariantContext, VariantSpec, register


@dataclass(frozen=True)
class SEConfig:
    # channels after the expanding convolution (> n_layers, checked when built: 5 -> 2 cannot express gates)
    expand: Annotated[int, Range(2, 4096)] = 32
    reduction: Annotated[int, Range(1, 4096)] = 8  # bottleneck channels


class SqueezeExcitation(Variant):
    """Per-layer gates in (0, 1) from the mean activation of each [CLS] layer (Hu et al. 2018)."""

    def __init__(self, n_channels: int, expand: int, reduction: int) -> None:
        super().__init__()
        if expand <= n_channels:
            raise UserError(f"se.expand must exceed the {n_channels} layer channels (got {expand})")
        if reduction < 1:
            raise UserError(f"se.reduction must be at least 1 (got {reduction})")
        self.n_channels = n_channels
        # 1x1 convolutions over a length-1 "sequence": the channel axis is the conv's channel axis.
        self.excite = nn.Sequential(
            nn.Conv1d(n_channels, expand, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(expand, reduction, kernel_size=1),
            nn.ReLU(),
            nn.Conv1d(reduction, n_channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def gates(self, layers: torch.Tensor) -> torch.Tensor:
        """(B, C) gates in (0, 1) for a (B, C, H) stack."""
        squeezed = layers.mean(dim=2, keepdim=True)  # (B, C, 1): the squeeze, mean over the hidden dim
        return self.excite(squeezed).squeeze(2)  # (B, C)

    def transform_layers(self, layers: torch.Tensor) -> torch.Tensor:
        """Hook 1: the (B, C, H) [CLS] stack with each layer scaled by its gate."""
        return layers * self.gates(layers).unsqueeze(2).to(layers.dtype)  # (B, C, H)


def _build(cfg: SEConfig, ctx: VariantContext) -> SqueezeExcitation:
    return SqueezeExcitation(ctx.n_layers, cfg.expand, cfg.reduction)


register(VariantSpec("se", SEConfig, _build, "squeeze-and-excitation over the last five [CLS] layers"))
