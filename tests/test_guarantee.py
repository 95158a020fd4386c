"""The mesh guarantee, end to end: whatever the weights and the image, the output is printable."""

from __future__ import annotations

import manifold3d
import numpy as np
import pytest
import torch
import trimesh

from recon_core.io.inference import Reconstructor
from recon_core.network.model import build_model


def _wild_model(config, seed: int, scale: float):
    """A random-weights model whose zero-initialised output layers are randomised too, so it deforms wildly."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0 or name.startswith("coarse_head"):
                p.normal_(0, scale)
    return Reconstructor(model, {"trained": False})


def _image(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    if kind == "noise":
        return rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), None
    if kind == "noise_alpha":
        alpha = np.zeros((64, 64), np.uint8)
        alpha[rng.integers(0, 20):rng.integers(30, 64), rng.integers(0, 20):rng.integers(30, 64)] = 255
        return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), alpha
    img = np.full((72, 72, 3), 255, np.uint8)
    y0, x0 = rng.integers(0, 30, 2)
    img[y0:y0 + rng.integers(5, 40), x0:x0 + rng.integers(5, 40)] = rng.integers(0, 200, 3)
    return img, None


def _independent_checks(verts: np.ndarray, faces: np.ndarray) -> None:
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    m = manifold3d.Manifold(manifold3d.Mesh(vert_properties=verts.astype(np.float32),
                                            tri_verts=faces.astype(np.uint32)))
    assert m.status() == manifold3d.Error.NoError and m.volume() > 0


def test_guarantee_on_200_outputs_of_random_weights(tiny_config):
    rng = np.random.default_rng(0)
    kinds = ("noise", "noise_alpha", "shape")
    scales = (0.0, 0.05, 0.5, 5.0)
    count = 0
    for seed in range(10):
        rec = _wild_model(tiny_config, seed, scales[seed % len(scales)])
        for i in range(20):
            rgb, alpha = _image(rng, kinds[i % 3])
            vertices = 2562 if i == 0 else 642
            result = rec.reconstruct(rgb, alpha, vertices=vertices, height_mm=float(rng.uniform(5, 300)) if i % 2 else None)
            assert result.report.ok, (seed, i, result.report.summary(), result.repair)
            _independent_checks(result.verts, result.faces)
            count += 1
    assert count >= 200


def test_height_mm_scales_the_mesh(tiny_config):
    rec = _wild_model(tiny_config, 1, 0.05)
    rgb, _ = _image(np.random.default_rng(1), "shape")
    result = rec.reconstruct(rgb, None, vertices=642, height_mm=123.0)
    assert np.ptp(result.verts[:, 1]) == pytest.approx(123.0, rel=1e-6)  # float32-exact vertices
