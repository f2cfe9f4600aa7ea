"""``--report-to mlflow``: an MLflow run per xmlbench run (needs ``mlflow`` or ``mlflow-skinny``).

The tracking store is ``MLFLOW_TRACKING_URI`` when set (a server, a database), else the SQLite file
``RUN/mlflow.db`` (MLflow 3 refuses new ``./mlruns`` file stores, and its SQL store needs the full ``mlflow``
package, not ``mlflow-skinny``: with the skinny one, point ``MLFLOW_TRACKING_URI`` at a server); the
experiment is ``MLFLOW_EXPERIMENT_NAME`` or "xmlbench". The MLflow run id is kept in ``RUN/mlflow_run_id``,
so a resumed run goes on logging into the same MLflow run (MLflow keeps every value it was sent: steps a
killed session logged after its last checkpoint appear twice there, once in history.jsonl).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from xmlbench.errors import UserError

RUN_ID_FILE = "mlflow_run_id"
DATABASE = "mlflow.db"


class MlflowReporter:
    def __init__(self, run_dir: Path, facts: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / DATABASE).resolve()}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._run_id(run_dir, facts)
        except Exception as e:  # noqa: BLE001 - any failure of the store: one line, before training starts
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise UserError(f"--report-to mlflow: cannot use the tracking store {uri} ({first_line}); set "
                            "MLFLOW_TRACKING_URI to a server or database you can reach") from None

    def _run_id(self, run_dir: Path, facts: dict[str, Any]) -> str:
        saved = run_dir / RUN_ID_FILE
        if saved.is_file():  # a resumed run: the same MLflow run, which must exist in this store
            run_id = saved.read_text().strip()
            self.client.get_run(run_id)
            return run_id
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "xmlbench")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=str(run_dir.name),
                                     tags={"xmlbench.run_dir": str(run_dir.resolve())})
        for key, value in facts.items():
            self.client.log_param(run.info.run_id, key, str(value)[:500])  # MLflow caps a value's length
        saved.write_text(run.info.run_id + "\n")
        return run.info.run_id

    def report(self, event: dict[str, Any]) -> None:
        from xmlbench.engine.reporters import scalars

        step = int(event.get("step", 0))
        for key, value in scalars(event).items():
            # MLflow keys allow '/', not '@': P@5 becomes P_at_5
            self.client.log_metric(self.run_id, key.replace("@", "_at_"), value, step=step)

    def flush(self) -> None:
        pass  # every log_metric call is sent at once

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def _spec():
    from xmlbench.engine.reporters import ReporterSpec

    return ReporterSpec("an MLflow run (MLFLOW_TRACKING_URI, else RUN/mlflow.db)", "mlflow", _available,
                        MlflowReporter)


SPEC = _spec()
