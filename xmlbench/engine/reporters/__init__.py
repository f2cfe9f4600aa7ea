"""Experiment trackers fed from the run's history stream (``--report-to tensorboard,mlflow``).

Every line the training loop writes to ``history.jsonl`` is also handed to the reporters as an event
(``{"step", "epoch", "loss"}`` after an optimiser step, ``{"step", "split", "metrics"}`` after a selection),
and the runner adds the final ``valid``/``test`` metrics. A training session first reports
``{"start_step": N}``, the optimiser step it starts after (0, or the checkpoint it resumed from). A reporter
turns an event into scalars with :func:`scalars` and writes them with its library; ``flush`` comes with every
checkpoint, so a kill loses no more than ``history.jsonl`` does. One file per tracker, one registration here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xmlbench.registry import Registry


class Reporter(Protocol):
    def report(self, event: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self, failed: bool = False) -> None: ...


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
    """Every open reporter gets every event; a run without ``--report-to`` has none. A tracker that fails
    mid-run (a server gone, a full disk) is dropped with one warning: hours of training are not lost to it,
    and history.jsonl still holds everything."""

    def __init__(self, reporters: list[tuple[str, Reporter]], warn: Callable[[str], None] = print) -> None:
        self.reporters = reporters
        self.warn = warn

    def _each(self, call: Callable[[Reporter], None]) -> None:
        for name, r in list(self.reporters):
            try:
                call(r)
            except Exception as e:  # noqa: BLE001 - a tracker's own failure must not end the run
                self.reporters.remove((name, r))
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                self.warn(f"warning: --report-to {name} failed ({first_line}); it gets nothing more from this "
                          "run (history.jsonl has everything)")

    def report(self, event: dict[str, Any]) -> None:
        self._each(lambda r: r.report(event))

    def flush(self) -> None:
        self._each(lambda r: r.flush())

    def close(self, failed: bool = False) -> None:
        self._each(lambda r: r.close(failed))


def open_reporters(names: Iterable[str], run_dir: Path, facts: dict[str, Any],
                   warn: Callable[[str], None] = print) -> Fanout:
    check_available(names)
    return Fanout([(n, REPORTERS.get(n).open(run_dir, facts)) for n in names], warn)


def _register() -> None:
    from xmlbench.engine.reporters import mlflow, tensorboard

    REPORTERS.register("tensorboard", tensorboard.SPEC)
    REPORTERS.register("mlflow", mlflow.SPEC)


_register()
