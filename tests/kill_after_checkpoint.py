"""Run ``xmlbench`` but die right after the resumable checkpoint of optimiser step N, the way a kill would.

Used by the resume tests (in-process through ``kill_after_checkpoint``, and under torchrun as a script:
``torchrun ... tests/kill_after_checkpoint.py N train ...``). The library itself carries no such hook.
"""

from __future__ import annotations

import sys


class Killed(RuntimeError):
    """Raised where a SIGKILL would have stopped the process."""


def kill_after_checkpoint(monkeypatch, step: int) -> None:
    """Patch the training loop so the run stops right after writing the checkpoint of ``step``."""
    from xmlbench.engine import loop

    real = loop._checkpoint

    def checkpoint_then_die(run_dir, net, optimizer, swa, precision, state, model):
        real(run_dir, net, optimizer, swa, precision, state, model)
        if state.step >= step:
            _wait_for_every_rank()
            raise Killed(f"killed after the checkpoint of step {state.step}")

    monkeypatch.setattr(loop, "_checkpoint", checkpoint_then_die)


def _wait_for_every_rank() -> None:
    """Under torchrun only rank 0 writes the checkpoint; the other ranks return at once. Were they to die
    first, torchrun would SIGTERM rank 0 mid-write, and on a loaded machine the resume then found no
    step-N checkpoint (the test failed only under load). The barrier makes every rank die after the write,
    which is the kill this hook stands for."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


if __name__ == "__main__":
    import pytest

    from xmlbench.cli import main

    patcher = pytest.MonkeyPatch()
    kill_after_checkpoint(patcher, int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
