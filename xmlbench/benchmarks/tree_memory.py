"""``xmlbench bench tree-memory [DATASET]``: the tree baseline's memory / time / precision trade-off.

Each configuration of the grid below is one ``xmlbench train DATASET --model tree`` run in its own process
(so its peak resident set, the record's ``ru_maxrss``, is its own), with ``bench pipeline``'s validation
split (5,000 documents on large data); a configuration whose run folder already holds a finished run is read, not trained
again. Results go to ``results/tree-memory/<dataset>.csv`` (machine-written; a configuration measured again
replaces its row) and, with ``--readme``, the README's marked block. The default config of ``tree`` is
chosen from this table (README "Tree memory").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from xmlbench.benchmarks import BENCHMARKS, Benchmark, BenchOptions
from xmlbench.errors import UserError
from xmlbench.paths import CHECKOUT_ROOT

# name: (what it is, --set overrides of the tree's config)
GRID: dict[str, tuple[str, dict[str, Any]]] = {
    "parallel3": ("3 trees trained at once (omikuji's own default; ours before this table)",
                  {"trees_in_parallel": True}),
    "serial3": ("3 trees, one after another (the default)", {}),
    "serial1": ("1 tree", {"n_trees": 1}),
    "serial1-100k": ("1 tree, 100k TF-IDF features", {"n_trees": 1, "max_features": 100_000}),
    "serial1-ct0.1": ("1 tree, label-centroid entries below 0.1 pruned (`--preset low-memory`)",
                      {"n_trees": 1, "centroid_threshold": 0.1}),
    "serial3-ct0.1": ("3 trees, label-centroid entries below 0.1 pruned", {"centroid_threshold": 0.1}),
}
CSV_FIELDS = ("config", "description", "overrides", "peak_rss_gb", "fit_s", "predict_ms_per_doc",
              "model_mb", "P@1", "P@3", "P@5", "n_train", "n_test", "run_dir")
README_BEGIN = "<!-- tree-memory:begin (written by: xmlbench bench tree-memory --readme) -->"
README_END = "<!-- tree-memory:end -->"


def parse_configs(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()] or list(GRID)
    bad = [n for n in names if n not in GRID]
    if bad:
        raise UserError(f"unknown tree-memory config {', '.join(bad)}; configs: {', '.join(GRID)}")
    return names


def measure_config(dataset: str, name: str, run_root: Path, timeout_s: float) -> dict[str, Any]:
    """Train (or read) one configuration and return its table row."""
    import json

    from xmlbench.benchmarks.scaling import run_child
    from xmlbench.runs.record import is_complete, read_record

    description, overrides = GRID[name]
    run_dir = run_root / name
    if not is_complete(run_dir):
        from xmlbench.benchmarks.pipeline import valid_size_for
        from xmlbench.data.dataset import resolve_dataset_path

        valid = valid_size_for(resolve_dataset_path(dataset)[0])
        argv = [sys.executable, "-m", "xmlbench", "train", dataset, "--model", "tree", "--valid-size", str(valid),
                "--out", str(run_dir), "--no-progress", "--resume"]
        for key, value in overrides.items():
            argv += ["--set", f"{key}={json.dumps(value)}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT_ROOT), env.get("PYTHONPATH")) if p)
        print(f"tree-memory: {name} on {dataset} ...", file=sys.stderr, flush=True)
        # 22 of the 24 GB, not scaling's 20: the old default (parallel3) peaked at 19.2 GB on synth-amazon670k
        status, _, _, err, code = run_child(argv, env, timeout_s, max_rss_gb=22.0)
        if status != "ok" or code != 0:
            last = (err.strip().splitlines() or [status])[-1]
            raise UserError(f"tree-memory {name}: the run did not finish ({status}; {last[:200]}); its folder "
                            f"{run_dir} resumes on the next call")
    record = read_record(run_dir)
    timing, test = record["timing_s"], record["metrics"]["test"]
    model_bytes = sum(f.stat().st_size for f in (run_dir / "model").rglob("*") if f.is_file())
    return {"config": name, "description": description, "overrides": json.dumps(overrides),
            "peak_rss_gb": round(record["peak_rss_mb"] / 1024, 2), "fit_s": round(timing["fit"], 1),
            "predict_ms_per_doc": round(1000 * timing["predict_test"] / record["dataset"]["n_test"], 3),
            "model_mb": round(model_bytes / 2**20, 1), "P@1": round(test["P@1"], 2), "P@3": round(test["P@3"], 2),
            "P@5": round(test["P@5"], 2), "n_train": record["dataset"]["n_train"],
            "n_test": record["dataset"]["n_test"], "run_dir": str(run_dir)}


def markdown_table(rows: list[dict[str, Any]], dataset: str) -> str:
    lines = [f"Tree baseline on {dataset} (`xmlbench bench tree-memory {dataset}`; 2 threads):", "",
             "| config | what | peak RSS (GB) | fit (s) | predict (ms/doc) | model on disk (MB) | P@1 | P@3 | P@5 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['description']} | {float(r['peak_rss_gb']):.2f} | {float(r['fit_s']):.0f} | "
                     f"{float(r['predict_ms_per_doc']):.2f} | {float(r['model_mb']):.0f} | {float(r['P@1']):.2f} | "
                     f"{float(r['P@3']):.2f} | {float(r['P@5']):.2f} |")
    return "\n".join(lines)


def bench_tree_memory(dataset: str, configs: list[str], timeout_s: float, readme: Path | None,
                      results_dir: Path = CHECKOUT_ROOT / "results",
                      run_root: Path = CHECKOUT_ROOT / "runs" / "bench") -> dict[str, Any]:
    from xmlbench.benchmarks import readme_text, write_readme_block
    from xmlbench.benchmarks.scaling import read_csv, write_csv

    name = Path(dataset).name
    if readme is not None:  # before hours of training, not after
        write_readme_block(readme, readme_text(readme, README_BEGIN, README_END), README_BEGIN, README_END)
    csv_path = results_dir / "tree-memory" / f"{name}.csv"
    rows = {r["config"]: r for r in read_csv(csv_path)}
    for config in configs:
        rows[config] = measure_config(dataset, config, run_root / f"tree-memory-{name}", timeout_s)
        write_csv(csv_path, [rows[c] for c in GRID if c in rows], CSV_FIELDS)  # after each: a stopped sweep keeps its rows
    ordered = [rows[c] for c in GRID if c in rows]
    if readme is not None:  # one table per dataset measured so far
        tables = []
        for path in sorted(csv_path.parent.glob("*.csv")):
            measured = {r["config"]: r for r in read_csv(path)}
            tables.append(markdown_table([measured[c] for c in GRID if c in measured], path.stem))
        write_readme_block(readme, "\n\n".join(tables), README_BEGIN, README_END)
    return {"dataset": name, "rows": ordered, "csv": str(csv_path)}


def format_bench(result: dict[str, Any]) -> str:
    return markdown_table(result["rows"], result["dataset"]) + f"\n\nrows in {result['csv']}"


def _run(options: BenchOptions) -> dict[str, Any]:
    extra = options.extra
    timeout_s = float(extra["timeout_s"]) if extra.get("timeout_s") is not None else 4 * 3600.0
    readme = CHECKOUT_ROOT / "README.md" if extra.get("readme") else None
    return bench_tree_memory(options.dataset or "synth-amazon670k", parse_configs(extra.get("components") or ""),
                             timeout_s, readme)


BENCHMARKS.register("tree-memory", Benchmark(
    "tree-memory", "the tree baseline's peak memory, time and P@k for a grid of configs (--components: "
    f"{', '.join(GRID)})", _run, format_bench, default_dataset="synth-amazon670k",
    writes_readme=True))
