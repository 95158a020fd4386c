"""Repair: turn any vertex positions on a mesh into a printable mesh, then smooth it.

:func:`make_printable` guarantees that what it returns passes
:func:`recon_core.mesh.printable.check_printable` (watertight, edge- and vertex-manifold,
consistently oriented with positive volume, no self-intersections, no degenerate faces),
whatever the input positions: folded, inverted, collapsed, spiky, NaN or inf. It tries
the candidates below in order and returns the first one that passes the full check:

1. ``"original"``: the input itself (faces flipped if its volume is negative);
2. ``"untangled"``: Laplacian smoothing restricted to the vertices of intersecting and
   degenerate faces and a neighbourhood that grows each round;
3. ``"star"`` (needs the undeformed sphere ``sphere_verts``): every vertex moved onto
   its sphere direction from the centroid, at its own distance from the centroid,
   clamped and smoothed. For a convex spherical triangulation such as the ico-sphere,
   *any* positive radii give an embedded surface: each face lies in the cone of its
   spherical triangle, and neighbouring cones meet only along their shared edge or ray;
4. ``"hull"``: the convex hull of the vertices (qhull), used for meshes that are not
   closed 2-manifolds or have no template;
5. ``"box"``: the bounding box, thickened where flat, which always passes.

The accepted mesh is then smoothed with Taubin's lambda/mu filter (G. Taubin, "A
signal processing approach to fair surface design", SIGGRAPH 1995) and rescaled about
its centroid to its volume before smoothing; the smoothed mesh is kept only if it
still passes the check. Everything is deterministic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from recon_core.mesh.intersect import validate_mesh, degenerate_faces, self_intersections
from recon_core.mesh.printable import check_printable, check_topology, signed_volume

if TYPE_CHECKING:  # scipy.sparse only when a repair or a smoothing runs: kept off the start-up path
    from scipy.sparse import csr_matrix

__all__ = ["RepairLog", "fill_cavities", "make_printable", "part_volumes", "taubin_smooth", "vertex_adjacency"]

logger = logging.getLogger(__name__)

_MAX_ABS_COORD = 1e30  # larger coordinates are treated like NaN
_OUTLIER_FACTOR = 10.0  # vertices farther than this many median distances are pulled in
_UNTANGLE_ROUNDS = 8
_MAX_UNTANGLE_FRACTION = 0.5  # more defective faces than this: skip local untangling
_UNTANGLE_ITERATIONS = 4  # Laplacian steps per round
_STAR_RADIUS_RATIO = 8.0  # star radii are clamped to [median / ratio, median * ratio]
_STAR_SMOOTHING = 3  # smoothing steps on the log radii
_BOX_MIN_THICKNESS = 0.05  # of the largest extent, for flat inputs
_TAUBIN_LAMBDA = 0.5
_TAUBIN_MU = -0.53


@dataclass
class RepairLog:
    """What :func:`make_printable` did."""

    path: str = ""
    """How validity was reached: "original", "untangled", "star", "hull" or "box"."""
    input_closed_manifold: bool = False
    """The input faces form a closed, oriented 2-manifold."""
    nonfinite_replaced: int = 0
    """Vertices with NaN, inf or absurd coordinates, replaced by their neighbours' mean."""
    outliers_clamped: int = 0
    """Vertices pulled in to ``_OUTLIER_FACTOR`` median distances from the median."""
    input_intersecting_pairs: int | None = None
    """Self-intersecting pairs of the sanitised input; None if too many to count."""
    input_degenerate_faces: int | None = None
    """Degenerate faces of the sanitised input; None if not checked."""
    untangle_rounds: int = 0
    """Rounds of local smoothing run."""
    flipped: bool = False
    """The faces were flipped to make the volume positive."""
    smoothing_iterations: int = 0
    """Taubin iterations applied to the result (0: none, or rejected)."""
    steps: list[str] = field(default_factory=list)
    """Human-readable account, in order."""

    def note(self, message: str) -> None:
        """Append ``message`` to :attr:`steps` and log it."""
        self.steps.append(message)
        logger.info("make_printable: %s", message)


def vertex_adjacency(faces: np.ndarray, n_vertices: int) -> csr_matrix:
    """Symmetric 0/1 vertex adjacency matrix of a triangle mesh.

    Args:
        faces: (F, 3) int array of vertex indices.
        n_vertices: V.

    Returns:
        (V, V) float64 CSR matrix, 1 where two distinct vertices share an edge.
    """
    from scipy.sparse import csr_matrix

    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    rows, cols = np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]]
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    adj.data[:] = 1.0  # duplicates were summed
    return adj


def part_volumes(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(P,) float64 signed volume of each connected part (faces joined through their vertices) of a closed, oriented
    mesh, in the order of each part's first face: positive for an outward part, negative for a pocket's inward shell.

    Args:
        verts: (V, 3) float; faces: (F, 3) int.
    """
    from scipy.sparse.csgraph import connected_components

    verts, faces = validate_mesh(verts, faces, finite=False)
    if len(faces) == 0:
        return np.zeros(0)
    _, part = connected_components(vertex_adjacency(faces, len(verts)), directed=False)
    face_part = part[faces[:, 0]]
    _, first = np.unique(face_part, return_index=True)
    order = face_part[np.sort(first)]
    return np.array([signed_volume(verts, faces[face_part == p]) for p in order])


def fill_cavities(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The mesh filled where it is hollow inside: ``(verts (V', 3), faces (F', 3) int64, pockets filled)``.

    A closed, oriented, self-intersection-free mesh bounds a sealed pocket with a shell of its own whose faces point
    into the pocket (a part enclosing a negative volume), and anything inside the pocket (a closed drawer in a
    closed cabinet) is another part again. Filling the solid drops every connected part (faces joined through their
    vertices) that lies inside another part, so only the outermost shells stay: still closed, manifold, outward and
    free of self-intersections (a subset of separate parts); never all of them (a part inside another needs an
    outer one). Whether a part is inside another is told by the parity of the crossings of a ray from one of its
    vertices with the other part's faces (:func:`_crossed`). Resin and powder printers trap material in such pockets;
    Blender shows their faces inside the object. Vertices are renumbered in their order; the mesh comes back as it
    is when no part lies inside another.

    Args:
        verts: (V, 3) float vertices; faces: (F, 3) int faces of a closed, oriented mesh without self-intersections.

    Returns:
        ``pockets filled``: the parts dropped that enclose a negative volume (a part inside a pocket is dropped
        with it, uncounted).
    """
    from scipy.sparse.csgraph import connected_components

    verts, faces = validate_mesh(verts, faces, finite=False)
    if len(faces) == 0:
        return verts, faces, 0
    count, part = connected_components(vertex_adjacency(faces, len(verts)), directed=False)
    face_part = part[faces[:, 0]]
    parts = np.unique(face_part)
    if len(parts) == 1:
        return verts, faces, 0
    tris = verts[faces]
    # the ray runs towards +x, +y and +z (_RAY): a face whose corners all lie below its start on an axis is never hit
    top = tris.max(axis=1)  # (F, 3)
    first = {p: faces[np.argmax(face_part == p), 0] for p in parts}  # one vertex of each part
    inner = np.zeros(count, dtype=bool)
    for p in parts:  # inside another part: an odd number of that part's faces crossed by a ray from p's vertex
        start = verts[first[p]]
        near = np.flatnonzero((top >= start).all(axis=1))
        crossings = np.bincount(face_part[near[_crossed(start, tris[near])]], minlength=count) % 2
        crossings[p] = 0
        inner[p] = crossings.any()
    if not inner.any():
        return verts, faces, 0
    pockets = sum(signed_volume(verts, faces[face_part == p]) < 0 for p in np.flatnonzero(inner))
    kept = faces[~inner[face_part]]
    used = np.zeros(len(verts), dtype=bool)
    used[kept.ravel()] = True
    index = np.cumsum(used, dtype=np.int64) - 1  # the kept vertices renumbered in their order
    return verts[used], index[kept], pockets


_RAY = np.array([0.2718281828, 0.3141592654, 0.9054688303])
"""The direction :func:`_crossed` casts its ray in: no axis, so it runs along no grid's faces or edges."""


def _crossed(point: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(T,) bool: the triangles ``tris`` (T, 3, 3) that the ray from ``point`` (3,) along :data:`_RAY` crosses
    (Möller–Trumbore). A point is inside a closed surface when it crosses an odd number of its triangles (a crossing
    through an edge or a vertex, which the oblique ray makes all but impossible, may count twice or not at all)."""
    direction = _RAY / np.linalg.norm(_RAY)
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    p = np.cross(direction, e2)
    det = np.einsum("td,td->t", e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = point - tris[:, 0]
        u = np.einsum("td,td->t", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ direction) * inv
        t = np.einsum("td,td->t", e2, q) * inv
    return (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)


def _umbrella(adj: csr_matrix, verts: np.ndarray) -> np.ndarray:
    """Mean of each vertex's neighbours (the vertex itself if it has none); (V, 3)."""
    degree = np.asarray(adj.sum(1)).ravel()
    mean = adj @ verts
    has = degree > 0
    mean[has] /= degree[has, None]
    mean[~has] = verts[~has]
    return mean


def taubin_smooth(
    verts: np.ndarray,
    faces: np.ndarray,
    iterations: int,
    *,
    lam: float = _TAUBIN_LAMBDA,
    mu: float = _TAUBIN_MU,
    preserve_volume: bool = True,
) -> np.ndarray:
    """Taubin lambda/mu smoothing with the uniform (umbrella) Laplacian.

    Args:
        verts: (V, 3) float array of finite vertex positions.
        faces: (F, 3) int array.
        iterations: number of lambda/mu step pairs.
        lam: positive (shrinking) step.
        mu: negative (inflating) step, ``mu < -lam``.
        preserve_volume: rescale about the vertex centroid to the input's signed volume
            (only when both volumes are positive).

    Returns:
        (V, 3) float64 smoothed positions.

    Raises:
        ValueError: on wrong shapes or non-finite vertices.
    """
    verts, faces = validate_mesh(verts, faces)
    adj = vertex_adjacency(faces, len(verts))
    out = verts.copy()
    for _ in range(iterations):
        out += lam * (_umbrella(adj, out) - out)
        out += mu * (_umbrella(adj, out) - out)
    if preserve_volume:
        before, after = signed_volume(verts, faces), signed_volume(out, faces)
        if before > 0 and after > 0:
            centre = out.mean(0)
            out = centre + (out - centre) * (before / after) ** (1.0 / 3.0)
    return out


def _sanitise(verts: np.ndarray, adj: csr_matrix, log: RepairLog) -> np.ndarray:
    """Replace non-finite vertices by their neighbours' mean and pull in far outliers."""
    verts = verts.copy()
    known = np.isfinite(verts).all(1)
    known[known] = (np.abs(verts[known]) <= _MAX_ABS_COORD).all(1)
    log.nonfinite_replaced = int((~known).sum())
    if not known.any():
        log.note(f"all {len(verts)} vertices are non-finite; collapsed to the origin")
        return np.zeros_like(verts)
    if not known.all():
        verts[~known] = 0.0
        while not known.all():
            count = adj @ known.astype(np.float64)
            total = adj @ (verts * known[:, None])
            new = ~known & (count > 0)
            if not new.any():
                break
            verts[new] = total[new] / count[new, None]
            known |= new
        verts[~known] = verts[known].mean(0)  # vertices not connected to any finite one
        log.note(f"replaced {log.nonfinite_replaced} non-finite vertices by their neighbours' mean")
    centre = np.median(verts, axis=0)
    dist = np.linalg.norm(verts - centre, axis=1)
    limit = _OUTLIER_FACTOR * np.median(dist)
    far = dist > limit
    if limit > 0 and far.any():
        verts[far] = centre + (verts[far] - centre) * (limit / dist[far])[:, None]
        log.outliers_clamped = int(far.sum())
        log.note(f"pulled {log.outliers_clamped} outlying vertices in to {_OUTLIER_FACTOR:g} median distances")
    return verts


def _defective_faces(
    verts: np.ndarray, faces: np.ndarray, cap: int, active: np.ndarray | None = None
) -> tuple[np.ndarray | None, int, int | None]:
    """Mask of intersecting or degenerate faces, the pair count and the degenerate count.

    With ``active`` (F,) bool, only pairs with an active face are tested (see
    :func:`_untangle`). Past ``cap`` pairs the mask and the degenerate count are None.
    """
    pairs = self_intersections(verts, faces, max_pairs=cap, active=active)
    if len(pairs) >= cap:
        return None, len(pairs), None
    mask = degenerate_faces(verts, faces)
    n_degenerate = int(mask.sum())
    mask[pairs.ravel()] = True
    return mask, len(pairs), n_degenerate


def _untangle(verts: np.ndarray, faces: np.ndarray, adj: csr_matrix, mask: np.ndarray, log: RepairLog) -> np.ndarray | None:
    """Local Laplacian smoothing around defective faces until none is left, or None.

    ``mask`` must mark *every* intersecting or degenerate face. Each round smooths a region
    holding all of them, then re-tests only the pairs with a face touching the region: a
    pair of untouched faces kept its geometry, was not intersecting (else both faces would
    have been marked), and smoothing (convex combinations of neighbours) cannot grow the
    bounding box that sets the contact tolerance. The caller still runs the full check on
    the result.
    """
    verts = verts.copy()
    cap = max(len(faces), 16)
    for round_ in range(_UNTANGLE_ROUNDS):
        region = np.zeros(len(verts), dtype=bool)
        region[faces[mask].ravel()] = True
        for _ in range(round_ + 1):
            region |= (adj @ region.astype(np.float64)) > 0
        rows = np.flatnonzero(region)
        sub = adj[rows]
        degree = np.asarray(sub.sum(1)).ravel()[:, None]
        for _ in range(_UNTANGLE_ITERATIONS):
            verts[rows] = (sub @ verts) / degree
        log.untangle_rounds = round_ + 1
        mask, _, _ = _defective_faces(verts, faces, cap, active=region[faces].any(1))
        if mask is None:
            return None
        if not mask.any():
            return verts
    return None


def _star(verts: np.ndarray, adj: csr_matrix, directions: np.ndarray, fallback_size: float) -> np.ndarray:
    """Vertices on their sphere directions from the centroid, at clamped, smoothed distances."""
    centre = verts.mean(0)
    radius = np.linalg.norm(verts - centre, axis=1)
    median = float(np.median(radius))
    if not median > 0:
        median = 0.5 * fallback_size / np.sqrt(3.0)
        radius = np.full(len(verts), median)
    log_r = np.log(np.clip(radius, median / _STAR_RADIUS_RATIO, median * _STAR_RADIUS_RATIO))
    degree = np.asarray(adj.sum(1)).ravel()
    for _ in range(_STAR_SMOOTHING):
        log_r = 0.5 * log_r + 0.5 * (adj @ log_r) / np.maximum(degree, 1)
    return centre + np.exp(log_r)[:, None] * directions


def _convex_hull(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Outward-oriented convex hull of ``points`` (N, 3), or None if it is flat."""
    points = np.unique(points, axis=0)
    if len(points) < 4:
        return None
    from scipy.spatial import ConvexHull, QhullError  # the last resorts only: kept off the start-up path

    try:
        hull = ConvexHull(points)
    except QhullError:
        return None
    faces = hull.simplices.astype(np.int64)
    tris = points[faces]
    normal = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    inward = np.einsum("fd,fd->f", normal, hull.equations[:, :3]) < 0
    faces[inward] = faces[inward][:, ::-1]
    used, faces = np.unique(faces, return_inverse=True)
    return points[used], faces.reshape(-1, 3)


def _box(points: np.ndarray, fallback_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of ``points`` (N, 3), each side at least a fraction of the largest."""
    lo, hi = points.min(0), points.max(0)
    size = hi - lo
    largest = float(size.max())
    if not largest > 0:  # a single point: a cube with the fallback diagonal
        size = np.full(3, fallback_size / np.sqrt(3.0))
    size = np.maximum(size, _BOX_MIN_THICKNESS * size.max())
    import trimesh  # the last resort only: kept off the start-up path (~0.3-0.7 s)

    box = trimesh.creation.box(extents=size)
    return box.vertices + 0.5 * (lo + hi), box.faces.astype(np.int64)


def _oriented(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, bool]:
    """Faces flipped if the signed volume is negative, and whether they were."""
    if signed_volume(verts, faces) < 0:
        return faces[:, ::-1].copy(), True
    return faces, False


def _validate_sphere(sphere_verts: np.ndarray | None, n_vertices: int) -> np.ndarray | None:
    """Unit directions of the template sphere (V, 3), or None."""
    if sphere_verts is None:
        return None
    sphere_verts = np.asarray(sphere_verts, dtype=np.float64)
    if sphere_verts.shape != (n_vertices, 3):
        raise ValueError(f"sphere_verts must have shape (V, 3) = ({n_vertices}, 3), got {sphere_verts.shape}")
    norm = np.linalg.norm(sphere_verts, axis=1, keepdims=True)
    if not (np.isfinite(sphere_verts).all() and (norm > 0).all()):
        raise ValueError("sphere_verts must be finite and non-zero")
    return sphere_verts / norm


def make_printable(
    verts: np.ndarray,
    faces: np.ndarray,
    *,
    smooth_iterations: int = 10,
    sphere_verts: np.ndarray | None = None,
    fallback_size: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, RepairLog]:
    """Make a mesh printable, whatever its vertex positions, then smooth it.

    Args:
        verts: (V, 3) float array; may hold NaN or inf.
        faces: (F, 3) int array. Meant for a closed genus-0 mesh (the deformed
            ico-sphere); other meshes are replaced by their convex hull.
        smooth_iterations: Taubin lambda/mu iterations on the result (0 to skip).
        sphere_verts: optional (V, 3) float array, the undeformed sphere with the same
            faces (e.g. the ico-sphere template). Enables the "star" repair, which keeps
            the topology where the input is too tangled to untangle locally.
        fallback_size: bounding-box diagonal of the result when every input vertex
            coincides (there is then no scale to keep).

    Returns:
        verts: (V', 3) float64 positions.
        faces: (F', 3) int64 indices. The input's faces (maybe flipped) unless the log's
            path is "hull" or "box".
        log: a :class:`RepairLog`.

    Raises:
        ValueError: on wrong shapes, dtypes or indices, no vertices, a negative
            ``smooth_iterations`` or a ``sphere_verts`` of the wrong shape.
        RuntimeError: if even the bounding box fails the check (not expected).
    """
    verts, faces = validate_mesh(verts, faces, finite=False)
    if len(verts) == 0:
        raise ValueError("verts must hold at least one vertex, got shape (0, 3)")
    if smooth_iterations < 0:
        raise ValueError(f"smooth_iterations must be >= 0, got {smooth_iterations}")
    if not (np.isfinite(fallback_size) and fallback_size > 0):
        raise ValueError(f"fallback_size must be a positive finite number, got {fallback_size}")
    directions = _validate_sphere(sphere_verts, len(verts))
    log = RepairLog()

    topology = check_topology(faces, len(verts)) if len(faces) else None
    log.input_closed_manifold = bool(topology and topology.closed_manifold)
    adj = vertex_adjacency(faces, len(verts))
    verts = _sanitise(verts, adj, log)
    if not log.input_closed_manifold:
        log.note("faces are not a closed oriented 2-manifold; using the convex hull")
        used = verts[np.unique(faces)] if len(faces) else verts
        return _finish(_fallbacks(used, fallback_size, log), smooth_iterations, log)

    for path, candidate, checked in _candidates(verts, faces, adj, directions, fallback_size, log):
        cand_faces, log.flipped = _oriented(candidate, faces)
        # ``checked``: no intersecting or degenerate faces was just established for these
        # positions; with the closed oriented topology only the volume sign is left.
        if signed_volume(candidate, cand_faces) > 0 if checked else check_printable(candidate, cand_faces).ok:
            log.path = path
            if log.flipped:
                log.note("flipped all faces: the volume was negative")
            log.note(f"valid after step '{path}'")
            return _finish((candidate, cand_faces), smooth_iterations, log)
        log.note(f"step '{path}' did not give a valid mesh")
    log.flipped = False
    return _finish(_fallbacks(verts, fallback_size, log), smooth_iterations, log)


def _candidates(verts, faces, adj, directions, fallback_size, log):
    """Yield ``(path, verts, checked)`` repairs that keep ``faces``, cheapest first.

    ``checked`` says that the positions were found free of intersecting and degenerate
    faces.
    """
    cap = max(len(faces), 16)
    mask, n_pairs, n_degenerate = _defective_faces(verts, faces, cap)
    log.input_intersecting_pairs = None if mask is None else n_pairs
    log.input_degenerate_faces = n_degenerate
    if mask is not None and not mask.any():
        yield "original", verts, True
    elif mask is not None and mask.mean() > _MAX_UNTANGLE_FRACTION:
        log.note(f"{mask.sum()} of {len(faces)} faces intersecting or degenerate: too many to untangle locally")
    elif mask is not None:
        log.note(f"{n_pairs} intersecting face pairs, {log.input_degenerate_faces} degenerate faces")
        untangled = _untangle(verts, faces, adj, mask, log)
        if untangled is not None:
            yield "untangled", untangled, False  # re-checked incrementally: the full check decides
        else:
            log.note(f"local untangling failed after {log.untangle_rounds} rounds")
    else:
        log.note(f"at least {n_pairs} intersecting face pairs: too tangled to untangle locally")
    if directions is not None:
        yield "star", _star(verts, adj, directions, fallback_size), False


def _fallbacks(points: np.ndarray, fallback_size: float, log: RepairLog) -> tuple[np.ndarray, np.ndarray]:
    """The convex hull of ``points`` if it passes the check, else their bounding box."""
    hull = _convex_hull(points)
    if hull is not None and check_printable(*hull).ok:
        log.path = "hull"
        log.note(f"replaced by the convex hull ({len(hull[1])} faces)")
        return hull
    box = _box(points, fallback_size)
    if not check_printable(*box).ok:
        raise RuntimeError("the bounding-box fallback failed the printable check")
    log.path = "box"
    log.note("replaced by the bounding box")
    return box


def _finish(mesh: tuple[np.ndarray, np.ndarray], iterations: int, log: RepairLog) -> tuple[np.ndarray, np.ndarray, RepairLog]:
    """Taubin-smooth a valid mesh, keeping the smoothed one only if it is still valid."""
    verts, faces = mesh
    if iterations > 0:
        smoothed = taubin_smooth(verts, faces, iterations)
        if check_printable(smoothed, faces).ok:
            log.smoothing_iterations = iterations
            log.note(f"Taubin smoothing, {iterations} iterations, volume kept")
            return smoothed, faces, log
        log.note("smoothing broke validity; kept the unsmoothed mesh")
    return verts, faces, log
