"""What a LightXML variant is: a module with identity hooks, a config section, one registration.

``LightXMLNet`` calls every hook at a marked point, through ``VariantChain``, which folds the enabled
variants in the order the user listed them:

1. ``transform_layers``       (B, n_layers, H) [CLS] stack -> same shape
2. ``transform_document``     (B, D) document vector -> (B, D), before dropout
3. ``discriminator_input``    (B, D) -> (B, D') input of the discriminator / flat classifier
   (with ``discriminator_input_dim`` D -> D', read once when the heads are built)
4. ``candidate_logits``       (B, C) discriminator logits, given the candidates' cluster logits
5. ``extend_candidates``      (B, C) training shortlist -> (B, C + R)

One more hook reports rather than transforms: ``diagnostics(probe)`` -> a JSON-ready dict of what the
variant did (gates, mixing weights, gradient shares, ...), computed after fit on validation batches that
``Probe`` hands out; ``VariantChain.diagnostics`` collects ``{name: dict}`` for the run record.

Every hook of ``Variant`` returns its input unchanged (``diagnostics``: {}), so a variant overrides only
the hooks it uses, and with no variant enabled the model is exactly the base LightXML (tested bitwise).

A variant is one file in this package holding its config dataclass, its ``Variant`` subclass and a call
``register(VariantSpec(...))``; the package imports every file, so adding one edits nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xmlbench.registry import Registry


@dataclass(frozen=True)
class VariantContext:
    """The shapes a variant's module is built for."""

    n_layers: int  # [CLS] layers concatenated (LightXML: 5)
    hidden_size: int  # H, the encoder's width
    n_labels: int
    n_clusters: int | None  # K in clustered mode, None in flat mode
    head_hidden: int  # h, the discriminator's bottleneck width
    dropout: float  # the model's dropout on the document vector
    n_states: int = 0  # hidden states the encoder returns (embeddings + one per layer); 0: unknown
    cls_position: str = "first"  # where the classification token sits ('last': XLNet)

    @property
    def dim(self) -> int:
        """D = n_layers * H, LightXML's document vector."""
        return self.n_layers * self.hidden_size


@dataclass(frozen=True)
class Probe:
    """What ``Variant.diagnostics`` may look at: the trained ``LightXMLNet`` (its ``cls_layers``, ``embed``,
    ``generator``, ``candidates``, ``discriminate``, ``clustered_losses``) and the validation batches.

    ``batches()`` yields (input_ids (B, T), attention_mask (B, T), positives (B, P) -1-padded) on the net's
    device, a fresh iterator each call, at most a few hundred documents in all. The net is in eval mode; a
    variant that switches modes, or touches gradients or RNG state, puts them back (see ``train_like``)."""

    net: nn.Module
    batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]


@contextmanager
def train_like(net: nn.Module):
    """``net`` in training mode (dropout, batch statistics), everything put back on exit: its mode, its
    buffers (BatchNorm's running statistics move in training mode) and the CPU/CUDA RNG streams (dropout
    and sampling draw from them), so diagnostics change nothing the test predictions depend on.
    Gradients are the caller's: use ``torch.autograd.grad``, which leaves every ``.grad`` alone."""
    was_training = net.training
    buffers = {name: b.detach().clone() for name, b in net.named_buffers()}
    devices = sorted({p.device.index for p in net.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        net.train()
        try:
            yield net
        finally:
            net.train(was_training)
            with torch.no_grad():
                for name, b in net.named_buffers():
                    b.copy_(buffers[name])


class Variant(nn.Module):
    """Identity hooks; a variant overrides those it needs (shapes as in the module docstring)."""

    def transform_layers(self, layers: torch.Tensor) -> torch.Tensor:
        return layers

    def transform_document(self, doc: torch.Tensor, hidden, mask: torch.Tensor) -> torch.Tensor:
        return doc

    def document_dim(self, dim: int) -> int:
        """The width of ``transform_document``'s output, given its input's (read when the heads are built)."""
        return dim

    def discriminator_input_dim(self, dim: int) -> int:
        return dim

    def discriminator_input(self, doc: torch.Tensor, state, g: torch.Tensor | None) -> torch.Tensor:
        return doc

    def candidate_logits(self, d: torch.Tensor, g_of_cand: torch.Tensor) -> torch.Tensor:
        return d

    def extend_candidates(self, cands: torch.Tensor, top: torch.Tensor, positives: torch.Tensor,
                          label_to_cluster: torch.Tensor) -> torch.Tensor:
        return cands

    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """What this variant did, as JSON-ready numbers (after fit, on validation batches); {}: nothing."""
        return {}


HOOKS = ("transform_layers", "transform_document", "document_dim", "discriminator_input_dim", "discriminator_input",
         "candidate_logits", "extend_candidates",
         "diagnostics")


@dataclass(frozen=True)
class VariantSpec:
    """A registered variant: CLI name (dashes), config section (underscores), how to build its module."""

    name: str
    config_cls: type  # frozen dataclass: the section ``--set SECTION.key=value`` sets
    build: Callable[[Any, VariantContext], Variant]  # (its config section, shapes) -> module
    description: str
    needs_clustered: bool = False  # acts on the generator or the shortlist: refused in flat mode
    # (other variant, why): combinations that make no sense, refused when both are enabled
    refuses: tuple[tuple[str, str], ...] = ()

    @property
    def section(self) -> str:
        return self.name.replace("-", "_")


VARIANTS: Registry[VariantSpec] = Registry("variant")


def register(spec: VariantSpec) -> VariantSpec:
    VARIANTS.register(spec.name, spec)
    return spec


class VariantChain(nn.ModuleDict):
    """The enabled variants, keyed by name; each hook is the composition of theirs, in order."""

    def _fold(self, hook: str, x, *args):
        for variant in self.values():
            x = getattr(variant, hook)(x, *args)
        return x

    def transform_layers(self, layers: torch.Tensor) -> torch.Tensor:
        return self._fold("transform_layers", layers)

    def transform_document(self, doc: torch.Tensor, hidden, mask: torch.Tensor) -> torch.Tensor:
        return self._fold("transform_document", doc, hidden, mask)

    def document_dim(self, dim: int) -> int:
        return self._fold("document_dim", dim)

    def discriminator_input_dim(self, dim: int) -> int:
        return self._fold("discriminator_input_dim", dim)

    def discriminator_input(self, doc: torch.Tensor, state, g: torch.Tensor | None) -> torch.Tensor:
        return self._fold("discriminator_input", doc, state, g)

    def candidate_logits(self, d: torch.Tensor, g_of_cand: torch.Tensor) -> torch.Tensor:
        return self._fold("candidate_logits", d, g_of_cand)

    def extend_candidates(self, cands: torch.Tensor, top: torch.Tensor, positives: torch.Tensor,
                          label_to_cluster: torch.Tensor) -> torch.Tensor:
        return self._fold("extend_candidates", cands, top, positives, label_to_cluster)

    def diagnostics(self, probe: Probe) -> dict[str, dict[str, Any]]:
        """{variant name: its diagnostics}, every enabled variant listed (an empty dict if it has none)."""
        return {name: variant.diagnostics(probe) for name, variant in self.items()}
