"""Tests of training.styles (picture styles) and of their use in training.evaluate (--style, category scores).

The synthetic view is a shaded "roof": two planes meeting at a vertical ridge that points at
the camera, cut to a rectangle, so the picture has two flat shades, a crease down the middle and
a silhouette, with exact depth.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import trimesh
from PIL import Image

from recon_core.mesh.camera import look_at
from recon_core.network.categories import CATEGORIES
from training import evaluate as ev
from training import eval_data
from training import scoring
from training.augment import BackgroundPhotos
from training.styles import (
    CLIPART_COLOURS,
    OFFCENTRE_CANVAS,
    OFFCENTRE_FILL,
    SEEDLESS_STYLES,
    STYLES,
    normals_from_depth,
    object_lines,
    quantize_colours,
    stylize,
)

SIZE = 64
BOX = (14, 10, 50, 54)
"""(u0, v0, u1, v1) of the object's rectangle, exclusive end; the ridge is at u = 32."""
RIDGE = 32
LIGHT = np.array([0.6, -0.3, -0.75]) / np.linalg.norm([0.6, -0.3, -0.75])


def _view() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(rgba, mask, depth, K)`` of the roof, (SIZE, SIZE) pixels."""
    cam = look_at(30.0, 20.0, 2.0, width=SIZE, height=SIZE)
    K = cam.K
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=2)
    ridge_x = (RIDGE - K[0, 2]) / K[0, 0] * 2.0
    # Planes n . p = d through the ridge line (x = ridge_x, z = 2), sloping away at 50 degrees on each side.
    normals = [np.array([np.sin(a), 0.0, -np.cos(a)]) for a in np.radians([50.0, -50.0])]
    depths = [(n @ np.array([ridge_x, 0.0, 2.0])) / (rays @ n) for n in normals]
    depth = np.maximum(*depths)  # convex ridge: the farther plane is the visible one on each side
    mask = np.zeros((SIZE, SIZE), bool)
    mask[BOX[1]:BOX[3], BOX[0]:BOX[2]] = True
    depth = np.where(mask, depth, 0.0).astype(np.float32)
    side = np.where(depths[0] >= depths[1], 0, 1)
    shade = np.stack([0.55 + 0.45 * abs(n @ LIGHT) for n in normals])[side]  # (H, W) two light shades
    base = np.array([230.0, 170.0, 110.0])
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = np.where(mask[..., None], shade[..., None] * base, 0.0).astype(np.uint8)
    rgba[..., 3] = mask * np.uint8(255)
    return rgba, mask, depth, K


@pytest.fixture(scope="module")
def view():
    return _view()


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_the_synthetic_view_has_two_shades_and_a_crease(view):
    rgba, mask, depth, K = view
    assert len(np.unique(rgba[mask][:, :3], axis=0)) == 2
    silhouette, inner = object_lines(mask, depth, K)
    np.testing.assert_array_equal(silhouette, mask & ~_eroded(mask))
    cols = np.flatnonzero(inner.any(axis=0))
    assert inner.sum() >= BOX[3] - BOX[1] - 4 and set(cols) <= {RIDGE - 1, RIDGE, RIDGE + 1}


def _eroded(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:] & p[:-2, :-2] & p[
        :-2, 2:] & p[2:, :-2] & p[2:, 2:]


def test_object_lines_leave_out_the_picture_border():
    rgba, mask, depth, K = _view()
    left = RIDGE - 4
    cut = slice(None), slice(left, None)  # the object cut by the left border
    silhouette, inner = object_lines(mask[cut], depth[cut], K - np.array([[0, 0, left], [0, 0, 0], [0, 0, 0]]))
    assert not silhouette[BOX[1] + 1:BOX[3] - 1, 0].any() and not inner[:, 0].any()
    assert silhouette[BOX[1], :BOX[2] - left].all() and silhouette[BOX[1]:BOX[3], BOX[2] - 1 - left].all()


def test_normals_from_depth_of_a_plane():
    cam = look_at(0.0, 0.0, 2.0, width=40, height=30)
    K = cam.K
    n = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])  # faces the camera (n_z < 0)
    v, u = np.mgrid[0:30, 0:40].astype(np.float64) + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=2)
    depth = (n @ np.array([0.0, 0.0, 2.0])) / (rays @ n)  # the plane through (0, 0, 2)
    depth[:, :5] = 0.0  # off the object
    got = normals_from_depth(depth, K)
    np.testing.assert_allclose(got[:, 5:], np.broadcast_to(n, (30, 35, 3)), atol=1e-5)  # border pixels too
    assert not got[:, :5].any()


def _quantize_naive(colours: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = []
    for c in colours:
        out.append(int(np.argmin([((c - m) ** 2).sum() for m in centres])))
    return np.array(out)


def test_quantize_colours_assigns_nearest_centres_sorted_by_luminance():
    rng = np.random.default_rng(0)
    colours = np.concatenate([rng.normal(m, 6.0, (300, 3)) for m in ((30, 30, 30), (200, 40, 40), (240, 240, 200))])
    centres, labels = quantize_colours(np.clip(colours, 0, 255), 3, np.random.default_rng(1))
    assert centres.shape == (3, 3) and labels.shape == (900,)
    np.testing.assert_array_equal(labels, _quantize_naive(np.clip(colours, 0, 255).astype(np.float32), centres))
    assert np.all(np.diff(_luma(centres)) > 0)
    np.testing.assert_allclose(np.sort(_luma(centres)), sorted(_luma(np.array([[30, 30, 30], [200, 40, 40],
                                                                                [240, 240, 200]]))), atol=3.0)
    two, lab = quantize_colours(np.array([[0, 0, 0], [255, 255, 255]] * 5, float), 6, np.random.default_rng(0))
    assert len(two) == 2 and set(lab) == {0, 1}  # no more centres than distinct colours
    with pytest.raises(ValueError, match="non-empty"):
        quantize_colours(np.zeros((0, 3)), 3, np.random.default_rng(0))


@pytest.mark.parametrize("style", STYLES)
def test_each_style_gives_a_picture_of_the_right_shape(view, style):
    rgba, mask, depth, K = view
    rgb, alpha = stylize(rgba, mask, depth, K, style, seed=7)
    size = (round(OFFCENTRE_CANVAS * SIZE),) * 2 if style == "small_offcentre" else (SIZE, SIZE)
    assert rgb.shape == size + (3,) and rgb.dtype == np.uint8
    if style == "clean":
        np.testing.assert_array_equal(rgb, rgba[..., :3])
        np.testing.assert_array_equal(alpha, rgba[..., 3])
    else:
        assert alpha is None
    assert rgb.std() > 5  # not a blank picture


@pytest.mark.parametrize("style", STYLES)
def test_styles_are_deterministic_per_seed_and_seeded_ones_vary(view, style):
    rgba, mask, depth, K = view
    pictures = [stylize(rgba, mask, depth, K, style, seed)[0] for seed in range(6)]
    np.testing.assert_array_equal(stylize(rgba, mask, depth, K, style, 3)[0], pictures[3])
    distinct = len({p.tobytes() for p in pictures})
    if style in SEEDLESS_STYLES:
        assert distinct == 1
    else:
        assert distinct >= 4, distinct


def test_no_alpha_is_the_render_on_white(view):
    rgba, mask, depth, K = view
    rgb, _ = stylize(rgba, mask, depth, K, "no_alpha", 0)
    assert (rgb[~mask] == 255).all()
    np.testing.assert_array_equal(rgb[mask], rgba[mask][:, :3])


def test_jpeg_is_near_the_render_on_white(view):
    rgba, mask, depth, K = view
    white, _ = stylize(rgba, mask, depth, K, "no_alpha", 0)
    rgb, _ = stylize(rgba, mask, depth, K, "jpeg", 0)
    diff = np.abs(rgb.astype(int) - white)
    assert 0 < diff.mean() < 8


def test_background_uses_the_photographs_when_there_are_some(view, tmp_path):
    rgba, mask, depth, K = view
    Image.fromarray(np.full((80, 100, 3), (10, 200, 30), np.uint8)).save(tmp_path / "green.png")
    for photos in (tmp_path, BackgroundPhotos(tmp_path)):
        rgb, alpha = stylize(rgba, mask, depth, K, "background", 2, backgrounds=photos)
        assert alpha is None
        np.testing.assert_allclose(rgb[~mask].mean(axis=0), (10, 200, 30), atol=1.0)
        np.testing.assert_array_equal(rgb[mask], rgba[mask][:, :3])
    empty = tmp_path / "none"
    empty.mkdir()
    synthetic, _ = stylize(rgba, mask, depth, K, "background", 2, backgrounds=empty)
    np.testing.assert_array_equal(synthetic, stylize(rgba, mask, depth, K, "background", 2)[0])
    assert np.abs(synthetic[~mask].astype(int) - (10, 200, 30)).mean() > 5


def test_clipart_has_few_flat_colours_and_a_dark_outline(view):
    rgba, mask, depth, K = view
    for seed in range(4):
        rgb, _ = stylize(rgba, mask, depth, K, "clipart", seed)
        luma = _luma(rgb)
        inside = np.zeros_like(mask)
        inside[BOX[1] + 4:BOX[3] - 4, BOX[0] + 4:BOX[2] - 4] = True
        inside[:, RIDGE - 3:RIDGE + 3] = False  # away from the outline and the crease line
        assert len(np.unique(rgb[inside], axis=0)) <= CLIPART_COLOURS[1]
        edge = mask & ~_eroded(mask)
        assert np.mean(luma[edge] < 100) > 0.9 and luma[edge].mean() < 70
        assert luma[BOX[1] + 5:BOX[3] - 5, RIDGE - 1:RIDGE + 1].min(axis=1).max() < 100  # the crease is drawn
        assert luma[inside].min() > 100  # the faces are not
        far = np.ones_like(mask)
        far[BOX[1] - 4:BOX[3] + 4, BOX[0] - 4:BOX[2] + 4] = False
        assert (rgb[far] == 255).all()


def test_pencil_is_grey_strokes_on_paper(view):
    rgba, mask, depth, K = view
    for seed in range(4):
        rgb, _ = stylize(rgba, mask, depth, K, "pencil", seed)
        spread = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
        assert spread.mean() < 12  # greyish: the paper's tint and the graphite's
        luma = _luma(rgb)
        near = np.zeros_like(mask)
        near[BOX[1] - 1:BOX[3] + 1, BOX[0] - 1:BOX[2] + 1] = True
        near &= ~_eroded(_eroded(mask))  # within about two pixels of the silhouette
        far = np.ones_like(mask)
        far[BOX[1] - 8:BOX[3] + 8, BOX[0] - 8:BOX[2] + 8] = False
        assert luma[far].mean() - luma[near].mean() > 15  # strokes along the silhouette
        assert luma[near].std() > 8  # of varying darkness, broken in places


def test_small_offcentre_places_a_small_object_off_centre(view):
    rgba, mask, depth, K = view
    side = round(OFFCENTRE_CANVAS * SIZE)
    centres = []
    for seed in range(6):
        rgb, _ = stylize(rgba, mask, depth, K, "small_offcentre", seed)
        ink = (rgb < 250).any(axis=2)
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        long_side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert OFFCENTRE_FILL[0] * side - 2 <= long_side <= OFFCENTRE_FILL[1] * side + 2
        centre = np.array([(rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2])
        assert np.abs(centre - side / 2).max() > 0.1 * side
        centres.append(tuple(centre))
    assert len(set(centres)) == 6


def test_bad_inputs_raise_clear_errors(view):
    rgba, mask, depth, K = view
    with pytest.raises(ValueError, match="Unknown picture style 'watercolour'") as err:
        stylize(rgba, mask, depth, K, "watercolour", 0)
    assert all(name in str(err.value) for name in STYLES)
    with pytest.raises(ValueError, match=r"rgba must be a \(H, W, 4\) uint8"):
        stylize(rgba[..., :3], mask, depth, K, "jpeg", 0)
    with pytest.raises(ValueError, match="mask must be a"):
        stylize(rgba, mask[:-1], depth, K, "jpeg", 0)
    with pytest.raises(ValueError, match="depth must be a"):
        stylize(rgba, mask, depth[:, :-1], K, "jpeg", 0)
    with pytest.raises(ValueError, match="K must be"):
        stylize(rgba, mask, depth, K[:2], "jpeg", 0)
    with pytest.raises(ValueError, match="mask is empty"):
        stylize(rgba, np.zeros_like(mask), depth, K, "clipart", 0)


# ------------------------------------------------------------------------------------------ evaluation


def _ece_naive(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Bin by bin, sample by sample: sum over bins of (n_b / N) |accuracy_b - mean confidence_b|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for b in range(bins):
        members = []
        for p, y in zip(probs, labels):
            conf = max(p)
            if (edges[b] < conf <= edges[b + 1]) or (b == 0 and conf == 0.0):
                members.append((conf, float(int(np.argmax(p)) == int(y))))
        if members:
            acc = sum(m[1] for m in members) / len(members)
            conf = sum(m[0] for m in members) / len(members)
            total += len(members) / len(probs) * abs(acc - conf)
    return total


def test_expected_calibration_error_matches_naive():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, c = int(rng.integers(1, 60)), int(rng.integers(2, 14))
        logits = rng.normal(0.0, float(rng.uniform(0.1, 4.0)), (n, c))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        labels = rng.integers(0, c, n)
        assert scoring.expected_calibration_error(probs, labels) == pytest.approx(_ece_naive(probs, labels), abs=1e-12)
    edges = np.array([[0.3, 0.7], [0.7, 0.3], [0.5, 0.5], [1.0, 0.0], [0.6, 0.4]])  # confidences on bin edges
    labels = np.array([1, 0, 1, 0, 1])
    assert scoring.expected_calibration_error(edges, labels) == pytest.approx(_ece_naive(edges, labels), abs=1e-12)
    assert scoring.expected_calibration_error(np.eye(3), np.arange(3)) == 0.0  # certain and right
    assert scoring.expected_calibration_error(np.eye(3), np.array([1, 2, 0])) == 1.0  # certain and wrong
    with pytest.raises(ValueError, match=r"probs must be \(N, C\)"):
        scoring.expected_calibration_error(np.zeros((0, 3)), np.zeros(0))


def _record(synset: str, predicted: str, probs: np.ndarray | None) -> dict:
    m = {k: 0.5 for k in scoring.METRICS}
    return {"synset": synset, "category": eval_data.category_name(synset), "printable": True,
            "predicted_category": predicted, "category_probs": None if probs is None else probs.tolist(),
            "metrics": {"ours": m, "sphere": m}}


def test_summarize_scores_our_category_predictions():
    chair, table = CATEGORIES[4], CATEGORIES[10]
    held_out = next(iter(ev.HELD_OUT_SYNSETS))
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(13), 5)
    records = [
        _record(chair.synset, "chair", probs[0]), _record(chair.synset, "table", probs[1]),
        _record(chair.synset, "chair", probs[2]), _record(table.synset, "table", probs[3]),
        _record(held_out, "chair", probs[4]),  # not one of the 13: in no category score
    ]
    s = scoring.summarize(records, ("ours", "sphere"))
    cats = s["per_category"]
    assert cats["chair"]["methods"]["ours"]["CategoryAccuracy"] == pytest.approx(2 / 3)
    assert cats["table"]["methods"]["ours"]["CategoryAccuracy"] == 1.0
    assert np.isnan(cats[eval_data.category_name(held_out)]["methods"]["ours"]["CategoryAccuracy"])
    assert s["all"]["methods"]["ours"]["CategoryAccuracy"] == pytest.approx(3 / 4)
    assert s["mean"]["methods"]["ours"]["CategoryAccuracy"] == pytest.approx((2 / 3 + 1) / 2)
    labels = [CATEGORIES.index(chair)] * 3 + [CATEGORIES.index(table)]
    assert s["all"]["methods"]["ours"]["CategoryECE"] == pytest.approx(_ece_naive(probs[:4], np.array(labels)))
    assert "CategoryAccuracy" not in s["all"]["methods"]["sphere"]
    table_md = scoring.format_table(s, ("ours", "sphere"))
    assert "category ↑" in table_md and "ECE ↓" in table_md
    all_row = next(line for line in table_md.splitlines() if line.startswith("| **all**"))
    assert "| 75% |" in all_row
    ece = 100 * s["all"]["methods"]["ours"]["CategoryECE"]
    assert all_row.rstrip(" |").endswith(f"{ece:.1f}")
    s = scoring.summarize([_record(held_out, "chair", probs[0])], ("ours",))
    assert np.isnan(s["all"]["methods"]["ours"]["CategoryAccuracy"])
    assert np.isnan(s["all"]["methods"]["ours"]["CategoryECE"])


def test_evaluate_parses_style_and_names_every_style():
    args = ev._parser().parse_args(["--style", "clipart"])
    assert args.style == "clipart" and ev._parser().parse_args([]).style == "clean"
    with pytest.raises(SystemExit):
        ev._parser().parse_args(["--style", "oil"])
    assert set(ev.STYLE_NOTES) == set(STYLES)


def _write_view(root, with_depth: bool = True) -> eval_data.ModelEntry:
    """One model (a box mesh) with the synthetic view as ``000``, laid out as training/render.py writes it."""
    rgba, mask, depth, K = _view()
    cam = look_at(30.0, 20.0, 2.0, width=SIZE, height=SIZE)
    folder = root / "renders" / CATEGORIES[4].synset / "roof"
    folder.mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(folder / "000.png")
    Image.fromarray(mask * np.uint8(255), "L").save(folder / "000_mask.png")
    if with_depth:
        np.save(folder / "000_depth.npy", depth.astype(np.float16))
    (folder / "000.json").write_text(json.dumps({**cam.to_json(), "sketch": False}))
    mesh_path = root / "roof.obj"
    box = trimesh.creation.box([0.5, 0.6, 0.4])
    box.export(mesh_path)
    return eval_data.ModelEntry("roof", CATEGORIES[4].synset, "val", mesh_path, folder, ("000",))


def test_load_input_redraws_the_view_with_the_sample_seed(tmp_path):
    entry = _write_view(tmp_path)
    rgba, mask, depth, K = _view()
    sample = eval_data.Sample(entry, "000", seed=5)
    rgb, alpha, cam, got_mask = eval_data.load_input(sample, "clean")
    np.testing.assert_array_equal(rgb, rgba[..., :3])
    np.testing.assert_array_equal(alpha, rgba[..., 3])
    for style in ("clipart", "small_offcentre"):
        rgb, alpha, cam, got_mask = eval_data.load_input(sample, style)
        depth16 = depth.astype(np.float16).astype(np.float32)  # as stored
        want, _ = stylize(rgba, mask, depth16, cam.K, style, 5)
        np.testing.assert_array_equal(rgb, want)
        assert alpha is None and got_mask.shape == (SIZE, SIZE)  # the render's own mask, for every style
        np.testing.assert_array_equal(got_mask, mask)
        assert not np.array_equal(rgb, eval_data.load_input(eval_data.Sample(entry, "000", seed=6), style)[0])
    no_depth = _write_view(tmp_path / "other", with_depth=False)
    with pytest.raises(eval_data.DataError, match="000_depth.npy is missing"):
        eval_data.load_input(eval_data.Sample(no_depth, "000", 0), "pencil")
    assert eval_data.load_input(eval_data.Sample(no_depth, "000", 0), "clean")[1] is not None  # clean needs no depth


def test_given_mask_is_the_renders_mask_as_alpha_on_the_styled_picture(tmp_path):
    """--given-mask: the same styled picture, its alpha the render's own mask; not where the picture moved."""
    entry = _write_view(tmp_path)
    _, mask, _, _ = _view()
    sample = eval_data.Sample(entry, "000", seed=5)
    for style in ("clean", "pencil", "background"):
        rgb, alpha, _, got_mask = eval_data.load_input(sample, style, given_mask=True)
        np.testing.assert_array_equal(rgb, eval_data.load_input(sample, style)[0])
        np.testing.assert_array_equal(alpha, mask.astype(np.uint8) * 255)
        np.testing.assert_array_equal(got_mask, mask)
    with pytest.raises(eval_data.DataError, match="not in the render's pixels"):
        eval_data.load_input(sample, "small_offcentre", given_mask=True)
    assert ev._parser().parse_args(["--given-mask"]).given_mask and not ev._parser().parse_args([]).given_mask


def test_given_mask_on_small_offcentre_is_refused_before_anything_loads(tmp_path, capsys):
    code = ev.main(["--style", "small_offcentre", "--given-mask", "--shapenet", str(tmp_path / "none"),
                    "--renders", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "not in the render's pixels" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_evaluate_samples_hands_every_method_the_styled_picture(tmp_path, monkeypatch):
    entry = _write_view(tmp_path)
    sample = eval_data.Sample(entry, "000", seed=2)
    want, _, _, _ = eval_data.load_input(sample, "pencil")
    seen = []

    def reconstruct(rgb, alpha):
        seen.append((rgb, alpha))
        box = trimesh.creation.box([0.5, 0.6, 0.4])
        probs = np.full(13, 0.01)
        probs[4] = 1.0 - 0.12
        return types.SimpleNamespace(verts=np.asarray(box.vertices), faces=np.asarray(box.faces), category="chair",
                                     category_probs=probs, report=types.SimpleNamespace(ok=True))

    sphere_inputs = []
    real_sphere = ev.sphere_baseline
    monkeypatch.setattr(ev, "sphere_baseline", lambda rgb, alpha: sphere_inputs.append((rgb, alpha))
                        or real_sphere(rgb, alpha))
    result = ev.evaluate_samples([sample], reconstruct, None, {}, num_samples=300, sheet_count=1, tile=32,
                                 methods=("ours", "sphere"), progress=False, style="pencil")
    (rgb, alpha), = seen
    np.testing.assert_array_equal(rgb, want)
    assert alpha is None and sphere_inputs[0][1] is None
    np.testing.assert_array_equal(sphere_inputs[0][0], want)
    rec, = result.records
    assert rec["style"] == "pencil" and rec["predicted_category"] == "chair"
    assert rec["category_probs"][4] == pytest.approx(0.88)
    assert 0.0 <= rec["metrics"]["ours"]["Sil-IoU"] <= 1.0
    s = scoring.summarize(result.records, ("ours", "sphere"))
    assert s["all"]["methods"]["ours"]["CategoryAccuracy"] == 1.0
    assert s["all"]["methods"]["ours"]["CategoryECE"] == pytest.approx(0.12)


def test_style_sheet_has_a_column_per_style(tmp_path):
    from training.make_style_sheets import HEADER, main, style_sheet

    entry = _write_view(tmp_path)
    sheet = style_sheet([eval_data.Sample(entry, "000", 1)] * 2, tile=32)
    assert sheet.size == (len(STYLES) * 32, HEADER + 2 * 32)
    pixels = np.asarray(sheet)
    first_row = pixels[HEADER:HEADER + 32]
    assert len(np.unique(first_row[:, :32].reshape(-1, 3), axis=0)) > 3  # clean: the object over a checkerboard
    for j, style in enumerate(STYLES[1:], start=1):
        assert first_row[:, j * 32:(j + 1) * 32].std() > 5, style
    assert main(["--shapenet", str(tmp_path / "nowhere"), "--renders", str(tmp_path), "--out",
                 str(tmp_path / "s.png")]) == 2
