"""What every registered model (LightXML, baselines, classical references) provides to the runner.

The runner (``xmlbench.runs.runner``) owns the protocol: splits, validation, the single read of the
test split, metrics, predictions and the run record. A model only fits, predicts top-k, saves and loads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmlbench.data.dataset import Dataset, Split


@dataclass
class FitContext:
    """Everything a model's ``fit`` may use. ``select`` is the split that chooses checkpoints; it is the
    held-out validation split unless the user asked for the original's test-set selection."""

    dataset: Dataset
    train: Split
    select: Split | None
    select_name: str  # "valid", "test" or "none"
    run_dir: Path
    seed: int
    progress: bool = True
    resume: bool = False
    init_from: Path | None = None
    log: Callable[[str], None] = print


def read_model_meta(folder: Path, name: str, config_cls: type) -> tuple[dict[str, Any], Any]:
    """A saved model's ``model.json`` and its config, checked: another model's folder, a damaged file or
    a config this version refuses are one line naming the file."""
    from xmlbench.config import from_dict
    from xmlbench.errors import UserError
    from xmlbench.io import read_json_object

    path = Path(folder) / "model.json"
    if not path.is_file():
        raise UserError(f"{path}: not found (no saved model here)")
    meta = read_json_object(path, required=("model", "config"))
    if meta["model"] != name:
        raise UserError(f"{path}: holds a {meta['model']} model, not {name}")
    try:
        return meta, from_dict(config_cls, meta["config"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


class Model(ABC):
    """A trained-or-trainable XMC model; ``config`` is its frozen config dataclass."""

    name: str = ""

    def __init__(self, config: Any, dataset: Dataset) -> None:
        self.config = config
        self.n_labels = dataset.n_labels

    @abstractmethod
    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Train; return selection facts for the record (e.g. ``{"best_step": 1200, "metric": "P@5"}``)."""

    @abstractmethod
    def predict(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k label ids (int32, -1 = none) and scores (float32), best first, for every document."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the model as plain arrays/tensors plus JSON: loading needs nothing else, and no pickle."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, dataset: Dataset) -> Model:
        ...

    def n_parameters(self) -> int:
        return 0

    def details(self) -> dict[str, Any]:
        """Resolved facts that name the system in tables (e.g. LightXML's regime)."""
        return {}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its class, its config dataclass and its named presets.

    ``presets`` maps a preset name to a function (dataset, encoder name) -> config dict, so per-dataset
    facts stay in the dataset manifests rather than in ``if dataset == ...`` branches.
    """

    name: str
    cls: type[Model]
    config_cls: type
    description: str
    presets: dict[str, Callable[[Dataset, str], dict]] = field(default_factory=dict)
    neural: bool = False
    requires: tuple[str, ...] = ()  # optional Python packages it needs (e.g. omikuji for the tree)
