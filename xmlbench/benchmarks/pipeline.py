"""``xmlbench bench pipeline synth-amazon670k``: the whole clustered pipeline at a real size on this
machine: generate, load, tokenisation cache, label clustering, a bounded number of training steps with
the tiny encoder, top-100 prediction for every test document, evaluation. Reports time per stage and peak
resident memory (target on 2 cores / 24 GB: under 12 GB, no stage slower than linear in its input)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from xmlbench.benchmarks import BENCHMARKS, Benchmark
from xmlbench.runs import record as rec


def bench_pipeline(dataset: str = "synth-amazon670k", steps: int = 20, out: str = "",
                   label_top_k: int | None = None) -> dict[str, Any]:
    from xmlbench.data.dataset import resolve_dataset_path
    from xmlbench.runs.runner import RunOptions, run

    t0 = time.perf_counter()
    path, _ = resolve_dataset_path(dataset)  # generates a synthetic preset on first use
    generate_s = time.perf_counter() - t0
    overrides = {"mode": "clustered", "max_steps": steps, "epochs": 1, "eval_every": 0, "max_len": 64,
                 "batch_size": 32, "eval_batch_size": 256, "swa_warmup": -1, "checkpoint_every": 0}
    if label_top_k is not None:
        overrides["label_feature_top_k"] = label_top_k
    run_dir = Path(out or f"runs/bench/pipeline-{Path(dataset).name}")
    opts = RunOptions(dataset=dataset, model="lightxml", preset="smoke", out=str(run_dir), overrides=overrides,
                      valid_size=valid_size_for(path), resume=True, progress=True,
                      command=f"xmlbench bench pipeline {dataset}")
    record = run(opts)
    stages = {"generate_or_find": round(generate_s, 1), **record["timing_s"]}
    return {
        "dataset": record["dataset"],
        "steps": steps,
        "stages_s": stages,
        "peak_rss_gb": round(rec.peak_rss_mb() / 1024, 2),
        "test_metrics": {k: round(v, 2) for k, v in record["metrics"]["test"].items() if k in ("P@1", "P@5")},
        "run_dir": str(run_dir),
    }


def valid_size_for(folder: Path) -> float:
    """5,000 validation documents at the sizes this benchmark is for; 10 % on a small dataset, where
    5,000 would leave no training documents at all."""
    labels = folder / "train_labels.txt"
    n_train = 0
    if labels.is_file():
        with open(labels, "rb") as f:
            n_train = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    return 5000.0 if n_train >= 50_000 else 0.1


BENCHMARKS.register("pipeline", Benchmark(
    "pipeline", "the whole clustered pipeline at a real size: time per stage and peak memory",
    lambda options: bench_pipeline(options.dataset or "synth-amazon670k", steps=options.steps,
                                   label_top_k=options.extra.get("label_top_k")),
    default_dataset="synth-amazon670k"))
