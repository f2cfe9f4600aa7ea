"""``xmlbench ablate``, ``compare-refs``, ``baselines``, ``ensemble`` and ``ensemble-train``."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from xmlbench.cli.train import (
    add_train_arguments,
    command_line,
    options_from_args,
    options_to_argv,
    print_metrics,
)
from xmlbench.errors import UserError
from xmlbench.results.compare import DEFAULT_METRICS


def add_commands(sub) -> None:
    ab = sub.add_parser("ablate", help="LightXML ablation: base, each variant, all together, over seeds")
    add_train_arguments(ab)
    ab.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    ab.add_argument("--variants-list", default="", help="variants to ablate (default: every registered one)")
    ab.add_argument("--mode", choices=["flat", "clustered"], help="run every arm in this mode")
    ab.add_argument("--root", help="results folder of the sweep (default results/DATASET/ablation-PRESET)")
    ab.add_argument("--print-commands", action="store_true", help="print one command per arm and exit")
    ab.add_argument("--jobs", type=int, default=1,
                    help="arms run in parallel locally (the cores are split between them)")
    ab.add_argument("--metrics", default="",
                    help="table and plot metrics, e.g. P@1,nDCG@5 (default: P@1,P@3,P@5,PSP@5)")
    ab.set_defaults(func=cmd_ablate, model="lightxml")
    add_compare_refs_command(sub)
    add_ensemble_commands(sub)
    add_baseline_commands(sub)


def cmd_ablate(args) -> int:
    from xmlbench.cli.results import metric_keys
    from xmlbench.data.dataset import open_dataset
    from xmlbench.experiments import ablate
    from xmlbench.models import MODELS
    from xmlbench.models.lightxml.model import LightXMLConfig, resolve_mode
    from xmlbench.models.lightxml.variants import VARIANTS
    from xmlbench.runs.runner import check_user_options

    if args.model != "lightxml":
        raise UserError("ablate compares LightXML variants; --model must be lightxml")
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    metrics = metric_keys(args.metrics) if args.metrics.strip() else None  # checked before any training
    variants = [v for v in args.variants_list.split(",") if v] or VARIANTS.names()
    for v in variants:
        VARIANTS.canonical(v)
    args.variants = None
    template = options_from_args(args)
    check_user_options(MODELS.get("lightxml"), template)  # a bad --set fails before the first arm
    ds = open_dataset(args.dataset)
    dataset_mode = resolve_mode(LightXMLConfig(mode=template.overrides.get("mode", "auto")), ds)
    arms = ablate.plan_arms(dataset_mode, args.mode, variants)
    root = Path(args.root) if args.root else Path("results") / Path(args.dataset).name / f"ablation-{args.preset}"
    seeds = list(range(args.seeds))
    if args.print_commands:
        quiet = replace(template, progress=False)  # one scheduler job per line: no progress bars
        for mode in sorted({a.mode for a in arms}):
            for s in seeds:
                print(command_line(ablate.init_options(quiet, mode, s, root), "init"))
        for a in arms:
            for s in seeds:
                print(command_line(ablate.arm_options(quiet, a, s, root)))
        return 0
    runs = ablate.run_ablation(replace(template, out=""), arms, seeds, root, jobs=args.jobs,
                               command_for=lambda opts: command_line(replace(opts, progress=False)))
    print(ablate.write_tables(root, runs, arms, ds.name, metrics=metrics))
    print(f"\ntables: {root / 'ablation.md'}  {root / 'ablation.csv'}")
    return 0


def add_compare_refs_command(sub) -> None:
    cr = sub.add_parser("compare-refs", help="the same training on two git revisions, then the compare table")
    cr.add_argument("ref_a", metavar="REF_A", help="git branch, tag or commit (A)")
    cr.add_argument("ref_b", metavar="REF_B", help="git branch, tag or commit (B)")
    add_train_arguments(cr)
    cr.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) per ref")
    cr.add_argument("--root", help="folder of the runs (default runs/compare-refs/DATASET/A-vs-B)")
    cr.add_argument("--allow-dirty", action="store_true",
                    help="run although the working tree has uncommitted changes (they are in neither side)")
    cr.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="metrics of the table")
    cr.set_defaults(func=cmd_compare_refs)


def cmd_compare_refs(args) -> int:
    from xmlbench.cli.results import comparison, metric_keys
    from xmlbench.experiments import compare_refs
    from xmlbench.results.compare import render_comparison

    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.out:
        raise UserError("compare-refs puts each run in --root/REF/seedN; it takes --root, not --out")
    metrics = metric_keys(args.metrics)  # a typo fails before anything trains
    repo = compare_refs.repository_root(Path.cwd())
    sides, notes = compare_refs.plan_sides(repo, args.ref_a, args.ref_b, args.dataset,
                                           Path(args.root) if args.root else None, args.allow_dirty)
    for note in notes:  # said first as well: the sweep can run for hours before the table
        print(f"note: {note}")
    runs = compare_refs.run_sides(sides, repo, options_from_args(args), list(range(args.seeds)),
                                  lambda opts: [sys.executable, "-m", "xmlbench", *options_to_argv(opts)])
    a, b = sides
    print(f"\nA = {a.ref} ({a.short})  B = {b.ref} ({b.short})")
    print(render_comparison(comparison(runs[a.ref], runs[b.ref], metrics)), end="")
    for note in notes:
        print(f"note: {note}")
    print(f"runs: {a.folder.parent}")
    return 0


def add_ensemble_commands(sub) -> None:

    ens = sub.add_parser("ensemble", help="combine finished runs the way the original did (sum of scores)")
    ens.add_argument("runs", nargs="+", help="run folders")
    ens.add_argument("--out", required=True)
    ens.add_argument("--scores", choices=["auto", "raw", "minmax", "rank"], default="auto",
                     help="member scores before summing: raw (the original; auto's choice when every member "
                          "is the same model), minmax per document's top-k (auto's choice for mixed members), "
                          "or rank 1 - r/k")
    ens.set_defaults(func=cmd_ensemble)

    et = sub.add_parser("ensemble-train", help="train the original's three ensemble members, then combine")
    add_train_arguments(et)
    et.set_defaults(func=cmd_ensemble_train, model="lightxml")


def cmd_ensemble(args) -> int:
    from xmlbench.experiments.ensemble import ensemble_runs

    record = ensemble_runs([Path(r) for r in args.runs], Path(args.out), args.command_line, args.scores)
    print_metrics(record)
    return 0


def cmd_ensemble_train(args) -> int:
    from xmlbench.data.dataset import open_dataset
    from xmlbench.experiments.ensemble import ensemble_runs, member_overrides
    from xmlbench.models import MODELS
    from xmlbench.models.lightxml.model import LightXMLConfig, resolve_mode
    from xmlbench.outputs import Output, claim_folder, holding_only
    from xmlbench.runs.protocol import protocol_seed
    from xmlbench.runs.runner import check_user_options, run

    template = options_from_args(args)
    check_user_options(MODELS.get("lightxml"), template)
    ds = open_dataset(args.dataset)
    mode = resolve_mode(LightXMLConfig(mode=template.overrides.get("mode", "auto")), ds)
    seed = protocol_seed(args.protocol, args.seed)
    root = Path(args.out) if args.out else Path("runs") / Path(args.dataset).name / "ensemble" / f"seed{seed}"
    claim_folder(root, Output("ensemble members", adopt=holding_only()), force=args.force)
    members = []
    for name, over in member_overrides(mode):
        opts = replace(template, out=str(root / name), resume=True, force=False,
                       overrides={**template.overrides, **over})
        members.append(Path(run(opts)["run_dir"]))
    record = ensemble_runs(members, root / "ensemble", args.command_line)
    print_metrics(record)
    return 0


def add_baseline_commands(sub) -> None:

    b = sub.add_parser("baselines", help="run every baseline on a dataset through the runner, then a table")
    add_train_arguments(b)
    b.add_argument("--root", help="results folder (default runs/DATASET/baselines)")
    b.set_defaults(func=cmd_baselines, model="baselines")


def cmd_baselines(args) -> int:
    from xmlbench.experiments.baselines import run_baselines
    from xmlbench.results.table import build_table, render

    template = options_from_args(args)
    root = Path(args.root) if args.root else Path("runs") / Path(args.dataset).name / "baselines"
    runs, skipped = run_baselines(template, root)
    if not runs:
        raise UserError(f"no baseline finished on {args.dataset}: " + "; ".join(skipped))
    print(render(build_table(runs, reference=True), "md"))
    for s in skipped:
        print(f"skipped: {s}")
    print(f"{len(runs)} of {len(runs) + len(skipped)} baselines finished; run folders in {root}")
    return 0
