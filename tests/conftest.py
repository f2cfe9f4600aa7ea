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


def shuffled_copy(src: Path, dst: Path, seed: int = 1, rename=None) -> Path:
    """A copy of a text dataset whose train file lists the same documents (text and labels) in another
    order, so every label gets another id; the other files are copied as they are. ``rename`` maps every
    label name to another one (for a copy sharing no label name with ``src``)."""
    import numpy as np

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name.endswith(".txt"):
            text = f.read_text(encoding="utf-8")
            if rename and f.name.endswith("_labels.txt"):
                text = "".join(" ".join(rename(x) for x in line.split()) + "\n" for line in text.splitlines())
            (dst / f.name).write_text(text, encoding="utf-8")
    texts = (dst / "train_texts.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    labels = (dst / "train_labels.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    (dst / "train_texts.txt").write_text("".join(texts[i] for i in order), encoding="utf-8")
    (dst / "train_labels.txt").write_text("".join(labels[i] for i in order), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def tiny_shuffled(tiny_dataset: Path, tmp_path_factory) -> Path:
    """The tiny dataset with its train lines shuffled: same labels, other label ids."""
    return shuffled_copy(tiny_dataset, tmp_path_factory.mktemp("data") / "tiny-shuffled")
