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
    result); the size width x depth x height, as the report and the add-on say it; thin walls red with the share of
    the surface they cover, none to note, or not checked without a height; a line to check the outline when the
    object finder was unsure of it."""
    from types import SimpleNamespace

    import trimesh

    from recon_core.io.preview import _caption

    box = trimesh.creation.box([30.35, 40.0, 29.83])  # x, y (up), z: width 30.35, depth 29.83, height 40

    def result(thin=None, camera=object(), ok=True, unsure=False):
        return SimpleNamespace(category="chair", confidence=0.25, likelihood="about as likely", verts=box.vertices,
                               faces=box.faces, report=SimpleNamespace(ok=ok, finite=True), thin_faces=thin,
                               thin_share=None if thin is None else 0.18, camera=camera, mask_unsure=unsure)

    side = np.array([0, 1])
    assert _caption(result(side), "c_1.stl", True, ranked=True) == (
        "c_1.stl: chair, about as likely as the likeliest", "30.35 x 29.83 x 40 mm, printable",
        "Red: walls under 0.8 mm, 18% of the surface, weak in print")
    assert _caption(result(), "c.stl", True) == ("c.stl: chair", "30.35 x 29.83 x 40 mm, printable",
                                                 "No thin walls to note")
    assert _caption(result(camera=None, ok=False, unsure=True), "c.stl", False) == (
        "c.stl: chair", "30.35 x 29.83 x 40 (the data's units), NOT printable",
        "Thin walls not checked (no height given)",
        "The object finder was unsure of the object: check its dashed outline")


def test_outlines_of_any_width_against_a_distance_reference():
    """``_outline(covered, width)``: the covered pixels within ``width`` 4-neighbour steps of an uncovered one (or of
    the border), against the distance to each uncovered pixel measured one by one."""
    from recon_core.io.preview import _outline

    rng = np.random.default_rng(3)
    covered = np.zeros((24, 30), bool)
    covered[3:20, 4:26] = True
    covered[8:12, 10:14] = False  # a hole
    covered |= rng.random(covered.shape) < 0.05
    padded = np.pad(covered, 1, constant_values=False)
    empty = np.argwhere(~padded) - 1  # the uncovered pixels and a ring beyond the border
    for width in (1, 2, 3):
        expected = np.zeros_like(covered)
        for r, c in np.argwhere(covered):
            expected[r, c] = np.abs(empty - (r, c)).sum(axis=1).min() <= width
        assert np.array_equal(_outline(covered, width), expected), width


def test_a_small_object_gets_the_whole_picture_inset_with_the_part_shown_framed():
    """The finder took a 6-pixel blob of a busy photo: the tile, zoomed on it, showed nothing of where it was. A tile
    showing under half the picture's longer side has the whole picture in its corner, the part shown framed black
    outside and white inside; a tile showing most of the picture has none."""
    from types import SimpleNamespace

    from PIL import Image

    from recon_core.io.preview import INSET, TILE, _shown, _window, picture_tile

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    mask = np.zeros((300, 400), np.float32)
    mask[200:230, 300:330] = 1.0  # small, far from the corner
    tile = picture_tile(rgb, SimpleNamespace(mask=mask, camera=None), TILE)
    window = _window((400, 300), [(300.0, 200.0, 330.0, 230.0)])
    side = round(INSET * TILE)  # the picture's longer side: 400 -> 96 pixels
    small = np.asarray(Image.fromarray(rgb).resize((side, round(300 * side / 400)), Image.BOX))
    inset = tile[4:4 + small.shape[0], 4:4 + small.shape[1]].astype(int)
    framed = np.zeros(small.shape[:2], bool)  # where the window's frame is drawn over the inset
    scale = side / 400
    c0, r0 = int(np.floor(window[0] * scale)), int(np.floor(window[1] * scale))
    c1, r1 = int(np.ceil((window[0] + window[2]) * scale)), int(np.ceil((window[1] + window[2]) * scale))
    framed[r0:r1 + 1, c0:c1 + 1] = True
    assert np.abs(inset[~framed] - small[~framed]).max() <= 1
    assert (tile[4 + r0, 4 + c0] == 0).all() and (tile[4 + r0 + 1, 4 + c0 + 1] == 255).all()
    plain = np.clip(_shown(rgb, None, window, TILE) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(tile[TILE // 2:, TILE // 2:][:20, :20], plain[TILE // 2:, TILE // 2:][:20, :20])
    mask[:] = 0
    mask[20:280, 30:370] = 1.0  # most of the picture: no inset
    tile = picture_tile(rgb, SimpleNamespace(mask=mask, camera=None), TILE)
    window = _window((400, 300), [(30.0, 20.0, 370.0, 280.0)])
    plain = np.clip(_shown(rgb, None, window, TILE) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(tile[:30, :30], plain[:30, :30])  # the mask's outline starts at about 37


def test_the_legend_names_only_the_marks_the_rows_show():
    from recon_core.io.preview import MASK_DASHES, OUTLINE_COLOUR, THIN_COLOUR, _legend

    class Recorder:
        def __init__(self):
            self.words, self.fills = [], []

        def rectangle(self, box, fill):
            self.fills.append(tuple(fill))

        def text(self, at, words, fill, font):
            self.words.append(words)

        def textlength(self, words, font):
            return 6.0 * len(words)

    full = Recorder()
    _legend(full, None, cameras=True, masks=True, thin=True)
    assert full.words == ["the mesh on the picture", "its outline", "the object's outline", "walls under 0.8 mm"]
    assert {OUTLINE_COLOUR, THIN_COLOUR, *MASK_DASHES} <= set(full.fills)
    bare = Recorder()
    _legend(bare, None, cameras=False, masks=True, thin=False)
    assert bare.words == ["the object's outline"] and OUTLINE_COLOUR not in bare.fills


def test_the_mask_outline_is_dashed_along_edges_in_every_direction():
    """Dashes set by a pixel's place (its rows + columns) left one diagonal of a diamond all yellow and the other all
    black; set by the distance along the line, each edge of a diamond and of a square has both colours, and dashes
    about DASH pixels long."""
    from recon_core.io.preview import DASH, MASK_DASHES, _dashed, _outline

    yy, xx = np.mgrid[:120, :120]
    for shape in (np.abs(yy - 60) + np.abs(xx - 60) <= 40, (np.abs(yy - 60) <= 35) & (np.abs(xx - 60) <= 35)):
        canvas = np.full((120, 120, 3), 128.0)
        line = _outline(shape, 2)
        _dashed(canvas, line)
        black = (canvas == MASK_DASHES[0]).all(axis=2)
        yellow = (canvas == MASK_DASHES[1]).all(axis=2)
        assert np.array_equal(black | yellow, line)
        for quarter in ((yy < 55) & (xx < 55), (yy < 55) & (xx > 65), (yy > 65) & (xx < 55), (yy > 65) & (xx > 65)):
            if (line & quarter).sum() > 4 * DASH:
                assert (black & quarter).sum() > 0.25 * (line & quarter).sum()
                assert (yellow & quarter).sum() > 0.25 * (line & quarter).sum()


def test_the_inset_takes_the_corner_clear_of_the_object():
    from recon_core.io.preview import INSET, TILE, _inset

    rgb = np.full((100, 200, 3), 90, np.uint8)
    canvas = np.full((TILE, TILE, 3), 255.0)
    shown = np.zeros((TILE, TILE), bool)
    shown[:TILE // 2, :TILE // 2] = shown[:TILE // 2, TILE // 2:] = True  # the top half taken
    shown[TILE // 2:, :TILE // 2] = True  # and the bottom left
    _inset(canvas, rgb, None, (50.0, 20.0, 60.0), shown)
    width, height = round(INSET * TILE), round(INSET * TILE / 2)  # the picture is twice as wide as it is tall
    changed = (canvas != 255).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (TILE - 5 - height, TILE - 4, TILE - 5 - width, TILE - 4)
    assert (canvas[TILE - 5 - height, TILE - 5 - width:TILE - 3] == 90).all(), "its frame"


def test_the_checkerboard_keeps_its_squares_in_the_tile_whatever_the_zoom():
    """A small cut-out in a large picture: the tile zooms on it, and a checkerboard drawn in the picture's pixels grew
    with the zoom (40-pixel squares behind a white object, which showed it as nothing again)."""
    from recon_core.io.preview import CHECKER, CHECKER_SQUARE, TILE, _shown

    rgb = np.full((900, 900, 3), 255, np.uint8)
    alpha = np.zeros((900, 900), np.uint8)
    alpha[400:460, 400:460] = 255  # a white object
    tile = _shown(rgb, alpha, (380.0, 380.0, 100.0), TILE)
    row = tile[2, :, 0]
    assert set(np.round(row[: 4 * CHECKER_SQUARE]).astype(int)) == set(CHECKER)
    light = np.round(row) == CHECKER[0]
    assert light[:CHECKER_SQUARE].all() and not light[CHECKER_SQUARE:2 * CHECKER_SQUARE].any()
