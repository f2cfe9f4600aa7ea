"""A learned combination of document representations (variant ``doc-rep``).

DECAF (Mittal et al., WSDM 2021) and its successors represent a document by combining several views
with learned, non-negative, per-dimension weights. Here the views share LightXML's width D = n_layers * H
(last layer first, as ``layer_stack``/``mean_token_embedding`` order them):

* c (B, D): the concatenated [CLS] vectors of the last n_layers layers (LightXML's document vector);
* t (B, D): per layer, the mean of the token vectors over every attended position
  (``mean_token_embedding``), so the special tokens [CLS] and [SEP] (or the encoder's equivalents) ARE in
  the mean, as in DECAF's and Sentence-BERT's mean pooling over the attention mask; padding is excluded
  through the mask, so appending padding changes nothing;
* optionally (``doc_rep.labels``, clustered mode) l (B, D): a Bonsai-style representation of the labels
  the document's likely labels co-occur with, from label co-occurrence in the TRAINING split:

      C = rownorm(Y_c^T Y_c)   (K, K)   Y_c (N, K): 1 where a training document has a label of cluster k;
                                        row k of C: how often each cluster appears in documents with k
                                        (diagonal included; a cluster without training documents: e_k)
      q = (p C) / sum_k p_k    (B, K)   p = sigmoid(g).detach(): the document's likely clusters, spread over
                                        the clusters they co-occur with (q sums to 1: C is row-stochastic)
      l = P (q E)              (B, D)   E (K, h) learned cluster embeddings (h = ``hidden``), P: h -> D

  C is computed once in ``LightXML.prepare`` (``cluster_cooccurrence``) and kept as a buffer, so it is
  saved with the model; until then it is the identity (l is then the p-weighted mean of E). It is dense,
  K^2 floats (K = 5k clusters: 100 MB). g is detached so that this view never gives Ld a route into the
  generator head (that is what ``loss-correction`` is for, and only it).

    r = softplus(a) * c + softplus(b) * t [+ softplus(e) * l]          (element-wise, a, b, e in R^D)

softplus keeps every weight > 0; a starts at softplus^-1(1) (the [CLS] weight is 1) and b, e at
softplus^-1(0.05) (the other views start almost switched off), so training starts close to the base model
and learns how much of each view to mix in.

Placement: ``document`` applies r in ``embed`` (hook ``transform_document``): it becomes the document
vector for the generator, the discriminator and the flat classifier alike. ``classifier`` applies r only
to the discriminator's (or the flat classifier's) input (hook ``discriminator_input``), leaving the
generator on LightXML's [CLS] features; there the extra views get the model's dropout, as c already has.
The label view needs the generator's scores, which are computed FROM the document vector, so it exists
only with placement ``classifier`` in clustered mode; other combinations are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmlbench.encoders import mean_token_embedding
from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants.base import Probe, Variant, VariantContext, VariantSpec, register

PLACEMENTS = ("document", "classifier")


@dataclass(frozen=True)
class DocRepConfig:
    # "classifier" (discriminator input) or "document" (the representation); PLACEMENTS, as a type
    placement: Literal["classifier", "document"] = "classifier"
    labels: bool = False  # also combine a Bonsai-style representation of co-occurring labels
CLS_WEIGHT_INIT = 1.0  # the base model's representation at the start
EXTRA_WEIGHT_INIT = 0.05  # the added views start nearly off (> 0 so softplus still passes a gradient)


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0)."""
    return y + math.log(-math.expm1(-y))


class DocumentRepresentation(Variant):
    """r = softplus(a) * [CLS] + softplus(b) * mean tokens [+ softplus(e) * cluster view] (DECAF-style)."""

    def __init__(self, dim: int, n_layers: int, dropout: float, n_clusters: int | None = None,
                 label_dim: int = 0) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.cls_weight = nn.Parameter(torch.full((dim,), inverse_softplus(CLS_WEIGHT_INIT)))
        self.token_weight = nn.Parameter(torch.full((dim,), inverse_softplus(EXTRA_WEIGHT_INIT)))
        self.dropout = nn.Dropout(dropout)
        self.with_labels = n_clusters is not None
        if self.with_labels:
            self.label_weight = nn.Parameter(torch.full((dim,), inverse_softplus(EXTRA_WEIGHT_INIT)))
            self.cluster_embedding = nn.Parameter(torch.empty(n_clusters, label_dim))
            nn.init.xavier_uniform_(self.cluster_embedding)
            self.label_projection = nn.Linear(label_dim, dim)
            # Row-normalised cluster co-occurrence of the training labels (set by ``set_cooccurrence``).
            self.register_buffer("cooccurrence", torch.eye(n_clusters))  # (K, K)

    def set_cooccurrence(self, matrix: torch.Tensor) -> None:
        """The (K, K) row-stochastic cluster co-occurrence matrix of the training split."""
        if matrix.shape != self.cooccurrence.shape:
            raise ValueError(f"co-occurrence {tuple(matrix.shape)} for {tuple(self.cooccurrence.shape)}")
        self.cooccurrence.copy_(matrix.to(self.cooccurrence))

    def weights(self) -> dict[str, torch.Tensor]:
        """The non-negative per-dimension mixing weights, each (D,)."""
        out = {"cls": F.softplus(self.cls_weight), "tokens": F.softplus(self.token_weight)}
        if self.with_labels:
            out["labels"] = F.softplus(self.label_weight)
        return out

    def token_view(self, hidden, mask: torch.Tensor) -> torch.Tensor:
        """(B, D) mean of the non-padding token vectors of the last n_layers layers, last layer first."""
        return mean_token_embedding(hidden, mask, self.n_layers)

    def label_view(self, g: torch.Tensor) -> torch.Tensor:
        """(B, D) P (q E): the cluster embeddings weighted by q = p C / sum(p), the detached cluster
        probabilities spread over their co-occurring clusters (module docstring)."""
        p = torch.sigmoid(g.detach().float())  # (B, K): no gradient into the generator through this view
        q = (p @ self.cooccurrence) / p.sum(dim=1, keepdim=True).clamp(min=1e-6)  # (B, K)
        return self.label_projection(q.to(self.cluster_embedding.dtype) @ self.cluster_embedding)  # (B, D)

    def diagnostics(self, probe: Probe) -> dict[str, Any]:
        """The mean of each learned mixing weight vector (softplus, one per view; they start at 1 and
        0.05): how much of each view the model chose to mix in."""
        with torch.no_grad():
            return {f"weight_{view}": float(w.mean()) for view, w in self.weights().items()}

    def combine(self, doc: torch.Tensor, hidden, mask: torch.Tensor, g: torch.Tensor | None,
                drop_extra: bool) -> torch.Tensor:
        """(B, D) weighted sum of the views; ``drop_extra`` applies dropout to the added views."""
        w = self.weights()
        tokens = self.token_view(hidden, mask)  # (B, D)
        extra = [w["tokens"] * (self.dropout(tokens) if drop_extra else tokens)]
        if self.with_labels:
            labels = self.label_view(g)  # (B, D)
            extra.append(w["labels"] * (self.dropout(labels) if drop_extra else labels))
        out = w["cls"] * doc  # (B, D)
        for term in extra:
            out = out + term
        return out


class DocRepOnDocument(DocumentRepresentation):
    """Placement ``document``: the combination is the document vector for every head."""

    def transform_document(self, doc: torch.Tensor, hidden, mask: torch.Tensor) -> torch.Tensor:
        """Hook 2: (B, D) -> (B, D), before the model's dropout (which then covers every view)."""
        return self.combine(doc, hidden, mask, None, drop_extra=False)


class DocRepOnClassifier(DocumentRepresentation):
    """Placement ``classifier``: the combination feeds only the discriminator / flat classifier."""

    def discriminator_input(self, doc: torch.Tensor, state, g: torch.Tensor | None) -> torch.Tensor:
        """Hook 3: (B, D) dropped-out document vector -> (B, D) classifier input; state = (hidden, mask)."""
        hidden, mask = state
        return self.combine(doc, hidden, mask, g, drop_extra=True)


def cluster_cooccurrence(labels, label_to_cluster: np.ndarray, n_clusters: int) -> torch.Tensor:
    """(K, K) C = rownorm(Y_c^T Y_c) from a (N, L) sparse 0/1 label matrix: C[i, j] is the share of
    co-occurrences of cluster i (with itself included) that are with cluster j. Rows of clusters that no
    training document has are e_i, so their probability stays on themselves."""
    import scipy.sparse as sp

    y = sp.csr_matrix(labels, dtype=np.float64)
    to_cluster = sp.csr_matrix((np.ones(len(label_to_cluster)), (np.arange(len(label_to_cluster)),
                                                               np.asarray(label_to_cluster))),
                               shape=(len(label_to_cluster), n_clusters))
    y_c = (y @ to_cluster).astype(bool).astype(np.float64)  # (N, K): a document has the cluster or not
    counts = np.asarray((y_c.T @ y_c).todense())  # (K, K) documents holding both clusters
    totals = counts.sum(axis=1, keepdims=True)
    empty = np.flatnonzero(totals[:, 0] == 0)
    counts[empty, empty] = 1.0
    totals[empty] = 1.0
    return torch.from_numpy(counts / totals).float()


def build_doc_rep(placement: str, labels: bool, dim: int, n_layers: int, dropout: float,
                  n_clusters: int | None, label_dim: int) -> DocumentRepresentation:
    """The module for ``doc_rep.placement`` / ``doc_rep.labels``, refusing combinations with no meaning."""
    if placement not in PLACEMENTS:
        raise UserError(f"doc_rep.placement must be one of {', '.join(PLACEMENTS)} (got {placement!r})")
    if labels and n_clusters is None:
        raise UserError("doc_rep.labels needs clustered mode: the label view is built from the generator's "
                        "cluster scores (add --set mode=clustered, or set doc_rep.labels=false)")
    if labels and placement != "classifier":
        raise UserError("doc_rep.labels needs doc_rep.placement=classifier: the label view uses the "
                        "generator's scores, which are computed from the document representation itself")
    cls = DocRepOnDocument if placement == "document" else DocRepOnClassifier
    return cls(dim, n_layers, dropout, n_clusters if labels else None, label_dim)


def _build(cfg: DocRepConfig, ctx: VariantContext) -> DocumentRepresentation:
    return build_doc_rep(cfg.placement, cfg.labels, ctx.dim, ctx.n_layers, ctx.dropout, ctx.n_clusters,
                         label_dim=ctx.head_hidden)


register(VariantSpec("doc-rep", DocRepConfig, _build,
                     "DECAF-style learned non-negative combination of [CLS], mean token and (labels=true) "
                     "co-occurring-cluster representations"))
