"""Shared TF-IDF featurisation for the classical references (tfidf-ovr, tree) and label clustering.

Weighting follows scikit-learn's ``TfidfVectorizer`` defaults (Salton & Buckley 1988 term weighting):
tf = 1 + log(count) when ``sublinear_tf`` (else the raw count), smoothed idf = ln((1 + n) / (1 + df)) + 1,
rows L2-normalised. Counting is delegated to scikit-learn's ``CountVectorizer``; the weighting is applied
here by one function for both fit and transform, so a reloaded state reproduces the fitted matrix exactly.

A state is saved without pickle: the vocabulary as a JSON list (term of each column), idf as ``.npz``, the
options as JSON. On bag-of-words datasets the shipped features are used as they are (the Extreme
Classification Repository ships them already TF-IDF weighted), only L2-normalised.

**Documents without features.** A document can have no feature at all: an empty text, a text empty
after preprocessing, or (often, on short titles) one whose every word falls outside the vocabulary.
Every model treats it the same way: it stays in every split, is trained on and is predicted and scored
like any other document, represented by an explicit EMPTY input. For the TF-IDF models (tfidf-ovr,
tree, LightXML's label clustering) that is one extra column, ``EMPTY_TERM``, set to 1 in exactly the rows
that have no other feature (``empty_feature=True``), so the model learns which labels empty documents
carry and Omikuji never sees a feature-less line (it refuses to load one). For the encoders it is the
tokenizer's output for an empty text, [CLS] [SEP]; label-frequency ignores the text anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmlbench.data.dataset import Split
from xmlbench.errors import UserError
from xmlbench.io import atomic_path, read_json, read_json_object, read_npz, write_json

STATE_JSON = "tfidf.json"
VOCAB_JSON = "tfidf_vocab.json"
IDF_NPZ = "tfidf_idf.npz"
EMPTY_TERM = "<empty>"  # the name of the EMPTY column (never a term: the tokenizer splits on non-word chars)


@dataclass
class TfidfState:
    """What ``transform_tfidf`` needs: the column vocabulary, idf weights and the counting options.

    ``kind`` is ``"text"`` (vocabulary + idf) or ``"bow"`` (the dataset's own features, ``n_features`` wide).
    """

    kind: str
    n_features: int
    ngram_max: int = 1
    sublinear_tf: bool = True
    lowercase: bool = True
    vocabulary: list[str] = field(default_factory=list)
    idf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    empty_feature: bool = False  # rows without features get the extra EMPTY column (see the module doc)

    @property
    def width(self) -> int:
        """Columns of the rows ``transform_tfidf`` returns: the features, then EMPTY if enabled."""
        return self.n_features + int(self.empty_feature)


def fit_tfidf(
    split: Split,
    max_features: int = 200_000,
    ngram_max: int = 1,
    min_df: int = 2,
    sublinear_tf: bool = True,
    lowercase: bool = True,
    empty_feature: bool = False,
) -> tuple[TfidfState, sp.csr_matrix]:
    """Fit the vocabulary and idf on ``split`` and return (state, its float32 L2-normalised CSR matrix).

    ``max_features`` keeps the most frequent terms (by corpus count), ``min_df`` drops terms seen in fewer
    documents; on a bag-of-words split these options do not apply and the shipped features are used.
    """
    if split.texts is None:
        X = _l2_normalise(split.feature_rows().astype(np.float32))
        state = TfidfState(kind="bow", n_features=X.shape[1], empty_feature=empty_feature)
        return state, _mark_empty_rows(X, state)
    if min(max_features, ngram_max, min_df) < 1:
        raise UserError(f"max_features, ngram_max and min_df must be >= 1 (got {max_features}, {ngram_max}, "
                        f"{min_df})")
    from sklearn.feature_extraction.text import CountVectorizer

    counter = CountVectorizer(
        ngram_range=(1, ngram_max), min_df=min_df, max_features=max_features, lowercase=lowercase,
        dtype=np.float32,
    )
    try:
        counts = counter.fit_transform(split.iter_texts()).tocsr()
        vocabulary = counter.get_feature_names_out().tolist()
    except ValueError as e:  # sklearn's "empty vocabulary" / "min_df ... no terms remain"
        if not empty_feature:
            raise UserError(f"TF-IDF on the {split.name} split: {e}") from None
        # Every document is without features: still the documented case, all rows are EMPTY.
        counts, vocabulary = sp.csr_matrix((len(split), 0), dtype=np.float32), []
    del counter  # its vocabulary_ dict is large on big corpora; the list above is all we keep
    idf = _smooth_idf(counts)
    state = TfidfState(
        kind="text", n_features=len(vocabulary), ngram_max=ngram_max, sublinear_tf=sublinear_tf,
        lowercase=lowercase, vocabulary=vocabulary, idf=idf, empty_feature=empty_feature,
    )
    return state, _mark_empty_rows(_weight(counts, state), state)


def transform_tfidf(state: TfidfState, split: Split) -> sp.csr_matrix:
    """The float32 L2-normalised TF-IDF rows of ``split`` in the columns of ``state``."""
    if state.kind == "bow":
        X = split.feature_rows().astype(np.float32)
        if X.shape[1] != state.n_features:
            raise UserError(f"the {split.name} split has {X.shape[1]} features; the model was fitted on "
                            f"{state.n_features}")
        return _mark_empty_rows(_l2_normalise(X), state)
    if split.texts is None:
        raise UserError(f"the {split.name} split has no texts but the TF-IDF state was fitted on texts")
    if not state.vocabulary:  # fitted on documents that were all without features
        return _mark_empty_rows(sp.csr_matrix((len(split), 0), dtype=np.float32), state)
    from sklearn.feature_extraction.text import CountVectorizer

    counter = CountVectorizer(
        ngram_range=(1, state.ngram_max), lowercase=state.lowercase, dtype=np.float32,
        vocabulary={term: j for j, term in enumerate(state.vocabulary)},
    )
    return _mark_empty_rows(_weight(counter.transform(split.iter_texts()).tocsr(), state), state)


def _mark_empty_rows(X: sp.csr_matrix, state: TfidfState) -> sp.csr_matrix:
    """With ``state.empty_feature``: one more column, 1.0 in the rows that have no feature at all."""
    if not state.empty_feature:
        return X
    empty = np.flatnonzero(np.diff(X.indptr) == 0)
    marker = sp.csr_matrix((np.ones(len(empty), np.float32), (empty, np.zeros(len(empty), np.int64))),
                           shape=(X.shape[0], 1))
    return sp.hstack([X, marker], format="csr", dtype=np.float32)


def save_tfidf(state: TfidfState, folder: Path) -> None:
    """Write the state as JSON (options, vocabulary) and ``.npz`` (idf): no pickle."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / STATE_JSON, {
        "kind": state.kind, "n_features": state.n_features, "ngram_max": state.ngram_max,
        "sublinear_tf": state.sublinear_tf, "lowercase": state.lowercase,
        "empty_feature": state.empty_feature,
    })
    if state.kind == "text":
        write_json(folder / VOCAB_JSON, state.vocabulary)
        with atomic_path(folder / IDF_NPZ) as tmp, open(tmp, "wb") as f:
            np.savez(f, idf=state.idf.astype(np.float32))


def load_tfidf(folder: Path) -> TfidfState:
    folder = Path(folder)
    meta = read_json_object(folder / STATE_JSON, required=("kind", "n_features"))
    try:
        state = TfidfState(**meta)
    except TypeError:
        raise UserError(f"{folder / STATE_JSON}: damaged or written by another version "
                        f"(entries {sorted(meta)})") from None
    if state.kind == "text":
        state.vocabulary = read_json(folder / VOCAB_JSON)
        state.idf = read_npz(folder / IDF_NPZ, ("idf",))["idf"]
        if not isinstance(state.vocabulary, list) or len(state.vocabulary) != state.n_features \
                or len(state.idf) != state.n_features:
            raise UserError(f"{folder}: TF-IDF vocabulary, idf and n_features disagree (a damaged model?)")
    return state


def _smooth_idf(counts: sp.csr_matrix) -> np.ndarray:
    """ln((1 + n) / (1 + df)) + 1, scikit-learn's default: the +1s keep every idf finite and positive."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


def _weight(counts: sp.csr_matrix, state: TfidfState) -> sp.csr_matrix:
    """Counts -> (sublinear) tf * idf, L2-normalised rows; in place on ``counts``."""
    counts.sort_indices()
    if state.sublinear_tf:
        np.log(counts.data, out=counts.data)
        counts.data += 1.0
    counts.data *= state.idf[counts.indices]
    return _l2_normalise(counts)


def _l2_normalise(X: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty); float32 CSR with sorted indices."""
    from sklearn.preprocessing import normalize

    X = sp.csr_matrix(X, dtype=np.float32)
    X.sum_duplicates()  # also sorts indices, which omikuji and liblinear expect
    if X.shape[1] == 0:  # no feature column at all (every document empty): nothing to scale
        return X
    return normalize(X, norm="l2", copy=False)
