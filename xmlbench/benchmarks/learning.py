"""``xmlbench bench learning DATASET``: how fast the neural models leave the label prior.

Trains LightXML flat, LightXML clustered and sigmoid-linear on DATASET with the fair default recipe
(``--encoder`` minilm, max_len 128, 3 epochs, no SWA) and reports validation P@1 after every epoch beside
label frequency's, from each run's ``history.jsonl``. Issue 14's failure mode was a model that stays at
the prior for ten epochs; this benchmark shows the first epochs. Runs go to ``runs/bench/learning-NAME``
and are reused when finished (delete the folder to measure again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xmlbench.benchmarks import BENCHMARKS, Benchmark, BenchOptions

EPOCHS = 3
ARMS = {  # name -> (model, overrides)
    "lightxml-flat": ("lightxml", {"mode": "flat"}),
    "lightxml-clustered": ("lightxml", {"mode": "clustered"}),
    "sigmoid-linear": ("sigmoid-linear", {}),
}


def bench_learning(dataset: str, encoder: str = "minilm", epochs: int = EPOCHS, max_len: int = 128,
                   root: str = "") -> dict[str, Any]:
    from xmlbench.runs.runner import RunOptions, run

    base = Path(root or f"runs/bench/learning-{Path(dataset).name}")
    floor = run(RunOptions(dataset=dataset, model="label-frequency", out=str(base / "label-frequency"),
                           resume=True, progress=False, command=f"xmlbench bench learning {dataset}"))
    out: dict[str, Any] = {"dataset": dataset, "encoder": encoder, "epochs": epochs, "max_len": max_len,
                           "label_frequency": {s: round(m["P@1"], 2) for s, m in floor["metrics"].items()},
                           "arms": {}}
    for name, (model, extra) in ARMS.items():
        overrides = {"encoder": encoder, "max_len": max_len, "epochs": epochs, "swa_warmup": -1, "eval_every": 0,
                     **extra}  # eval_every 0: one evaluation per epoch end
        record = run(RunOptions(dataset=dataset, model=model, out=str(base / name), overrides=overrides,
                                resume=True, progress=False, command=f"xmlbench bench learning {dataset}"))
        out["arms"][name] = {
            "valid_p1_per_epoch": _p1_per_epoch(Path(record["run_dir"])),
            "test": {k: round(v, 2) for k, v in record["metrics"]["test"].items() if k in ("P@1", "P@3", "P@5")},
            "train_s": record["timing_s"].get("fit.train"),
        }
    return out


def _p1_per_epoch(run_dir: Path) -> list[float]:
    """Validation P@1 at each epoch end (the last evaluation of each epoch number)."""
    by_epoch: dict[int, float] = {}
    for line in (run_dir / "history.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") == "select":
            by_epoch[row["epoch"]] = round(row["metrics"]["P@1"], 2)
    return [by_epoch[e] for e in sorted(by_epoch) if e > 0]  # epoch e = after e epochs (0: mid-epoch 1)


def format_learning(result: dict[str, Any]) -> str:
    lf = result["label_frequency"]
    lines = [f"{result['dataset']}: validation P@1 after each epoch ({result['encoder']}, max_len "
             f"{result['max_len']}); label frequency valid {lf.get('valid')} test {lf.get('test')}",
             "| model | " + " | ".join(f"epoch {e + 1}" for e in range(result["epochs"])) + " | test P@1/3/5 | train s |",
             "|---|" + "---|" * (result["epochs"] + 2)]
    for name, arm in result["arms"].items():
        curve = " | ".join(str(v) for v in arm["valid_p1_per_epoch"])
        test = "/".join(str(arm["test"][k]) for k in ("P@1", "P@3", "P@5"))
        lines.append(f"| {name} | {curve} | {test} | {arm['train_s']:.0f} |")
    return "\n".join(lines)


def _run(options: BenchOptions) -> dict[str, Any]:
    if not options.dataset:
        from xmlbench.errors import UserError

        raise UserError("bench learning needs a DATASET (e.g. a folder with the Reuters subsample)")
    return bench_learning(options.dataset)


BENCHMARKS.register("learning", Benchmark(
    "learning", "validation P@1 per epoch of LightXML flat/clustered and sigmoid-linear (leaving the prior)",
    _run, format_learning))
