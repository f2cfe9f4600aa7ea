"""``./run.sh demo``: the main job on real text, offline, on a CPU, in about five minutes.

The data is a committed, public-domain slice of us-congress-bills (``demo/us-congress-bills``: 800 train /
300 test bill summaries, 2,176 subject labels; provenance and licence in its README), and the encoder is
the pretrained MiniLM that ``run.sh`` installs (all-MiniLM-L6-v2, offline). Real words let a pretrained
encoder help, which a random encoder on synthetic text cannot do in minutes (it sits at the label prior
for thousands of steps).

Every step is the command a user would type (run through the same CLI entry point), so the demo is also
an end-to-end check: baselines -> LightXML flat and clustered with the fair default recipe -> a smoke
ablation of the variants -> a results table with published numbers beside ours -> plots. Re-running it
skips finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.paths import CHECKOUT_ROOT

DATASET = CHECKOUT_ROOT / "demo" / "us-congress-bills"
# One epoch of 720 documents at 48 tokens: about a minute per LightXML run on 2 cores (with the fair
# recipe one epoch is enough to leave the prior: validation P@1 65 after the first epoch at 64 tokens, label
# frequency 25). No SWA: nothing to average in one epoch. Leaves of 16 labels and 16 clusters kept make the
# clustered head a real shortlist (about 270 of 2,461 labels) rather than every label.
BUDGET = ["--encoder", "minilm", "--set", "max_len=48", "--set", "epochs=1", "--set", "swa_warmup=-1",
          "--set", "eval_batch_size=64"]
CLUSTERED = ["--set", "mode=clustered", "--set", "leaf_size=16", "--set", "top_b=16"]
# One seed, 8 steps of 16 documents at 32 tokens per arm: it runs every switch end to end (and reports
# each one's diagnostics); it measures nothing.
ABLATION_BUDGET = ["--encoder", "minilm", "--set", "max_len=32", "--set", "epochs=1", "--set", "max_steps=8",
                   "--set", "swa_warmup=-1", "--set", "leaf_size=16", "--set", "top_b=16",
                   "--set", "eval_batch_size=64"]


def steps(root: Path) -> list[tuple[str, list[str]]]:
    runs = root / "runs"
    common = ["--resume", "--no-progress"]
    data = str(DATASET)
    return [
        ("label-frequency baseline (the floor)",
         ["train", data, "--model", "label-frequency", "--out", str(runs / "label-frequency"), *common]),
        ("TF-IDF + one-vs-rest linear SVM",
         ["train", data, "--model", "tfidf-ovr", "--out", str(runs / "tfidf-ovr"), *common]),
        ("LightXML, flat (pretrained MiniLM, fair default recipe)",
         ["train", data, "--model", "lightxml", "--set", "mode=flat", *BUDGET,
          "--out", str(runs / "lightxml-flat"), *common]),
        ("LightXML, clustered (generator + discriminator, dynamic negative sampling)",
         ["train", data, "--model", "lightxml", *CLUSTERED, *BUDGET, "--out", str(runs / "lightxml-clustered"),
          *common]),
        ("a SMOKE CHECK of the four variants (clustered, 1 seed, 8 steps per arm: it runs every switch end to "
         "end and prints no significance; a real ablation needs >= 3 seeds and a full budget)",
         ["ablate", data, "--seeds", "1", "--mode", "clustered", "--root", str(root / "ablation"),
          *ABLATION_BUDGET, "--no-progress"]),
        ("the results table, with published numbers and plots",
         ["table", str(runs), "--reference", "--out", str(root / "table.md"), "--plots", str(root / "plots"),
          "--index", str(root)]),
    ]


def run_demo(root: Path) -> int:
    from xmlbench.cli import main

    if not (DATASET / "train_texts.txt").is_file():
        raise UserError(f"{DATASET}: the demo's data is missing (it ships with the checkout)")
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
    d = sub.add_parser("demo", help="the main job on real text (a public-domain slice), offline, on a CPU")
    d.add_argument("--root", default="results/demo", help="where runs, tables and plots go")
    d.set_defaults(func=lambda args: run_demo(Path(args.root)))
