"""How thick a solid's walls are: from each face, straight inward, to the surface's other side.

A printer builds a wall from lines of its nozzle's (or its laser's) width, so a wall thinner than a couple of
lines prints weak, broken, or not at all, however closed and manifold the mesh: a chair's slats shrunk to a
20 mm model, an airplane's wing tips, the shell of a sealed pocket. The thickness measured here is the one slicers
and print services check: the length of the ray cast from a point of the surface along its inward normal to the
first face it meets (the shape diameter along the normal).

:func:`wall_thickness` casts one ray from each face's centroid and returns its length up to ``up_to`` (``inf``
beyond): every wall thinner than ``up_to`` is found, and nothing is computed for thicker ones. Broad phase: a uniform
grid of the faces' boxes that the boxes of each ray's pieces, none longer than a cell, look into (:class:`_FaceGrid`),
a batch of rays at a time; narrow phase: Möller–Trumbore. :func:`wall_thickness_naive` is the slow reference, every ray against every face in plain Python,
that the tests compare it with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recon_core.mesh.intersect import _cross as cross
from recon_core.mesh.intersect import _dot as dot
from recon_core.mesh.intersect import _sub as sub
from recon_core.mesh.intersect import cell_entries, validate_mesh

__all__ = ["ThinWalls", "thin_walls", "worth_noting", "wall_thickness", "wall_thickness_naive", "THIN_WALL_MM",
           "THIN_WALL_AREA_MM2", "THIN_WALL_SHARE"]

THIN_WALL_MM = 0.8
"""Millimetres: a mesh at its printed size whose walls are thinner than this somewhere gets a note.
Two lines of a 0.4 mm nozzle, the thinnest wall a filament printer builds reliably (a resin printer holds about
0.5 mm); measured as :func:`wall_thickness` measures it, straight inward from each face."""
THIN_WALL_AREA_MM2 = 10.0
"""Square millimetres: walls thinner than :data:`THIN_WALL_MM` get a note when they cover this much (a patch about
3 x 3 mm, a few lines of a nozzle across) or :data:`THIN_WALL_SHARE` of the surface: a mesh's sharp creases measure
thin over specks of their faces. On the 123 validation outputs (`runs/s41/walls_area.py`) at 100 mm tall, 68 % are
thin over 1 mm² or more (a median of 2.6 mm²), 20 % over 10 mm²; at 30 mm, 88 % and 57 %."""
THIN_WALL_SHARE = 0.05
"""See :data:`THIN_WALL_AREA_MM2`: a small print's thin walls are noted whatever their area (a chair printed 2 mm tall
is 99.8 % thin walls, over 5.9 mm²)."""

_START_REL = 1e-9
"""A hit nearer the ray's start than this share of the bounding-box diagonal is the start's own surface."""


_EDGE = 1e-9
"""Barycentric slack: a ray through an edge shared by two faces meets at least one of them despite rounding."""


def _rays(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each face's corners (F, 3, 3), centroid (F, 3), inward unit normal (F, 3) (zero for a face without area) and
    twice its area (F,)."""
    tris = verts[faces]
    cross = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    area2 = np.sqrt((cross * cross).sum(1))
    inward = np.zeros_like(cross)
    some = area2 > 0
    inward[some] = -cross[some] / area2[some, None]
    return tris, tris.mean(1), inward, area2


def _hits(origin: np.ndarray, direction: np.ndarray, tris: np.ndarray, near: float, far: float) -> np.ndarray:
    """Möller–Trumbore: the (K,) distances along each ray ``origin + t·direction`` (3, K) to its triangle ``tris``
    (3, 3, K: corner, axis, ray), ``inf`` where it misses or ``t`` is outside ``(near, far]``.

    Component arrays, the products written out: numpy's reductions over a small last axis are several times slower.
    """
    def dot(p, q):
        return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]

    def cross(p, q):
        return (p[1] * q[2] - p[2] * q[1], p[2] * q[0] - p[0] * q[2], p[0] * q[1] - p[1] * q[0])

    e1 = tris[1] - tris[0]
    e2 = tris[2] - tris[0]
    p = cross(direction, e2)
    det = dot(e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = origin - tris[0]
        u = dot(s, p) * inv
        q = cross(s, e1)
        v = dot(direction, q) * inv
        t = dot(e2, q) * inv
        hit = (det != 0) & (u >= -_EDGE) & (v >= -_EDGE) & (u + v <= 1 + _EDGE) & (t > near) & (t <= far)
    return np.where(hit, t, np.inf)


def _cells(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, cell: float, grid: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every grid cell each box ``lo``..``hi`` (N, 3) overlaps: ``(key, box, c_lo)``, (E,) int64 cell keys and the
    (E,) box of each entry, sorted by key, and the (N, 3) int64 low cell of each box."""
    c_lo = np.floor((lo - origin) / cell).astype(np.int64)
    c_hi = np.floor((hi - origin) / cell).astype(np.int64)
    key, box, _ = cell_entries(c_lo, c_hi - c_lo + 1, grid)  # the self-intersection test's grid, the same way
    return key, box, c_lo


class _FaceGrid:
    """The faces' boxes in a uniform grid of cells half a face's size, each face entered in the cells its box overlaps,
    for short boxes (rays' pieces) to look into: only ray-face pairs are made (the self-intersection test's broad phase
    makes every overlapping face pair, most of them neighbours, which here would be most of the work).

    Args:
        lo, hi: (F, 3) corners of the faces' boxes.
        extent_lo, extent_hi: (3,) corners of a box holding them and every box that will look in.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, extent_lo: np.ndarray, extent_hi: np.ndarray):
        self.lo, self.hi, self.origin = lo, hi, extent_lo
        span = float((extent_hi - extent_lo).max())
        # half a face's size: fewer faces a cell for the rays to test, each face in a few cells (12 ms against 13 at
        # a whole face's size, the 90th percentile 15 against 26, on validation outputs of ~5,100 faces)
        cell = max(0.5 * float(np.median((hi - lo).max(1))), span / 2**20, 1e-300)
        while True:  # at most 16 cells a face on average: grow the cells for meshes of a few large faces
            entries = (np.floor((hi - extent_lo) / cell) - np.floor((lo - extent_lo) / cell) + 1).prod(1).sum()
            if entries <= 16 * len(lo):
                break
            cell *= 2.0
        self.cell = cell
        self.grid = np.floor((extent_hi - extent_lo) / cell).astype(np.int64) + 1
        self.key, self.face, self.low = _cells(lo, hi, extent_lo, cell, self.grid)

    def pairs(self, seg_lo: np.ndarray, seg_hi: np.ndarray, seg_ray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ray, face)`` (K,): the faces whose boxes overlap each box ``seg_lo``..``seg_hi`` (S, 3) of a piece of the
        ray ``seg_ray`` (S,), each pair once a piece (kept by the cell at the low corner of the two boxes' common
        cells), a ray never with its own face. Pieces no longer than a cell overlap at most 8 cells each."""
        r_key, r_box, r_low = _cells(seg_lo, seg_hi, self.origin, self.cell, self.grid)
        first = np.searchsorted(self.key, r_key, side="left")
        counts = np.searchsorted(self.key, r_key, side="right") - first
        entry = np.repeat(np.arange(len(r_key)), counts)
        at = np.repeat(first, counts) + np.arange(len(entry)) - np.repeat(np.cumsum(counts) - counts, counts)
        piece, face = r_box[entry], self.face[at]
        ray = seg_ray[piece]
        keep = ray != face  # a face's own ray starts on it
        piece, face, ray, entry = piece[keep], face[keep], ray[keep], entry[keep]
        key = np.maximum(r_low[piece], self.low[face])  # the common cells' low corner: the one cell that keeps it
        keep = ((key[:, 0] * self.grid[1] + key[:, 1]) * self.grid[2] + key[:, 2]) == r_key[entry]
        for axis in range(3):
            keep &= (seg_lo[piece, axis] <= self.hi[face, axis]) & (self.lo[face, axis] <= seg_hi[piece, axis])
        return ray[keep], face[keep]


_PIECES_PER_BATCH = 65_536
"""Rays' pieces looked up at once: bounds the pairs held in memory when rays are long against the faces (a print
a few millimetres tall, its faces a tenth of a millimetre, its rays 0.8 mm)."""


def wall_thickness(verts: np.ndarray, faces: np.ndarray, up_to: float) -> np.ndarray:
    """Each face's wall thickness: the distance from its centroid, along its inward normal, to the first other face.

    Args:
        verts: (V, 3) float array of finite vertex positions.
        faces: (F, 3) int array of vertex indices, a closed mesh with outward normals (as the printable check
            guarantees; on an open or inward mesh the distances are to whatever the rays meet).
        up_to: the longest distance looked for, in the vertices' units (> 0).

    Returns:
        (F,) float64 distances, ``inf`` for a face whose ray meets nothing within ``up_to`` (and for a face without
        area, which has no normal).

    Raises:
        ValueError: as :func:`recon_core.mesh.intersect.self_intersections`, or ``up_to`` not a positive number.
    """
    verts, faces = validate_mesh(verts, faces)
    if not (np.isfinite(up_to) and up_to > 0):
        raise ValueError(f"up_to must be a positive finite distance, got {up_to}")
    out = np.full(len(faces), np.inf)
    if len(faces) < 2:
        return out
    tris, origin, inward, _ = _rays(verts, faces)  # a face without area has no normal: its ray meets nothing
    a, b, c = tris[:, 0], tris[:, 1], tris[:, 2]
    lo, hi = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    diagonal = float(np.linalg.norm(hi.max(0) - lo.min(0)))
    near = _START_REL * diagonal
    reach = min(up_to, diagonal)  # no ray meets a face farther than the whole mesh's diagonal
    pad = near  # the rays' boxes grown by the start's tolerance: a wall exactly ``up_to`` thick is not lost to rounding
    end = origin + reach * inward
    grid = _FaceGrid(lo, hi, np.minimum(lo.min(0), end.min(0)) - pad, np.maximum(hi.max(0), end.max(0)) + pad)
    pieces = max(1, math.ceil(reach / grid.cell))  # each ray cut into pieces no longer than a cell
    corners, starts, directions = tris.transpose(1, 2, 0), origin.T, inward.T  # component arrays for _hits
    step = max(1, _PIECES_PER_BATCH // pieces)
    cuts = np.arange(pieces + 1) * (reach / pieces)  # (P + 1,) distances along a ray where its pieces meet
    for first in range(0, len(faces), step):
        rays = np.arange(first, min(first + step, len(faces)))
        points = origin[rays, None] + cuts[None, :, None] * inward[rays, None]  # (R, P + 1, 3)
        seg_lo = (np.minimum(points[:, :-1], points[:, 1:]) - pad).reshape(-1, 3)
        seg_hi = (np.maximum(points[:, :-1], points[:, 1:]) + pad).reshape(-1, 3)
        ray, face = grid.pairs(seg_lo, seg_hi, np.repeat(rays, pieces))
        t = _hits(starts[:, ray], directions[:, ray], corners[:, :, face], near, up_to)
        met = np.isfinite(t)
        np.minimum.at(out, ray[met], t[met])
    return out


def wall_thickness_naive(verts, faces, up_to: float) -> list[float]:
    """The reference: every face's ray against every other face, one at a time, in plain Python (with the
    self-intersection reference's vector helpers, :mod:`recon_core.mesh.intersect`)."""
    verts = [tuple(float(x) for x in v) for v in np.asarray(verts)]
    faces = [tuple(int(k) for k in f) for f in np.asarray(faces)]
    used = [verts[k] for f in faces for k in f]
    diagonal = sum((max(p[d] for p in used) - min(p[d] for p in used)) ** 2 for d in range(3)) ** 0.5
    near = _START_REL * diagonal
    out = []
    for f in faces:
        a, b, c = (verts[k] for k in f)
        n = cross(sub(b, a), sub(c, a))
        size = dot(n, n) ** 0.5
        best = float("inf")
        if size > 0:
            d = (-n[0] / size, -n[1] / size, -n[2] / size)
            o = ((a[0] + b[0] + c[0]) / 3, (a[1] + b[1] + c[1]) / 3, (a[2] + b[2] + c[2]) / 3)
            for g in faces:
                if g == f:
                    continue
                p0, p1, p2 = (verts[k] for k in g)
                e1, e2 = sub(p1, p0), sub(p2, p0)
                p = cross(d, e2)
                det = dot(e1, p)
                if det == 0:
                    continue
                s = sub(o, p0)
                u = dot(s, p) / det
                q = cross(s, e1)
                v = dot(d, q) / det
                t = dot(e2, q) / det
                if u >= -_EDGE and v >= -_EDGE and u + v <= 1 + _EDGE and near < t <= up_to:
                    best = min(best, t)
        out.append(best)
    return out


@dataclass(frozen=True)
class ThinWalls:
    """What :func:`thin_walls` found; lengths and areas in the vertices' units."""

    faces: np.ndarray
    """(K,) int64 indices of the faces whose wall is thinner than the bound, ascending."""
    area: float
    """Their area."""
    surface: float
    """The area of all the faces."""
    median: float
    """The median wall over them, each weighted by its area; NaN when none is thin."""


def worth_noting(thin: ThinWalls) -> bool:
    """Whether the thin walls of a mesh in millimetres (:func:`thin_walls` at :data:`THIN_WALL_MM`) are worth a note:
    they cover :data:`THIN_WALL_AREA_MM2` or :data:`THIN_WALL_SHARE` of its surface."""
    return thin.area > 0 and thin.area >= min(THIN_WALL_AREA_MM2, THIN_WALL_SHARE * thin.surface)


def thin_walls(verts: np.ndarray, faces: np.ndarray, thinner_than: float) -> ThinWalls:
    """The faces whose wall (:func:`wall_thickness`) is thinner than ``thinner_than``, their area and median wall."""
    thickness = wall_thickness(verts, faces, thinner_than)
    tris = np.asarray(verts, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    area = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    thin = np.flatnonzero(thickness < thinner_than)
    if not len(thin):
        return ThinWalls(thin, 0.0, float(area.sum()), float("nan"))
    walls, weights = thickness[thin], area[thin]
    order = np.argsort(walls, kind="stable")
    cumulative = np.cumsum(weights[order])
    median = float(walls[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])
    surface = float(area.sum())
    # every face thin: the area is the surface, to the last bit (summed in another order it read "over 99%")
    return ThinWalls(thin, surface if len(thin) == len(area) else float(weights.sum()), surface, median)
