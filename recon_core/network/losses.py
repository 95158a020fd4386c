"""Training losses of the mesh refiner: Chamfer, normals, edge, Laplacian, silhouette and depth.

Follows Mesh R-CNN (Gkioxari et al., ICCV 2019, ``shapenet/modeling/heads/mesh_loss.py``):
every function returns the weighted total and a dict of the *unweighted* parts, so each part
can be logged, and a multi-stage refiner is trained on the mean of its stages' losses. The
silhouette and depth terms render the prediction with pytorch3d's soft rasteriser (Liu et
al., "Soft Rasterizer", ICCV 2019), or with the torch one of :mod:`recon_core.network.soft_raster`
(selected by its :class:`PinholeCameras`).

The meshes of a batch share one topology (:class:`BatchMeshes`: ``verts (B, V, 3)``, ``faces (F, 3)``).
Chamfer, normal, edge and Laplacian are computed in torch alone (:func:`sample_surface`,
:func:`chamfer_and_normal`, :func:`edge_loss`, :func:`laplacian_loss`): the same values as pytorch3d's
``sample_points_from_meshes`` (the same random draws, so the same points under one seed), ``chamfer_distance``,
``mesh_edge_loss`` and ``mesh_laplacian_smoothing(method="uniform")`` (the tests compare them), so that a
machine without pytorch3d trains with every term.

Scale: meshes and points are in the view frame (:mod:`recon_core.mesh.camera`), where an object's
bounding-box diagonal is 1 -- the ShapeNetCore normalisation that Mesh R-CNN's ShapeNet
training also used, so its weights carry over. Chamfer and edge are both squared lengths, so
their ratio does not depend on the scale; normal, silhouette and depth-relative terms are
scale free; the (uniform) Laplacian term is linear in the scale; the depth term is an L1
distance in scene units.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from recon_core.mesh.topology import BatchMeshes, neighbour_mean
from recon_core.network.soft_raster import PinholeCameras, nearest_depth, soft_silhouette

__all__ = [
    "LOSS_NAMES",
    "LossWeights",
    "SilhouetteTarget",
    "RenderSettings",
    "mesh_loss",
    "refinement_loss",
    "render_silhouette",
    "sample_surface",
    "chamfer_and_normal",
    "edge_loss",
    "laplacian_loss",
]

LOSS_NAMES = ("chamfer", "normal", "edge", "laplacian", "silhouette", "depth")
"""Names of the loss parts, in the order of :class:`LossWeights`' fields."""

_ALPHA_EPS = 1e-4
"""Probability at the edge of the blur radius: faces farther than ``sigma * ln(1/eps - 1)`` are ignored."""


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss parts; a weight of 0 drops a part from the total, not from the log.

    The defaults are Mesh R-CNN's best ShapeNet setting (chamfer 1, normal 0, edge 0.2), in a
    frame of bounding-box diagonal ~1 (see the module docstring). Mesh R-CNN's "pretty"
    setting uses normal 1.6e-4 and edge 1; Pixel2Mesh added a Laplacian term. The silhouette
    and depth terms are off by default: turn them on with a :class:`SilhouetteTarget`.
    """

    chamfer: float = 1.0
    """Chamfer-L2 between points sampled on the prediction and the GT points (squared units)."""
    normal: float = 0.0
    """``1 - |cos|`` between the normals of nearest neighbours, both directions (no units)."""
    edge: float = 0.2
    """Mean squared edge length (:func:`edge_loss`, squared units)."""
    laplacian: float = 0.0
    """Uniform Laplacian smoothing (:func:`laplacian_loss`, linear units)."""
    silhouette: float = 0.0
    """Soft IoU loss ``1 - IoU`` between the rendered soft silhouette and the mask (no units)."""
    depth: float = 0.0
    """Mean L1 between rendered and target camera-frame depth where both are foreground."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"LossWeights.{f.name} must be finite and >= 0, got {value}")


def sample_surface(meshes: BatchMeshes, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` points drawn uniformly by area on each mesh, and the unit normals of their faces.

    pytorch3d's ``sample_points_from_meshes(..., return_normals=True)`` in torch: the same random draws in the
    same order (faces by ``multinomial`` on the areas, then ``rand(2, B, count)`` barycentric coordinates), so
    under one seed the same points.

    Returns:
        ``(points, normals)``, each (B, count, 3).
    """
    verts, faces = meshes.verts, meshes.faces
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]  # each (B, F, 3)
    with torch.no_grad():
        areas = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1) / 2  # (B, F)
        chosen = areas.multinomial(count, replacement=True)  # (B, count)
    u = torch.rand(2, len(meshes), count, dtype=verts.dtype, device=verts.device)
    root = u[0].sqrt()
    w0, w1, w2 = 1.0 - root, root * (1.0 - u[1]), root * u[1]  # (B, count) each

    def pick(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, chosen[..., None].expand(-1, -1, 3))  # (B, count, 3)

    a, b, c = pick(v0), pick(v1), pick(v2)
    points = w0[..., None] * a + w1[..., None] * b + w2[..., None] * c
    normals = torch.linalg.cross(b - a, c - b, dim=-1)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(sys.float_info.epsilon)
    return points, normals


def chamfer_and_normal(x: torch.Tensor, y: torch.Tensor, x_normals: torch.Tensor, y_normals: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch3d's ``chamfer_distance(x, y, x_normals=..., y_normals=...)`` with its defaults, by ``torch.cdist``.

    Chamfer: each point's squared distance to its nearest neighbour in the other set, averaged over the points,
    the two directions summed, averaged over the batch. Normal: ``1 - |cos|`` between each point's normal and
    its nearest neighbour's, likewise.

    The nearest neighbours are found without autograd and only the N + M matched pairs' distances are taken
    again with it: the same values and gradients, to rounding, as differentiating the whole table's minima, whose
    backward goes through the whole (B, N, M) table (most of a training step's time; tested against it).

    Args:
        x: (B, N, 3), y: (B, M, 3) points; x_normals, y_normals: their (B, N, 3), (B, M, 3) unit normals.

    Returns:
        ``(chamfer, normal)``, scalars.
    """
    with torch.no_grad():
        d = torch.cdist(x, y)  # (B, N, M); the nearest by distance is the nearest by its square
        nn_y = d.argmin(dim=2)  # (B, N) each x point's nearest y
        nn_x = d.argmin(dim=1)  # (B, M)
        del d

    def partner(b: torch.Tensor, nn: torch.Tensor) -> torch.Tensor:
        return b.gather(1, nn[..., None].expand(-1, -1, 3))

    to_y = (x - partner(y, nn_y)).square().sum(dim=2)  # (B, N)
    to_x = (y - partner(x, nn_x)).square().sum(dim=2)  # (B, M)
    chamfer = to_y.mean(dim=1) + to_x.mean(dim=1)

    def cosine(a: torch.Tensor, b: torch.Tensor, nn: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(a, partner(b, nn), dim=2, eps=1e-6).abs()

    normal = cosine(x_normals, y_normals, nn_y).mean(dim=1) + cosine(y_normals, x_normals, nn_x).mean(dim=1)
    return chamfer.mean(), normal.mean()


def edge_loss(meshes: BatchMeshes) -> torch.Tensor:
    """Mean squared edge length of each mesh, averaged over the batch (pytorch3d ``mesh_edge_loss``)."""
    e = meshes.edges
    return (meshes.verts[:, e[:, 0]] - meshes.verts[:, e[:, 1]]).square().sum(dim=-1).mean()


def laplacian_loss(meshes: BatchMeshes) -> torch.Tensor:
    """Mean over the vertices of ``|mean of the neighbours - vertex|``, averaged over the batch (pytorch3d
    ``mesh_laplacian_smoothing(method="uniform")``; a vertex in no edge counts ``|vertex|`` there and here)."""
    verts = meshes.verts
    return (neighbour_mean(verts, meshes.edges) - verts).norm(dim=-1).mean()


@dataclass(frozen=True)
class RenderSettings:
    """How the predicted silhouette and depth are rasterised (pytorch3d soft rasteriser).

    The defaults suit 64 px renders of ~2.5k-vertex meshes filling most of the image: with
    ``sigma = 1e-4`` the soft edge is about a third of a pixel wide, and 8 faces per pixel
    leave no holes inside the silhouette. At larger sizes scale ``sigma`` by ``(64 / size)^2``
    to keep the edge width in pixels.
    """

    image_size: int = 64
    """Rendered size in pixels along the mask's longer side (the other side keeps the aspect)."""
    sigma: float = 1e-4
    """Sharpness of the soft silhouette, in squared NDC units (pytorch3d ``BlendParams.sigma``)."""
    faces_per_pixel: int = 8
    """Faces kept per pixel, nearest first."""

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.faces_per_pixel < 1 or not self.sigma > 0:
            raise ValueError(f"RenderSettings needs image_size >= 1, faces_per_pixel >= 1, sigma > 0, got {self}")


@dataclass(frozen=True)
class SilhouetteTarget:
    """Image-space targets for the silhouette and depth terms.

    The cameras see view-frame points: build them with
    ``recon_core.mesh.camera.to_pytorch3d([Camera(R=I, T=(0, 0, d), K, W, H), ...])``. Their
    ``image_size`` must be the masks' ``(H, W)``, the size their intrinsics ``K`` are in
    pixels of; the render itself may be smaller (:class:`RenderSettings`): the targets are
    resized to it, which is exact because pytorch3d rasterises in NDC, the same for any
    resolution of one aspect ratio.
    """

    masks: torch.Tensor
    """(B, H, W) float in [0, 1]: 1 where the object covers the pixel."""
    cameras: object
    """pytorch3d ``PerspectiveCameras`` batch of size B, in screen space for an (H, W) image, or
    :class:`~recon_core.network.soft_raster.PinholeCameras` (the torch rasteriser)."""
    depths: torch.Tensor | None = None
    """(B, H, W) float camera-frame z (OpenCV, distance along the optical axis; for view-frame
    points ``z_view + d``); 0 or ``inf`` on the background. None disables the depth term."""


def _validate_inputs(pred_meshes, gt_points: torch.Tensor, gt_normals: torch.Tensor, num_samples: int) -> None:
    if not isinstance(pred_meshes, BatchMeshes):
        raise ValueError(f"pred_meshes must be a BatchMeshes, got {type(pred_meshes).__name__}")
    batch = len(pred_meshes)
    if batch == 0 or pred_meshes.faces.shape[0] == 0:
        raise ValueError("pred_meshes must hold at least one mesh, each with at least one face")
    for name, t in (("gt_points", gt_points), ("gt_normals", gt_normals)):
        if not torch.is_tensor(t) or t.dim() != 3 or t.shape[0] != batch or t.shape[2] != 3 or t.shape[1] == 0:
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must be a (B, N, 3) tensor with B = {batch} meshes and N > 0, got {shape}")
    if gt_normals.shape != gt_points.shape:
        raise ValueError(
            f"gt_normals must have the shape of gt_points {tuple(gt_points.shape)}, got {tuple(gt_normals.shape)}"
        )
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")


def _validate_target(target: SilhouetteTarget, batch: int) -> None:
    masks = target.masks
    if not torch.is_tensor(masks) or masks.dim() != 3 or masks.shape[0] != batch:
        shape = tuple(masks.shape) if torch.is_tensor(masks) else type(masks).__name__
        raise ValueError(f"SilhouetteTarget.masks must be a (B, H, W) tensor with B = {batch}, got {shape}")
    if target.depths is not None and (not torch.is_tensor(target.depths) or target.depths.shape != masks.shape):
        shape = tuple(target.depths.shape) if torch.is_tensor(target.depths) else type(target.depths).__name__
        raise ValueError(f"SilhouetteTarget.depths must have the masks' shape {tuple(masks.shape)}, got {shape}")
    cameras = target.cameras
    if len(cameras) != batch:
        raise ValueError(f"SilhouetteTarget.cameras must hold B = {batch} cameras, got {len(cameras)}")
    if getattr(cameras, "image_size", None) is not None:
        size = torch.as_tensor(cameras.image_size, dtype=torch.float32).reshape(-1, 2)
        expected = torch.tensor([masks.shape[1], masks.shape[2]], dtype=torch.float32)
        if not torch.equal(size.cpu(), expected.expand_as(size)):
            raise ValueError(
                f"SilhouetteTarget.cameras must be built for the masks' (H, W) = {tuple(masks.shape[1:])}, "
                f"got image_size {size[0].tolist()}"
            )


def _render_size(height: int, width: int, render: RenderSettings) -> tuple[int, int]:
    scale = render.image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def render_silhouette(pred_meshes, cameras, image_size: tuple[int, int], render: RenderSettings = RenderSettings(),
                      depth: bool = True):
    """Differentiable soft silhouette and depth of a batch of meshes.

    pytorch3d's rasteriser renders for pytorch3d cameras; :class:`~recon_core.network.soft_raster.PinholeCameras`
    select the torch-only one (:func:`~recon_core.network.soft_raster.soft_silhouette`: the same alpha over all
    faces rather than the ``faces_per_pixel`` nearest; :func:`~recon_core.network.soft_raster.nearest_depth`).

    Args:
        pred_meshes: B meshes (:class:`BatchMeshes`), in the cameras' world frame.
        cameras: pytorch3d cameras batch of size B, or :class:`~recon_core.network.soft_raster.PinholeCameras`.
        image_size: ``(h, w)`` raster size in pixels, with the aspect ratio of the cameras' image.
        render: soft rasteriser settings (``image_size`` is ignored here).
        depth: False: the torch rasteriser skips the depth (``depth`` and ``covered`` None); pytorch3d's has it anyway.

    Returns:
        ``(alpha, depth, covered)``: (B, h, w) float soft silhouette in [0, 1]; (B, h, w) float
        camera-frame z of the nearest face whose interior holds the pixel centre; (B, h, w)
        bool, where such a face exists (``depth`` is meaningless elsewhere).
    """
    if isinstance(cameras, PinholeCameras):
        alpha = soft_silhouette(pred_meshes.verts, pred_meshes.faces, cameras, image_size, sigma=render.sigma,
                                eps=_ALPHA_EPS)
        if not depth:
            return alpha, None, None
        return (alpha, *nearest_depth(pred_meshes.verts, pred_meshes.faces, cameras, image_size))
    from pytorch3d.renderer import BlendParams, MeshRasterizer, RasterizationSettings, SoftSilhouetteShader

    settings = RasterizationSettings(
        image_size=image_size,
        blur_radius=math.log(1.0 / _ALPHA_EPS - 1.0) * render.sigma,
        faces_per_pixel=render.faces_per_pixel,
        bin_size=0 if not pred_meshes.verts.device.type == "cuda" else None,  # no coarse-to-fine on the CPU
    )
    meshes = pred_meshes.to_pytorch3d()
    fragments = MeshRasterizer(cameras=cameras, raster_settings=settings)(meshes)
    alpha = SoftSilhouetteShader(BlendParams(sigma=render.sigma))(fragments, meshes)[..., 3]  # (B, h, w)

    # Faces are sorted by z; with a blur radius the nearest ones may only pass near the pixel.
    inside = (fragments.dists < 0) & (fragments.pix_to_face >= 0)  # (B, h, w, K)
    covered = inside.any(dim=-1)
    first = inside.float().argmax(dim=-1, keepdim=True)  # nearest covering face
    depth = fragments.zbuf.gather(-1, first)[..., 0]
    return alpha, depth, covered


def _silhouette_and_depth(pred_meshes, target: SilhouetteTarget, render: RenderSettings):
    height, width = target.masks.shape[1:]
    size = _render_size(height, width, render)
    alpha, depth, covered = render_silhouette(pred_meshes, target.cameras, size, render,
                                              depth=target.depths is not None)

    mask = target.masks.to(alpha)[:, None]
    if size != (height, width):
        mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True)
    mask = mask[:, 0].clamp(0.0, 1.0)  # (B, h, w)
    intersection = (alpha * mask).sum(dim=(1, 2))
    union = (alpha + mask - alpha * mask).sum(dim=(1, 2))
    silhouette = (1.0 - intersection / union.clamp_min(1e-6)).mean()

    if target.depths is None:
        return silhouette, None
    gt_depth = target.depths.to(alpha)[:, None]
    if size != (height, width):
        gt_depth = F.interpolate(gt_depth, size=size, mode="nearest")
    gt_depth = gt_depth[:, 0]
    valid = covered & torch.isfinite(gt_depth) & (gt_depth > 0)
    gt_depth = torch.where(valid, gt_depth, torch.zeros_like(gt_depth))
    error = (depth - gt_depth).abs() * valid
    depth_loss = error.sum() / valid.sum().clamp_min(1)  # 0 with a graph when nothing overlaps
    return silhouette, depth_loss


def mesh_loss(
    pred_meshes,
    gt_points: torch.Tensor,
    gt_normals: torch.Tensor,
    weights: LossWeights = LossWeights(),
    num_samples: int = 5000,
    silhouette: SilhouetteTarget | None = None,
    render: RenderSettings = RenderSettings(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted mesh loss of one batch of predicted meshes, and its unweighted parts.

    Parts (each a scalar averaged over the batch):

    * ``chamfer``: :func:`chamfer_and_normal` between ``num_samples`` points sampled on each
      prediction (:func:`sample_surface`) and the GT points: sum of both directions' mean squared NN distances.
    * ``normal``: the normal term of the same call, ``1 - |cos|`` of nearest neighbours' normals.
    * ``edge``: :func:`edge_loss`, the mean squared edge length.
    * ``laplacian``: :func:`laplacian_loss`, uniform weights.
    * ``silhouette`` (only with ``silhouette``): soft IoU loss ``1 - sum(a m) / sum(a + m - a m)``
      per image, averaged, between the soft silhouette ``a`` rendered at ``render.image_size``
      and the target mask ``m`` resized to it. Chosen over BCE because it is bounded, does not
      depend on how much of the image the object fills, and is smooth where ``a`` is 0 or 1.
    * ``depth`` (only with ``silhouette.depths``): mean L1 between the rendered camera-frame z
      and the target depth, over pixels that are foreground in both.

    Args:
        pred_meshes: B predicted meshes (:class:`BatchMeshes`), view frame.
        gt_points: (B, N, 3) float points sampled on the GT surfaces, view frame.
        gt_normals: (B, N, 3) float unit normals at ``gt_points``.
        weights: part weights; a zero weight keeps the part in the dict, out of the total.
        num_samples: points sampled on each predicted mesh.
        silhouette: image-space targets; None skips the silhouette and depth parts.
        render: soft rasteriser settings.

    Returns:
        ``(total, parts)``: scalar weighted sum, and name -> unweighted scalar tensor.

    Raises:
        ValueError: on malformed inputs, or a positive silhouette / depth weight without its target.
    """
    _validate_inputs(pred_meshes, gt_points, gt_normals, num_samples)
    if silhouette is None and (weights.silhouette > 0 or weights.depth > 0):
        raise ValueError("weights.silhouette and weights.depth > 0 need a SilhouetteTarget")
    if silhouette is not None:
        _validate_target(silhouette, len(pred_meshes))
        if silhouette.depths is None and weights.depth > 0:
            raise ValueError("weights.depth > 0 needs SilhouetteTarget.depths")

    points, normals = sample_surface(pred_meshes, num_samples)  # (B, S, 3)
    chamfer, normal = chamfer_and_normal(points, gt_points.to(points), normals, gt_normals.to(points))
    parts = {
        "chamfer": chamfer,
        "normal": normal,
        "edge": edge_loss(pred_meshes),
        "laplacian": laplacian_loss(pred_meshes),
    }
    if silhouette is not None:
        parts["silhouette"], depth = _silhouette_and_depth(pred_meshes, silhouette, render)
        if depth is not None:
            parts["depth"] = depth

    total = sum(getattr(weights, name) * value for name, value in parts.items())
    return total, parts


def refinement_loss(
    stage_meshes: Sequence,
    gt_points: torch.Tensor,
    gt_normals: torch.Tensor,
    weights: LossWeights = LossWeights(),
    num_samples: int = 5000,
    silhouette: SilhouetteTarget | None = None,
    render: RenderSettings = RenderSettings(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`mesh_loss` averaged over the stages of a refiner, as in Mesh R-CNN.

    Args:
        stage_meshes: one :class:`BatchMeshes` of B meshes per refinement stage, first to last.
        gt_points, gt_normals, weights, num_samples, silhouette, render: as :func:`mesh_loss`.

    Returns:
        ``(total, parts)``: ``total`` is the mean of the stages' weighted totals; ``parts`` holds
        each part averaged over the stages under its name (``"chamfer"``, ...), so that
        ``total == sum(w[name] * parts[name])``, and each stage's own value as ``"chamfer_0"``,
        ``"chamfer_1"``, ....

    Raises:
        ValueError: on an empty ``stage_meshes`` or as :func:`mesh_loss`.
    """
    if len(stage_meshes) == 0:
        raise ValueError("stage_meshes must hold at least one stage")
    totals, parts = [], {}
    for i, meshes in enumerate(stage_meshes):
        stage_total, stage_parts = mesh_loss(meshes, gt_points, gt_normals, weights, num_samples, silhouette, render)
        totals.append(stage_total)
        for name, value in stage_parts.items():
            parts[f"{name}_{i}"] = value
    n = len(stage_meshes)
    averaged = {name: sum(parts[f"{name}_{i}"] for i in range(n)) / n for name in stage_parts}
    return sum(totals) / n, {**averaged, **parts}
