"""The run's story in train.log: a start-of-run summary, the models' log lines, Python warnings and the
test result, through stdlib logging; progress bars off when stderr is not a terminal (no \\r in logs)."""

from __future__ import annotations

import logging
import warnings

from xmlbench.cli import main
from xmlbench.runs.record import read_record


def test_a_run_logs_its_summary_warnings_and_result_and_draws_no_bars_into_a_log(tiny_dataset, tmp_path,
                                                                                    capsys, monkeypatch):
    from xmlbench.models.baselines import label_frequency

    fit = label_frequency.LabelFrequency.fit

    def fit_with_a_warning(self, ctx):
        warnings.warn("a library said something", UserWarning, stacklevel=1)
        return fit(self, ctx)

    monkeypatch.setattr(label_frequency.LabelFrequency, "fit", fit_with_a_warning)
    handlers_before = list(logging.getLogger("xmlbench").handlers)
    # no --no-progress: stderr is captured here, not a terminal, so the bars are off by themselves
    assert main(["train", str(tiny_dataset), "--model", "label-frequency", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    log = (tmp_path / "r" / "train.log").read_text(encoding="utf-8")
    assert "\r" not in err and "\r" not in log
    assert read_record(tmp_path / "r")["options"]["progress"] is False
    first = log.splitlines()[0]
    assert "label-frequency on tiny (text): 270 train, 30 valid, 100 test documents, 60 labels" in first
    assert "a library said something" in log
    assert "test: P@1 " in log.splitlines()[-1]
    assert logging.getLogger("xmlbench").handlers == handlers_before  # nothing left behind


def test_a_neural_summary_names_steps_device_and_precision(tiny_dataset, tmp_path, capsys):
    assert main(["train", str(tiny_dataset), "--model", "lightxml", "--preset", "smoke", "--set", "max_steps=2",
                 "--set", "max_len=16", "--set", "epochs=1", "--out", str(tmp_path / "n")]) == 0
    first = (tmp_path / "n" / "train.log").read_text(encoding="utf-8").splitlines()[0]
    assert "optimiser steps planned (max_steps 2), device cpu, precision fp32" in first
    assert "parameters" in first and " 0 parameters" not in first
