"""A synthetic data set of ellipsoids, item-for-item like :class:`training.dataset.RenderedViews`.

For tests and benchmarks of the training loop without rendered data: item ``i`` is
an ellipsoid with seeded semi-axes, seen by an orthographic-looking camera; the image
is its silhouette in a seeded colour, the targets are points on its surface in the
view frame; given a grid (``occupancy``), also the ellipsoid's solid voxelised in the view's frustum
(``occupancy``, ``grid_camera``), as the data set gives an occupancy model. Deterministic: the same index
always gives the same item.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from recon_core.mesh.camera import CROP_MARGIN
from recon_core.mesh.occupancy import GridSpec, crop_units_camera, voxelize_frustum
from recon_core.network.categories import NUM_CATEGORIES

__all__ = ["SyntheticViews"]


class SyntheticViews(Dataset):
    """``size`` ellipsoid items; see :class:`training.dataset.RenderedViews` for the item format."""

    SOLID_RESOLUTION = 32
    """Cells along each axis of the ellipsoid's solid, over ``[-0.5, 0.5]^3``."""

    def __init__(self, size: int = 64, image_size: int = 64, num_points: int = 512, seed: int = 0, distance: float = 2.0,
                 occupancy: GridSpec | None = None, occupancy_share: bool = False):
        self.size, self.image_size, self.num_points, self.seed, self.distance = size, image_size, num_points, seed, distance
        self.occupancy, self.occupancy_share = occupancy, occupancy_share
        self.categories = [i % NUM_CATEGORIES for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, index))
        axes = rng.uniform(0.15, 0.45, 3)
        s, d = self.image_size, self.distance
        # focal length so the larger of the x/y extents fills the crop like recon_core.network.crop does
        f = (1 - 2 * CROP_MARGIN) * s * d / (2 * max(axes[0], axes[1]))
        K = np.array([[f, 0, s / 2], [0, f, s / 2], [0, 0, 1]], np.float32)
        u, v = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5)
        x, y = (u - s / 2) * d / f, (v - s / 2) * d / f
        inside = (x / axes[0]) ** 2 + (y / axes[1]) ** 2 < 1
        z = axes[2] * np.sqrt(np.clip(1 - (x / axes[0]) ** 2 - (y / axes[1]) ** 2, 0, None))
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        image = np.where(inside[None], colour[:, None, None], 1.0).astype(np.float32)
        dirs = rng.normal(size=(self.num_points, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        points = dirs * axes
        normals = dirs / axes
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        extra = {}
        if self.occupancy is not None:
            n = self.SOLID_RESOLUTION
            c = (np.arange(n) + 0.5) / n - 0.5
            gx, gy, gz = np.meshgrid(c, c, c, indexing="ij")
            solid = (gx / axes[0]) ** 2 + (gy / axes[1]) ** 2 + (gz / axes[2]) ** 2 < 1
            grid_camera = crop_units_camera(K, d, s)
            target = voxelize_frustum(solid, 0.5, np.eye(3), grid_camera, self.occupancy, share=self.occupancy_share)
            extra["occupancy"] = torch.from_numpy(target.astype(np.float32))
            extra["grid_camera"] = torch.tensor(
                [math.log(grid_camera.scale), grid_camera.principal[0] - 0.5, grid_camera.principal[1] - 0.5],
                dtype=torch.float32)
        return {
            **extra,
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy(inside.astype(np.float32)),
            "depth": torch.from_numpy(np.where(inside, d - z, 0).astype(np.float32)),
            "K": torch.from_numpy(K),
            "R": torch.eye(3),
            "T": torch.tensor([0.0, 0.0, d]),
            "points": torch.from_numpy(points.astype(np.float32)),
            "normals": torch.from_numpy(normals.astype(np.float32)),
            "category": torch.tensor(self.categories[index]),
            "model_id": f"ellipsoid{index}",
            "view": 0,
            "sketch": False,
        }
