"""The variant modules: one small ``nn.Module`` per enabled variant, built from its config section.

Each module implements only the hooks it needs (``xmlbench.models.variants`` dispatches with hasattr):

* ``se``               -> ``se.SqueezeExcitation``               (transform_layers)
* ``loss-correction``  -> ``loss_correction.LossCorrection``     (candidate_logits)
* ``random-negatives`` -> ``random_negatives.RandomNegatives``   (extend_candidates)
* ``doc-rep``          -> ``doc_rep.DocRepOnDocument``           (transform_document)
                          or ``doc_rep.DocRepOnClassifier``      (discriminator_input)

Initialisation uses a private RNG stream per variant (seeded from the run's seed and the variant's name):
the global torch RNG is left exactly where it was, so enabling a variant does not change the initial
weights of the base modules built after it (generator, bottleneck, label embedding), and a variant's own
initial weights do not depend on which other variants are enabled.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from xmlbench.errors import UserError
from xmlbench.models.variants import VARIANTS
from xmlbench.models.variants.doc_rep import build_doc_rep
from xmlbench.models.variants.loss_correction import LossCorrection
from xmlbench.models.variants.random_negatives import RandomNegatives
from xmlbench.models.variants.se import SqueezeExcitation


def build(name: str, cfg, hidden_size: int, n_labels: int, n_clusters: int | None = None) -> nn.Module:
    """The module of variant ``name`` for a LightXMLConfig ``cfg``; ``n_clusters`` is None in flat mode."""
    if VARIANTS.get(name).needs_clustered and n_clusters is None:
        raise UserError(f"variant {name!r} needs clustered mode (it acts on the generator/shortlist); "
                        "add --set mode=clustered")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(variant_seed(name))
        return _construct(name, cfg, hidden_size, n_labels, n_clusters)


def variant_seed(name: str) -> int:
    """The run's seed (torch.initial_seed) mixed with a stable hash of the variant's name."""
    return (torch.initial_seed() + zlib.crc32(name.encode())) % 2**63


def _construct(name: str, cfg, hidden_size: int, n_labels: int, n_clusters: int | None) -> nn.Module:
    dim = cfg.n_layers * hidden_size  # LightXML's document vector: n_layers [CLS] vectors concatenated
    if name == "se":
        return SqueezeExcitation(cfg.n_layers, cfg.se.expand, cfg.se.reduction)
    if name == "loss-correction":
        return LossCorrection(cfg.loss_correction.weight)
    if name == "random-negatives":
        return RandomNegatives(cfg.random_negatives.count, n_labels)
    if name == "doc-rep":
        return build_doc_rep(cfg.doc_rep.placement, cfg.doc_rep.labels, dim, cfg.n_layers, cfg.dropout,
                             n_clusters, label_dim=cfg.hidden)
    raise ValueError(f"variant {name!r} is registered but has no module")
