"""Squeeze-and-excitation over LightXML's stack of [CLS] layers (variant ``se``).

Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018) rescales the channels of
a feature map by gates computed from the map itself. Here the channels are the n_layers (C = 5) [CLS]
vectors of the last encoder layers, and the hidden axis (width H) plays the role of the spatial axis:

* expand:   u = relu(conv_k(x))             (B, E, H)  Conv1d C -> E = ``expand`` channels along the hidden
                                                        axis (kernel ``kernel_size``), BEFORE any pooling;
* squeeze:  s_e = sum_h a_{e,h} u_{e,h} + c_e  (B, E)   a learned pooling of each expanded channel over H
                                                        (one weight per channel and hidden unit);
* excite:   e = sigmoid(W_2 gelu(W_1 s + b_1) + b_2)   (B, C)   bottleneck E -> ``reduction`` -> C;
* scale:    y_{c,h} = e_c * x_{c,h}         (B, C, H)  before concatenation.

This follows the proposal's adaptation of SE to five channels: with so few channels the usual C -> C/r
bottleneck would squeeze five numbers into one or two, so convolutions first increase the channels "to
accentuate the channel attention".

How the squeeze differs from Hu et al.'s global average pooling (and from this module's first design,
mean over hidden, then 1x1 convolutions): every [CLS] vector comes out of a LayerNorm, so its mean over
the hidden axis is nearly the same for every document (exactly the mean of beta while gamma is uniform,
as in a freshly initialised encoder). On 8 sentences that mean's std across documents was 1e-8 on the
random ``tiny`` encoder and 3e-6..4e-3 per layer on MiniLM, and the first design's gates were a fixed
per-layer scale (std across documents 0 on ``tiny``, 3e-6..1.4e-4 per layer on MiniLM). Pooling that
treats all hidden units alike does not fix this: the mean of a ReLU expansion gave gates barely better
(std 7e-5 on MiniLM), and max pooling picks the encoder's few massive, document-independent activations
(MiniLM's unit 99 is ~8.7 in every layer; with the initialisation below its gate logits reached +-35,
saturating gates at 0 or 1). Document information is in WHICH hidden units are high, so the squeeze
weights each unit: s_e is a learned weighted sum over h, of which the mean is the special case
a_{e,h} = 1/H. It is initialised at random (not at 1/H) so that the gates depend on the document from the
first step (gate std across the 8 sentences on MiniLM: 1e-3..4e-2 per layer, over 20 seeds).

The sigmoid keeps every gate in (0, 1), as in Hu et al.: the module re-weights layers, never flips them or
amplifies them without bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from xmlbench.config import Range
from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import (
    Probe,
    Variant,
    VariantContext,
    VariantSpec,
    register,
)


@dataclass(frozen=True)
class SEConfig:
    # channels after the expanding convolution (> n_layers, checked when built: 5 -> 2 cannot express gates)
    expand: Annotated[int, Range(2, 4096)] = 32
    reduction: Annotated[int, Range(1, 4096)] = 8  # bottleneck channels of the excitation
    # Hidden units have no neighbourhood order (unlike pixels), so a wider kernel only mixes arbitrary
    # neighbours; 1 mixes the five layers at each hidden unit. Odd sizes keep the length H.
    kernel_size: Annotated[int, Range(1, 255)] = 1  # odd: checked when built
    # The gates' value at initialisation, up to a random per-layer offset of the initial weights (on
    # MiniLM each layer's mean gate starts in 0.81..0.94 with seed 0, 0.54..0.98 over 20 seeds).
    # 0.9 rather than Hu et al.'s ~0.5: the document vector starts at ~90% of the base model's scale, so
    # the heads see nearly the base model's inputs, while the sigmoid's slope (0.09) is still 36% of its
    # maximum, so the gates learn and vary across documents from the start (at 0.99 the slope is 0.01;
    # the gates' std across documents shrinks with the slope).
    gate_init: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.9


class HiddenPooling(nn.Module):
    """s_e = sum_h a_{e,h} u_{e,h} + c_e: each channel pooled over the hidden axis with learned weights."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        # A depthwise convolution spanning the whole axis, written as an einsum (on CPU a grouped Conv1d
        # with kernel H is ~3x slower forward + backward).
        self.weight = nn.Parameter(torch.empty(channels, width))  # (E, H)
        self.bias = nn.Parameter(torch.zeros(channels))  # (E,)
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(width))  # LeCun: variance-preserving

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.einsum("beh,eh->be", u, self.weight) + self.bias  # (B, E)


class SqueezeExcitation(Variant):
    """Per-layer gates in (0, 1): expand the five layers with convolutions over the hidden axis, pool
    each expanded channel with learned weights per hidden unit, excite through a bottleneck (Hu et al.)."""

    def __init__(self, n_channels: int, hidden_size: int, expand: int = 32, reduction: int = 8,
                 kernel_size: int = 1, gate_init: float = 0.9) -> None:
        super().__init__()
        if expand <= n_channels:
            raise UserError(f"se.expand must exceed the {n_channels} layer channels (got {expand})")
        if reduction < 1:
            raise UserError(f"se.reduction must be at least 1 (got {reduction})")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(f"se.kernel_size must be an odd number >= 1, so the hidden width is kept "
                            f"(got {kernel_size})")
        if not 0.0 < gate_init < 1.0:
            raise UserError(f"se.gate_init must lie strictly between 0 and 1: it is a sigmoid's value "
                            f"(got {gate_init})")
        self.n_channels = n_channels
        # The layers are the convolution's channels, the hidden axis its length.
        self.expand = nn.Conv1d(n_channels, expand, kernel_size=kernel_size, padding=kernel_size // 2)
        # One weight per (expanded channel, hidden unit); the mean would be weights 1/H.
        self.squeeze = HiddenPooling(expand, hidden_size)
        # GELU, not Hu et al.'s ReLU, in the bottleneck: the squeeze has a large document-independent part,
        # so each bottleneck unit is on or off for every document alike; with ReLU, in 1 of 24 seeds tried
        # on ``tiny`` all were off after one step: constant gates, and no gradient past the bottleneck.
        self.excite = nn.Sequential(nn.Linear(expand, reduction), nn.GELU(), nn.Linear(reduction, n_channels))
        self._init_weights(gate_init)

    def _init_weights(self, gate_init: float) -> None:
        # Variance-preserving initialisation (He for the layers before a (G)ELU, LeCun for the linear
        # pooling). PyTorch's default shrinks the signal 1.7-2.4x per layer, which leaves the small
        # document-dependent part of the squeeze (MiniLM's lower [CLS] layers barely change across
        # documents) ~19x weaker in the gate logits (measured on MiniLM over 20 seeds: median logit std
        # across documents 3.8e-3 with the default, 7.1e-2 with this). The price: the squeeze's
        # document-independent part moves each layer's starting logit by a random offset (median 0.25, <= 2).
        for layer in (self.expand, self.excite[0]):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        last = self.excite[2]
        nn.init.normal_(last.weight, std=1.0 / math.sqrt(last.in_features))
        nn.init.constant_(last.bias, math.log(gate_init / (1.0 - gate_init)))  # sigmoid(bias) = gate_init

    def gates(self, layers: torch.Tensor) -> torch.Tensor:
        """(B, C) gates in (0, 1) for a (B, C, H) stack."""
        expanded = torch.relu(self.expand(layers))  # (B, E, H): channels increased before the squeeze
        squeezed = self.squeeze(expanded)  # (B, E): learned pooling over the hidden axis
        return torch.sigmoid(self.excite(squeezed))  # (B, C)

    def transform_layers(self, layers: torch.Tensor) -> torch.Tensor:
        """Hook 1: the (B, C, H) [CLS] stack with each layer scaled by its gate."""
        return layers * self.gates(layers).unsqueeze(2).to(layers.dtype)  # (B, C, H)

    @torch.no_grad()
    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """Per layer, the mean and std (ddof=0) over validation documents of its gate: a std near 0 means
        a fixed per-layer scale, not squeeze-and-excitation."""
        gates = torch.cat([self.gates(probe.net.cls_layers(ids, mask)[0].float()).float()
                           for ids, mask, _ in probe.batches()])  # (N, C)
        return {"gate_mean": gates.mean(dim=0).tolist(),
                "gate_std": gates.std(dim=0, unbiased=False).tolist(),
                "documents": int(gates.shape[0])}


def _build(cfg: SEConfig, ctx: VariantContext) -> SqueezeExcitation:
    return SqueezeExcitation(ctx.n_layers, ctx.hidden_size, cfg.expand, cfg.reduction, cfg.kernel_size,
                             cfg.gate_init)


register(VariantSpec("se", SEConfig, _build, "squeeze-and-excitation over the last five [CLS] layers"))
