"""``--report-to tensorboard``: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``), written by
torch's ``SummaryWriter`` (it needs the ``tensorboard`` package)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

FOLDER = "tensorboard"


class TensorBoardReporter:
    def __init__(self, run_dir: Path, facts: dict[str, Any]) -> None:
        self.folder = run_dir / FOLDER
        self.facts = facts
        self.writer = None  # opened at the first event, when the step a resumed session starts from is known

    def report(self, event: dict[str, Any]) -> None:
        from xmlbench.engine.reporters import scalars

        values = scalars(event)
        if not values:
            return
        step = int(event.get("step", 0))
        if self.writer is None:
            self.writer = self._open(first_step=step)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def _open(self, first_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard drops what earlier event files hold from this step on, so the steps a
        # killed session logged after its last checkpoint (and now redoes) are shown once, as history.jsonl
        writer = SummaryWriter(log_dir=str(self.folder), purge_step=first_step)
        writer.add_text("run", "```\n" + json.dumps(self.facts, indent=1, default=str) + "\n```", global_step=0)
        return writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _spec():
    from xmlbench.engine.reporters import ReporterSpec

    return ReporterSpec("TensorBoard event files in RUN/tensorboard", "tensorboard", _available,
                        TensorBoardReporter)


SPEC = _spec()
