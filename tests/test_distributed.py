"""torchrun with two gloo processes on CPU: the run completes, resumes after a kill, and matches a single
process with the same global batch.

Tolerance: with dropout off and equal shards, the DDP gradient (the mean over ranks of each rank's mean
loss) equals the single-process gradient of the global batch up to float summation order, so the metrics
must agree to within 1 point (they are percentages over ~100 test documents).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmlbench.runs.record import read_record

ARGS = ["--model", "lightxml", "--preset", "smoke", "--no-progress", "--set", "mode=flat", "--set", "max_len=16",
        "--set", "epochs=2", "--set", "batch_size=32", "--set", "dropout=0", "--set", "encoder_dropout=0",
        "--set", "checkpoint_every=2", "--set", "swa_warmup=1", "--set", "swa_step=2"]


def _torchrun(dataset: Path, out: Path, extra=(), kill_after_step: int = 0) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    program = ["-m", "xmlbench"]
    if kill_after_step:  # the same command, dying right after the checkpoint of that step
        program = [str(Path(__file__).with_name("kill_after_checkpoint.py")), str(kill_after_step)]
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", *program, "train", str(dataset),
           "--out", str(out), *ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.skipif(not Path(sys.executable).with_name("torchrun").exists(), reason="torchrun not installed")
def test_two_gloo_processes_complete_resume_and_match_one(tiny_dataset, tmp_path):
    from xmlbench.cli import main

    assert main(["train", str(tiny_dataset), "--out", str(tmp_path / "single"), *ARGS]) == 0
    single = read_record(tmp_path / "single")

    killed = _torchrun(tiny_dataset, tmp_path / "ddp", kill_after_step=2)
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert "killed after the checkpoint of step" in killed.stderr, killed.stderr[-3000:]
    resumed = _torchrun(tiny_dataset, tmp_path / "ddp", extra=["--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ddp = read_record(tmp_path / "ddp")
    assert ddp["world_size"] == 2 and single.get("world_size", 1) == 1
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "resumed at epoch 0, batch 2, step 2" in log, (log[-3000:], killed.stderr[-3000:])
    for split in ("valid", "test"):
        for key in ("P@1", "P@3", "P@5"):
            assert abs(ddp["metrics"][split][key] - single["metrics"][split][key]) <= 1.0, (split, key)
