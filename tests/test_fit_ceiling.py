"""The ceiling fit: an ico-sphere fitted to a surface with the training losses gets close to it."""

from __future__ import annotations

import numpy as np
import torch
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.structures import Meshes

from recon_core.mesh.metrics import sampling_metrics
from training.config import LossConfig
from training.fit_ceiling import fit_sphere


def _ellipsoid_points(n: int, axes=(0.45, 0.25, 0.15), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    a = torch.tensor(axes)
    pts = d * a
    normals = pts / a**2
    return pts + torch.tensor([0.1, -0.05, 0.02]), normals / normals.norm(dim=1, keepdim=True)


def test_fit_reaches_an_ellipsoid_and_the_start_does_not():
    pts, nrm = _ellipsoid_points(2000)
    loss = LossConfig(num_samples=500)
    verts, faces = fit_sphere(pts, nrm, loss, levels=(1, 2), steps=60)
    assert verts.shape == (162, 3) and faces.shape == (320, 3)
    start, _ = fit_sphere(pts, nrm, loss, levels=(1, 2), steps=0)

    def f1(v: np.ndarray) -> float:
        torch.manual_seed(0)
        mesh = Meshes([torch.tensor(v, dtype=torch.float32)], [torch.tensor(faces)])
        samples = sample_points_from_meshes(mesh, 3000)
        return float(sampling_metrics(samples * 10, pts[None] * 10, thresholds=(0.3,))["F1@0.3"][0])

    assert f1(verts) > 0.8 > 0.5 > f1(start)
    assert np.isfinite(verts).all()
