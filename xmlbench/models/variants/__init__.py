"""LightXML variants: switches with their own small config, composed freely, never a copied model.

Each variant is registered in ``VARIANTS`` and plugs into ``LightXMLNet`` at one or more of these points:

1. ``transform_layers``      (B, n_layers, H) [CLS] stack -> same shape           (se)
2. ``transform_document``    (B, D) document vector -> (B, D)                      (doc-rep, placement document)
3. ``discriminator_input``   (B, D) -> (B, D') input of the classifier/bottleneck  (doc-rep, placement classifier)
4. ``candidate_logits``      (B, C) discriminator logits, with the cluster logits  (loss-correction)
5. ``extend_candidates``     (B, C) training shortlist -> (B, C + R)               (random-negatives)

With no variant enabled every hook returns its input unchanged, so the base model is exactly LightXML.
CLI names use dashes (``--variants se,loss-correction``); config sections use underscores
(``--set loss_correction.weight=0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from xmlbench.errors import UserError
from xmlbench.registry import Registry


@dataclass(frozen=True)
class SEConfig:
    expand: int = 32  # channels after the expanding convolution (> 5: 5 -> 2 is too small to be expressive)
    reduction: int = 8  # bottleneck channels


@dataclass(frozen=True)
class LossCorrectionConfig:
    weight: float = 1.0  # how much of the cluster's generator logit enters each candidate's logit


@dataclass(frozen=True)
class RandomNegativesConfig:
    count: int = 32  # random negative labels added per document during training


@dataclass(frozen=True)
class DocRepConfig:
    placement: str = "classifier"  # "classifier" (discriminator input) or "document" (the representation)
    labels: bool = False  # also combine a Bonsai-style representation of co-occurring labels


@dataclass(frozen=True)
class VariantSpec:
    name: str
    section: str  # config section name
    needs_clustered: bool
    description: str


VARIANTS: Registry[VariantSpec] = Registry("variant")
for _spec in (
    VariantSpec("se", "se", False, "squeeze-and-excitation over the last five [CLS] layers"),
    VariantSpec("loss-correction", "loss_correction", True,
                "discriminator logits include the cluster's generator logit, so Ld reaches the generator"),
    VariantSpec("random-negatives", "random_negatives", True,
                "Astec-style random negative labels added to each training shortlist"),
    VariantSpec("doc-rep", "doc_rep", False,
                "DECAF-style learned non-negative combination of [CLS] and mean token representations"),
):
    VARIANTS.register(_spec.name, _spec)


def check(cfg, clustered: bool) -> None:
    """Unknown names and variants that make no sense in the chosen regime are user errors."""
    for name in cfg.variants:
        spec = VARIANTS.get(name)
        if spec.needs_clustered and not clustered:
            raise UserError(
                f"variant {name!r} needs clustered mode (it acts on the generator/shortlist); "
                "add --set mode=clustered"
            )
    if len(set(cfg.variants)) != len(cfg.variants):
        raise UserError(f"variants listed twice: {','.join(cfg.variants)}")


def build(cfg, hidden_size: int, n_labels: int, clustered: bool,
          n_clusters: int | None = None) -> nn.ModuleDict:
    """The enabled variants' modules, keyed by variant name (``n_clusters``: K in clustered mode)."""
    from xmlbench.models.variants import modules

    k = n_clusters if clustered else None
    return nn.ModuleDict({name: modules.build(name, cfg, hidden_size, n_labels, k) for name in cfg.variants})


def transform_layers(variants: nn.ModuleDict, layers: torch.Tensor) -> torch.Tensor:
    for v in variants.values():
        layers = v.transform_layers(layers) if hasattr(v, "transform_layers") else layers
    return layers


def transform_document(variants: nn.ModuleDict, doc: torch.Tensor, hidden, mask) -> torch.Tensor:
    for v in variants.values():
        doc = v.transform_document(doc, hidden, mask) if hasattr(v, "transform_document") else doc
    return doc


def discriminator_input_dim(variants: nn.ModuleDict, dim: int) -> int:
    for v in variants.values():
        dim = v.discriminator_input_dim(dim) if hasattr(v, "discriminator_input_dim") else dim
    return dim


def discriminator_input(variants: nn.ModuleDict, doc: torch.Tensor, state, g) -> torch.Tensor:
    for v in variants.values():
        doc = v.discriminator_input(doc, state, g) if hasattr(v, "discriminator_input") else doc
    return doc


def candidate_logits(variants: nn.ModuleDict, d: torch.Tensor, g_of_cand: torch.Tensor) -> torch.Tensor:
    for v in variants.values():
        d = v.candidate_logits(d, g_of_cand) if hasattr(v, "candidate_logits") else d
    return d


def extend_candidates(variants: nn.ModuleDict, cands, top, positives, label_to_cluster) -> torch.Tensor:
    for v in variants.values():
        if hasattr(v, "extend_candidates"):
            cands = v.extend_candidates(cands, top, positives, label_to_cluster)
    return cands
