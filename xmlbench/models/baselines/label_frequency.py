"""The floor of every table: predict the most frequent training labels for every document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmlbench.config import to_dict
from xmlbench.data.dataset import Dataset, Split
from xmlbench.errors import UserError
from xmlbench.io import read_npz, write_json
from xmlbench.models.base import FitContext, Model, restored_shell, save_label_names


@dataclass(frozen=True)
class LabelFrequencyConfig:
    pass


class LabelFrequency(Model):
    name = "label-frequency"

    def __init__(self, config: LabelFrequencyConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        self.frequency = np.zeros(self.n_labels, dtype=np.float32)

    def fit(self, ctx: FitContext) -> dict:
        counts = np.bincount(ctx.train.labels.indices, minlength=self.n_labels)
        self.frequency = (counts / max(len(ctx.train), 1)).astype(np.float32)
        return {}

    def predict_own(self, split: Split, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_labels)
        order = np.lexsort((np.arange(self.n_labels), -self.frequency))[:k]  # ties: smaller id first
        ids = np.broadcast_to(order.astype(np.int32), (len(split), k)).copy()
        scores = np.broadcast_to(self.frequency[order], (len(split), k)).copy()
        return ids, scores

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _save_npz(folder / "frequency.npz", frequency=self.frequency)
        save_label_names(folder, self.label_names)
        write_json(folder / "model.json", {"model": self.name, "config": to_dict(self.config)})

    @classmethod
    def restore(cls, folder: Path, dataset: Dataset) -> LabelFrequency:
        model = restored_shell(cls, folder, dataset, LabelFrequencyConfig)
        frequency = read_npz(folder / "frequency.npz", ("frequency",))["frequency"]
        if frequency.shape != (model.n_labels,):
            saved = frequency.shape[0] if frequency.ndim else 0
            raise UserError(f"{folder / 'frequency.npz'}: {saved} labels but the model has {model.n_labels}")
        model.frequency = frequency
        return model


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from xmlbench.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
