"""Experiment trackers fed from the run's history stream (``--report-to tensorboard,mlflow``).

Every line the training loop writes to ``history.jsonl`` is also handed to the reporters as an event
(``{"step", "epoch", "loss"}`` after an optimiser step, ``{"step", "split", "metrics"}`` after a selection),
and the runner adds the final ``valid``/``test`` metrics. A reporter turns an event into scalars with
:func:`scalars` and writes them with its library. One file per tracker and one registration here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xmlbench.registry import Registry


class Reporter(Protocol):
    def report(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ReporterSpec:
    description: str
    requirement: str  # the pip package it needs, named in the error when it is missing
    available: Callable[[], bool]
    open: Callable[[Path, dict[str, Any]], Reporter]  # (run folder, run facts to log as parameters)


REPORTERS: Registry[ReporterSpec] = Registry("reporter")


def scalars(event: dict[str, Any]) -> dict[str, float]:
    """``train/loss`` for a step event; ``<split>/<metric>`` for an evaluation event."""
    if "loss" in event:
        return {"train/loss": float(event["loss"])}
    split = event.get("split")
    if split and isinstance(event.get("metrics"), dict):
        return {f"{split}/{name}": float(value) for name, value in event["metrics"].items()}
    return {}


def parse_report_to(text: str) -> tuple[str, ...]:
    """``"tensorboard,mlflow"`` -> canonical names; an unknown name is a user error listing the known ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return tuple(dict.fromkeys(REPORTERS.canonical(n) for n in names))


def check_available(names: Iterable[str]) -> None:
    """Before any training: a tracker whose library is missing is one line saying what to install."""
    from xmlbench.errors import UserError

    for name in names:
        spec = REPORTERS.get(name)
        if not spec.available():
            raise UserError(f"--report-to {name}: needs the {spec.requirement} package "
                            f"(pip install {spec.requirement}), which is not installed")


class Fanout:
    """Every open reporter gets every event; a run without ``--report-to`` has none."""

    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def report(self, event: dict[str, Any]) -> None:
        for r in self.reporters:
            r.report(event)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


def open_reporters(names: Iterable[str], run_dir: Path, facts: dict[str, Any]) -> Fanout:
    check_available(names)
    return Fanout([REPORTERS.get(n).open(run_dir, facts) for n in names])


def _register() -> None:
    from xmlbench.engine.reporters import mlflow, tensorboard

    REPORTERS.register("tensorboard", tensorboard.SPEC)
    REPORTERS.register("mlflow", mlflow.SPEC)


_register()
