"""The object finder (recon_core.network.finder) and its training pictures (training/train_finder.py).

The finder's logic is tested with a *colour finder*: an :class:`ObjectFinder` whose output
layer is replaced so that it says "object" exactly where the picture is red. Its answers are
then known, so the two looks, the letterbox and the Reconstructor's use of them can be checked
against plain references.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recon_core.io.image import ImageError
from recon_core.io.inference import Reconstructor
from recon_core.io.weights import load_finder, save_finder
from recon_core.io.weights import WeightsError
from recon_core.network.finder import (MIN_OBJECT_SHARE, UNSURE_MASK, FinderConfig, ObjectFinder, find_object, letterbox,
                                      mask_confidence)

RED = np.array([220, 30, 30], np.uint8)


class _ColourFinder(ObjectFinder):
    """Logit ``+logit`` where the input pixel is red (r - g > 0.4), -20 elsewhere."""

    def __init__(self, logit: float = 20.0):
        super().__init__(FinderConfig(channels=(4, 4), size=32))
        self.calls: list[tuple[int, ...]] = []
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return torch.where(x[:, :1] - x[:, 1:2] > 0.4, self.logit, -20.0)


def _picture(h=120, w=200, box=(150, 20, 170, 44), background=(240, 240, 235)) -> np.ndarray:
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = background
    u0, v0, u1, v1 = box
    rgb[v0:v1, u0:u1] = RED
    return rgb


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_letterbox_fits_the_longer_side_and_repeats_the_edge():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 60, 3), dtype=np.uint8)
    image, scale, (h, w) = letterbox(rgb, 32)
    assert image.shape == (3, 32, 32) and scale == pytest.approx(32 / 60) and (h, w) == (16, 32)
    resized = np.asarray(Image.fromarray(rgb).resize((32, 16), Image.Resampling.BILINEAR, reducing_gap=2.0))
    got = (image.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    assert np.array_equal(got[:16], resized)
    for row in range(16, 32):  # the padding repeats the last row
        assert np.array_equal(got[row], resized[-1])


def test_a_small_object_is_found_by_the_second_look():
    net = _ColourFinder()
    rgb = _picture(box=(151, 21, 163, 35))  # 2 x 2 pixels of the first look's 32 x 32
    prob = find_object(net, rgb)
    assert len(net.calls) == 2  # the whole picture, then a square around the object
    truth = np.all(rgb == RED, axis=2)
    assert prob.shape == truth.shape and prob.dtype == np.float32
    assert _iou(prob > 0.5, truth) >= 0.85
    first = np.zeros_like(prob)  # the first look alone, at 32 px for a 200 px picture, is coarser
    image, _, (h, w) = letterbox(rgb, 32)
    coarse = (image[0] - image[1] > 0.4).float()[:h, :w].numpy()
    first = np.asarray(Image.fromarray(coarse, "F").resize((200, 120), Image.Resampling.BILINEAR)) > 0.5
    assert _iou(prob > 0.5, truth) > _iou(first, truth)


def test_a_large_object_is_seen_once():
    net = _ColourFinder()
    prob = find_object(net, _picture(box=(10, 5, 190, 115)))
    assert len(net.calls) == 1 and (prob > 0.5).mean() > 0.7


def test_no_object_gives_none():
    net = _ColourFinder()
    assert find_object(net, _picture(box=(0, 0, 0, 0))) is None
    tiny = _picture(h=400, w=400, box=(200, 200, 205, 205))  # 25 of 160,000 pixels: below the share
    assert 25 / 160_000 < MIN_OBJECT_SHARE and find_object(net, tiny) is None


def test_find_object_rejects_bad_arrays():
    with pytest.raises(ValueError, match="uint8"):
        find_object(_ColourFinder(), np.zeros((10, 10, 3), np.float32))


def test_the_real_network_keeps_the_shape():
    net = ObjectFinder(FinderConfig(channels=(4, 8, 8), size=32)).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 1, 32, 32)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ObjectFinder(FinderConfig(channels=(4, 8), size=32)).eval()
    stem = save_finder(net, tmp_path / "finder", {"val_iou": 0.5})
    back = load_finder(stem)
    assert back.config == net.config and not back.training
    assert json.loads(stem.with_suffix(".json").read_text())["val_iou"] == 0.5
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # stored as fp16
        assert torch.allclose(back(x), net(x), atol=5e-2)


def test_missing_finder_is_none_and_a_broken_one_a_clear_error(tmp_path):
    assert load_finder(tmp_path / "nothing") is None
    stem = save_finder(ObjectFinder(FinderConfig(channels=(4, 8), size=32)), tmp_path / "finder")
    stem.with_suffix(".safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(WeightsError, match=r"cannot be loaded .*train_finder\.py"):
        load_finder(stem)


def test_reconstructor_takes_the_finders_mask_as_alpha(tiny_config):
    from recon_core.network.model import build_model

    torch.manual_seed(0)
    rgb = _picture(box=(60, 20, 140, 100))
    noise = np.random.default_rng(1).integers(0, 60, rgb.shape, dtype=np.uint8)
    rgb = np.where(np.all(rgb == RED, axis=2)[..., None], rgb, rgb - noise)  # a busy background
    rec = Reconstructor(build_model(tiny_config), {"trained": False}, finder=_ColourFinder())
    result = rec.reconstruct(rgb, vertices=642)
    truth = np.all(rgb == RED, axis=2)
    assert _iou(result.mask > 0.5, truth) > 0.9
    assert "object found by the object finder (no transparency)" in result.notes
    assert result.report.ok

    alpha = np.zeros(rgb.shape[:2], np.uint8)  # a picture's own alpha wins over the finder
    alpha[:50, :50] = 255
    finder = rec.finder
    finder.calls.clear()
    assert np.array_equal(rec.reconstruct(rgb, alpha, vertices=642).mask, alpha / np.float32(255))
    assert finder.calls == []


def test_mask_confidence_is_the_mean_probability_of_the_object_pixels():
    alpha = np.zeros((20, 30), np.uint8)
    assert mask_confidence(alpha) == 0.0
    alpha[2:6, 3:8] = 255
    alpha[10:12, 10:20] = 200
    alpha[15, 15] = 127  # not an object pixel
    expected = (20 * 255 + 20 * 200) / 40 / 255
    assert mask_confidence(alpha) == pytest.approx(expected)
    for seed in range(5):  # against the plain mean of the pixels above 127
        alpha = np.random.default_rng(seed).integers(0, 256, (37, 53), dtype=np.uint8)
        assert mask_confidence(alpha) == pytest.approx(alpha[alpha > 127].mean() / 255.0, rel=1e-12)


def test_an_unsure_finder_asks_the_user_to_check_the_mask(tiny_config):
    """A mask the finder is unsure of gets a note that says how to check it and correct it; a sure one does not."""
    from recon_core.network.model import build_model

    torch.manual_seed(0)
    rgb = _picture(box=(60, 20, 140, 100))
    model = build_model(tiny_config)
    for logit, unsure in ((20.0, False), (1.0, True)):  # sigmoid(1) = 0.73 < UNSURE_MASK
        rec = Reconstructor(model, {"trained": False}, finder=_ColourFinder(logit))
        result = rec.reconstruct(rgb, vertices=642)
        notes = " ".join(result.notes)
        assert ("unsure of the object" in notes and "--mask" in notes and "--save-mask" in notes) == unsure, notes
        assert result.mask_unsure == unsure
        assert (mask_confidence((result.mask * 255 + 0.5).astype(np.uint8)) < UNSURE_MASK) == unsure
        assert result.report.ok


def test_reconstructor_takes_the_grown_mask_and_the_finders_own_confidence(tiny_config):
    """A shaded red bar with paler rims on white, which the colour finder does not take: the mask the model takes is
    the finder's alpha grown to the edges (the rims included), and the unsure note gives the finder's own confidence
    from before growing (the grown alpha's, its added pixels at 255, is higher)."""
    from recon_core.network.finder import finder_alpha, grow_to_edges
    from recon_core.network.model import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    rgb = np.full((80, 160, 3), 255, np.uint8)
    rgb[36:44, 30:130] = np.array([220, 30, 30]) + rng.integers(-10, 11, (8, 100, 3))  # r - g > 0.4: the finder's
    rgb[[34, 35, 44, 45], 30:130] = np.array([235, 150, 150]) + rng.integers(-5, 6, (4, 100, 3))  # r - g < 0.4
    finder = _ColourFinder(1.4)  # sigmoid(1.4) = 0.80 < UNSURE_MASK
    own = finder_alpha(finder, rgb, fit=False)
    grown = grow_to_edges(own, rgb)
    assert (grown > 127).sum() > (own > 127).sum() and (grown[[34, 35, 44, 45], 40:120] > 127).all()
    mine, after = f"confidence {mask_confidence(own):.2f}", f"confidence {mask_confidence(grown):.2f}"
    assert mine != after
    result = Reconstructor(build_model(tiny_config), {"trained": False}, finder=finder).reconstruct(rgb, vertices=642)
    np.testing.assert_array_equal(result.mask, grown / np.float32(255))
    notes = " ".join(result.notes)
    assert result.mask_unsure and mine in notes and after not in notes, notes
    assert result.report.ok


def test_reconstructor_falls_back_to_the_border_colour_then_refuses(tiny_config):
    from recon_core.network.model import build_model

    rec = Reconstructor(build_model(tiny_config), {"trained": False}, finder=_ColourFinder())
    blue = _picture(box=(0, 0, 0, 0))
    blue[30:90, 60:140] = (30, 30, 200)  # not red: the finder misses it, the border colour finds it
    result = rec.reconstruct(blue, vertices=642)
    assert any("border colour" in n for n in result.notes)
    assert result.mask[60, 100] == 1.0 and result.mask[5, 5] == 0.0

    empty = _picture(box=(0, 0, 0, 0))
    empty[:, :100] = (235, 235, 230)  # two near-white halves: nothing against the border colour either
    with pytest.raises(ImageError, match=r"^No object found in the picture: neither the object finder nor"):
        rec.reconstruct(empty, vertices=642)


# ------------------------------------------------------------------------------ training pictures

BOX = (14, 10, 50, 54)
"""The roof view's object box (tests/test_styles.py)."""


def _view():
    from tests.test_styles import _view as roof

    return roof()


def test_place_moves_the_picture_the_mask_and_the_camera_together():
    from training.train_finder import place

    rgba, mask, depth, K = _view()
    for seed in range(6):
        prgba, pmask, pdepth, pK = place(rgba, mask, depth, K, np.random.default_rng(seed))
        assert prgba.shape[:2] == pmask.shape == pdepth.shape
        assert pmask.any()
        # the moved mask is where the moved picture is opaque
        assert _iou(pmask, prgba[..., 3] > 127) > 0.95
        # a point of the view projects through the new camera where its pixel went
        checked = 0
        for v, u in [(20, 20), (32, 32), (45, 40), (11, 15), (52, 48)]:  # pixels of the object, some near its edge
            z = float(depth[v, u])
            point = np.linalg.inv(K) @ np.array([u + 0.5, v + 0.5, 1.0]) * z
            p = pK @ point
            pu, pv = p[0] / p[2], p[1] / p[2]
            if 1 <= pu < pmask.shape[1] - 1 and 1 <= pv < pmask.shape[0] - 1:
                assert pmask[int(pv), int(pu)], (seed, u, v)
                checked += 1
        hits = np.argwhere(pmask)
        centre = np.array([(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2])  # the moved box's centre, by the camera
        moved = (pK @ np.linalg.inv(K) @ np.array([*centre, 1.0]))[:2]
        if checked == 5:  # all on the canvas: the moved mask is centred where the camera says
            assert np.allclose(hits.mean(axis=0)[::-1] + 0.5, moved, atol=1.0)


def test_finder_samples_are_deterministic_and_aligned(tmp_path):
    from training.train_finder import finder_sample

    rgba, mask, depth, K = _view()
    folder = tmp_path / "model"
    folder.mkdir()
    Image.fromarray(rgba, "RGBA").save(folder / "000.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "000_mask.png")
    np.save(folder / "000_depth.npy", depth)
    h, w = mask.shape
    (folder / "000.json").write_text(json.dumps({"K": K.tolist(), "R": np.eye(3).tolist(), "T": [0, 0, 2],
                                                 "width": w, "height": h}))
    for seed in range(8):
        rgb, target = finder_sample(folder, 0, seed, None)
        again, target2 = finder_sample(folder, 0, seed, None)
        assert np.array_equal(rgb, again) and np.array_equal(target, target2)
        assert rgb.shape[:2] == target.shape and rgb.dtype == np.uint8
    rgb1, _ = finder_sample(folder, 0, 1, None)
    rgb2, _ = finder_sample(folder, 0, 2, None)
    assert rgb1.shape != rgb2.shape or not np.array_equal(rgb1, rgb2)


def test_training_loss_and_iou_against_naive():
    from training.train_finder import _loss, iou

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 3, (3, 1, 8, 8)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 2, (3, 8, 8)).astype(np.uint8))
    target[:, :, 6:] = 255  # padding
    pred = logits[:, 0].numpy() > 0
    t = target.numpy()
    ious = []
    for b in range(3):
        valid = t[b] != 255
        inter = (pred[b] & (t[b] == 1) & valid).sum()
        union = ((pred[b] & valid) | (t[b] == 1)).sum()
        ious.append(inter / union)
    assert iou(logits, target) == pytest.approx(np.mean(ious), rel=1e-6)
    # the loss ignores the padding: changing the logits there does not change it
    moved = logits.clone()
    moved[:, :, :, 6:] += 5.0
    assert float(_loss(moved, target)) == pytest.approx(float(_loss(logits, target)), rel=1e-6)


def test_training_learns_red_squares():
    """A few dozen steps on red squares over noise reach a clearly better IoU than at the start."""
    from training.train_finder import iou, train

    rng = np.random.default_rng(0)
    n, s = 96, 32
    images = rng.integers(0, 120, (n, 3, s, s), dtype=np.uint8)
    targets = np.zeros((n, s, s), np.uint8)
    for i in range(n):
        u, v, k = rng.integers(0, 20), rng.integers(0, 20), rng.integers(6, 12)
        images[i, :, v:v + k, u:u + k] = np.array([230, 20, 20], np.uint8)[:, None, None]
        targets[i, v:v + k, u:u + k] = 1
    config = FinderConfig(channels=(8, 16), size=s)
    torch.manual_seed(0)
    before = iou(ObjectFinder(config)(torch.from_numpy(images[-32:]).float() / 255), torch.from_numpy(targets[-32:]))
    net, val = train(images[:-32], targets[:-32], images[-32:], targets[-32:], steps=60, batch=16, lr=1e-2,
                     config=config)
    assert val > 0.8 and val > before + 0.3


# ------------------------------------------------------------------------------ the shipped finder

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _chair_on_a_background(tmp_path, seed=3):
    """examples/chair.png (RGBA) composited over a busy synthetic background, saved as a JPEG (no alpha)."""
    from training.augment import synthetic_background

    rgba = np.asarray(Image.open(REPO / "examples" / "chair.png").convert("RGBA"))
    h, w = rgba.shape[:2]
    canvas = np.zeros((2 * h, 3 * w // 2 * 2, 3), np.float32)
    rng = np.random.default_rng(seed)
    back = synthetic_background(rng, canvas.shape[:2]).copy()
    back += rng.normal(0.0, 12.0, back.shape)  # grain: no plain border colour to separate from
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    top, left = h // 2, w // 3
    region = back[top:top + h, left:left + w]
    back[top:top + h, left:left + w] = rgba[..., :3] * a + region * (1 - a)
    path = tmp_path / "chair_on_a_desk.jpg"
    Image.fromarray(np.clip(back + 0.5, 0, 255).astype(np.uint8)).save(path, quality=85)
    truth = np.zeros(back.shape[:2], bool)
    truth[top:top + h, left:left + w] = rgba[..., 3] > 127
    return path, truth


@pytest.mark.skipif(not (REPO / "models" / "finder.safetensors").is_file(), reason="no shipped finder")
def test_a_jpeg_on_a_background_reconstructs_printable_with_the_shipped_finder(tmp_path, monkeypatch, capsys):
    from recon_core.io.cli import main

    monkeypatch.setenv("RECON_FINDER", str(REPO / "models" / "finder"))
    picture, truth = _chair_on_a_background(tmp_path)
    out, mask = tmp_path / "chair.stl", tmp_path / "mask.png"
    code = main([str(picture), "-o", str(out), "--save-mask", str(mask), "--detail", "low"])
    captured = capsys.readouterr()
    assert code == 0 and "✓ printable" in captured.out
    assert "note: object found by the object finder (no transparency)" in captured.err
    saved = np.asarray(Image.open(mask)) > 127
    assert saved.shape == truth.shape and _iou(saved, truth) > 0.6
    import trimesh

    assert trimesh.load(out, force="mesh").is_watertight


def test_default_finder_path_is_the_shipped_finder_unless_recon_finder_says(monkeypatch):
    from recon_core.io.weights import default_finder_path

    monkeypatch.delenv("RECON_FINDER", raising=False)
    stem = default_finder_path()
    assert stem == Path(__file__).resolve().parent.parent / "models" / "finder"
    assert stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file()
    monkeypatch.setenv("RECON_FINDER", "/somewhere/else.safetensors")
    assert default_finder_path() == Path("/somewhere/else")
    monkeypatch.setenv("RECON_FINDER", " None ")
    assert default_finder_path() is None


def test_recon_finder_naming_no_finder_is_one_sentence_and_none_means_the_border_colour(tmp_path, monkeypatch,
                                                                                        capsys):
    """A mistyped RECON_FINDER used to be ignored without a word (the border colour used instead): now it is bad
    input, exit 2, no file; RECON_FINDER=none finds the object by the border colour, as a repository without the
    finder's files does."""
    from recon_core.io.cli import main

    picture = tmp_path / "white.jpg"
    rgba = np.asarray(Image.open(REPO / "examples" / "chair.png").convert("RGBA"))
    rgb = np.where(rgba[..., 3:] > 127, rgba[..., :3], 255).astype(np.uint8)
    Image.fromarray(rgb).save(picture, quality=95)
    out = tmp_path / "out.stl"
    monkeypatch.setenv("RECON_FINDER", str(tmp_path / "typo"))
    with pytest.raises(WeightsError, match="RECON_FINDER names no object finder"):
        load_finder()
    assert main([str(picture), "-o", str(out)]) == 2 and not out.exists()
    assert "error: RECON_FINDER names no object finder" in capsys.readouterr().err
    monkeypatch.setenv("RECON_FINDER", "none")
    assert load_finder() is None
    assert main([str(picture), "-o", str(out)]) == 0 and out.exists()


def _drop_unsure_parts_reference(alpha: np.ndarray, unsure: float, margin: int) -> np.ndarray:
    """drop_unsure_parts pixel by pixel: a breadth-first flood fill, each part's mean, a square-by-square dilation."""
    from collections import deque

    fg = alpha > 127
    h, w = fg.shape
    label = np.zeros((h, w), dtype=int)
    parts: list[list[tuple[int, int]]] = []
    for i in range(h):
        for j in range(w):
            if fg[i, j] and not label[i, j]:
                parts.append([])
                label[i, j] = len(parts)
                queue = deque([(i, j)])
                while queue:
                    a, b = queue.popleft()
                    parts[-1].append((a, b))
                    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        u, v = a + da, b + db
                        if 0 <= u < h and 0 <= v < w and fg[u, v] and not label[u, v]:
                            label[u, v] = len(parts)
                            queue.append((u, v))
    if not parts:
        return alpha
    largest = max(range(len(parts)), key=lambda k: (len(parts[k]), -k))  # the first of the largest
    keep = np.zeros((h, w), dtype=bool)
    for k, pixels in enumerate(parts):
        if k == largest or sum(float(alpha[a, b]) for a, b in pixels) / len(pixels) >= unsure * 255.0:
            for a, b in pixels:
                keep[a, b] = True
    for _ in range(margin):
        grown = keep.copy()
        for a in range(h):
            for b in range(w):
                if keep[a, b]:
                    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        if 0 <= a + da < h and 0 <= b + db < w:
                            grown[a + da, b + db] = True
        keep = grown
    return np.where(keep, alpha, 0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_drop_unsure_parts_equals_a_flood_fill_reference(seed):
    """Blobs of random size and confidence over faint noise: the same alpha as the pixel-by-pixel reference."""
    from recon_core.network.finder import drop_unsure_parts

    rng = np.random.default_rng(seed)
    alpha = rng.integers(0, 100, (40, 50)).astype(np.uint8)  # faint noise everywhere
    for _ in range(6):
        r, c, s = rng.integers(0, 36), rng.integers(0, 46), rng.integers(1, 9)
        alpha[r : r + s, c : c + s] = rng.integers(128, 256)
    np.testing.assert_array_equal(drop_unsure_parts(alpha), _drop_unsure_parts_reference(alpha, 0.75, 2))
    np.testing.assert_array_equal(drop_unsure_parts(alpha, 0.9, 1), _drop_unsure_parts_reference(alpha, 0.9, 1))
    np.testing.assert_array_equal(drop_unsure_parts(alpha, 0.6, 0), _drop_unsure_parts_reference(alpha, 0.6, 0))


def test_drop_unsure_parts_keeps_confident_strokes_and_drops_unsure_blobs():
    """A sketch's separate confident stroke stays; an unsure blob as large goes, and so does the faint mask far off;
    the largest part stays however unsure; nothing found, nothing changed."""
    from recon_core.network.finder import drop_unsure_parts

    alpha = np.zeros((30, 40), dtype=np.uint8)
    alpha[5:20, 5:15] = 140  # the largest part, unsure
    alpha[5:8, 25:30] = 250  # a confident stroke
    alpha[22:25, 25:30] = 150  # an unsure blob
    alpha[0, 39] = 60  # faint, far from every part
    out = drop_unsure_parts(alpha)
    assert (out[5:20, 5:15] == 140).all() and (out[5:8, 25:30] == 250).all()
    assert (out[22:25, 25:30] == 0).all() and out[0, 39] == 0
    empty = np.full((10, 10), 90, dtype=np.uint8)
    np.testing.assert_array_equal(drop_unsure_parts(empty), empty)
    with pytest.raises(ValueError, match="margin"):
        drop_unsure_parts(alpha, margin=-1)


def _grow_to_edges_reference(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """grow_to_edges pixel by pixel: the border's median and spread, the object's colours counted one by one, each
    pixel's difference and its 3 x 3 neighbourhood's largest (clamped at the picture's edge), and a breadth-first
    walk from the mask through edge pixels."""
    from recon_core.network.finder import CROP_PAD, EDGE_MIN, EDGE_PLAIN, EDGE_REACH, EDGE_SHARE, FINDER_SIZE, FLAT_SHARE

    h, w = alpha.shape
    fg = alpha > 127
    if not fg.any():
        return alpha
    border = [rgb[0, j] for j in range(w)] + [rgb[h - 1, j] for j in range(w)]
    border += [rgb[i, 0] for i in range(h)] + [rgb[i, w - 1] for i in range(h)]
    border = np.array(border, dtype=float)
    bg = np.array([np.median(border[:, c]) for c in range(3)])
    if np.percentile([sum(abs(p - bg)) for p in border], 75) > EDGE_PLAIN:
        return alpha
    ii, jj = np.nonzero(fg)
    side = max(ii.max() - ii.min(), jj.max() - jj.min()) + 1
    if _colour_share_reference(rgb, fg) > FLAT_SHARE:
        return alpha
    reach = max(EDGE_REACH, int(round(side * (1 + 2 * CROP_PAD) / FINDER_SIZE)))
    d = np.array([[sum(abs(float(rgb[i, j, c]) - bg[c]) for c in range(3)) for j in range(w)] for i in range(h)])

    def is_edge(i: int, j: int) -> bool:
        strongest = max(d[min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]
                        for di in (-1, 0, 1) for dj in (-1, 0, 1))
        return d[i, j] >= EDGE_MIN and d[i, j] >= EDGE_SHARE * strongest

    # breadth-first from the mask through edge pixels, at most `reach` steps
    from collections import deque

    steps = np.full((h, w), -1)
    queue = deque()
    for i, j in zip(ii, jj):
        steps[i, j] = 0
        queue.append((i, j))
    out = alpha.copy()
    while queue:
        i, j = queue.popleft()
        if steps[i, j] == reach:
            continue
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            u, v = i + di, j + dj
            if 0 <= u < h and 0 <= v < w and steps[u, v] < 0 and is_edge(u, v):
                steps[u, v] = steps[i, j] + 1
                out[u, v] = 255
                queue.append((u, v))
    return out


def _colour_share_reference(rgb: np.ndarray, fg: np.ndarray) -> float:
    """The flat-colour share counted colour by colour: every k-th object pixel (row by row), k the least stride that
    leaves at most FLAT_SAMPLE, the FLAT_COLOURS most frequent colours' count over the pixels counted; 0 below
    FLAT_MIN_PIXELS."""
    from recon_core.network.finder import FLAT_COLOURS, FLAT_MIN_PIXELS, FLAT_SAMPLE

    ii, jj = np.nonzero(fg)
    if len(ii) < FLAT_MIN_PIXELS:
        return 0.0
    k = 1
    while (len(ii) + k - 1) // k > FLAT_SAMPLE:
        k += 1
    counts: dict[tuple[int, ...], int] = {}
    for n in range(0, len(ii), k):
        colour = tuple(int(c) for c in rgb[ii[n], jj[n]])
        counts[colour] = counts.get(colour, 0) + 1
    return sum(sorted(counts.values(), reverse=True)[:FLAT_COLOURS]) / sum(counts.values())


def _soft_render(rng: np.random.Generator, h: int = 48, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """A shaded object on white as a render draws it, and its true coverage: a disk whose edge pixels blend with the
    background by how much of them it covers (4 x 4 samples a pixel), with a one-pixel leg below it, its colour
    varying from pixel to pixel like a rendered surface. Returns (rgb (H, W, 3) uint8, coverage (H, W) float)."""
    s = 4
    y, x = (np.mgrid[0 : h * s, 0 : w * s] + 0.5) / s
    cy, cx, r = h * 0.4, w * 0.5, min(h, w) * 0.25
    inside = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    inside |= (np.abs(x - cx) < 0.5) & (y > cy) & (y < h - 4)  # the leg: one pixel wide
    cover = inside.reshape(h, s, w, s).mean(axis=(1, 3))
    colour = np.array([90.0, 60.0, 140.0]) + rng.normal(0.0, 12.0, (h, w, 3))
    rgb = cover[..., None] * colour + (1.0 - cover[..., None]) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), cover


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grow_to_edges_equals_a_pixel_by_pixel_reference(seed):
    """Rendered-like objects with a finder-like mask (eroded, holed, with a stray blob) on white, a tinted page and
    a busy background, and in flat colours: the same alpha as the pixel-by-pixel reference."""
    from scipy import ndimage

    from recon_core.network.finder import grow_to_edges

    rng = np.random.default_rng(seed)
    rgb, cover = _soft_render(rng)
    found = ndimage.binary_erosion(cover > 0.5, iterations=int(rng.integers(0, 3)))
    found[rng.integers(0, 48), rng.integers(0, 56)] = True
    alpha = np.where(found, rng.integers(128, 256, found.shape), rng.integers(0, 128, found.shape)).astype(np.uint8)
    tinted = np.where(cover[..., None] > 0, rgb, np.array([235, 225, 200], np.uint8))
    busy = np.where(cover[..., None] > 0, rgb, rng.integers(0, 256, rgb.shape).astype(np.uint8))
    flat = np.where(cover[..., None] > 0.5, np.array([90, 60, 140], np.uint8), np.uint8(255))
    for picture in (rgb, tinted, busy, flat):
        np.testing.assert_array_equal(grow_to_edges(alpha, picture), _grow_to_edges_reference(alpha, picture))


def test_grow_to_edges_of_a_large_object_equals_the_reference():
    """An object larger than the finder's square: a reach of five pixels; the same alpha as the reference, in shaded
    and in flat colours."""
    from scipy import ndimage

    from recon_core.network.finder import grow_to_edges

    rng = np.random.default_rng(11)
    rgb, cover = _soft_render(rng, 400, 410)
    alpha = np.where(ndimage.binary_erosion(cover > 0.5, iterations=2), 200, 0).astype(np.uint8)
    flat = np.where(cover[..., None] > 0.5, np.array([90, 60, 140], np.uint8), np.uint8(255))
    for picture in (rgb, flat):
        np.testing.assert_array_equal(grow_to_edges(alpha, picture), _grow_to_edges_reference(alpha, picture))
    assert (grow_to_edges(alpha, rgb) != alpha).any() and grow_to_edges(alpha, flat) is alpha


def test_grow_to_edges_takes_the_edges_and_the_thin_leg_and_no_background():
    """A finder-like mask one pixel inside a rendered disk, without its one-pixel leg: grown, it covers the pixels
    the object covers at least half of, the leg within reach included, and no pixel the object does not touch;
    nothing is taken away. On a busy background, in flat colours or with no mask it is left as it was."""
    from scipy import ndimage

    from recon_core.network.finder import EDGE_REACH, grow_to_edges

    rgb, cover = _soft_render(np.random.default_rng(7))
    found = cover > 0.99  # the disk's whole pixels: its edge's and the half-covered leg's are missing
    alpha = np.where(found, 230, 0).astype(np.uint8)
    out = grow_to_edges(alpha, rgb)
    grown = out > 127
    reachable = ndimage.binary_dilation(found, iterations=EDGE_REACH)  # the default cross: 4-neighbourhood steps
    assert (grown[cover >= 0.5] | ~reachable[cover >= 0.5]).all()  # every half-covered pixel within reach
    assert not grown[cover == 0].any()  # no pure background pixel
    below = np.arange(cover.shape[0])[:, None] > np.flatnonzero(found.any(axis=1))[-1] + 1
    leg = (cover >= 0.5) & below & reachable
    assert leg.sum() >= 2 and grown[leg].all()  # the leg's pixels within reach
    assert (out[found] == 230).all() and (out[grown & ~found] == 255).all()  # kept as found, added at 255
    iou = lambda m: (m & (cover >= 0.5)).sum() / (m | (cover >= 0.5)).sum()
    assert iou(grown) > iou(found) + 0.05  # 0.86 -> 0.95 here
    busy = np.where(cover[..., None] > 0, rgb, np.random.default_rng(8).integers(0, 256, rgb.shape).astype(np.uint8))
    assert grow_to_edges(alpha, busy) is alpha
    flat = np.where(cover[..., None] > 0.5, np.array([90, 60, 140], np.uint8), np.uint8(255))
    assert grow_to_edges(alpha, flat) is alpha
    empty = np.zeros_like(alpha)
    assert grow_to_edges(empty, rgb) is empty


def test_grow_to_edges_stays_joined_to_the_mask():
    """A shadow ring around a dark object on white: the ring's first pixels beside the object are fainter than 40 % of
    the object next to them, so they stay out, and so does the shadow beyond them, though its own pixels pass the
    3 x 3 test. A pixel at the reach is judged against its neighbour beyond the reach too."""
    from recon_core.network.finder import EDGE_REACH, grow_to_edges

    rgb = np.full((40, 40, 3), 255, np.uint8)
    rgb[10:30, 10:30] = 242  # the shadow: d = 39 everywhere in it
    rng = np.random.default_rng(3)
    rgb[15:25, 15:25] = rng.integers(20, 60, (10, 10, 3))  # the object, dark: d about 640
    alpha = np.zeros((40, 40), np.uint8)
    alpha[15:25, 15:25] = 255
    out = grow_to_edges(alpha, rgb)
    np.testing.assert_array_equal(out, alpha)  # nothing of the shadow, not even its pixels two steps out
    np.testing.assert_array_equal(out, _grow_to_edges_reference(alpha, rgb))

    rgb = np.full((40, 40, 3), 255, np.uint8)
    rgb[15:25, 15:25] = rng.integers(60, 160, (10, 10, 3))  # d at most 585
    rgb[15:25, 14] = 170  # one step out: d = 255, at least 40 % of anything beside it: it joins
    rgb[15:25, 15 - EDGE_REACH] = 200  # at the reach: d = 165, under 40 % of the pixel beyond it
    rgb[15:25, 15 - EDGE_REACH - 1] = 40  # beyond the reach: d = 645
    out = grow_to_edges(alpha, rgb)
    np.testing.assert_array_equal(out, _grow_to_edges_reference(alpha, rgb))
    assert (out[15:25, 14] == 255).all()
    assert (out[15:25, 15 - EDGE_REACH - 1 : 14] == 0).all()  # its neighbourhood is seen beyond the reach


@pytest.mark.parametrize("share", [0.45, 0.55])
def test_common_colour_share_near_the_threshold_and_over_the_sample(share):
    """Objects whose 8 most common colours hold just under and just over half their pixels, one of them larger than
    the sample: the share equals the colour-by-colour count, and grow_to_edges takes them for flat colours exactly when
    it is above FLAT_SHARE."""
    from recon_core.network.finder import FLAT_SAMPLE, FLAT_SHARE, _common_colour_share

    rng = np.random.default_rng(int(share * 100))
    for h, w in ((60, 70), (300, 260)):  # 4,200 and 78,000 object pixels (the second above the sample)
        noisy = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        flat = np.array([(k * 30, 255 - k * 30, 100) for k in range(8)], np.uint8)[rng.integers(0, 8, (h, w))]
        rgb = np.where(rng.random((h, w, 1)) < share, flat, noisy)
        fg = np.ones((h, w), bool)
        got = _common_colour_share(rgb, fg)
        assert got == pytest.approx(_colour_share_reference(rgb, fg), abs=1e-12)
        assert abs(got - share) < 0.03 and (got > FLAT_SHARE) == (share > FLAT_SHARE)
    assert 60 * 70 < FLAT_SAMPLE < 300 * 260  # one object under the sample, one over it
    tiny = np.zeros((5, 5), bool)
    tiny[2, 2] = True
    assert _common_colour_share(rgb[:5, :5], tiny) == 0.0  # too few pixels to call flat


# ------------------------------------------------------------------------------ train_finder.py's command line


@pytest.mark.parametrize("argv,named", [
    (["--batch", "0"], "--batch"), (["--pictures", "0"], "--pictures"), (["--pictures", "-5"], "--pictures"),
    (["--steps", "0"], "--steps"), (["--out", "FILE/g"], "--out"), (["--cache", "FILE/c"], "--cache"),
    (["--check", "--check-views", "0"], "--check-views"), (["--check", "--sheet", "FILE/x.png"], "--sheet"),
])
def test_train_finder_refuses_bad_options_in_one_sentence(tmp_path, capsys, monkeypatch, argv, named):
    """Counts below 1 and outputs under a file: exit 2 with one sentence naming the option, before any drawing."""
    import training.train_finder as module

    def never(*args, **kwargs):
        raise AssertionError("pictures drawn before the options were checked")

    monkeypatch.setattr(module, "draw_set", never)
    (tmp_path / "FILE").write_text("")
    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "sources.json").write_text("{}")
    argv = [str(tmp_path / a) if a.startswith("FILE/") else a for a in argv]
    base = ["--cache", str(tmp_path / "cache"), "--backgrounds", str(tmp_path / "bg"), "--out", str(tmp_path / "f")]
    assert module.main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("f.*")) and not (tmp_path / "cache").exists()


def test_train_finder_check_of_a_split_with_no_pictures_fails(tmp_path, capsys):
    """--check on a split with no views: exit 2 and one sentence naming it, not a table of nan."""
    from tests.test_shape_bank import write_fake_data
    from training.train_finder import main

    shapenet, renders = write_fake_data(tmp_path / "data")
    save_finder(ObjectFinder(FinderConfig(channels=(4, 4), size=32)), tmp_path / "finder")
    argv = ["--check", "--out", str(tmp_path / "finder"), "--shapenet", str(shapenet), "--renders", str(renders),
            "--check-split", "bogus", "--sheet", str(tmp_path / "sheet.png"), "--check-backgrounds", "none"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "bogus" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "nan" not in captured.out and not (tmp_path / "sheet.png").exists()


def test_train_finder_check_refuses_a_backgrounds_folder_without_photographs(tmp_path, capsys):
    """A mistyped --check-backgrounds fell back to synthetic backgrounds silently and scored the photographs' masks far
    too high (82.5 against 57.4): now one sentence and exit 2, before the finder is read."""
    from training.train_finder import main

    assert main(["--check", "--out", str(tmp_path / "finder"), "--check-backgrounds", str(tmp_path / "nobg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --check-backgrounds {tmp_path / 'nobg'} does not exist") and err.count("\n") == 1


def test_a_found_alpha_without_a_pixel_above_half_is_no_object(tiny_config, monkeypatch):
    """The finder can return an alpha with no pixel above half (its second look kept nothing): that is no object, so the
    border colour is tried, and a picture it finds nothing in either is refused, as when the finder sees none; such an
    alpha was used as the object before (an empty mask, a mesh made of nothing)."""
    from recon_core.network import finder as finder_module
    from recon_core.network.model import build_model

    monkeypatch.setattr(finder_module, "finder_alpha",
                        lambda net, rgb, fit=True: np.full(rgb.shape[:2], 1, np.uint8))  # 1 of 255 everywhere
    rec = Reconstructor(build_model(tiny_config), {"trained": False}, finder=_ColourFinder())
    blue = _picture(box=(0, 0, 0, 0))
    blue[30:90, 60:140] = (30, 30, 200)
    result = rec.reconstruct(blue, vertices=642)
    assert any("border colour" in n for n in result.notes) and not result.mask_unsure
    assert result.mask[60, 100] == 1.0 and result.mask[5, 5] == 0.0
    with pytest.raises(ImageError, match=r"^No object found in the picture: neither the object finder nor"):
        rec.reconstruct(np.zeros((120, 200, 3), np.uint8) + np.uint8(3), vertices=642)


def _finder_data(root: Path, manifest: str = '{"models": []}') -> list[str]:
    """A data set's folders as train_finder.py checks them (a manifest, a renders folder); its options."""
    (root / "sn").mkdir(parents=True)
    (root / "sn" / "manifest.json").write_text(manifest)
    (root / "r").mkdir()
    return ["--shapenet", str(root / "sn"), "--renders", str(root / "r")]


@pytest.fixture
def drawn(tmp_path, monkeypatch):
    """train_finder.py with drawing and training replaced: the list of (shapenet, split) drawn, and its options."""
    import training.train_finder as module

    calls: list[tuple[str, str]] = []

    def draw_set(shapenet, renders, split, count, seed, backgrounds, size=module.FINDER_SIZE, workers=2):
        calls.append((str(shapenet), split))
        return np.zeros((count, 3, 8, 8), np.uint8), np.zeros((count, 8, 8), np.uint8)

    monkeypatch.setattr(module, "draw_set", draw_set)
    monkeypatch.setattr(module, "train", lambda *a, **k: (ObjectFinder(FinderConfig(channels=(4, 4), size=32)), 0.5))
    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "sources.json").write_text("{}")
    base = ["--cache", str(tmp_path / "cache"), "--backgrounds", str(tmp_path / "bg"), "--out", str(tmp_path / "f"),
            "--pictures", "4", "--val-pictures", "2", "--steps", "1", "--workers", "0"]
    return module, calls, base


def test_the_picture_cache_is_the_data_sets_own(tmp_path, drawn):
    """The cache's name lacked the data set: another --shapenet/--renders (even a wrong one) reused the pictures."""
    module, calls, base = drawn
    first = _finder_data(tmp_path / "a")
    assert module.main(base + first) == 0 and len(calls) == 2
    assert module.main(base + first) == 0 and len(calls) == 2  # the same data set: the cache is reused
    assert module.main(base + _finder_data(tmp_path / "b")) == 0 and len(calls) == 4  # another one: drawn again
    assert {s for s, _ in calls[2:]} == {str(tmp_path / "b" / "sn")}
    (tmp_path / "a" / "sn" / "manifest.json").write_text('{"models": [{"model_id": "x", "synset": "y"}]}')
    assert module.main(base + first) == 0 and len(calls) == 6  # the same folder, another manifest: drawn again


def test_a_corrupt_picture_cache_is_named_and_drawn_again(tmp_path, drawn, caplog):
    module, calls, base = drawn
    data = _finder_data(tmp_path / "a")
    assert module.main(base + data) == 0 and len(calls) == 2
    train_file = next((tmp_path / "cache").glob("train_*.npz"))
    train_file.write_text("junk")
    caplog.clear()
    assert module.main(base + data) == 0 and calls[2:] == [(data[1], "train")]
    assert str(train_file) in caplog.text and "drawing its pictures again" in caplog.text
    with np.load(train_file) as cached:
        assert cached["images"].shape == (4, 3, 8, 8)


@pytest.mark.parametrize("missing,named", [("sn", "The meshes folder"), ("r", "The renders folder"),
                                           ("manifest", "has no manifest.json")])
def test_train_finder_names_a_missing_data_folder(tmp_path, drawn, capsys, missing, named):
    """--shapenet /tmp/nope said only '[Errno 2] ... manifest.json' (or, with a cache, trained on other pictures)."""
    import shutil

    module, calls, base = drawn
    data = _finder_data(tmp_path / "a")
    assert module.main(base + data) == 0  # a cache drawn: the wrong folder must not reuse it
    if missing == "manifest":
        (tmp_path / "a" / "sn" / "manifest.json").unlink()
    else:
        shutil.rmtree(tmp_path / "a" / missing)
    capsys.readouterr()
    assert module.main(base + data) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1, err
    assert "[Errno" not in err and len(calls) == 2


@pytest.mark.parametrize("init,named", [
    ("truncated", "is corrupt or truncated"), ("reconstruction", "is a reconstruction model, not an object finder"),
    ("missing", "no object finder there")])
def test_train_finder_init_that_is_no_finder_is_one_sentence(tmp_path, drawn, capsys, tiny_config, init, named):
    """--init with a truncated finder or the reconstruction model raised WeightsError with a traceback, advising to
    'restore' models/default as if it were a broken finder."""
    module, calls, base = drawn
    stem = tmp_path / "init"
    if init == "truncated":
        save_finder(ObjectFinder(FinderConfig(channels=(4, 4), size=32)), stem)
        data = (tmp_path / "init.safetensors").read_bytes()
        (tmp_path / "init.safetensors").write_bytes(data[: len(data) // 2])
    elif init == "reconstruction":
        from recon_core.io.weights import save_model
        from recon_core.network.model import build_model

        save_model(build_model(tiny_config), stem, {"trained": False})
    capsys.readouterr()
    assert module.main(base + _finder_data(tmp_path / "a") + ["--init", str(stem)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "--init" in err, err
    assert len(err.strip().splitlines()) == 1 and "restore it" not in err and not calls


def _photo_like(rng: np.random.Generator, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A shaded orange object (a disc with an arm) on a busy background of green and blue stripes with grain:
    ``(rgb (H, W, 3) uint8, truth (H, W) bool)``."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    back = np.where(((xx + 0.5 * yy) // 9 % 2 == 0)[..., None], [40, 140, 60], [50, 80, 170]).astype(np.float32)
    back += rng.normal(0.0, 14.0, back.shape)
    cy, cx, r = h * 0.5, w * 0.45, h * 0.28
    truth = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) | ((abs(yy - cy) < 3) & (xx > cx) & (xx < w * 0.85))
    shade = 0.75 + 0.25 * (xx / w)
    obj = np.stack([235 * shade, 120 * shade, 30 * shade], axis=-1) + rng.normal(0.0, 8.0, back.shape)
    rgb = np.where(truth[..., None], obj, back)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), truth


def _blurred_alpha(truth: np.ndarray, grow: int, rng: np.random.Generator) -> np.ndarray:
    """A finder-like alpha of ``truth``: grown by ``grow`` pixels, blurred, a little noise (uint8)."""
    from scipy import ndimage

    soft = ndimage.gaussian_filter(ndimage.binary_dilation(truth, iterations=grow).astype(np.float32), 2.0)
    soft = np.clip(soft * 1.1 + rng.normal(0.0, 0.03, soft.shape), 0.0, 1.0)
    return (soft * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cut_by_colour_follows_the_objects_colours_on_a_busy_background(seed):
    """A found mask grown 5 pixels over a striped, grainy background and blurred: GrabCut's cut keeps the object's thin
    arm and gives back the background the finder took."""
    from recon_core.network.finder import cut_by_colour

    rng = np.random.default_rng(seed)
    rgb, truth = _photo_like(rng)
    alpha = _blurred_alpha(truth, 5, rng)
    cut = cut_by_colour(alpha, rgb)
    assert cut.shape == truth.shape and cut.dtype == np.uint8
    before, after = _iou(alpha > 127, truth), _iou(cut > 127, truth)
    assert before < 0.8 and after > 0.9, (before, after)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cut_by_colour_moves_the_edge_within_its_band_only(seed):
    """On noise (colours that say nothing) the cut takes no pixel farther than the band from the found mask
    (4-neighbourhood steps, a brute-force distance), and keeps every sure pixel: above CUT_SURE and at least
    CUT_SURE_DEPTH steps inside the found mask's edge."""
    from scipy import ndimage

    from recon_core.network.finder import CUT_BAND, CUT_SURE, CUT_SURE_DEPTH, cut_by_colour

    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    blob = ndimage.gaussian_filter(rng.random((120, 160)), 12.0)
    alpha = (np.clip((blob - blob.mean()) / blob.std() * 0.5 + 0.4, 0, 1) * 255).astype(np.uint8)
    seed_mask = alpha > 127
    assert seed_mask.any() and not seed_mask.all()
    cut = cut_by_colour(alpha, rgb) > 127
    band = int(round(CUT_BAND * 160))
    # the 4-neighbourhood distance of every pixel from the found mask, one pixel at a time
    pts = np.argwhere(seed_mask)
    far = np.array([[np.abs(pts - (r, c)).sum(axis=1).min() for c in range(160)] for r in range(120)])
    assert (far > band).any() and not (cut & (far > band)).any()
    # the sure pixels: CUT_SURE_DEPTH steps inside the edge (the picture's border counts as inside)
    inside = np.pad(seed_mask, 1, constant_values=True)
    outside = np.argwhere(~inside)
    sure = np.zeros_like(seed_mask)
    for r, c in np.argwhere(seed_mask & (alpha > CUT_SURE * 255))[::5]:
        sure[r, c] = np.abs(outside - (r + 1, c + 1)).sum(axis=1).min() > CUT_SURE_DEPTH
    assert sure.any() and cut[sure].all()


def test_cut_by_colour_of_a_large_picture_works_on_a_shrunk_copy():
    """A picture 4 times the working side: the cut comes back at the picture's size and follows the object as on the
    small copy; an empty alpha comes back as it is."""
    from recon_core.network.finder import CUT_SIDE, cut_by_colour

    rng = np.random.default_rng(7)
    rgb, truth = _photo_like(rng, h=3 * CUT_SIDE, w=4 * CUT_SIDE)
    alpha = _blurred_alpha(truth, 20, rng)
    cut = cut_by_colour(alpha, rgb)
    assert cut.shape == truth.shape and _iou(cut > 127, truth) > 0.9 > _iou(alpha > 127, truth)
    empty = np.zeros(truth.shape, np.uint8)
    assert cut_by_colour(empty, rgb) is empty


def test_fit_to_picture_grows_on_plain_cuts_photographs_and_leaves_drawings_on_paper():
    """Which fit a found alpha gets: grown on a plain background, cut along its colours on a busy coloured one,
    left as found on a busy grey one (a pencil drawing on uneven paper, whose object is the paper's colour)."""
    from recon_core.network.finder import cut_by_colour, fit_to_picture, grow_to_edges

    rng = np.random.default_rng(3)
    photo, truth = _photo_like(rng)
    alpha = _blurred_alpha(truth, 4, rng)
    np.testing.assert_array_equal(fit_to_picture(alpha, photo), cut_by_colour(alpha, photo))
    assert not np.array_equal(fit_to_picture(alpha, photo), alpha)
    plain = np.where(truth[..., None], photo, np.uint8(245)).astype(np.uint8)
    np.testing.assert_array_equal(fit_to_picture(alpha, plain), grow_to_edges(alpha, plain))
    grey = photo.mean(axis=2, keepdims=True).repeat(3, axis=2).astype(np.uint8)
    assert fit_to_picture(alpha, grey) is alpha


def test_the_cut_is_the_same_whatever_opencvs_random_state():
    """GrabCut starts its colour models from OpenCV's global random state: the cut seeds it, so the same picture gets
    the same cut however OpenCV's random numbers were used before (the unseeded cut differed from call to call)."""
    import cv2

    from recon_core.network.finder import cut_by_colour

    rng = np.random.default_rng(11)
    rgb, truth = _photo_like(rng)
    rgb[truth] = (rgb[truth].astype(np.int16) // 2 + np.array([20, 70, 30])).astype(np.uint8)  # nearer the stripes
    alpha = _blurred_alpha(truth, 6, rng)
    first = cut_by_colour(alpha, rgb)
    for seed in (1, 2, 3):
        cv2.setRNGSeed(seed)
        cv2.randu(np.empty((100, 100), np.float32), 0.0, 1.0)
        np.testing.assert_array_equal(cut_by_colour(alpha, rgb), first)


def test_a_cut_that_keeps_nothing_gives_the_found_mask_back(tiny_config):
    """An unsure found mask (no pixel above CUT_SURE, so none the object's for sure) of an object in a background
    stripe's colour: GrabCut takes it all for background. The found mask comes back instead, and the photograph is
    reconstructed, not refused as having no object."""
    import cv2

    from recon_core.network.finder import CUT_SURE, cut_by_colour
    from recon_core.network.model import build_model

    rng = np.random.default_rng(0)
    rgb, truth = _photo_like(rng)
    stripe = np.array([40, 140, 60]) + rng.normal(0.0, 14.0, rgb.shape)
    rgb = np.where(truth[..., None], np.clip(stripe, 0, 255), rgb).astype(np.uint8)
    alpha = (np.minimum(_blurred_alpha(truth, 2, rng).astype(np.float32), CUT_SURE * 255 - 20)).astype(np.uint8)
    assert (alpha > 127).any() and not (alpha > CUT_SURE * 255).any()
    # what GrabCut itself does with these marks (the cut's own seeding, written out): it keeps nothing
    marks = np.where(alpha > 127, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    far = cv2.dilate((alpha > 127).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)),
                     iterations=13)
    marks[far == 0] = cv2.GC_BGD
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), marks, None, np.zeros((1, 65)), np.zeros((1, 65)), 4,
                cv2.GC_INIT_WITH_MASK)
    assert not ((marks == cv2.GC_FGD) | (marks == cv2.GC_PR_FGD)).any()
    assert cut_by_colour(alpha, rgb) is alpha

    class Unsure(_ColourFinder):
        def forward(self, x):  # the stripe-coloured object: where the true mask is, at probability 0.8
            size = x.shape[-1]
            grid = torch.from_numpy(np.array(Image.fromarray(truth).resize((size, size))))
            return torch.where(grid[None, None] > 0, 1.4, -20.0).float()

    from recon_core.network.finder import finder_alpha, fit_to_picture

    own = finder_alpha(Unsure(), rgb, fit=False)
    assert fit_to_picture(own, rgb) is own  # the fallback: GrabCut kept nothing of the finder's mask
    result = Reconstructor(build_model(tiny_config), {"trained": False}, finder=Unsure()).reconstruct(rgb,
                                                                                                      vertices=642)
    assert result.report.ok and (result.mask > 0.5).any()
    np.testing.assert_array_equal(result.mask, own / np.float32(255))


def _recorded_grabcut(monkeypatch) -> list:
    """The (picture, marks) shapes of every ``cv2.grabCut`` call from now on, each call run as it is."""
    import cv2

    seen, real = [], cv2.grabCut

    def recording(img, mask, *args):
        seen.append((img.shape, mask.shape))
        return real(img, mask, *args)

    monkeypatch.setattr(cv2, "grabCut", recording)
    return seen


def test_a_large_photographs_cut_works_on_a_quarter_size_copy(monkeypatch):
    """A 768 x 1024 photograph is cut on a 192 x 256 copy (OpenCV's sizes are (width, height): swapped, the copy
    would be 256 x 192), with the band measured there."""
    from recon_core.network.finder import CUT_SIDE, cut_by_colour

    seen = _recorded_grabcut(monkeypatch)
    rng = np.random.default_rng(4)
    rgb, truth = _photo_like(rng, h=768, w=1024)
    cut = cut_by_colour(_blurred_alpha(truth, 16, rng), rgb)
    assert seen == [((192, 256, 3), (192, 256))] and 256 == CUT_SIDE
    assert cut.shape == truth.shape and _iou(cut > 127, truth) > 0.9


def _with_distractor(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: a purple square with grain painted into ``rgb`` (in place) in its upper right corner, off the
    picture's centre, clear of :func:`_photo_like`'s object."""
    h, w = rgb.shape[:2]
    square = np.zeros((h, w), bool)
    square[int(0.08 * h):int(0.3 * h), int(0.72 * w):int(0.95 * w)] = True
    rgb[square] = np.clip(np.array([150, 40, 190]) + rng.normal(0.0, 8.0, (square.sum(), 3)), 0, 255).astype(np.uint8)
    return square


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cut_centred_finds_the_object_in_the_middle_and_never_takes_the_outer_band(seed):
    """Started from a rectangle CENTRE_MARGIN of each side inside the picture, GrabCut takes the object in the middle
    (its thin arm too) and no pixel of the outer band."""
    from recon_core.network.finder import CENTRE_MARGIN, cut_centred

    rng = np.random.default_rng(seed)
    rgb, truth = _photo_like(rng)
    cut = cut_centred(rgb)
    assert cut.shape == truth.shape and cut.dtype == np.uint8
    assert _iou(cut > 127, truth) > 0.9
    h, w = truth.shape
    top, left = int(CENTRE_MARGIN * h), int(CENTRE_MARGIN * w)
    band = np.ones((h, w), bool)
    band[top:h - top, left:w - left] = False
    assert top > 0 and left > 0 and not (cut[band] > 127).any()


def test_centre_offset_equals_the_distance_written_out():
    """The centre of the object pixels (x over the width, y over the height, pixel centres) against the picture's
    centre, one pixel at a time; an empty alpha is infinitely far."""
    from recon_core.network.finder import _centre_offset

    rng = np.random.default_rng(5)
    for h, w in ((9, 13), (96, 128), (50, 31)):
        alpha = (rng.random((h, w)) < 0.2).astype(np.uint8) * 255
        xs, ys = [], []
        for r in range(h):
            for c in range(w):
                if alpha[r, c] > 127:
                    ys.append((r + 0.5) / h)
                    xs.append((c + 0.5) / w)
        expected = ((sum(xs) / len(xs) - 0.5) ** 2 + (sum(ys) / len(ys) - 0.5) ** 2) ** 0.5
        assert _centre_offset(alpha) == pytest.approx(expected, abs=1e-9)
    assert _centre_offset(np.full((4, 4), 127, np.uint8)) == float("inf")


def test_a_photographs_found_mask_off_the_centre_gives_way_to_the_centred_cut_where_the_finder_sees_it_too():
    """The finder is sure of the purple square in the corner and half sure (below 0.5: not in its mask) of the
    object in the middle: the centred cut is taken. Seeing nothing in the middle (an object photographed off the
    middle), or found on the object in the middle, the found mask's own cut is kept."""
    from recon_core.network.finder import CENTRE_LEAD, _centre_offset, cut_by_colour, cut_centred, fit_to_picture

    rng = np.random.default_rng(8)
    rgb, truth = _photo_like(rng)
    square = _with_distractor(rgb, rng)
    half_sure = np.where(square, 200, np.where(truth, 120, 0)).astype(np.uint8)
    centred = cut_centred(rgb)
    assert _centre_offset(cut_by_colour(half_sure, rgb)) > _centre_offset(centred) + CENTRE_LEAD
    fitted = fit_to_picture(half_sure, rgb)
    np.testing.assert_array_equal(fitted, centred)
    assert _iou(fitted > 127, truth) > 0.75 and _iou(half_sure > 127, truth) < 0.1  # part of the square is taken too
    alone = np.where(square, 200, 0).astype(np.uint8)
    np.testing.assert_array_equal(fit_to_picture(alone, rgb), cut_by_colour(alone, rgb))
    right = _blurred_alpha(truth, 4, rng)
    np.testing.assert_array_equal(fit_to_picture(right, rgb), cut_by_colour(right, rgb))


def test_a_photograph_cut_in_the_middle_does_not_pay_for_the_centred_cut(monkeypatch):
    """A cut whose centre is within CENTRE_LEAD of the picture's cannot give way (no centre is nearer the middle by
    more), nor can a found alpha without an object pixel, so the centred cut (~60 ms for a 137-pixel photograph) is
    not made; off the middle, it is."""
    import recon_core.network.finder as finder

    calls = []
    real = finder.cut_centred
    monkeypatch.setattr(finder, "cut_centred", lambda rgb: calls.append(rgb.shape) or real(rgb))
    rng = np.random.default_rng(9)
    rgb, truth = _photo_like(rng)
    alpha = _blurred_alpha(truth, 3, rng)
    cut = finder.cut_by_colour(alpha, rgb)
    assert finder._centre_offset(cut) <= finder.CENTRE_LEAD
    np.testing.assert_array_equal(finder.fit_to_picture(alpha, rgb), cut)
    assert calls == []
    unsure = np.full_like(alpha, 100)  # no object pixel: nothing to weigh a centred cut against
    assert finder.fit_to_picture(unsure, rgb) is unsure and calls == []
    square = _with_distractor(rgb, rng)
    finder.fit_to_picture(np.where(square, 200, 0).astype(np.uint8), rgb)
    assert calls == [rgb.shape]


@pytest.mark.parametrize("middle,centre,taken", [(95, (49.5, 49.5), False), (105, (49.5, 49.5), True),
                                                 (200, (49.5, 49.5), True), (200, (87.5, 11.5), False)])
def test_takes_centred_needs_the_cut_off_the_middle_and_the_finders_support_there(middle, centre, taken):
    """The rule written out on a 100 x 100 picture: the cut is a square in a corner (its centre 0.57 from the
    picture's), the centred cut a disc around ``centre`` (the middle, or the opposite corner: 0.54 from the picture's
    centre, not nearer by CENTRE_LEAD); the finder's alpha is 200 on the square and ``middle`` on the disc. Taken when
    the disc is nearer the middle by more than CENTRE_LEAD and middle / 200 is at least CENTRE_SUPPORT (0.5)."""
    from recon_core.network.finder import CENTRE_LEAD, CENTRE_SUPPORT, _centre_offset, _takes_centred

    yy, xx = np.mgrid[:100, :100]
    cut = np.where((yy < 20) & (xx >= 80), 255, 0).astype(np.uint8)
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 10 ** 2
    centred = np.where(disc, 255, 0).astype(np.uint8)
    alpha = np.where(cut > 0, 200, np.where(disc, middle, 0)).astype(np.uint8)
    nearer = _centre_offset(cut) > _centre_offset(centred) + CENTRE_LEAD
    assert nearer == (centre == (49.5, 49.5))
    assert _takes_centred(alpha, cut, centred) is taken is (nearer and middle >= CENTRE_SUPPORT * 200)


@pytest.mark.parametrize("side", [16, 18, 21])
def test_a_tiny_photograph_is_fitted_without_error(side):
    """A photograph of a few pixels (16 is the smallest picture read): the centred cut's band is at least a pixel, so
    GrabCut has background to learn from (at 18 pixels a band of 0.05 rounds to none, and OpenCV failed)."""
    from recon_core.network.finder import cut_centred, fit_to_picture

    rng = np.random.default_rng(side)
    rgb, _ = _photo_like(rng, h=side, w=side)
    alpha = np.zeros((side, side), np.uint8)
    alpha[:side // 3, -side // 3:] = 230  # off the middle, so the centred cut is made
    out = fit_to_picture(alpha, rgb)
    assert out.shape == (side, side) and out.dtype == np.uint8
    centred = cut_centred(rgb)
    assert centred is None or not (centred[0].any() or centred[-1].any() or centred[:, 0].any() or centred[:, -1].any())


def test_a_found_alpha_with_no_object_pixel_keeps_the_finders_verdict():
    """No pixel above 127 (the finder is not even half sure anywhere): fit_to_picture gives it back as it is, so the
    picture still goes on to the border-colour fallback, never to a centred cut the finder was not weighed against."""
    from recon_core.network.finder import _takes_centred, cut_centred, fit_to_picture

    rng = np.random.default_rng(6)
    rgb, truth = _photo_like(rng)
    unsure = np.where(truth, 120, 0).astype(np.uint8)
    centred = cut_centred(rgb)
    assert centred is not None and (centred > 127).any()
    assert _takes_centred(unsure, unsure, centred) is False
    assert fit_to_picture(unsure, rgb) is unsure


def test_the_centred_cut_is_the_same_whatever_opencvs_random_state_and_works_on_a_shrunk_copy(monkeypatch):
    """Seeded as the found mask's cut is; a 768 x 1024 photograph is cut on a 192 x 256 copy and comes back at its
    size."""
    import cv2

    from recon_core.network.finder import cut_centred

    rng = np.random.default_rng(12)
    rgb, truth = _photo_like(rng)
    first = cut_centred(rgb)
    for seed in (1, 2, 3):
        cv2.setRNGSeed(seed)
        cv2.randu(np.empty((100, 100), np.float32), 0.0, 1.0)
        np.testing.assert_array_equal(cut_centred(rgb), first)
    seen = _recorded_grabcut(monkeypatch)
    large, large_truth = _photo_like(rng, h=768, w=1024)
    cut = cut_centred(large)
    assert seen == [((192, 256, 3), (192, 256))]
    assert cut.shape == large_truth.shape and _iou(cut > 127, large_truth) > 0.9


@pytest.mark.parametrize("shape", [(40, 60), (137, 137), (700, 500)])
def test_saturation_is_opencvs_hsv_saturation_of_the_pictures_own_pixels(shape):
    """The mean saturation the cut's choice uses against OpenCV's HSV conversion (S, 0-255) of the same pixels: the
    whole picture when small, every k-th row and column when large (the sample's stride written out); a fine colour
    texture keeps its saturation (a shrunk copy's would be grey)."""
    import cv2

    from recon_core.network.finder import FLAT_SAMPLE, _saturation

    rgb = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    step = 1
    while (-(-shape[0] // step)) * (-(-shape[1] // step)) > FLAT_SAMPLE:
        step += 1
    # the rows and columns the stride skips are grey: a sample with another stride would see them
    skipped = np.ones(shape, bool)
    skipped[::step, ::step] = False
    rgb[skipped] = 128
    reference = cv2.cvtColor(np.ascontiguousarray(rgb[::step, ::step]), cv2.COLOR_RGB2HSV)[..., 1].mean()
    assert _saturation(rgb) == pytest.approx(reference, abs=0.6)
    assert _saturation(rgb) > 100  # noise in every colour: very saturated, however large


@pytest.mark.skipif(not (REPO / "models" / "finder.safetensors").is_file(), reason="no shipped finder")
def test_a_missing_opencv_is_one_sentence_on_the_command_line(tmp_path, monkeypatch, capsys):
    """Without OpenCV a photograph's cut cannot be made: the command line says which package to install, exit 1,
    no traceback and no file."""
    import sys

    from recon_core.io.cli import main
    from recon_core.network.finder import cut_by_colour

    rng = np.random.default_rng(1)
    rgb, truth = _photo_like(rng)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    from recon_core.network.finder import MissingDependency

    with pytest.raises(MissingDependency, match="opencv-python-headless"):
        cut_by_colour(_blurred_alpha(truth, 3, rng), rgb)
    picture = tmp_path / "photo.png"
    Image.fromarray(rgb).save(picture)
    monkeypatch.setenv("RECON_FINDER", str(REPO / "models" / "finder"))
    monkeypatch.setattr("recon_core.io.inference.Reconstructor._find_object",
                        lambda self, rgb, source, timings: cut_by_colour(_blurred_alpha(truth, 3, rng), rgb))
    code = main([str(picture), "-o", str(tmp_path / "out.stl"), "--detail", "low"])
    err = capsys.readouterr().err
    assert code == 1 and "opencv-python-headless" in err and "Traceback" not in err
    assert err.strip().startswith("error: Cutting a photograph's object mask") and "unexpected failure" not in err
    assert not (tmp_path / "out.stl").exists()


def test_reconstructor_takes_the_photographs_cut_mask(tiny_config, monkeypatch):
    """A photograph (a shaded orange object on grainy stripes) through the Reconstructor, its finder's alpha a blurred,
    grown mask: the mask the model takes is that alpha fitted to the picture, here cut along its colours."""
    from recon_core.network import finder as finder_module
    from recon_core.network.finder import fit_to_picture
    from recon_core.network.model import build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    rgb, truth = _photo_like(rng, h=120, w=160)
    own = _blurred_alpha(truth, 5, rng)
    monkeypatch.setattr(finder_module, "finder_alpha", lambda net, picture, fit=True: own)
    fitted = fit_to_picture(own, rgb)
    assert _iou(fitted > 127, truth) > 0.9 > _iou(own > 127, truth)
    result = Reconstructor(build_model(tiny_config), {"trained": False}, finder=_ColourFinder()).reconstruct(
        rgb, vertices=642)
    np.testing.assert_array_equal(result.mask, fitted / np.float32(255))


def test_train_finder_without_out_does_not_write_over_the_shipped_finder(capsys):
    """A bare ``train_finder.py`` trained into models/finder, the shipped finder: it now asks for --out (--check still
    checks the shipped one by default)."""
    from training.train_finder import main

    finder = REPO / "models" / "finder.safetensors"
    before = finder.stat().st_mtime_ns
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give --out, the finder to write, e.g. --out runs/finder/finder"), err
    assert finder.stat().st_mtime_ns == before
