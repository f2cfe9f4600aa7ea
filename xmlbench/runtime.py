"""Facts about the process the code runs in: usable cores, and numba's thread count matched to OpenMP's.

At the floor of the layering (like ``config`` and ``io``), so both the CLI and the experiment runners use
one definition.
"""

from __future__ import annotations

import os
import sys


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity and container limits), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory_bytes() -> int:
    """Memory a new allocation can get now (Linux MemAvailable; else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def human_bytes(n: float) -> str:
    """``3.5 GiB``, ``120 MiB``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:,.1f} TiB"


def match_numba_threads_to_omp() -> None:
    """Give numba the thread count the user (or torchrun, which sets 1) gave OpenMP.

    Numba's parallel kernels (metrics, top-k) start an OpenMP pool sized to every core, and after the
    first evaluation torch's matrix multiplies ran on that many threads too: two one-thread jobs on two
    cores went from 0.2 to 2.3 s per step. Must run before numba is imported (it reads the variable once).
    """
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0 and "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(min(int(omp), usable_cores())))
