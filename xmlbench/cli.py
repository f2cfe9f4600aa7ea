"""``xmlbench`` command line (also ``python -m xmlbench``); ``run.sh`` is a thin wrapper around it.

User errors print one line and exit 2; no traceback. Heavy imports (torch) happen inside the commands
that need them, so ``xmlbench data ...`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from xmlbench.errors import UserError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    match_numba_threads_to_omp()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.command_line = "xmlbench " + " ".join(shlex.quote(a) for a in argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"xmlbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xmlbench: interrupted; finished work is saved (use --resume to continue)", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:
            from xmlbench.training.distributed import shutdown

            shutdown()


def match_numba_threads_to_omp() -> None:
    """Give numba the thread count the user (or torchrun, which sets 1) gave OpenMP.

    Numba's parallel kernels (metrics, top-k) start an OpenMP pool sized to every core, and after the
    first evaluation torch's matrix multiplies ran on that many threads too: two one-thread jobs on two
    cores went from 0.2 to 2.3 s per step. Must run before numba is imported (it reads the variable once).
    """
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0 and "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(min(int(omp), usable_cores())))


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity and container limits), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmlbench", description="Extreme multi-label text classification benchmarks")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_bench(sub)
    from xmlbench.experiments.commands import add_commands as experiment_commands
    from xmlbench.results.commands import add_commands as result_commands

    experiment_commands(sub)
    result_commands(sub)
    return p


# --------------------------------------------------------------------------------------------- data
def _add_data(sub) -> None:
    data = sub.add_parser("data", help="list, check, download or synthesise datasets")
    dsub = data.add_subparsers(title="data commands", metavar="ACTION")
    lst = dsub.add_parser("list", help="every registered dataset and whether it is present locally")
    lst.set_defaults(func=cmd_data_list)
    chk = dsub.add_parser("check", help="validate a dataset and print its statistics")
    chk.add_argument("dataset", help="registered name, synthetic preset or folder")
    chk.add_argument("--json", action="store_true", help="print one JSON object")
    chk.set_defaults(func=cmd_data_check)
    dl = dsub.add_parser("download", help="fetch a registered dataset from its public source and verify it")
    dl.add_argument("dataset")
    dl.set_defaults(func=cmd_data_download)
    sy = dsub.add_parser("synth", help="write a synthetic dataset in the LightXML text format")
    sy.add_argument("preset")
    sy.add_argument("--out", required=True)
    sy.add_argument("--seed", type=int, default=0)
    sy.set_defaults(func=cmd_data_synth)
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])


def cmd_data_list(args) -> int:
    from xmlbench.data.manifest import DATASETS
    from xmlbench.data.synth import PRESETS

    print(f"{'name':<16} {'present':<8} {'mode':<10} {'train':>10} {'test':>9} {'labels':>8}  folder")
    for name, info in DATASETS.items():
        present = "yes" if info.folder.is_dir() and any(info.folder.glob("train*")) else "no"
        pub = info.published
        print(
            f"{name:<16} {present:<8} {info.mode:<10} {pub.get('n_train', 0):>10,} {pub.get('n_test', 0):>9,} "
            f"{pub.get('n_labels', 0):>8,}  {info.folder}"
        )
    from xmlbench.data.manifest import datasets_dir

    for name in PRESETS.names():
        present = "yes" if (datasets_dir() / name / "synth.json").is_file() else "no"
        print(f"{name:<16} {present:<8} {'synthetic':<10} (generated on first use: xmlbench data synth {name})")
    return 0


def cmd_data_check(args) -> int:
    from xmlbench.data.dataset import dataset_stats, open_dataset

    ds = open_dataset(args.dataset, progress=not args.json)
    stats = dataset_stats(ds)
    if args.json:
        print(json.dumps(stats))
        return 0
    pub = stats.get("published", {})
    print(f"{ds.name}  ({stats['format']} format, {stats['path']}, fingerprint {stats['fingerprint']})")
    rows = [
        ("train documents", "n_train"),
        ("valid documents", "n_valid"),
        ("test documents", "n_test"),
        ("labels", "n_labels"),
        ("labels in train", "n_labels_train"),
        ("labels only in test", "n_labels_test_only"),
        ("avg labels / doc", "avg_labels_per_doc"),
        ("avg docs / label", "avg_docs_per_label"),
    ]
    print(f"  {'':<22} {'here':>12} {'published':>12}")
    for title, key in rows:
        here, ref = stats[key], pub.get(key)
        fmt = (lambda v: f"{v:,.2f}") if isinstance(here, float) else (lambda v: f"{int(v):,}")
        print(f"  {title:<22} {fmt(here):>12} {fmt(ref) if ref is not None else '':>12}")
    for key, title in (("label_freq_quantiles", "docs per label"), ("doc_len_words_quantiles", "words per doc")):
        if stats.get(key):
            qs = "  ".join(f"{k}={v:g}" for k, v in stats[key].items())
            print(f"  {title} quantiles: {qs}")
    return 0


def cmd_data_download(args) -> int:
    from xmlbench.data.download import download, verify

    dest = download(args.dataset)
    problems = verify(args.dataset)
    print(f"{args.dataset}: {dest}")
    for p in problems:
        print(f"  differs from the published figures: {p}")
    return 1 if problems else 0


def cmd_data_synth(args) -> int:
    from xmlbench.data.synth import write_synthetic

    counts = write_synthetic(args.preset, Path(args.out), seed=args.seed)
    print(json.dumps(counts))
    return 0


# -------------------------------------------------------------------------------------------- train
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="registered name, synthetic preset (e.g. synth-eurlex4k) or folder")
    p.add_argument("--model", default="lightxml", help="registered model (xmlbench train --list-models)")
    p.add_argument("--encoder", help="encoder for neural models (registered name, folder or hub id)")
    p.add_argument("--variants", help="comma-separated LightXML variants, e.g. se,loss-correction")
    p.add_argument("--preset", default="default", help="named preset of the model (e.g. default, smoke)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (default runs/DATASET/MODEL.../seedN)")
    p.add_argument("--config", dest="config_file", help="JSON or TOML file with model config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config key (repeatable), e.g. --set epochs=3")
    p.add_argument("--select-on", choices=["valid", "test"], default="valid",
                   help="split that chooses the checkpoint; 'test' reproduces the original (unfair) protocol")
    p.add_argument("--valid-size", type=float, default=0.1, help="fraction (<1) or count carved from train")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--init-from", help="start from the weights saved in this run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args, **extra):
    from xmlbench.config import parse_overrides
    from xmlbench.training.runner import RunOptions

    overrides = parse_overrides(args.overrides)
    if args.encoder:
        overrides["encoder"] = args.encoder
    if args.variants:
        overrides["variants"] = [v for v in args.variants.split(",") if v]
    fields = dict(
        dataset=args.dataset,
        model=args.model,
        seed=args.seed,
        valid_size=args.valid_size,
        select_on=args.select_on,
        preset=args.preset,
        out=args.out or "",
        resume=args.resume,
        init_from=args.init_from or "",
        progress=not args.no_progress,
        overrides=overrides,
        config_file=args.config_file or "",
        command=args.command_line,
    )
    fields.update(extra)
    return RunOptions(**fields)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one model on one dataset, writing a run record")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from xmlbench.training.runner import run

    record = run(options_from_args(args))
    print_metrics(record)
    return 0


def print_metrics(record: dict) -> None:
    keys = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")
    for split, m in record["metrics"].items():
        vals = "  ".join(f"{k} {m[k]:.2f}" for k in keys if k in m)
        print(f"{record['model']} on {record['dataset']['name']} [{split}]: {vals}")
    print(f"run folder: {record['run_dir']}  (fit {record['timing_s'].get('fit', 0):.1f} s)")


# ------------------------------------------------------------------------------------------ predict
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="reload a finished run's model and predict/evaluate a dataset")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="dataset to predict (default: the run's dataset)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--out", help="write predictions.npz here (default: only print metrics)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from xmlbench.training.predict import predict_run

    metrics = predict_run(Path(args.run_dir), args.dataset, args.split, args.out, not args.no_progress)
    print(json.dumps(metrics))
    return 0


# -------------------------------------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: metrics, cluster, pipeline")
    p.add_argument("what", choices=["metrics", "cluster", "pipeline", "throughput"])
    p.add_argument("dataset", nargs="?", default="synth-amazon670k", help="for cluster/pipeline")
    p.add_argument("--json", action="store_true")
    p.add_argument("--steps", type=int, default=20, help="pipeline/throughput: training steps")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from xmlbench import bench

    result = bench.run(args.what, args.dataset, steps=args.steps)
    print(json.dumps(result, indent=2) if args.json else bench.format_result(args.what, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
