"""Label identity: a label id means something only together with the label names of the data that gave it.

Label ids follow first appearance in each dataset's train file (:class:`LabelVocab`), so the same data with
its train lines in another order gives the same labels other ids. Whatever carries ids from one label space
to another (a saved model predicting a dataset, saved predictions scored against a dataset, an ensemble
summing runs) maps them here, by name, and nowhere else.

Convention: a label the target does not have maps to -1, which every metric counts as a miss. It keeps its
rank: the model did predict it there, and for that dataset it is a wrong prediction (the P@k denominator
stays k). -1 stays -1, and an id outside the source's names maps to -1 too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from xmlbench.data.readers import LabelVocab
from xmlbench.errors import UserError

if TYPE_CHECKING:
    from xmlbench.data.dataset import Dataset

Names = Sequence[str] | np.ndarray | LabelVocab


def names_array(names: Names) -> np.ndarray:
    """Label names as a numpy unicode array (what ``predictions.npz`` stores: loads without pickle)."""
    if isinstance(names, LabelVocab):
        names = names.names
    arr = np.asarray(names)
    if arr.size == 0:
        return np.zeros(0, dtype="<U1")
    if arr.dtype.kind != "U":
        arr = arr.astype(str)
    return arr


def label_table(from_names: Names, to_names: Names) -> np.ndarray:
    """int64 table: entry i is the id in ``to_names`` of label ``from_names[i]``, or -1 where it has none.

    Vectorised: one sort of the target's names and one ``searchsorted`` (no Python loop over labels)."""
    src, dst = names_array(from_names), names_array(to_names)
    if len(src) == len(dst) and np.array_equal(src, dst):  # the common case: same label order
        return np.arange(len(src), dtype=np.int64)
    if len(dst) == 0 or len(src) == 0:
        return np.full(len(src), -1, dtype=np.int64)
    common = np.promote_types(src.dtype, dst.dtype)  # compare '<U7' with '<U12' as one string type
    src, dst = src.astype(common), dst.astype(common)
    order = np.argsort(dst, kind="stable")  # stable: a repeated target name resolves to its first id
    pos = np.minimum(np.searchsorted(dst[order], src), len(dst) - 1)
    return np.where(dst[order][pos] == src, order[pos], -1).astype(np.int64)


def map_ids(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Ids through a :func:`label_table`; -1 and ids outside the table become -1. Keeps dtype and shape."""
    ids = np.asarray(ids)
    out = np.full(ids.shape, -1, dtype=ids.dtype)
    valid = (ids >= 0) & (ids < len(table))
    out[valid] = table[ids[valid]]
    return out


def remap_ids(ids: np.ndarray, from_names: Names, to_names: Names) -> np.ndarray:
    """Label ids of ``from_names``'s space -> names -> ids of ``to_names``'s space (-1: not there)."""
    return map_ids(ids, label_table(from_names, to_names))


def match_labels(from_names: Names, to_names: Names, what: str, onto: str) -> np.ndarray:
    """:func:`label_table`, refused with one line when not a single name matches: ids of two unrelated
    label sets (or of numbered labels against named ones) would only ever score 0, which reads as a result."""
    table = label_table(from_names, to_names)
    if len(table) and not (table >= 0).any():
        src, dst = names_array(from_names), names_array(to_names)
        raise UserError(
            f"{what}: none of its {len(src)} label names (e.g. {_examples(src)}) is a label of {onto} "
            f"({len(dst)} labels, e.g. {_examples(dst)}); the labels cannot be matched"
        )
    return table


def _examples(names: np.ndarray, n: int = 3) -> str:
    return ", ".join(repr(str(x)) for x in names[:n]) or "none"


def union_names(name_lists: Iterable[Names]) -> np.ndarray:
    """Every name of the lists, in order of first appearance (the first list keeps its ids)."""
    seen: dict[str, None] = {}
    for names in name_lists:
        seen.update(dict.fromkeys(names_array(names).tolist()))
    return names_array(list(seen))


def relabel_rows(labels: sp.csr_matrix, table: np.ndarray, n_labels: int) -> sp.csr_matrix:
    """A label matrix with its columns mapped through ``table`` (entries mapped to -1 are dropped)."""
    labels = sp.csr_matrix(labels)
    cols = map_ids(labels.indices.astype(np.int64), table)
    keep = cols >= 0
    rows = np.repeat(np.arange(labels.shape[0]), np.diff(labels.indptr))[keep]
    out = sp.csr_matrix((labels.data[keep], (rows, cols[keep])), shape=(labels.shape[0], n_labels),
                        dtype=labels.dtype)
    out.sort_indices()
    return out


def in_label_space(ds: Dataset, names: Names) -> Dataset:
    """``ds`` with label ids following ``names`` (e.g. a saved model's labels): what the model is rebuilt
    on. Label matrices are mapped too, so nothing in the view mixes the two id orders."""
    names = names_array(names)
    if len(names) == ds.n_labels and np.array_equal(names, names_array(ds.label_names)):
        return ds
    table = label_table(ds.label_names, names)

    def split(s):
        return None if s is None else dataclasses.replace(s, labels=relabel_rows(s.labels, table, len(names)))

    return dataclasses.replace(ds, label_names=names.tolist(), train=split(ds.train), test=split(ds.test),
                               valid=split(ds.valid))


@dataclass(frozen=True)
class Truth:
    """True labels of a split with what their ids mean, for scoring saved predictions by label name.

    ``fingerprint`` is the dataset's: a predictions file saved before files carried label names is scored
    only against the very data its run was made on (same fingerprint, hence the same ids)."""

    labels: sp.csr_matrix
    label_names: Sequence[str] | np.ndarray
    fingerprint: str = ""
    dataset: str = ""  # its name, for messages

    @classmethod
    def test_of(cls, ds: Dataset) -> Truth:
        return cls(ds.test.labels, ds.label_names, ds.fingerprint, ds.name)

    def describe(self) -> str:
        return f"dataset {self.dataset}" if self.dataset else "the dataset scored"
