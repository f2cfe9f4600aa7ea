"""Neural baselines: one linear layer over an encoder, trained by the same loop as LightXML.

* ``softmax-linear``: DistilBERT + Linear (seed 000). Forward keeps raw scores; prediction is argmax (top-k
  for ranking metrics); training passes the scores through LogSoftmax into the class-weighted averaged
  negative log-likelihood  L = sum_n w_{y_n} * (-log p_{n, y_n}) / sum_n w_{y_n}.
  On multi-label data each document contributes EVERY positive label as a target ("pick-all-labels"),
  each with its class weight and with weight 1/|Y_n| so every document counts once:
      L = sum_n sum_{y in Y_n} (w_y / |Y_n|) * (-log p_{n, y})  /  sum_n sum_{y in Y_n} (w_y / |Y_n|).
  On single-label data this is the seed's loss exactly. Class weights w_l = N / (L_seen * N_l) from the
  training label frequencies ("balanced"), or 1 when ``class_weights`` is off.
* ``sigmoid-linear``: the multi-label head of seeds 002/003: [CLS] vector + dropout + linear layer, one
  sigmoid per label, binary cross-entropy with logits; probabilities are sigmoid(logits), not softmax.

Both: separate ``encoder_lr`` and ``classifier_lr`` optimiser groups, checkpoints with the seed's keys
(config, hierarchy, encoder_state_dict, classifier_state_dict, optimizer_state_dict).
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
from xmlbench.encoders import cls_embedding, mean_token_embedding
from xmlbench.engine import loop
from xmlbench.engine.batches import Batch
from xmlbench.models.base import FitContext
from xmlbench.models.heads import BiasInit, HeadNorm, document_norm, prior_logits, set_prior_bias
from xmlbench.models.neural import NeuralConfig, NeuralModel


@dataclass(frozen=True)
class LinearHeadConfig(NeuralConfig):
    # Fields redeclared here keep the bounds of NeuralConfig's: a plain ``int`` would drop them.
    encoder: str = "distilbert"
    max_len: Annotated[int, Range(2)] = 256
    epochs: Count = 5
    batch_size: Count = 16
    encoder_lr: NonNegativeFloat = 5e-5  # 0 freezes the encoder: a linear probe
    classifier_lr: NonNegativeFloat = 1e-3
    dropout: Dropout = 0.1
    swa_warmup: Annotated[int, Range(-1)] = -1  # no weight averaging in the seeds
    pooling: Literal["cls", "mean"] = "cls"  # first-token vector of the last layer, or mean over tokens
    class_weights: bool = True  # softmax-linear only: class-weighted NLL as in the seed
    head_norm: HeadNorm = "batchnorm"  # standardise the pooled vector per feature (xmlbench.models.heads)
    bias_init: BiasInit = "prior"  # the classifier's biases start at the training label prior


class LinearHeadNet(nn.Module):
    def __init__(self, encoder: nn.Module, hidden_size: int, cls_position: str, n_labels: int,
                 dropout: float, pooling: str, head_norm: str = "none") -> None:
        super().__init__()
        self.encoder = encoder
        self.cls_position = cls_position
        self.pooling = pooling
        self.doc_norm = document_norm(head_norm, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, n_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=True).hidden_states
        if self.pooling == "mean":
            doc = mean_token_embedding(hidden, attention_mask, n_layers=1)  # (B, H)
        else:
            doc = cls_embedding(hidden, attention_mask, n_layers=1, cls_position=self.cls_position)  # (B, H)
        return self.classifier(self.dropout(self.doc_norm(doc)))  # (B, L) raw scores


class LinearHeadModel(NeuralModel):
    """Shared by both heads: they differ only in the loss and in how scores become probabilities."""

    @classmethod
    def config_cls(cls) -> type:
        return LinearHeadConfig

    def build_net(self, dataset: Dataset) -> nn.Module:
        return LinearHeadNet(self.encoder.model, self.encoder.hidden_size, self.encoder.cls_position,
                             dataset.n_labels, self.config.dropout, self.config.pooling, self.config.head_norm)

    def prepare(self, ctx: FitContext) -> None:
        if self.config.bias_init == "prior":
            set_prior_bias(self.net.classifier, self.prior_bias(ctx.train.labels))

    def prior_bias(self, labels) -> torch.Tensor:
        """Log-odds of each label's training frequency: where a BCE head's biases start at the prior."""
        return prior_logits(labels, self.n_labels)

    def param_groups(self, net: nn.Module) -> list[dict[str, Any]]:
        encoder = [(n, p) for n, p in net.named_parameters() if n.startswith("encoder.")]
        head = [(n, p) for n, p in net.named_parameters() if not n.startswith("encoder.")]
        wd = self.config.weight_decay
        return (loop.make_param_groups(encoder, self.config.encoder_lr, wd)
                + loop.make_param_groups(head, self.config.classifier_lr, wd))

    def topk(self, net, input_ids, attention_mask, k):
        scores = self.probabilities(net(input_ids, attention_mask).float())
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.values, top.indices

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SoftmaxLinear(LinearHeadModel):
    name = "softmax-linear"
    distillable = True

    def __init__(self, config: LinearHeadConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        self.class_weight = torch.ones(dataset.n_labels)

    def prepare(self, ctx: FitContext) -> None:
        super().prepare(ctx)
        if self.config.class_weights:
            self.class_weight = balanced_class_weights(ctx.train.labels.indices, self.n_labels)

    def prior_bias(self, labels) -> torch.Tensor:
        """log p_l up to a constant: where a softmax head's scores start at the label shares."""
        counts = np.bincount(labels.indices, minlength=self.n_labels).astype(np.float64)
        return torch.as_tensor(np.log((counts + 0.5) / (counts.sum() + 0.5 * self.n_labels)), dtype=torch.float32)

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.input_ids, batch.attention_mask)

    def supervised_loss(self, logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        return weighted_nll(logits, positives, self.class_weight.to(logits.device))

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.supervised_loss(self.logits(net, batch), batch.positives)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)


class SigmoidLinear(LinearHeadModel):
    name = "sigmoid-linear"
    distillable = True

    def logits(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return net(batch.input_ids, batch.attention_mask)

    def supervised_loss(self, logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        from xmlbench.models.lightxml.model import dense_targets

        return F.binary_cross_entropy_with_logits(logits, dense_targets(positives, logits.shape[1], logits.dtype))

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.supervised_loss(self.logits(net, batch), batch.positives)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def balanced_class_weights(label_ids: np.ndarray, n_labels: int) -> torch.Tensor:
    """w_l = N / (L_seen * N_l) over the label occurrences of the training split; 0 for unseen labels."""
    counts = np.bincount(label_ids, minlength=n_labels).astype(np.float64)
    seen = counts > 0
    w = np.zeros(n_labels)
    w[seen] = counts.sum() / (seen.sum() * counts[seen])
    return torch.as_tensor(w, dtype=torch.float32)


def weighted_nll(logits: torch.Tensor, positives: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted averaged NLL over LogSoftmax scores, every positive label a target (see module doc)."""
    log_p = F.log_softmax(logits.float(), dim=1)  # (B, L)
    valid = positives >= 0  # (B, P)
    ids = positives.clamp(min=0)
    per_doc = valid.sum(1, keepdim=True).clamp(min=1)  # |Y_n|
    w = class_weight[ids] * valid / per_doc  # (B, P): w_y / |Y_n|
    nll = -log_p.gather(1, ids)  # (B, P)
    return (w * nll).sum() / w.sum().clamp(min=1e-12)


def smoke_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    # A random encoder: no per-feature standardisation (it amplifies noise; see the LightXML smoke preset).
    return {"encoder": encoder or "tiny", "max_len": 64, "epochs": 3, "batch_size": 32, "encoder_lr": 1e-3,
            "classifier_lr": 1e-2, "eval_batch_size": 128, "max_steps": 600, "checkpoint_every": 100,
            "head_norm": "none", "bias_init": "zero"}


def default_preset(ds: Dataset, encoder: str) -> dict[str, Any]:
    return {"encoder": encoder or "distilbert"}
