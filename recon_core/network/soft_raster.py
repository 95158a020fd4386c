"""A soft silhouette and depth rasteriser in torch alone, for machines without pytorch3d.

The silhouette and depth losses (:mod:`recon_core.network.losses`) render the predicted meshes with pytorch3d's soft
rasteriser (Liu et al., "Soft Rasterizer", ICCV 2019: ``MeshRasterizer`` + ``SoftSilhouetteShader``). A training
machine that has torch but not pytorch3d (a lent GPU machine: the pytorch3d wheel is too large to travel there)
uses this one instead, selected by the cameras it is given (:class:`PinholeCameras`).

What it computes, for every pixel centre ``p`` of an ``(h, w)`` raster and every face ``f`` (both orientations,
no culling, as pytorch3d with ``cull_backfaces=False``):

* ``d_f(p)``: the squared distance from ``p`` to the face's projected triangle in NDC units (pytorch3d's
  ``dists``: 2 units across the raster's shorter side), negative when ``p`` is inside the triangle;
* ``alpha(p) = 1 - prod_f (1 - sigmoid(-d_f / sigma))`` over the faces with ``d_f < blur``, ``blur = sigma *
  log(1 / eps - 1)``, pytorch3d's ``sigmoid_alpha_blend`` with the blur radius that the loss gives its rasteriser.

pytorch3d keeps only the ``faces_per_pixel`` faces nearest the camera among those within the blur radius; this
keeps them all, so where more faces lie near one pixel its alpha is a little larger (tests bound the difference).
The product is summed in log space, ``log(1 - alpha) = sum_f logsigmoid(d_f / sigma)``, each face over the few
pixels its blur radius reaches (a window from its projected box) and scattered onto the raster, so the work is
``B * F * window^2`` rather than every face at every pixel (``B * F * h * w``, 1.1 s a step of 64 pictures at
64 px on one H200 as first written; tests compare the two).

The depth (:func:`nearest_depth`) is the nearest covering face's, as pytorch3d's ``zbuf``, on the same windows.

Projection: OpenCV pinhole cameras, ``p_cam = p_view + T``, pixels ``K @ p_cam / z`` with the centre of pixel
``(i, j)`` at ``(j + 0.5, i + 0.5)`` (:mod:`recon_core.mesh.camera`), scaled from the cameras' ``(H, W)`` image to
the ``(h, w)`` raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["PinholeCameras", "WINDOW_SIDES", "soft_silhouette", "nearest_depth"]


@dataclass(frozen=True)
class PinholeCameras:
    """B OpenCV pinhole cameras that see view-frame points (``R = I``), in pixels of an ``(H, W)`` image.

    Attributes:
        K: (B, 3, 3) float intrinsics in pixels of the ``(H, W)`` image.
        T: (B, 3) float translations, ``p_cam = p_view + T`` (the renderer's look-at cameras: ``(0, 0, d)``).
        image_size: ``(H, W)``, the image ``K`` is in pixels of.
    """

    K: torch.Tensor
    T: torch.Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        K, T = self.K, self.T
        if not (torch.is_tensor(K) and K.dim() == 3 and K.shape[1:] == (3, 3)):
            raise ValueError(f"PinholeCameras.K must be a (B, 3, 3) tensor, got {getattr(K, 'shape', type(K))}")
        if not (torch.is_tensor(T) and T.shape == (K.shape[0], 3)):
            raise ValueError(f"PinholeCameras.T must be a (B, 3) tensor with B = {K.shape[0]}, "
                             f"got {getattr(T, 'shape', type(T))}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"PinholeCameras.image_size must be (H, W) >= 1, got {self.image_size}")

    def __len__(self) -> int:
        return self.K.shape[0]

    def __getitem__(self, index: int) -> "PinholeCameras":
        """Camera ``index`` alone, as a batch of one."""
        return PinholeCameras(self.K[index:index + 1], self.T[index:index + 1], self.image_size)

    def project(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) view-frame points -> (B, V, 2) pixel coordinates ``(u, v)`` of the ``(H, W)`` image."""
        cam = verts + self.T.to(verts)[:, None, :]
        uvw = cam @ self.K.to(verts).transpose(1, 2)
        return uvw[..., :2] / uvw[..., 2:3].clamp_min(1e-8)


def _signed_distance(tri: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Signed squared distance from points to triangles, negative inside (either orientation).

    Args:
        tri: (..., 3, 2) triangles.
        p: (..., 2) points, broadcast against ``tri[..., 0, :]``.

    Returns:
        (...) float: ``-d^2`` inside the triangle, ``d^2`` outside, ``d`` the distance to its nearest edge.
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]

    def edge(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = v - u
        rel = p - u
        t = ((rel * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
        d2 = (rel - t[..., None] * e).square().sum(-1)
        cross = e[..., 0] * rel[..., 1] - e[..., 1] * rel[..., 0]  # which side of the edge
        return d2, cross

    d_ab, s_ab = edge(a, b)
    d_bc, s_bc = edge(b, c)
    d_ca, s_ca = edge(c, a)
    d2 = torch.minimum(torch.minimum(d_ab, d_bc), d_ca)
    inside = ((s_ab > 0) & (s_bc > 0) & (s_ca > 0)) | ((s_ab < 0) & (s_bc < 0) & (s_ca < 0))
    return torch.where(inside, -d2, d2)


def _window_log_transparency(tri: torch.Tensor, px: torch.Tensor, on: torch.Tensor, unit: float, sigma: float,
                             blur: float) -> torch.Tensor:
    """Each face's ``logsigmoid(d / sigma)`` over its window's pixels (0 off the raster or beyond the blur radius).

    Args:
        tri: (B, F, 3, 2) projected triangles in raster pixels.
        px, on: (B, F, W^2, 2) the windows' pixels ``(j, i)`` and (B, F, W^2) whether each is on the raster
            (:func:`_windows`).

    Returns:
        (B, F, W^2) float contributions to ``log(1 - alpha)``.
    """
    centre = (px.to(tri.dtype) + 0.5) * unit
    signed = _signed_distance(tri[:, :, None] * unit, centre)         # (B, F, W^2), NDC units squared
    keep = on & (signed < blur)
    return torch.where(keep, F.logsigmoid(signed / sigma), torch.zeros_like(signed))


WINDOW_SIDES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
"""The window sides (pixels) faces are grouped by: each face is evaluated on the smallest of these (at most the
rasteriser's ``max_window``) that holds its reach, so a few large faces do not widen every face's window (on a
network's real meshes at 64 px, ~75 % of the faces need 4 pixels and the largest ~10)."""


def _projected(verts: torch.Tensor, faces: torch.Tensor, cameras: PinholeCameras, size: tuple[int, int]
               ) -> torch.Tensor:
    """(B, F, 3, 2) the faces' projected triangles in pixels of the ``(h, w)`` raster."""
    if verts.dim() != 3 or verts.shape[-1] != 3 or len(cameras) != verts.shape[0]:
        raise ValueError(f"the soft rasteriser needs (B, V, 3) vertices and B cameras, got {tuple(verts.shape)} "
                         f"and {len(cameras)} cameras")
    h, w = size
    height, width = cameras.image_size
    uv = cameras.project(verts) * torch.tensor([w / width, h / height], dtype=verts.dtype, device=verts.device)
    return uv[:, faces]


def _face_groups(tri: torch.Tensor, reach: float, max_window: int
                 ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """``(lo, [(window, faces), ...])``: (B, F, 2) each face's first pixel within ``reach`` of its box, and the faces
    (long indices) whose pixels within ``reach`` of their boxes, in every picture of the batch, fit a square window
    of that side (the smallest of :data:`WINDOW_SIDES`, at most ``max_window``: a face wider than that loses the
    pixels beyond it)."""
    with torch.no_grad():
        lo = torch.ceil(tri.amin(dim=2) - reach - 0.5)
        hi = torch.floor(tri.amax(dim=2) + reach - 0.5)
        need = ((hi - lo).amax(dim=-1) + 1).amax(dim=0).clamp(1, max_window)  # (F,)
    sides = [side for side in WINDOW_SIDES if side < max_window] + [max_window]
    groups, below = [], 0
    for side in sides:
        faces = torch.nonzero((need > below) & (need <= side)).flatten()
        if len(faces):
            groups.append((int(min(side, float(need[faces].max()))), faces))
        below = side
    return lo, groups


def _windows(lo: torch.Tensor, size: tuple[int, int], window: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The square window of side ``window`` of each face, from its first pixel ``lo`` ((B, F, 2), :func:`_face_groups`).

    Returns:
        ``(px, on, index)``: (B, F, W^2, 2) long pixels ``(j, i)`` of each face's window; (B, F, W^2) bool, whether
        each lies on the raster; (B, F, W^2) long flat pixel index ``i * w + j`` (clamped onto the raster).
    """
    h, w = size
    lo = lo.clamp(-window, max(h, w)).long()
    step = torch.arange(window, device=lo.device)
    offset = torch.stack(torch.meshgrid(step, step, indexing="xy"), dim=-1).reshape(-1, 2)  # (W^2, 2): (dj, di)
    px = lo[:, :, None, :] + offset
    on = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    index = px[..., 1].clamp(0, h - 1) * w + px[..., 0].clamp(0, w - 1)
    return px, on, index


def soft_silhouette(verts: torch.Tensor, faces: torch.Tensor, cameras: PinholeCameras, size: tuple[int, int],
                    sigma: float = 1e-4, eps: float = 1e-4, max_window: int = 16) -> torch.Tensor:
    """Differentiable soft silhouettes of B meshes of one topology.

    A face changes only the pixels whose centres lie within the blur radius of it: those of its projected box
    grown by that radius. Every face is evaluated on a square window of pixels from its box's corner, wide enough
    for its grown box in every picture of the batch (faces grouped by :data:`WINDOW_SIDES`, so each face sees all
    of its pixels), at most ``max_window``: a face whose grown box is wider than that (far larger than the mesh's
    others) loses the pixels beyond it.

    Args:
        verts: (B, V, 3) float view-frame vertices.
        faces: (F, 3) long faces shared by the B meshes.
        cameras: B cameras (:class:`PinholeCameras`).
        size: ``(h, w)`` raster in pixels, with the aspect ratio of the cameras' image.
        sigma: sharpness in squared NDC units (pytorch3d ``BlendParams.sigma``).
        eps: alpha below which a face is left out (the blur radius ``sigma * log(1 / eps - 1)``).
        max_window: the widest window in pixels (memory ``~B * F * window^2`` floats a table).

    Returns:
        (B, h, w) float soft silhouette in [0, 1].
    """
    h, w = size
    unit = 2.0 / min(h, w)                     # NDC units per raster pixel
    blur = sigma * math.log(1.0 / eps - 1.0)
    reach = math.sqrt(blur) / unit
    tri = _projected(verts, faces, cameras, size)
    b = verts.shape[0]
    log_t = verts.new_zeros(b, h * w)
    lo, groups = _face_groups(tri, reach, max_window)
    for window, group in groups:
        part = tri[:, group]
        px, on, index = _windows(lo[:, group], size, window)
        values = _window_log_transparency(part, px, on, unit, sigma, blur)
        log_t = log_t.scatter_add(1, index.reshape(b, -1), values.reshape(b, -1))
    return (1.0 - log_t.exp()).reshape(b, h, w)


def nearest_depth(verts: torch.Tensor, faces: torch.Tensor, cameras: PinholeCameras, size: tuple[int, int],
                  max_window: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame depth of the nearest face whose interior holds each pixel centre (pytorch3d's ``zbuf[..., 0]``
    of the nearest covering face), differentiable in the vertices.

    Each face's depth at a pixel is interpolated perspective-correctly, ``z = 1 / sum_k(b_k / z_k)`` with ``b`` the
    pixel centre's barycentric coordinates in the raster; the nearest is kept by a scatter minimum (its gradient
    goes to that face's vertices). Windows as :func:`soft_silhouette`'s with no blur.

    Returns:
        ``(depth, covered)``: (B, h, w) float depth (0 where no face covers the pixel) and (B, h, w) bool.
    """
    h, w = size
    tri = _projected(verts, faces, cameras, size)
    z_all = (verts[..., 2] + cameras.T.to(verts)[:, 2:3])[:, faces]             # (B, F, 3) camera-frame z
    n = verts.shape[0]
    nearest = torch.full((n, h * w), float("inf"), dtype=verts.dtype, device=verts.device)

    def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    lo, groups = _face_groups(tri, 0.0, max_window)
    for window, group in groups:
        part, z = tri[:, group], z_all[:, group]
        px, on, index = _windows(lo[:, group], size, window)
        p = px.to(verts.dtype) + 0.5
        a, b, c = (part[:, :, k, None, :] for k in range(3))                   # (B, F', 1, 2)
        area = cross(b - a, c - a)                                            # (B, F', 1), signed
        safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
        bary = torch.stack([cross(b - p, c - p), cross(c - p, a - p), cross(a - p, b - p)], dim=-1) / safe[..., None]
        inside = on & (area.abs() > 1e-12) & (bary > 0).all(dim=-1)
        depth = 1.0 / (bary / z[:, :, None, :]).sum(dim=-1).clamp_min(1e-12)  # (B, F', W^2)
        depth = torch.where(inside, depth, torch.full_like(depth, float("inf")))
        nearest = nearest.scatter_reduce(1, index.reshape(n, -1), depth.reshape(n, -1), reduce="amin",
                                         include_self=True)
    covered = torch.isfinite(nearest)
    nearest = torch.where(covered, nearest, torch.zeros_like(nearest))
    return nearest.reshape(n, h, w), covered.reshape(n, h, w)
