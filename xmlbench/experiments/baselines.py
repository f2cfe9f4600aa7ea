"""``xmlbench baselines`` / ``./run.sh DATASET baselines``: every baseline through the one runner, then a
table. A baseline that refuses the dataset (e.g. tfidf-ovr above its label limit) is reported and skipped,
never silently dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any

from xmlbench.config import from_dict
from xmlbench.errors import UserError
from xmlbench.models import MODELS
from xmlbench.outputs import Output, claim_folder, holding_only
from xmlbench.runs import record as rec
from xmlbench.runs.runner import RunOptions, run

BASELINES = ("label-frequency", "tfidf-ovr", "tree", "sigmoid-linear", "softmax-linear", "bilstm")
NEURAL = ("sigmoid-linear", "softmax-linear", "bilstm")


def run_baselines(template: RunOptions, root: Path, models: tuple[str, ...] = BASELINES,
                  log=print) -> tuple[list[Path], list[str]]:
    per_model = overrides_per_model(template.overrides, models)  # a typo fails here, not five times
    claim_folder(root, Output("baselines", adopt=holding_only()), force=template.force)
    done, skipped = [], []
    for name in models:
        out = root / name / f"seed{template.seed}"
        opts = replace(template, model=name, out=str(out), resume=True, force=False,
                       overrides=per_model[name], preset=template.preset if name in NEURAL else "default")
        try:
            log(f"baseline {name}")
            run(opts)
            done.append(out)
        except UserError as e:
            log(f"  skipped {name}: {e}")
            skipped.append(f"{name}: {e}")
    return [d for d in done if rec.is_complete(d)], skipped


def overrides_per_model(overrides: dict[str, Any], models: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each baseline gets the --set keys its config has (--set max_len=64 is for the neural ones, and
    made every classical baseline skip itself); a key none of them has, or a value one of them refuses,
    is an error before anything runs."""
    known = {name: {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)} for name in models}
    unknown = sorted(k for k in overrides if not any(k in keys for keys in known.values()))
    if unknown:
        raise UserError(f"--set {unknown[0]}: no baseline has this config key "
                        f"(baselines: {', '.join(models)})")
    per_model = {name: {k: v for k, v in overrides.items() if k in known[name]} for name in models}
    for name, subset in per_model.items():
        try:
            from_dict(MODELS.get(name).config_cls, subset)
        except UserError as e:
            raise UserError(f"{name}: {e}") from None
    return per_model
