"""``xmlbench bench scaling``: time and peak memory of each component against the number of labels.

Sizes are label counts (``4k`` = Eurlex-4K's 3,956 ... ``3m`` = Amazon-3M's 2,812,281); every other count
follows Amazon-670K's ratios, so each size has real-sized documents per label: 0.732 training and 0.228
test documents per label, 5.45 labels per document, ~95 non-zero label-feature entries per label over
Amazon-670K's 135,909-word vocabulary. The components:

* ``cluster``  : LightXML's balanced 2-means label clustering (leaf size 100) on random label features;
* ``metrics``  : ``evaluate`` (every family at k = 1, 3, 5 with propensities) on the test-sized split;
* ``tree-fit`` / ``tree-predict``: the tree baseline (omikuji, its default config) on random features in
  which every label has signature words, fit on the training-sized split, top-100 for the test split;
* ``tree-lowmem-fit`` / ``tree-lowmem-predict``: the same with ``--preset low-memory``'s config (one tree,
  label-centroid entries below 0.1 pruned), the one the README names where the default does not fit;
* ``step`` / ``predict``: one clustered LightXML training step and top-100 prediction of one batch, tiny
  encoder, max_len 128 (per step / per document of the batch);
* ``step-sparse``: the same step with ``label_embedding_update: sparse`` (the lazy AdamW over the step's
  candidate rows instead of a dense AdamW step over every label's row).

Each (component, size) runs in a fresh Python process, so its peak resident set (``ru_maxrss``) is its
own; the parent stops a point that passes ``MAX_RSS_GB`` or ``timeout_s`` and records why. Results go to
``results/scaling/scaling.csv`` (machine-written; a point measured again replaces its old row), a log-log
plot with a least-squares slope per component, and, with ``--readme``, the README's marked block.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from xmlbench.benchmarks import BENCHMARKS, Benchmark, BenchOptions, write_readme_block
from xmlbench.errors import UserError
from xmlbench.paths import CHECKOUT_ROOT

SIZES = {"4k": 3_956, "30k": 30_938, "130k": 130_000, "670k": 670_091, "3m": 2_812_281}
# Each job is one child process per size, and writes these rows (the tree's predict needs its fit, and
# LightXML's step and prediction share a network); a component is one row.
_ROWS_OF_JOB = {"cluster": ("cluster",), "metrics": ("metrics",), "tree": ("tree-fit", "tree-predict"),
                "tree-lowmem": ("tree-lowmem-fit", "tree-lowmem-predict"), "step": ("step", "predict"),
                "step-sparse": ("step-sparse",)}
_JOB_OF = {row: job for job, rows in _ROWS_OF_JOB.items() for row in rows}
COMPONENTS = tuple(_JOB_OF)
TRAIN_PER_LABEL = 490_449 / 670_091
TEST_PER_LABEL = 153_025 / 670_091
LABELS_PER_DOC = 5.45
FEATURE_NNZ_PER_LABEL = 64_000_000 / 670_091
VOCAB = 135_909
DOC_NNZ = 70  # TF-IDF non-zeros of a ~100-word product document
MAX_RSS_GB = 20.0  # of this machine's 24 GB: a point beyond it is stopped and recorded as such
CSV_FIELDS = ("component", "size", "n_labels", "seconds", "unit", "peak_rss_gb", "status", "load_avg_1m")
README_BEGIN = "<!-- scaling:begin (written by: xmlbench bench scaling --readme) -->"
README_END = "<!-- scaling:end -->"


def parse_sizes(text: str) -> list[str]:
    sizes = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if not sizes or bad:
        raise UserError(f"unknown size {', '.join(bad) or repr(text)}; sizes: {', '.join(SIZES)}")
    return sizes


def parse_components(text: str) -> list[str]:
    parts = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in parts if c not in COMPONENTS]
    if not parts or bad:
        raise UserError(f"unknown component {', '.join(bad) or repr(text)}; components: {', '.join(COMPONENTS)}")
    return [job for job in _ROWS_OF_JOB if any(_JOB_OF[c] == job for c in parts)]


# ------------------------------------------------------------------------------------- one point (child)


def measure(component: str, n_labels: int) -> list[dict[str, Any]]:
    """Rows for one component at one label count (run in its own process by :func:`bench_scaling`)."""
    if component == "cluster":
        return [_time_cluster(n_labels)]
    if component == "metrics":
        return [_time_metrics(n_labels)]
    if component == "tree":
        return _time_tree(n_labels)
    if component == "tree-lowmem":
        return _time_tree(n_labels, low_memory=True)
    if component == "step":
        return _time_step(n_labels)
    if component == "step-sparse":
        return [{**_time_step(n_labels, "sparse")[0], "component": "step-sparse"}]
    raise ValueError(f"unknown component {component!r}")


def _time_cluster(n_labels: int) -> dict[str, Any]:
    from xmlbench.benchmarks.cluster import random_label_features
    from xmlbench.models.lightxml.clustering import balanced_clusters

    features = random_label_features(n_labels, VOCAB, int(FEATURE_NNZ_PER_LABEL * n_labels),
                                     n_topics=max(2, min(2000, n_labels // 300)))
    # numba compilation (or cache load), not timed: a 4-row warm-up left some kernels to compile inside
    # the timed call (the first 4k point measured 34.9 s, the 30k point after it 5.8 s)
    balanced_clusters(features[: min(n_labels, 2_000)], leaf_size=100)
    t0 = time.perf_counter()
    balanced_clusters(features, leaf_size=100)
    return {"component": "cluster", "seconds": time.perf_counter() - t0, "unit": "s per clustering"}


def _time_metrics(n_labels: int) -> dict[str, Any]:
    from xmlbench.benchmarks.metrics import bench_metrics

    report = bench_metrics(n=max(1, round(TEST_PER_LABEL * n_labels)), n_labels=n_labels, fresh_process=False)
    return {"component": "metrics", "seconds": report["evaluate_warm_s"], "unit": "s per evaluate"}


def random_bow(rng: np.random.Generator, labels, vocab: int = VOCAB, doc_nnz: int = DOC_NNZ,
               signature: int = 4, chunk_docs: int = 200_000):
    """TF-IDF-like rows: each document holds its labels' ``signature`` words plus random background words
    (L2-normalised float32), so a tree has something to learn.

    Built ``chunk_docs`` documents at a time: built at once, its temporaries peaked at 3.1 GB at 670k
    labels (measured), about 13 GB by extrapolation at Amazon-3M's shape (2.7M documents, 250M entries),
    which a tree point's peak memory would then report as the tree's."""
    import scipy.sparse as sp

    n, n_labels = labels.shape
    words = rng.integers(0, vocab, size=(n_labels, signature), dtype=np.int64)
    blocks = []
    for start in range(0, n, chunk_docs):
        part = labels[start:start + chunk_docs]
        m = part.shape[0]
        label_rows = np.repeat(np.arange(m), np.diff(part.indptr))
        sig_rows = np.repeat(label_rows, signature)
        sig_cols = words[part.indices].ravel()
        bg_rows = np.repeat(np.arange(m), doc_nnz)
        bg_cols = (vocab * rng.random(m * doc_nnz) ** 3).astype(np.int64)  # Zipf-like common words
        rows = np.concatenate([sig_rows, bg_rows])
        cols = np.concatenate([sig_cols, bg_cols])
        X = sp.csr_matrix((rng.random(rows.size, dtype=np.float32) + 0.5, (rows, cols)), shape=(m, vocab))
        X.sum_duplicates()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        blocks.append((sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ X).tocsr())
    return sp.vstack(blocks, format="csr") if len(blocks) != 1 else blocks[0]


def _time_tree(n_labels: int, low_memory: bool = False) -> list[dict[str, Any]]:
    from xmlbench.benchmarks.metrics import random_truth
    from xmlbench.models.baselines.tree import (
        TreeConfig,
        hyper_params,
        low_memory_preset,
        predict_forest,
        require_omikuji,
        write_xc_repo_file,
    )

    require_omikuji()
    import omikuji

    rng = np.random.default_rng(0)
    n_train, n_test = round(TRAIN_PER_LABEL * n_labels), max(1, round(TEST_PER_LABEL * n_labels))
    _phase("generate")
    labels = random_truth(rng, n_train + n_test, n_labels, LABELS_PER_DOC)
    X = random_bow(rng, labels)
    # the preset's own overrides, not a copy of them: the row measures what `--preset low-memory` trains
    cfg = TreeConfig(**low_memory_preset(None, "")) if low_memory else TreeConfig()
    with tempfile.TemporaryDirectory(prefix="xmlbench-scaling-") as tmp:
        path = Path(tmp) / "train.txt"
        _phase("write")
        write_xc_repo_file(path, X[:n_train], labels[:n_train], n_labels)
        X_test = X[n_train:]
        del X, labels  # omikuji reads the file: the fit's memory should be the tree's, not our copy
        _phase("fit")
        t0 = time.perf_counter()
        forest = omikuji.Model.train_on_data(str(path), hyper_params(cfg), n_threads=cfg.n_threads)
        fit_s = time.perf_counter() - t0
    _phase("predict")
    forest.init_prediction_thread_pool(cfg.n_threads)
    forest.densify_weights(cfg.max_sparse_density)
    t0 = time.perf_counter()
    predict_forest(forest, X_test, 100, cfg.beam_size)
    predict_s = time.perf_counter() - t0
    fit_name, predict_name = _ROWS_OF_JOB["tree-lowmem" if low_memory else "tree"]
    return [{"component": fit_name, "seconds": fit_s, "unit": "s per fit"},
            {"component": predict_name, "seconds": predict_s / n_test, "unit": "s per document"}]


def _time_step(n_labels: int, label_update: str = "dense") -> list[dict[str, Any]]:
    from xmlbench.benchmarks.throughput import bench_throughput

    batch = 32
    r = bench_throughput(encoder="tiny", max_len=128, mode="clustered", n_labels=n_labels, batch_size=batch,
                         steps=4, warmup=1, amp="off", label_update=label_update)
    return [{"component": "step", "seconds": batch / r["train_docs_per_s"], "unit": "s per step (32 docs)"},
            {"component": "predict", "seconds": 1.0 / r["predict_docs_per_s"], "unit": "s per document"}]


PHASE_MARK = "scaling-phase: "


def _phase(name: str) -> None:
    """Say on stderr what the child is doing, so a point stopped for memory or time says during what."""
    print(PHASE_MARK + name, file=sys.stderr, flush=True)


def last_phase(stderr: str) -> str:
    marks = [line[len(PHASE_MARK):].strip() for line in stderr.splitlines() if line.startswith(PHASE_MARK)]
    return marks[-1] if marks else ""


def _child_main(component: str, n_labels: int) -> None:
    rows = measure(component, n_labels)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps([{**row, "peak_rss_gb": peak_gb} for row in rows]))


# ------------------------------------------------------------------------------------- the sweep (parent)


def run_point(component: str, size: str, timeout_s: float, max_rss_gb: float = MAX_RSS_GB) -> list[dict]:
    """Measure one point in a child process; a point stopped for time or memory gets a row saying so."""
    n_labels = SIZES[size]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT_ROOT), env.get("PYTHONPATH")) if p)
    code = f"from xmlbench.benchmarks.scaling import _child_main; _child_main({component!r}, {n_labels})"
    load = os.getloadavg()[0]  # before the child's own work raises it: the neighbours' load
    status, peak, out, err, returncode = run_child([sys.executable, "-c", code], env, timeout_s, max_rss_gb)
    base = {"size": size, "n_labels": n_labels, "load_avg_1m": round(load, 2)}
    names = _ROWS_OF_JOB[component]
    if status == "ok" and returncode != 0:
        last = (err.strip().splitlines() or ["no output"])[-1]
        status = f"failed: {last[:160]}"
    if status != "ok":
        if last_phase(err):
            status += f" during {last_phase(err)}"
        return [{**base, "component": name, "seconds": "", "unit": "", "peak_rss_gb": round(peak, 2),
                 "status": status} for name in names]
    rows = json.loads(out.strip().splitlines()[-1])
    return [{**base, **row, "seconds": float(f"{row['seconds']:.6g}"), "peak_rss_gb": round(row["peak_rss_gb"], 2),
             "status": "ok"} for row in rows]


def run_child(argv: list[str], env: dict[str, str], timeout_s: float,
              max_rss_gb: float) -> tuple[str, float, str, str, int]:
    """Run ``argv``, sampling its resident set; (status, peak GB, stdout, stderr, return code)."""
    started = time.monotonic()
    # The child's output goes to files, not pipes: this loop polls without reading, and a child that writes
    # more than a pipe holds (omikuji's progress lines: ~1 MB at 4k labels) would block on the write forever.
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        with subprocess.Popen(argv, env=env, stdout=out_f, stderr=err_f, text=True) as child:
            status, peak = "ok", 0.0
            while child.poll() is None:
                rss = _rss_gb(child.pid)
                peak = max(peak, rss)
                if rss > max_rss_gb or time.monotonic() - started > timeout_s:
                    status = (f"stopped: over {max_rss_gb:g} GB" if rss > max_rss_gb
                              else f"stopped: over {timeout_s:g} s")
                    child.kill()
                    break
                time.sleep(0.25)
            child.wait()
        out_f.seek(0)
        err_f.seek(0)
        return status, peak, out_f.read(), err_f.read(), child.returncode


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def fitted_slopes(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per component, least-squares slopes of log(time) and log(peak memory) against log(labels)."""
    out: dict[str, dict[str, float]] = {}
    for component in COMPONENTS:
        ok = [r for r in rows if r["component"] == component and r["status"] == "ok"]
        if len({r["n_labels"] for r in ok}) < 2:
            continue
        x = np.log([float(r["n_labels"]) for r in ok])
        out[component] = {
            "time": float(np.polyfit(x, np.log([float(r["seconds"]) for r in ok]), 1)[0]),
            "memory": float(np.polyfit(x, np.log([float(r["peak_rss_gb"]) for r in ok]), 1)[0]),
        }
    return out


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The old rows with every (component, size) measured again replaced; ordered by component, size."""
    keyed = {(r["component"], r["size"]): r for r in old}
    keyed.update({(r["component"], r["size"]): r for r in new})
    return sorted(keyed.values(), key=lambda r: (COMPONENTS.index(r["component"]), int(r["n_labels"])))


def write_csv(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...] = CSV_FIELDS) -> None:
    from xmlbench.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: Path, rows: list[dict[str, Any]], slopes: dict[str, dict[str, float]]) -> bool:
    """Log-log time and memory against labels, one line per component; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for component in COMPONENTS:
        ok = [r for r in rows if r["component"] == component and r["status"] == "ok"]
        if not ok:
            continue
        x = [float(r["n_labels"]) for r in ok]
        slope = slopes.get(component)
        label_t = f"{component} (slope {slope['time']:.2f})" if slope else component
        label_m = f"{component} (slope {slope['memory']:.2f})" if slope else component
        ax_t.loglog(x, [float(r["seconds"]) for r in ok], "o-", label=label_t)
        ax_m.loglog(x, [float(r["peak_rss_gb"]) for r in ok], "o-", label=label_m)
    ax_t.set(xlabel="labels", ylabel="seconds (unit per component: see CSV)", title="time")
    ax_m.set(xlabel="labels", ylabel="peak resident set, GB", title="peak memory (whole process)")
    for ax in (ax_t, ax_m):
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown_table(rows: list[dict[str, Any]], slopes: dict[str, dict[str, float]]) -> str:
    lines = ["| component | labels | time | unit | peak RSS (GB) | status | load |", "|---|---:|---:|---|---:|---|---:|"]
    for r in rows:
        seconds = f"{float(r['seconds']):.4g}" if r["seconds"] not in ("", None) else "-"
        lines.append(f"| {r['component']} | {int(r['n_labels']):,} | {seconds} | {r['unit']} | "
                     f"{float(r['peak_rss_gb']):.2f} | {r['status']} | {r['load_avg_1m']} |")
    if slopes:
        lines += ["", "Fitted log-log slopes (time, memory): " + "; ".join(
            f"{c} {s['time']:.2f}, {s['memory']:.2f}" for c, s in slopes.items())]
    return "\n".join(lines)


def bench_scaling(sizes: list[str], components: list[str], out_dir: Path, timeout_s: float = 1800.0,
                  readme: Path | None = None) -> dict[str, Any]:
    new: list[dict[str, Any]] = []
    csv_path = out_dir / "scaling.csv"
    rows = read_csv(csv_path)
    for component in components:  # no components: only rewrite the plot and the README from the CSV
        for size in sizes:
            print(f"scaling: {component} at {size} labels ...", file=sys.stderr, flush=True)
            point = run_point(component, size, timeout_s)
            new += point
            rows = merge_rows(rows, point)
            write_csv(csv_path, rows)  # after every point: a sweep stopped halfway keeps what it measured
    slopes = fitted_slopes(rows)
    plot = out_dir / "scaling.png"
    plotted = write_plot(plot, rows, slopes)
    if readme is not None:
        image = f"\n\n![scaling]({plot.relative_to(readme.parent)})" if plotted and plot.is_relative_to(
            readme.parent) else ""
        write_readme_block(readme, markdown_table(rows, slopes) + image, README_BEGIN, README_END)
    return {"measured": new, "rows": rows, "slopes": slopes, "csv": str(csv_path),
            "plot": str(plot) if plotted else None}


def format_bench(result: dict[str, Any]) -> str:
    lines = [f"scaling: {len(result['measured'])} points measured; all rows in {result['csv']}",
             markdown_table(result["rows"], result["slopes"])]
    lines.append(f"plot: {result['plot']}" if result["plot"] else "plot: not drawn (pip install matplotlib)")
    return "\n".join(lines)


def _run(options: BenchOptions) -> dict[str, Any]:
    extra = options.extra
    if options.dataset:
        raise UserError("bench scaling takes no dataset (its data are synthetic); use --sizes")
    only_readme = extra.get("readme") and not (extra.get("sizes") or extra.get("components"))
    sizes = parse_sizes(extra.get("sizes") or "4k,30k,130k")
    components = [] if only_readme else parse_components(extra.get("components") or ",".join(COMPONENTS))
    timeout_s = float(extra["timeout_s"]) if extra.get("timeout_s") is not None else 1800.0
    readme = CHECKOUT_ROOT / "README.md" if extra.get("readme") else None
    return bench_scaling(sizes, components, CHECKOUT_ROOT / "results" / "scaling", timeout_s, readme)


BENCHMARKS.register("scaling", Benchmark(
    "scaling", "time and peak memory of clustering, metrics, tree, LightXML step/predict from 4k to 3M labels",
    _run, format_bench, writes_readme=True))
