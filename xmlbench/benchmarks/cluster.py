"""Benchmark of the label clustering (:mod:`xmlbench.models.lightxml.clustering`), optionally against PECOS.

The reference point is PECOS's binary hierarchical k-means (Yu et al. 2020, Algorithm 1; ``nr_splits=2``,
``max_leaf_size=100``), which builds the same kind of balanced spherical 2-means tree. When ``libpecos`` is
importable it runs on the same features in the same process, and the report gives the ratio ours / PECOS.

Memory is reported two ways: the peak resident set size of the process (``ru_maxrss``, which includes
everything allocated before the call, such as the features) and the increase of the resident set during
the call, sampled from ``/proc/self/statm`` by a background thread (our kernels release the GIL, so it keeps
sampling while they run). ``tracemalloc`` would miss numba's and PECOS's allocations, so it is not used.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit
from scipy import sparse

from xmlbench.benchmarks import BENCHMARKS, Benchmark, BenchOptions, readme_markers, run_with_readme
from xmlbench.models.lightxml.clustering import balanced_clusters, tree_depth

#: Amazon-670K's label count and bag-of-words vocabulary (XMC repository version).
AMAZON670K_LABELS = 670_091
AMAZON670K_VOCAB = 135_909
README_BEGIN, README_END = readme_markers("cluster")


def bench_cluster(
    features: sparse.csr_matrix, leaf_size: int = 100, seed: int = 0, compare_pecos: bool = True
) -> dict[str, Any]:
    """Time :func:`balanced_clusters` on ``features`` (and PECOS's hierarchical k-means when available).

    Numba compilation is done on a tiny matrix first and reported separately, so ``seconds`` is the
    clustering alone.
    """
    load_before = os.getloadavg()[0]  # before this bench's own work raises it: the neighbours' load
    features = sparse.csr_matrix(features, dtype=np.float32)
    report: dict[str, Any] = {
        "n_labels": features.shape[0],
        "vocab": features.shape[1],
        "nnz": int(features.nnz),
        "leaf_size": leaf_size,
        "seed": seed,
        "threads": numba.get_num_threads(),
        "cpus": os.cpu_count(),
        "depth": tree_depth(features.shape[0], leaf_size),
    }
    report["compile_seconds"] = _time(lambda: balanced_clusters(_tiny_features(), leaf_size=2, seed=seed))[0]
    seconds, rss_increase, leaves = _measure(
        lambda: balanced_clusters(features, leaf_size=leaf_size, seed=seed)
    )
    sizes = np.array([len(leaf) for leaf in leaves])
    report.update(
        seconds=seconds,
        rss_increase_mb=rss_increase / 2**20,
        n_leaves=len(leaves),
        leaf_min=int(sizes.min()) if sizes.size else 0,
        leaf_max=int(sizes.max()) if sizes.size else 0,
    )
    report["versions"] = _versions()  # PECOS needs older numpy and scipy: which ones made this row
    report["pecos"] = _bench_pecos(features, leaf_size, seed) if compare_pecos else None
    if report["pecos"] is not None and "seconds" in report["pecos"]:
        report["ratio_vs_pecos"] = seconds / report["pecos"]["seconds"]
    report["peak_rss_mb"] = _peak_rss_bytes() / 2**20
    report["load_avg_1m"] = load_before  # bench_cluster_dataset gives the one before its TF-IDF instead
    return report


def bench_cluster_dataset(dataset: str = "synth-amazon670k", leaf_size: int = 100, seed: int = 0,
                          max_features: int = 200_000, top_k: int | None = None) -> dict[str, Any]:
    """``xmlbench bench cluster DATASET``: LightXML's label features from the training texts (TF-IDF,
    normalize(Y^T X), each label's ``top_k`` largest entries with ``--label-top-k``), then the clustering
    benchmark on them, with the time of each step."""
    from xmlbench.data.dataset import open_dataset
    from xmlbench.data.features import fit_tfidf
    from xmlbench.models.lightxml.clustering import label_features

    load_before = os.getloadavg()[0]  # before this bench's own work raises it: the neighbours' load
    ds = open_dataset(dataset, progress=True)
    tfidf_seconds, (_, docs) = _time(lambda: fit_tfidf(ds.train, max_features=max_features))
    feature_seconds, features = _time(lambda: label_features(docs, ds.train.labels, top_k=top_k))
    docs = None  # the document matrix is not needed for the clustering itself; free it first
    n_docs, name = (len(ds.train), len(ds.test)), ds.name
    ds = None  # nor are the texts
    report = bench_cluster(features, leaf_size=leaf_size, seed=seed)
    report.update(dataset=name, n_train=n_docs[0], n_test=n_docs[1], tfidf_seconds=tfidf_seconds,
                  label_feature_seconds=feature_seconds, label_feature_top_k=top_k, load_avg_1m=load_before)
    return report


def _bench_pecos(features: sparse.csr_matrix, leaf_size: int, seed: int) -> dict[str, Any] | None:
    """PECOS's binary hierarchical k-means on the same features, or None if ``libpecos`` is not installed.

    libpecos 1.2.8 declares numpy < 2 and scipy < 1.14 and fails inside ``Indexer.gen`` on newer scipy
    (``scipy.sparse.sputils`` is gone), so a failure is reported as ``{"error": ...}`` rather than raised.
    """
    try:
        from pecos.xmc import Indexer
    except ImportError:
        return None

    def run() -> Any:
        return Indexer.gen(
            features, indexer_type="hierarchicalkmeans", nr_splits=2, max_leaf_size=leaf_size, seed=seed,
            threads=numba.get_num_threads(),
        )

    try:
        seconds, rss_increase, chain = _measure(run)
    except Exception as error:  # an incompatible install; the benchmark of ours still stands
        return {"error": f"{type(error).__name__}: {error}"}
    sizes = np.diff(chain[-1].indptr)  # the last chain level is the L x K label-to-leaf matrix (CSC)
    return {
        "seconds": seconds,
        "rss_increase_mb": rss_increase / 2**20,
        "n_leaves": int(sizes.size),
        "leaf_min": int(sizes.min()),
        "leaf_max": int(sizes.max()),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("numpy", "scipy", "numba", "libpecos"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _tiny_features() -> sparse.csr_matrix:
    """A 4-label matrix with the dtypes of real features, to trigger (or load) the numba compilation."""
    return sparse.csr_matrix(np.eye(4, 3, dtype=np.float32))


def _time(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def _measure(function: Callable[[], Any]) -> tuple[float, int, Any]:
    """Run ``function``; return its wall time, the increase of the resident set during it, and its result."""
    sampler = _RssSampler()
    sampler.start()
    try:
        seconds, result = _time(function)
    finally:
        sampler.stop()
    return seconds, sampler.increase, result


class _RssSampler:
    """Samples the process's resident set every few milliseconds; ``increase`` is peak minus baseline."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._baseline = _current_rss_bytes()
        self._peak = self._baseline

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _current_rss_bytes())

    @property
    def increase(self) -> int:
        return max(0, self._peak - self._baseline)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._peak = max(self._peak, _current_rss_bytes())


def _current_rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere falls back to the peak, which only grows)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process; ``ru_maxrss`` is in KiB on Linux and bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------------------------------------------
# Synthetic label features
# ---------------------------------------------------------------------------------------------------------


def random_label_features(
    n_labels: int = AMAZON670K_LABELS,
    vocab: int = AMAZON670K_VOCAB,
    nnz: int = 64_000_000,
    seed: int = 0,
    n_topics: int = 2000,
) -> sparse.csr_matrix:
    """An Amazon-670K-shaped (n_labels x vocab, about ``nnz`` non-zeros) L2-normalised float32 CSR.

    Only the shape and some structure are realistic: row lengths are log-normal (a long tail, like labels
    with few documents), and each label mixes words from a power-law "common words" distribution with words
    from one of ``n_topics`` topic windows of the vocabulary, so the clustering has groups to find. Duplicate
    draws within a row are merged, so the result has slightly fewer than ``nnz`` non-zeros.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(mean=0.0, sigma=1.0, size=n_labels)
    lengths = np.clip(np.rint(lengths * (nnz / lengths.sum())), 1, vocab).astype(np.int64)
    indptr = np.zeros(n_labels + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    total = int(indptr[-1])
    topic_start = rng.integers(0, vocab, size=n_topics)
    topic_width = max(1, vocab // 50)
    label_topic = rng.integers(0, n_topics, size=n_labels)
    # power-law ranks: u**3 puts most mass on the first columns (density ~ x^(-2/3)), like word frequencies
    common = (vocab * rng.random(total, dtype=np.float32) ** 3).astype(np.int32)
    in_topic = (topic_width * rng.random(total, dtype=np.float32) ** 2).astype(np.int32)
    use_topic = rng.random(total, dtype=np.float32) < 0.5
    row_topic_start = np.repeat(topic_start[label_topic], lengths)
    columns = np.where(use_topic, (row_topic_start + in_topic) % vocab, common).astype(np.int32)
    del common, in_topic, use_topic, row_topic_start
    values = rng.exponential(size=total).astype(np.float32)
    new_indptr = _sort_merge_rows(indptr, columns, values)
    kept = int(new_indptr[-1])
    matrix = sparse.csr_matrix(
        (values[:kept], columns[:kept], new_indptr), shape=(n_labels, vocab), copy=False
    )
    return matrix


@njit(nogil=True, cache=True)
def _sort_merge_rows(indptr, columns, values):
    """Sort each row's columns, sum repeated ones, L2-normalise, and compact the rows to the front.

    Works in place on ``columns``/``values`` and returns the new indptr.
    """
    n_rows = indptr.shape[0] - 1
    kept = np.zeros(n_rows + 1, dtype=np.int64)
    for row in range(n_rows):
        start, stop = indptr[row], indptr[row + 1]
        order = np.argsort(columns[start:stop])
        row_columns = columns[start:stop][order]
        row_values = values[start:stop][order]
        count = 0
        for i in range(row_columns.shape[0]):
            if count > 0 and row_columns[i] == columns[start + count - 1]:
                values[start + count - 1] += row_values[i]
            else:
                columns[start + count] = row_columns[i]
                values[start + count] = row_values[i]
                count += 1
        norm = 0.0
        for i in range(count):
            norm += values[start + i] * values[start + i]
        for i in range(count):
            values[start + i] /= np.float32(np.sqrt(norm))
        kept[row + 1] = count
    new_indptr = np.cumsum(kept)
    # compaction moves rows left only, so doing it in row order never overwrites a row not yet moved
    for row in range(n_rows):
        source, target = indptr[row], new_indptr[row]
        for i in range(kept[row + 1]):
            columns[target + i] = columns[source + i]
            values[target + i] = values[source + i]
    return new_indptr


def format_bench(report: dict[str, Any]) -> str:
    """Human-readable summary of a :func:`bench_cluster` report."""
    lines = [
        f"label clustering: {report['n_labels']:,} labels x {report['vocab']:,} features, "
        f"{report['nnz']:,} non-zeros, leaf size {report['leaf_size']}, seed {report['seed']}, "
        f"{report['threads']} threads",
        f"  ours : {report['seconds']:.1f}s (numba compile/load {report['compile_seconds']:.1f}s), "
        f"+{report['rss_increase_mb']:.0f} MiB resident, {report['n_leaves']:,} leaves of "
        f"{report['leaf_min']}-{report['leaf_max']} labels (depth {report['depth']})",
    ]
    pecos = report.get("pecos")
    if pecos is not None and "error" in pecos:
        lines.append(f"  PECOS: failed ({pecos['error']})")
    elif pecos is not None:
        lines.append(
            f"  PECOS: {pecos['seconds']:.1f}s, +{pecos['rss_increase_mb']:.0f} MiB resident, "
            f"{pecos['n_leaves']:,} leaves of {pecos['leaf_min']}-{pecos['leaf_max']} labels"
        )
        lines.append(f"  ours / PECOS = {report['ratio_vs_pecos']:.2f}")
    else:
        lines.append("  PECOS: not run (libpecos not installed)")
    lines.append(f"  peak resident set of the process: {report['peak_rss_mb']:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m xmlbench.benchmarks.cluster [n_labels vocab nnz]``: benchmark on random features."""
    args = [int(a.replace("_", "")) for a in (argv if argv is not None else sys.argv[1:])]
    shape = dict(zip(("n_labels", "vocab", "nnz"), args))
    started = time.perf_counter()
    features = random_label_features(**shape)
    print(f"random features: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print(format_bench(bench_cluster(features)))


if __name__ == "__main__":
    main()


def pecos_cell(report: dict[str, Any]) -> str:
    pecos = report.get("pecos")
    if pecos is None:
        return "not installed"
    if "error" in pecos:
        return "failed"
    return f"{pecos['seconds']:.1f} ({report['ratio_vs_pecos']:.2f}x)"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The README block: one row per dataset and label top-k measured, from the saved results."""
    lines = ["| dataset | labels | features | non-zeros | label top-k | TF-IDF (s) | label features (s) | "
             "clustering (s) | + resident (MiB) | leaves | PECOS (s, ours / PECOS) | peak RSS (GB) | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in sorted(results, key=lambda r: (r["n_labels"], str(r.get("dataset")), r.get("label_feature_top_k") or 0)):
        lines.append(
            f"| {r.get('dataset', 'random features')} | {r['n_labels']:,} | {r['vocab']:,} | {r['nnz']:,} | "
            f"{r.get('label_feature_top_k') or 'all'} | {r.get('tfidf_seconds', 0):.1f} | "
            f"{r.get('label_feature_seconds', 0):.1f} | {r['seconds']:.1f} | {r['rss_increase_mb']:,.0f} | "
            f"{r['n_leaves']:,} of {r['leaf_min']}-{r['leaf_max']} | {pecos_cell(r)} | "
            f"{r['peak_rss_mb'] / 1024:.2f} | {r.get('load_avg_1m', float('nan')):.2f} on {r.get('cpus', '?')} "
            f"cores, {r['threads']} threads |")
    return "\n".join(lines)


def _run(options: BenchOptions) -> dict[str, Any]:
    def measure() -> dict[str, Any]:
        return bench_cluster_dataset(options.dataset or "synth-amazon670k", top_k=options.extra.get("label_top_k"))

    def key(result: dict[str, Any]) -> str:
        top_k = result["label_feature_top_k"]
        return result["dataset"] + (f"-top{top_k}" if top_k else "")

    return run_with_readme(options, "cluster", measure, key, markdown_table)


BENCHMARKS.register("cluster", Benchmark(
    "cluster", "label clustering from a dataset's training texts (beside PECOS when installed)",
    _run, format_bench, default_dataset="synth-amazon670k", writes_readme=True))
