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

        if "start_step" in event:
            self._open(int(event["start_step"]))
            return
        values = scalars(event)
        if not values:
            return
        if self.writer is None:  # no training session (a model without a loop): nothing to purge
            self._open(0)
        step = int(event.get("step", 0))
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def _open(self, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        # purge_step: TensorBoard drops what earlier event files hold after the checkpoint this session
        # starts from, so the steps a killed session logged after it (and now redoes) are shown once, as in
        # history.jsonl; a fresh start (0) purges from step 1 (what a run started over left behind)
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=start_step + 1)
        self.writer.add_text("run", "```\n" + json.dumps(self.facts, indent=1, default=str) + "\n```",
                             global_step=start_step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()


def _available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def _spec():
    from xmlbench.engine.reporters import ReporterSpec

    return ReporterSpec("TensorBoard event files in RUN/tensorboard", "tensorboard", _available,
                        TensorBoardReporter)


SPEC = _spec()
