"""The frustum occupancy grid (recon_core.mesh.occupancy) and its mesh (recon_core.io.inference.occupancy_mesh)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon_core.io.inference import occupancy_mesh
from recon_core.mesh.camera import crop_camera, look_at
from recon_core.mesh.occupancy import (
    GridCamera,
    GridSpec,
    carve,
    cell_centres,
    fill_rays,
    crop_units_camera,
    grid_to_view,
    mesh_occupancy,
    project_view,
    voxelize_frustum,
)
from recon_core.mesh.printable import check_printable
from recon_core.mesh.volume import occupancy_grid
from recon_core.network.heads import OccupancyOutput

SPEC = GridSpec(resolution=12, depth_bins=18, depth_range=0.75)


def _box(lo, hi):
    import trimesh

    box = trimesh.creation.box(extents=np.subtract(hi, lo))
    box.apply_translation(np.add(lo, hi) / 2.0)
    return np.asarray(box.vertices), np.asarray(box.faces)


def _view(azimuth=30.0, elevation=20.0, distance=2.0, size=64):
    cam = look_at(azimuth, elevation, distance, width=size, height=size)
    # a square crop around the image centre, as prepare_image cuts around an object's box
    crop = crop_camera(cam, (8.0, 6.0, 56.0, 54.0), size)
    return cam, crop_units_camera(crop.K, distance, size), crop


def test_grid_to_view_matches_the_camera_projection():
    """A crop-unit point maps to a view point that the crop's own camera projects back onto the same pixel."""
    cam, grid_cam, crop = _view()
    pts = cell_centres(SPEC).reshape(-1, 3)
    view = grid_to_view(pts, grid_cam)
    world = view @ cam.R  # p_world = R^T p_view
    uv = crop.project(world) / crop.width
    assert np.allclose(uv, pts[:, :2], atol=1e-9)
    # depth offset: z_cam - d = s * z_c
    assert np.allclose(view[:, 2], grid_cam.scale * pts[:, 2], atol=1e-9)


def test_project_view_inverts_grid_to_view():
    """Crop-unit points taken to the view frame by numpy's grid_to_view come back on their pixels, batched (B, V, 3)."""
    _, grid_cam, _ = _view(70, -15, distance=1.8)
    rng = np.random.default_rng(0)
    crop = np.concatenate([rng.uniform(-0.2, 1.2, (2, 300, 2)), rng.uniform(-0.75, 0.75, (2, 300, 1))], axis=-1)
    view = torch.from_numpy(grid_to_view(crop, grid_cam))  # (2, 300, 3) float64
    uv = project_view(view, grid_cam, 64)
    assert uv.shape == (2, 300, 2) and uv.dtype == torch.float64
    assert np.allclose(uv.numpy(), crop[..., :2] * 64, atol=1e-9)
    assert project_view(view.float(), grid_cam, 64).dtype == torch.float32


def test_project_view_matches_the_crop_camera_and_is_differentiable():
    """The crop camera's K projects p_cam = p_view + (0, 0, d) onto the same pixels; gradients are the pinhole's."""
    cam, grid_cam, crop = _view(200, 35)
    rng = np.random.default_rng(1)
    view = rng.uniform(-0.5, 0.5, (100, 3))
    expected = crop.project(view @ cam.R)  # the crop camera on world points p_world = R^T p_view
    verts = torch.from_numpy(view).requires_grad_()
    uv = project_view(verts, grid_cam, crop.width)
    assert np.allclose(uv.detach().numpy(), expected, atol=1e-9)
    (grad,) = torch.autograd.grad(uv[:, 0].sum(), verts)
    z_cam = view[:, 2] + grid_cam.distance
    focal = grid_cam.focal * crop.width
    assert np.allclose(grad.numpy(), np.stack([focal / z_cam, 0 * z_cam, -focal * view[:, 0] / z_cam**2], -1))


def _reference_voxelize(solid, bound, cam, crop, spec):
    """Cell by cell, from the crop camera's inverse intrinsics and the world-to-camera transform."""
    res = solid.shape[0]
    n, zb = spec.resolution, spec.depth_bins
    size = crop.width
    kinv = np.linalg.inv(crop.K)
    d = cam.T[2]
    focal = crop.K[0, 0] / size
    out = np.zeros((zb, n, n), dtype=bool)
    for k in range(zb):
        z_c = -spec.depth_range + (k + 0.5) * 2 * spec.depth_range / zb
        z_cam = d + z_c * d / focal
        for i in range(n):
            for j in range(n):
                pixel = np.array([(j + 0.5) / n * size, (i + 0.5) / n * size, 1.0])
                p_cam = kinv @ pixel * z_cam
                p_world = cam.R.T @ (p_cam - cam.T)
                idx = np.floor((p_world + bound) / (2 * bound) * res).astype(int)
                if np.all(idx >= 0) and np.all(idx < res):
                    out[k, i, j] = solid[idx[0], idx[1], idx[2]]
    return out


def test_voxelize_frustum_equals_a_cell_by_cell_reference():
    verts, faces = _box((-0.3, -0.2, -0.1), (0.25, 0.2, 0.3))
    solid = occupancy_grid(verts, faces, resolution=24, bound=0.55)
    for azimuth, elevation in ((30, 20), (200, -10), (95, 60)):
        cam, grid_cam, crop = _view(azimuth, elevation)
        fast = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=1)
        assert fast.any()
        assert np.array_equal(fast, _reference_voxelize(solid, 0.55, cam, crop, SPEC))


def test_voxelize_frustum_share_counts_the_same_samples_as_the_bool_grid():
    """``share``: the share of a cell's samples in the solid; > 0 exactly where the bool grid is solid."""
    verts, faces = _box((-0.3, -0.2, -0.1), (0.25, 0.2, 0.3))
    solid = occupancy_grid(verts, faces, resolution=24, bound=0.55)
    cam, grid_cam, crop = _view(30, 20)
    one = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=1, share=True)
    np.testing.assert_array_equal(one, _reference_voxelize(solid, 0.55, cam, crop, SPEC).astype(np.float32))
    share = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=2, share=True)
    solid_any = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=2)
    assert share.dtype == np.float32 and np.array_equal(share > 0, solid_any)
    np.testing.assert_array_equal(share * 8, np.round(share * 8))  # whole samples of 8
    partial = (share > 0) & (share < 1)
    assert partial.any() and (share == 1).any()  # a boundary layer between the inside and the outside


def test_voxelize_frustum_against_point_in_solid():
    """Cell centres inside the solid box (tested point by point) are the cells the voxelisation marks, up to the border."""
    lo, hi = np.array([-0.3, -0.25, -0.15]), np.array([0.3, 0.2, 0.35])
    verts, faces = _box(lo, hi)
    solid = occupancy_grid(verts, faces, resolution=96, bound=0.55)
    cam, grid_cam, _ = _view(40, 25)
    occ = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=1)
    world = (grid_to_view(cell_centres(SPEC), grid_cam) @ cam.R).reshape(-1, 3)
    inside = np.array([bool(np.all(p >= lo) and np.all(p <= hi)) for p in world]).reshape(occ.shape)
    assert inside.sum() > 50
    # The solid's surface cells stick out by up to one of its cells: only cells that close to the surface may differ.
    assert (occ != inside).mean() < 0.04
    assert (inside & ~occ).sum() == 0


def test_supersampling_keeps_thin_slabs():
    verts, faces = _box((-0.4, -0.004, -0.4), (0.4, 0.004, 0.4))  # a sheet thinner than a frustum cell
    solid = occupancy_grid(verts, faces, resolution=64, bound=0.55)
    cam, grid_cam, _ = _view(10, 25)
    plain = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=1)
    fine = voxelize_frustum(solid, 0.55, cam.R, grid_cam, SPEC, supersample=3)
    assert fine.sum() > plain.sum()
    assert (plain & ~fine).sum() == 0


def test_carving_never_removes_a_cell_inside_the_mask():
    rng = np.random.default_rng(0)
    probs = rng.random((SPEC.depth_bins, SPEC.resolution, SPEC.resolution))
    mask = (rng.random((SPEC.resolution, SPEC.resolution)) > 0.4).astype(float)
    carved = carve(probs, mask)
    inside = np.broadcast_to(mask[None] == 1, probs.shape)
    assert np.array_equal(carved[inside], probs[inside])
    assert np.all(carved[~inside] == 0)
    assert np.all(carved <= probs)


def _blobs(rng, spec):
    """(Z, N, N) smooth random occupancy probabilities."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal((spec.depth_bins, spec.resolution, spec.resolution)), 1.5)
    return 1.0 / (1.0 + np.exp(-field / field.std() * 3.0 + rng.uniform(0, 2)))


def _fill_rays_naive(values, mask, level, thickness):
    out = values.astype(np.float64).copy()
    z, n, _ = values.shape
    for i in range(n):
        for j in range(n):
            ray = values[:, i, j]
            if mask[i, j] > 0.5 and ray.max() <= level:
                k = int(np.argmax(ray))
                for kk in range(k - thickness, k + thickness + 1):
                    kk = min(max(kk, 0), z - 1)
                    out[kk, i, j] = max(out[kk, i, j], min(level + 0.1, 1.0))
    return out


@pytest.mark.parametrize("thickness", [0, 1, 2])
def test_fill_rays_equals_a_ray_by_ray_reference_and_covers_the_mask(thickness):
    rng = np.random.default_rng(thickness)
    probs = rng.random((10, 9, 9)) * rng.random((1, 9, 9))  # many rays stay below the level
    mask = rng.random((9, 9))
    values = carve(probs, mask)
    filled = fill_rays(values, mask, 0.5, thickness)
    np.testing.assert_array_equal(filled, _fill_rays_naive(values, mask, 0.5, thickness))
    assert (filled.max(axis=0)[mask > 0.5] > 0.5).all()  # every ray of the mask reaches the level
    off = mask <= 0.5
    np.testing.assert_array_equal(filled[:, off], values[:, off])  # nothing added off the mask
    reached = values.max(axis=0) > 0.5
    np.testing.assert_array_equal(filled[:, reached], values[:, reached])  # rays that reached it are kept
    assert (filled >= values).all()


def test_mesh_occupancy_is_printable_and_inside_the_frustum():
    rng = np.random.default_rng(1)
    cam = GridCamera(scale=1.1, principal=(0.5, 0.48))
    for _ in range(5):
        verts, faces = mesh_occupancy(_blobs(rng, SPEC), cam, SPEC)
        if len(faces) == 0:
            continue
        assert check_printable(verts, faces).ok
        # every vertex projects into the crop (the grid covers exactly the crop)
        z_cam = verts[:, 2] + cam.distance
        u = verts[:, 0] * cam.focal / z_cam + cam.principal[0]
        v = verts[:, 1] * cam.focal / z_cam + cam.principal[1]
        assert u.min() >= 0 and u.max() <= 1 and v.min() >= 0 and v.max() <= 1


def test_a_carved_torus_keeps_its_hole():
    """Any topology comes out: a ring-shaped occupancy meshes with genus one (Euler characteristic 0)."""
    spec = GridSpec(resolution=24, depth_bins=24, depth_range=0.5)
    c = cell_centres(spec)
    r = np.hypot(c[..., 0] - 0.5, c[..., 1] - 0.5)
    ring = (np.abs(r - 0.3) < 0.08) & (np.abs(c[..., 2]) < 0.1)
    verts, faces = mesh_occupancy(ring.astype(float), GridCamera(scale=1.0, principal=(0.5, 0.5)), spec)
    assert check_printable(verts, faces).ok
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    assert len(verts) - len(edges) + len(faces) == 0


def _output(logits: np.ndarray, camera=(0.0, 0.0, 0.0), mask_logit=5.0) -> OccupancyOutput:
    n = logits.shape[1]
    return OccupancyOutput(
        occupancy_logits=torch.tensor(logits, dtype=torch.float32)[None],
        mask_logits=torch.full((1, 1, 2 * n, 2 * n), mask_logit),
        depth=torch.zeros(1, 1, 2 * n, 2 * n),
        normals=torch.zeros(1, 3, 2 * n, 2 * n),
        camera=torch.tensor([camera], dtype=torch.float32),
        category_logits=torch.zeros(1, 13),
    )


def test_occupancy_mesh_guarantee_on_200_random_weight_outputs():
    """Every mesh of the new path passes the printable check: 200 outputs of random-weight networks.

    Four networks (seeds), each with its occupancy and camera heads' last layers scaled up by a
    random factor (from near-0.5 probabilities everywhere to confident noise), on noise
    pictures and drawn shapes, with and without an alpha mask.
    """
    from recon_core.network.config import ModelConfig
    from recon_core.network.model import build_model

    rng = np.random.default_rng(2)
    config = ModelConfig(backbone="resnet18", image_size=64, fpn_channels=32, hidden_dim=32, coarse="occupancy",
                         occupancy_resolution=6, occupancy_depth_bins=8, occupancy_depth_range=0.75)
    checked = 0
    for seed in range(4):
        torch.manual_seed(seed)
        model = build_model(config).eval()
        with torch.no_grad():
            model.heads.occupancy[-1].weight.mul_(float(rng.uniform(1, 40)))
            model.heads.occupancy[-1].bias.normal_(0, 2)
            model.heads.camera[-1].bias.copy_(torch.tensor(rng.normal(0, [0.3, 0.05, 0.05])))
        images = torch.rand(50, 3, 64, 64)
        images[25:] = (images[25:] > 0.7).float()  # blocky shapes
        with torch.no_grad():
            out = model(images)
        for i in range(50):
            one = OccupancyOutput(*(t[i : i + 1] for t in (out.occupancy_logits, out.mask_logits, out.depth,
                                                           out.normals, out.camera, out.category_logits)))
            mask = torch.tensor(rng.random((64, 64)) > 0.5, dtype=torch.float32) if i % 2 else None
            verts, faces, log = occupancy_mesh(one, mask, model.grid_spec, faces=150)
            assert check_printable(verts, faces).ok, (seed, i, log.steps)
            assert np.isfinite(verts).all() and len(faces) >= 4
            checked += 1
    assert checked == 200


def test_occupancy_mesh_follows_the_mask():
    """A full grid carved by a disc mask meshes to a shape whose outline in the picture is that disc."""
    spec = GridSpec(resolution=16, depth_bins=16, depth_range=0.5)
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((xx + 0.5 - 32) ** 2 + (yy + 0.5 - 32) ** 2 < 20**2).astype(np.float32)
    out = _output(np.full((16, 16, 16), 4.0))
    verts, faces, _ = occupancy_mesh(out, torch.tensor(disc), spec, faces=2000)
    # back to crop units: output frame -> view frame -> projection
    view = verts * np.array([1.0, -1.0, -1.0])
    cam = GridCamera(scale=1.0, principal=(0.5, 0.5))
    z_cam = view[:, 2] + cam.distance
    u = view[:, 0] * cam.focal / z_cam + 0.5
    v = view[:, 1] * cam.focal / z_cam + 0.5
    radius = np.hypot(u - 0.5, v - 0.5)
    assert radius.max() < 20 / 64 + 1.5 / 32  # within a fine cell of the disc's edge
    assert radius.max() > 20 / 64 - 1.5 / 32
    assert math.isclose(np.ptp(view[:, 2]), 1.0, rel_tol=0.05)  # the grid's whole depth range: nothing carved in depth


@pytest.mark.parametrize("bad", [dict(resolution=1), dict(depth_bins=0), dict(depth_range=0.0)])
def test_grid_spec_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        GridSpec(**bad)


def test_synthetic_ellipsoids_carry_their_frustum_occupancy():
    """training.synthetic's occupancy targets: the ellipsoid's cells project onto its silhouette, and their
    camera is the crop's."""
    from training.synthetic import SyntheticViews

    spec = GridSpec(16, 24, 0.75)
    item = SyntheticViews(4, 64, 64, seed=1, occupancy=spec, occupancy_share=True)[2]
    occ, mask = item["occupancy"].numpy(), item["mask"].numpy()
    assert occ.shape == (24, 16, 16) and 0 < occ.max() <= 1 and (occ == 1).any()
    centres = mask[2::4, 2::4]  # the mask at the 16 x 16 cells' pixel centres
    assert ((occ > 0.5).any(axis=0) == (centres > 0.5)).mean() > 0.95
    camera = crop_units_camera(item["K"].numpy(), float(item["T"][2]), 64)
    np.testing.assert_allclose(item["grid_camera"].numpy(),
                               [np.log(camera.scale), camera.principal[0] - 0.5, camera.principal[1] - 0.5], rtol=1e-6)
