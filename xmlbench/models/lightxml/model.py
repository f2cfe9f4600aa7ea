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
from xmlbench.engine import loop
from xmlbench.engine.batches import Batch
from xmlbench.errors import UserError
from xmlbench.models.base import FitContext
from xmlbench.models.heads import BiasInit, HeadNorm, document_norm, prior_logits, resolve_lr, set_prior_bias
from xmlbench.models.lightxml import variants as V
from xmlbench.models.neural import NeuralConfig, NeuralModel, Width
from xmlbench.paths import cache_dir

# Variant diagnostics look at this many validation documents at most, in batches of at most this size:
# enough for a mean and a spread across documents, cheap beside a validation pass.
DIAGNOSTIC_DOCS = 256
DIAGNOSTIC_BATCH = 32
CLUSTERED_ABOVE = 100_000  # mode "auto" on datasets without a manifest: clustered above this many labels
# label_embedding_update "auto": sparse above this many labels. Below it the dense step was faster on 2 CPU
# cores (README "The label embedding's update": 4k-130k labels) and every dataset with published LightXML
# numbers (up to Amazon-670K) keeps the original's update; above it the dense gradient and step are what
# stop Amazon-3M's shape from fitting (2.8M labels: over 20 GB dense, 15.3 GB sparse).
SPARSE_ABOVE = 1_000_000


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
    # "compute": cluster the training labels (the training split only: nothing of the held-out part);
    # "published": the original's label_group{cluster_seed}.npy from the dataset folder (clustered on all
    # of train, the documents it holds out included), an error when absent; "auto": that file when present
    clusters: Literal["compute", "published", "auto"] = "compute"
    tfidf_features: Count = 100_000  # vocabulary of the TF-IDF label features used for clustering
    # keep each label feature's largest entries only (None: all, the original's definition); bounds the
    # clustering's memory where the exact features do not fit (Amazon-3M's shape: clustering.label_features)
    label_feature_top_k: Count | None = None
    # clustered: how the label embedding (one row per label) learns. "dense": one AdamW step over every
    # row (the original); "sparse": its gradient holds the step's candidate rows only and a lazy AdamW
    # moves just those (xmlbench.engine.optim says what that changes); no memory for a dense gradient;
    # "auto": sparse above SPARSE_ABOVE labels
    label_embedding_update: Literal["auto", "dense", "sparse"] = "auto"
    variants: Annotated[tuple[str, ...], Rule(V.unknown_variants)] = ()
    # The fair default recipe (issue 14; chosen on validation splits of small real data, see README
    # "Recipe"). The original: head_lr -1 (one lr), head_norm "none", bias_init "zero".
    head_lr: Annotated[float, Range(-1)] = 1e-3  # learning rate of everything but the encoder; -1: ``lr``
    head_norm: HeadNorm = "batchnorm"  # standardise the document vector per feature before the heads
    bias_init: BiasInit = "prior"  # flat classifier / generator biases start at the label prior


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
        n_states = int(getattr(getattr(encoder, "config", None), "num_hidden_layers", -1)) + 1
        self.variants = V.build(cfg, V.VariantContext(cfg.n_layers, hidden_size, n_labels, n_clusters, cfg.hidden,
                                                      cfg.dropout, n_states, cls_position))
        dim = self.variants.document_dim(cfg.n_layers * hidden_size)  # 5H; scalar-mix: H
        self.doc_norm = document_norm(cfg.head_norm, dim)
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
        self.label_embedding = label_embedding(n_labels, cfg.hidden, sparse_label_update(cfg, n_labels))

    @property
    def clustered(self) -> bool:
        return hasattr(self, "generator")

    # ------------------------------------------------------------------------------ text embedding
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(B, D) document vector, and the encoder output for variants that use token states."""
        layers, hidden = self.cls_layers(input_ids, attention_mask)  # (B, 5, H)
        layers = self.variants.transform_layers(layers)  # hook 1 (se)
        doc = layers.flatten(start_dim=1)  # (B, 5H)
        doc = self.variants.transform_document(doc, hidden, attention_mask)  # hook 2 (doc-rep, document)
        return self.dropout(self.doc_norm(doc)), (hidden, attention_mask)

    def cls_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(B, n_layers, H) [CLS] stack before any variant, and the encoder's hidden states."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states
        return layer_stack(hidden, attention_mask, self.cfg.n_layers, self.cls_position), hidden

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
        # sparse: the spare padding row; dense: label 0's row, whose gradient there is zero
        pad = self.n_labels if self.label_embedding.padding_idx is not None else 0
        emb = self.label_embedding(cands.masked_fill(cands < 0, pad))  # (B, C, h)
        d = torch.einsum("bch,bh->bc", emb, z)  # (B, C)
        g_of_cand = g.gather(1, self.label_to_cluster[cands.clamp(min=0)])  # (B, C), not detached
        return self.variants.candidate_logits(d, g_of_cand)  # hook 4 (loss-correction)

    def clustered_loss(self, doc: torch.Tensor, state, positives: torch.Tensor) -> torch.Tensor:
        loss_g, loss_d = self.clustered_losses(doc, state, positives)
        return loss_g + loss_d

    def clustered_losses(self, doc: torch.Tensor, state,
                         positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Lg, Ld) apart, for the training loss and for diagnostics that split the gradient between them."""
        g = self.generator(doc)  # (B, K)
        loss_g = F.binary_cross_entropy_with_logits(
            g, cluster_targets(positives, self.label_to_cluster, g.shape[1], g.dtype))
        cands, top = self.candidates(g, positives)
        cands = self.variants.extend_candidates(cands, top, positives, self.label_to_cluster)  # hook 5
        logits = self.discriminate(doc, state, g, cands)
        valid = cands >= 0  # bool: its count stays an integer (in fp16 a count above 65,504 is inf)
        targets = is_member(cands, positives).to(logits.dtype)
        # the mean over real candidates (not -1 padding); a weighted sum rather than logits[valid], whose
        # size the host would have to wait for
        per_cand = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").float()
        loss_d = (per_cand * valid).sum() / valid.sum().clamp(min=1)
        return loss_g, loss_d

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
    """Positives whose cluster is not among the top-b replace the last negative candidates of their row,
    in order: the row's last n negative slots get its first n missing positives (n = the fewer of the two).
    Whole-tensor operations, no per-row loop: nothing here waits for the device."""
    pos_clusters = label_to_cluster[positives.clamp(min=0)]
    covered = (pos_clusters.unsqueeze(-1) == top.unsqueeze(1)).any(-1)  # (B, P)
    missing = (positives >= 0) & ~covered
    # the missing positives of each row first, in their order (a stable sort of "not missing")
    order = torch.sort((~missing).to(torch.int8), dim=1, stable=True).indices
    wanted = positives.gather(1, order)  # (B, P)
    negative = (cands >= 0) & ~is_member(cands, positives)  # (B, C) slots a positive may take
    n = torch.minimum(missing.sum(1), negative.sum(1)).unsqueeze(1)  # (B, 1)
    # slot j's rank among its row's negative slots, counted from the end (0 = the last one)
    from_end = negative.flip(1).cumsum(1).flip(1) - 1
    takes = negative & (from_end < n)
    which = (n - 1 - from_end).clamp(min=0, max=positives.shape[1] - 1)  # which missing positive it gets
    return torch.where(takes, wanted.gather(1, which), cands)


class LightXML(NeuralModel):
    name = "lightxml"

    def __init__(self, config: LightXMLConfig, dataset: Dataset) -> None:
        self.mode = resolve_mode(config, dataset)
        self.clusters: tuple[np.ndarray, np.ndarray] | None = None
        self.clusters_source = "computed"  # or the published file's name
        self.clusters_added = 0  # labels a published file left out, given extra clusters
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

    @classmethod
    def regime(cls, config: LightXMLConfig, dataset: Dataset) -> str:
        return resolve_mode(config, dataset)

    def build_net(self, dataset: Dataset) -> nn.Module:
        clusters = self.clusters
        if self.mode == "clustered" and clusters is None:
            # Placeholder shapes until ``prepare`` clusters the labels (or a checkpoint supplies them).
            clusters = _provisional_clusters(dataset.n_labels, self.config.leaf_size)
        return LightXMLNet(self.encoder.model, self.encoder.hidden_size, self.encoder.cls_position,
                           dataset.n_labels, self.config, clusters)

    def prepare(self, ctx: FitContext) -> None:
        if self.mode == "clustered":
            self._cluster_the_labels(ctx)
            self._count_cooccurrence(ctx)
        if self.config.bias_init == "prior":
            self._start_at_the_prior(ctx.train.labels)

    def _cluster_the_labels(self, ctx: FitContext) -> None:
        published = published_clusters_for(ctx, self.config)
        if published is None:
            self._set_clusters(*cluster_labels_for(ctx, self.config))
            return
        from xmlbench.models.lightxml.clustering import clusters_to_arrays

        leaves, self.clusters_added, self.clusters_source = published
        self._set_clusters(*clusters_to_arrays(leaves))

    def _count_cooccurrence(self, ctx: FitContext) -> None:
        """doc-rep's label view needs the training split's cluster co-occurrence (a buffer, saved with
        the model); computed here because only ``prepare`` sees the training labels with the clusters."""
        from xmlbench.models.lightxml.variants.doc_rep import cluster_cooccurrence

        wanting = [v for v in self.net.variants.values() if getattr(v, "with_labels", False)]
        if wanting:
            label_to_cluster, cluster_labels = self.clusters
            matrix = cluster_cooccurrence(ctx.train.labels, label_to_cluster, cluster_labels.shape[0])
            for variant in wanting:
                variant.set_cooccurrence(matrix)

    def _start_at_the_prior(self, labels) -> None:
        """Biases of the BCE heads over fixed columns (flat classifier, generator) at the label prior, so
        the first steps need not spend themselves learning it."""
        net = self.net
        if net.clustered:
            set_prior_bias(net.generator, prior_logits(labels, net.generator.out_features,
                                                       column_of=net.label_to_cluster.numpy()))
        else:
            set_prior_bias(net.classifier, prior_logits(labels, net.classifier.out_features))

    def param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        return lightxml_param_groups(net, self.config)

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
        if self.mode != "clustered":
            return {"mode": self.mode}
        out: dict[str, Any] = {"mode": self.mode, "clusters": self.clusters_source,
                               "label_embedding_update": "sparse" if self.net.label_embedding.sparse else "dense"}
        if self.clusters_added:
            out["clusters_added_labels"] = self.clusters_added
        return out

    def diagnostics(self, split) -> dict[str, Any]:
        """{"variant_diagnostics": {variant: what it did}} on the first ``DIAGNOSTIC_DOCS`` documents of
        ``split`` (the validation split, with the selected weights); {} with no variant enabled."""
        if not len(self.net.variants):
            return {}
        from xmlbench.engine.batches import padded_positives

        tokens = self.tokens(split)
        rows = np.asarray(split.file_rows)[:DIAGNOSTIC_DOCS]
        # Positions in ``split.labels`` follow ``file_rows``: the first n rows of each.
        positions = np.arange(len(rows))
        net = self.net
        device = next(net.parameters()).device
        size = min(self.config.eval_batch_size, DIAGNOSTIC_BATCH)

        def batches():
            for start in range(0, len(rows), size):
                ids, mask = tokens.batch(rows[start : start + size], trim=True)
                positives = padded_positives(split.labels, positions[start : start + size])
                yield ids.to(device), mask.to(device), positives.to(device)

        was_training = net.training
        net.eval()
        try:
            found = net.variants.diagnostics(V.Probe(net=net, batches=batches))
        finally:
            net.train(was_training)
        return {"variant_diagnostics": found}

    def hierarchy(self) -> dict[str, Any]:
        h: dict[str, Any] = {"label_names": list(self.label_names), "mode": self.mode}
        if self.clusters is not None:
            h["label_to_cluster"] = torch.as_tensor(self.clusters[0])
            h["cluster_labels"] = torch.as_tensor(self.clusters[1])
            h["clusters_source"] = self.clusters_source
            h["clusters_added"] = self.clusters_added
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
            self.clusters_source = str(hierarchy.get("clusters_source", "computed"))
            self.clusters_added = int(hierarchy.get("clusters_added", 0))

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.input_ids, batch.attention_mask, batch.positives)

    def topk(self, net, input_ids, attention_mask, k):
        doc, state = net.embed(input_ids, attention_mask)
        if net.clustered:
            return net.clustered_topk(doc, state, k)
        scores = torch.sigmoid(net.flat_logits(doc, state).float())
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.values, top.indices


def lightxml_param_groups(net: nn.Module, cfg: LightXMLConfig) -> list[dict[str, Any]]:
    """The encoder at ``lr``; the heads and variants at ``head_lr`` (the original: one lr for all, in its
    two AdamW groups, decay and no decay). A sparsely updated label embedding gets a group of its own,
    marked for the lazy AdamW, with the heads' learning rate and weight decay."""
    named = list(net.named_parameters())
    head_lr = cfg.lr if cfg.head_lr < 0 else resolve_lr(cfg.head_lr, cfg.lr)
    sparse = [p for n, p in named if n == "label_embedding.weight" and p.requires_grad
              and net.label_embedding.sparse]
    named = [(n, p) for n, p in named if not (sparse and n == "label_embedding.weight")]
    if cfg.head_lr < 0:
        groups = loop.make_param_groups(named, cfg.lr, cfg.weight_decay)
    else:
        encoder = [(n, p) for n, p in named if n.startswith("encoder.")]
        heads = [(n, p) for n, p in named if not n.startswith("encoder.")]
        groups = (loop.make_param_groups(encoder, cfg.lr, cfg.weight_decay)
                  + loop.make_param_groups(heads, head_lr, cfg.weight_decay))
    if sparse:
        groups.append({"params": sparse, "weight_decay": cfg.weight_decay, "lr": head_lr, "sparse": True})
    return groups


def label_embedding(n_labels: int, hidden: int, sparse: bool) -> nn.Embedding:
    """The (L, h) label table, Xavier-initialised. Sparse: one more row, zero and never updated, stands in
    for the candidates' -1 padding. torch leaves a ``padding_idx`` out of the sparse gradient, so padding
    touches no label's row; padding with label 0 would make the lazy AdamW decay and move row 0 in every
    step that has padding. Dense keeps the original's table (padding reads row 0 with zero gradient)."""
    if not sparse:
        table = nn.Embedding(n_labels, hidden)
        nn.init.xavier_uniform_(table.weight)
        return table
    weight = torch.zeros(n_labels + 1, hidden)
    # the same random draws as the dense table (nn.Embedding's normal init, then Xavier): the same rows
    weight[:n_labels].normal_()
    nn.init.xavier_uniform_(weight[:n_labels])
    return nn.Embedding(n_labels + 1, hidden, padding_idx=n_labels, sparse=True, _weight=weight)


def sparse_label_update(cfg: LightXMLConfig, n_labels: int) -> bool:
    if cfg.label_embedding_update == "auto":
        return n_labels > SPARSE_ABOVE
    return cfg.label_embedding_update == "sparse"


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


def published_clusters_for(ctx: FitContext, cfg: LightXMLConfig) -> tuple[list, int, str] | None:
    """(leaves, labels added, file name) of the original's published clusters when ``cfg.clusters`` asks
    for them (``published``, or ``auto`` and the file is there); None: compute them."""
    from xmlbench.errors import UserError
    from xmlbench.models.lightxml.published import load_published_clusters, published_file

    path = published_file(ctx.dataset.path, cfg.cluster_seed)
    if cfg.clusters == "compute" or (cfg.clusters == "auto" and not path.is_file()):
        return None
    if not path.is_file():
        raise UserError(f"clusters=published: {path} not found (the original's clusters for cluster_seed "
                        f"{cfg.cluster_seed}; its run.sh downloads them), or use clusters=compute")
    train_counts = np.diff(ctx.train.labels.tocsc().indptr)
    leaves, added = load_published_clusters(path, ctx.dataset.label_names, train_counts, cfg.leaf_size)
    ctx.log(f"published label clusters {path}: {len(leaves):,} clusters"
            + (f", {added:,} labels without training documents in extra clusters" if added else ""))
    return leaves, added, path.name


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
    if cfg.label_feature_top_k is not None:  # other features, another tree (the exact key stays as it was)
        key += f"-top{cfg.label_feature_top_k}"

    def compute() -> list[np.ndarray]:
        ctx.log(f"clustering {ctx.dataset.n_labels:,} labels (leaf size {cfg.leaf_size}, seed {cfg.cluster_seed})")
        _, X = fit_tfidf(ctx.train, max_features=cfg.tfidf_features, empty_feature=True)  # see features.py
        feats = label_features(X, ctx.train.labels, top_k=cfg.label_feature_top_k)
        return balanced_clusters(feats, leaf_size=cfg.leaf_size, seed=cfg.cluster_seed, progress=ctx.progress)

    leaves = cached_clusters(cache_dir() / "clusters", key, compute)
    return clusters_to_arrays(leaves)


def _split_key(ctx: FitContext) -> str:
    import hashlib

    rows = np.ascontiguousarray(ctx.train.file_rows, dtype=np.int64)
    h = hashlib.blake2b(rows.tobytes(), digest_size=6).hexdigest()
    return f"{ctx.dataset.fingerprint}-{h}"
