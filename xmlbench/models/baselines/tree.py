"""``tree``: partitioned label trees over TF-IDF features, via the Omikuji library (PyPI ``omikuji``).

``mode = "parabel"``: Parabel (Prabhu et al., WWW 2018): label centroids are split recursively by balanced
2-means into a deep binary tree (leaves of <= ``min_branch_size`` labels); every node and every leaf label
gets an L2-regularised linear classifier (squared hinge, weights below 0.1 pruned); 3 trees; beam search
at prediction. ``mode = "bonsai"``: Bonsai (Khandagale et al., 2019): unbalanced k-means with k = 100 and
depth <= 3, i.e. shallow and wide trees, slower to train and a little more precise. Omikuji's README shows
both matching the original implementations on Amazon-670K (P@1 44.8 and 45.6).

Omikuji trains from a file in the Extreme Classification Repository format, so ``fit`` writes the TF-IDF
rows to a temporary file in the run folder. Omikuji's clustering draws from an unseeded RNG: two fits of the
same data may differ slightly (a saved model predicts deterministically).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import scipy.sparse as sp

from xmlbench.config import Count, NonNegativeFloat, Positive, Range, to_dict
from xmlbench.data.dataset import Dataset, Split
from xmlbench.data.features import TfidfState, fit_tfidf, load_tfidf, save_tfidf, transform_tfidf
from xmlbench.errors import UserError
from xmlbench.io import write_json
from xmlbench.models.base import FitContext, Model, restored_shell, save_label_names

MODE_DEFAULTS = {
    # mode: (cluster_k, balanced clustering, max_depth), as in Omikuji's README for each method
    "parabel": (2, True, 20),
    "bonsai": (100, False, 3),
}


@dataclass(frozen=True)
class TreeConfig:
    mode: Literal["parabel", "bonsai"] = "parabel"
    n_trees: Annotated[int, Range(1, 1000)] = 3  # each tree is a full model's memory
    # omikuji's default trains the trees at the same time, each holding its own copies of the examples and
    # label centroids along its current path; one after the other keeps one tree's working set at a time
    # (same algorithm, same threads inside each tree: README "Tree memory" has the measured trade-off)
    trees_in_parallel: bool = False
    # unigrams, capped at 200k: synth-amazon670k (441k docs, 670k labels, 3 trees) peaked at 19 GB;
    # n_trees = 1 needs about a third of the model memory
    ngram_max: Annotated[int, Range(1, 5)] = 1
    min_df: Count = 2
    max_features: Count = 200_000
    sublinear_tf: bool = True
    # None: the mode's value (2 for parabel, 100 for bonsai)
    cluster_k: Annotated[int, Range(2)] | None = None
    max_depth: Count | None = None  # None: the mode's value (20 for parabel, 3 for bonsai)
    min_branch_size: Count = 100  # labels below which a node becomes a leaf
    # Parabel's pruning of label-centroid entries below this value before the tree is clustered (omikuji's
    # default 0 keeps them all); the centroids are most of what is resident before the first tree
    centroid_threshold: Annotated[float, Range(0, 1)] = 0.0
    linear_loss: Literal["hinge", "log"] = "hinge"  # omikuji's "hinge" is liblinear's squared hinge
    linear_c: Positive = 1.0
    linear_eps: Positive = 0.1
    linear_max_iter: Count = 20
    weight_threshold: NonNegativeFloat = 0.1  # Parabel's pruning of tiny weights
    beam_size: Count = 10
    # weight vectors denser than this are stored dense for prediction (a share of the features)
    max_sparse_density: Annotated[float, Range(0, 1)] = 0.1
    n_threads: Annotated[int, Range(1, 256)] = 2


MANY_LABELS = 300_000  # above this, a multi-tree fit says what it will cost and names the low-memory preset


def low_memory_preset(ds, encoder: str) -> dict[str, Any]:
    """One tree, label-centroid entries below 0.1 pruned: on synth-amazon670k 5.8 GB instead of the
    default's 13.3 GB, and P@1/3/5 within 1 point of it there and on us-congress-bills (README "Tree
    memory" has both tables)."""
    return {"n_trees": 1, "centroid_threshold": 0.1}


class Tree(Model):
    name = "tree"

    def __init__(self, config: TreeConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        require_omikuji()
        self.tfidf: TfidfState | None = None
        self.forest = None  # omikuji.Model
        self._densified = False

    def fit(self, ctx: FitContext) -> dict[str, Any]:
        import omikuji

        cfg = self.config
        ctx.log(f"tree: TF-IDF on {len(ctx.train)} training documents")
        # empty_feature: documents without features are trained on like any other (features.py)
        self.tfidf, X = fit_tfidf(ctx.train, max_features=cfg.max_features, ngram_max=cfg.ngram_max,
                                  min_df=cfg.min_df, sublinear_tf=cfg.sublinear_tf, empty_feature=True)
        data_path = ctx.run_dir / "omikuji_train.txt"
        ctx.log(f"tree: writing {X.shape[0]} x {X.shape[1]} rows ({X.nnz:,} non-zeros) for omikuji")
        write_xc_repo_file(data_path, X, ctx.train.labels, self.n_labels)
        del X  # omikuji re-reads the rows from the file; no need to hold both copies
        params = hyper_params(cfg)
        ctx.log(f"tree: training {cfg.mode} ({cfg.n_trees} trees) with {cfg.n_threads} threads")
        if self.n_labels > MANY_LABELS and cfg.n_trees > 1 and cfg.centroid_threshold == 0:
            ctx.log(f"tree: {cfg.n_trees} trees on {self.n_labels:,} labels need a lot of memory (3 trees at "
                    "Amazon-670K's shape: 13.3 GB); --preset low-memory peaked at 5.8 GB there, P@k within "
                    "1 point (README: Tree memory)")
        try:
            with quiet_native_output(lambda line: ctx.log(f"omikuji: {line}"), progress_every_s=60):
                self.forest = omikuji.Model.train_on_data(str(data_path), params, n_threads=cfg.n_threads)
        finally:
            data_path.unlink(missing_ok=True)
        self.forest.init_prediction_thread_pool(cfg.n_threads)  # else omikuji takes every core
        return {}

    def predict_own(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if self.tfidf is None or self.forest is None:
            raise RuntimeError("tree: predict before fit or load")
        if not self._densified:
            # as omikuji's own test command does: dense rows for the few dense (upper-node) weight
            # vectors make beam search much faster at a small memory cost
            with quiet_native_output(lambda line: None, echo=False):
                self.forest.densify_weights(self.config.max_sparse_density)
            self._densified = True
        X = transform_tfidf(self.tfidf, split)
        return predict_forest(self.forest, X, k, self.config.beam_size, progress)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_tfidf(self.tfidf, folder / "tfidf")
        with quiet_native_output(lambda line: None, echo=False):  # omikuji logs every tree it writes
            self.forest.save(str(folder / "omikuji"))  # its own folder format: settings.json + tree*.cbor
        save_label_names(folder, self.label_names)
        write_json(folder / "model.json", {"model": self.name, "config": to_dict(self.config),
                                           "library": f"omikuji {_omikuji_version()}"})

    @classmethod
    def restore(cls, folder: Path, dataset: Dataset) -> Tree:
        import omikuji

        model = restored_shell(cls, folder, dataset, TreeConfig)
        model.tfidf = load_tfidf(folder / "tfidf")
        forest = folder / "omikuji"
        if not (forest / "settings.json").is_file():
            raise UserError(f"{forest}: no saved omikuji model here (settings.json is missing)")
        try:
            with quiet_native_output(lambda line: None, echo=False):  # silence omikuji's per-tree loading log
                model.forest = omikuji.Model.load(str(forest))
        except BaseException as e:  # noqa: BLE001 - a Rust panic is a BaseException (pyo3's PanicException)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise UserError(f"{forest}: omikuji cannot load this model (damaged or truncated?)") from None
        model.forest.init_prediction_thread_pool(model.config.n_threads)
        return model

    def n_parameters(self) -> int:
        """Omikuji does not expose its weight count; 0 means unknown (see the model folder's size)."""
        return 0


def hyper_params(cfg: TreeConfig):
    """Omikuji's hyper-parameter struct for ``cfg``: the mode sets the clustering, the rest is explicit."""
    import omikuji

    k, balanced, depth = MODE_DEFAULTS[cfg.mode]
    hp = omikuji.Model.default_hyper_param()
    hp.n_trees = cfg.n_trees
    hp.train_trees_1_by_1 = not cfg.trees_in_parallel
    hp.cluster_k = cfg.cluster_k if cfg.cluster_k is not None else k
    hp.cluster_balanced = balanced
    hp.max_depth = cfg.max_depth if cfg.max_depth is not None else depth
    hp.min_branch_size = cfg.min_branch_size
    hp.centroid_threshold = cfg.centroid_threshold
    loss = omikuji.LossType.HINGE if cfg.linear_loss == "hinge" else omikuji.LossType.LOG
    hp.linear_loss_type = loss.value
    hp.linear_c = cfg.linear_c
    hp.linear_eps = cfg.linear_eps
    hp.linear_max_iter = cfg.linear_max_iter
    hp.linear_weight_threshold = cfg.weight_threshold
    return hp


def write_xc_repo_file(path: Path, X: sp.csr_matrix, Y: sp.csr_matrix, n_labels: int,
                       block: int = 20_000) -> None:
    """Extreme Classification Repository text format: a header ``n_docs n_features n_labels``, then one
    line per document, ``l1,l2,... f:v f:v ...`` (0-based ids, features sorted)."""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{X.shape[0]} feature rows but {Y.shape[0]} label rows")
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{X.shape[0]} {X.shape[1]} {n_labels}\n")
        for start in range(0, X.shape[0], block):
            f.write(_xc_lines(X[start:start + block], Y[start:start + block]))


def _xc_lines(X: sp.csr_matrix, Y: sp.csr_matrix) -> str:
    # 7 significant digits: float32 precision, so the file round-trips the matrix omikuji trains on
    pairs = [f"{i}:{v:.7g}" for i, v in zip(X.indices.tolist(), X.data.tolist())]
    labels = Y.indices.tolist()
    xp, yp = X.indptr.tolist(), Y.indptr.tolist()
    return "".join(
        ",".join(map(str, labels[yp[r]:yp[r + 1]])) + " " + " ".join(pairs[xp[r]:xp[r + 1]]) + "\n"
        for r in range(X.shape[0])
    )


def predict_forest(forest, X: sp.csr_matrix, k: int, beam_size: int, progress: bool = False,
                   block: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row, best first, -1 / -inf padded (as ``xmlbench.metrics.topk``); omikuji's scores are
    tree-averaged probabilities."""
    n = X.shape[0]
    ids = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    X = sp.csr_matrix(X)
    X.sort_indices()  # omikuji asserts increasing feature ids
    bar = _progress_bar(n, progress)
    for start in range(0, n, block):  # Python lists only for one block at a time
        rows = X[start:start + block]
        indices, data, indptr = rows.indices.tolist(), rows.data.tolist(), rows.indptr.tolist()
        for r in range(rows.shape[0]):
            pairs = list(zip(indices[indptr[r]:indptr[r + 1]], data[indptr[r]:indptr[r + 1]]))
            out = forest.predict(pairs, beam_size=beam_size, top_k=k)
            if out:
                ids[start + r, :len(out)] = [label for label, _ in out]
                scores[start + r, :len(out)] = [score for _, score in out]
        if bar is not None:
            bar.update(rows.shape[0])
    if bar is not None:
        bar.close()
    return ids, scores


def _progress_bar(n: int, progress: bool):
    if not progress or n < 20_000:
        return None
    from tqdm import tqdm

    return tqdm(total=n, desc="tree predict", unit="doc", mininterval=5)


RUST_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ +(INFO|WARN|ERROR) +\[[^\]]*\] (.*)$")
PROGRESS_BAR = re.compile(r"^\s*([A-Za-z]*)\s*(\d+) / (\d+) \[")  # pbr's "Labels 30 / 90 [===>--]"


@contextmanager
def quiet_native_output(log: Callable[[str], None], echo: bool = True,
                        progress_every_s: float = 0.0) -> Iterator[None]:
    """Filter what omikuji's Rust code prints while it runs: fds 1 and 2 go through pipes.

    Omikuji writes its log lines to stdout and redraws a progress bar on stderr for every example, label
    and tree node (hundreds of MB at Amazon-670K scale). Log lines are passed to ``log`` and, with
    ``echo``, shown on the real stderr beside the runner's own lines; of the bars, only the latest state
    is logged, every ``progress_every_s`` seconds (0: never), so a long fit shows that it is moving.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = saved[2] if echo else -1
    readers, threads = [], []
    for fd, target, extra in ((1, _forward_log_lines, ()), (2, _forward_progress, (progress_every_s,))):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        readers.append(read_fd)
        threads.append(threading.Thread(target=target, args=(read_fd, log, terminal, *extra), daemon=True))
    for t in threads:
        t.start()
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)  # drops each pipe's last write end: its reader sees end-of-file
        for t in threads:
            t.join()
        for fd in (*readers, *saved.values()):
            os.close(fd)


def _forward_log_lines(read_fd: int, log: Callable[[str], None], terminal_fd: int) -> None:
    """Pass on omikuji's log lines, without their timestamp (the runner's log adds its own)."""
    pending = b""
    while chunk := os.read(read_fd, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            match = RUST_LOG_LINE.match(raw.decode("utf-8", "replace").strip())
            if match:
                level, message = match.groups()
                _emit(message if level == "INFO" else f"{level} {message}", log, terminal_fd)


def _forward_progress(read_fd: int, log: Callable[[str], None], terminal_fd: int, every_s: float) -> None:
    """Drain the progress bars; log the latest one every ``every_s`` seconds. Whatever else reaches fd 2
    meanwhile (the echo of ``log`` itself) is dropped, which is what keeps it from looping back."""
    pending = b""
    last = time.monotonic()
    while chunk := os.read(read_fd, 1 << 16):
        *segments, pending = re.split(rb"[\r\n]", pending + chunk)
        if not every_s or time.monotonic() - last < every_s:
            continue
        for raw in reversed(segments):
            match = PROGRESS_BAR.match(raw.decode("utf-8", "replace"))
            if match:
                what, done, total = match.groups()
                _emit(f"{what or 'progress'} {int(done):,} / {int(total):,}", log, terminal_fd)
                last = time.monotonic()
                break


def _emit(message: str, log: Callable[[str], None], terminal_fd: int) -> None:
    log(message)
    if terminal_fd >= 0:
        os.write(terminal_fd, f"omikuji: {message}\n".encode())


def _omikuji_version() -> str:
    try:
        import omikuji

        return omikuji.__version__
    except ImportError:  # pragma: no cover - only in a broken environment
        return "unknown"


def require_omikuji() -> None:
    """A clear message when the optional dependency is missing."""
    try:
        import omikuji  # noqa: F401
    except ImportError:
        raise UserError("the tree model needs the omikuji package: pip install omikuji") from None
