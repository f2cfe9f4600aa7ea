"""Transfer-set augmentation for knowledge distillation (Tang et al., "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks", 2019; the transfer set of DocBERT, Adhikari et al. 2019).

Each synthetic example starts from a training document's words and goes through, in Tang et al.'s order:

* masking: every word is replaced by ``MASK`` with probability ``p_mask`` (BERT tokenizers read "[MASK]"
  as their mask token; a TF-IDF teacher sees the word "mask", a word it has rarely seen);
* n-gram sampling: with probability ``p_ngram`` the example is cut to one random window of n consecutive
  words, n uniform in [``ngram_min``, ``ngram_max``] (Tang et al.: 1..5 for sentences).

Tang et al.'s third rule, POS-guided word replacement, needs a part-of-speech tagger and is not done.
Every draw comes from ``numpy.random.default_rng([seed, document, copy])``: the same seed gives the same
transfer set whatever order or subset of documents it is built for, and another seed another one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from xmlbench.config import Count, NonNegative, Range, Seed

MASK = "[MASK]"
Probability = Annotated[float, Range(0, 1)]


@dataclass(frozen=True)
class Augmentation:
    copies: NonNegative = 2  # synthetic examples per training document (0: the transfer set is train alone)
    p_mask: Probability = 0.1
    p_ngram: Probability = 0.25
    ngram_min: Count = 1
    ngram_max: Count = 5
    seed: Seed = 0


def augment_words(words: list[str], rng: np.random.Generator, aug: Augmentation) -> list[str]:
    """One synthetic example from a document's words (masking, then n-gram sampling)."""
    mask = rng.random(len(words)) < aug.p_mask
    out = [MASK if m else w for w, m in zip(words, mask)]
    if out and rng.random() < aug.p_ngram:
        n = int(rng.integers(aug.ngram_min, max(aug.ngram_min, aug.ngram_max) + 1))
        n = min(n, len(out))
        start = int(rng.integers(0, len(out) - n + 1))
        out = out[start : start + n]
    return out


def augmented_texts(texts: Iterable[str], aug: Augmentation, doc_ids: Iterable[int] | None = None,
                    max_words: int = 0) -> Iterator[str]:
    """``aug.copies`` synthetic texts per input text, copy by copy for each document in turn. ``doc_ids``
    (default 0, 1, ...) seed each document's draws: pass file rows so a subset keeps its documents' draws.
    ``max_words`` > 0 first cuts each text to its first words (the tokens a model with that max_len reads)."""
    ids = iter(doc_ids) if doc_ids is not None else None
    for i, text in enumerate(texts):
        doc = next(ids) if ids is not None else i
        words = text.split()
        if max_words:
            words = words[:max_words]
        for copy in range(aug.copies):
            rng = np.random.default_rng([aug.seed, int(doc), copy])
            yield " ".join(augment_words(words, rng, aug))
