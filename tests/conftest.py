"""Shared fixtures: every test session gets its own cache folder, and a tiny synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("xmlbench-cache")
    os.environ["XMLBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from xmlbench.data.synth import write_synthetic

    path = tmp_path_factory.mktemp("data") / "tiny"
    write_synthetic("tiny", path, seed=0, progress=False)
    return path


def write_text_dataset(folder: Path, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> Path:
    """A hand-made dataset in the LightXML text format: (text, labels) pairs per split."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        (folder / f"{split}_texts.txt").write_text("".join(t + "\n" for t, _ in rows), encoding="utf-8")
        (folder / f"{split}_labels.txt").write_text("".join(lab + "\n" for _, lab in rows), encoding="utf-8")
    return folder
