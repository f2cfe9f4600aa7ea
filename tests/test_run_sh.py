"""``run.sh`` with ``XMLBENCH_PYTHON``: an interpreter that already holds the requirements (a GPU image with
no package index) runs the checkout as it is, with no ``.venv`` made and no pip; one that cannot is one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_sh(args, python, tmp_path, pythonpath=None, cwd=None):
    env = {**os.environ, "XMLBENCH_PYTHON": str(python), "XMLBENCH_VENV": str(tmp_path / "venv-never-made")}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([str(ROOT / "run.sh"), *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=cwd)


def _wrapper(tmp_path, body):
    """An executable ``python`` in tmp_path: ``body``, then the real interpreter."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/bash\n{body}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_a_given_python_runs_the_checkout_without_making_a_venv(tmp_path):
    seen = tmp_path / "pythonpath"
    wrapper = _wrapper(tmp_path, f'echo "$PYTHONPATH" > {seen}')  # notes the PYTHONPATH it was started with
    done = _run_sh(["xmlbench", "list", "benchmarks"], wrapper, tmp_path, pythonpath="/elsewhere")
    assert done.returncode == 0, done.stderr
    assert "throughput" in done.stdout and "setting up" not in done.stderr
    assert not (tmp_path / "venv-never-made").exists()
    # the checkout itself comes first, so it is what a Python with another copy installed imports; the
    # caller's own path is kept after it
    assert seen.read_text().strip().split(":") == [str(ROOT), "/elsewhere"]


def test_a_relative_python_is_the_callers_not_the_checkouts(tmp_path):
    _wrapper(tmp_path, "")
    done = _run_sh(["xmlbench", "list", "benchmarks"], "./python", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_python_older_than_the_package_needs_is_one_line(tmp_path):
    # the real interpreter runs run.sh's check with the bar raised past it
    wrapper = _wrapper(tmp_path, 'if [ "$1" = -c ]; then code="${2//(3, 11)/(99, 0)}"; shift 2; '
                                 f'exec {sys.executable} -c "$code" "$@"; fi')
    done = _run_sh(["xmlbench", "list"], wrapper, tmp_path)
    version = ".".join(map(str, sys.version_info[:3]))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"run.sh: XMLBENCH_PYTHON={wrapper} is Python {version}; xmlbench needs 3.11 or newer"]


def test_a_given_python_without_the_requirements_is_one_line_naming_them(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    done = _run_sh(["xmlbench", "list"], tmp_path / "bare" / "bin" / "python", tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "lacks torch transformers numpy" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "venv-never-made").exists()


def test_a_given_python_that_is_not_there_or_not_python_is_one_line(tmp_path):
    missing = _run_sh(["xmlbench", "list"], tmp_path / "no-such-python", tmp_path)
    assert missing.returncode == 2 and "no such interpreter" in missing.stderr
    failures = [missing]
    for not_python in ("/bin/false", "true", "echo"):  # exits non-zero; prints nothing; prints its arguments
        done = _run_sh(["xmlbench", "list"], not_python, tmp_path)
        assert done.returncode == 2 and "does not run Python 3" in done.stderr, not_python
        failures.append(done)
    for done in failures:
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "venv-never-made").exists()


def test_run_sh_test_also_needs_pytest_in_the_given_python(tmp_path):
    # find_spec("pytest") fails in this wrapper alone: a Python that has the package's modules but no pytest
    # (the name is spelt in bytes, as bash's pattern substitution drops quotes in its replacement)
    wrapper = _wrapper(tmp_path, 'if [ "$1" = -c ]; then code="${2//find_spec(m) is None/find_spec(m) is None '
                                 'or m == bytes([112, 121, 116, 101, 115, 116]).decode()}"; shift 2; '
                                 f'exec {sys.executable} -c "$code" "$@"; fi')
    done = _run_sh(["test", "--co", "-q"], wrapper, tmp_path)
    assert done.returncode == 2 and done.stderr.strip().endswith(
        "lacks pytest; install them into it (pip install -e .), or unset it to use .venv")
