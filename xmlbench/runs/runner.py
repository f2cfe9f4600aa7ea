"""The one runner every model goes through: the protocol lives here, not in the models.

1. open the dataset; 2. apply the protocol (``fair`` by default, or ``original``: ``runs/protocol.py``) to
the options the user left open; 3. choose the selection split (valid_* files, else a seeded carve of train;
the test split only when the user or the original protocol asks for it); 4. fit, then the model's
diagnostics on the validation split (``Model.diagnostics``); 5. read the test split once, predict the
top-100, evaluate; 6. write predictions, the model and ``record.json`` (last, atomically).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from xmlbench.config import Rule, Seed, flag_name, from_dict, load_config_file, merge, to_dict, validate
from xmlbench.data.dataset import Dataset, Split, carve_validation, open_dataset
from xmlbench.engine import distributed as dist
from xmlbench.engine import reporters
from xmlbench.errors import UserError
from xmlbench.io import naming, write_json
from xmlbench.metrics import TOP_K, evaluate
from xmlbench.models import MODELS, FitContext, Model, ModelEntry
from xmlbench.outputs import Output, claim_file, writing
from xmlbench.runs import record as rec
from xmlbench.runs.protocol import PROTOCOLS


def valid_size_rule(size: float) -> str | None:
    # 0 holds nothing out: only meaningful with --select-on test (selection_split refuses it otherwise)
    if size < 0 or (size >= 1 and size != int(size)):
        return "must be a fraction in [0, 1) or a whole number of documents"
    return None


@dataclass(frozen=True)
class RunOptions:
    """Protocol options (the model's own options live in its config). ``None`` leaves the choice to the
    protocol (``resolve_protocol``); a run records the resolved values. Checked when built, whoever builds
    them (the CLI, an experiment, a test), with the same declared rules as every config."""

    dataset: str
    model: str
    seed: Seed | None = None  # None: the protocol's (0 fair, 6088 original)
    # a fraction (< 1) or a number of documents, carved from train; None: the protocol's
    valid_size: Annotated[float, Rule(valid_size_rule)] | None = None
    select_on: Literal["valid", "test"] | None = None
    protocol: str = "fair"  # a name in PROTOCOLS
    preset: str = "default"
    out: str = ""
    resume: bool = False
    init_from: str = ""
    progress: bool = True
    overrides: dict[str, Any] = field(default_factory=dict)
    config_file: str = ""
    command: str = ""
    force: bool = False  # write into --out even if it holds files xmlbench did not write for this run
    unlabelled: Literal["error", "drop", "keep"] = "error"  # documents without labels (open_dataset)
    keep_state: bool = False  # keep the resumable training state (optimiser, SWA, RNG) once the run finished
    report_to: tuple[str, ...] = ()  # experiment trackers fed from the history stream (engine.reporters)

    def __post_init__(self) -> None:
        validate(self, key=flag_name)


def resolve_model_config(entry: ModelEntry, ds: Dataset, opts: RunOptions) -> Any:
    """defaults < preset < protocol bundle < config file < --set, checked strictly against the model's
    config dataclass. A model without a bundle for the protocol gets only the protocol's run options."""
    layers: dict[str, Any] = {}
    check_preset(entry, opts)
    encoder = opts.overrides.get("encoder", "")
    if opts.preset in entry.presets:
        layers = entry.presets[opts.preset](ds, encoder)
    bundle = entry.protocols.get(PROTOCOLS.canonical(opts.protocol))
    if bundle is not None:
        layers = merge(layers, bundle(ds, encoder))
    if opts.config_file:
        layers = merge(layers, load_config_file(opts.config_file))
    layers = merge(layers, opts.overrides)
    return from_dict(entry.config_cls, layers)


def check_preset(entry: ModelEntry, opts: RunOptions) -> None:
    if opts.preset not in entry.presets and opts.preset not in ("", "default"):
        known = ", ".join(entry.presets) or "(none)"
        raise UserError(f"model {entry.name!r} has no preset {opts.preset!r}; presets: {known}")


def check_user_options(entry: ModelEntry, opts: RunOptions) -> None:
    """What the user typed, checked before any data is read (or generated): the preset's name, the
    config file and every --set against the model's config, the flags that exclude each other, the
    initial weights. Presets are checked later, with the dataset they depend on."""
    check_preset(entry, opts)
    file_layer: dict[str, Any] = {}
    if opts.config_file:
        file_layer = load_config_file(opts.config_file)
        try:
            from_dict(entry.config_cls, file_layer)
        except UserError as e:
            raise UserError(f"{opts.config_file}: {e}") from None
    from_dict(entry.config_cls, merge(file_layer, opts.overrides))
    if opts.resume and opts.force:
        raise UserError("--resume continues the run in --out and --force starts it over: choose one")
    if opts.init_from and not Path(opts.init_from).exists():
        raise UserError(f"--init-from {opts.init_from}: no such file or run folder")
    reporters.check_available([reporters.REPORTERS.canonical(n) for n in opts.report_to])


def default_run_dir(opts: RunOptions, config: Any) -> Path:
    parts = [opts.model]
    encoder = getattr(config, "encoder", "")
    if encoder:
        parts.append(str(encoder).replace("/", "_"))
    variants = getattr(config, "variants", ())
    if variants:
        parts.append("+".join(variants))
    return Path("runs") / Path(opts.dataset).name / "-".join(parts) / f"seed{opts.seed}"


def resolve_protocol(opts: RunOptions, entry: ModelEntry, ds: Dataset, config: Any) -> RunOptions:
    """``opts`` with the seed, selection split and hold-out size the user left open (``None``) set by the
    protocol, for this dataset and the model's regime (flat or clustered)."""
    protocol = PROTOCOLS.get(opts.protocol)
    regime = entry.cls.regime(config, ds)
    select_on = opts.select_on or protocol.select_on(regime)
    valid_size = opts.valid_size
    if valid_size is None:  # nothing is held out when the test split selects: the record says 0
        valid_size = 0.0 if select_on == "test" else protocol.hold_out(regime, len(ds.train))
    seed = protocol.seed if opts.seed is None else opts.seed
    return replace(opts, protocol=protocol.name, seed=seed, select_on=select_on, valid_size=valid_size)


def selection_split(ds: Dataset, opts: RunOptions) -> tuple[Split, Split | None, str]:
    """(train, selection split, its name). The test split selects only when explicitly asked (``opts``
    resolved by ``resolve_protocol``)."""
    if opts.select_on == "test":
        return ds.train, ds.test, "test"
    if ds.valid is not None:
        return ds.train, ds.valid, "valid"
    train, valid = carve_validation(ds.train, opts.valid_size, opts.seed)
    return train, valid, "valid"


RUN_OUTPUT = Output("run", adopt=rec.is_run_folder)


def run(opts: RunOptions, distill: Any = None) -> dict[str, Any]:
    """Train, evaluate and record one run; returns the record. ``distill`` (``runs.distill.DistillOptions``)
    trains the model as a student of a finished teacher run (``xmlbench distill``)."""
    dist.init_from_env()  # under torchrun: join the process group; a no-op for one process
    timer = rec.StageTimer()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = MODELS.get(opts.model)
    check_user_options(entry, opts)
    if distill is not None:
        from xmlbench.runs import distill as kd

        if not getattr(entry.cls, "distillable", False):
            raise UserError(f"--student {opts.model}: cannot be a distillation student (it has no full label "
                            "head trained by gradient); students: bilstm, sigmoid-linear, softmax-linear")
        kd.check_teacher_run(distill.teacher)
    with timer.stage("load"):
        ds = open_dataset(opts.dataset, progress=opts.progress, unlabelled=opts.unlabelled)
    check_splits(ds)
    config = resolve_model_config(entry, ds, opts)
    opts = resolve_protocol(opts, entry, ds, config)
    run_dir = Path(opts.out) if opts.out else default_run_dir(opts, config)
    identity = rec.run_identity(opts, config, ds)
    if distill is not None:
        identity["distillation"] = kd.record_key(distill)
    splits = selection_split(ds, opts)
    main = dist.is_main()  # under torchrun only rank 0 writes files, and only it holds the folder's lock
    guard = writing(run_dir, RUN_OUTPUT, force=opts.force, command=opts.command) if main else nullcontext()
    with guard, naming(run_dir):  # a write error that names no file (a full disk) names the run folder
        finished = rec.existing_run(run_dir, identity, resume=opts.resume, force=opts.force and main)
        dist.barrier()  # every rank has looked at the folder before rank 0 writes into it
        if finished is not None:
            return finished
        with run_log(run_dir, main) as log:
            return _train_and_record(opts, entry, ds, config, splits, run_dir, identity, timer, started, distill,
                                     log)


def resolved_config(opts: RunOptions) -> dict[str, Any]:
    """What ``run`` would train with (``--print-config``): the run options with the protocol's choices
    filled in, and the model config after defaults < preset < protocol < config file < --set. The dataset
    is opened (presets depend on it); nothing is trained or written."""
    entry = MODELS.get(opts.model)
    check_user_options(entry, opts)
    ds = open_dataset(opts.dataset, unlabelled=opts.unlabelled)
    config = resolve_model_config(entry, ds, opts)
    opts = resolve_protocol(opts, entry, ds, config)
    return {"options": to_dict(opts), "model_config": to_dict(config),
            "dataset": {"name": ds.name, "path": ds.source, "format": ds.format, "n_train": len(ds.train),
                        "n_test": len(ds.test), "n_labels": ds.n_labels}}


def check_splits(ds: Dataset) -> None:
    """Empty splits fail here, not with a traceback after the whole training."""
    for split in (ds.train, ds.valid, ds.test):
        if split is not None and len(split) == 0:
            raise UserError(f"{ds.path}: the {split.name} split has no documents")


def _train_and_record(opts: RunOptions, entry: ModelEntry, ds: Dataset, config: Any,
                      splits: tuple[Split, Split | None, str], run_dir: Path, identity: dict[str, Any],
                      timer: rec.StageTimer, started: str, distill: Any = None,
                      log=print) -> dict[str, Any]:
    main = dist.is_main()
    _seed_everything(opts.seed)
    model: Model = entry.cls(config, ds)  # loads the encoder: its checks come before any file is written
    log(start_summary(opts, entry, ds, config, model, splits))
    if main and not (run_dir / rec.CONFIG).is_file():  # a resumed run keeps the record of how it started
        write_json(run_dir / rec.CONFIG, identity)
    tracker = reporters.open_reporters(opts.report_to if main else (), run_dir, _tracked_facts(opts, ds, config),
                                       warn=log)
    try:
        record = _fit_and_evaluate(opts, entry, ds, config, model, splits, run_dir, timer, started, distill, log,
                                   tracker)
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()
    return record


def _tracked_facts(opts: RunOptions, ds: Dataset, config: Any) -> dict[str, Any]:
    """What a tracker logs as the run's parameters: the options that make the run, and the model config."""
    return {"model": opts.model, "dataset": ds.name, "seed": opts.seed, "protocol": opts.protocol,
            "select_on": opts.select_on, **{f"config.{k}": v for k, v in to_dict(config).items()}}


def _fit_and_evaluate(opts: RunOptions, entry: ModelEntry, ds: Dataset, config: Any, model: Model,
                      splits: tuple[Split, Split | None, str], run_dir: Path, timer: rec.StageTimer, started: str,
                      distill: Any, log, tracker: reporters.Fanout) -> dict[str, Any]:
    main = dist.is_main()
    train, select, select_name = splits
    ctx = FitContext(
        dataset=ds,
        train=train,
        select=select,
        select_name=select_name,
        run_dir=run_dir,
        seed=opts.seed,
        progress=opts.progress,
        resume=opts.resume,
        init_from=Path(opts.init_from) if opts.init_from else None,
        log=log,
        report=tracker.report,
        flush_reports=tracker.flush,
    )
    facts: dict[str, Any] | None = None
    if distill is not None:  # the transfer set replaces train; the teacher's top-k rides with each batch
        from xmlbench.runs import distill as kd

        with timer.stage("teacher"):
            ctx.train, ctx.soft_targets, facts, teacher = kd.prepare(distill, ds, train, run_dir, opts.progress,
                                                                     ctx.log)
    with timer.stage("fit"):
        selection = dict(model.fit(ctx) or {})
    timer.seconds["fit"] += selection.pop("earlier_sessions_s", 0.0)  # a resumed run's sessions before this one
    for stage, seconds in selection.pop("stage_s", {}).items():  # what fit spent where
        timer.seconds[f"fit.{stage}"] = seconds
    if main:
        with timer.stage("save"):
            model.save(run_dir / "model")

    diagnostics: dict[str, Any] = {}
    if select is not None and select_name == "valid":  # never the test split: it is read once, below
        with timer.stage("diagnostics"):
            diagnostics = dict(model.diagnostics(select) or {})

    if facts is not None and select is not None and select_name == "valid":
        with timer.stage("inference_speed"):
            facts["inference"] = kd.inference_speed(teacher, model, select, TOP_K)

    metrics: dict[str, dict[str, float]] = {}
    inv_p = ds.inv_propensity()
    if select is not None and select_name == "valid":
        with timer.stage("predict_valid"):
            ids, _ = model.predict(select, TOP_K, progress=opts.progress)
        metrics["valid"] = evaluate(ids, select.labels, inv_propensity=inv_p)
    with timer.stage("predict_test"):  # the one read of the test split
        ids, scores = model.predict(ds.test, TOP_K, progress=opts.progress)
    with timer.stage("evaluate"):
        # Coverage too: a test-set figure tables show beside P@k (it needs all rows, so not per document).
        metrics["test"] = evaluate(ids, ds.test.labels, inv_propensity=inv_p, coverage=True)
    final_step = int((selection or {}).get("steps") or 0)
    for split, values in metrics.items():
        tracker.report({"step": final_step, "split": split, "metrics": values})
    shown = "  ".join(f"{k} {metrics['test'][k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5"))
    log(f"test: {shown}; timing {', '.join(f'{k} {v:.1f} s' for k, v in timer.seconds.items())}")
    record = {
        "status": "complete",
        "command": opts.command,
        "model": opts.model,
        "encoder": getattr(config, "encoder", None),
        "variants": list(getattr(config, "variants", ()) or ()),
        "preset": opts.preset,
        "protocol": opts.protocol,
        "seed": opts.seed,
        "config": to_dict(config),
        "options": to_dict(opts),
        "dataset": {
            "name": ds.name,
            "path": ds.source or str(ds.path),  # a name or preset as typed, a folder absolute
            "folder": str(ds.path),
            "format": ds.format,
            "unlabelled": ds.meta.get("unlabelled", {}),  # the policy and, per split, documents without labels
            "fingerprint": ds.fingerprint,
            "test_fingerprint": ds.test.texts.digest if ds.test.texts is not None else ds.fingerprint,
            "n_train": len(train),
            "n_select": len(select) if select is not None else 0,
            "n_test": len(ds.test),
            "n_labels": ds.n_labels,
        },
        "selection": {"split": select_name if select is not None else "none", **(selection or {})},
        "metrics": metrics,
        "n_parameters": model.n_parameters(),
        "model_details": model.details(),
        **diagnostics,
        "timing_s": {k: round(v, 3) for k, v in timer.seconds.items()},
        "peak_rss_mb": round(rec.peak_rss_mb(), 1),
        "peak_rss_mb_after_stage": dict(timer.peak_rss_mb),
        "code": rec.code_version(),
        "packages": rec.package_versions(),
        "hardware": rec.hardware(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
    if facts is not None:
        record["distillation"] = facts
        record["dataset"]["n_transfer"] = len(ctx.train)
    if select_name == "test":
        record["selection"]["warning"] = "checkpoint chosen on the TEST split (original LightXML protocol)"
    record["world_size"] = dist.world_size()
    state_files = [run_dir / name for name in rec.STATE_FILES if (run_dir / name).is_file()]
    record["resumable_state"] = "none" if not state_files else "kept" if opts.keep_state else "deleted"
    if main:
        rec.write_predictions(run_dir, ids, scores, ds.label_names)
        rec.write_record(run_dir, record)
        if not opts.keep_state:  # the exported model/ is all a finished run needs (--keep-state keeps these)
            for path in state_files:
                with naming(path):
                    path.unlink()
    dist.barrier()
    return record


def save_initial_weights(opts: RunOptions, path: Path) -> Path:
    """Build the model exactly as ``run`` would (same seed, split and clusters) and save its untrained
    weights, so that several arms can start from identical initial weights (``--init-from``)."""
    entry = MODELS.get(opts.model)
    if not entry.neural:
        raise UserError(f"model {opts.model!r} has no weights to initialise")
    check_user_options(entry, opts)
    path = Path(path)
    claim_file(path, "initial weights", force=opts.force)
    ds = open_dataset(opts.dataset, progress=opts.progress, unlabelled=opts.unlabelled)
    check_splits(ds)
    config = resolve_model_config(entry, ds, opts)
    opts = resolve_protocol(opts, entry, ds, config)
    train, select, select_name = selection_split(ds, opts)
    _seed_everything(opts.seed)
    model = entry.cls(config, ds)
    # Log to stderr only: a train.log beside the file may be someone else's.
    ctx = FitContext(dataset=ds, train=train, select=select, select_name=select_name, run_dir=path.parent,
                     seed=opts.seed, progress=opts.progress, log=_stderr_log)
    model.prepare(ctx)
    model.save_initial(path)
    return path


def _stderr_log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def start_summary(opts: RunOptions, entry: ModelEntry, ds: Dataset, config: Any, model: Model,
                  splits: tuple[Split, Split | None, str]) -> str:
    """The first line of a run's log: what is trained on what, with how much, where and how precisely."""
    train, select, select_name = splits
    parts = [f"{opts.model} on {ds.name} ({ds.format}): {len(train):,} train, "
             f"{len(select) if select is not None else 0:,} {select_name}, {len(ds.test):,} test documents, "
             f"{ds.n_labels:,} labels, {model.n_parameters():,} parameters"]
    unlabelled = ds.meta.get("unlabelled", {})
    if unlabelled.get("policy", "error") != "error":
        counts = ", ".join(f"{k} {v}" for k, v in unlabelled.items() if k != "policy")
        parts.append(f"documents without labels ({unlabelled['policy']}): {counts}")
    if entry.neural:
        from xmlbench.engine import loop

        device = loop.device_for(config)
        precision = loop.Precision(config.amp, device)
        parts.append(f"{loop.planned_steps(len(train), config):,} optimiser steps planned"
                     f"{f' (max_steps {config.max_steps})' if config.max_steps else ''}, device {device}, "
                     f"precision {'fp32' if precision.name == 'off' else precision.name}")
    parts.append(f"seed {opts.seed}, protocol {opts.protocol}, selection on {select_name}")
    return "; ".join(parts)


class _LogFile(logging.FileHandler):
    """``train.log``: a failed write (a full disk) is an error naming the file, as every other write is,
    not logging's printed traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        e = sys.exc_info()[1]
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, self.baseFilename) from None
        super().handleError(record)


@contextmanager
def run_log(run_dir: Path, main: bool = True):
    """stdlib logging for one run: the ``xmlbench`` loggers and Python warnings go to stderr and to
    ``train.log`` in the run folder (appended: a resumed run's sessions follow each other), so the log
    holds the whole story; handlers are removed when the run ends (a process may run many). Yields the
    function models log with (``FitContext.log``); off the main rank it logs nothing."""
    if not main:
        yield lambda msg: None
        return
    fmt = logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S")
    # delay: the file is made by the first line (the summary, once the model is built): a model that
    # refuses its config leaves nothing behind
    file = _LogFile(run_dir / "train.log", encoding="utf-8", delay=True)
    console = logging.StreamHandler(sys.stderr)
    handlers = (file, console)
    loggers = [logging.getLogger("xmlbench"), logging.getLogger("py.warnings")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.propagate = False  # the user's own root handlers would print every line twice
        for h in handlers:
            h.setFormatter(fmt)
            lg.addHandler(h)
    logging.captureWarnings(True)
    try:
        yield logging.getLogger("xmlbench.run").info
    finally:
        logging.captureWarnings(False)
        for lg, (level, propagate) in zip(loggers, saved):
            for h in handlers:
                lg.removeHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate
        file.close()
