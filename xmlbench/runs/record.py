"""Run records: one folder per run, written atomically.

``record.json`` holds the resolved config, dataset fingerprint, code and package versions, hardware,
seed, time per stage, peak memory, metrics per split and which split selected the checkpoint.
``predictions.npz`` holds the test top-100 (ids int32, scores float32) and ``label_names`` (str), the
label each id stands for: ids alone mean nothing outside the dataset that gave them (see
:mod:`xmlbench.data.labels`). A record is written last, so a folder with a ``record.json`` whose status is
"complete" is a finished run; anything else is not.
"""

from __future__ import annotations

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
from xmlbench.io import atomic_path, read_json, write_json
from xmlbench.paths import CHECKOUT_ROOT

RECORD = "record.json"
PREDICTIONS = "predictions.npz"


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
    """Wall time per named stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


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
    with np.load(Path(run_dir) / PREDICTIONS, allow_pickle=False) as z:
        names = z["label_names"] if "label_names" in z.files else None
        return Predictions(z["ids"], z["scores"], names)


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


def read_record(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / RECORD)


def is_complete(run_dir: Path) -> bool:
    path = Path(run_dir) / RECORD
    if not path.is_file():
        return False
    try:
        return read_json(path).get("status") == "complete"
    except ValueError:
        return False


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
