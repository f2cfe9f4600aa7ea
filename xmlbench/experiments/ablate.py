"""``xmlbench ablate`` / ``./run.sh DATASET ablations``: the base model, each variant alone and all variants
together, over N seeds, with a fair protocol and a generated comparison table.

Fairness rules (each tested or visible in the records):
* every arm of a seed starts from the same initial weights (one init file per seed and mode, loaded with
  ``--init-from``; modules only a variant has keep their own seeded initialisation), the same data split
  (carved with the seed) and the same clusters (cached per split and cluster seed);
* arms that need clustered mode run clustered, and are compared with a base run in clustered mode;
* checkpoints are chosen on the validation split; the test split is read once per run.
Idempotent: finished arms are skipped and interrupted ones resume, so a killed sweep continues where it
stopped. ``--print-commands`` prints one command per arm for any scheduler; ``--jobs N`` runs arms in
parallel locally.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.models.lightxml.variants import VARIANTS
from xmlbench.outputs import Output, claim_folder, holding_only
from xmlbench.runs import record as rec
from xmlbench.runs.runner import RunOptions, run, save_initial_weights
from xmlbench.runtime import usable_cores

BASE = "base"
# A sweep's root holds one folder per arm, the initial weights and the tables.
ABLATION_OUTPUT = Output("ablation", adopt=holding_only("ablation.md", "ablation.csv"))


@dataclass(frozen=True)
class Arm:
    name: str
    variants: tuple[str, ...]
    mode: str  # "flat" or "clustered"


def plan_arms(dataset_mode: str, forced_mode: str | None, variants: list[str]) -> list[Arm]:
    """Base, each variant alone, all together; clustered where a variant needs it (and its base too)."""
    needs_clustered = {v for v in variants if VARIANTS.get(v).needs_clustered}
    def mode_for(vs: tuple[str, ...]) -> str:
        if forced_mode:
            return forced_mode
        return "clustered" if dataset_mode == "clustered" or needs_clustered & set(vs) else "flat"

    together = compatible(variants)
    wanted = [(v,) for v in variants] + ([together] if len(together) > 1 else [])
    arms = [Arm(_arm_name(vs), vs, mode_for(vs)) for vs in wanted]
    modes = sorted({a.mode for a in arms} | {mode_for(())})
    bases = [Arm(BASE if len(modes) == 1 else f"{BASE}-{m}", (), m) for m in modes]
    return bases + arms


def compatible(variants: list[str]) -> tuple[str, ...]:
    """The "all together" arm: the variants in order, leaving out any that an earlier kept one refuses (or
    that refuses it): scalar-mix replaces the [CLS] concatenation that se and doc-rep act on."""
    from xmlbench.models.lightxml.variants import refused_pairs

    kept: list[str] = []
    for v in variants:
        if not refused_pairs([*kept, v]):
            kept.append(v)
    return tuple(kept)


def _arm_name(variants: tuple[str, ...]) -> str:
    everything = compatible(VARIANTS.names())
    return "all" if len(variants) > 1 and set(variants) == set(everything) else "+".join(variants)


def base_of(arm: Arm, arms: list[Arm]) -> str:
    bases = [a for a in arms if not a.variants]
    return next(a.name for a in bases if a.mode == arm.mode)


def arm_dir(root: Path, arm: Arm, seed: int) -> Path:
    return root / arm.name / f"seed{seed}"


def init_path(root: Path, mode: str, seed: int) -> Path:
    return root / "init" / f"{mode}-seed{seed}.pt"


def arm_options(template: RunOptions, arm: Arm, seed: int, root: Path) -> RunOptions:
    overrides = dict(template.overrides)
    overrides["variants"] = list(arm.variants)
    overrides["mode"] = arm.mode
    # --force claims the sweep's root; it never starts the finished arms over (resume and force exclude)
    return replace(template, seed=seed, out=str(arm_dir(root, arm, seed)), overrides=overrides, resume=True,
                   force=False, init_from=str(init_path(root, arm.mode, seed)), model="lightxml")


def run_ablation(template: RunOptions, arms: list[Arm], seeds: list[int], root: Path, jobs: int = 1,
                 command_for: Callable[[RunOptions], str] | None = None, log=print) -> dict[str, list[Path]]:
    """Run every (arm, seed) not yet finished; returns the run folders per arm.

    With ``jobs`` > 1 the arms run as separate processes, each started with ``command_for(options)`` (the
    CLI passes its own inverse of argument parsing, so the library never builds command lines itself)."""
    claim_folder(root, ABLATION_OUTPUT, force=template.force)
    template = replace(template, force=False)
    for mode in sorted({a.mode for a in arms}):
        for seed in seeds:
            path = init_path(root, mode, seed)
            if not path.is_file():
                base = replace(template, seed=seed, resume=False,
                               overrides={**template.overrides, "variants": [], "mode": mode})
                log(f"initial weights for {mode} mode, seed {seed} -> {path}")
                save_initial_weights(base, path)
    todo = [(a, s) for a in arms for s in seeds if not rec.is_complete(arm_dir(root, a, s))]
    done = len(arms) * len(seeds) - len(todo)
    log(f"ablation: {len(arms)} arms x {len(seeds)} seeds; {done} finished, {len(todo)} to run")
    if jobs <= 1:
        for i, (arm, seed) in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] arm {arm.name} ({arm.mode}) seed {seed}")
            run(arm_options(template, arm, seed, root))
    else:
        if command_for is None:
            raise ValueError("run_ablation with jobs > 1 needs command_for")
        commands = [command_for(arm_options(template, a, s, root)) for a, s in todo]
        env = threads_per_job_env(jobs)
        with ThreadPoolExecutor(jobs) as pool:
            codes = list(pool.map(lambda c: subprocess.call(c, shell=True, env=env), commands))
        failed = [c for c, code in zip(commands, codes) if code]
        if failed:
            raise UserError(f"{len(failed)} arm(s) failed; first: {failed[0]}")
    return {a.name: [arm_dir(root, a, s) for s in seeds] for a in arms}


def threads_per_job_env(jobs: int) -> dict[str, str]:
    """The environment for parallel arms: the cores split between jobs, unless the user set a count.

    Each torch process otherwise takes every core, and N such processes thrash each other (small models
    are dominated by per-step overhead, so N single-thread jobs beat one N-thread job). Each job's
    ``xmlbench`` gives numba the same count (``match_numba_threads_to_omp``).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // jobs)))
    return env


def init_options(template: RunOptions, mode: str, seed: int, root: Path) -> RunOptions:
    """The options of ``xmlbench init`` that writes the shared initial weights of (mode, seed)."""
    return replace(template, seed=seed, overrides={**template.overrides, "variants": [], "mode": mode},
                   out=str(init_path(root, mode, seed)), init_from="", resume=False, force=False,
                   model="lightxml")


def write_tables(
    root: Path,
    runs_by_arm: dict[str, list[Path]],
    arms: list[Arm],
    dataset_name: str,
    metrics: list[str] | None = None,
    truth_loader: Callable[[str], object] | None = None,
) -> str:
    """The comparison table(s), one per base (flat and clustered bases are never mixed), in ablation.md and
    ablation.csv, and each table's delta plot beside them: ablation-deltas.png with .pdf and .svg (with several bases
    ablation-deltas-BASE.png), skipped with a note when matplotlib is missing. ``metrics`` defaults to the
    table's (P@1, P@3, P@5, PSP@5); ``truth_loader`` to the test labels of the dataset each record names."""
    from xmlbench.io import write_text
    from xmlbench.results.table import ABLATION_METRICS, ablation_table, render

    metrics = metrics or ABLATION_METRICS
    if truth_loader is None:
        truth_loader = _test_labels_loader(_unlabelled_policies(runs_by_arm))
    bases = [a for a in arms if not a.variants]
    parts_md, parts_csv = [], []
    for base in bases:
        group = {a.name: runs_by_arm[a.name] for a in arms if a.mode == base.mode}
        title = (f"{dataset_name}: LightXML ablation, {base.mode} mode "
                 f"(test split, checkpoints selected on valid; Δ = arm - {base.name})")
        table = ablation_table(group, base=base.name, title=title, metrics=metrics, truth_loader=truth_loader)
        png = root / ("ablation-deltas.png" if len(bases) == 1 else f"ablation-deltas-{base.name}.png")
        figure = ""
        if len(group) < 2:
            table.notes.append("no arm besides the base: no delta plot.")
        elif not _have_matplotlib():
            table.notes.append(f"delta plot {png.name} skipped: matplotlib is not installed "
                               "(pip install matplotlib).")
        else:
            from xmlbench.results.plots import plot_ablation_deltas

            plot_ablation_deltas(group, png, base=base.name, metrics=metrics,
                                 title=f"{dataset_name}, {base.mode} mode")
            vectors = ", ".join(png.with_suffix(x).name for x in (".pdf", ".svg"))
            table.notes.append(f"plot: {png.name} (and {vectors}): per metric, each "
                               "arm's mean per-seed delta to the base, ± sample std over paired seeds.")
            figure = f"\n![Δ per arm and metric, {base.mode} mode]({png.name})\n"
        parts_md.append(render(table, "md") + figure)
        parts_csv.append(render(table, "csv"))
    md = "\n\n".join(parts_md)
    write_text(root / "ablation.md", md + "\n")
    write_text(root / "ablation.csv", "\n".join(parts_csv))
    return md


def _unlabelled_policies(runs_by_arm: dict[str, list[Path]]) -> dict[str, str]:
    """Each dataset path's ``--unlabelled`` policy, as the finished runs recorded it."""
    policies: dict[str, str] = {}
    for dirs in runs_by_arm.values():
        for d in dirs:
            if rec.is_complete(d):
                dataset = rec.read_record(d).get("dataset") or {}
                policies[str(dataset.get("path"))] = (dataset.get("unlabelled") or {}).get("policy", "error")
    return policies


def _test_labels_loader(policies: dict[str, str] | None = None) -> Callable[[str], object]:
    """Test labels (with their label names) by dataset path, each dataset opened once and as its runs
    opened it (documents without labels dropped or kept by their ``--unlabelled``), so the rows line up."""
    from xmlbench.data.dataset import open_dataset
    from xmlbench.data.labels import Truth

    policies = policies or {}
    cache: dict[str, object] = {}

    def load(path: str):
        if path not in cache:
            cache[path] = Truth.test_of(open_dataset(path, unlabelled=policies.get(str(path), "error")))
        return cache[path]

    return load


def _have_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401  (the plots build on it)
    except ImportError:
        return False
    return True
