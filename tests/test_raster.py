"""The numpy rasteriser and shaded view of recon_core.mesh.render, against per-pixel loops."""

import numpy as np
import trimesh

from recon_core.mesh.render import THREE_QUARTER_VIEW, rasterize, render_mesh


def _rasterize_naive(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel, per-face loop twin of :func:`recon_core.mesh.render.rasterize`."""
    out = np.full((size, size), -1)
    best = np.full((size, size), np.inf)
    for i in range(size):
        for j in range(size):
            p = np.array([j + 0.5, i + 0.5])
            for f, (ia, ib, ic) in enumerate(faces):
                a, b, c = xy[ia], xy[ib], xy[ic]
                area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
                if abs(area) <= 1e-12:
                    continue
                w0 = ((b[0] - p[0]) * (c[1] - p[1]) - (b[1] - p[1]) * (c[0] - p[0])) / area
                w1 = ((c[0] - p[0]) * (a[1] - p[1]) - (c[1] - p[1]) * (a[0] - p[0])) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) >= 0:
                    z = w0 * depth[ia] + w1 * depth[ib] + w2 * depth[ic]
                    if z < best[i, j]:
                        best[i, j], out[i, j] = z, f
    return out


def test_rasterize_matches_naive():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-2, 14, size=(12, 2))
    depth = rng.uniform(1, 2, size=12)
    faces = np.array([rng.choice(12, 3, replace=False) for _ in range(10)])
    np.testing.assert_array_equal(rasterize(xy, depth, faces, 12), _rasterize_naive(xy, depth, faces, 12))


def test_render_mesh_colours_each_pixel_by_its_nearest_face():
    """Every pixel of the shaded view is white or its nearest face's base colour times that face's shade, the faces
    the naive rasteriser finds (the view's own projection, 0.95 of the half-diagonal to the edge); per-face colours
    replace the one colour."""
    box = trimesh.creation.box((1.0, 0.6, 0.8))
    verts, faces = np.asarray(box.vertices), np.asarray(box.faces)
    colours = np.random.default_rng(1).integers(0, 255, size=(len(faces), 3))
    picture = render_mesh(verts, faces, 24, face_colours=colours)
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    p = (verts - centre) @ THREE_QUARTER_VIEW.T * (0.95 / (np.linalg.norm(np.ptp(verts, axis=0)) / 2))
    xy = np.stack([(p[:, 0] + 1) / 2 * 24, (1 - p[:, 1]) / 2 * 24], axis=1)
    nearest = _rasterize_naive(xy, -p[:, 2], faces, 24)
    tri = p[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    light = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])
    shade = 0.25 + 0.75 * np.abs(normals @ light)
    want = np.where((nearest >= 0)[..., None], shade[nearest][..., None] * colours[nearest], 255.0)
    np.testing.assert_array_equal(picture, np.clip(want + 0.5, 0, 255).astype(np.uint8))
    assert len(np.unique(nearest[nearest >= 0])) >= 3, "several faces seen: the colours can fail"
    grey = render_mesh(verts, faces, 24)
    assert set(map(tuple, grey[nearest >= 0])) <= {tuple(np.clip(s * 160 + 0.5, 0, 255).astype(np.uint8).repeat(3))
                                                   for s in shade}


def test_the_preview_averages_a_picture_it_shrinks():
    """A picture shown at under its size is reduced by whole blocks before the bilinear step: stripes one pixel black
    in three, shrunk 3.9 times, come out as their mean grey (170), not as stripes that alias or vanish."""
    from recon_core.io.preview import _shown

    rgb = np.full((1248, 1248, 3), 255, np.uint8)
    rgb[:, ::3] = 0
    tile = _shown(rgb, None, (0.0, 0.0, 1248.0), 320)
    assert abs(tile.mean() - 170) < 3 and tile[10:-10, 10:-10].std() < 5


def test_caption_numbers_are_never_in_scientific_notation():
    from recon_core.io.preview import _number

    values = (999.4, 999.6, 1180.2, 99999.0, 123456.7, 30.35, 40.0, 0.655, 0.01, 0.00123, 1.2e-05, 0.0)
    assert [_number(v) for v in values] == [  # as the printable report writes them: "1,180" (it wrote "1180")
        "999.4", "1,000", "1,180", "99,999", "123,457", "30.35", "40", "0.655", "0.01", "0.00123", "under 0.0001", "0"]


def test_the_caption_says_what_the_colours_mean():
    """The preview's caption: how likely, in words, only among several candidates (a share, "25%", read as a poor
    result); the size width x depth x height, as the report and the add-on say it; thin walls red, none to note, or not
    checked without a height; the mask's outline where there is no camera."""
    from types import SimpleNamespace

    from recon_core.io.preview import _caption

    def result(thin=None, camera=object(), ok=True):
        return SimpleNamespace(category="chair", confidence=0.25, likelihood="about as likely", verts=np.array([[0, 0, 0], [30.35, 40, 29.83]]),
                               report=SimpleNamespace(ok=ok, finite=True), thin_faces=thin, camera=camera)

    assert _caption(result(np.array([1, 2])), "c_1.stl", True, ranked=True) == (
        "c_1.stl: chair, about as likely as the likeliest", "30.35 x 29.83 x 40 mm, printable",
        "Red: walls under 0.8 mm, weak in print")
    assert _caption(result(), "c.stl", True) == ("c.stl: chair", "30.35 x 29.83 x 40 mm, printable",
                                                 "No thin walls to note")
    assert _caption(result(camera=None, ok=False), "c.stl", False) == (
        "c.stl: chair", "30.35 x 29.83 x 40 (the data's units), NOT printable",
        "Thin walls not checked (no height given); the outline is the object mask's (no picture camera)")
