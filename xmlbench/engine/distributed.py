"""Data-parallel training on PyTorch's own engine: ``torchrun --nproc_per_node N -m xmlbench train ...``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous for several machines); we join the
process group (NCCL on GPUs, gloo on CPU), wrap the net in DistributedDataParallel, give each rank its
share of every global batch, gather evaluation predictions from all ranks, and let rank 0 alone write
checkpoints, logs and records. A single process is simply world size 1: every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> None:
    """Join the process group torchrun describes, once; nothing when run as a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def backend() -> str | None:
    """The process group's backend ("nccl", "gloo"), None in a single process."""
    return dist.get_backend() if world_size() > 1 and dist.is_initialized() else None


def local_device(default: torch.device) -> torch.device:
    if default.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return default


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 does cacheable work first (token caches, clusters); the others then read its cache."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard_of_batch(rows: np.ndarray) -> np.ndarray:
    """This rank's rows of a global batch (strided, so shards differ in size by at most one)."""
    return rows[rank() :: world_size()]


def shard_of_rows(rows: np.ndarray) -> np.ndarray:
    """This rank's contiguous block of rows for prediction; gathering in rank order restores the order."""
    return np.array_split(rows, world_size())[rank()]


def gather_rows(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenate every rank's arrays in rank order (all ranks get the result)."""
    if world_size() == 1:
        return arrays
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, arrays)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))


def gather_objects(obj: Any) -> list[Any]:
    if world_size() == 1:
        return [obj]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if world_size() == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: the encoder's pooler (and, in some modes, variant parts) never enter the loss,
    # because LightXML reads the hidden states directly.
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)
