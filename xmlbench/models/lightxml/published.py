"""The original's published label clusters: ``label_group{N}.npy`` in the dataset folder (N = 0, 1, 2, the
three clusterings of its ensemble; ``run.sh`` unzips them into ``data/Amazon-670K`` or ``data/Wiki-500K``
and ``main.py`` loads ``label_group{--group_y_group}.npy``).

Format, from its ``cluster.py``: ``np.save`` of one list of label NAMES per cluster (the strings of
``train_labels.txt``), ragged, so a pickled object array; a 2-D array when every cluster has the same size.
Integer entries are read as our label ids instead (a 2-D integer array may pad with -1, as
``clusters_to_arrays`` does).

Checks, each a UserError naming the file: every entry is a known label (or an id in range), no label is in
two clusters, no cluster is empty or larger than ``leaf_size``, and every label with a training document
has a cluster. The original's files cover the labels of train only; labels without a training document
that the file leaves out (e.g. Amazon-670K's test-only labels, which the original gives garbage cluster
ids) get extra clusters of their own, in label-id order, as large as the file's largest cluster.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from xmlbench.errors import UserError


def published_file(folder: Path, cluster_seed: int) -> Path:
    """Where the original's clustering number ``cluster_seed`` sits in a dataset folder."""
    return Path(folder) / f"label_group{cluster_seed}.npy"


def load_published_clusters(path: Path, label_names: list[str], train_counts: np.ndarray,
                            leaf_size: int) -> tuple[list[np.ndarray], int]:
    """(leaves as int32 label-id arrays partitioning ``range(L)``, labels added in extra clusters)."""
    clusters = _read(path)
    by_name = {name: i for i, name in enumerate(label_names)}
    leaves = [_leaf_ids(path, k, leaf, by_name, len(label_names)) for k, leaf in enumerate(clusters)]
    if not leaves:
        raise UserError(f"{path}: holds no clusters")
    _check_sizes(path, leaves, leaf_size)
    seen = np.zeros(len(label_names), dtype=np.int64)
    for leaf in leaves:
        np.add.at(seen, leaf, 1)
    if (seen > 1).any():
        label = int(np.flatnonzero(seen > 1)[0])
        raise UserError(f"{path}: label {label_names[label]!r} is in {int(seen[label])} clusters; each label "
                        "must be in exactly one")
    missing = np.flatnonzero(seen == 0)
    trained = missing[np.asarray(train_counts)[missing] > 0]
    if trained.size:
        raise UserError(f"{path}: {trained.size} label(s) with training documents have no cluster, e.g. "
                        f"{label_names[int(trained[0])]!r}; is the file from another version of the dataset?")
    width = max(len(leaf) for leaf in leaves)
    extra = [missing[i : i + width].astype(np.int32) for i in range(0, missing.size, width)]
    return leaves + extra, int(missing.size)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, their dtypes and plain values, nothing else: the original's files are
    pickled object arrays (one array of label ids or names per cluster), and a pickle may otherwise name any
    callable (``os.system``) for loading to run."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "str"), ("builtins", "int")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which a label-cluster file never needs")


def _load_npy(path: Path) -> np.ndarray:
    """An .npy file, its object arrays unpickled by ``_ArraysOnly`` (never ``allow_pickle=True``)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
    with open(path, "rb") as f:  # an object array: the .npy header, then the array's pickle
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read_header(f)
        return _ArraysOnly(f).load()


def _read(path: Path) -> list:
    try:
        # The original's files are pickled object arrays (ragged lists): read without running any code.
        data = _load_npy(path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise UserError(f"{path}: cannot read the published label clusters ({e})") from None
    nested = isinstance(data, np.ndarray) and (data.ndim == 2 or (data.ndim == 1 and data.dtype == object))
    if not nested:
        shape = getattr(data, "shape", type(data).__name__)
        raise UserError(f"{path}: expected one list of labels per cluster (the original's label_group "
                        f"format), got an array of shape {shape}")
    if data.ndim == 2 and data.dtype.kind in "iu":
        return [row[row >= 0] for row in data]  # -1 pads the rows of a rectangular id array
    return list(data)


def _leaf_ids(path: Path, k: int, leaf, by_name: dict[str, int], n_labels: int) -> np.ndarray:
    """Cluster ``k``'s labels as ids: names looked up, integers taken as ids and checked against the range."""
    items = np.asarray(leaf, dtype=object).reshape(-1).tolist()
    ids = np.empty(len(items), dtype=np.int64)
    for j, item in enumerate(items):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < n_labels:
                raise UserError(f"{path}: cluster {k} has label id {int(item)}, outside 0..{n_labels - 1}")
            ids[j] = int(item)
        elif isinstance(item, str):
            if item not in by_name:
                raise UserError(f"{path}: cluster {k} names label {item!r}, which no split of the dataset "
                                "has")
            ids[j] = by_name[item]
        else:
            raise UserError(f"{path}: cluster {k} holds {item!r}; expected label names or label ids")
    return ids.astype(np.int32)


def _check_sizes(path: Path, leaves: list[np.ndarray], leaf_size: int) -> None:
    sizes = np.array([len(leaf) for leaf in leaves])
    if (sizes == 0).any():
        raise UserError(f"{path}: cluster {int(np.flatnonzero(sizes == 0)[0])} is empty")
    if sizes.max() > leaf_size:
        k = int(sizes.argmax())
        raise UserError(f"{path}: cluster {k} has {int(sizes[k])} labels, more than leaf_size {leaf_size} "
                        f"(the original's clusters hold at most 100); --set leaf_size={int(sizes[k])} "
                        "allows it")
