"""LightXML (Jiang et al., AAAI 2021): transformer encoder + label clusters + generator and discriminator
with dynamic negative sampling. One module serves both regimes through its config:

* flat: one linear layer over all labels, BCE (eurlex4k, wiki31k, amazoncat13k);
* clustered: generator over K label clusters (Lg, BCE on cluster targets); the top-b clusters of the
  DETACHED generator scores, with true clusters forced first during training, give the candidate labels;
  the discriminator scores candidates by dot(label embedding, bottleneck(x)) (Ld, BCE on candidates);
  loss = Lg + Ld; inference score = sigmoid(d) * sigmoid(g of the label's cluster), top 100.

Gradient routing of the original (tested): the generator head learns from Lg only (candidates come from
detached scores, and g does not enter Ld), the discriminator from Ld only, the encoder from both.

Variants plug in at four marked points (see ``xmlbench.models.lightxml.variants``); with every switch off this is
exactly the base model.
"""

from __future__ import annotations

from dataclasses import dataclass, make_dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmlbench.config import Count, Range, Rule, Seed
from xmlbench.data.dataset import Dataset
from xmlbench.encoders import layer_stack
from xmlbench.engine.batches import Batch
from xmlbench.errors import UserError
from xmlbench.models.base import FitContext
from xmlbench.models.lightxml import variants as V
from xmlbench.models.neural import NeuralConfig, NeuralModel, Width
from xmlbench.paths import cache_dir

CLUSTERED_ABOVE = 100_000  # mode "auto" on datasets without a manifest: clustered above this many labels


@dataclass(frozen=True)
class LightXMLOptions(NeuralConfig):
    """LightXML's own options; ``LightXMLConfig`` adds one section per registered variant."""

    mode: Literal["auto", "flat", "clustered"] = "auto"  # auto: the dataset manifest's regime
    # [CLS] of the last n_layers hidden layers, concatenated; at most the encoder's (checked when loaded)
    n_layers: Count = 5
    hidden: Width = 300  # discriminator bottleneck h (400 amazon670k, 500 wiki500k)
    top_b: Count = 32  # clusters kept by dynamic negative sampling (75 amazon670k, 32 wiki500k)
    leaf_size: Annotated[int, Range(2)] = 100  # maximum labels per cluster (one label per leaf: no tree)
    cluster_seed: Seed = 0  # the three seeds of the original's large-dataset ensemble: 0, 1, 2
    tfidf_features: Count = 100_000  # vocabulary of the TF-IDF label features used for clustering
    variants: Annotated[tuple[str, ...], Rule(V.unknown_variants)] = ()


# The variant sections come from the registry, so a new variant file needs no edit here.
LightXMLConfig = make_dataclass("LightXMLConfig", V.config_fields(), bases=(LightXMLOptions,), frozen=True)
LightXMLConfig.__module__ = __name__
LightXMLConfig.__doc__ = "LightXML's options plus one config section per registered variant (``--set se.expand=32``)."


class LightXMLNet(nn.Module):
    def __init__(self, encoder: nn.Module, hidden_size: int, cls_position: str, n_labels: int,
                 cfg: LightXMLConfig, clusters: tuple[np.ndarray, np.ndarray] | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.cls_position = cls_position
        self.n_labels = n_labels
        n_clusters = clusters[1].shape[0] if clusters is not None else None
        self.variants = V.build(cfg, V.VariantContext(cfg.n_layers, hidden_size, n_labels, n_clusters, cfg.hidden,
                                                      cfg.dropout))
        dim = cfg.n_layers * hidden_size
        self.dropout = nn.Dropout(cfg.dropout)
        if clusters is None:
            self.classifier = nn.Linear(self.variants.discriminator_input_dim(dim), n_labels)
            return
        label_to_cluster, cluster_labels = clusters
        self.register_buffer("label_to_cluster", torch.as_tensor(label_to_cluster, dtype=torch.long))
        self.register_buffer("cluster_labels", torch.as_tensor(cluster_labels, dtype=torch.long))  # (K, M)
        n_clusters = cluster_labels.shape[0]
        self.generator = nn.Linear(dim, n_clusters)
        self.bottleneck = nn.Linear(self.variants.discriminator_input_dim(dim), cfg.hidden)
        self.label_embedding = nn.Embedding(n_labels, cfg.hidden)
        nn.init.xavier_uniform_(self.label_embedding.weight)

    @property
    def clustered(self) -> bool:
        return hasattr(self, "generator")

    # ------------------------------------------------------------------------------ text embedding
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(B, D) document vector, and the encoder output for variants that use token states."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states
        layers = layer_stack(hidden, attention_mask, self.cfg.n_layers, self.cls_position)  # (B, 5, H)
        layers = self.variants.transform_layers(layers)  # hook 1 (se)
        doc = layers.flatten(start_dim=1)  # (B, 5H)
        doc = self.variants.transform_document(doc, hidden, attention_mask)  # hook 2 (doc-rep, document)
        return self.dropout(doc), (hidden, attention_mask)

    # ------------------------------------------------------------------------------ flat regime
    def flat_logits(self, doc: torch.Tensor, state) -> torch.Tensor:
        return self.classifier(self.variants.discriminator_input(doc, state, None))  # hook 3; (B, L)

    def flat_loss(self, doc: torch.Tensor, state, positives: torch.Tensor) -> torch.Tensor:
        logits = self.flat_logits(doc, state)  # (B, L)
        return F.binary_cross_entropy_with_logits(logits, dense_targets(positives, self.n_labels, logits.dtype))

    # ------------------------------------------------------------------------------ clustered regime
    def candidates(self, g: torch.Tensor, positives: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic negative sampling: labels of the top-b clusters of the detached generator scores.

        Training (``positives`` given): true clusters are forced first by adding their indicator to the
        sigmoid scores; when a document has more than b positive clusters, its missing positive labels
        replace the lowest-ranked negative candidates. Returns (candidates (B, C) with -1 padding, the
        top clusters (B, b))."""
        b = min(self.cfg.top_b, g.shape[1])
        scores = torch.sigmoid(g.detach().float())
        if positives is not None:
            scores = scores + cluster_targets(positives, self.label_to_cluster, g.shape[1], scores.dtype)
        top = scores.topk(b, dim=1).indices  # (B, b)
        cands = self.cluster_labels[top].flatten(start_dim=1)  # (B, b*M)
        if positives is not None:
            cands = _insert_missing_positives(cands, top, positives, self.label_to_cluster)
        return cands, top

    def discriminate(self, doc: torch.Tensor, state, g: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """(B, C) discriminator logits of the candidates; O(batch x candidates x hidden)."""
        x = self.variants.discriminator_input(doc, state, g)  # hook 3 (doc-rep, classifier)
        z = self.bottleneck(x)  # (B, h)
        emb = self.label_embedding(cands.clamp(min=0))  # (B, C, h)
        d = torch.einsum("bch,bh->bc", emb, z)  # (B, C)
        g_of_cand = g.gather(1, self.label_to_cluster[cands.clamp(min=0)])  # (B, C), not detached
        return self.variants.candidate_logits(d, g_of_cand)  # hook 4 (loss-correction)

    def clustered_loss(self, doc: torch.Tensor, state, positives: torch.Tensor) -> torch.Tensor:
        g = self.generator(doc)  # (B, K)
        loss_g = F.binary_cross_entropy_with_logits(
            g, cluster_targets(positives, self.label_to_cluster, g.shape[1], g.dtype))
        cands, top = self.candidates(g, positives)
        cands = self.variants.extend_candidates(cands, top, positives, self.label_to_cluster)  # hook 5
        logits = self.discriminate(doc, state, g, cands)
        valid = cands >= 0
        targets = is_member(cands, positives).to(logits.dtype)
        loss_d = F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
        return loss_g + loss_d

    def clustered_topk(self, doc: torch.Tensor, state, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator(doc)
        cands, _ = self.candidates(g, None)
        logits = self.discriminate(doc, state, g, cands).float()
        g_of_cand = g.float().gather(1, self.label_to_cluster[cands.clamp(min=0)])
        score = torch.sigmoid(logits) * torch.sigmoid(g_of_cand)
        score = score.masked_fill(cands < 0, -1.0)
        k = min(k, cands.shape[1])
        top_scores, pos = score.topk(k, dim=1)
        ids = cands.gather(1, pos).masked_fill(top_scores < 0, -1)
        return top_scores, ids

    def forward(self, input_ids, attention_mask, positives):  # the training loss
        doc, state = self.embed(input_ids, attention_mask)
        if self.clustered:
            return self.clustered_loss(doc, state, positives)
        return self.flat_loss(doc, state, positives)


def dense_targets(positives: torch.Tensor, n: int, dtype) -> torch.Tensor:
    """(B, n) 0/1 targets from -1-padded positive ids (flat regime and cluster targets only)."""
    out = torch.zeros(positives.shape[0], n + 1, dtype=dtype, device=positives.device)
    out.scatter_(1, torch.where(positives >= 0, positives, n), 1.0)
    return out[:, :n]


def cluster_targets(positives: torch.Tensor, label_to_cluster: torch.Tensor, n_clusters: int, dtype):
    clusters = torch.where(positives >= 0, label_to_cluster[positives.clamp(min=0)], -1)
    return dense_targets(clusters, n_clusters, dtype)


def is_member(cands: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: whether each candidate is among the row's positives (sorted search, O(C log P))."""
    big = torch.iinfo(torch.long).max
    pos = torch.where(positives >= 0, positives, big).sort(dim=1).values
    idx = torch.searchsorted(pos, cands.contiguous()).clamp(max=pos.shape[1] - 1)
    return (pos.gather(1, idx) == cands) & (cands >= 0)


def _insert_missing_positives(cands, top, positives, label_to_cluster) -> torch.Tensor:
    """Positives whose cluster is not among the top-b replace the last negative candidates of their row."""
    pos_clusters = label_to_cluster[positives.clamp(min=0)]
    covered = (pos_clusters.unsqueeze(-1) == top.unsqueeze(1)).any(-1)  # (B, P)
    missing = (positives >= 0) & ~covered
    rows = torch.nonzero(missing.any(1)).flatten().tolist()
    if not rows:
        return cands
    cands = cands.clone()
    member = is_member(cands, positives)
    for r in rows:  # rare: only documents with more than b positive clusters
        want = positives[r][missing[r]]
        slots = torch.nonzero((cands[r] >= 0) & ~member[r]).flatten()
        n = min(len(want), len(slots))
        if n:
            cands[r, slots[len(slots) - n :]] = want[:n]
    return cands


class LightXML(NeuralModel):
    name = "lightxml"

    def __init__(self, config: LightXMLConfig, dataset: Dataset) -> None:
        self.mode = resolve_mode(config, dataset)
        self.clusters: tuple[np.ndarray, np.ndarray] | None = None
        V.check(config, clustered=self.mode == "clustered")
        super().__init__(config, dataset)

    def check_encoder_fits(self) -> None:
        super().check_encoder_fits()
        states = self.encoder.n_layers + 1  # the embeddings' output, then one per transformer layer
        if self.config.n_layers > states:
            raise UserError(f"config key 'n_layers' is {self.config.n_layers} but encoder "
                            f"{self.encoder.name!r} has {self.encoder.n_layers} layers ({states} hidden "
                            "states with the embeddings)")

    @classmethod
    def config_cls(cls) -> type:
        return LightXMLConfig

    def build_net(self, dataset: Dataset) -> nn.Module:
        clusters = self.clusters
        if self.mode == "clustered" and clusters is None:
            # Placeholder shapes until ``prepare`` clusters the labels (or a checkpoint supplies them).
            clusters = _provisional_clusters(dataset.n_labels, self.config.leaf_size)
        return LightXMLNet(self.encoder.model, self.encoder.hidden_size, self.encoder.cls_position,
                           dataset.n_labels, self.config, clusters)

    def prepare(self, ctx: FitContext) -> None:
        if self.mode != "clustered":
            return
        self.clusters = cluster_labels_for(ctx, self.config)
        self._set_clusters(*self.clusters)

    def _set_clusters(self, label_to_cluster: np.ndarray, cluster_labels: np.ndarray) -> None:
        state_before = self.net.state_dict()
        rebuilt = LightXMLNet(self.encoder.model, self.encoder.hidden_size, self.encoder.cls_position,
                              self.n_labels, self.config, (label_to_cluster, cluster_labels))
        # Keep every already-initialised weight whose shape did not change (the encoder, bottleneck,
        # label embedding, variants): only the generator's width depends on the number of clusters.
        fresh = rebuilt.state_dict()
        keep = {k: v for k, v in state_before.items() if k in fresh and fresh[k].shape == v.shape
                and k not in ("label_to_cluster", "cluster_labels")}
        rebuilt.load_state_dict(keep, strict=False)
        self.net = rebuilt
        self.clusters = (label_to_cluster, cluster_labels)

    def details(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def hierarchy(self) -> dict[str, Any]:
        h: dict[str, Any] = {"label_names": list(self.dataset.label_names), "mode": self.mode}
        if self.clusters is not None:
            h["label_to_cluster"] = torch.as_tensor(self.clusters[0])
            h["cluster_labels"] = torch.as_tensor(self.clusters[1])
        return h

    def load_hierarchy(self, hierarchy: dict[str, Any], path) -> None:
        super().load_hierarchy(hierarchy, path)
        if "cluster_labels" in hierarchy:
            l2c, labels = hierarchy.get("label_to_cluster"), hierarchy["cluster_labels"]
            if not (isinstance(l2c, torch.Tensor) and isinstance(labels, torch.Tensor)
                    and l2c.shape == (self.n_labels,) and labels.ndim == 2):
                raise UserError(f"{path}: damaged checkpoint (its label clusters do not fit "
                                f"{self.n_labels} labels)")
            self._set_clusters(l2c.numpy(), labels.numpy())

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.input_ids, batch.attention_mask, batch.positives)

    def topk(self, net, input_ids, attention_mask, k):
        doc, state = net.embed(input_ids, attention_mask)
        if net.clustered:
            return net.clustered_topk(doc, state, k)
        scores = torch.sigmoid(net.flat_logits(doc, state).float())
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.values, top.indices


def resolve_mode(config: LightXMLConfig, dataset: Dataset) -> str:
    if config.mode != "auto":
        return config.mode
    if dataset.info is not None:
        return dataset.info.mode
    return "clustered" if dataset.n_labels > CLUSTERED_ABOVE else "flat"


def _provisional_clusters(n_labels: int, leaf_size: int) -> tuple[np.ndarray, np.ndarray]:
    from xmlbench.models.lightxml.clustering import clusters_to_arrays

    leaves = [np.arange(i, min(i + leaf_size, n_labels), dtype=np.int32) for i in range(0, n_labels, leaf_size)]
    return clusters_to_arrays(leaves)


def cluster_labels_for(ctx: FitContext, cfg: LightXMLConfig) -> tuple[np.ndarray, np.ndarray]:
    """LightXML's clustering of the training labels, cached per (train split, seed, leaf size)."""
    from xmlbench.data.features import fit_tfidf
    from xmlbench.models.lightxml.clustering import (
        balanced_clusters,
        cached_clusters,
        clusters_to_arrays,
        label_features,
    )

    split_key = _split_key(ctx)
    key = f"{split_key}-seed{cfg.cluster_seed}-leaf{cfg.leaf_size}"

    def compute() -> list[np.ndarray]:
        ctx.log(f"clustering {ctx.dataset.n_labels:,} labels (leaf size {cfg.leaf_size}, seed {cfg.cluster_seed})")
        _, X = fit_tfidf(ctx.train, max_features=cfg.tfidf_features, empty_feature=True)  # see features.py
        feats = label_features(X, ctx.train.labels)
        return balanced_clusters(feats, leaf_size=cfg.leaf_size, seed=cfg.cluster_seed, progress=ctx.progress)

    leaves = cached_clusters(cache_dir() / "clusters", key, compute)
    return clusters_to_arrays(leaves)


def _split_key(ctx: FitContext) -> str:
    import hashlib

    rows = np.ascontiguousarray(ctx.train.file_rows, dtype=np.int64)
    h = hashlib.blake2b(rows.tobytes(), digest_size=6).hexdigest()
    return f"{ctx.dataset.fingerprint}-{h}"
