"""Quadric decimation that keeps a closed mesh closed: fast-simplification, mended by replaying its collapses.

Quadric edge collapse (fast-simplification, Garland–Heckbert) now and then pinches two nearby sheets of a
thin part into an edge shared by four faces, or folds a face through another. Instead of decimating again
with other settings (each ~15–25 ms for a 30,000-face solid, and often failing the same way), the collapses
of the first decimation are replayed without those that built the faulty region: the region around each
defect stays at the input's resolution (closed and manifold there, as the input is) and everything else is
decimated as before.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from recon_core.mesh.printable import topology_defects

__all__ = ["AGGRESSIVENESS", "MENDS", "decimate", "collapse_map"]

AGGRESSIVENESS = 3.0
"""fast-simplification's ``agg``: on 38 of the shape bank's solids decimated to 5,124 faces the gentler 3 kept a
closed manifold 20 times, the library's default 7 only 7 times, at about the same cost."""
MENDS = 3
"""Replays without the faulty regions' collapses tried before giving up."""
_LIBRARY_LOCK = threading.Lock()
"""Held around each call into fast-simplification, which keeps its working mesh in one global (two threads
decimating at once mixed their meshes: an IndexError in :func:`collapse_map`, or another mesh's faces)."""


def collapse_map(faces: np.ndarray, n_vertices: int, collapses: np.ndarray) -> np.ndarray:
    """(V,) int64: the vertex of the decimated mesh that each input vertex became, -1 for those in no face of it.

    ``collapses`` (C, 2): row ``(i0, i1)`` merged vertex ``i1`` into ``i0``, in order, so each input vertex ends in
    the survivor at the end of its chain; the decimated mesh numbers the survivors that its faces (the input's
    faces through that map, less those that lost a corner) still use, in input order. tests/test_simplify.py
    compares this with the map of the library's replay (~10 ms, this ~1 ms for 30,000 faces).
    """
    parent = np.arange(n_vertices, dtype=np.int64)
    parent[collapses[:, 1]] = collapses[:, 0]
    while True:  # pointer jumping: every vertex points at the survivor of its chain
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            break
        parent = jumped
    tri = parent[np.asarray(faces, dtype=np.int64)]
    whole = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 2] != tri[:, 0])
    used = np.zeros(n_vertices, dtype=bool)
    used[tri[whole]] = True
    return np.where(used[parent], (np.cumsum(used) - 1)[parent], -1)


def decimate(verts: np.ndarray, faces: np.ndarray, target: int, *, mends: int = MENDS,
             defects: Callable[[np.ndarray, np.ndarray], np.ndarray | None] | None = None
             ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A closed manifold mesh decimated to about ``target`` faces, or None when it could not be mended.

    One quadric decimation (:data:`AGGRESSIVENESS`); while the result has defects (:func:`topology_defects`,
    then ``defects``), the vertices of the faulty region (the defects' vertices and their neighbours) are
    traced back to the input vertices that collapsed into them (:func:`collapse_map`; the library's replay of all
    the collapses is the decimation itself, vertex for vertex), and the collapses are replayed without any
    collapse touching those, up to ``mends`` times.

    Args:
        verts: (V, 3) float vertices of a closed, manifold, oriented mesh.
        faces: (F, 3) int faces.
        target: the face count to reach (a mended region adds a few).
        mends: replays tried.
        defects: optional ``(verts (V', 3) float64, faces (F', 3) int64) -> (K,) vertex indices`` of further
            defects of a topologically sound result (e.g. faces that intersect); empty: accepted; None: rejected
            without a region to mend.

    Returns:
        ``(verts (V', 3) float64, faces (F', 3) int64, mends used)``, or None: still faulty after ``mends``
        replays, a replay that holds nothing more back (the region is already at the input's resolution), or
        ``defects`` returned None.

    Raises:
        ValueError: ``target`` not between 1 and the input's face count (exclusive), or ``mends`` negative.
    """
    import fast_simplification

    if not 1 <= int(target) < len(faces):
        raise ValueError(f"target must be at least 1 and below the mesh's {len(faces)} faces, got {target}")
    if mends < 0:
        raise ValueError(f"mends must be >= 0, got {mends}")
    v32, f32 = np.asarray(verts, dtype=np.float32), np.asarray(faces, dtype=np.int32)
    with _LIBRARY_LOCK:
        sv, sf, collapses = fast_simplification.simplify(v32, f32, target_count=int(target), agg=AGGRESSIVENESS,
                                                         return_collapses=True)
    mapping = None  # (V,) the decimated vertex each input vertex became (-1: none)
    for mend in range(mends + 1):
        sv, sf = np.asarray(sv, dtype=np.float64), np.asarray(sf, dtype=np.int64)
        if len(sf) == 0:
            return None
        bad = topology_defects(sf, len(sv))
        if len(bad) == 0 and defects is not None:
            bad = defects(sv, sf)
            if bad is None:
                return None
        if len(bad) == 0:
            return sv, sf, mend
        if mend == mends:
            return None
        region = np.zeros(len(sv), dtype=bool)
        region[bad] = True
        region[sf[region[sf].any(1)].ravel()] = True  # and their neighbours
        if mapping is None:
            mapping = collapse_map(f32, len(v32), collapses)
        mapping = np.asarray(mapping, dtype=np.int64)
        held = np.zeros(len(v32), dtype=bool)  # input vertices that collapsed into the region
        held[mapping >= 0] = region[mapping[mapping >= 0]]
        kept = ~(held[collapses[:, 0]] | held[collapses[:, 1]])
        if kept.all():  # nothing more to hold back: a replay would give the same mesh
            return None
        collapses = collapses[kept]
        with _LIBRARY_LOCK:
            sv, sf, mapping = fast_simplification.replay_simplification(v32, f32, collapses)
    raise AssertionError("unreachable: the loop returns")
