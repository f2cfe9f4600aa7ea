"""Random negative labels added to each training shortlist (variant ``random-negatives``).

Astec (Dahiya et al., "DeepXML", WSDM 2021) trains its label classifiers on a shortlist of hard negatives
plus uniformly random negatives, so that the classifiers also see labels the shortlist would never
propose. In LightXML the shortlist is the labels of the top-b clusters of the generator; once the
generator has settled, the same negatives come back every epoch. This variant appends, during training
only, R = ``random_negatives.count`` random negative LABELS to every document's shortlist:

* drawn per document, independently, uniformly over all L labels, without repetition within a row;
* never a positive of the document, never a label whose cluster is among the row's ``top`` clusters (the
  current candidates), never a label already in the shortlist (which also covers the missing positives
  that ``_insert_missing_positives`` put there);
* if a row has fewer than R such labels, the remaining slots are -1 (padding, ignored by the loss).

At inference (``self.training`` False) the shortlist is returned unchanged.

Sampling is vectorised: draw more labels than needed per row, reject excluded labels and repeats with
membership tests, keep the first R accepted per row in draw order (a uniformly random R-subset of the
allowed labels). Rows that fall short are resampled exactly: random keys over all labels, excluded labels
set to +inf, the R smallest kept. Everything uses the global torch RNG, so checkpoints restore the stream
and a resumed run draws the same negatives as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch

from xmlbench.config import Range
from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import Probe, Variant, VariantContext, VariantSpec, register


@dataclass(frozen=True)
class RandomNegativesConfig:
    # random negative labels added per document during training; each adds batch x hidden floats to the
    # candidate embeddings, so beyond 10,000 a step's memory grows past any real use
    count: Annotated[int, Range(0, 10_000)] = 32

OVERSAMPLE = 1.5  # draws per needed label, on top of the expected rejection rate
MIN_EXTRA_DRAWS = 16  # slack so small R still rarely falls short


class RandomNegatives(Variant):
    """Appends ``count`` random negative labels per row to the training shortlist (Astec-style)."""

    def __init__(self, count: int, n_labels: int) -> None:
        super().__init__()
        if count < 0:
            raise UserError(f"random_negatives.count must be >= 0 (got {count})")
        self.count = int(count)
        self.n_labels = int(n_labels)

    def extra_repr(self) -> str:
        return f"count={self.count}"

    def extend_candidates(self, cands: torch.Tensor, top: torch.Tensor, positives: torch.Tensor,
                          label_to_cluster: torch.Tensor) -> torch.Tensor:
        """Hook 5: (B, C) shortlist -> (B, C + R) in training; unchanged in eval mode."""
        if not self.training or self.count == 0:
            return cands
        negatives = sample_negatives(self.count, self.n_labels, cands, top, positives, label_to_cluster)
        return torch.cat([cands, negatives], dim=1)  # (B, C + R)

    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """Negatives per document, and how often they were hard, on validation batches.

        Each document gets its training shortlist (true clusters forced, as in training) and ``count``
        random negatives drawn as in training (RNG restored afterwards); the net scores them in eval mode.
        A negative is hard when its candidate logit (the one Ld trains, after every variant's
        ``candidate_logits``) exceeds the lowest logit among its document's true labels.
        ``per_document``: valid negatives drawn per document (``count`` unless too few labels are
        allowed); ``hard_share``: hard negatives / negatives, in [0, 1]."""
        net = probe.net
        drawn = hard = documents = 0
        with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(net)):
            for ids, mask, positives in probe.batches():
                doc, state = net.embed(ids, mask)
                g = net.generator(doc)
                cands, top = net.candidates(g, positives)
                negatives = sample_negatives(self.count, self.n_labels, cands, top, positives,
                                             net.label_to_cluster)  # (B, R)
                neg_logits = net.discriminate(doc, state, g, negatives).float()  # (B, R)
                pos_logits = net.discriminate(doc, state, g, positives).float()  # (B, P)
                weakest = pos_logits.masked_fill(positives < 0, math.inf).min(dim=1, keepdim=True).values
                valid = negatives >= 0
                drawn += int(valid.sum())
                hard += int((valid & (neg_logits > weakest)).sum())
                documents += ids.shape[0]
        return {"count": self.count, "per_document": drawn / max(documents, 1),
                "hard_share": hard / drawn if drawn else 0.0}


def _cuda_devices(net) -> list[int]:
    return sorted({p.device.index for p in net.parameters() if p.device.type == "cuda"})


def sample_negatives(count: int, n_labels: int, cands: torch.Tensor, top: torch.Tensor,
                     positives: torch.Tensor, label_to_cluster: torch.Tensor) -> torch.Tensor:
    """(B, count) distinct random labels per row, none excluded (see the module docstring); -1 pads rows
    with fewer than ``count`` allowed labels."""
    batch = cands.shape[0]
    n_draws = _draws_per_row(count, n_labels, cands.shape[1] + positives.shape[1])
    out = torch.full((batch, count), -1, dtype=torch.long, device=cands.device)
    if n_draws >= n_labels:  # few labels: the exact sampler is as cheap as rejection
        short = torch.arange(batch, device=cands.device)
    else:
        draws = torch.randint(n_labels, (batch, n_draws), device=cands.device)  # (B, m)
        ok = _allowed(draws, cands, top, positives, label_to_cluster) & _first_occurrence(draws)  # (B, m)
        rank = ok.long().cumsum(dim=1)  # (B, m): 1-based rank among the accepted draws of the row
        keep = ok & (rank <= count)
        rows, cols = keep.nonzero(as_tuple=True)
        out[rows, rank[rows, cols] - 1] = draws[rows, cols]
        short = (rank[:, -1] < count).nonzero().flatten()
    if short.numel():
        out[short] = _exact_sample(count, n_labels, cands[short], top[short], positives[short],
                                   label_to_cluster)
    return out


def _draws_per_row(count: int, n_labels: int, n_excluded_at_most: int) -> int:
    """Enough uniform draws that a row rarely ends up with fewer than ``count`` accepted labels."""
    accept = max(1.0 - n_excluded_at_most / max(n_labels, 1), 1e-3)  # lower bound on the acceptance rate
    return math.ceil(OVERSAMPLE * count / accept) + MIN_EXTRA_DRAWS


def _allowed(labels: torch.Tensor, cands: torch.Tensor, top: torch.Tensor, positives: torch.Tensor,
             label_to_cluster: torch.Tensor) -> torch.Tensor:
    """(B, m) bool: the label is neither a positive, nor in the shortlist, nor in one of the top clusters."""
    in_top = row_member(label_to_cluster[labels], top)  # (B, m)
    return ~(in_top | row_member(labels, positives) | row_member(labels, cands))


def row_member(values: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """(B, m) bool: whether values[b, j] is in row b of ``sets`` (-1 entries of ``sets`` are padding).

    Sort + binary search, O(m log n) per row instead of the (B, m, n) broadcast comparison."""
    big = torch.iinfo(torch.long).max
    ordered = torch.where(sets >= 0, sets.long(), big).sort(dim=1).values  # (B, n)
    idx = torch.searchsorted(ordered, values.long().contiguous()).clamp(max=ordered.shape[1] - 1)  # (B, m)
    return (ordered.gather(1, idx) == values) & (values >= 0)


def _first_occurrence(draws: torch.Tensor) -> torch.Tensor:
    """(B, m) bool: False for a draw equal to an earlier draw of the same row (repeats are rejected)."""
    ordered, order = draws.sort(dim=1, stable=True)  # stable: the earliest copy comes first among equals
    repeat_sorted = torch.zeros_like(ordered, dtype=torch.bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = torch.zeros_like(repeat_sorted).scatter_(1, order, repeat_sorted)  # back to draw order
    return ~repeat


def _exact_sample(count: int, n_labels: int, cands: torch.Tensor, top: torch.Tensor, positives: torch.Tensor,
                  label_to_cluster: torch.Tensor) -> torch.Tensor:
    """(n, count) uniform R-subset of each row's allowed labels via random keys; O(n x L), used rarely."""
    n, device = cands.shape[0], cands.device
    n_clusters = max(int(label_to_cluster.max()), int(top.max())) + 1
    top_mask = torch.zeros(n, n_clusters, dtype=torch.bool, device=device)
    top_mask.scatter_(1, top, True)
    excluded = top_mask[:, label_to_cluster]  # (n, L): labels of the top clusters
    excluded = torch.cat([excluded, torch.zeros(n, 1, dtype=torch.bool, device=device)], dim=1)  # (n, L+1)
    for ids in (positives, cands):  # -1 padding goes to the spare column L
        excluded.scatter_(1, torch.where(ids >= 0, ids.long(), n_labels), True)
    keys = torch.rand(n, n_labels, device=device).masked_fill(excluded[:, :n_labels], math.inf)  # (n, L)
    k = min(count, n_labels)
    values, picked = keys.topk(k, dim=1, largest=False)  # (n, k)
    picked = picked.masked_fill(torch.isinf(values), -1)
    if k < count:
        picked = torch.cat([picked, picked.new_full((n, count - k), -1)], dim=1)
    return picked


def _build(cfg: RandomNegativesConfig, ctx: VariantContext) -> RandomNegatives:
    return RandomNegatives(cfg.count, ctx.n_labels)


register(VariantSpec("random-negatives", RandomNegativesConfig, _build,
                     "Astec-style random negative labels added to each training shortlist", needs_clustered=True))
