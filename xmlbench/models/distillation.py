"""Knowledge-distillation losses over SPARSE teacher targets: the teacher's top-k labels per document.

A dense (documents x labels) target matrix does not fit at 670k labels, so the teacher is stored as its
k best label ids and their logits z_t (k = ``top_k``, 100 by default), and the distillation term is taken
over those k labels only; the supervised term still covers every label. With T the temperature:

* sigmoid form (multi-label): each listed label is a binary problem softened by T,
      q_j = sigmoid(z_t,j / T),  p_j = sigmoid(z_s,j / T),
      L_d = T^2 * mean over listed (document, label) pairs of BCE(p_j, q_j)
          = T^2 * mean[-q_j log p_j - (1 - q_j) log(1 - p_j)].
  Why this form: a sigmoid head has no partition over labels to soften, so T softens each label's own
  two-way softmax (sigmoid(z/T) is exactly softmax([z, 0] / T)), as in Hinton et al. per class. Its
  gradient is dL_d/dz_s,j = (T / n) (sigmoid(z_s,j/T) - sigmoid(z_t,j/T)) for n listed pairs, which for
  large T tends to (z_s,j - z_t,j) / (4 n): the T^2 factor keeps the gradient's scale independent of T
  (Hinton et al.'s reason for it) and the high-temperature limit is logit matching. Labels outside the
  teacher's top-k get no distillation term: the teacher ranks them below its k-th label and stores no
  more about them; the supervised BCE pushes them down.
* softmax form (single-label), DistilBERT's L_ce: q = softmax(z_t / T) over the teacher's k labels (the
  rest get probability 0: a top-k truncation), log p = log_softmax(z_s / T) over ALL labels,
      L_d = -T^2 * mean over documents of sum_j q_j log p_j.

L = alpha * L_d + beta * L_s, L_s the student's own supervised loss (BCE over all labels, or the NLL).

Teacher scores become logits by their kind (``teacher_logits``): probabilities through the logit (sigmoid
form) or the log (softmax form), margins (TF-IDF + SVM) as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FORMS = ("sigmoid", "softmax")
SCORE_KINDS = ("probability", "margin")
PROBABILITY_EPS = 1e-6


@dataclass
class SoftTargets:
    """The teacher's top-k per training row: ids (N, k) int64 (-1: none) and logits (N, k) float32."""

    ids: np.ndarray
    logits: np.ndarray
    form: str  # "sigmoid" or "softmax"
    temperature: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if self.ids.shape != self.logits.shape:
            raise ValueError(f"teacher ids {self.ids.shape} and logits {self.logits.shape} differ in shape")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, not {self.form!r}")


def teacher_logits(scores: np.ndarray, ids: np.ndarray, kind: str, form: str) -> np.ndarray:
    """Logits z_t from a teacher's stored top-k scores (entries with id -1 become 0 and are ignored)."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"score kind must be one of {SCORE_KINDS}, not {kind!r}")
    s = scores.astype(np.float64)
    if kind == "margin":
        z = s
    elif form == "sigmoid":
        p = np.clip(s, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
        z = np.log(p) - np.log1p(-p)
    else:
        z = np.log(np.clip(s, 1e-12, None))
    return np.where(ids >= 0, z, 0.0).astype(np.float32)


def sigmoid_distillation(student: torch.Tensor, ids: torch.Tensor, z_t: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """T^2 * mean BCE(sigmoid(z_s/T), sigmoid(z_t/T)) over the listed (id >= 0) labels (module doc)."""
    valid = ids >= 0  # (B, k)
    z_s = student.float().gather(1, ids.clamp(min=0))  # (B, k)
    q = torch.sigmoid(z_t.float() / temperature)
    per = F.binary_cross_entropy_with_logits(z_s / temperature, q, reduction="none")  # (B, k)
    n = valid.sum().clamp(min=1)
    return temperature**2 * (per * valid).sum() / n


def softmax_distillation(student: torch.Tensor, ids: torch.Tensor, z_t: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """-T^2 * mean over documents of sum_j softmax(z_t/T)_j log_softmax(z_s/T)_j (module doc)."""
    valid = ids >= 0  # (B, k)
    zt = (z_t.float() / temperature).masked_fill(~valid, float("-inf"))
    q = torch.softmax(zt, dim=1).nan_to_num(0.0)  # a row with no listed label contributes nothing
    log_p = F.log_softmax(student.float() / temperature, dim=1).gather(1, ids.clamp(min=0))  # (B, k)
    return -temperature**2 * (q * log_p * valid).sum(1).mean()


def distillation_loss(student: torch.Tensor, ids: torch.Tensor, z_t: torch.Tensor, form: str,
                      temperature: float) -> torch.Tensor:
    if form == "sigmoid":
        return sigmoid_distillation(student, ids, z_t, temperature)
    return softmax_distillation(student, ids, z_t, temperature)


def combined_loss(student: torch.Tensor, supervised: torch.Tensor, ids: torch.Tensor, z_t: torch.Tensor,
                  targets: SoftTargets) -> torch.Tensor:
    """alpha * L_d + beta * L_s."""
    l_d = distillation_loss(student, ids, z_t, targets.form, targets.temperature)
    return targets.alpha * l_d + targets.beta * supervised
