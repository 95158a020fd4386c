"""Self-intersection and degenerate-face tests for triangle meshes.

Definitions
-----------
All tolerances are relative to ``D``, the diagonal of the bounding box of the vertices
that ``faces`` references, so the tests do not depend on units.

*Degenerate face*: its smallest altitude (twice its area over its longest edge) is at
most ``DEGENERATE_REL_TOL * D``. This covers zero-area faces, collapsed edges and
needles/slivers, whose normals cannot be trusted.

*Intersecting faces*: two faces intersect if they have a point in common besides the
vertices and edge they share *by index*. With ``tol = CONTACT_REL_TOL * D`` and the
*slab* of a face being the face grown by ``tol`` in its plane (each edge moved out by
``tol``) and thickened by ``tol`` along its normal (a triangular prism), the rule depends on
how many vertex indices the two faces share:

* none: some edge of one face meets the slab of the other. With ``tol -> 0`` this is
  exactly the intersection of two closed triangles (the intersection of two triangles
  is a point, segment or polygon whose extreme points lie on an edge of one of them),
  so touching at a point and coplanar overlap count.
* one (vertex ``P``, faces ``PAB`` and ``PCD``): edge ``AB`` meets the slab of ``PCD``
  or edge ``CD`` meets the slab of ``PAB``. Two non-degenerate triangles meeting at
  ``P`` share another point exactly when one of the opposite edges crosses the other
  triangle: both intersections with the line (or wedge) through ``P`` start at ``P``
  and the shorter one ends on the opposite edge inside the other triangle.
* two (edge ``AB``, faces ``ABC`` and ``ABD``): a *fold-over*. Two such triangles can
  only meet off ``AB`` if they are coplanar, so they intersect when ``C`` and ``D``
  lie on the same side of ``AB`` with an opening angle of at most ``FOLD_ANGLE``.
* three (a duplicated face): always.

Nothing is tested against a degenerate face's slab (it has no reliable plane); its
edges are still tested against the other face, and pairs of two degenerate faces are
never reported. Degenerate faces are defects of their own, found by
:func:`degenerate_faces`.

The chosen ``CONTACT_REL_TOL = 1e-9`` is some five orders of magnitude above the
rounding error of the float64 predicates, and far below anything a printer resolves
(0.1 nm on a 100 mm part): faces closer than that are treated as touching. The
degenerate threshold ``1e-6`` keeps face normals accurate to well below ``tol``.

:func:`self_intersections` is the fast, vectorised version (uniform-grid broad phase on
face bounding boxes, then the slab tests in batches); :func:`self_intersections_naive`
is the slow reference over all pairs, written in plain Python, that the tests compare
it with.
"""

from __future__ import annotations

import math

import numpy as np

from recon_core.mesh.threads import thread_map, workers

__all__ = [
    "CONTACT_REL_TOL",
    "DEGENERATE_REL_TOL",
    "FOLD_ANGLE",
    "cell_entries",
    "degenerate_faces",
    "face_defects",
    "intersecting_faces",
    "self_intersections",
    "self_intersections_naive",
    "validate_mesh",
]

CONTACT_REL_TOL = 1e-9
"""Distance, relative to the bounding-box diagonal, below which faces touch."""

DEGENERATE_REL_TOL = 1e-6
"""Smallest altitude, relative to the bounding-box diagonal, of a non-degenerate face."""

FOLD_ANGLE = 1e-6
"""Opening angle (radians) at or below which two edge-adjacent faces are folded over."""

_CHUNK_PAIRS = 200_000  # candidate pairs handled per vectorised batch
_MAX_CELL_ENTRIES_PER_FACE = 16  # broad phase: grow the grid cells above this
_CELL_PERCENTILE = 50  # broad phase: initial cell size, a percentile of the face sizes


_NEXT = np.array([1, 2, 0])
"""Corner k+1 (mod 3) of each corner k: ``x[:, _NEXT]`` is ``np.roll(x, -1, axis=1)``, gathered faster."""


def validate_mesh(verts: np.ndarray, faces: np.ndarray, *, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, dtypes and index range; return float64 verts and int64 faces.

    Args:
        verts: (V, 3) real array.
        faces: (F, 3) integer array of indices into ``verts``.
        finite: also require every vertex coordinate to be finite.

    Raises:
        ValueError: naming the expected shape or the offending values.
    """
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {verts.shape}")
    if not (np.issubdtype(verts.dtype, np.floating) or np.issubdtype(verts.dtype, np.integer)):
        raise ValueError(f"verts must be a real array, got dtype {verts.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if faces.size and not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be an integer array, got dtype {faces.dtype}")
    faces = faces.astype(np.int64, copy=False)
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"faces must index verts in [0, {len(verts)}), got range [{faces.min()}, {faces.max()}]")
    verts = verts.astype(np.float64, copy=False)
    if finite and not np.isfinite(verts).all():
        raise ValueError("verts must be finite (found NaN or inf)")
    return verts, faces


def _reference_length(verts: np.ndarray, faces: np.ndarray) -> float:
    """Bounding-box diagonal of the vertices referenced by ``faces`` (0.0 if none)."""
    if faces.size == 0:
        return 0.0
    used = verts[np.unique(faces)]
    return float(np.linalg.norm(used.max(0) - used.min(0)))


def _face_geometry(tris: np.ndarray, tol: float, deg_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab half-spaces and degeneracy of each face.

    Args:
        tris: (F, 3, 3) float64 face corners.
        tol: contact tolerance (absolute).
        deg_tol: degenerate-altitude tolerance (absolute).

    Returns:
        normals: (F, 5, 3) float64 unit normals of the slab's half-spaces (three edge
            planes pointing inward, then +n and -n); zero for degenerate faces.
        offsets: (F, 5) float64, so that ``normals @ x + offsets >= 0`` on the slab.
        degenerate: (F,) bool.
    """
    edges = tris[:, _NEXT] - tris  # (F, 3, 3): edge k runs from corner k to k+1
    cross = np.cross(edges[:, 0], tris[:, 2] - tris[:, 0])  # (F, 3), twice the area
    # the norms and the maximum written out over their 3 components (numpy's reductions over a small last axis are
    # ~6x slower; the same sums in the same order, so the same values)
    area2 = np.sqrt(cross[:, 0] * cross[:, 0] + cross[:, 1] * cross[:, 1] + cross[:, 2] * cross[:, 2])
    lengths = np.sqrt(edges[..., 0] * edges[..., 0] + edges[..., 1] * edges[..., 1] + edges[..., 2] * edges[..., 2])
    longest = np.maximum(np.maximum(lengths[:, 0], lengths[:, 1]), lengths[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        altitude = np.where(longest > 0, area2 / longest, 0.0)
        degenerate = ~(altitude > deg_tol)
        safe = ~degenerate
        unit_n = np.zeros_like(cross)
        unit_n[safe] = cross[safe] / area2[safe, None]
        inward = np.zeros_like(edges)
        inward[safe] = np.cross(unit_n[safe, None, :], edges[safe]) / lengths[safe, :, None]
    normals = np.concatenate([inward, unit_n[:, None], -unit_n[:, None]], axis=1)  # (F, 5, 3)
    anchors = np.concatenate([tris, tris[:, :1], tris[:, :1]], axis=1)  # (F, 5, 3)
    offsets = tol - np.einsum("fkd,fkd->fk", normals, anchors)
    return normals, offsets, degenerate


def _segments_hit_slabs(g_start: np.ndarray, g_end: np.ndarray) -> np.ndarray:
    """Liang-Barsky clipping of segments against slabs given as half-space values.

    Args:
        g_start: (..., 5) half-space values ``normals @ p + offsets`` at segment starts.
        g_end: (..., 5) the same at the segment ends.

    Returns:
        (...) bool, True where some point of the segment satisfies all five half-spaces.
    """
    # One half-space at a time over the (...) rows: numpy's reductions over a last axis of 5 cost ~10x more.
    outside = np.zeros(g_start.shape[:-1], dtype=bool)
    t_in = np.zeros(g_start.shape[:-1])
    t_out = np.ones(g_start.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        for h in range(g_start.shape[-1]):
            gs, ge = g_start[..., h], g_end[..., h]
            below_s, below_e = gs < 0, ge < 0
            outside |= below_s & below_e
            t = gs / (gs - ge)
            np.maximum(t_in, np.where(below_s & ~below_e, t, 0.0), out=t_in)  # entering
            np.minimum(t_out, np.where(~below_s & below_e, t, 1.0), out=t_out)  # leaving
    return ~outside & (t_in <= t_out)


def _edges_hit_faces(
    tris_a: np.ndarray, normals_b: np.ndarray, offsets_b: np.ndarray, allowed_a: np.ndarray
) -> np.ndarray:
    """Whether an allowed edge of each face ``a`` meets the slab of its partner ``b``.

    Args:
        tris_a: (K, 3, 3) corners of the faces whose edges are tested.
        normals_b: (K, 5, 3) slab half-space normals of the partner faces.
        offsets_b: (K, 5) slab half-space offsets of the partner faces.
        allowed_a: (K, 3) bool, which edges of ``a`` (edge k runs from corner k to k+1).

    Returns:
        (K,) bool.
    """
    # Cheap rejection first: an edge with both ends beyond the same face of the slab
    # (the two planes parallel to b) misses it.
    above = np.einsum("kd,kvd->kv", normals_b[:, 3], tris_a) + offsets_b[:, 3:4] < 0  # (K, 3)
    below = np.einsum("kd,kvd->kv", normals_b[:, 4], tris_a) + offsets_b[:, 4:5] < 0
    allowed_a = allowed_a & ~(above & above[:, _NEXT]) & ~(below & below[:, _NEXT])
    hit = np.zeros(len(tris_a), dtype=bool)
    # Only the edges still allowed, one row each (a pair sharing a vertex has one edge to test, not three).
    rows, edge = np.nonzero(allowed_a)
    if rows.size:
        normals, offsets = normals_b[rows], offsets_b[rows]
        g_start = np.einsum("mhd,md->mh", normals, tris_a[rows, edge]) + offsets  # (M, 5)
        g_end = np.einsum("mhd,md->mh", normals, tris_a[rows, (edge + 1) % 3]) + offsets
        hit[rows[_segments_hit_slabs(g_start, g_end)]] = True
    return hit


def _folded(tris_a: np.ndarray, tris_b: np.ndarray, shared_a: np.ndarray, shared_b: np.ndarray, sin_fold: float) -> np.ndarray:
    """Fold-over test for edge-adjacent faces.

    Args:
        tris_a, tris_b: (K, 3, 3) corners of two faces sharing exactly one edge.
        shared_a, shared_b: (K, 3) bool, which corners are on the shared edge.
        sin_fold: sine of the largest opening angle that counts as folded.

    Returns:
        (K,) bool.
    """
    rows = np.arange(len(tris_a))
    k_c = np.argmin(shared_a, axis=1)  # the corner of a off the shared edge
    a = tris_a[rows, (k_c + 1) % 3]
    b = tris_a[rows, (k_c + 2) % 3]
    c = tris_a[rows, k_c]
    d = tris_b[rows, np.argmin(shared_b, axis=1)]
    axis = b - a
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)

    def perpendicular(p: np.ndarray) -> np.ndarray:
        w = p - a
        w = w - np.einsum("kd,kd->k", w, axis)[:, None] * axis
        return w / np.linalg.norm(w, axis=1, keepdims=True)

    m_c, m_d = perpendicular(c), perpendicular(d)
    same_side = np.einsum("kd,kd->k", m_c, m_d) > 0
    return same_side & (np.linalg.norm(np.cross(m_c, m_d), axis=1) <= sin_fold)


def _narrow_phase(
    faces: np.ndarray,
    tris: np.ndarray,
    normals: np.ndarray,
    offsets: np.ndarray,
    degenerate: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    sin_fold: float,
) -> np.ndarray:
    """Exact (to tolerance) test of candidate pairs ``(i[k], j[k])``; returns (K,) bool."""
    # which corners of i are corners of j and the other way round, (K, 3) each, one column at a time (numpy's
    # reductions over the small axes of a (K, 3, 3) array cost ~10x more)
    face_i, face_j = faces[i], faces[j]
    shared_i, shared_j = np.empty((len(i), 3), dtype=bool), np.zeros((len(i), 3), dtype=bool)
    for a in range(3):
        equal = [face_i[:, a] == face_j[:, b] for b in range(3)]
        shared_i[:, a] = equal[0] | equal[1] | equal[2]
        for b in range(3):
            shared_j[:, b] |= equal[b]
    n_shared = shared_i[:, 0].astype(np.int64) + shared_i[:, 1] + shared_i[:, 2]
    hit = np.zeros(len(i), dtype=bool)

    sel = np.flatnonzero(n_shared <= 1)
    if sel.size:
        si, sj = i[sel], j[sel]
        shared_si, shared_sj = shared_i[sel], shared_j[sel]
        allowed_i = ~(shared_si | shared_si[:, _NEXT])
        allowed_j = ~(shared_sj | shared_sj[:, _NEXT])
        hit_ij = _edges_hit_faces(tris[si], normals[sj], offsets[sj], allowed_i) & ~degenerate[sj]
        hit_ji = _edges_hit_faces(tris[sj], normals[si], offsets[si], allowed_j) & ~degenerate[si]
        hit[sel] = hit_ij | hit_ji

    sel = np.flatnonzero((n_shared == 2) & ~degenerate[i] & ~degenerate[j])
    if sel.size:
        hit[sel] = _folded(tris[i[sel]], tris[j[sel]], shared_i[sel], shared_j[sel], sin_fold)

    hit |= (n_shared == 3) & ~degenerate[i] & ~degenerate[j]
    return hit


class _BroadPhase:
    """Uniform-grid broad phase: the face pairs whose boxes overlap, in independent batches.

    Each face is entered in every grid cell its box overlaps; a pair is reported only by
    the cell holding the low corner of the intersection of the two boxes, so no pair is
    reported twice. :meth:`batches` cuts the work into ranges of the sorted entries that
    :meth:`pairs` turns into pairs independently (in any order, on any thread).

    Args:
        lo, hi: (F, 3) float64 corners of the (already inflated) face bounding boxes.
        active: optional (F,) bool: keep only pairs with at least one active face.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, active: np.ndarray | None = None):
        self.lo, self.hi, self.active = lo, hi, active
        n_faces = len(lo)
        if n_faces < 2:
            self.n_after = np.zeros(0, dtype=np.int64)
            return
        origin = lo.min(0)
        span = float((hi.max(0) - origin).max())
        cell = max(float(np.percentile((hi - lo).max(1), _CELL_PERCENTILE)), span / 2**20, 1e-300)
        while True:
            c_lo = np.floor((lo - origin) / cell).astype(np.int64)  # (F, 3)
            c_hi = np.floor((hi - origin) / cell).astype(np.int64)
            dims = c_hi - c_lo + 1
            per_face = dims.prod(1)
            if per_face.sum() <= _MAX_CELL_ENTRIES_PER_FACE * n_faces:
                break
            cell *= 2.0
        grid = c_hi.max(0) + 1  # cells per axis, each at most about 2**20

        # One entry per (face, cell) the face's box overlaps.
        key, self.face_of, self.cells = cell_entries(c_lo, dims, grid)
        self.c_lo = c_lo

        # Every entry pairs with the entries after it in the same cell.
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        self.n_after = np.repeat(ends, ends - starts) - np.arange(len(key)) - 1
        self.total = np.cumsum(self.n_after)

    def batches(self, pairs_per_batch: int = _CHUNK_PAIRS, min_batches: int = 1) -> list[tuple[int, int]]:
        """Ranges ``(first, last)`` of entries, each about ``pairs_per_batch`` same-cell pairs before the box
        test, and at least ``min_batches`` of them when there are enough entries (to share out the work)."""
        if not len(self.n_after):
            return []
        total = int(self.total[-1])
        size = max(1, min(pairs_per_batch, -(-total // max(1, min_batches))))
        out, first = [], 0
        while first < len(self.n_after):
            last = int(np.searchsorted(self.total, (int(self.total[first - 1]) if first else 0) + size, side="right"))
            last = max(last, first + 1)
            out.append((first, last))
            first = last
        return out

    def pairs(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """``(i, j)``: two (K,) int64 arrays, ``i < j``, the overlapping pairs reported by entries ``first:last``."""
        lo, hi, c_lo, cells, face_of = self.lo, self.hi, self.c_lo, self.cells, self.face_of
        counts = self.n_after[first:last]
        a = np.repeat(np.arange(first, last), counts)
        b = a + 1 + np.arange(len(a)) - np.repeat(np.cumsum(counts) - counts, counts)
        fa, fb = face_of[a], face_of[b]
        if self.active is not None:
            keep = self.active[fa] | self.active[fb]
            fa, fb, a = fa[keep], fb[keep], a[keep]
        for axis in range(3):  # one axis at a time, on the survivors: cheaper than (N, 3) gathers
            lo_a, lo_b = lo[fa, axis], lo[fb, axis]
            keep = (lo_a <= hi[fb, axis]) & (lo_b <= hi[fa, axis])
            keep &= np.maximum(c_lo[fa, axis], c_lo[fb, axis]) == cells[a, axis]
            fa, fb, a = fa[keep], fb[keep], a[keep]
        return np.minimum(fa, fb), np.maximum(fa, fb)


def self_intersections(
    verts: np.ndarray,
    faces: np.ndarray,
    *,
    rel_tol: float = CONTACT_REL_TOL,
    deg_rel_tol: float = DEGENERATE_REL_TOL,
    fold_angle: float = FOLD_ANGLE,
    max_pairs: int | None = None,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Face pairs of a triangle mesh that intersect (see the module docstring).

    About 45 ms for a 5,120-face sphere and 160 ms for 20,480 faces on one core. The
    cost grows with the number of faces whose bounding boxes overlap, so very spiky
    meshes are slower (seconds when most boxes overlap; see ``max_pairs``).

    Args:
        verts: (V, 3) float array of finite vertex positions.
        faces: (F, 3) int array of vertex indices.
        rel_tol: contact tolerance, relative to the bounding-box diagonal.
        deg_rel_tol: degenerate-altitude tolerance, relative to the diagonal.
        fold_angle: opening angle (radians) at or below which edge-adjacent faces fold.
        max_pairs: stop early once at least this many pairs are found (the result then
            holds at least ``max_pairs`` of them); None finds all.
        active: optional (F,) bool mask: only pairs with at least one active face are
            tested (an incremental re-check after moving the active faces' vertices).

    Returns:
        (K, 2) int64 array of face indices, ``pairs[:, 0] < pairs[:, 1]``, sorted by rows
        (unless stopped early).

    Raises:
        ValueError: if the shapes are wrong, an index is out of range or a vertex is not
            finite.
    """
    return _intersections(verts, faces, rel_tol, deg_rel_tol, fold_angle, max_pairs, active)[0]


def face_defects(verts: np.ndarray, faces: np.ndarray, *, rel_tol: float = CONTACT_REL_TOL,
                 deg_rel_tol: float = DEGENERATE_REL_TOL, fold_angle: float = FOLD_ANGLE,
                 since: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Both tests at once, each face's geometry computed once: ``(pairs, degenerate)``, what
    ``self_intersections(verts, faces, ...)`` and ``degenerate_faces(verts, faces, rel_tol=deg_rel_tol)``
    return ((K, 2) int64 face pairs, (F,) bool).

    Args:
        since: ``(before, pairs)``: the same faces' (V, 3) vertices at an earlier call with the same tolerances,
            and the (K, 2) pairs it returned. Only pairs with a face one of whose vertices moved since are tested
            again; the others keep their earlier answer, so the result is the same as without ``since`` (the
            tolerances, relative to the bounding box's diagonal, must be the same: when the diagonal changed,
            every pair is tested). A re-check after moving a few vertices costs about half a full one.

    Raises:
        ValueError: as :func:`self_intersections`.
    """
    if since is None:
        return _intersections(verts, faces, rel_tol, deg_rel_tol, fold_angle, None, None)
    verts, faces = validate_mesh(verts, faces)
    before = np.asarray(since[0], dtype=np.float64)
    if before.shape != verts.shape or _reference_length(before, faces) != _reference_length(verts, faces):
        return _intersections(verts, faces, rel_tol, deg_rel_tol, fold_angle, None, None)
    active = (verts != before).any(1)[faces].any(1)  # (F,) faces with a vertex that moved
    earlier = np.asarray(since[1], dtype=np.int64).reshape(-1, 2)
    kept = earlier[~(active[earlier[:, 0]] | active[earlier[:, 1]])]  # neither face moved: the same answer
    if not active.any():
        return kept, degenerate_faces(verts, faces, rel_tol=deg_rel_tol)
    pairs, degenerate = _intersections(verts, faces, rel_tol, deg_rel_tol, fold_angle, None, active)
    pairs = np.concatenate([kept, pairs])
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], degenerate


def _intersections(verts: np.ndarray, faces: np.ndarray, rel_tol: float, deg_rel_tol: float, fold_angle: float,
                   max_pairs: int | None, active: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`self_intersections`' pairs and the (F,) degenerate faces (:func:`degenerate_faces` at ``deg_rel_tol``)."""
    verts, faces = validate_mesh(verts, faces)
    none = np.zeros((0, 2), dtype=np.int64)
    if active is not None:
        active = np.asarray(active, dtype=bool)
        if active.shape != (len(faces),):
            raise ValueError(f"active must have shape (F,) = ({len(faces)},), got {active.shape}")
        if not active.any():  # nothing to test (only self_intersections passes ``active``: no faces' geometry)
            return none, np.zeros(0, dtype=bool)
    length = _reference_length(verts, faces)
    tol, deg_tol = rel_tol * length, deg_rel_tol * length
    tris = verts[faces]  # (F, 3, 3)
    normals, offsets, degenerate = _face_geometry(tris, tol, deg_tol)
    if degenerate.all():  # pairs of two degenerate faces are never reported
        return none, degenerate
    sin_fold = math.sin(fold_angle)
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]  # the boxes pairwise: numpy's .min(1) over 3 corners is ~6x slower
    phase = _BroadPhase(np.minimum(np.minimum(a, b), c) - tol, np.maximum(np.maximum(a, b), c) + tol, active)

    def batch(bounds: tuple[int, int]) -> np.ndarray:
        i, j = phase.pairs(*bounds)
        hit = _narrow_phase(faces, tris, normals, offsets, degenerate, i, j, sin_fold)
        return np.stack([i[hit], j[hit]], 1)

    if max_pairs is None:  # every batch is needed: test them side by side (numpy, mostly without the GIL)
        found = thread_map(batch, phase.batches(min_batches=workers()))
    else:  # one batch at a time, to stop as soon as enough are found
        found, n_found = [], 0
        for bounds in phase.batches():
            found.append(batch(bounds))
            n_found += len(found[-1])
            if n_found >= max_pairs:
                return np.concatenate(found), degenerate
    if not found:
        return none, degenerate
    pairs = np.concatenate(found)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], degenerate


def intersecting_faces(verts: np.ndarray, faces: np.ndarray, **kwargs) -> np.ndarray:
    """Mask of the faces that take part in a self-intersection.

    Args:
        verts: (V, 3) float array; faces: (F, 3) int array.
        **kwargs: passed on to :func:`self_intersections`.

    Returns:
        (F,) bool array.
    """
    pairs = self_intersections(verts, faces, **kwargs)
    mask = np.zeros(len(np.asarray(faces)), dtype=bool)
    mask[pairs.ravel()] = True
    return mask


def degenerate_faces(verts: np.ndarray, faces: np.ndarray, *, rel_tol: float = DEGENERATE_REL_TOL) -> np.ndarray:
    """Mask of the degenerate faces: smallest altitude at most ``rel_tol`` times the diagonal.

    Args:
        verts: (V, 3) float array of finite vertex positions.
        faces: (F, 3) int array of vertex indices.
        rel_tol: altitude tolerance relative to the bounding-box diagonal.

    Returns:
        (F,) bool array.

    Raises:
        ValueError: on wrong shapes, out-of-range indices or non-finite vertices.
    """
    verts, faces = validate_mesh(verts, faces)
    length = _reference_length(verts, faces)
    return _face_geometry(verts[faces], 0.0, rel_tol * length)[2]


def cell_entries(c_lo: np.ndarray, dims: np.ndarray, grid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entry per grid cell that each box overlaps, sorted by cell: boxes whose low cells are ``c_lo`` (N, 3)
    int64 and that span ``dims`` (N, 3) cells, on a grid of ``grid`` (3,) cells per axis.

    Returns:
        ``(key, box, cells)``: (E,) int64 cell keys ``(x * grid_y + y) * grid_z + z``, ascending (a stable sort: a
        box's entries keep their order within a cell); (E,) the box of each entry; (E, 3) int64 its cell.
    """
    per_box = dims.prod(1)
    box = np.repeat(np.arange(len(c_lo)), per_box)
    local = np.arange(len(box)) - np.repeat(np.cumsum(per_box) - per_box, per_box)
    d = dims[box]
    cx = c_lo[box, 0] + local % d[:, 0]
    cy = c_lo[box, 1] + (local // d[:, 0]) % d[:, 1]
    cz = c_lo[box, 2] + local // (d[:, 0] * d[:, 1])
    key = (cx * grid[1] + cy) * grid[2] + cz
    order = np.argsort(key, kind="stable")
    return key[order], box[order], np.stack([cx, cy, cz], 1)[order]


# --- The slow reference: plain Python over all pairs. ---------------------------------


def _sub(p, q):
    return (p[0] - q[0], p[1] - q[1], p[2] - q[2])


def _dot(p, q):
    return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]


def _cross(p, q):
    return (p[1] * q[2] - p[2] * q[1], p[2] * q[0] - p[0] * q[2], p[0] * q[1] - p[1] * q[0])


def _scale(p, s):
    return (p[0] * s, p[1] * s, p[2] * s)


def _norm(p):
    return math.sqrt(_dot(p, p))


def _slab_naive(tri, tol, deg_tol):
    """The five half-spaces ``(normal, offset)`` of a face's slab, or None if degenerate."""
    a, b, c = tri
    n = _cross(_sub(b, a), _sub(c, a))
    edges = [_sub(tri[(k + 1) % 3], tri[k]) for k in range(3)]
    longest = max(_norm(e) for e in edges)
    if longest == 0 or not _norm(n) / longest > deg_tol:
        return None
    n = _scale(n, 1 / _norm(n))
    planes = []
    for k in range(3):
        inward = _scale(_cross(n, edges[k]), 1 / _norm(edges[k]))
        planes.append((inward, tol - _dot(inward, tri[k])))
    planes.append((n, tol - _dot(n, a)))
    minus_n = _scale(n, -1.0)
    planes.append((minus_n, tol - _dot(minus_n, a)))
    return planes


def _segment_hits_slab_naive(p, q, planes):
    """Whether segment ``pq`` has a point inside every half-space of ``planes``."""
    t_in, t_out = 0.0, 1.0
    for normal, offset in planes:
        gp = _dot(normal, p) + offset
        gq = _dot(normal, q) + offset
        if gp < 0 and gq < 0:
            return False
        if gp < 0 <= gq:
            t_in = max(t_in, gp / (gp - gq))
        elif gq < 0 <= gp:
            t_out = min(t_out, gp / (gp - gq))
    return t_in <= t_out


def _faces_intersect_naive(fa, fb, ta, tb, slab_a, slab_b, sin_fold):
    shared = set(fa) & set(fb)
    if len(shared) == 3:
        return slab_a is not None and slab_b is not None
    if len(shared) == 2:
        if slab_a is None or slab_b is None:
            return False
        a, b = (ta[k] for k in range(3) if fa[k] in shared)
        c = next(ta[k] for k in range(3) if fa[k] not in shared)
        d = next(tb[k] for k in range(3) if fb[k] not in shared)
        axis = _sub(b, a)
        axis = _scale(axis, 1 / _norm(axis))
        perps = []
        for p in (c, d):
            w = _sub(p, a)
            w = _sub(w, _scale(axis, _dot(w, axis)))
            perps.append(_scale(w, 1 / _norm(w)))
        return _dot(perps[0], perps[1]) > 0 and _norm(_cross(perps[0], perps[1])) <= sin_fold
    for f_edges, t_edges, slab in ((fa, ta, slab_b), (fb, tb, slab_a)):
        if slab is None:
            continue
        for k in range(3):
            k2 = (k + 1) % 3
            if f_edges[k] in shared or f_edges[k2] in shared:
                continue  # an edge through the shared vertex touches the other face there
            if _segment_hits_slab_naive(t_edges[k], t_edges[k2], slab):
                return True
    return False


def self_intersections_naive(
    verts: np.ndarray,
    faces: np.ndarray,
    *,
    rel_tol: float = CONTACT_REL_TOL,
    deg_rel_tol: float = DEGENERATE_REL_TOL,
    fold_angle: float = FOLD_ANGLE,
) -> np.ndarray:
    """Slow reference for :func:`self_intersections`: every pair, one at a time.

    Args and returns as :func:`self_intersections` (without ``max_pairs``).
    """
    verts, faces = validate_mesh(verts, faces)
    length = _reference_length(verts, faces)
    tol, deg_tol = rel_tol * length, deg_rel_tol * length
    sin_fold = math.sin(fold_angle)
    face_list = [tuple(int(x) for x in f) for f in faces]
    tris = [tuple(tuple(float(x) for x in verts[k]) for k in f) for f in face_list]
    slabs = [_slab_naive(t, tol, deg_tol) for t in tris]
    boxes = [
        (tuple(min(p[d] for p in t) - tol for d in range(3)), tuple(max(p[d] for p in t) + tol for d in range(3)))
        for t in tris
    ]
    pairs = []
    for i in range(len(face_list)):
        for j in range(i + 1, len(face_list)):
            (lo_i, hi_i), (lo_j, hi_j) = boxes[i], boxes[j]
            if any(lo_i[d] > hi_j[d] or lo_j[d] > hi_i[d] for d in range(3)):
                continue
            if _faces_intersect_naive(face_list[i], face_list[j], tris[i], tris[j], slabs[i], slabs[j], sin_fold):
                pairs.append((i, j))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)
