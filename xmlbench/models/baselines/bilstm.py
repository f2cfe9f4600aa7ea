"""``bilstm``: token embeddings -> 1-2 layer BiLSTM -> pooling over time -> one linear layer over all labels
(seed 004's BiLSTM; DocBERT's distillation student, seed 002).

* head: one sigmoid per label with binary cross-entropy (multi-label data), or a softmax with the NLL for
  single-label data (every training document has exactly one label), like seed 000; ``head=auto`` picks by
  the training split, and the choice is saved with the model.
* embeddings: ``random``; ``encoder``: the input embedding table of a pretrained encoder, read with its own
  tokenizer (``encoder=minilm`` works offline); ``vectors``: a GloVe / word2vec text file
  (``vectors_file``): every token of the tokenizer found in the file (whole words of a WordPiece
  vocabulary, tried as they are and lower-cased) gets its vector, the others a random one of the same
  scale; the share found is recorded (``model_details.vectors_coverage``).
* ``vocab=train`` keeps only the embedding rows of tokens used at least ``min_count`` times in the training
  split (plus the special tokens; every other token reads the unknown token's row): most of a 30k-token
  WordPiece table is never used by one corpus, and it is most of the parameters.
* ``embedding_dim`` below the table's width projects the pretrained table onto its top principal
  components (centred SVD over the kept rows) before training.

Training is the shared loop (``NeuralModel``); ``encoder`` names the tokenizer (and the table's source), and
only ``self.net`` (the BiLSTM and its head) counts as the model's parameters and is saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xmlbench.config import Count, Dropout, NonNegativeFloat, Range
from xmlbench.data.dataset import Dataset
from xmlbench.encoders.bilstm import BiLSTMEncoder
from xmlbench.engine.batches import Batch
from xmlbench.errors import UserError
from xmlbench.models.base import FitContext
from xmlbench.models.baselines.linear_heads import weighted_nll
from xmlbench.models.heads import (
    BiasInit,
    HeadNorm,
    document_norm,
    prior_logits,
    set_prior_bias,
    single_label,
)
from xmlbench.models.neural import NeuralConfig, NeuralModel

RANDOM_DIM = 300  # the width of a random table when embedding_dim is 0


@dataclass(frozen=True)
class BiLSTMConfig(NeuralConfig):
    encoder: str = "minilm"  # the tokenizer, and with embeddings=encoder the table's source
    max_len: Annotated[int, Range(2)] = 128
    epochs: Count = 5
    batch_size: Count = 32
    lr: NonNegativeFloat = 2e-3
    weight_decay: NonNegativeFloat = 0.0
    swa_warmup: Annotated[int, Range(-1)] = -1
    dropout: Dropout = 0.3  # on the embeddings, between LSTM layers and on the pooled vector
    embeddings: Literal["random", "encoder", "vectors"] = "encoder"
    vectors_file: str = ""  # GloVe / word2vec text file, with embeddings=vectors
    embedding_dim: Annotated[int, Range(0, 4096)] = 0  # 0: the table's own width (random: 300)
    vocab: Literal["tokenizer", "train"] = "train"
    min_count: Count = 1  # with vocab=train: uses in the training split for a token to keep its own row
    freeze_embeddings: bool = False
    hidden: Annotated[int, Range(1, 4096)] = 256  # per direction
    layers: Annotated[int, Range(1, 2)] = 1
    pooling: Literal["max", "mean", "attention"] = "max"
    head: Literal["auto", "sigmoid", "softmax"] = "auto"
    head_norm: HeadNorm = "none"
    bias_init: BiasInit = "prior"

    def __post_init__(self) -> None:
        if self.embeddings == "vectors" and not self.vectors_file:
            raise UserError("config key 'embeddings' is 'vectors' but 'vectors_file' is empty: give "
                            "--set vectors_file=PATH (a GloVe or word2vec text file)")
        if self.vectors_file and self.embeddings != "vectors":
            raise UserError(f"config key 'vectors_file' is set but 'embeddings' is {self.embeddings!r}: add "
                            "--set embeddings=vectors, or drop vectors_file")


class BiLSTMNet(nn.Module):
    def __init__(self, encoder: BiLSTMEncoder, n_labels: int, dropout: float, head_norm: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.doc_norm = document_norm(head_norm, encoder.out_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.out_dim, n_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        doc = self.encoder(input_ids, attention_mask)  # (B, 2H)
        return self.classifier(self.dropout(self.doc_norm(doc)))  # (B, L) raw scores


class BiLSTM(NeuralModel):
    name = "bilstm"
    distillable = True

    def __init__(self, config: BiLSTMConfig, dataset: Dataset) -> None:
        self._rows: int | None = None  # embedding rows and width; set by prepare (or the saved model)
        self._dim: int | None = None
        self.table_info: dict[str, Any] = {}
        self.head_kind = "softmax" if config.head == "softmax" or (
            config.head == "auto" and single_label(dataset.train.labels)) else "sigmoid"
        super().__init__(config, dataset)

    @classmethod
    def config_cls(cls) -> type:
        return BiLSTMConfig

    def _source_width(self) -> int:
        if self.config.embeddings == "encoder":
            return int(self.encoder.model.get_input_embeddings().weight.shape[1])
        return self.config.embedding_dim or RANDOM_DIM

    def build_net(self, dataset: Dataset) -> nn.Module:
        n_tokens = len(self.encoder.tokenizer)
        rows = self._rows or n_tokens
        dim = self._dim or self.config.embedding_dim or self._source_width()
        cfg = self.config
        encoder = BiLSTMEncoder(n_tokens, rows, dim, cfg.hidden, cfg.layers, cfg.dropout, cfg.pooling,
                                pad_row=min(self.encoder.tokenizer.pad_token_id or 0, rows - 1))
        return BiLSTMNet(encoder, dataset.n_labels, cfg.dropout, cfg.head_norm)

    # -- before training: head, vocabulary, embedding table ---------------------------------------------
    def prepare(self, ctx: FitContext) -> None:
        cfg = self.config
        self.head_kind = "softmax" if cfg.head == "softmax" or (
            cfg.head == "auto" and single_label(ctx.train.labels)) else "sigmoid"
        tokens = self.tokens(ctx.train, ctx.progress)
        if tokens.padding_side != "right":
            raise UserError(f"bilstm reads right-padded tokens; encoder {cfg.encoder!r}'s tokenizer pads left")
        kept = self._kept_tokens(tokens, ctx.train.file_rows)
        table, info = self._table(kept)
        dim = cfg.embedding_dim or table.shape[1]
        if dim > table.shape[1]:
            raise UserError(f"config key 'embedding_dim' is {dim} but the {cfg.embeddings} table has "
                            f"{table.shape[1]} dimensions (use 0 or less)")
        if dim < table.shape[1]:
            info["projected_from"] = int(table.shape[1])  # principal components of the pretrained table
            table = principal_components(table, dim)
        tok = self.encoder.tokenizer
        token_map = torch.full((len(tok),), int(np.searchsorted(kept, tok.unk_token_id)), dtype=torch.long)
        token_map[torch.as_tensor(kept)] = torch.arange(len(kept))
        pad_row = int(np.searchsorted(kept, tok.pad_token_id or 0))
        table[pad_row] = 0.0
        self._rows, self._dim = len(kept), dim
        self.net = self.build_net(ctx.dataset)
        self.net.encoder.set_table(token_map, table, pad_row)
        if cfg.freeze_embeddings:
            self.net.encoder.embedding.weight.requires_grad_(False)
        self.table_info = {**info, "rows": len(kept), "dim": dim}
        if cfg.bias_init == "prior":
            set_prior_bias(self.net.classifier, self._prior(ctx.train.labels))

    def _kept_tokens(self, tokens, file_rows: np.ndarray) -> np.ndarray:
        """Sorted tokenizer ids with their own embedding row."""
        tok = self.encoder.tokenizer
        n = len(tok)
        if self.config.vocab == "tokenizer":
            return np.arange(n)
        counts = np.zeros(n, dtype=np.int64)
        for start in range(0, len(file_rows), 4096):
            rows = np.sort(file_rows[start : start + 4096])
            ids = np.asarray(tokens.input_ids[rows])
            real = np.arange(ids.shape[1])[None, :] < np.asarray(tokens.lengths[rows])[:, None]
            counts += np.bincount(ids[real], minlength=n)[:n]
        special = [i for i in tok.all_special_ids if i is not None and 0 <= i < n]
        keep = counts >= self.config.min_count
        keep[special] = True
        return np.flatnonzero(keep)

    def _table(self, kept: np.ndarray) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.config
        if cfg.embeddings == "encoder":
            full = self.encoder.model.get_input_embeddings().weight.detach().float()
            return full[torch.as_tensor(kept)].clone(), {"source": f"encoder {cfg.encoder}",
                                                         "width": int(full.shape[1])}
        if cfg.embeddings == "random":
            dim = cfg.embedding_dim or RANDOM_DIM
            return torch.randn(len(kept), dim), {"source": "random", "width": dim}
        from xmlbench.data.wordvectors import read_word_vectors

        names = self.encoder.tokenizer.convert_ids_to_tokens([int(i) for i in kept])
        words, vectors = read_word_vectors(cfg.vectors_file, set(names) | {n.lower() for n in names})
        index = {w: i for i, w in enumerate(words)}
        std = float(vectors.std()) if vectors.size else 0.1
        table = torch.randn(len(kept), vectors.shape[1]) * std
        found = 0
        for row, name in enumerate(names):
            hit = index.get(name, index.get(name.lower()))
            if hit is not None:
                table[row] = torch.from_numpy(vectors[hit])
                found += 1
        return table, {"source": f"vectors {cfg.vectors_file}", "width": int(vectors.shape[1]),
                       "vectors_coverage": round(found / max(len(kept), 1), 4)}

    def _prior(self, labels) -> torch.Tensor:
        if self.head_kind == "sigmoid":
            return prior_logits(labels, self.n_labels)
        counts = np.bincount(labels.indices, minlength=self.n_labels).astype(np.float64)
        return torch.as_tensor(np.log((counts + 0.5) / (counts.sum() + 0.5 * self.n_labels)), dtype=torch.float32)

    # -- saved with the model -------------------------------------------------------------------------
    def hierarchy(self) -> dict[str, Any]:
        return {**super().hierarchy(), "head": self.head_kind,
                "embedding": {"rows": self._rows, "dim": self._dim}, "table": self.table_info}

    def load_hierarchy(self, hierarchy: dict[str, Any], path) -> None:
        super().load_hierarchy(hierarchy, path)
        emb = hierarchy.get("embedding") or {}
        if hierarchy.get("head") not in ("sigmoid", "softmax") or not isinstance(emb, dict):
            raise UserError(f"{path}: damaged bilstm checkpoint (no head or embedding entry)")
        self.head_kind = hierarchy["head"]
        self.table_info = dict(hierarchy.get("table") or {})
        if emb.get("rows") and (emb["rows"], emb["dim"]) != (self._rows, self._dim):
            self._rows, self._dim = int(emb["rows"]), int(emb["dim"])
            self.net = self.build_net(self.dataset)

    def details(self) -> dict[str, Any]:
        return {"head": self.head_kind, "pooling": self.config.pooling, "layers": self.config.layers,
                "hidden": self.config.hidden, "embeddings": self.config.embeddings, **self.table_info}

    # -- loss and prediction --------------------------------------------------------------------------
    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.input_ids, batch.attention_mask)

    def supervised_loss(self, logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        if self.head_kind == "softmax":
            return weighted_nll(logits, positives, torch.ones(logits.shape[1], device=logits.device))
        from xmlbench.models.lightxml.model import dense_targets

        return F.binary_cross_entropy_with_logits(logits, dense_targets(positives, logits.shape[1], logits.dtype))

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.supervised_loss(self.logits(net, batch), batch.positives)

    def topk(self, net, input_ids, attention_mask, k):
        logits = net(input_ids, attention_mask).float()
        scores = torch.softmax(logits, dim=1) if self.head_kind == "softmax" else torch.sigmoid(logits)
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.values, top.indices


def principal_components(table: torch.Tensor, dim: int) -> torch.Tensor:
    """(rows, dim): the centred table projected onto its ``dim`` leading right singular vectors."""
    centred = table - table.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:dim].T


def smoke_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    return {"encoder": encoder or "tiny", "max_len": 64, "epochs": 3, "batch_size": 32, "hidden": 64,
            "eval_batch_size": 128, "max_steps": 600, "checkpoint_every": 100}


def default_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    return {"encoder": encoder or "minilm"}
