"""Checkpoints as plain tensors, numbers, strings, lists and dicts: loadable with
``torch.load(weights_only=True)``, so loading never runs pickled code. Written atomically.

Loading a file that is empty, truncated, not a checkpoint, or one that holds pickled objects is one line
naming the file. torch's own message for the last case advises turning ``weights_only`` off, i.e. running the
file's code; that advice is never passed on.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xmlbench.errors import UserError
from xmlbench.io import atomic_path


def save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch reports a failed write (full disk, file too large) this way
            if "inline_container" not in str(e) and "write" not in str(e):
                raise
            raise OSError(errno.EIO, "could not write the checkpoint (disk full or file size limit?)",
                          str(path)) from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A flat name -> tensor dict as safetensors (an exported model's weights), written atomically.
    Tensors that share memory (tied weights) are stored once each: safetensors refuses shared storage."""
    from safetensors.torch import save_file

    seen: set[tuple[int, int]] = set()
    plain = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, id(t))
        plain[name] = t.clone() if key in seen else t
        seen.add(key)
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode  # safetensors recreates the file owner-only; keep the usual permissions
        save_file(plain, str(tmp), metadata={"format": "pt", "writer": "xmlbench"})
        os.chmod(tmp, mode)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors on the CPU; a missing, empty, truncated or foreign file is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model weights not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty weights file (its write was cut short); delete the run folder or rerun")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: not a readable safetensors file (truncated or damaged: "
                        f"{str(e).splitlines()[0][:120]}); rerun the training") from None


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty checkpoint (its write was cut short); delete it or rerun")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path}: holds pickled objects, not only tensors and plain values; xmlbench does "
                        "not load such files (they can run code)") from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, AttributeError, IndexError):
        raise UserError(f"{path}: not a readable checkpoint (truncated or damaged); "
                        "delete it or rerun") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not an xmlbench checkpoint (it holds a {type(state).__name__})")
    return state


def require(state: dict[str, Any], keys: tuple[str, ...], path: Path) -> dict[str, Any]:
    """``state`` if it has every key; else one line naming the file and the first key it lacks."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise UserError(f"{path}: not an xmlbench checkpoint of this kind (no {missing[0]!r} entry)")
    return state


def load_into(net: torch.nn.Module, weights: dict[str, Any], path: Path, strict: bool = True):
    """``net.load_state_dict(weights)``; weights of other shapes or names are one line naming the file."""
    try:
        return net.load_state_dict(weights, strict=strict)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        detail = lines[0] if lines else str(e).splitlines()[0]
        raise UserError(f"{path}: its weights do not fit this model ({detail[:300]})") from None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, in plain types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": _python_state_plain(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_plain() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
