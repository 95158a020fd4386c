"""The refiner stages on the occupancy network's meshes (``model.occupancy_refine``): the model's
``refine_mesh``, training's ``refine_loss`` (it learns), and inference (the refined mesh, still printable)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recon_core.io.inference import Reconstructor, coarse_surfaces
from recon_core.mesh.occupancy import GridCamera
from recon_core.mesh.printable import check_printable
from recon_core.mesh.topology import MeshGraph
from recon_core.network.config import ModelConfig
from recon_core.network.model import build_model
from training.config import load_train_config
from training.train import refine_loss

CONFIG = ModelConfig(backbone="resnet18", image_size=64, fpn_channels=32, hidden_dim=32, attention_heads=2,
                     coarse="occupancy", occupancy_resolution=8, occupancy_depth_bins=12, occupancy_depth_range=0.75,
                     occupancy_refine=True)


def _ball_logits(spec, radius=0.3) -> torch.Tensor:
    """(Z, N, N) logits of a ball around the grid's centre (crop units), +-8 inside/outside."""
    n, z = spec.resolution, spec.depth_bins
    u = (torch.arange(n) + 0.5) / n - 0.5
    d = -spec.depth_range + (torch.arange(z) + 0.5) * 2 * spec.depth_range / z
    dd, vv, uu = torch.meshgrid(d, u, u, indexing="ij")
    return torch.where(dd**2 + vv**2 + uu**2 < radius**2, 8.0, -8.0)


def _model_and_output(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CONFIG)
    out = model(torch.rand(2, 3, 64, 64))
    out.occupancy_logits = _ball_logits(model.grid_spec).expand(2, -1, -1, -1).clone()
    out.camera = torch.zeros(2, 3)
    return model, out


def _sphere_points(n: int, radius: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    return normals * radius, normals


def test_refine_mesh_of_an_untrained_model_is_the_identity_and_a_trained_one_moves_every_stage():
    model, out = _model_and_output()
    candidates = coarse_surfaces(out.occupancy_logits[0], torch.ones(64, 64), out.camera[0], model.grid_spec, 200, 3)
    _, verts, faces = candidates[0]
    v = torch.tensor(verts, dtype=torch.float32)
    graph = MeshGraph(faces, len(verts))
    probs = torch.full((1, 13), 1 / 13)
    pyramid = [p[:1].detach() for p in out.pyramid]
    stages = model.refine_mesh(pyramid, v, graph, GridCamera.from_prediction(out.camera[0]), probs)
    assert len(stages) == 3 and all(s.shape == v.shape for s in stages)
    assert torch.equal(stages[-1], v)  # zero-initialised offsets
    with torch.no_grad():
        for stage in model.stages:
            stage.offset.bias.normal_(0, 1)
    moved = model.refine_mesh(pyramid, v, graph, GridCamera.from_prediction(out.camera[0]), probs)
    steps = [moved[0] - v] + [moved[i] - moved[i - 1] for i in (1, 2)]
    assert all(float(s.detach().abs().max()) > 1e-4 for s in steps)


def test_refine_loss_trains_the_stages_alone_and_brings_the_mesh_to_the_target():
    """A ball of radius 0.3 crop units (~0.57 in the view frame at s = 1.9) refined toward a sphere of radius 0.45:
    the stages' Chamfer distance falls below the coarse mesh's, which stays as it was."""
    model, out = _model_and_output()
    cfg = load_train_config(None, ["loss.num_samples=400", "loss.refine_faces=300", "loss.edge=0.0",
                                   "loss.laplacian=0.1", "loss.silhouette=0.0", "loss.depth=0.0"])
    points, normals = _sphere_points(400, 0.45, seed=1)
    batch = {"mask": torch.ones(2, 64, 64), "points": points.expand(2, -1, -1), "normals": normals.expand(2, -1, -1),
             "category": torch.tensor([3, -1])}
    for p in (model.encoder, model.heads, model.category_head):
        p.requires_grad_(False)
    out.pyramid = [p.detach() for p in out.pyramid]
    out.category_logits = out.category_logits.detach()
    params = [p for p in model.stages.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    first = None
    for _ in range(25):
        total, parts = refine_loss(model, out, batch, cfg)
        first = first or parts
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert set(first) >= {"chamfer/0", "chamfer/2", "chamfer/coarse", "refine"}
    assert first["chamfer/2"] == pytest.approx(first["chamfer/coarse"], rel=0.3)  # identity at the start
    assert parts["chamfer/2"] < 0.5 * parts["chamfer/coarse"], (first, parts)
    assert parts["chamfer/coarse"] == pytest.approx(first["chamfer/coarse"], rel=0.3)


def test_refine_loss_renders_the_last_stage_with_the_true_camera():
    """With loss.silhouette and loss.depth, the last stage (only) gets both, and their gradient reaches the stages."""
    model, out = _model_and_output()
    with torch.no_grad():
        for stage in model.stages:
            stage.offset.bias.normal_(0, 0.5)
    cfg = load_train_config(None, ["loss.num_samples=200", "loss.refine_faces=300", "loss.silhouette=1.0",
                                   "loss.depth=0.5", "loss.chamfer=0.0", "loss.normal=0.0", "loss.edge=0.0",
                                   "loss.laplacian=0.0"])
    points, normals = _sphere_points(200, 0.45, seed=1)
    yy, xx = np.mgrid[0:64, 0:64]
    disc = torch.tensor(((xx + 0.5 - 32) ** 2 + (yy + 0.5 - 32) ** 2 < 20**2).astype(np.float32))
    K = torch.tensor([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]])
    batch = {"mask": disc.expand(2, -1, -1), "depth": (disc * 1.9).expand(2, -1, -1), "K": K.expand(2, -1, -1),
             "T": torch.tensor([0.0, 0.0, 1.9]).expand(2, -1), "points": points.expand(2, -1, -1),
             "normals": normals.expand(2, -1, -1), "category": torch.tensor([0, 1])}
    total, parts = refine_loss(model, out, batch, cfg)
    assert 0 < parts["silhouette/2"] < 1 and parts["depth/2"] > 0
    assert "silhouette/0" not in parts and "depth/1" not in parts
    total.backward()
    assert model.stages[2].offset.weight.grad.abs().sum() > 0


def test_refine_loss_skips_empty_grids():
    """Carved away by an empty mask, the occupancy has no mesh: no loss, no parts."""
    model, out = _model_and_output()
    cfg = load_train_config(None, ["loss.num_samples=100", "loss.silhouette=0.0", "loss.depth=0.0"])
    points, normals = _sphere_points(100, 0.4, seed=2)
    batch = {"mask": torch.zeros(2, 64, 64), "points": points.expand(2, -1, -1), "normals": normals.expand(2, -1, -1),
             "category": torch.tensor([0, 1])}
    total, parts = refine_loss(model, out, batch, cfg)
    assert float(total) == 0.0 and parts == {}


@pytest.mark.parametrize("offset_scale", [0.0, 0.5])
def test_reconstruct_outputs_the_refined_mesh_and_it_is_printable(offset_scale):
    torch.manual_seed(3)
    model = build_model(CONFIG)
    with torch.no_grad():
        model.heads.occupancy[-1].weight.zero_()
        model.heads.occupancy[-1].bias.copy_(torch.linspace(-4, 4, 12).abs().neg() + 2.0)  # a slab around the centre
        for stage in model.stages:
            stage.offset.bias.normal_(0, offset_scale)
    rec = Reconstructor(model, {"trained": True})
    rgb = np.full((64, 64, 3), 200, np.uint8)
    alpha = np.zeros((64, 64), np.uint8)
    alpha[12:52, 16:48] = 255
    result = rec.reconstruct(rgb, alpha, vertices=642)
    assert check_printable(result.verts, result.faces).ok and result.report.ok
    assert "refiner" in result.timings
    kept = [s for s in result.repair.steps if s.startswith("kept the")]
    if offset_scale == 0.0:
        assert kept and kept[0].startswith("kept the refined mesh")
    # the un-refined model's output, for comparison: same faces when the refined mesh was kept
    plain = Reconstructor(build_model(dataclasses.replace(CONFIG, occupancy_refine=False)), {})
    plain.model.load_state_dict(model.state_dict())
    base = plain.reconstruct(rgb, alpha, vertices=642)
    if kept and kept[0].startswith("kept the refined mesh"):
        assert np.array_equal(base.faces, result.faces)
        moved = np.abs(base.verts - result.verts).max()
        # zero offsets: the same mesh up to float32 rounding (the refiner works in float32, and both are
        # centred on their own bounding boxes before the output's float32 rounding)
        assert (moved < 1e-6) if offset_scale == 0.0 else (moved > 1e-4)


def test_a_refined_mesh_with_crossing_faces_is_untangled_or_dropped_never_shipped():
    """A refinement that pushes a vertex through the body: the output is still printable, and the log says
    which mesh was kept (the refined one untangled, or a coarse one)."""
    from recon_core.io.inference import _occupancy_mesh
    from recon_core.network.heads import OccupancyOutput

    spec = CONFIG.grid_spec
    out = OccupancyOutput(occupancy_logits=_ball_logits(spec)[None], mask_logits=torch.full((1, 1, 16, 16), 5.0),
                          depth=torch.zeros(1, 1, 16, 16), normals=torch.zeros(1, 3, 16, 16),
                          camera=torch.zeros(1, 3), category_logits=torch.zeros(1, 13))

    def poke(verts, faces):
        v = verts.copy()
        centre = v.mean(axis=0)
        i = int(np.argmax(v[:, 0]))
        v[i] = centre + (centre - v[i]) * 0.6  # through the middle, past the centre
        return v

    verts, faces, log, report = _occupancy_mesh(out, torch.ones(64, 64), spec, 300, 3, refine=poke)
    assert report is not None and report.ok and check_printable(verts, faces).ok
    assert any(s.startswith("the refined mesh has") for s in log.steps)
    kept = [s for s in log.steps if s.startswith("kept the")]
    assert kept and (kept[0].startswith("kept the refined and untangled mesh") or "refined" not in kept[0])

    verts2, faces2, log2, _ = _occupancy_mesh(out, torch.ones(64, 64), spec, 300, 3, refine=lambda v, f: v)
    assert [s for s in log2.steps if s.startswith("kept the")][0].startswith("kept the refined mesh")
