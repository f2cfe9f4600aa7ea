"""Turning an encoder's hidden states into one document vector (LightXML's multi-layer [CLS] features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CLS_POSITIONS = ("first", "last")


def classification_token_index(attention_mask: Tensor, cls_position: str = "first") -> Tensor:
    """Index (B,) of the classification token: the first or the last attended position of each row.

    Reading it off the mask makes both padding sides work: with right padding the first attended token is
    position 0 (BERT's [CLS]); XLNet's trailing <cls> is position -1 with left padding and the last
    non-padding position with right padding.
    """
    if cls_position not in CLS_POSITIONS:
        raise ValueError(f"cls_position must be one of {CLS_POSITIONS}, not {cls_position!r}")
    attended = attention_mask != 0
    seq_len = attended.shape[1]
    if cls_position == "first":
        return attended.int().argmax(dim=1)  # argmax returns the first maximum
    return seq_len - 1 - attended.flip(dims=[1]).int().argmax(dim=1)


def _last_layers(hidden_states: Sequence[Tensor], n_layers: int) -> list[Tensor]:
    """The last ``n_layers`` hidden layers, last layer first (LightXML's order)."""
    if not 1 <= n_layers <= len(hidden_states):
        raise ValueError(f"n_layers={n_layers} but the encoder returned {len(hidden_states)} hidden states")
    return [hidden_states[-k] for k in range(1, n_layers + 1)]


def layer_stack(
    hidden_states: Sequence[Tensor], attention_mask: Tensor, n_layers: int = 5, cls_position: str = "first"
) -> Tensor:
    """(B, n_layers, H): the classification-token vector of each of the last ``n_layers`` layers."""
    index = classification_token_index(attention_mask, cls_position).to(hidden_states[-1].device)
    rows = torch.arange(index.shape[0], device=index.device)
    return torch.stack([layer[rows, index] for layer in _last_layers(hidden_states, n_layers)], dim=1)


def cls_embedding(
    hidden_states: Sequence[Tensor], attention_mask: Tensor, n_layers: int = 5, cls_position: str = "first"
) -> Tensor:
    """(B, n_layers*H): the classification-token vectors of the last ``n_layers`` layers, concatenated
    last layer first (hidden_states[-1], hidden_states[-2], ...), as LightXML does."""
    return layer_stack(hidden_states, attention_mask, n_layers, cls_position).flatten(start_dim=1)


def mean_token_embedding(
    hidden_states: Sequence[Tensor], attention_mask: Tensor, n_layers: int = 5
) -> Tensor:
    """(B, n_layers*H): per layer, the mean over non-padding tokens; layers concatenated last first."""
    layers = _last_layers(hidden_states, n_layers)
    weights = (attention_mask != 0).to(device=layers[0].device, dtype=layers[0].dtype).unsqueeze(-1)
    counts = weights.sum(dim=1).clamp(min=1)  # an all-padding row gives zeros, not NaN
    return torch.cat([(layer * weights).sum(dim=1) / counts for layer in layers], dim=1)
