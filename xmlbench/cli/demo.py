"""``./run.sh demo``: the main job on the embedded synthetic default, offline, on a CPU, in minutes.

Every step is the command a user would type (run through the same CLI entry point), so the demo is also
an end-to-end check: synthetic data -> baselines -> LightXML flat and clustered -> a small ablation ->
a results table with published numbers beside ours -> plots. Re-running it skips finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from xmlbench.errors import UserError

DATASET = "small"  # synthetic: 3,000 train / 1,000 test documents, ~500 labels (xmlbench data list)
ABLATION_DATASET = "tiny"
# The demo shows the pipeline, not converged models: a bounded number of steps keeps it to minutes on 2 CPU
# cores. A tiny randomly initialised encoder needs far more steps than this to beat label frequency.
DEMO_BUDGET = ["--set", "max_len=32", "--set", "max_steps=120", "--set", "epochs=2", "--set", "swa_warmup=1"]


def steps(root: Path) -> list[tuple[str, list[str]]]:
    runs = root / "runs"
    common = ["--resume", "--no-progress"]
    return [
        ("label-frequency baseline (the floor)",
         ["train", DATASET, "--model", "label-frequency", "--out", str(runs / "label-frequency"), *common]),
        ("TF-IDF + one-vs-rest linear SVM",
         ["train", DATASET, "--model", "tfidf-ovr", "--out", str(runs / "tfidf-ovr"), *common]),
        ("LightXML, flat (tiny random encoder, a bounded number of steps)",
         ["train", DATASET, "--model", "lightxml", "--preset", "smoke", "--set", "mode=flat", *DEMO_BUDGET,
          "--out", str(runs / "lightxml-flat"), *common]),
        ("LightXML, clustered (generator + discriminator, dynamic negative sampling)",
         ["train", DATASET, "--model", "lightxml", "--preset", "smoke", "--set", "mode=clustered", *DEMO_BUDGET,
          "--out", str(runs / "lightxml-clustered"), *common]),
        ("a small ablation of the four variants (clustered, 2 seeds)",
         ["ablate", ABLATION_DATASET, "--preset", "smoke", "--seeds", "2", "--mode", "clustered",
          "--root", str(root / "ablation"), "--set", "max_len=24", "--set", "max_steps=16",
          "--set", "epochs=2", "--set", "swa_warmup=1", "--no-progress"]),
        ("the results table, with published numbers and plots",
         ["table", str(runs), "--reference", "--out", str(root / "table.md"), "--plots", str(root / "plots"),
          "--index", str(root)]),
    ]


def run_demo(root: Path) -> int:
    from xmlbench.cli import main

    t_start = time.perf_counter()
    for i, (title, argv) in enumerate(steps(root), 1):
        print(f"\n== demo step {i}: {title}\n$ xmlbench {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        code = main(argv)
        if code:
            raise UserError(f"demo step {i} failed (exit {code}): xmlbench {' '.join(argv)}")
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print((root / "table.md").read_text(encoding="utf-8"))
    print(f"demo finished in {time.perf_counter() - t_start:.0f} s; results, plots and run index in {root}/")
    return 0


def add_commands(sub) -> None:
    d = sub.add_parser("demo", help="the main job on synthetic data, offline, on a CPU, in minutes")
    d.add_argument("--root", default="results/demo", help="where runs, tables and plots go")
    d.set_defaults(func=lambda args: run_demo(Path(args.root)))
