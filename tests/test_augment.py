"""Tests of training/augment.py and the augmented items of training/dataset.py (fake renders, no Blender).

The geometry of an augmented crop must move every target with the picture: the mask and the
picture's object pixels, the projected target points and the occupancy target's silhouette.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import training.dataset as dataset_module
from recon_core.mesh.camera import CROP_MARGIN, look_at
from recon_core.mesh.occupancy import GridSpec
from recon_core.mesh.volume import GRID_BOUND, pack_grid
from tests.test_dataset import SIZE, _box, _write_view
from training.augment import (CUT_PROBABILITY, FILL_RANGE, MAX_CUT, MAX_OFFSET, BackgroundPhotos, augment_box,
                              cutout_mask, jpeg_recompress, lighting_gradient, photometric)
from training.build_backgrounds import RESERVED, build_backgrounds, check_not_reserved, read_licences
from training.build_solids import SOLID_FILE
from training.dataset import RenderedViews
from training.render import sample_surface

CHAIR = "03001627"
RED = (255, 0, 0)
GRID = GridSpec(resolution=32, depth_bins=24, depth_range=0.75)


def _crop_of(box) -> np.ndarray:
    """The crop box prepare_image makes of an object box (recon_core/network/crop.py)."""
    u0, v0, u1, v1 = box
    side = max(u1 - u0, v1 - v0) / (1.0 - 2.0 * CROP_MARGIN)
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    return np.array([cu - side / 2, cv - side / 2, cu + side / 2, cv + side / 2])


def test_augment_box_scale_offset_and_cut():
    obj = np.array([10.0, 20.0, 70.0, 50.0])  # 60 x 30
    rng = np.random.default_rng(0)
    fills, offsets, cuts = [], [], []
    for _ in range(4000):
        crop = _crop_of(augment_box(tuple(obj), rng))
        side = crop[2] - crop[0]
        assert crop[3] - crop[1] == pytest.approx(side)
        fills.append(60.0 / side)
        outside = np.maximum(crop[:2] - obj[:2], 0) + np.maximum(obj[2:] - crop[2:], 0)  # per axis
        cuts.append(float((outside / np.array([60.0, 30.0])).max()))
        if cuts[-1] == 0.0:
            offsets.append(np.abs((crop[:2] + crop[2:]) / 2 - (obj[:2] + obj[2:]) / 2).max() / side)
    fills, cuts = np.array(fills), np.array(cuts)
    assert FILL_RANGE[0] - 1e-9 <= fills.min() < 0.33 and 0.97 < fills.max() <= FILL_RANGE[1] + 1e-9
    assert max(offsets) <= MAX_OFFSET + 1e-9 and max(offsets) > 0.8 * MAX_OFFSET
    assert cuts.max() <= MAX_CUT + 1e-9
    assert abs((cuts > 0).mean() - CUT_PROBABILITY) < 0.03
    first = augment_box(tuple(obj), np.random.default_rng(5))
    assert first == augment_box(tuple(obj), np.random.default_rng(5))


def test_photometric_parts():
    rng = np.random.default_rng(0)
    g = lighting_gradient(rng, 40)
    assert g.shape == (40, 40) and 0.39 <= g.min() and g.max() <= 1.0 and g.max() - g.min() > 0.1
    image = torch.rand(3, 32, 32)
    low, high = jpeg_recompress(image, 30), jpeg_recompress(image, 95)
    assert low.shape == image.shape and (low - image).abs().mean() > (high - image).abs().mean() > 0
    out = [photometric(image, np.random.default_rng(s), colour=True) for s in range(40)]
    assert all(o.shape == image.shape and 0 <= o.min() and o.max() <= 1 for o in out)
    grey = [o for o in out if torch.equal(o[0], o[1]) and torch.equal(o[1], o[2])]
    assert 0 < len(grey) < 20, "grey-scale is drawn sometimes"
    assert torch.equal(photometric(image, np.random.default_rng(3), True), out[3])


def _write_photos(folder: Path, count: int = 3) -> Path:
    """Pictures with a red channel below 60, so the red object is the only red thing in a composite."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        pixels = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
        pixels[..., 0] //= 5
        Image.fromarray(pixels).resize((200, 160), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    """One model (the box of tests/test_dataset.py) in pure red, five views, its solid; photographs."""
    root = tmp_path_factory.mktemp("augment")
    verts, faces = _box()
    folder = root / "renders" / CHAIR / "m0"
    folder.mkdir(parents=True)
    points, normals = sample_surface(verts, faces, 20000, np.random.default_rng(0))
    np.savez(folder / "points.npz", points=points, normals=normals)
    cameras = [look_at(30, 20, 1.7, 40.0), look_at(200, -20, 2.1, 35.0), look_at(300, 35, 1.9, 45.0),
               look_at(120, 10, 1.6, 30.0), look_at(75, -30, 2.0, 50.0)]
    for view, camera in enumerate(cameras):
        _write_view(folder, view, camera, verts, faces, sketch=view == 2, colour=RED)
    # The box's solid, cell by cell (recon_core/mesh/volume.py layout: [i, j, k] along world x, y, z).
    res = 64
    centres = -GRID_BOUND + (np.arange(res) + 0.5) * 2 * GRID_BOUND / res
    x, y, z = np.meshgrid(centres, centres, centres, indexing="ij")
    lo, hi = verts.min(0), verts.max(0)
    solid = (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
    np.savez(folder / SOLID_FILE, packed=np.frombuffer(pack_grid(solid), dtype=np.uint8), resolution=res,
             bound=GRID_BOUND)
    (root / "shapenet").mkdir()
    (root / "shapenet" / "manifest.json").write_text(
        json.dumps({"models": [{"synset": CHAIR, "model_id": "m0", "split": "train"}]}))
    return root, _write_photos(root / "photos")


def _views(root: Path, photos: Path, **kwargs) -> RenderedViews:
    return RenderedViews(root / "shapenet", root / "renders", "train", num_points=3000, augment=True,
                         backgrounds=photos, occupancy=GRID, **kwargs)


def test_augmented_items_repeat_per_seed(red):
    root, photos = red
    a, b = _views(root, photos, augment_seed=7), _views(root, photos, augment_seed=7)
    other, fresh = _views(root, photos, augment_seed=8), _views(root, photos)
    for i in range(len(a)):
        x, y, z = a[i], b[i], other[i]
        for key, value in x.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, y[key]), f"item {i}: {key} differs with the same seed"
            else:
                assert value == y[key]
        assert not torch.equal(x["image"], z["image"]) and not torch.equal(x["K"], z["K"])
        assert not torch.equal(fresh[i]["image"], fresh[i]["image"]), "no augment_seed: every draw differs"


@pytest.mark.parametrize("option", ["styles", "cutout"])
def test_redrawn_views_repeat_per_seed_and_keep_their_targets(red, option):
    """data.styles = 1: every shaded view is redrawn (clip art or pencil); data.cutout = 1: every shaded view over a
    background is cut out onto white by an imperfect mask. Either way the crop and every target are those of the
    plain view with the same seed, the picture repeats per seed, and the sketch views stay as rendered on paper."""
    root, photos = red
    plain = _views(root, photos, augment_seed=7)
    changed_views, again = (_views(root, photos, augment_seed=7, **{option: 1.0}) for _ in range(2))
    changed = 0
    for i in range(len(plain)):
        x, y = plain[i], changed_views[i]
        for key in ("mask", "depth", "K", "occupancy", "grid_camera"):  # points: random draws
            assert torch.equal(x[key], y[key]), (i, key)
        assert torch.equal(y["image"], again[i]["image"])
        if not x["sketch"]:
            assert not torch.equal(x["image"], y["image"])
            changed += 1
        else:
            assert torch.equal(x["image"], y["image"])
    assert changed == 4
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=option):
            _views(root, photos, **{option: bad})


def test_cutout_is_the_plain_picture_on_exact_white(red, monkeypatch):
    """data.cutout = 1 without the camera's effects: each shaded view is its plain picture (same seed) where the
    cut-out's mask keeps it and exact white far from the object; with the camera's effects (noise, JPEG, lighting,
    colour) the white far from the object is still exact, as behind the object finder's cut-out at inference."""
    root, photos = red
    far_views, kept_shares = 0, []
    for effects in (False, True):
        if not effects:
            monkeypatch.setattr(dataset_module, "photometric", lambda image, rng, colour: image)
        else:
            monkeypatch.undo()
        for seed in range(3):
            plain, cut = _views(root, photos, augment_seed=seed), _views(root, photos, augment_seed=seed, cutout=1.0)
            for i in range(len(plain)):
                x, y = plain[i], cut[i]
                if x["sketch"]:
                    continue
                # beyond the grow (4), the band of taken-in ellipses (7), their largest radius (10 at 137 px), the blur
                far = torch.nn.functional.max_pool2d(x["mask"][None, None], 2 * 30 + 1, 1, 30)[0, 0] == 0
                if far.any():
                    far_views += 1
                    assert torch.equal(y["image"][:, far], torch.ones_like(y["image"][:, far])), (effects, seed, i)
                if not effects:
                    # image = plain * k + (1 - k), k the cut-out's mask: read k off each pixel's darkest channel
                    channel = x["image"].argmin(0, keepdim=True)
                    xd, yd = x["image"].gather(0, channel)[0], y["image"].gather(0, channel)[0]
                    dark = xd < 0.9
                    k = (yd[dark] - 1.0) / (xd[dark] - 1.0)
                    assert k.min() >= -1e-4 and k.max() <= 1 + 1e-4
                    interior = -torch.nn.functional.max_pool2d(-x["mask"][None, None], 11, 1, 5)[0, 0] > 0.5
                    kept_shares.append((k[interior[dark]] > 0.999).float().mean().item())
    assert far_views >= 4
    # an ellipse left out can take half of a small object's inside, but most of the object stays
    assert len(kept_shares) == 12 and min(kept_shares) > 0.2 and np.mean(kept_shares) > 0.75, kept_shares


def test_cutout_mask_is_the_mask_with_bounded_errors():
    """The cut-out's mask repeats per seed, lies in [0, 1], keeps most of the object and takes little beyond it:
    its errors are at most a grown or shrunk edge and a few ellipses (each at most 15 % of the side across)."""
    cover = torch.zeros(200, 200)
    cover[60:140, 70:130] = 1.0
    masks = [cutout_mask(cover, np.random.default_rng(seed)) for seed in range(20)]
    assert torch.equal(masks[3], cutout_mask(cover, np.random.default_rng(3)))
    assert len({m.sum().item() for m in masks}) > 10, "the errors vary with the seed"
    for m in masks:
        assert m.shape == cover.shape and m.dtype == torch.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
        inside = (m > 0.5) & (cover > 0.5)
        iou = inside.sum() / ((m > 0.5) | (cover > 0.5)).sum()
        assert iou > 0.6, iou
        far = torch.ones_like(cover, dtype=torch.bool)
        # beyond the grow (4), the band where ellipses are centred (7), the largest ellipse's radius (15) and the blur
        far[60 - 30:140 + 30, 70 - 30:130 + 30] = False
        assert m[far].max() < 1e-3
    assert torch.equal(cutout_mask(torch.zeros(64, 64), np.random.default_rng(0)), torch.zeros(64, 64))


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    h, w = mask.shape
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = np.max([p[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return mask


def test_augmented_mask_points_and_occupancy_follow_the_picture(red, monkeypatch):
    root, photos = red
    monkeypatch.setattr(dataset_module, "photometric", lambda image, rng, colour: image)  # keep the pixels
    monkeypatch.setattr(dataset_module, "PHOTO_SHARE", 1.0)  # photographs only: nothing else is red
    plain = RenderedViews(root / "shapenet", root / "renders", "train", num_points=3000)
    meta = [json.loads((root / "renders" / CHAIR / "m0" / f"{v:03d}.json").read_text()) for v in range(len(plain))]
    plain_zoom = [plain[i]["K"][0, 0].item() / meta[i]["K"][0][0] for i in range(len(plain))]
    fills, cut, moved = [], 0, 0
    for seed in range(12):
        ds = _views(root, photos, augment_seed=seed)
        for i in range(len(ds)):
            item = ds[i]
            image, mask = item["image"].numpy(), item["mask"].numpy() > 0.5
            # The picture's red pixels are the mask, up to the one-pixel band of its edge.
            red_px = (image[0] > 0.7) & (image[1] < 0.3) & (image[2] < 0.3)
            assert not (red_px & ~_dilate(mask)).any(), f"seed {seed} item {i}: red pixels off the mask"
            assert not (mask & ~_dilate(red_px)).any(), f"seed {seed} item {i}: mask pixels not red"
            assert (red_px & mask).sum() / (red_px | mask).sum() > 0.8
            # The target points project onto the mask through K (where they fall inside the crop).
            cam = item["points"].double().numpy() + item["T"].double().numpy()
            uvw = cam @ item["K"].double().numpy().T
            uv = uvw[:, :2] / uvw[:, 2:]
            inside = ((uv >= 0) & (uv < SIZE)).all(axis=1)
            cols, rows = uv[inside].astype(int).T
            # The mask is the renders' pixels, nearest-sampled: its edge is off by up to one of them.
            zoom = item["K"][0, 0].item() / plain[i]["K"][0, 0].item() * plain_zoom[i]  # crop pixels per render pixel
            near = _dilate(mask, int(np.ceil(zoom)))
            assert near[rows, cols].mean() > 0.99, f"seed {seed} item {i}: points off the mask"
            # The occupancy target's silhouette is the mask seen at the cells' centres.
            sil = item["occupancy"].numpy().any(axis=0)
            centres = ((np.arange(GRID.resolution) + 0.5) * SIZE / GRID.resolution).astype(int)
            cells = mask[np.ix_(centres, centres)]
            assert not (sil & ~_dilate(cells)).any() and not (cells & ~_dilate(sil)).any(), f"seed {seed} item {i}"
            assert (sil & cells).sum() / (sil | cells).sum() > 0.7, f"seed {seed} item {i}"
            ys, xs = np.nonzero(mask)
            fills.append(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) / SIZE)
            cut += bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            moved += not torch.allclose(item["K"], plain[i]["K"], atol=2.0)
    assert min(fills) < 0.4 and max(fills) > 0.95, "small and large objects"
    assert cut > 0, "some objects cut by the border"
    assert moved > 0.8 * len(fills), "the crops differ from the unaugmented one"


def test_background_photos(red, tmp_path):
    _, photos = red
    bank = BackgroundPhotos(photos)
    assert bank.available and len(bank) == 3
    crop = bank.sample(np.random.default_rng(0), 50)
    assert crop.shape == (50, 50, 3) and crop.dtype == np.float32 and crop[..., 0].max() < 70
    assert not BackgroundPhotos(tmp_path / "missing").available and not BackgroundPhotos(None).available
    with pytest.raises(ValueError, match="build_backgrounds"):
        BackgroundPhotos(tmp_path).sample(np.random.default_rng(0), 8)


def test_build_backgrounds_from_a_cached_package(tmp_path, monkeypatch):
    import training.build_backgrounds as bb

    cache = tmp_path / "cache"
    root = cache / "extracted" / "fake-wallpapers"
    (root / "usr/share/backgrounds").mkdir(parents=True)
    (root / "usr/share/doc/fake-wallpapers").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (300, 200), (90, 120, 30)).save(root / "usr/share/backgrounds" / name)
    (root / "usr/share/doc/fake-wallpapers/copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+\n\n"
        "Files: 16.04/b.jpg\n       other.png\nCopyright: 2018, Somebody\nLicense: CC-BY-4.0\n\n"
        "Files: debian/*\nCopyright: 2021 Packager\nLicense: MIT\n")
    monkeypatch.setattr(bb, "SOURCES", {"fake-wallpapers": "usr/share/backgrounds/*.jpg"})
    monkeypatch.setattr(bb.shutil, "which", lambda tool: None)  # everything is cached: apt-get is not needed
    out = build_backgrounds(tmp_path / "bg", cache, crops=5, size=32)
    manifest = json.loads((out / "sources.json").read_text())
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"{n:04d}.jpg" for n in range(5)]
    assert [c["license"] for c in manifest["crops"]] == ["GPL-2+", "CC-BY-4.0", "GPL-2+", "CC-BY-4.0", "GPL-2+"]
    assert Image.open(out / "0000.jpg").size == (32, 32)
    stamp = (out / "0003.jpg").stat().st_mtime_ns
    build_backgrounds(tmp_path / "bg", cache, crops=5, size=32)  # same settings: left as it is
    assert (out / "0003.jpg").stat().st_mtime_ns == stamp
    assert len(read_licences(root / "usr/share/doc/fake-wallpapers/copyright")) == 3

    monkeypatch.setattr(bb, "SOURCES", {"other-wallpapers": "*.jpg"})  # not cached, and no apt-get
    with pytest.raises(RuntimeError, match="apt-get is not available"):
        build_backgrounds(tmp_path / "bg2", cache, crops=2, size=32)
    assert bb.main(["--out", str(tmp_path / "bg2"), "--cache", str(cache), "--crops", "2"]) == 2


def _fake_wallpapers(tmp_path, monkeypatch) -> Path:
    """A package cache holding one package of two photographs, the only source."""
    import training.build_backgrounds as bb

    cache = tmp_path / "cache"
    root = cache / "extracted" / "fake-wallpapers" / "usr/share/backgrounds"
    root.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (300, 200), (90, 120, 30)).save(root / name)
    monkeypatch.setattr(bb, "SOURCES", {"fake-wallpapers": "usr/share/backgrounds/*.jpg"})
    monkeypatch.setattr(bb.shutil, "which", lambda tool: None)
    return cache


def _run_backgrounds(capsys, out: Path, cache: Path, crops: int) -> tuple[int, str]:
    import training.build_backgrounds as bb

    code = bb.main(["--out", str(out), "--cache", str(cache), "--crops", str(crops), "--size", "32"])
    return code, capsys.readouterr().err.strip()


def test_build_backgrounds_replaces_only_its_own_output(tmp_path, monkeypatch, capsys):
    cache = _fake_wallpapers(tmp_path, monkeypatch)
    work = tmp_path / "work"
    precious = work / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("hi\n")
    code, err = _run_backgrounds(capsys, precious, cache, 2)
    assert code == 2 and err.startswith("error: ") and "did not write" in err and "\n" not in err
    assert (precious / "notes.txt").read_text() == "hi\n" and (precious / "sub").is_dir()

    a_file = work / "afile"
    a_file.write_text("mine\n")
    for out in (a_file, a_file / "sub"):
        code, err = _run_backgrounds(capsys, out, cache, 2)
        assert code == 2 and "is a file" in err and "\n" not in err and "Errno" not in err
    assert a_file.read_text() == "mine\n"

    out = work / "bg"
    assert _run_backgrounds(capsys, out, cache, 5)[0] == 0
    (out / "notes.txt").write_text("hi\n")  # not one of its files: the folder is no longer only its output
    assert _run_backgrounds(capsys, out, cache, 3)[0] == 2 and (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    assert _run_backgrounds(capsys, out, cache, 3)[0] == 0  # its own earlier output: replaced
    assert sorted(p.name for p in out.iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg", "sources.json"]
    (work / "empty").mkdir()
    assert _run_backgrounds(capsys, work / "empty", cache, 1)[0] == 0
    assert sorted(p.name for p in work.iterdir()) == ["afile", "bg", "empty", "precious"]  # nothing left beside


def test_build_backgrounds_leaves_nothing_behind_when_writing_fails(tmp_path, monkeypatch, capsys):
    cache = _fake_wallpapers(tmp_path, monkeypatch)
    work = tmp_path / "work"
    out = work / "bg"
    assert _run_backgrounds(capsys, out, cache, 2)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    original, saved = Image.Image.save, []

    def disk_full(self, fp, *args, **kwargs):  # the second crop does not fit
        saved.append(fp)
        if len(saved) > 1:
            raise OSError(28, "No space left on device", str(fp))
        original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, err = _run_backgrounds(capsys, out, cache, 3)
    assert code == 2 and err.startswith("error: ") and "No space left" in err and "\n" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in work.iterdir()) == ["bg"]


def test_reserved_packages_are_refused():
    check_not_reserved(["lomiri-wallpapers-16.04", "mate-backgrounds"])
    for pkg in ("torcs-data", "openclipart-png", "tuxpaint-stamps-animals"):
        with pytest.raises(ValueError, match="reserved"):
            check_not_reserved([pkg])
    assert "0ad-data" in RESERVED


def test_read_gimp_pattern_and_tiling(tmp_path):
    import struct

    import training.build_backgrounds as bb

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # height 5, width 7
    name = b"Test\x00"
    header = struct.pack(">5I", 24 + len(name), 1, 7, 5, 3) + b"GPAT" + name
    path = tmp_path / "t.pat"
    path.write_bytes(header + pixels.tobytes())
    assert np.array_equal(np.asarray(bb.read_gimp_pattern(path)), pixels)
    tiled = np.asarray(bb._open_picture(path))
    assert tiled.shape[0] >= bb.PATTERN_SIDE and tiled.shape[1] >= bb.PATTERN_SIDE
    assert np.array_equal(tiled[5:10, 14:21], pixels)  # the tile repeated
    grey = tmp_path / "g.pat"
    grey.write_bytes(struct.pack(">5I", 24 + len(name), 1, 7, 5, 1) + b"GPAT" + name + pixels[..., 0].tobytes())
    assert np.array_equal(np.asarray(bb.read_gimp_pattern(grey))[..., 1], pixels[..., 0])
    path.write_bytes(header[:20] + b"XXXX" + header[24:] + pixels.tobytes())
    with pytest.raises(ValueError, match="not a GIMP pattern"):
        bb.read_gimp_pattern(path)
    path.write_bytes(header + pixels.tobytes()[:50])
    with pytest.raises(ValueError, match="truncated"):
        bb.read_gimp_pattern(path)
