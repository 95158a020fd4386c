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


def _mask_grid_reference(mask: np.ndarray, size: int, fill: float) -> np.ndarray | None:
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
            out[i, j] = 0 <= u < m.shape[1] and 0 <= v < m.shape[0] and bool(m[v, u])
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
    from training.evaluate import silhouette

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
