"""The network's own mesh outlined onto the picture's mask (model.network_outline, recon_core.io.inference)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pytorch3d.utils import ico_sphere

from recon_core.io.inference import Reconstructor, surface_points
from recon_core.mesh.silhouette import mask_grid, silhouette_grids
from recon_core.network.model import build_model


def test_surface_points_lie_on_the_faces_spread_by_area():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 1], [5, 0, 1], [3, 3, 1]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 3: 1 / 7 and 6 / 7 of the points
    points = surface_points(verts, faces, count=20000, seed=1)
    first = points[:, 2] == 0
    assert abs(first.mean() - 1 / 7) < 0.01
    a, b = points[first], points[~first]
    assert (a[:, :2] >= 0).all() and (a[:, 0] + a[:, 1] <= 1 + 1e-12).all()
    rel = (b[:, :2] - [3, 0]) / [2, 3]
    assert (rel >= -1e-12).all() and (rel.sum(axis=1) <= 1 + 1e-12).all()
    # evenly within a triangle: the mean is its centroid
    np.testing.assert_allclose(a.mean(axis=0), [1 / 3, 1 / 3, 0], atol=0.01)
    np.testing.assert_array_equal(points, surface_points(verts, faces, count=20000, seed=1))


def _iou(points: np.ndarray, mask: np.ndarray) -> float:
    own, target = silhouette_grids(points[None])[0], mask_grid(mask)
    return float((own & target).sum() / (own | target).sum())


def test_outline_draws_the_mesh_onto_the_mask(tiny_config):
    """A sphere's outline drawn onto an L-shaped mask covers it better than the sphere; a full mask leaves it."""
    sphere = ico_sphere(3)
    verts = sphere.verts_packed().double().numpy() * 0.3
    faces = sphere.faces_packed().numpy().astype(np.int64)
    mask = np.zeros((96, 96), np.float32)
    mask[20:76, 20:40] = 1
    mask[56:76, 20:76] = 1
    rec = Reconstructor(build_model(dataclasses.replace(tiny_config, network_outline=True)), {"trained": False})
    moved = rec._outlined(verts, faces, mask)
    before = _iou(surface_points(verts, faces), mask)
    after = _iou(surface_points(moved, faces), mask)
    assert after > before + 0.03, (before, after)  # 0.48 -> 0.54: the warp stays one-to-one
    np.testing.assert_array_equal(rec._outlined(verts, faces, np.ones((96, 96), np.float32)), verts)
    off = dataclasses.replace(tiny_config, network_outline=True, bank_warp=0, bank_place=False)
    np.testing.assert_array_equal(Reconstructor(build_model(off), {"trained": False})._outlined(verts, faces, mask),
                                  verts)
