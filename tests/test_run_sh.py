"""``run.sh`` with ``XMLBENCH_PYTHON``: an interpreter that already holds the requirements (a GPU image with
no package index) runs the checkout as it is, with no ``.venv`` made and no pip; one that cannot is one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_sh(args, python, tmp_path):
    env = {**os.environ, "XMLBENCH_PYTHON": str(python), "XMLBENCH_VENV": str(tmp_path / "venv-never-made")}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(ROOT / "run.sh"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_given_python_runs_the_checkout_without_making_a_venv(tmp_path):
    # a wrapper that notes the PYTHONPATH it was started with, then is the real interpreter
    seen = tmp_path / "pythonpath"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$PYTHONPATH" > {seen}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    done = _run_sh(["xmlbench", "list", "benchmarks"], wrapper, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "throughput" in done.stdout and "setting up" not in done.stderr
    assert not (tmp_path / "venv-never-made").exists()
    # the checkout itself is on the path, so a Python without the package installed imports it from here
    assert seen.read_text().strip().split(":")[0] == str(ROOT)


def test_a_given_python_without_the_requirements_is_one_line_naming_them(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    done = _run_sh(["xmlbench", "list"], tmp_path / "bare" / "bin" / "python", tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "lacks torch transformers numpy" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "venv-never-made").exists()


def test_a_given_python_that_is_not_there_or_not_python_is_one_line(tmp_path):
    missing = _run_sh(["xmlbench", "list"], tmp_path / "no-such-python", tmp_path)
    assert missing.returncode == 2 and "no such interpreter" in missing.stderr
    not_python = _run_sh(["xmlbench", "list"], "/bin/false", tmp_path)
    assert not_python.returncode == 2 and "does not run Python" in not_python.stderr
    for done in (missing, not_python):
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "venv-never-made").exists()
