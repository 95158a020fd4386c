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
    """Have the OpenMP threads of torch and MKL sleep while they wait for work (``OMP_WAIT_POLICY=PASSIVE``) instead
    of spinning, unless the environment sets a policy; it takes effect only before torch is first imported, so the
    entry points (``recon-mesh``, the add-on's worker, the inference benchmark) call it first.

    Spinning, they took the cores from :func:`thread_map`'s numpy work and from other programs: on this 2-core machine
    with other work running, ``recon-mesh examples/chair.png -o chair.stl --height-mm 90`` took 2.4 to 12.7 s (its CPU
    time up to 12.2 s: waiting, not work), against 2.2 to 3.0 s passive and 2.2 s on one thread
    (`runs/s44/omp.txt`, one-off)."""
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
