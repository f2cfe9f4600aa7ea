"""``xmlbench train``, ``predict`` and ``init``; the run options' parser and its inverse.

``options_to_argv`` turns ``RunOptions`` back into the command line that reproduces them (used by
``ablate --print-commands`` and ``--jobs``). It lives beside ``add_train_arguments`` so the two cannot
drift, and a test parses its output back and compares.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.runs.protocol import PROTOCOLS


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate one model on one dataset, writing a run record")
    add_train_arguments(p)
    p.add_argument("--print-config", nargs="?", const="resolved", choices=["resolved", "skeleton"],
                   help="print the resolved config (defaults < preset < --config file < --set; the dataset "
                        "is opened, nothing is trained or written) as JSON and exit; 'skeleton': every key "
                        "of --model with its default, bounds and description, as a TOML file --config reads")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="reload a finished run's model and predict/evaluate a dataset, or "
                                       "predict raw texts (--texts)")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="dataset to predict (default: the run's dataset)")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--texts", help="predict the raw texts of this UTF-8 file (one a line) instead of a "
                                   "dataset; needs --out")
    p.add_argument("--top-k", type=int, default=5, help="labels kept per text with --texts (default 5)")
    p.add_argument("--format", choices=["jsonl", "tsv"], default="jsonl",
                   help="predictions file with --texts: jsonl (default) or tsv")
    p.add_argument("--out", help="write predictions.npz here (default: only print metrics); with --texts: "
                                 "predictions.jsonl|tsv, scores.npz (CSR) and label_names.txt, never over "
                                 "existing files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)

    init = sub.add_parser("init", help="save the untrained weights a run would start from (for --init-from)")
    add_train_arguments(init)
    init.set_defaults(func=cmd_init)


def add_train_arguments(p: argparse.ArgumentParser, dataset: bool = True, model: str = "--model") -> None:
    """The run options; ``xmlbench distill`` takes the dataset from its teacher and calls --model --student."""
    if dataset:
        p.add_argument("dataset", help="registered name, synthetic preset (e.g. synth-eurlex4k) or folder")
    p.add_argument(model, dest="model", default="lightxml", help="registered model (xmlbench list models)")
    p.add_argument("--encoder", help="encoder for neural models (registered name, folder or hub id)")
    p.add_argument("--variants", help="comma-separated LightXML variants, e.g. se,loss-correction")
    p.add_argument("--preset", default="default", help="named preset of the model (e.g. default, smoke)")
    p.add_argument("--seed", type=int, help="run seed (default: the protocol's, 0 fair / 6088 original)")
    p.add_argument("--protocol", choices=PROTOCOLS.names(), default="fair",
                   help="fair (default): select on a part of train; original: LightXML's run scripts, "
                        "point by point (README: fair vs original)")
    p.add_argument("--out", help="run folder (default runs/DATASET/MODEL.../seedN)")
    p.add_argument("--config", dest="config_file", help="JSON or TOML file with model config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config key (repeatable), e.g. --set epochs=3")
    p.add_argument("--select-on", choices=["valid", "test"],
                   help="split that chooses the checkpoint (default: the protocol's, valid; the original "
                        "protocol: test on flat datasets); 'test' is the original's unfair selection")
    p.add_argument("--valid-size", type=float,
                   help="fraction (<1) or count carved from train (default: the protocol's, 0.1; the "
                        "original protocol: 4000 on clustered datasets)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds other files, or start an unfinished run over")
    p.add_argument("--init-from", help="start from the weights saved in this run folder")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (they are off anyway when stderr is not a terminal)")
    p.add_argument("--keep-state", action="store_true",
                   help="keep the resumable training state (checkpoint.pt with the optimiser, best.pt) once "
                        "the run has finished; by default only the exported model/ stays")
    p.add_argument("--report-to", default="", metavar="TRACKERS",
                   help="also send the training history and final metrics to these trackers, comma-separated: "
                        "tensorboard (RUN/tensorboard), mlflow (MLFLOW_TRACKING_URI, else RUN/mlflow.db)")
    p.add_argument("--unlabelled", choices=["error", "drop", "keep"], default="error",
                   help="documents without labels: an error naming file and line (default), dropped from "
                        "their split, or kept (misses in P@k); counted in the record")


def options_from_args(args, **extra):
    from xmlbench.config import parse_overrides
    from xmlbench.engine.reporters import parse_report_to
    from xmlbench.runs.runner import RunOptions

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
        protocol=args.protocol,
        preset=args.preset,
        out=args.out or "",
        resume=args.resume,
        force=args.force,
        init_from=args.init_from or "",
        progress=show_progress(args),
        overrides=overrides,
        config_file=args.config_file or "",
        command=args.command_line,
        unlabelled=args.unlabelled,
        keep_state=args.keep_state,
        report_to=parse_report_to(args.report_to),
    )
    fields.update(extra)
    return RunOptions(**fields)


def show_progress(args) -> bool:
    """Progress bars only on a terminal: in a log file (stderr redirected) their ``\r`` redraws are noise,
    and the log lines say the same."""
    return not args.no_progress and sys.stderr.isatty()


def options_to_argv(opts, command: str = "train") -> list[str]:
    """The ``xmlbench COMMAND ...`` arguments that ``options_from_args`` turns back into ``opts``."""
    from xmlbench.config import to_dict

    args = [command, opts.dataset, "--model", opts.model, "--preset", opts.preset]
    if opts.protocol != "fair":
        args += ["--protocol", opts.protocol]
    if opts.seed is not None:  # None: the protocol chooses, and must still choose when this is parsed
        args += ["--seed", str(opts.seed)]
    if opts.valid_size is not None:
        args += ["--valid-size", str(opts.valid_size)]
    if opts.out:
        args += ["--out", opts.out]
    if opts.select_on is not None:
        args += ["--select-on", opts.select_on]
    if opts.resume:
        args.append("--resume")
    if opts.force:
        args.append("--force")
    if not opts.progress:
        args.append("--no-progress")
    if opts.init_from:
        args += ["--init-from", opts.init_from]
    if opts.config_file:
        args += ["--config", opts.config_file]
    if opts.keep_state:
        args.append("--keep-state")
    if opts.unlabelled != "error":
        args += ["--unlabelled", opts.unlabelled]
    if opts.report_to and command != "init":  # init trains nothing: it refuses the option
        args += ["--report-to", ",".join(opts.report_to)]
    for key, value in _flatten(to_dict(opts.overrides)):
        if key == "variants":
            if value:
                args += ["--variants", ",".join(value)]
            continue
        args += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def command_line(opts, command: str = "train") -> str:
    """``options_to_argv`` as one shell command running this interpreter's xmlbench."""
    return " ".join(shlex.quote(a) for a in [sys.executable, "-m", "xmlbench", *options_to_argv(opts, command)])


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def cmd_train(args) -> int:
    from xmlbench.runs.runner import resolved_config, run

    if args.print_config == "skeleton":
        from xmlbench.config import skeleton
        from xmlbench.models import MODELS

        print(f"# xmlbench train DATASET --model {args.model} --config THIS_FILE: every key with its default")
        print(skeleton(MODELS.get(args.model).config_cls))
        return 0
    if args.print_config:
        print(json.dumps(resolved_config(options_from_args(args)), indent=2))
        return 0
    record = run(options_from_args(args))
    print_metrics(record)
    return 0


def print_metrics(record: dict) -> None:
    keys = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5")
    for split, m in record["metrics"].items():
        vals = "  ".join(f"{k} {m[k]:.2f}" for k in keys if k in m)
        print(f"{record['model']} on {record['dataset']['name']} [{split}]: {vals}")
    print(f"run folder: {record['run_dir']}  (fit {record['timing_s'].get('fit', 0):.1f} s)")


def cmd_predict(args) -> int:
    from xmlbench.runs.predict import predict_run

    if args.texts is not None:
        from xmlbench.runs.api import predict_texts_file

        if args.dataset or not args.out:
            raise UserError("predict --texts needs --out DIR and takes no --dataset (the run folder is "
                            "enough)")
        done = predict_texts_file(Path(args.run_dir), Path(args.texts), args.top_k, args.format,
                                  Path(args.out), show_progress(args))
        print(json.dumps(done))
        return 0
    metrics = predict_run(Path(args.run_dir), args.dataset, args.split, args.out, show_progress(args))
    print(json.dumps(metrics))
    return 0


def cmd_init(args) -> int:
    from xmlbench.runs.runner import save_initial_weights

    if not args.out:
        raise UserError("init needs --out FILE (where the initial weights go)")
    if args.report_to:
        raise UserError("--report-to: init trains nothing, so it has nothing to report; drop the option "
                        "(it belongs to the train commands that start from this file)")
    path = save_initial_weights(options_from_args(args), Path(args.out))
    print(path)
    return 0
