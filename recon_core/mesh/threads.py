"""A process-wide thread pool for numpy work that runs without the GIL (large array operations).

The network's own operations are spread over cores by torch; the mesh work after it (the silhouette
fit of several candidates, the self-intersection test's batches) is numpy, single-threaded per call,
so :func:`thread_map` runs independent pieces of it side by side on as many threads as torch may use.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["thread_map", "workers", "wait_quietly"]

T = TypeVar("T")
R = TypeVar("R")

_POOL: tuple[int, ThreadPoolExecutor] | None = None
"""The threads and how many there are: made on first use, grown when more are allowed, kept for the process."""
_LOCK = threading.Lock()


def wait_quietly() -> None:
    """Have torch's OpenMP threads sleep while they wait for work (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning,
    unless the environment sets a policy; it takes effect only before torch is first imported. The add-on's worker
    calls it first: it runs beside Blender, which may be rendering on every core.

    Spinning, the threads keep a core while they wait for one that the machine gave to another program, so a run
    beside other work slows many times over: on this 2-core machine the example chair took 557-720 ms a reconstruction
    beside one busy process against 367-384 ms passive, and ``recon-mesh`` took up to 12.7 s beside a test suite
    against 2.2-3.0 s. Alone, passive costs about a third: 358-374 ms against 265-283 (``bench.inference``), so
    ``recon-mesh`` and the benchmarks keep torch's default (`runs/s44/omp.txt`, one-off)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def workers() -> int:
    """Threads :func:`thread_map` may use: ``torch.get_num_threads()`` once torch is loaded, else the CPU count."""
    torch = sys.modules.get("torch")
    count = torch.get_num_threads() if torch is not None else (os.cpu_count() or 1)
    return max(1, int(count))


def thread_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, the calls spread over :func:`workers` threads; results in the order of ``items``.

    A call from inside the pool's own threads runs serially (no nested waits on a full pool). The first
    exception raised by ``fn`` is raised here.
    """
    global _POOL
    items = list(items)
    count = min(workers(), len(items))
    if count <= 1 or threading.current_thread().name.startswith("recon-pool"):
        return [fn(x) for x in items]
    with _LOCK:
        if _POOL is None or _POOL[0] < count:
            _POOL = (count, ThreadPoolExecutor(max_workers=count, thread_name_prefix="recon-pool"))
        pool = _POOL[1]
    return list(pool.map(fn, items))
