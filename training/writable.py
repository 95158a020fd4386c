"""Whether an output path can really be written, checked before a script's work starts.

:func:`recon_core.io.export.unwritable_reason` asks ``os.access``, which says yes to everything for root (``/proc``
included), so a script run as root found an unwritable ``--out`` only when it saved its result, its work lost. This
module's :func:`unwritable_reason` gives the same clauses, and when that check passes it also creates and removes a
temporary file in the nearest existing folder on the way: what the script's own write will do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from recon_core.io.export import unwritable_reason as _access_reason

__all__ = ["unwritable_reason"]


def unwritable_reason(path: str | os.PathLike, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written, as a clause for the caller's sentence; None when it can.

    ``path`` is a file to write (its missing folders made on the way), or with ``folder`` a folder to make or write
    into. The clauses are :func:`recon_core.io.export.unwritable_reason`'s, and ``"the folder /a cannot be written
    to (why)"`` when a temporary file cannot be created in the nearest existing folder ``/a``. Nothing is left
    behind: the temporary file is removed at once, and no folder is made.
    """
    reason = _access_reason(path, folder=folder)
    if reason is not None:
        return reason
    path = Path(path)
    start = (path if folder else path.parent).absolute()
    existing = next(p for p in (start, *start.parents) if p.exists())  # a folder: checked above
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=existing)
    except OSError as err:
        why = "" if err.errno == errno.ENOENT else f" ({err.strerror or err})"  # ENOENT: /proc's answer, no help
        return f"the folder {existing} cannot be written to{why}"
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return None
