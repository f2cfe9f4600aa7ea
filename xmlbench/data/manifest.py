"""Registered datasets: one TOML manifest per dataset in ``datasets/`` (facts as data, no name branches).

A manifest holds the folder and file names, the published statistics, the propensity constants A/B, the
LightXML regime (flat or clustered), the original hyper-parameters per encoder and the download source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from xmlbench.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    format: str  # "text" (LightXML/AttentionXML) or "bow" (Extreme Classification Repository)
    train_texts: str = "train_texts.txt"
    test_texts: str = "test_texts.txt"
    mode: str = "flat"  # LightXML regime for this dataset: "flat" or "clustered"
    propensity_a: float = 0.55
    propensity_b: float = 1.5
    archive_folder: str = ""
    aliases: tuple[str, ...] = ()
    published: dict[str, float] = field(default_factory=dict)
    lightxml: dict[str, dict[str, Any]] = field(default_factory=dict)  # encoder -> original hparams
    download: dict[str, str] = field(default_factory=dict)
    manifest_path: str = ""

    @property
    def folder(self) -> Path:
        return datasets_dir() / self.name


def datasets_dir() -> Path:
    """Where manifests and data live: $XMLBENCH_DATASETS, else the checkout's ``datasets/``."""
    env = os.environ.get("XMLBENCH_DATASETS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2] / "datasets"
    if repo.is_dir():
        return repo
    return Path.cwd() / "datasets"


def manifests_dir() -> Path:
    """Manifests ship with the checkout even when data is elsewhere."""
    repo = Path(__file__).resolve().parents[2] / "datasets"
    return repo if repo.is_dir() else datasets_dir()


def _load_manifest(path: Path) -> DatasetInfo:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    prop = raw.pop("propensity", {})
    return DatasetInfo(
        name=raw["name"],
        title=raw.get("title", raw["name"]),
        format=raw.get("format", "text"),
        train_texts=raw.get("train_texts", "train_texts.txt"),
        test_texts=raw.get("test_texts", "test_texts.txt"),
        mode=raw.get("mode", "flat"),
        propensity_a=float(prop.get("A", 0.55)),
        propensity_b=float(prop.get("B", 1.5)),
        archive_folder=raw.get("archive_folder", ""),
        aliases=tuple(raw.get("aliases", ())),
        published=dict(raw.get("published", {})),
        lightxml=dict(raw.get("lightxml", {})),
        download=dict(raw.get("download", {})),
        manifest_path=str(path),
    )


def _build_registry() -> Registry[DatasetInfo]:
    reg: Registry[DatasetInfo] = Registry("dataset")
    for path in sorted(manifests_dir().glob("*.toml")):
        info = _load_manifest(path)
        reg.register(info.name, info, aliases=info.aliases)
    return reg


DATASETS = _build_registry()
