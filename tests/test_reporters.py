"""``--report-to``: TensorBoard gets exactly the run's history (each step once, also across a kill and a
resume) and its final metrics; unknown or missing trackers are one line before any training."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from xmlbench.engine.reporters import REPORTERS, parse_report_to, scalars
from xmlbench.errors import UserError
from xmlbench.runs.record import read_record

sys.path.insert(0, str(Path(__file__).parent))  # kill_after_checkpoint

ARGS = ["--model", "lightxml", "--preset", "smoke", "--no-progress", "--set", "mode=flat", "--set", "max_len=16",
        "--set", "epochs=2", "--set", "batch_size=32", "--set", "checkpoint_every=1", "--set", "eval_every=0"]


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard itself shows: its event loader, which applies purge_step across event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _history_losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return [(e["step"], e["loss"]) for e in lines if "loss" in e]


def test_scalars_of_each_event_kind():
    assert scalars({"step": 3, "epoch": 0, "loss": 0.5}) == {"train/loss": 0.5}
    assert scalars({"step": 3, "split": "select", "metrics": {"P@1": 40.0, "P@5": 20.0}}) == {
        "select/P@1": 40.0, "select/P@5": 20.0}
    assert scalars({"step": 3}) == {}


def test_tensorboard_holds_the_history_and_the_final_metrics(tiny_dataset, tmp_path):
    from xmlbench.cli import main

    out = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(out), *ARGS, "--report-to", "tensorboard"]) == 0
    shown = _tensorboard_scalars(out)
    losses = _history_losses(out)
    assert len(losses) >= 4
    assert [s for s, _ in shown["train/loss"]] == [s for s, _ in losses]
    assert [v for _, v in shown["train/loss"]] == pytest.approx([v for _, v in losses], rel=1e-6)
    record = read_record(out)
    for split in ("valid", "test"):
        assert shown[f"{split}/P@1"][-1][1] == pytest.approx(record["metrics"][split]["P@1"], rel=1e-6)
        assert shown[f"{split}/P@1"][-1][0] == record["selection"]["steps"]
    assert "select/P@1" in shown  # the per-epoch selections


def test_a_resumed_run_shows_each_step_once(tiny_dataset, tmp_path, monkeypatch):
    from kill_after_checkpoint import Killed, kill_after_checkpoint

    from xmlbench.cli import main
    from xmlbench.engine.reporters.tensorboard import TensorBoardReporter

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        kill_after_checkpoint(patch, 2)
        patch.setattr(TensorBoardReporter, "close", lambda self, failed=False: None)  # a SIGKILL closes nothing
        with pytest.raises(Killed):
            main(["train", str(tiny_dataset), "--out", str(out), *ARGS, "--report-to", "tensorboard"])
    # what the killed session logged up to its checkpoint is on disk (flushed at every checkpoint)
    assert [s for s, _ in _tensorboard_scalars(out)["train/loss"]] == [1, 2]
    # the killed session logged steps 1-2; as if it also got further before dying, log step 3 by hand
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out / "tensorboard")) as w:
        w.add_scalar("train/loss", 123.0, global_step=3)
    assert main(["train", str(tiny_dataset), "--out", str(out), *ARGS, "--report-to", "tensorboard",
                 "--resume"]) == 0
    steps = [s for s, _ in _tensorboard_scalars(out)["train/loss"]]
    assert steps == [s for s, _ in _history_losses(out)]
    assert steps == sorted(set(steps)) and steps[0] == 1
    assert 123.0 not in [v for _, v in _tensorboard_scalars(out)["train/loss"]]


def test_unknown_and_missing_trackers_are_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    from xmlbench.cli import main

    with pytest.raises(UserError, match="unknown reporter 'wandb'; known reporters: tensorboard, mlflow"):
        parse_report_to("tensorboard,wandb")
    assert parse_report_to(" tensorboard, tensorboard ") == ("tensorboard",)
    # as on a machine without mlflow, whether or not this one has it
    spec = REPORTERS.get("mlflow")
    monkeypatch.setitem(REPORTERS._items, "mlflow", replace(spec, available=lambda: False))
    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "r"), *ARGS, "--report-to", "mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--report-to mlflow: needs the mlflow package (pip install mlflow), which is not "
                            "installed")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_mlflow_gets_the_history_and_the_final_metrics(tiny_dataset, tmp_path, monkeypatch):
    """Needs mlflow (not in the test extras: CI skips this; run locally with mlflow-skinny installed)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from xmlbench.cli import main

    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses new file stores otherwise
    out = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--out", str(out), *ARGS, "--report-to", "mlflow"]) == 0
    client = MlflowClient(tracking_uri=store)
    run_id = (out / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "train/loss")
    logged = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in logged] == [s for s, _ in _history_losses(out)]
    assert [v for _, v in logged] == pytest.approx([v for _, v in _history_losses(out)], rel=1e-6)
    record = read_record(out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test/P_at_5"] == pytest.approx(record["metrics"]["test"]["P@5"])
    assert run.data.params["model"] == "lightxml"


def test_a_tracker_that_fails_mid_run_is_dropped_with_one_warning():
    from xmlbench.engine.reporters import Fanout

    class Broken:
        def report(self, event):
            raise ConnectionError("server gone\nmore detail")

        def flush(self):
            pass

        def close(self, failed=False):
            pass

    class Kept:
        def __init__(self):
            self.events, self.closed = [], None

        def report(self, event):
            self.events.append(event)

        def flush(self):
            pass

        def close(self, failed=False):
            self.closed = failed

    kept, warnings = Kept(), []
    fan = Fanout([("mlflow", Broken()), ("tensorboard", kept)], warn=warnings.append)
    for step in (1, 2):
        fan.report({"step": step, "loss": 0.1})
    fan.close(failed=True)
    assert warnings == ["warning: --report-to mlflow failed (server gone); it gets nothing more from this run "
                        "(history.jsonl has everything)"]
    assert [e["step"] for e in kept.events] == [1, 2] and kept.closed is True


def test_init_refuses_report_to_and_ablate_does_not_pass_it_to_init(tiny_dataset, tmp_path, capsys):
    from xmlbench.cli import main
    from xmlbench.cli.train import options_to_argv
    from xmlbench.runs.runner import RunOptions

    assert main(["init", str(tiny_dataset), "--out", str(tmp_path / "w.pt"), *ARGS, "--report-to",
                 "tensorboard"]) == 2
    assert "--report-to: init trains nothing" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "w.pt").exists()
    opts = RunOptions(dataset="d", model="lightxml", report_to=("tensorboard",))
    assert "--report-to" not in options_to_argv(opts, "init")
    assert options_to_argv(opts, "train")[-2:] == ["--report-to", "tensorboard"]
