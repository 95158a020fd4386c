"""Ctrl-C in the long training scripts: one sentence and exit code 130, not Python's traceback.

:func:`one_sentence_on_ctrl_c` wraps a script's ``main(argv)``; :func:`ignore_ctrl_c` is the initializer of its
process pools, so that a pool's workers leave Ctrl-C to the main process (which ends the pool) instead of each
printing its own traceback.
"""

from __future__ import annotations

import functools
import signal
import sys
from typing import Callable

__all__ = ["INTERRUPTED", "one_sentence_on_ctrl_c", "ignore_ctrl_c"]

INTERRUPTED = "error: interrupted (Ctrl-C)."
"""What a wrapped script prints on stderr when Ctrl-C stops it."""


def one_sentence_on_ctrl_c(main: Callable[..., int]) -> Callable[..., int]:
    """``main`` returning 130 with :data:`INTERRUPTED` on stderr when Ctrl-C (KeyboardInterrupt) stops it."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130

    return wrapped


def ignore_ctrl_c() -> None:
    """A process pool's initializer: its worker ignores SIGINT (the main process ends the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
