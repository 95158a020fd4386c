"""recon_core.mesh.silhouette: the grids against per-cell and per-point loops, and the rotation search
against masks drawn by an independent rasteriser (the evaluation's)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon_core.mesh.camera import VIEW_TO_OUTPUT, Camera, intrinsics, rotation_x, rotation_y
from recon_core.mesh.silhouette import (
    FIT_DISTANCE,
    FIT_STRETCHES,
    bilinear,
    demons_field,
    signed_distance,
    warp_to_mask,
    fit_pose,
    fit_proportions,
    stretched,
    fit_rotation,
    mask_grid,
    rotation_offsets,
    silhouette_grids,
    solid_points,
)
from recon_core.mesh.volume import grid_surface


def _mask_grid_reference(mask: np.ndarray, size: int, fill: float, above: float = 0.5) -> np.ndarray | None:
    """mask_grid, one cell at a time."""
    m = np.asarray(mask) > 0.5
    rows, cols = np.nonzero(m)
    if len(rows) == 0:
        return None
    side = max(cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()) / fill
    cu, cv = (cols.min() + cols.max() + 1) / 2.0, (rows.min() + rows.max() + 1) / 2.0
    out = np.zeros((size, size), dtype=bool)
    for i in range(size):
        for j in range(size):
            u = math.floor(cu + ((j + 0.5) / size - 0.5) * side)
            v = math.floor(cv + ((i + 0.5) / size - 0.5) * side)
            out[i, j] = 0 <= u < m.shape[1] and 0 <= v < m.shape[0] and bool(mask[v, u] > above)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_mask_grid_equals_the_per_cell_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 90, size=2)
    mask = np.zeros((h, w))
    # a few random rectangles, some touching the border, one of them soft-valued
    for _ in range(3):
        r0, c0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        mask[r0 : r0 + rng.integers(1, h // 2 + 2), c0 : c0 + rng.integers(1, w // 2 + 2)] = rng.choice([0.6, 1.0])
    size, fill = int(rng.integers(8, 40)), float(rng.uniform(0.5, 1.0))
    np.testing.assert_array_equal(mask_grid(mask, size, fill), _mask_grid_reference(mask, size, fill))


def test_mask_grid_of_an_empty_mask_is_none():
    assert mask_grid(np.zeros((10, 10))) is None
    assert mask_grid(np.full((10, 10), 0.5)) is None  # 0.5 is not above 0.5


def _silhouette_reference(points: np.ndarray, distance: float, size: int, fill: float) -> np.ndarray:
    """silhouette_grids for one point set, one point at a time."""
    xy = [(x / (z + distance), y / (z + distance)) for x, y, z in points]
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    side = max(max(xs) - min(xs), max(ys) - min(ys)) / fill
    cx, cy = (min(xs) + max(xs)) / 2.0, (min(ys) + max(ys)) / 2.0
    out = np.zeros((size, size), dtype=bool)
    for x, y in xy:
        col = min(max(math.floor(((x - cx) / side + 0.5) * size), 0), size - 1)
        row = min(max(math.floor(((y - cy) / side + 0.5) * size), 0), size - 1)
        out[row, col] = True
    return out


def test_silhouette_grids_equal_the_per_point_reference():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(4, 200, 3)) * [0.3, 0.2, 0.25]
    points[2, :, 0] *= 0.1  # a thin set: its height sets the box
    for fill in (0.8, 1.0):
        grids = silhouette_grids(points, 1.7, 24, fill)
        for b in range(len(points)):
            np.testing.assert_array_equal(grids[b], _silhouette_reference(points[b], 1.7, 24, fill))


def test_rotation_offsets_equal_the_product_of_each_pair():
    R0 = rotation_x(-12.0) @ rotation_y(70.0)
    rotations, pairs = rotation_offsets(R0, (-10, 0, 5), (-5, 15))
    assert pairs == [(-10.0, -5.0), (-10.0, 15.0), (0.0, -5.0), (0.0, 15.0), (5.0, -5.0), (5.0, 15.0)]
    for R, (a, e) in zip(rotations, pairs):
        np.testing.assert_array_equal(R, rotation_x(e) @ R0 @ rotation_y(a))


def test_silhouette_grids_refuse_a_fill_above_one():
    with pytest.raises(ValueError, match="fill"):
        silhouette_grids(np.zeros((1, 3, 3)), fill=1.2)


def test_solid_points_are_cell_centres_and_a_fixed_subset():
    solid = np.zeros((8, 8, 8), dtype=bool)
    solid[2, 3, 4] = solid[7, 0, 1] = True
    np.testing.assert_allclose(solid_points(solid, 0.4), [[-0.4 + 2.5 * 0.1, -0.4 + 3.5 * 0.1, -0.4 + 4.5 * 0.1],
                                                          [-0.4 + 7.5 * 0.1, -0.4 + 0.5 * 0.1, -0.4 + 1.5 * 0.1]])
    big = np.ones((16, 16, 16), dtype=bool)
    a, b = solid_points(big, 0.5, count=100, seed=1), solid_points(big, 0.5, count=100, seed=1)
    assert a.shape == (100, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, solid_points(big, 0.5, count=100, seed=2))


def _chair_like_solid(res: int = 32) -> np.ndarray:
    """An asymmetric solid: a seat, a back on one side, one thick leg at a corner, an arm on one side."""
    s = np.zeros((res, res, res), dtype=bool)
    s[6:26, 12:16, 6:26] = True   # seat (x, y, z)
    s[6:26, 16:30, 22:26] = True  # back, at +z
    s[6:10, 2:12, 6:10] = True    # one leg, at -x -z
    s[22:26, 16:22, 6:22] = True  # an arm at +x
    return s


def _drawn_mask(solid: np.ndarray, bound: float, R: np.ndarray, focal_mm: float, distance: float,
                size: int = 96, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The solid's silhouette as the evaluation draws a mesh: its surface, stretched by ``scale`` and posed by R,
    through a true camera."""
    from training.scoring import silhouette

    verts, faces = grid_surface(solid, bound)
    verts = stretched(verts, np.array(scale))
    camera = Camera(R=np.eye(3), T=np.array([0.0, 0.0, distance]), K=intrinsics(focal_mm, 32.0, size, size),
                    width=size, height=size)
    return silhouette((verts @ R.T) @ VIEW_TO_OUTPUT.T, faces, camera)


@pytest.mark.parametrize("azimuth, elevation", [(-20.0, 10.0), (15.0, -5.0), (25.0, 0.0)])
def test_fit_rotation_recovers_the_pictures_rotation(azimuth, elevation):
    """Starting from a view rotation R0, the search finds the turn that the picture's camera adds, though the
    picture is drawn by another rasteriser, from a different distance and focal length."""
    solid, bound = _chair_like_solid(), 0.55
    R0 = rotation_x(25.0) @ rotation_y(130.0)
    truth = rotation_x(elevation) @ R0 @ rotation_y(azimuth)
    mask = _drawn_mask(solid, bound, truth, focal_mm=45.0, distance=2.1)
    R, iou = fit_rotation(solid_points(solid, bound), R0, mask_grid(mask))
    _, pairs = rotation_offsets(R0)
    found = min(pairs, key=lambda p: np.abs(rotation_x(p[1]) @ R0 @ rotation_y(p[0]) - R).max())
    assert abs(found[0] - azimuth) <= 5.0 and abs(found[1] - elevation) <= 5.0, found
    assert iou > 0.8
    # the rotation it started from covers the mask less well
    _, iou0 = fit_rotation(solid_points(solid, bound), R0, mask_grid(mask), (0,), (0,))
    assert iou0 < iou


def test_fit_rotation_keeps_the_start_when_it_is_right():
    solid, bound = _chair_like_solid(), 0.55
    R0 = rotation_x(20.0) @ rotation_y(-60.0)
    picture = _drawn_mask(solid, bound, R0, focal_mm=40.0, distance=FIT_DISTANCE, size=160)
    R, iou = fit_rotation(solid_points(solid, bound), R0, mask_grid(picture))
    assert np.allclose(R, R0) and iou > 0.8


def test_stretched_keeps_the_diagonal_and_the_printable_guarantee():
    from recon_core.mesh.printable import check_printable

    verts, faces = grid_surface(_chair_like_solid(), 0.55, smoothing=0.6, level=0.4)
    out = stretched(verts, np.array([1.33, 1.0, 0.75]))
    diag = lambda v: np.linalg.norm(np.ptp(v, axis=0))  # noqa: E731
    assert diag(out) == pytest.approx(diag(verts))
    ratio = np.ptp(out, axis=0) / np.ptp(verts, axis=0)
    np.testing.assert_allclose(ratio / ratio[1], [1.33, 1.0, 0.75])
    assert check_printable(verts, faces).ok and check_printable(out, faces).ok


@pytest.mark.parametrize("scale", [(1.33, 1.0, 0.87), (0.75, 1.0, 1.15), (1.0, 1.0, 1.0)])
def test_fit_proportions_recovers_the_pictures_stretch(scale):
    """A solid drawn stretched (by the evaluation's rasteriser, another camera): the fit finds the stretch of its
    width against its height; the depth, which a silhouette shows only where the view is oblique, within a step."""
    solid, bound = _chair_like_solid(), 0.55
    R = rotation_x(25.0) @ rotation_y(40.0)  # oblique: width and depth both show
    picture = _drawn_mask(solid, bound, R, focal_mm=42.0, distance=2.0, size=128, scale=scale)
    found, iou = fit_proportions(solid_points(solid, bound), R, mask_grid(picture))
    steps = np.log(FIT_STRETCHES)
    step = np.diff(steps).max()
    assert abs(np.log(found[0]) - np.log(scale[0])) < 0.5 * step + 1e-9, found
    assert abs(np.log(found[2]) - np.log(scale[2])) <= step + 1e-9, found
    assert found[1] == 1.0 and iou > 0.8
    # fit_pose searches the rotation too: it covers the stretched picture better than the unstretched solid does
    pose = fit_pose(solid_points(solid, bound), R, mask_grid(picture))
    _, unstretched = fit_rotation(solid_points(solid, bound), R, mask_grid(picture), (0,), (0,))
    assert pose.iou >= unstretched
    assert abs(np.log(pose.scale[0]) - np.log(scale[0])) <= step + 1e-9, pose.scale


# ------------------------------------------------------------------------------------ the picture-plane warp


def test_bilinear_equals_map_coordinates():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    images = rng.random((3, 17, 23))
    rows, cols = rng.uniform(-3.0, 20.0, (5, 7)), rng.uniform(-3.0, 26.0, (5, 7))  # some outside the grid
    rows[0, :3], cols[1, :3] = 16.0, 22.0  # on the last row and column exactly
    got = bilinear(images, rows, cols)
    for k in range(3):
        np.testing.assert_allclose(got[k], ndimage.map_coordinates(images[k], (rows, cols), order=1, mode="nearest"),
                                   rtol=0, atol=1e-12)


def test_signed_distance_equals_the_per_cell_reference():
    rng = np.random.default_rng(1)
    mask = np.zeros((14, 12), dtype=bool)
    mask[3:9, 2:7] = True
    mask[rng.random(mask.shape) < 0.1] = True
    inside, outside = np.argwhere(mask), np.argwhere(~mask)
    got = signed_distance(mask, clip=4.0)
    for (i, j), value in np.ndenumerate(got):
        others = outside if mask[i, j] else inside
        d = np.sqrt(((others - (i, j)) ** 2).sum(axis=1)).min()
        assert value == pytest.approx(np.clip(-d if mask[i, j] else d, -4.0, 4.0))


def _demons_reference(fixed, moving, iterations, sigma, fluid):
    """demons_field one image and one displacement component at a time, by scipy's map_coordinates and
    gaussian_filter."""
    from scipy import ndimage

    grad_r, grad_c = np.gradient(moving)
    rows, cols = np.mgrid[0:fixed.shape[0], 0:fixed.shape[1]].astype(np.float64)
    u = np.zeros((2, *fixed.shape))
    for _ in range(iterations):
        at = (rows + u[0], cols + u[1])
        m, gr, gc = (ndimage.map_coordinates(a, at, order=1, mode="nearest") for a in (moving, grad_r, grad_c))
        diff = m - fixed
        den = gr * gr + gc * gc + diff * diff + 1e-9
        for k, g in ((0, gr), (1, gc)):
            step = ndimage.gaussian_filter(-diff * g / den, fluid)
            u[k] = ndimage.gaussian_filter(u[k] + step, sigma)
    return u


def _demons_torch_plain(fixed, moving, iterations, sigma, fluid):
    """demons_field's float32 torch loop written plainly (new tensors each iteration), as it was before its buffers."""
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    h, w = fixed.shape

    def blur(s):
        return (torch.from_numpy(ndimage.gaussian_filter1d(np.eye(h), s, axis=0)).float(),
                torch.from_numpy(ndimage.gaussian_filter1d(np.eye(w), s, axis=0).T).float())

    smooth, smooth_step = blur(sigma), blur(fluid)
    images = torch.from_numpy(np.stack([moving, *np.gradient(moving)])).float()[None]
    target = torch.from_numpy(np.asarray(fixed, np.float64)).float()
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    u = torch.zeros(2, h, w)
    for _ in range(iterations):
        grid = torch.stack([(cols + u[1]) * (2.0 / (w - 1)) - 1.0, (rows + u[0]) * (2.0 / (h - 1)) - 1.0], -1)
        m, gr, gc = F.grid_sample(images, grid[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
        diff = m - target
        den = gr * gr + gc * gc + diff * diff + 1e-9
        step = smooth_step[0] @ torch.stack([-diff * gr / den, -diff * gc / den]) @ smooth_step[1]
        u = smooth[0] @ (u + step) @ smooth[1]
    return u.double().numpy()


def test_demons_field_is_its_plain_torch_loop_to_the_bit():
    fixed = signed_distance(_boxes(40, (6, 30, 10, 28)))
    moving = signed_distance(_boxes(40, (4, 34, 8, 31), (25, 38, 3, 10)))
    assert np.array_equal(demons_field(fixed, moving, 25, 2.0, 1.0), _demons_torch_plain(fixed, moving, 25, 2.0, 1.0))


def _boxes(size: int, *boxes) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def test_demons_field_equals_the_reference_and_draws_one_outline_onto_the_other():
    from scipy import ndimage

    fixed = signed_distance(_boxes(48, (10, 35, 15, 30)))
    moving = signed_distance(_boxes(48, (8, 40, 12, 36), (30, 44, 4, 12)))  # wider, taller, with a foot
    u = demons_field(fixed, moving, 40, 2.0, 1.0)
    # float32 against the float64 loop: the same field to a thousandth of a cell
    np.testing.assert_allclose(u, _demons_reference(fixed, moving, 40, 2.0, 1.0), rtol=0, atol=1e-3)
    rows, cols = np.mgrid[0:48, 0:48].astype(np.float64)
    pulled = ndimage.map_coordinates(moving, (rows + u[0], cols + u[1]), order=1, mode="nearest")
    assert np.abs(pulled - fixed).mean() < 0.5 * np.abs(moving - fixed).mean()


def _posed(solid, bound, R):
    verts, faces = grid_surface(solid, bound, smoothing=0.6, level=0.4)
    return verts @ R.T, faces, solid_points(solid, bound) @ R.T


def test_warp_to_mask_draws_the_outline_onto_a_different_shapes_and_stays_printable():
    """The chair-like solid warped onto the picture of a chair with a longer leg and a taller back (which no
    rotation or stretch gives): its silhouette covers the picture better, drawn by the evaluation's rasteriser
    through the fit's camera; the mesh keeps its faces, its bounding box's centre and diagonal, and its printable
    check."""
    from recon_core.mesh.printable import check_printable
    from training.scoring import silhouette

    solid, bound = _chair_like_solid(), 0.55
    other = solid.copy()
    other[6:10, 0:12, 6:10] = True    # the leg reaches lower
    other[6:26, 16:32, 22:26] = True  # the back is taller
    other[2:6, 12:16, 6:26] = True    # the seat is wider at -x
    R = rotation_x(20.0) @ rotation_y(35.0)
    picture = _drawn_mask(other, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    verts, faces, points = _posed(solid, bound, R)
    warped, before, after = warp_to_mask(verts, points, picture)
    assert after > before + 0.03, (before, after)
    diag = lambda v: np.linalg.norm(np.ptp(v, axis=0))  # noqa: E731
    centre = lambda v: 0.5 * (v.min(axis=0) + v.max(axis=0))  # noqa: E731
    assert diag(warped) == pytest.approx(diag(verts)) and np.allclose(centre(warped), centre(verts))
    assert check_printable(warped, faces).ok

    def drawn_iou(v):  # the mesh through a camera at the fit's distance, against the picture, each by its own box
        camera = Camera(R=np.eye(3), T=np.array([0.0, 0.0, FIT_DISTANCE]), K=intrinsics(40.0, 32.0, 128, 128),
                        width=128, height=128)
        a, b = mask_grid(silhouette(v @ VIEW_TO_OUTPUT.T, faces, camera), 96), mask_grid(picture, 96)
        return (a & b).sum() / (a | b).sum()

    assert drawn_iou(warped) > drawn_iou(verts) + 0.03


def test_warp_to_mask_leaves_a_solid_that_already_fits_nearly_as_it_was():
    solid, bound = _chair_like_solid(), 0.55
    R = rotation_x(25.0) @ rotation_y(-50.0)
    picture = _drawn_mask(solid, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    verts, faces, points = _posed(solid, bound, R)
    warped, before, after = warp_to_mask(verts, points, picture)
    assert before > 0.85 and after >= before
    diag = np.linalg.norm(np.ptp(verts, axis=0))
    moved = np.linalg.norm(warped - verts, axis=1)
    assert moved.max() < 0.04 * diag and moved.mean() < 0.015 * diag


def test_warp_to_mask_without_a_mask_or_iterations_changes_nothing():
    solid, bound = _chair_like_solid(), 0.55
    verts, _, points = _posed(solid, bound, rotation_y(30.0))
    picture = _drawn_mask(solid, bound, rotation_y(60.0), focal_mm=40.0, distance=FIT_DISTANCE)
    assert warp_to_mask(verts, points, np.zeros((64, 64)))[0] is verts
    assert warp_to_mask(verts, points, picture, iterations=0)[0] is verts


def test_the_shipped_model_draws_its_output_onto_the_examples_outline():
    """The shipped model on examples/chair.png: the output (bank_warp, the default) covers the picture's mask
    better than the same fitted solid without the warp (bank_warp 0), both drawn by the evaluation's rasteriser
    through the fit's camera and placed by their boxes; both printable, with the same diagonal."""
    import dataclasses
    from pathlib import Path

    from recon_core.io.image import load_image
    from recon_core.io.inference import Reconstructor
    from training.scoring import silhouette

    repo = Path(__file__).resolve().parents[1]
    rec = Reconstructor.from_file(repo / "models" / "default", finder=False)
    assert rec.model.config.bank_warp > 0
    # the warp alone (carving takes parts off, which moves a silhouette placed by its box)
    rec.model.config = dataclasses.replace(rec.model.config, bank_carve=False)
    rgb, alpha, _ = load_image(repo / "examples" / "chair.png")
    warped = rec.reconstruct(rgb, alpha)
    rec.model.config = dataclasses.replace(rec.model.config, bank_warp=0)
    plain = rec.reconstruct(rgb, alpha)
    camera = Camera(R=np.eye(3), T=np.array([0.0, 0.0, FIT_DISTANCE]), K=intrinsics(40.0, 32.0, 160, 160),
                    width=160, height=160)
    target = mask_grid(alpha / 255.0, 96)

    def iou(result):
        grid = mask_grid(silhouette(result.verts, result.faces, camera), 96)
        return (grid & target).sum() / (grid | target).sum()

    assert warped.report.ok and plain.report.ok
    assert iou(warped) > iou(plain) + 0.02, (iou(warped), iou(plain))
    diag = lambda v: np.linalg.norm(np.ptp(np.asarray(v), axis=0))  # noqa: E731
    assert diag(warped.verts) == pytest.approx(diag(plain.verts), rel=0.02)  # decimated apart: nearly the same


def _one_cell_reference(solid, bound, factors, R, warp, margin):
    """(R, R, R) bool: the cells whose centre, projected alone by the warp, lands more than ``margin`` cells from
    the mask or off its grid: a loop over cells."""
    res, h, size = solid.shape[0], 2.0 * bound / solid.shape[0], warp.outside.shape[0]
    far = np.zeros_like(solid)
    for i, j, k in np.argwhere(solid):
        p = ((-bound + (np.array([i, j, k]) + 0.5) * h) * factors) @ R.T
        row, col, _ = warp.grid_positions(p[None])
        r, c = float(row[0]), float(col[0])
        far[i, j, k] = not (0 <= r < size and 0 <= c < size) or warp.outside[math.floor(r), math.floor(c)] > margin
    return far


@pytest.mark.parametrize("seed", [0, 1])
def test_carve_to_mask_removes_exactly_the_cells_the_mask_shows_empty(seed):
    """The chair-like solid, posed and warped onto the picture of the same chair without its arm and with half
    its leg: every cell that a per-cell loop projects more than the margin outside the mask is removed, no cell
    inside it or within the margin is (but for splinters under CARVE_MIN_PART of the cells), and the seat stays."""
    from recon_core.mesh.silhouette import CARVE_MARGIN, CARVE_MIN_PART, carve_to_mask, fit_warp, stretch_factors

    solid, bound = _chair_like_solid(), 0.55
    picture_solid = solid.copy()
    picture_solid[22:26, 16:22, 6:22] = False  # no arm
    picture_solid[6:10, 2:7, 6:10] = False     # a shorter leg
    R = rotation_x(15.0 + 10 * seed) @ rotation_y(30.0 - 50 * seed)
    scale = np.array([1.0, 1.0, 1.0 + 0.15 * seed])
    picture = _drawn_mask(picture_solid, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    verts, _ = grid_surface(solid, bound, smoothing=0.6, level=0.4)
    factors = stretch_factors(verts, scale)
    warp = fit_warp((solid_points(solid, bound) * factors) @ R.T, picture)
    carved, share = carve_to_mask(solid, bound, factors, R, warp)
    far = _one_cell_reference(solid, bound, factors, R, warp, CARVE_MARGIN)
    assert 0 < share == pytest.approx(far.sum() / solid.sum())
    assert not (carved & far).any()  # every far cell went
    lost = solid & ~carved & ~far  # cells inside the mask (or its margin) that went: only splinters may
    assert lost.sum() < CARVE_MIN_PART * solid.sum() * 3
    assert carved[6:26, 12:16, 6:26].sum() > 0.9 * solid[6:26, 12:16, 6:26].sum()  # the seat stays


def test_carve_to_mask_opens_the_hole_a_picture_shows_and_the_mesh_stays_printable():
    """A block seen from the front, the picture a ring (the block with a square hole through it): the carved
    block has a tunnel (genus 1: Euler characteristic 0) and meshes closed, manifold and printable."""
    from recon_core.mesh.printable import check_printable
    from recon_core.mesh.silhouette import carve_to_mask, fit_warp

    bound, R = 0.55, np.eye(3)
    block = np.zeros((64, 64, 64), dtype=bool)  # fine enough for its points to splat a closed silhouette
    block[12:52, 12:52, 24:40] = True
    ring = block.copy()
    ring[24:40, 24:40, :] = False
    picture = _drawn_mask(ring, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    warp = fit_warp(solid_points(block, bound) @ R.T, picture)
    carved, share = carve_to_mask(block, bound, np.ones(3), R, warp)
    assert 0.05 < share < 0.3
    verts, faces = grid_surface(carved, bound, smoothing=0.6, level=0.4)
    edges = {tuple(e) for e in np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)}
    euler = len(verts) - len(edges) + len(faces)
    assert euler == 0
    assert check_printable(verts, faces).ok


def test_carve_to_mask_keeps_the_solid_when_the_fit_is_far_off():
    """A mask of something else (a thin bar): the warped silhouette's IoU is below CARVE_MIN_IOU, so nothing is
    carved; and were it not, more than CARVE_MAX_SHARE of the cells would go, so nothing is either."""
    import dataclasses

    from recon_core.mesh.silhouette import CARVE_MIN_IOU, carve_to_mask, fit_warp

    solid, bound = _chair_like_solid(), 0.55
    R = rotation_y(30.0)
    picture = np.zeros((128, 128))
    picture[60:64, 10:118] = 1.0  # a thin bar
    warp = fit_warp(solid_points(solid, bound) @ R.T, picture, iterations=0)
    assert warp.iou_after < CARVE_MIN_IOU
    carved, share = carve_to_mask(solid, bound, np.ones(3), R, warp)
    assert share == 0.0 and np.array_equal(carved, solid)
    carved, share = carve_to_mask(solid, bound, np.ones(3), R, dataclasses.replace(warp, iou_after=1.0))
    assert share == 0.0 and np.array_equal(carved, solid)


def test_mask_grid_above_samples_a_lower_level_in_the_same_place():
    """``above``: the cells sample the mask at that level, the box stays the pixels above 0.5 (per-cell loop)."""
    rng = np.random.default_rng(5)
    mask = np.clip(rng.random((70, 90)) * 1.4 - 0.2, 0.0, 1.0)
    mask[:10], mask[:, :15] = 0.0, 0.2  # a band that only a low level takes
    for above in (0.1, 0.3, 0.5):
        np.testing.assert_array_equal(mask_grid(mask, 40, 0.8, above), _mask_grid_reference(mask, 40, 0.8, above))
    assert mask_grid(mask, 40, 0.8, 0.1).sum() > mask_grid(mask, 40, 0.8).sum()


@pytest.mark.parametrize("hole, carved_through", [(0.05, True), (0.3, False)])
def test_carve_to_mask_does_not_carve_where_the_mask_is_unsure(hole, carved_through):
    """The ring picture of the block again, its hole at probability ``hole``: below CARVE_EMPTY (surely empty) the
    tunnel is carved; at 0.3 (the object finder unsure) nothing there is."""
    from recon_core.mesh.silhouette import CARVE_EMPTY, carve_to_mask, fit_warp

    assert 0.05 < CARVE_EMPTY < 0.3
    bound, R = 0.55, np.eye(3)
    block = np.zeros((64, 64, 64), dtype=bool)  # fine enough for its points to splat a closed silhouette
    block[12:52, 12:52, 24:40] = True
    ring = block.copy()
    ring[24:40, 24:40, :] = False
    picture = _drawn_mask(ring, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128).astype(float)
    full = _drawn_mask(block, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    picture[full & (picture < 0.5)] = hole
    warp = fit_warp(solid_points(block, bound) @ R.T, picture, iterations=0)
    carved, share = carve_to_mask(block, bound, np.ones(3), R, warp)
    assert (not carved[28:36, 28:36, :].any()) == carved_through
    assert (share > 0.05) == carved_through


def test_carve_to_mask_cuts_where_the_picture_shows_the_hole():
    """A block seen from the front, the picture with a hole off the centre and off the diagonal (world and view x
    30-44, y 16-26 of 64): the cut takes the cells behind that hole only (a row/column mix-up or a flip of the
    grids would cut elsewhere)."""
    from recon_core.mesh.silhouette import carve_to_mask, fit_warp

    bound, R = 0.55, np.eye(3)
    block = np.zeros((64, 64, 64), dtype=bool)
    block[12:52, 12:52, 24:40] = True  # world x, y, z; with R = I the view's x, y (down) and z
    holed = block.copy()
    holed[30:44, 16:26, :] = False
    picture = _drawn_mask(holed, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    warp = fit_warp(solid_points(block, bound) @ R.T, picture, iterations=0)  # the same box: grids aligned
    carved, share = carve_to_mask(block, bound, np.ones(3), R, warp)
    gone = np.argwhere(block & ~carved)
    assert 0.02 < share < 0.1
    behind = (gone[:, 0] >= 28) & (gone[:, 0] <= 45) & (gone[:, 1] >= 14) & (gone[:, 1] <= 27)
    assert behind.mean() > 0.98  # but a few of the block's corner cells (the drawn mesh cuts its corners)
    assert not carved[34:40, 19:23, 24:40].any()  # the hole goes through the whole depth (its core: perspective)
    assert carved[16:26, 30:44, 24:40].all() and carved[30:44, 38:48, 24:40].all()  # not transposed, not flipped


def test_carve_to_mask_keeps_a_small_part_the_cut_did_not_touch():
    """The holed block of the test above with a small cube in front of it (64 cells, a quarter of CARVE_MIN_PART of
    the solid, its own part): the cut through the block leaves the cube, which it did not touch; the share counts
    the cells that went."""
    from recon_core.mesh.silhouette import CARVE_MIN_PART, carve_to_mask, fit_warp

    bound, R = 0.55, np.eye(3)
    block = np.zeros((64, 64, 64), dtype=bool)
    block[12:52, 12:52, 24:40] = True
    block[16:20, 40:44, 14:18] = True  # the small cube, in front of the block, apart from it
    assert block[16:20, 40:44, 14:18].sum() < CARVE_MIN_PART * block.sum()
    holed = block.copy()
    holed[30:44, 16:26, 24:40] = False
    picture = _drawn_mask(holed, bound, R, focal_mm=40.0, distance=FIT_DISTANCE, size=128)
    warp = fit_warp(solid_points(block, bound) @ R.T, picture, iterations=0)
    carved, share = carve_to_mask(block, bound, np.ones(3), R, warp)
    assert 0.02 < share < 0.1 and share == pytest.approx(1.0 - carved.sum() / block.sum())
    assert carved[16:20, 40:44, 14:18].all()
    assert not carved[34:40, 19:23, 24:40].any()


def _l_shape() -> tuple[np.ndarray, np.ndarray]:
    """(verts, faces) of a closed L-shaped solid (a slab and an upright at one corner, meshed from cells), view
    frame, centred on its 3D box, diagonal 1: in most views its 2D box is off the origin's projection."""
    from recon_core.mesh.volume import grid_surface

    grid = np.zeros((24, 24, 24), dtype=bool)
    grid[2:22, 2:8, 2:22] = True  # a slab
    grid[2:8, 8:22, 2:10] = True  # an upright at one corner
    verts, faces = grid_surface(grid, smoothing=0.0, level=0.5)
    verts = verts - (verts.max(0) + verts.min(0)) / 2
    return verts / np.linalg.norm(np.ptp(verts, 0)), faces


def _picture_camera(size: int = 160) -> Camera:
    from recon_core.mesh.silhouette import FIT_DISTANCE

    return Camera(R=np.eye(3), T=np.array([0.0, 0.0, FIT_DISTANCE]), K=intrinsics(40.0, 32.0, size, size),
                  width=size, height=size)


def _box_centre(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0] + cols[-1] + 1, rows[0] + rows[-1] + 1]) / 2.0


@pytest.mark.parametrize("turn", [0, 35, 120])
def test_place_in_picture_puts_a_shifted_output_back_where_the_picture_shows_it(turn):
    from recon_core.mesh.silhouette import place_in_picture
    from training.scoring import silhouette

    verts, faces = _l_shape()
    verts = verts @ (rotation_x(-20) @ rotation_y(turn)).T
    cam = _picture_camera()
    mask = silhouette(verts @ VIEW_TO_OUTPUT.T, faces, cam)  # what a camera aimed at the object's centre sees
    assert not np.allclose(_box_centre(mask), cam.width / 2, atol=1.0)  # the box is off the picture's centre
    shifted = verts + np.array([0.09, -0.06, 0.0])  # the output, centred elsewhere than the truth
    placed, moved = place_in_picture(shifted, mask.astype(np.float32))
    assert moved
    np.testing.assert_allclose(placed - shifted, np.broadcast_to(placed[0] - shifted[0], placed.shape))  # a translation
    seen = silhouette(placed @ VIEW_TO_OUTPUT.T, faces, cam)
    np.testing.assert_allclose(_box_centre(seen), _box_centre(mask), atol=1.0)
    before = silhouette(shifted @ VIEW_TO_OUTPUT.T, faces, cam)
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(seen, mask) > 0.9 > iou(before, mask)


def test_place_in_picture_leaves_an_object_cut_by_the_border_or_off_centre():
    from recon_core.mesh.silhouette import FRAMED_OFFSET, place_in_picture

    verts, _ = _l_shape()
    mask = np.zeros((100, 100), np.float32)
    mask[0:40, 30:70] = 1.0  # touches the top border
    assert not place_in_picture(verts, mask)[1]
    mask[:] = 0.0
    mask[10:40, 10:40] = 1.0  # centre (25, 25): 25 px = 0.83 of the box's side from the picture's centre
    out, moved = place_in_picture(verts, mask)
    assert not moved and out is not None and np.array_equal(out, verts)
    mask[:] = 0.0
    side = 40
    off = int(FRAMED_OFFSET * side) - 1
    mask[30 + off:70 + off, 30:70] = 1.0  # just inside the framing limit
    assert place_in_picture(verts, mask)[1]


def test_to_diagonal_scales_about_the_box_centre_to_the_datas_frame():
    """A solid of bounding-box diagonal d, posed and moved, comes back with diagonal 1 (its pose's box diagonal
    divided by d), the same box centre, and every vertex on the same ray from it; a bad diagonal is refused."""
    from recon_core.mesh.silhouette import to_diagonal

    rng = np.random.default_rng(3)
    world = rng.uniform(-0.3, 0.4, size=(200, 3)) * np.array([1.0, 0.6, 0.8])
    d = float(np.linalg.norm(np.ptp(world, axis=0)))
    posed = world @ (rotation_x(-20) @ rotation_y(35)).T + np.array([0.05, -0.02, 0.1])
    out = to_diagonal(posed, d)
    centre = lambda v: 0.5 * (v.min(0) + v.max(0))  # noqa: E731
    np.testing.assert_allclose(centre(out), centre(posed), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.ptp(out, 0)), np.linalg.norm(np.ptp(posed, 0)) / d, rtol=1e-12)
    for i in range(0, 200, 37):  # a slow reference: each vertex's offset from the centre, shrunk by d
        np.testing.assert_allclose(out[i] - centre(posed), (posed[i] - centre(posed)) / d, atol=1e-12)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="diagonal"):
            to_diagonal(posed, bad)
