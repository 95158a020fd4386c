"""What reading a ``.npz`` file can raise, in one place: the training scripts' caches, solids, points and packs.

``numpy.load`` of a truncated file raises ``zipfile.BadZipFile`` or ``EOFError``; of a file that is no archive,
``ValueError`` or ``OSError``; an archive without the array asked for, ``KeyError``.
"""

from __future__ import annotations

import zipfile

__all__ = ["NPZ_ERRORS"]

NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
"""The errors of a ``.npz`` that is truncated, corrupt, foreign or lacks an array: catch these and say which file."""
