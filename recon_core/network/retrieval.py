"""The picture embedding and the shape bank: the network's reconstruction snapped to the nearest training shape.

A picture is embedded by :func:`embed_image` (the object crop reduced to a 32x32 silhouette
and a 32x32 darkness map). The :class:`ShapeBank` holds, for every photo-like training view,
that embedding projected to principal components, the view's world-to-camera rotation and
its model's surface points and packed solid (``training/build_shape_bank.py``); see the
class docstring for how a view is chosen.

The bank is a set of persistent buffers of the network, so it travels in the model's one
safetensors file and is checked by the same loader.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recon_core.network.crop import object_mask, prepare_image

__all__ = ["EMBED_SIZE", "EMBED_DIM", "EMBED_VERSION", "embed_image", "ShapeBank"]

EMBED_SIZE = 32
"""Side of the retrieval embedding's two maps (silhouette and darkness), in cells."""
EMBED_DIM = 2 * EMBED_SIZE * EMBED_SIZE
"""Length of :func:`embed_image`'s vector."""
_EMBED_SUPERSAMPLE = 4
"""The crop is taken at ``EMBED_SIZE * _EMBED_SUPERSAMPLE`` pixels and box-filtered down (no aliasing)."""
EMBED_VERSION = 1
"""Bumped whenever :func:`embed_image` changes for pictures with alpha (the shape bank's and the cached indexes'
views all have one), so cached indexes are rebuilt."""


def embed_image(rgb: np.ndarray, alpha: np.ndarray | None, size: int = EMBED_SIZE) -> np.ndarray:
    """Retrieval embedding of one image: (2 * size², ) float32, unit L2 norm.

    The image is cropped to its object exactly as for the network
    (:func:`recon_core.network.crop.prepare_image`), then reduced by box filtering to two
    ``size``² maps: the silhouette (alpha; without alpha, the pixels the border-colour rule takes,
    :func:`recon_core.network.crop.object_mask`, the background then white as behind an alpha, as the bank's
    views are) and the darkness ``1 - grey`` inside it (0 on the background), concatenated and L2-normalised.

    Args:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8 object mask, or None.
    """
    k = _EMBED_SUPERSAMPLE
    if alpha is None:  # the object as the crop takes it (its box is the same), not every non-white pixel
        alpha = np.round(object_mask(rgb, None) * 255.0).astype(np.uint8)
    prepared = prepare_image(rgb, alpha, size * k)
    grey = prepared.image.numpy().mean(axis=0)  # (S, S)
    mask = prepared.mask.numpy()

    def pool(a: np.ndarray) -> np.ndarray:
        return a.reshape(size, k, size, k).mean(axis=(1, 3)).ravel()

    feat = np.concatenate([pool(mask), pool((1.0 - grey) * mask)]).astype(np.float32)
    return feat / max(float(np.linalg.norm(feat)), 1e-8)


def _project(embeddings: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, EMBED_DIM) :func:`embed_image` vectors -> (B, D) components along ``basis`` (EMBED_DIM, D) about ``mean``."""
    if embeddings.dim() != 2 or embeddings.shape[1] != EMBED_DIM:
        raise ValueError(f"embeddings must be (B, {EMBED_DIM}), got {tuple(embeddings.shape)}")
    return (embeddings.float().to(mean.device) - mean.float()) @ basis.float()


def _register_view_index(module: nn.Module, num_views: int, dim: int, model_buffer: str) -> None:
    """The buffers a bank indexes its training views with: ``embed_mean`` (EMBED_DIM,),
    ``embed_basis`` (EMBED_DIM, D), ``view_features`` (N, D), ``model_buffer`` (N,) long index of each
    view's model, ``view_rotation`` (N, 3, 3)."""
    module.register_buffer("embed_mean", torch.zeros(EMBED_DIM))
    module.register_buffer("embed_basis", torch.zeros(EMBED_DIM, dim))
    module.register_buffer("view_features", torch.zeros(num_views, dim))
    module.register_buffer(model_buffer, torch.zeros(num_views, dtype=torch.long))
    module.register_buffer("view_rotation", torch.eye(3).repeat(num_views, 1, 1))


def _posed(points: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """(B, P, 3) world-frame points and (B, 3, 3) world-to-camera rotations -> (B, P, 3) ``R @ p``."""
    return points.float() @ rotations.float().transpose(1, 2)


SHAPE_CANDIDATES = 256
"""ShapeBank.select: views nearest to the picture whose shape distance is computed."""
SHAPE_STATS_STRIDE = 16
"""ShapeBank.select: every this-many-th view also gets a shape distance, for the z-score's statistics."""


class ShapeBank(nn.Module):
    """Training shapes the network's reconstruction is snapped to, as printable solids.

    For a picture, the indexed training views get two distances: the picture's embedding to
    the view's (:func:`embed_image`, ``dim`` principal components) and the network's
    reconstruction to the view's shape posed in that view's frame (symmetric Chamfer between
    point sets). Each is standardised over the bank (z-score; see :meth:`select` for which views
    get a shape distance) and the nearest view under ``z(picture) + shape_weight * z(shape)`` wins: its model's solid (:mod:`recon_core.mesh.volume`:
    the cells its surface passes through, so open shells, single-sided sheets and interior
    parts all stay) is meshed by marching tetrahedra and posed in the view's frame.

    Args:
        num_shapes: M training models; num_views: N indexed views; dim: D embedding components;
        num_points: P points per shape; grid_bytes: total length of the packed grids;
        resolution: R, cells per side of every grid.

    Buffers (persistent):
        embed_mean: (EMBED_DIM,) mean of the training views' embeddings.
        embed_basis: (EMBED_DIM, D) principal directions (orthonormal columns).
        view_features: (N, D); view_shape: (N,) long model index; view_rotation: (N, 3, 3).
        shape_points: (M, P, 3) world-frame surface points of each model.
        shape_category: (M,) long category index (-1: unknown).
        grid_data: (grid_bytes,) uint8, every model's :func:`recon_core.mesh.volume.pack_grid`, in order.
        grid_offsets: (M + 1,) long start of each model's grid in ``grid_data``.
    """

    def __init__(self, num_shapes: int, num_views: int, dim: int, num_points: int, grid_bytes: int, resolution: int):
        super().__init__()
        if min(num_shapes, num_views, dim, num_points, grid_bytes, resolution) < 1:
            raise ValueError("a shape bank needs shapes, views, dims, points, grids and a resolution, got "
                             f"{num_shapes}, {num_views}, {dim}, {num_points}, {grid_bytes}, {resolution}: "
                             "build one with training/build_shape_bank.py")
        self.resolution = resolution
        _register_view_index(self, num_views, dim, "view_shape")
        self.register_buffer("shape_points", torch.zeros(num_shapes, num_points, 3))
        self.register_buffer("shape_category", torch.full((num_shapes,), -1, dtype=torch.long))
        self.register_buffer("grid_data", torch.zeros(grid_bytes, dtype=torch.uint8))
        self.register_buffer("grid_offsets", torch.zeros(num_shapes + 1, dtype=torch.long))

    def picture_distances(self, embedding: torch.Tensor) -> torch.Tensor:
        """(EMBED_DIM,) :func:`embed_image` vector -> (N,) squared distances to every view in the projected space."""
        if embedding.shape != (EMBED_DIM,):
            raise ValueError(f"embedding must be ({EMBED_DIM},), got {tuple(embedding.shape)}")
        query = _project(embedding[None], self.embed_mean, self.embed_basis)  # (1, D)
        return ((self.view_features.float() - query) ** 2).sum(dim=1)

    def shape_distances(self, points: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(Q, 3) view-frame points of the reconstruction -> symmetric Chamfer-L2 to the posed shape of
        each view in ``rows`` ((K,) long; None: every view), shape (K,)."""
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (Q, 3), got {tuple(points.shape)}")
        if rows is None:
            rows = torch.arange(self.view_shape.shape[0], device=self.view_shape.device)
        # Written out rather than pytorch3d's knn_points: the same sums, ~2x faster on CPU for these sizes.
        query = points.to(self.shape_points.device, torch.float32)
        query_sq = (query * query).sum(dim=1)
        query_t = query.T
        rows = rows.to(self.view_shape.device)
        posed = _posed(self.shape_points[self.view_shape[rows]], self.view_rotation[rows])  # (K, P, 3), all at once
        posed_sq = (posed * posed).sum(dim=2)
        to_query, to_shape = [], []
        # (8, P, Q) distance blocks of ~2 MB stay in the core's cache while both minima are taken: ~40 % faster than
        # blocks of 32 for the bank's 256 points against 256 (the same sums); only they are done block by block,
        # in two buffers used again for every block (a new pair of 2 MB arrays each time left the allocator's
        # heap fragmented: up to ~250 MB more peak memory in one picture, at random)
        base_buffer = posed.new_empty((8, posed.shape[1], len(query)))
        d2_buffer = torch.empty_like(base_buffer)
        for start in range(0, len(rows), 8):
            block = posed[start : start + 8]
            base = torch.add(posed_sq[start : start + 8, :, None], query_sq[None, None], out=base_buffer[: len(block)])
            d2 = torch.baddbmm(base, block, query_t.expand(len(block), 3, -1), alpha=-2.0, out=d2_buffer[: len(block)])
            # amin, not min (no indices: ~10x faster); clamping the minima equals minimising the clamped values
            to_query.append(d2.amin(dim=2))
            to_shape.append(d2.amin(dim=1))
        if not to_query:
            return torch.zeros(0)
        return torch.cat(to_query).clamp_min(0).mean(dim=1) + torch.cat(to_shape).clamp_min(0).mean(dim=1)

    def category_votes(self, rows: list[int], weights: list[float], num_categories: int) -> np.ndarray:
        """(K,) each category's share of ``weights`` among the views ``rows`` whose model's category is known.

        Views of models without a category (``shape_category`` -1, the extra pool) do not vote; when none
        of the views has one, every category gets ``1 / num_categories``.
        """
        if len(rows) != len(weights):
            raise ValueError(f"rows and weights must be as long, got {len(rows)} and {len(weights)}")
        votes = np.zeros(num_categories)
        if rows:
            categories = self.shape_category[self.view_shape[torch.as_tensor(rows, dtype=torch.long)]].cpu().numpy()
            known = categories >= 0
            np.add.at(votes, categories[known], np.asarray(weights, dtype=np.float64)[known])
        total = votes.sum()
        return votes / total if total > 0 else np.full(num_categories, 1.0 / num_categories)

    def select(self, embedding: torch.Tensor, points: torch.Tensor | None, shape_weight: float = 1.0,
               category: int | None = None) -> int:
        """Row of the chosen view (see the class docstring); ``points`` None: the picture alone decides.

        The first of :meth:`ranked`; see there for the candidates and the category.
        """
        return self.ranked(embedding, points, shape_weight, category, 1)[0][0]

    def ranked(self, embedding: torch.Tensor, points: torch.Tensor | None, shape_weight: float = 1.0,
               category: int | None = None, count: int | None = 1) -> list[tuple[int, float]]:
        """The ``count`` best views of different training models, best first: ``[(row, score), ...]``.

        ``score`` is the standardised distance ``z(picture) + shape_weight * z(shape)`` (lower is
        nearer); each model appears once, with its best view, so the candidates are different
        shapes. Fewer than ``count`` when the candidates hold fewer models; ``count=None``: every one of them.

        The shape distance is computed for the ``SHAPE_CANDIDATES`` views nearest to the picture
        (a winner needs a small picture term, so it is nearly always among them: on the validation
        split the cut changed the choice for 1 image of 41) and, for its mean and standard
        deviation, also for every ``SHAPE_STATS_STRIDE``-th view of the bank.
        ``category`` (an index) keeps only that category's views when it has any.
        """

        def z(d: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            spread = ref.std() if ref.numel() > 1 else ref.new_ones(())
            return (d - ref.mean()) / spread.clamp_min(1e-12)

        pic = self.picture_distances(embedding)
        if not torch.isfinite(pic).any():
            raise ValueError("the picture's embedding or the shape bank is not finite: no view can be chosen")
        if category is not None:
            allowed = self.shape_category[self.view_shape] == category
            if allowed.any():
                pic = pic.masked_fill(~allowed, float("inf"))
        if count is not None and count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        finite = torch.isfinite(pic)
        k = min(SHAPE_CANDIDATES, int(finite.sum()))
        candidates = pic.topk(k, largest=False).indices
        score = z(pic[candidates], pic[finite])
        if points is not None and shape_weight:
            sample = torch.arange(0, pic.shape[0], SHAPE_STATS_STRIDE, device=pic.device)
            d = self.shape_distances(points, torch.cat([candidates, sample]))
            score = score + shape_weight * z(d[:k], d)
        best: list[tuple[int, float]] = []
        seen: set[int] = set()
        for i in torch.argsort(score, stable=True).tolist():  # ties: the view nearer to the picture first
            shape = int(self.view_shape[candidates[i]])
            if shape not in seen:
                seen.add(shape)
                best.append((int(candidates[i]), float(score[i])))
                if len(best) == count:
                    break
        return best

    def check(self) -> None:
        """Raise ``ValueError`` naming the problem if the loaded buffers contradict each other."""
        m, n = self.shape_points.shape[0], self.view_shape.shape[0]
        offsets = self.grid_offsets
        problems = []
        if n and (int(self.view_shape.min()) < 0 or int(self.view_shape.max()) >= m):
            problems.append(f"view_shape indexes outside the {m} shapes")
        if bool((offsets[1:] < offsets[:-1]).any()) or int(offsets[0]) != 0:
            problems.append("grid_offsets are not increasing from 0")
        if int(offsets[-1]) != self.grid_data.numel():
            problems.append(f"grid_offsets end at {int(offsets[-1])}, the packed grids hold {self.grid_data.numel()} bytes")
        for name in ("embed_mean", "embed_basis", "view_features", "view_rotation", "shape_points"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                problems.append(f"{name} is not finite")
        if problems:
            raise ValueError("the shape bank is inconsistent (" + "; ".join(problems) + ")")

    def grid(self, shape: int) -> np.ndarray:
        """(R, R, R) bool solid of model ``shape`` (world frame, :data:`recon_core.mesh.volume.GRID_BOUND`)."""
        from recon_core.mesh.volume import unpack_grid

        start, end = (int(x) for x in self.grid_offsets[shape : shape + 2])
        return unpack_grid(self.grid_data[start:end].cpu().numpy().tobytes(), self.resolution)

    def shape_mesh(self, shape: int, smoothing: float = 0.0, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(verts (V, 3) float64 world frame, faces (F, 3) int64)``: model ``shape``'s solid, meshed
        (``smoothing``, ``level``: :func:`recon_core.mesh.volume.grid_surface`'s)."""
        from recon_core.mesh.volume import grid_surface

        return grid_surface(self.grid(shape), smoothing=smoothing, level=level)

    def view_mesh(self, row: int, smoothing: float = 0.0, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """``(verts (V, 3) float64 view frame, faces (F, 3) int64)``: the :meth:`shape_mesh` of view ``row``'s
        model, posed by the view's rotation."""
        verts, faces = self.shape_mesh(int(self.view_shape[row]), smoothing, level)
        return verts @ self.view_rotation[row].double().cpu().numpy().T, faces
