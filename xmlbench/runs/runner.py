"""The one runner every model goes through: the protocol lives here, not in the models.

1. open the dataset; 2. apply the protocol (``fair`` by default, or ``original``: ``runs/protocol.py``) to
the options the user left open; 3. choose the selection split (valid_* files, else a seeded carve of train;
the test split only when the user or the original protocol asks for it); 4. fit, then the model's
diagnostics on the validation split (``Model.diagnostics``); 5. read the test split once, predict the
top-100, evaluate; 6. write predictions, the model and ``record.json`` (last, atomically).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from xmlbench.config import from_dict, load_config_file, merge, to_dict
from xmlbench.data.dataset import Dataset, Split, carve_validation, open_dataset
from xmlbench.engine import distributed as dist
from xmlbench.errors import UserError
from xmlbench.io import write_json
from xmlbench.metrics import TOP_K, evaluate
from xmlbench.models import MODELS, FitContext, Model, ModelEntry
from xmlbench.runs import record as rec
from xmlbench.runs.protocol import PROTOCOLS


@dataclass(frozen=True)
class RunOptions:
    """Protocol options (the model's own options live in its config). ``None`` leaves the choice to the
    protocol (``resolve_protocol``); a run records the resolved values."""

    dataset: str
    model: str
    seed: int | None = None  # None: the protocol's (0 fair, 6088 original)
    valid_size: float | None = None  # a fraction (< 1) or a number of documents, carved from train
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


def resolve_model_config(entry: ModelEntry, ds: Dataset, opts: RunOptions) -> Any:
    """defaults < preset < protocol bundle < config file < --set, checked strictly against the model's
    config dataclass. A model without a bundle for the protocol gets only the protocol's run options."""
    layers: dict[str, Any] = {}
    encoder = opts.overrides.get("encoder", "")
    if opts.preset not in ("", "default") or entry.presets:
        if opts.preset not in entry.presets and opts.preset != "default":
            known = ", ".join(entry.presets) or "(none)"
            raise UserError(f"model {entry.name!r} has no preset {opts.preset!r}; presets: {known}")
        if opts.preset in entry.presets:
            layers = entry.presets[opts.preset](ds, encoder)
    bundle = entry.protocols.get(PROTOCOLS.canonical(opts.protocol))
    if bundle is not None:
        layers = merge(layers, bundle(ds, encoder))
    if opts.config_file:
        layers = merge(layers, load_config_file(opts.config_file))
    layers = merge(layers, opts.overrides)
    return from_dict(entry.config_cls, layers)


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


def run(opts: RunOptions) -> dict[str, Any]:
    """Train, evaluate and record one run; returns the record."""
    dist.init_from_env()  # under torchrun: join the process group; a no-op for one process
    timer = rec.StageTimer()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with timer.stage("load"):
        ds = open_dataset(opts.dataset, progress=opts.progress)
    entry = MODELS.get(opts.model)
    config = resolve_model_config(entry, ds, opts)
    opts = resolve_protocol(opts, entry, ds, config)
    run_dir = Path(opts.out) if opts.out else default_run_dir(opts, config)
    if rec.is_complete(run_dir):
        if not opts.resume:
            raise UserError(f"{run_dir} already holds a finished run; pass --resume to skip it, or choose --out")
        return rec.read_record(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    main = dist.is_main()  # under torchrun only rank 0 writes files
    if main:
        write_json(run_dir / "config.json", {"options": to_dict(opts), "model_config": to_dict(config)})

    train, select, select_name = selection_split(ds, opts)
    _seed_everything(opts.seed)
    model: Model = entry.cls(config, ds)
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
        log=_logger(run_dir) if main else (lambda msg: None),
    )
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
            "path": str(ds.path),
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
        "code": rec.code_version(),
        "packages": rec.package_versions(),
        "hardware": rec.hardware(),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
    }
    if select_name == "test":
        record["selection"]["warning"] = "checkpoint chosen on the TEST split (original LightXML protocol)"
    record["world_size"] = dist.world_size()
    if main:
        rec.write_predictions(run_dir, ids, scores, ds.label_names)
        rec.write_record(run_dir, record)
    dist.barrier()
    return record


def save_initial_weights(opts: RunOptions, path: Path) -> Path:
    """Build the model exactly as ``run`` would (same seed, split and clusters) and save its untrained
    weights, so that several arms can start from identical initial weights (``--init-from``)."""
    ds = open_dataset(opts.dataset, progress=opts.progress)
    entry = MODELS.get(opts.model)
    if not entry.neural:
        raise UserError(f"model {opts.model!r} has no weights to initialise")
    config = resolve_model_config(entry, ds, opts)
    opts = resolve_protocol(opts, entry, ds, config)
    train, select, select_name = selection_split(ds, opts)
    _seed_everything(opts.seed)
    model = entry.cls(config, ds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = FitContext(dataset=ds, train=train, select=select, select_name=select_name, run_dir=path.parent,
                     seed=opts.seed, progress=opts.progress, log=_logger(path.parent))
    model.prepare(ctx)
    model.save_initial(path)
    return path


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def _logger(run_dir: Path):
    """Log lines go to stderr (beside tqdm bars) and to ``train.log`` in the run folder."""
    path = run_dir / "train.log"

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    return log
