"""The model registry: every name usable as ``xmlbench train DATASET --model NAME``.

To add a model: write one module with a ``Model`` subclass and a frozen config dataclass, then register a
``ModelEntry`` below. The parametrised tests pick it up from ``MODELS.names()``.
"""

from __future__ import annotations

from xmlbench.models.base import FitContext, Model, ModelEntry
from xmlbench.models.label_frequency import LabelFrequency, LabelFrequencyConfig
from xmlbench.registry import Registry

MODELS: Registry[ModelEntry] = Registry("model")

MODELS.register(
    "label-frequency",
    ModelEntry(
        name="label-frequency",
        cls=LabelFrequency,
        config_cls=LabelFrequencyConfig,
        description="predict the most frequent training labels for every document (the floor)",
    ),
)

__all__ = ["MODELS", "FitContext", "Model", "ModelEntry"]
