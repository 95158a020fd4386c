"""Pictures of meshes without a GPU: a z-buffer rasteriser and a shaded view (numpy only).

:func:`rasterize` finds the nearest face under each pixel centre; the evaluation's silhouettes (``training.scoring``),
its contact sheets (``training.sheets``) and ``recon-mesh --preview`` (:mod:`recon_core.io.preview`) draw with it.
"""

from __future__ import annotations

import numpy as np

from recon_core.mesh.camera import rotation_x, rotation_y

__all__ = ["THREE_QUARTER_VIEW", "rasterize", "face_shade", "render_mesh"]

THREE_QUARTER_VIEW = rotation_x(25.0) @ rotation_y(-35.0)
"""Rotation applied to output-frame meshes for a 3/4 view from the front right, above (:func:`render_mesh`)."""

_LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])


def _cross2(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z component of the cross product of (..., 2) vectors."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Z-buffer: index of the nearest face covering each pixel centre, -1 for none.

    Args:
        xy: (V, 2) pixel coordinates (u right, v down; pixel (i, j) has centre (j + 0.5, i + 0.5)).
        depth: (V,) smaller is nearer.
        faces: (F, 3) int.
        size: image side, or ``(height, width)``.

    Returns:
        (height, width) int64.
    """
    height, width = (size, size) if np.isscalar(size) else size
    bounds = np.array([width, height])  # (2,) as (u, v)
    tri = xy[faces]  # (F, 3, 2)
    z = depth[faces]  # (F, 3)
    lo = np.clip(np.ceil(tri.min(axis=1) - 0.5), 0, bounds).astype(np.int64)  # (F, 2) first pixel index
    hi = np.clip(np.floor(tri.max(axis=1) - 0.5), -1, bounds - 1).astype(np.int64)  # last pixel index
    (a, b, c) = (tri[:, 0], tri[:, 1], tri[:, 2])
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ext = (hi - lo + 1).max(axis=1)
    keep = np.flatnonzero((hi >= lo).all(axis=1) & (np.abs(area) > 1e-12))
    pix_all, z_all, f_all = [], [], []
    k_max = int(ext[keep].max()) if len(keep) else 0
    k = 1
    while k // 2 < k_max:  # faces grouped by the power of two that bounds their pixel box
        sel = keep[(ext[keep] <= k) & (ext[keep] > k // 2)]
        oy, ox = np.mgrid[0:k, 0:k]
        offs = np.stack([ox.ravel(), oy.ravel()], axis=1)  # (k², 2) as (du, dv)
        chunk = max(1, 2_000_000 // (k * k))
        for start in range(0, len(sel), chunk):
            f = sel[start : start + chunk]
            px = lo[f][:, None, :] + offs[None]  # (n, k², 2)
            valid = (px <= hi[f][:, None, :]).all(axis=2)
            p = px + 0.5
            pa, pb, pc = a[f][:, None], b[f][:, None], c[f][:, None]
            w0 = _cross2(pb - p, pc - p) / area[f][:, None]  # barycentric weight of a
            w1 = _cross2(pc - p, pa - p) / area[f][:, None]  # of b
            w2 = 1.0 - w0 - w1
            inside = valid & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            zz = w0 * z[f][:, 0:1] + w1 * z[f][:, 1:2] + w2 * z[f][:, 2:3]
            n_idx, o_idx = np.nonzero(inside)
            pix_all.append(px[n_idx, o_idx, 1] * width + px[n_idx, o_idx, 0])
            z_all.append(zz[n_idx, o_idx])
            f_all.append(f[n_idx])
        k *= 2
    image = np.full(height * width, -1, dtype=np.int64)
    if pix_all:
        pix, zs, fs = np.concatenate(pix_all), np.concatenate(z_all), np.concatenate(f_all)
        order = np.lexsort((zs, pix))
        pix, fs = pix[order], fs[order]
        first = np.ones(len(pix), dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        image[pix[first]] = fs[first]
    return image.reshape(height, width)


def face_shade(tri: np.ndarray) -> np.ndarray:
    """(F,) brightness in [0.25, 1] of (F, 3, 3) triangles in a viewer's frame (x right, y up, the viewer on +z):
    Lambert shading, two-sided (ground truths have mixed winding), lit from the upper right, in front."""
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return 0.25 + 0.75 * np.abs(normals @ _LIGHT)


def render_mesh(
    verts: np.ndarray,
    faces: np.ndarray,
    size: int = 128,
    centre: np.ndarray | None = None,
    radius: float | None = None,
    colour: tuple[int, int, int] = (160, 160, 160),
    rotation: np.ndarray = THREE_QUARTER_VIEW,
    face_colours: np.ndarray | None = None,
) -> np.ndarray:
    """Shaded orthographic picture of an output-frame mesh, seen through ``rotation`` (white background).

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        size: image side in pixels.
        centre, radius: the sphere mapped onto the image (default: the mesh's bounding box centre
            and half-diagonal), so that several meshes can share one framing.
        colour: base RGB, shaded by :func:`face_shade`.
        face_colours: (F, 3) base RGB of each face instead (e.g. thin walls marked), or None.

    Returns:
        (size, size, 3) uint8.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if centre is None:
        centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    if radius is None:
        radius = float(np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))) / 2
    p = (verts - centre) @ rotation.T * (0.95 / max(radius, 1e-9))
    xy = np.stack([(p[:, 0] + 1) / 2 * size, (1 - p[:, 1]) / 2 * size], axis=1)
    face_id = rasterize(xy, -p[:, 2], faces, size)
    shade = face_shade(p[faces])
    base = (np.broadcast_to(np.asarray(colour, dtype=np.float64), (len(faces), 3)) if face_colours is None
            else np.asarray(face_colours, dtype=np.float64))
    out = np.full((size, size, 3), 255.0)
    hit = face_id >= 0
    out[hit] = shade[face_id[hit]][:, None] * base[face_id[hit]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
