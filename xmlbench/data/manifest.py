"""Registered datasets: one TOML manifest per dataset (facts as data, no name branches).

The shipped manifests are package data (``xmlbench/data/manifests/*.toml``, read through
``importlib.resources``, so a wheel install knows every registered dataset); a ``NAME.toml`` in the datasets
folder (``$XMLBENCH_DATASETS``, else the checkout's ``datasets/``) registers one more without touching the
package. A name registered twice is an error naming both files.

A manifest holds the folder and file names, the published statistics, the propensity constants A/B, the
LightXML regime (flat or clustered), the original hyper-parameters per encoder and the download source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from xmlbench.config import from_dict, to_dict
from xmlbench.errors import UserError
from xmlbench.paths import datasets_dir
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


@dataclass(frozen=True)
class _Propensity:
    A: float = 0.55
    B: float = 1.5


@dataclass(frozen=True)
class _Download:
    url: str = ""
    page: str = ""
    source: str = ""


@dataclass(frozen=True)
class _Published:
    """The statistics ``xmlbench data check`` compares against (REFERENCE.md §4)."""

    n_train: int = 0
    n_test: int = 0
    n_labels: int = 0
    avg_labels_per_doc: float = 0.0
    avg_docs_per_label: float = 0.0


@dataclass(frozen=True)
class _ManifestFile:
    """The schema of ``datasets/NAME.toml``, checked strictly like every other config: an unknown or
    mistyped key is an error naming the file and the key, never silently ignored."""

    name: str
    title: str = ""
    format: Literal["text", "bow"] = "text"
    train_texts: str = "train_texts.txt"
    test_texts: str = "test_texts.txt"
    mode: Literal["flat", "clustered"] = "flat"
    propensity: _Propensity = field(default_factory=_Propensity)
    archive_folder: str = ""
    aliases: tuple[str, ...] = ()
    published: _Published = field(default_factory=_Published)
    # encoder -> the original's hyper-parameters; the keys are LightXML config keys, checked when used
    lightxml: dict = field(default_factory=dict)
    download: _Download = field(default_factory=_Download)


def _load_manifest(path: Path) -> DatasetInfo:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path}: cannot read the dataset manifest ({e})") from None
    try:
        m = from_dict(_ManifestFile, raw)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    for encoder, table in m.lightxml.items():
        if not isinstance(table, dict):
            raise UserError(f"{path}: [lightxml.{encoder}] must be a table of LightXML config keys")
    return DatasetInfo(
        name=m.name,
        title=m.title or m.name,
        format=m.format,
        train_texts=m.train_texts,
        test_texts=m.test_texts,
        mode=m.mode,
        propensity_a=m.propensity.A,
        propensity_b=m.propensity.B,
        archive_folder=m.archive_folder,
        aliases=m.aliases,
        published={k: v for k, v in to_dict(m.published).items() if v},
        lightxml=dict(m.lightxml),
        download={k: v for k, v in to_dict(m.download).items() if v},
        manifest_path=str(path),
    )


def shipped_manifests() -> list:
    """The manifests inside the package (``Traversable`` objects: paths in a wheel or a checkout alike)."""
    from importlib.resources import files

    folder = files("xmlbench.data") / "manifests"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


def _build_registry() -> Registry[DatasetInfo]:
    reg: Registry[DatasetInfo] = Registry("dataset")
    local = sorted(datasets_dir().glob("*.toml")) if datasets_dir().is_dir() else []
    seen: dict[str, str] = {}
    for path in [*shipped_manifests(), *local]:
        info = _load_manifest(path)
        for n in (info.name, *info.aliases):
            if n in seen:
                raise UserError(f"{path}: dataset {n!r} is already registered by {seen[n]}; rename one")
            seen[n] = str(path)
        reg.register(info.name, info, aliases=info.aliases)
    return reg


DATASETS = _build_registry()
