"""Where xmlbench keeps things on disk, computed in one place.

The checkout root holds ``datasets/`` (manifests and unpacked data) and ``cache/`` (token caches,
clusters); ``XMLBENCH_DATASETS`` and ``XMLBENCH_CACHE`` move them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the ``xmlbench`` package


def cache_dir() -> Path:
    """Token caches, label clusters and other reusable intermediate files: $XMLBENCH_CACHE, else cache/."""
    env = os.environ.get("XMLBENCH_CACHE")
    return Path(env) if env else CHECKOUT_ROOT / "cache"


def datasets_dir() -> Path:
    """Where data and local manifests live: $XMLBENCH_DATASETS, else the checkout's ``datasets/`` (made
    on first use), else ./datasets for an installed package."""
    env = os.environ.get("XMLBENCH_DATASETS")
    if env:
        return Path(env)
    if (CHECKOUT_ROOT / "pyproject.toml").is_file():  # a checkout (its datasets/ may not exist yet)
        return CHECKOUT_ROOT / "datasets"
    return Path.cwd() / "datasets"  # an installed package: beside the user's work
