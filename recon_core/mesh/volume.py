"""Solid occupancy grids of arbitrary meshes, and closed manifold surfaces from grids.

Training models are triangle soups: open shells, single-sided wings, overlapping parts.
:func:`occupancy_grid` turns one into a solid (the cells its surface passes through, plus
every cell the outside cannot reach), so gaps narrower than a cell are closed and a
single-sided sheet becomes a slab one cell thick. :func:`marching_tetrahedra` extracts the
boundary of such a grid as a triangle mesh that is watertight, edge- and vertex-manifold,
consistently oriented outward and free of self-intersections by construction: every cube
is split into the six tetrahedra of the Kuhn triangulation (the same split in every cube,
so neighbouring cubes agree on their shared faces), each tetrahedron's piece of the surface
is one triangle or a two-triangle quad inside it, and the pieces of two tetrahedra meet only
along the tetrahedra's shared face.

Grids travel in the model file zlib-compressed (:func:`pack_grid`, :func:`unpack_grid`):
a 64³ grid of a training model takes a few hundred bytes.

Coordinates: grid cell ``(i, j, k)`` has its centre at ``-bound + (i + 0.5) * h``, with
``h = 2 * bound / resolution``, so the grid covers the cube ``[-bound, bound]³``; the data
set's models (centred, bounding-box diagonal 1) fit in ``bound = 0.55``.
"""

from __future__ import annotations

import functools
import zlib
from itertools import permutations

import numpy as np

__all__ = [
    "GRID_BOUND",
    "KUHN_TETRAHEDRA",
    "cell_indices",
    "occupancy_grid",
    "marching_tetrahedra",
    "gaussian_blur",
    "grid_surface",
    "grid_surface_vertices",
    "MARCHING_CLAMP",
    "pack_grid",
    "unpack_grid",
]

GRID_BOUND = 0.55
"""Half side of the cube a grid covers, in data units (the models' bounding-box diagonal is 1)."""

_CORNERS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
"""(8, 3) cube corner offsets; corner ``n`` is ``(n >> 2 & 1, n >> 1 & 1, n & 1)``."""


def cell_indices(mask: np.ndarray) -> np.ndarray:
    """(K, ndim) int64 indices of the true cells of ``mask``, in C order: what ``np.argwhere(mask)`` returns.

    From the flat indices (``np.flatnonzero``) by division: on a 64³ grid ~10x faster than ``np.argwhere`` when a
    few thousand cells are set (a bank solid's walls), ~1.5x when most are; n-dimensional ``nonzero`` is numpy's
    slow path (tests/test_volume.py compares the two).
    """
    mask = np.asarray(mask)
    flat = np.flatnonzero(mask)
    out = np.empty((len(flat), mask.ndim), dtype=np.int64)
    for axis in range(mask.ndim - 1, 0, -1):
        flat, out[:, axis] = np.divmod(flat, mask.shape[axis])
    if mask.ndim:
        out[:, 0] = flat
    return out


def _kuhn_tetrahedra() -> np.ndarray:
    """(6, 4) corner indices: for each order of the three axes, the path 000 -> ... -> 111."""
    tets = []
    for order in permutations(range(3)):
        corner, path = np.zeros(3, dtype=int), [0]
        for axis in order:
            corner[axis] = 1
            path.append(int(corner[0] * 4 + corner[1] * 2 + corner[2]))
        tets.append(path)
    return np.array(tets)


KUHN_TETRAHEDRA = _kuhn_tetrahedra()
"""(6, 4) the Kuhn triangulation of the unit cube, as indices into the cube's 8 corners."""


def _case_table() -> dict[int, list[list[tuple[int, int]]]]:
    """Inside-pattern (4 bits, bit ``n``: tetrahedron corner ``n`` inside) -> triangles as edge lists.

    One corner apart from the other three: the triangle across the three edges leaving it.
    Two and two: the quad across the four edges between them, in cyclic order (consecutive
    edges share a face of the tetrahedron), split into two triangles. Winding: :func:`_flip_table`.
    """
    table = {}
    for pattern in range(1, 15):
        inside = [n for n in range(4) if pattern >> n & 1]
        outside = [n for n in range(4) if not pattern >> n & 1]
        if len(inside) != 2:
            odd = inside[0] if len(inside) == 1 else outside[0]
            table[pattern] = [[(odd, n) for n in range(4) if n != odd]]
        else:
            (a, b), (c, d) = inside, outside
            table[pattern] = [[(a, c), (a, d), (b, d)], [(a, c), (b, d), (b, c)]]
    return table


_CASES = _case_table()


@functools.lru_cache(maxsize=1)
def _flip_table() -> np.ndarray:
    """(6, 16, 2) bool: whether triangle ``i`` of case ``pattern`` (:data:`_CASES`) in Kuhn tetrahedron ``k`` must be
    reversed so that its normal points from the tetrahedron's inside corners to its outside ones.

    The sign does not depend on where along its edges each vertex lies: with the vertices at ``o + t_i e_i``
    on the three edges leaving a lone corner ``o``, the normal's dot product with ``e_j`` is ``t_k t_l`` times the
    triple product of the ``e``'s, for any ``t`` in (0, 1); a quad's two triangles work out the same way
    (``s1 (1 - s2) + s2 (1 - s3)`` and ``s3 (1 - s4) + s4 (1 - s1)`` on the unit tetrahedron, and an affine map
    multiplies both by the sign of its determinant). So it is found once here, with every vertex at its edge's
    middle (once, on first use: ~3 ms kept off the start-up); tests/test_volume.py checks the result against a
    per-tetrahedron loop that orients by geometry.
    """
    flips = np.zeros((6, 16, 2), dtype=bool)
    for k, tet in enumerate(KUHN_TETRAHEDRA):
        corner = _CORNERS[tet].astype(np.float64)  # (4, 3)
        for pattern, triangles in _CASES.items():
            inside = np.array([pattern >> n & 1 for n in range(4)], dtype=bool)
            direction = corner[~inside].mean(0) - corner[inside].mean(0)
            for i, tri in enumerate(triangles):
                v = np.array([0.5 * (corner[a] + corner[b]) for a, b in tri])
                flips[k, pattern, i] = np.dot(np.cross(v[1] - v[0], v[2] - v[0]), direction) < 0
    return flips



MARCHING_CLAMP = 0.02
"""Surface vertices are kept at least this fraction of an edge away from the edge's samples
(:func:`marching_tetrahedra`'s default ``clamp``)."""


def marching_tetrahedra(
    values: np.ndarray, level: float, origin, spacing: float, clamp: float = MARCHING_CLAMP, first_index=(0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """The surface ``values == level`` of a grid, closed where the solid touches the grid's edge.

    Args:
        values: (X, Y, Z) float samples at points ``origin + (i, j, k) * spacing``; inside is
            ``values > level``. Pad the grid with outside values to close solids touching its edge.
        level: the iso-value.
        origin: (3,) position of sample ``(0, 0, 0)``.
        spacing: distance between neighbouring samples.
        clamp: surface vertices are kept at least this fraction of an edge away from the edge's
            samples (no zero-area triangles where a sample equals the level).
        first_index: (3,) ints: ``values`` is the block of a larger grid starting at this sample, whose
            sample ``(0, 0, 0)`` is at ``origin`` (the vertices are then the larger grid's, to the last bit).

    Returns:
        ``(verts, faces)``: (V, 3) float64 and (F, 3) int64, normals pointing from inside to
        outside. Empty arrays when the grid has no inside or no outside sample.
    """
    f = np.asarray(values, dtype=np.float64)
    if f.ndim != 3 or min(f.shape) < 2:
        raise ValueError(f"values must be an (X, Y, Z) grid with every side >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("values must be finite (NaN or inf found)")
    if not 0.0 < clamp < 0.5:
        raise ValueError(f"clamp must be in (0, 0.5) (0 would let vertices coincide), got {clamp}")
    if not spacing > 0:
        raise ValueError(f"spacing must be positive (a negative one would turn the surface inside out), got {spacing}")
    nx, ny, nz = f.shape
    inside = f > level
    # Cubes with inside and outside corners, from the 8 corner-shifted views (cheaper than reducing a stacked axis).
    views = [inside[a : nx - 1 + a, b : ny - 1 + b, c : nz - 1 + c] for a, b, c in _CORNERS]
    any_in, all_in = views[0].copy(), views[0].copy()
    for view in views[1:]:
        any_in |= view
        all_in &= view
    cubes = cell_indices(any_in & ~all_in)  # (C, 3) cubes the surface crosses
    if len(cubes) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    corner_ijk = cubes[:, None, :] + _CORNERS[None]  # (C, 8, 3)
    corner_id = (corner_ijk[..., 0] * ny + corner_ijk[..., 1]) * nz + corner_ijk[..., 2]  # (C, 8)
    tets = corner_id[:, KUHN_TETRAHEDRA].reshape(-1, 4)  # (T, 4) sample ids
    flat_f, flat_in = f.ravel(), inside.ravel()
    tet_in = flat_in[tets]  # (T, 4)
    t8 = tet_in.astype(np.uint8)
    pattern = t8[:, 0] | (t8[:, 1] << 1) | (t8[:, 2] << 2) | (t8[:, 3] << 3)  # which of the 4 corners are inside
    kind = np.arange(len(tets)) % len(KUHN_TETRAHEDRA)  # which Kuhn tetrahedron of its cube each row is
    flips = _flip_table()
    ends_a, ends_b = [], []
    for case, triangles in _CASES.items():
        rows = np.flatnonzero(pattern == case)
        if len(rows) == 0:
            continue
        for i, tri in enumerate(triangles):
            start = np.stack([tets[rows, e0] for e0, _ in tri], axis=1)  # (R, 3): each vertex on edge (start, end)
            end = np.stack([tets[rows, e1] for _, e1 in tri], axis=1)
            # wound so the normal points from the tetrahedron's inside corners to its outside ones (_flip_table)
            flip = flips[kind[rows], case, i]
            start[flip], end[flip] = start[flip][:, ::-1], end[flip][:, ::-1]
            ends_a.append(start)
            ends_b.append(end)
    a, b = np.concatenate(ends_a), np.concatenate(ends_b)  # (F, 3) x2
    n = flat_f.size
    keys, faces = np.unique((np.minimum(a, b) * n + np.maximum(a, b)).ravel(), return_inverse=True)
    faces = faces.reshape(-1, 3).astype(np.int64)
    lo, hi = keys // n, keys % n  # one vertex per crossed grid edge, shared by all its triangles
    t = np.clip((level - flat_f[lo]) / (flat_f[hi] - flat_f[lo]), clamp, 1.0 - clamp)

    def position(ids: np.ndarray) -> np.ndarray:
        return np.stack([ids // (ny * nz), (ids // nz) % ny, ids % nz], axis=-1).astype(np.float64)

    shift = np.asarray(first_index, dtype=np.float64)
    p_lo, p_hi = position(lo) + shift, position(hi) + shift
    verts = np.asarray(origin, dtype=np.float64) + spacing * (p_lo + t[:, None] * (p_hi - p_lo))
    return verts, faces


def occupancy_grid(
    verts: np.ndarray, faces: np.ndarray, resolution: int = 64, bound: float = GRID_BOUND,
    samples: int = 400_000, seed: int = 0, fill: bool = True,
) -> np.ndarray:
    """(R, R, R) bool solid of a mesh in the cube ``[-bound, bound]³`` (see the module docstring).

    Cells the surface passes through (found by sampling ``samples`` points on it, area-weighted)
    are solid, and with ``fill`` so is every cell the grid's border cannot reach through
    non-solid cells (without it, closed parts stay hollow: every wall, inner ones included,
    is a slab about one cell thick). Parts outside the cube are clipped to its border cells.

    Args:
        verts: (V, 3) float vertices; faces: (F, 3) int.
        resolution: R, cells per side.
        bound: half side of the cube the grid covers.
        samples: surface points sampled to find the cells (plus the vertices themselves).
        seed: seed of that sampling.
        fill: fill what the border cannot reach (see above).
    """
    import trimesh
    from scipy import ndimage

    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("the mesh has no faces: nothing to fill")
    mesh = trimesh.Trimesh(verts, faces, process=False)
    points, _ = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    points = np.concatenate([points, verts])
    h = 2.0 * bound / resolution
    ijk = np.clip(np.floor((points + bound) / h).astype(np.int64), 0, resolution - 1)
    solid = np.zeros((resolution,) * 3, dtype=bool)
    solid[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return ndimage.binary_fill_holes(solid) if fill else solid


def gaussian_blur(field: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(field, sigma, mode="constant", cval=0, truncate=truncate)`` of a 3D array.

    The same separable kernel (``exp(-x² / 2 sigma²)`` for integer ``|x| <= int(truncate sigma + 0.5)``,
    normalised), applied along each axis as a sum of shifted copies, zeros beyond the edges; written
    out so that the shape bank's path does not import scipy.ndimage (a quarter of a second of every
    start). tests/test_volume.py checks it against scipy.

    Args:
        field: (X, Y, Z) float array.
        sigma: the Gaussian's standard deviation in cells (> 0).
    """
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(field, dtype=np.float64)
    for axis in range(out.ndim):
        padded = np.moveaxis(out, axis, 0)
        n = padded.shape[0]
        padded = np.concatenate([np.zeros((radius, *padded.shape[1:])), padded, np.zeros((radius, *padded.shape[1:]))])
        blurred = sum(w * padded[k : k + n] for k, w in enumerate(kernel))
        out = np.moveaxis(blurred, 0, axis)
    return np.ascontiguousarray(out)


def grid_surface(
    occupancy: np.ndarray, bound: float = GRID_BOUND, smoothing: float = 0.0, level: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Closed manifold surface of a solid grid: ``(verts (V, 3) float64, faces (F, 3) int64)``.

    The grid is padded with one empty cell on every side (so the surface closes), optionally
    blurred by a Gaussian of ``smoothing`` cells, and cut at ``level`` by :func:`marching_tetrahedra`
    at the cell centres (below 0.5 the blurred solid grows a little, so one-cell slabs survive
    the blur). Empty when the grid has no solid cell.
    """
    field = _surface_field(occupancy, bound, smoothing, level)
    if field is None:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    values, origin, h, first = field
    return marching_tetrahedra(values, level, origin, h, first_index=first)


def grid_surface_vertices(
    occupancy: np.ndarray, bound: float = GRID_BOUND, smoothing: float = 0.0, level: float = 0.5
) -> np.ndarray:
    """(V, 3) float64: the vertices of :func:`grid_surface`'s mesh, the same values in another order, without
    its faces (a few times cheaper; for what needs only the points, e.g. the surface's bounding box).

    :func:`marching_tetrahedra` puts one vertex on every edge of the Kuhn triangulation whose ends lie on
    either side of the level; those edges run along the seven directions of the cube's monotone paths from
    corner 000 to 111, so they are found one direction at a time and placed by the same arithmetic
    (tests/test_volume.py compares the two).
    """
    field = _surface_field(occupancy, bound, smoothing, level)
    if field is None:
        return np.zeros((0, 3))
    f, origin, h, first = field
    clamp = MARCHING_CLAMP
    inside = f > level
    shift = np.asarray(first, dtype=np.float64)
    out = []
    for d in _CORNERS[1:]:  # (1, 0, 0) ... (1, 1, 1) as corner offsets: the seven edge directions
        a = tuple(slice(0, n - int(k)) for n, k in zip(f.shape, d))
        b = tuple(slice(int(k), n) for n, k in zip(f.shape, d))
        lo = cell_indices(inside[a] != inside[b])  # (E, 3) the edges' low ends
        if len(lo) == 0:
            continue
        hi = lo + d
        f_lo, f_hi = f[lo[:, 0], lo[:, 1], lo[:, 2]], f[hi[:, 0], hi[:, 1], hi[:, 2]]
        t = np.clip((level - f_lo) / (f_hi - f_lo), clamp, 1.0 - clamp)
        p_lo, p_hi = lo.astype(np.float64) + shift, hi.astype(np.float64) + shift
        out.append(np.asarray(origin, dtype=np.float64) + h * (p_lo + t[:, None] * (p_hi - p_lo)))
    return np.concatenate(out) if out else np.zeros((0, 3))


def _surface_field(occupancy: np.ndarray, bound: float, smoothing: float, level: float
                   ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray] | None:
    """:func:`grid_surface`'s padded, blurred block of the grid around its solid: ``(values (X, Y, Z) float64,
    origin (3,), spacing, first_index (3,))`` for :func:`marching_tetrahedra`, or None when nothing is solid."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    occupancy = np.asarray(occupancy, dtype=bool)
    if occupancy.ndim != 3 or len(set(occupancy.shape)) != 1:
        raise ValueError(f"occupancy must be a cubic (R, R, R) grid, got shape {occupancy.shape}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    h = 2.0 * bound / occupancy.shape[0]
    # Empty margin wide enough for the blur's whole kernel (scipy truncates at 4 sigma), and the
    # blur sees zeros beyond it: a solid touching the grid's edge still closes.
    pad = 1 + int(np.ceil(4.0 * smoothing))
    # Only the solid's bounding box (and the margin) is blurred and meshed: beyond it the field is 0.
    if not occupancy.any():
        return None
    spans = [np.flatnonzero(occupancy.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    first, last = np.array([x[0] for x in spans]), np.array([x[-1] for x in spans])  # the solid's bounding box
    field = np.pad(occupancy[tuple(slice(a, b + 1) for a, b in zip(first, last))].astype(np.float64), pad)
    if smoothing > 0:
        field = gaussian_blur(field, smoothing)
    return field, np.full(3, -bound + (0.5 - pad) * h), h, first


def pack_grid(occupancy: np.ndarray) -> bytes:
    """zlib-compressed bits of a bool grid (C order)."""
    return zlib.compress(np.packbits(np.asarray(occupancy, dtype=bool).ravel()).tobytes(), 9)


def unpack_grid(blob: bytes, resolution: int) -> np.ndarray:
    """Inverse of :func:`pack_grid`: (R, R, R) bool. Raises ``ValueError`` on a corrupt or mis-sized blob."""
    try:
        bits = np.frombuffer(zlib.decompress(bytes(blob)), dtype=np.uint8)
    except zlib.error as err:
        raise ValueError(f"a stored shape grid is corrupt ({err}); rebuild the model's shape bank") from None
    count = resolution**3
    if bits.size != (count + 7) // 8:
        raise ValueError(f"a stored shape grid holds {bits.size * 8} bits, expected {count} ({resolution}³)")
    return np.unpackbits(bits)[:count].astype(bool).reshape((resolution,) * 3)
