"""The wheel carries what a checkout has: the registered datasets' manifests are package data, found
through importlib.resources by an install that has no checkout around it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_dataset_manifests_and_an_install_registers_them(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "xmlbench", src / "xmlbench", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("xmlbench-*.whl"))
    shipped = sorted(p.name for p in (ROOT / "xmlbench" / "data" / "manifests").glob("*.toml"))
    with zipfile.ZipFile(wheel) as z:
        in_wheel = sorted(Path(n).name for n in z.namelist() if n.startswith("xmlbench/data/manifests/"))
        z.extractall(tmp_path / "site")
    assert shipped and in_wheel == shipped
    # the unpacked wheel alone, run from an empty folder with an empty datasets folder: every manifest
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-c", "from xmlbench.data.manifest import DATASETS; "
                          "print(' '.join(DATASETS.names()))"], cwd=empty, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "XMLBENCH_DATASETS": str(empty),
                              "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [n.removesuffix(".toml") for n in shipped]


def test_a_manifest_in_the_datasets_folder_registers_one_more(tmp_path):
    (tmp_path / "mine.toml").write_text('name = "mine"\ntitle = "My data"\n', encoding="utf-8")
    code = "from xmlbench.data.manifest import DATASETS; print(DATASETS.get('mine').title)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "XMLBENCH_DATASETS": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "My data", out.stderr
    (tmp_path / "dup.toml").write_text('name = "eurlex4k"\n', encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "xmlbench", "data", "list"], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "XMLBENCH_DATASETS": str(tmp_path),
                                        "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode != 0 and "dataset 'eurlex4k' is already registered by" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # one line, no traceback
