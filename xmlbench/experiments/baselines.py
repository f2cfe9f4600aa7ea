"""``xmlbench baselines`` / ``./run.sh DATASET baselines``: every baseline through the one runner, then a
table. A baseline that refuses the dataset (e.g. tfidf-ovr above its label limit) is reported and skipped,
never silently dropped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.outputs import Output, claim_folder, holding_only
from xmlbench.runs import record as rec
from xmlbench.runs.runner import RunOptions, run

BASELINES = ("label-frequency", "tfidf-ovr", "tree", "sigmoid-linear", "softmax-linear")
NEURAL = ("sigmoid-linear", "softmax-linear")


def run_baselines(template: RunOptions, root: Path, models: tuple[str, ...] = BASELINES,
                  log=print) -> tuple[list[Path], list[str]]:
    claim_folder(root, Output("baselines", adopt=holding_only()), force=template.force)
    done, skipped = [], []
    for name in models:
        out = root / name / f"seed{template.seed}"
        overrides = dict(template.overrides)
        if name not in NEURAL:
            overrides.pop("encoder", None)
        opts = replace(template, model=name, out=str(out), resume=True, force=False, overrides=overrides,
                       preset=template.preset if name in NEURAL else "default")
        try:
            log(f"baseline {name}")
            run(opts)
            done.append(out)
        except UserError as e:
            log(f"  skipped {name}: {e}")
            skipped.append(f"{name}: {e}")
    return [d for d in done if rec.is_complete(d)], skipped
