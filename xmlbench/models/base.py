"""What every registered model (LightXML, baselines, classical references) provides to the runner.

The runner (``xmlbench.runs.runner``) owns the protocol: splits, validation, the single read of the
test split, metrics, predictions and the run record. A model only fits, predicts top-k, saves and loads.

Label identity: a model's label ids are those of the dataset it was trained on, and it saves their names.
``load`` rebuilds it in that label space and maps its predictions by name onto the dataset it is loaded
for (:mod:`xmlbench.data.labels`), so a dataset with the same labels in another order scores the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmlbench.data.dataset import Dataset, Split
from xmlbench.data.labels import in_label_space, map_ids, match_labels
from xmlbench.io import write_text

LABEL_NAMES = "label_names.txt"  # the saved label names of a model folder, one a line


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
    # ``xmlbench distill``: the teacher's top-k for every row of ``train`` (the transfer set), and the loss
    # settings (``xmlbench.models.distillation.SoftTargets``); None trains on the labels alone
    soft_targets: Any = None
    # --report-to trackers: every history event (engine.reporters); training loops pass it on
    report: Callable[[dict[str, Any]], None] = lambda event: None
    flush_reports: Callable[[], None] = lambda: None


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
    # What predict's scores are: "probability" (in [0, 1]) or "margin" (an unbounded logit-like score);
    # distillation turns them into teacher logits accordingly (xmlbench.models.distillation)
    score_kind: str = "probability"

    def __init__(self, config: Any, dataset: Dataset) -> None:
        self.config = config
        self.n_labels = dataset.n_labels
        self.label_names: list[str] = list(dataset.label_names)  # what this model's own label ids stand for
        # Set by ``load``: own label id -> id in the dataset loaded for (-1: it lacks the label); None while
        # both orders are the same.
        self.label_map: np.ndarray | None = None
        self.label_names_assumed = False  # loaded from a folder saved without label names

    @abstractmethod
    def fit(self, ctx: FitContext) -> dict[str, Any]:
        """Train; return selection facts for the record (e.g. ``{"best_step": 1200, "metric": "P@5"}``)."""

    def predict(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k label ids (int32, -1 = none) and scores (float32), best first, for every document; ids are
        those of the dataset the model was built or loaded for (-1 also where that dataset lacks a label)."""
        ids, scores = self.predict_own(split, k, progress)
        return (ids if self.label_map is None else map_ids(ids, self.label_map)), scores

    @abstractmethod
    def predict_own(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` in the model's own label ids (those of ``self.label_names``)."""

    @abstractmethod
    def save(self, folder: Path) -> None:
        """Write the model as plain arrays/tensors plus JSON: loading needs nothing else, and no pickle.
        Its label names go with it (``save_label_names``, or inside a checkpoint)."""

    @classmethod
    def load(cls, folder: Path, dataset: Dataset) -> Model:
        """The saved model, predicting in ``dataset``'s label ids (matched by name)."""
        model = cls.restore(folder, dataset)
        model.map_labels_onto(dataset)
        return model

    @classmethod
    @abstractmethod
    def restore(cls, folder: Path, dataset: Dataset) -> Model:
        """Rebuild the saved model in its own label space: build it on ``saved_label_space(folder, dataset)``
        (or the like), not on ``dataset``, whose label ids may follow another order."""

    def map_labels_onto(self, dataset: Dataset) -> None:
        """Make ``predict`` answer in ``dataset``'s label ids; refused when no label name matches."""
        if self.label_names_assumed:
            return  # nothing to map by: the caller checks that this is the data the model was made on
        table = match_labels(self.label_names, dataset.label_names, f"model {self.name}",
                             f"dataset {dataset.name}")
        self.label_map = None if np.array_equal(table, np.arange(len(table))) else table

    @property
    def unmatched_labels(self) -> int:
        """How many of the model's labels the dataset loaded for lacks (their predictions are misses)."""
        return 0 if self.label_map is None else int((self.label_map < 0).sum())

    def n_parameters(self) -> int:
        return 0

    def details(self) -> dict[str, Any]:
        """Resolved facts that name the system in tables (e.g. LightXML's regime)."""
        return {}

    def diagnostics(self, split: Split) -> dict[str, Any]:
        """Facts about the trained model measured on ``split`` (the validation split, after fit, before the
        test split is read), merged into the run record (LightXML: ``variant_diagnostics``); {}: none."""
        return {}

    @classmethod
    def regime(cls, config: Any, dataset: Dataset) -> str:
        """"flat" or "clustered": the dataset's LightXML regime, which decides the original protocol's
        selection split; LightXML resolves its ``mode`` key."""
        return dataset.info.mode if dataset.info is not None else "flat"


def save_label_names(folder: Path, names: list[str]) -> None:
    """Label names are whitespace-free (the readers split on whitespace): one a line is unambiguous."""
    write_text(folder / LABEL_NAMES, "".join(f"{n}\n" for n in names))


def restored_shell(cls: type, folder: Path, dataset: Dataset, config_cls: type) -> Any:
    """A model of ``cls`` rebuilt from ``folder/model.json`` in its saved label space, weights still to load
    (what every classical model's ``restore`` starts with)."""
    _, config = read_model_meta(folder, cls.name, config_cls)
    own, assumed = saved_label_space(folder, dataset)
    model = cls(config, own)
    model.label_names_assumed = assumed
    return model


def saved_label_space(folder: Path, dataset: Dataset) -> tuple[Dataset, bool]:
    """(``dataset`` in the label space saved in ``folder``, whether the names were assumed). A folder saved
    before models kept their label names gets ``dataset`` as it is, flagged, so that callers can refuse
    to use it on any data but its own."""
    path = Path(folder) / LABEL_NAMES
    if not path.is_file():
        return dataset, True
    return in_label_space(dataset, path.read_text(encoding="utf-8").splitlines()), False


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
    # protocol name -> (dataset, encoder name) -> config keys merged above the preset (runs/protocol.py)
    protocols: dict[str, Callable[[Dataset, str], dict]] = field(default_factory=dict)
    neural: bool = False
    requires: tuple[str, ...] = ()  # optional Python packages it needs (e.g. omikuji for the tree)
