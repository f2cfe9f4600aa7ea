"""LightXML variants: switches with their own small config, composed freely, never a copied model.

The mechanism (hooks, ``Variant``, ``VariantSpec``, ``VariantChain``) is in ``base.py``; every other
module of this package is one variant and registers itself when imported, which happens here. CLI names
use dashes (``--variants se,loss-correction``); config sections use underscores
(``--set loss_correction.weight=0.5``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import zlib
from typing import Any

import torch

from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import (
    HOOKS,
    VARIANTS,
    Probe,
    Variant,
    VariantChain,
    VariantContext,
    VariantSpec,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")


def config_fields() -> list[tuple[str, type, Any]]:
    """One config section per registered variant, for ``LightXMLConfig`` (name, type, field)."""
    return [(spec.section, spec.config_cls, dataclasses.field(default_factory=spec.config_cls))
            for _, spec in VARIANTS.items()]


def unknown_variants(names: tuple[str, ...]) -> str | None:
    """A config-time rule for ``variants``: every name registered (checked before any data is read)."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        return f"names unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS.names())})"
    return None


def check(cfg, clustered: bool) -> None:
    """Unknown names and variants that make no sense in the chosen regime are user errors."""
    for name in cfg.variants:
        spec = VARIANTS.get(name)
        if spec.needs_clustered and not clustered:
            raise UserError(
                f"variant {name!r} needs clustered mode (it acts on the generator/shortlist); "
                "add --set mode=clustered"
            )
    for name, other, why in refused_pairs(cfg.variants):
        raise UserError(f"variants {name!r} and {other!r} do not combine: {why}")
    if len(set(cfg.variants)) != len(cfg.variants):
        raise UserError(f"variants listed twice: {','.join(cfg.variants)}")


def refused_pairs(names) -> list[tuple[str, str, str]]:
    """(variant, other, why) for every enabled pair that one of the two refuses."""
    out = []
    for name in names:
        for other, why in VARIANTS.get(name).refuses:
            if other in names:
                out.append((name, other, why))
    return out


def build(cfg, ctx: VariantContext) -> VariantChain:
    """The enabled variants' modules, in the order listed.

    Each is initialised from a private RNG stream (the run's seed mixed with the variant's name): the
    global torch RNG is left exactly where it was, so enabling a variant does not change the initial
    weights of the base modules built after it, and a variant's own weights do not depend on which
    other variants are enabled."""
    check(cfg, clustered=ctx.n_clusters is not None)
    chain = VariantChain()
    for name in cfg.variants:
        spec = VARIANTS.get(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(variant_seed(spec.name))
            chain[spec.name] = spec.build(getattr(cfg, spec.section), ctx)
    return chain


def variant_seed(name: str) -> int:
    """The run's seed (torch.initial_seed) mixed with a stable hash of the variant's name."""
    return (torch.initial_seed() + zlib.crc32(name.encode())) % 2**63


__all__ = ["HOOKS", "VARIANTS", "Probe", "Variant", "VariantChain", "VariantContext", "VariantSpec", "build",
           "check", "config_fields", "refused_pairs", "register", "unknown_variants", "variant_seed"]
