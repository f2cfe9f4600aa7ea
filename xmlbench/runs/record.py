"""Run records: one folder per run, written atomically.

``record.json`` holds the resolved config, dataset fingerprint, code and package versions, hardware,
seed, time per stage, peak memory, metrics per split and which split selected the checkpoint.
``predictions.npz`` holds the test top-100 (ids int32, scores float32) and ``label_names`` (str), the
label each id stands for: ids alone mean nothing outside the dataset that gave them (see
:mod:`xmlbench.data.labels`). A record is written last, so a folder with a ``record.json`` whose status is
"complete" is a finished run; anything else is not.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xmlbench.data.labels import Names, Truth, map_ids, match_labels, names_array
from xmlbench.errors import UserError
from xmlbench.io import atomic_path, naming, read_json_object, read_npz, write_json
from xmlbench.paths import CHECKOUT_ROOT

RECORD = "record.json"
PREDICTIONS = "predictions.npz"
CONFIG = "config.json"
RESUMABLE = "checkpoint.pt"  # the training loop's resumable state (engine.loop.CHECKPOINT)
STATE_FILES = (RESUMABLE, "best.pt")  # deleted when a run finishes, unless --keep-state
# What a run writes into its folder; --force removes exactly these before starting over.
RUN_FILES = (CONFIG, RECORD, PREDICTIONS, "checkpoint.pt", "best.pt", "history.jsonl", "train.log", "model",
             "transfer", "tensorboard", "mlflow.db", "mlflow_run_id")
# The options that, with the resolved model config and the dataset, make a run this run.
IDENTITY_OPTIONS = ("model", "seed", "valid_size", "select_on", "unlabelled")


def code_version() -> dict[str, Any]:
    """The git commit of the checkout this package runs from, and whether it had uncommitted changes."""
    root = CHECKOUT_ROOT
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    from xmlbench import __version__

    return {"xmlbench": __version__, "commit": commit or None, "dirty": dirty}


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "scipy", "scikit-learn", "numba", "omikuji"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    if "torch" in sys.modules:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["gpu"] = torch.cuda.get_device_name(0)
            hw["gpu_count"] = torch.cuda.device_count()
    return hw


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Wall time per named stage, in the order they ran, and the process's peak memory when each ended
    (a running maximum, so the stage where it first jumps is the one that needed it)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.peak_rss_mb[name] = round(peak_rss_mb(), 1)


# ------------------------------------------------------------------------------ run folders
def run_identity(opts: Any, config: Any, ds: Any) -> dict[str, Any]:
    """What ``config.json`` holds: everything that makes a run this run, and how it was asked for."""
    from xmlbench.config import to_dict

    return {"options": to_dict(opts), "model_config": to_dict(config),
            "dataset": {"name": ds.name, "path": ds.source or str(ds.path), "fingerprint": ds.fingerprint}}


def is_run_folder(folder: Path) -> bool:
    """A run folder an older xmlbench wrote (before output markers): its config.json or record.json."""
    for name, keys in ((CONFIG, ("options", "model_config")), (RECORD, ("status", "config"))):
        if (folder / name).is_file():
            try:
                read_json_object(folder / name, required=keys)
                return True
            except UserError:
                pass
    return False


def existing_run(run_dir: Path, identity: dict[str, Any], resume: bool, force: bool) -> dict[str, Any] | None:
    """What is already in ``run_dir`` decides: a finished run's record (``--resume`` skips it), None to
    train (nothing there, an unfinished run to continue, or ``--force``), or a refusal naming the reason.
    A run that stopped before its first resumable checkpoint (or a classical model's, which has none)
    holds nothing to lose: without --resume it simply starts again."""
    complete = is_complete(run_dir)
    started = (run_dir / CONFIG).is_file()
    resumable = (run_dir / RESUMABLE).is_file()
    if force:
        clear_run(run_dir)
        return None
    if complete and not resume:
        raise UserError(f"{run_dir} already holds a finished run; pass --resume to skip it, --force to redo "
                        "it, or choose --out")
    if resumable and not resume and not complete:
        raise UserError(f"{run_dir} holds an unfinished run; pass --resume to continue it, --force to start "
                        "it over, or choose --out")
    if resume and (started or complete):
        check_same_run(run_dir, identity)
    elif started and not complete:
        clear_run(run_dir)  # a start that trained nothing: its config.json and log go, the new run begins
    return read_record(run_dir) if complete else None


def clear_run(run_dir: Path) -> None:
    """Remove what an earlier run wrote into the folder (and nothing else), before starting over."""
    import shutil

    for name in RUN_FILES:
        path = run_dir / name
        with naming(path):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def check_same_run(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to continue (or skip as finished) a run that was started with another config: the two
    would silently mix. Names the keys that differ."""
    path = run_dir / CONFIG
    if not path.is_file():  # a finished run from before config.json: its record holds the same facts
        saved_record = read_json_object(run_dir / RECORD, required=("config", "options"))
        saved = {"options": saved_record["options"], "model_config": saved_record["config"],
                 "dataset": saved_record.get("dataset", {})}
    else:
        saved = read_json_object(path, required=("options", "model_config"))
    was, now = _comparable(saved), _comparable(json.loads(json.dumps(identity, default=str)))
    if was.get("model") != now["model"]:
        raise UserError(f"{run_dir} holds a {was.get('model')} run, not {now['model']}; choose another --out")
    # A key the saved config lacks was added to xmlbench after that run started: not a difference.
    diffs = [f"{k}: {was[k]!r} there, {now.get(k)!r} now" for k in sorted(was) if was[k] != now.get(k)
             and k in now]
    if diffs:
        raise UserError(f"{run_dir} was started with another config ({'; '.join(diffs[:4])}"
                        f"{'; ...' if len(diffs) > 4 else ''}); resume it with the same options, or choose "
                        "another --out")


def _comparable(identity: dict[str, Any]) -> dict[str, Any]:
    """The identity as flat keys: the options that matter, the dataset's fingerprint, every config key."""
    options = identity.get("options", {})
    out = {k: options[k] for k in IDENTITY_OPTIONS if k in options}
    fingerprint = (identity.get("dataset") or {}).get("fingerprint")
    if fingerprint:
        out["dataset fingerprint"] = fingerprint
    out.update(_flatten(identity.get("model_config", {})))
    # A distilled run (xmlbench distill) is another run than the same model trained on labels alone
    out["distilled from"] = (identity.get("distillation") or {}).get("teacher")
    out.update(_flatten(identity.get("distillation") or {}, "distillation."))
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_predictions(run_dir: Path, ids: np.ndarray, scores: np.ndarray, label_names: Names) -> None:
    """``label_names``: the names of the label space ``ids`` index (a dataset's ``label_names``)."""
    with atomic_path(run_dir / PREDICTIONS) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=ids.astype(np.int32), scores=scores.astype(np.float32),
                 label_names=names_array(label_names))


@dataclass(frozen=True)
class Predictions:
    ids: np.ndarray  # (n, k) int32 in the label space of ``label_names``
    scores: np.ndarray  # (n, k) float32
    label_names: np.ndarray | None  # None: a file written before predictions carried their label names


def load_predictions(run_dir: Path) -> Predictions:
    """The saved test top-k and its label names; a missing, truncated or reshaped file is one line naming it."""
    path = Path(run_dir) / PREDICTIONS
    arrays = read_npz(path, ("ids", "scores"), optional=("label_names",))
    ids, scores = arrays["ids"], arrays["scores"]
    if ids.ndim != 2 or ids.shape != scores.shape or not np.issubdtype(ids.dtype, np.integer):
        raise UserError(f"{path}: damaged: ids {ids.shape} {ids.dtype} and scores {scores.shape} do not match")
    return Predictions(ids, scores, arrays.get("label_names"))


def read_predictions(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) as saved: ids of the run's own label space. To score them, use ``predictions_onto``."""
    p = load_predictions(run_dir)
    return p.ids, p.scores


def prediction_label_names(run_dir: Path, pred: Predictions, onto: Truth) -> np.ndarray:
    """The names ``pred``'s ids stand for. A file without names (older than names in predictions) is
    trusted only on the data its run was made on: same dataset fingerprint, hence the same label ids."""
    if pred.label_names is not None:
        return pred.label_names
    made_on = read_record(run_dir).get("dataset", {}) if (Path(run_dir) / RECORD).is_file() else {}
    same_data = bool(onto.fingerprint) and made_on.get("fingerprint") == onto.fingerprint
    if not same_data or made_on.get("n_labels", len(onto.label_names)) != len(onto.label_names):
        raise UserError(
            f"{Path(run_dir) / PREDICTIONS} has no label names (saved before predictions carried them) and "
            f"its run was made on other data (dataset fingerprint {made_on.get('fingerprint')}, not "
            f"{onto.fingerprint}), so its label ids cannot be matched; re-save it on the run's own data with "
            f"'xmlbench predict {run_dir} --out {run_dir}'"
        )
    return names_array(onto.label_names)


def predictions_onto(run_dir: Path, onto: Truth) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of a run's saved predictions, ids mapped by label name onto ``onto``'s label space
    (-1 where ``onto`` lacks the label: a miss); refused when no label name matches."""
    pred = load_predictions(run_dir)
    names = prediction_label_names(run_dir, pred, onto)
    table = match_labels(names, onto.label_names, str(Path(run_dir) / PREDICTIONS), onto.describe())
    return map_ids(pred.ids, table), pred.scores


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / RECORD, record)


# Entries every reader of records relies on; a record without them is damaged, said in one line.
RECORD_KEYS = ("status", "model", "config", "dataset", "metrics", "selection")
RECORD_DATASET_KEYS = ("name", "path", "fingerprint", "test_fingerprint")


def recorded_dataset(record: dict[str, Any], override: str | None = None):
    """The dataset a record was made on, opened as the run opened it (its ``--unlabelled`` policy): by
    the name or absolute folder it stored, or ``override`` (another dataset, same policy)."""
    from xmlbench.data.dataset import open_dataset

    entry = record.get("dataset") if isinstance(record.get("dataset"), dict) else {}
    policy = (entry.get("unlabelled") or {}).get("policy", "error")
    return open_dataset(str(override or entry.get("path") or entry.get("name")), unlabelled=policy)


def read_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RECORD
    if not path.is_file():
        raise UserError(f"{path}: not found (not a finished run folder)")
    record = read_json_object(path, required=RECORD_KEYS)
    dataset = record["dataset"]
    missing = [k for k in RECORD_DATASET_KEYS if not isinstance(dataset, dict) or k not in dataset]
    if missing or not isinstance(record["metrics"], dict) or not isinstance(record["selection"], dict):
        raise UserError(f"{path}: damaged: its dataset, metrics or selection entry is incomplete")
    return record


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run; a damaged record.json is an error naming it, never a
    silent "not finished" (which would rerun, or skip, the run without a word)."""
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return False
    status = read_json_object(path, required=("status",))["status"]
    if status != "complete":
        raise UserError(f"{path}: damaged (status {status!r}); delete it or restore it")
    return True


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders among ``paths`` or below them (folders holding a complete record.json)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if is_complete(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(q.parent for q in p.rglob(RECORD) if is_complete(q.parent))
    return sorted(set(found))
