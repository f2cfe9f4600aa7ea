"""``xmlbench bench pipeline synth-amazon670k``: the whole clustered pipeline at a real size on this
machine: generate, load, tokenisation cache, label clustering, a bounded number of training steps with
the tiny encoder, top-100 prediction for every test document, evaluation. Reports time per stage and peak
resident memory (target on 2 cores / 24 GB: under 12 GB, no stage slower than linear in its input)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from xmlbench.benchmarks import BENCHMARKS, Benchmark
from xmlbench.runs import record as rec


def bench_pipeline(dataset: str = "synth-amazon670k", steps: int = 20, out: str = "",
                   label_top_k: int | None = None, test_docs: int | None = None) -> dict[str, Any]:
    """``test_docs``: predict and evaluate only the first N test documents (a dataset folder beside the run
    whose train files are links to the real ones): at Amazon-3M's 742,507 test documents the prediction
    alone takes an hour on 2 cores; its time per document is what scales."""
    from xmlbench.data.dataset import resolve_dataset_path
    from xmlbench.runs.runner import RunOptions, run

    load_before = os.getloadavg()[0]  # before this bench's own work raises it: the neighbours' load
    t0 = time.perf_counter()
    path, _ = resolve_dataset_path(dataset)  # generates a synthetic preset on first use
    generate_s = time.perf_counter() - t0
    # the options that make another run are in the folder's name: a changed one starts a new run instead of
    # being refused as "started with another config"
    suffix = (f"-top{label_top_k}" if label_top_k is not None else "") + \
        (f"-test{test_docs}" if test_docs is not None else "")
    name = Path(dataset).name  # the dataset's, not the --test-docs folder's
    run_dir = Path(out or f"runs/bench/pipeline-{name}{suffix}")
    if test_docs is not None:
        dataset = str(first_test_documents(path, test_docs, run_dir.with_name(run_dir.name + "-data")))
    overrides = {"mode": "clustered", "max_steps": steps, "epochs": 1, "eval_every": 0, "max_len": 64,
                 "batch_size": 32, "eval_batch_size": 256, "swa_warmup": -1, "checkpoint_every": 0}
    if label_top_k is not None:
        overrides["label_feature_top_k"] = label_top_k
    opts = RunOptions(dataset=dataset, model="lightxml", preset="smoke", out=str(run_dir), overrides=overrides,
                      valid_size=valid_size_for(path), resume=True, progress=sys.stderr.isatty(),
                      command=f"xmlbench bench pipeline {dataset}")
    record = run(opts)
    stages = {"generate_or_find": round(generate_s, 1), **record["timing_s"]}
    return {
        "name": name,
        "dataset": record["dataset"],
        "steps": steps,
        "test_docs": record["dataset"]["n_test"],
        "label_feature_top_k": record["config"].get("label_feature_top_k"),
        "label_embedding_update": record.get("model_details", {}).get("label_embedding_update"),
        "stages_s": stages,
        "peak_rss_gb": round(rec.peak_rss_mb() / 1024, 2),
        "peak_rss_gb_after_stage": {k: round(v / 1024, 2) for k, v in
                                    record.get("peak_rss_mb_after_stage", {}).items()},
        "test_metrics": {k: round(v, 2) for k, v in record["metrics"]["test"].items() if k in ("P@1", "P@5")},
        "run_dir": str(run_dir),
        "load_avg_1m": round(load_before, 2),
    }


README_BEGIN = "<!-- pipeline:begin (written by: xmlbench bench pipeline DATASET --readme) -->"
README_END = "<!-- pipeline:end -->"
STAGES = (("load", "load"), ("fit.prepare", "clustering"), ("fit.tokenise", "tokenise"), ("fit.train", "train"),
          ("predict_test", "predict test"))


def save_result(result: dict[str, Any], results_dir: Path, readme: Path | None = None) -> Path:
    """results/pipeline/<dataset>[-options].json, machine-written, and with ``readme`` the README block
    rebuilt from every result saved there (a run this long is saved with or without ``--readme``)."""
    from xmlbench.benchmarks import save_result_and_readme
    from xmlbench.io import write_json

    path = results_dir / "pipeline" / f"{Path(result['run_dir']).name.removeprefix('pipeline-')}.json"
    if readme is not None:
        return save_result_and_readme(result, path, markdown_table, readme, (README_BEGIN, README_END))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return path


def markdown_table(results: list[dict[str, Any]]) -> str:
    head = "| dataset | train / test docs | labels | label top-k | label update | steps | " + \
        " | ".join(f"{name} (s)" for _, name in STAGES) + " | peak RSS (GB) | load |"
    lines = [head, "|---|---:|---:|---:|---|---:|" + "---:|" * len(STAGES) + "---:|---:|"]
    for r in results:
        d = r["dataset"]
        times = " | ".join(f"{r['stages_s'].get(key, 0):.0f}" for key, _ in STAGES)
        lines.append(f"| {r.get('name', d['name'])} | {d['n_train']:,} / {r['test_docs']:,} | {d['n_labels']:,} | "
                     f"{r.get('label_feature_top_k') or 'all'} | {r.get('label_embedding_update') or 'not recorded'} | "
                     f"{r['steps']} | {times} | {r['peak_rss_gb']:.2f} | "
                     f"{r.get('load_avg_1m', '')} |")
    return "\n".join(lines)


def first_test_documents(folder: Path, n: int, out: Path) -> Path:
    """A dataset folder whose train files link to ``folder``'s and whose test split is its first ``n``
    documents (rewritten only when ``n`` or the source changed)."""
    from xmlbench.errors import UserError

    if n < 1:
        raise UserError(f"--test-docs {n}: must be at least 1")
    names = ("train_texts.txt", "train_labels.txt", "test_texts.txt", "test_labels.txt")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(f"--test-docs: {folder} has no {missing[0]}; it works on text-format folders "
                        f"({', '.join(names)})")
    source = [(folder / name).stat() for name in names]
    stamp = f"{folder.resolve()} {n} " + " ".join(f"{s.st_size}:{s.st_mtime_ns}" for s in source)
    if (out / ".subset").is_file() and (out / ".subset").read_text() == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in names[:2]:
        link = out / name
        link.unlink(missing_ok=True)
        link.symlink_to((folder / name).resolve())
    for name in names[2:]:
        with open(folder / name, encoding="utf-8") as src, open(out / name, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i >= n:
                    break
                dst.write(line)
    (out / ".subset").write_text(stamp)
    return out


def valid_size_for(folder: Path) -> float:
    """5,000 validation documents at the sizes this benchmark is for; 10 % on a small dataset, where
    5,000 would leave no training documents at all."""
    labels = folder / "train_labels.txt"
    n_train = 0
    if labels.is_file():
        with open(labels, "rb") as f:
            n_train = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    return 5000.0 if n_train >= 50_000 else 0.1


def _run(options) -> dict[str, Any]:
    from xmlbench.benchmarks import readme_text
    from xmlbench.paths import CHECKOUT_ROOT

    readme = CHECKOUT_ROOT / "README.md" if options.extra.get("readme") else None
    if readme is not None:
        readme_text(readme, README_BEGIN, README_END)  # its markers are there, before the run rather than after
    result = bench_pipeline(options.dataset or "synth-amazon670k", steps=options.steps,
                            label_top_k=options.extra.get("label_top_k"), test_docs=options.extra.get("test_docs"))
    result["saved"] = str(save_result(result, CHECKOUT_ROOT / "results", readme))
    return result


BENCHMARKS.register("pipeline", Benchmark(
    "pipeline", "the whole clustered pipeline at a real size: time per stage and peak memory",
    _run,
    default_dataset="synth-amazon670k", writes_readme=True))
