"""Tests of training/dataset.py on a small fake renders folder written directly (no Blender)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from recon_core.mesh.camera import Camera, look_at
from recon_core.network.categories import category_index
from training.dataset import UNKNOWN_CATEGORY, RenderedViews
from training.render import sample_surface

SIZE = 137
CHAIR, EXTRA = "03001627", "02808440"  # one of the 13 categories, one outside them (bathtub: not held out)
SYNSETS = {"m0": CHAIR, "m1": EXTRA, "m2": CHAIR}


def _box() -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.array([-0.35, -0.15, -0.2]), np.array([0.25, 0.3, 0.1])
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    return lo + corners * (hi - lo), faces


def _write_view(folder: Path, view: int, camera: Camera, verts: np.ndarray, faces: np.ndarray, sketch: bool,
                colour=(200, 40, 40), shaded: bool = False) -> None:
    """One rendered view's files (RGBA, mask, depth, camera JSON); ``shaded``: a left-to-right ramp darkens it."""
    s = 4  # supersampling
    mask_img = Image.new("L", (camera.width * s, camera.height * s), 0)
    draw = ImageDraw.Draw(mask_img)
    uv = camera.project(verts) * s - 0.5  # PIL puts hi-res pixel J's centre at coordinate J
    for tri in faces:
        draw.polygon([tuple(p) for p in uv[tri]], fill=255)
    cover = np.asarray(mask_img, np.float32).reshape(camera.height, s, camera.width, s).mean(axis=(1, 3))
    mask = np.where(cover > 127.5, 255, 0).astype(np.uint8)
    rgba = np.zeros((camera.height, camera.width, 4), np.uint8)
    rgba[..., :3] = colour
    if shaded:
        ramp = np.linspace(0.6, 1.0, camera.width, dtype=np.float32)[None, :, None]
        rgba[..., :3] = (rgba[..., :3] * ramp).astype(np.uint8)
    rgba[..., 3] = mask
    depth = np.where(mask > 0, camera.world_to_camera(np.zeros((1, 3)))[0, 2], 0.0).astype(np.float16)
    Image.fromarray(rgba, "RGBA").save(folder / f"{view:03d}.png")
    Image.fromarray(mask, "L").save(folder / f"{view:03d}_mask.png")
    np.save(folder / f"{view:03d}_depth.npy", depth)
    meta = camera.to_json() | {"view": view, "sketch": sketch, "azimuth": 0.0}
    (folder / f"{view:03d}.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    verts, faces = _box()
    rng = np.random.default_rng(0)
    records = []
    cameras = [look_at(30, 20, 1.7, 40.0), look_at(200, -20, 2.1, 35.0), look_at(300, 35, 1.9, 45.0)]
    for model_id, split in (("m0", "train"), ("m1", "train"), ("m2", "val")):
        synset = SYNSETS[model_id]
        records.append({"synset": synset, "model_id": model_id, "split": split})
        folder = root / "renders" / synset / model_id
        folder.mkdir(parents=True)
        points, normals = sample_surface(verts, faces, 10000, rng)
        np.savez(folder / "points.npz", points=points, normals=normals)
        for view, camera in enumerate(cameras):
            _write_view(folder, view, camera, verts, faces, sketch=view == 2)
    (root / "renders" / EXTRA / "m1" / "001_depth.npy").unlink()  # an unfinished view
    (root / "shapenet").mkdir()
    (root / "shapenet" / "manifest.json").write_text(json.dumps({"models": records}))
    return root, verts


def test_index_and_categories(fake):
    root, _ = fake
    ds = RenderedViews(root / "shapenet", root / "renders", "train")
    assert len(ds) == 5  # 2 (one view of m1 is incomplete) + 3; m2 is in "val"; sorted by synset
    assert ds.categories == [UNKNOWN_CATEGORY] * 2 + [category_index("chair")] * 3
    assert [ds.category_of(i) for i in range(len(ds))] == ds.categories
    assert [(ds[i]["model_id"], ds[i]["view"]) for i in range(len(ds))] == [
        ("m1", 0), ("m1", 2), ("m0", 0), ("m0", 1), ("m0", 2)
    ]
    assert len(RenderedViews(root / "shapenet", root / "renders", "val")) == 3
    assert len(RenderedViews(root / "shapenet", root / "renders", "all")) == 8


def test_item_shapes_and_types(fake):
    root, _ = fake
    ds = RenderedViews(root / "shapenet", root / "renders", "train", num_points=500)
    item = ds[2]
    shapes = {"image": (3, SIZE, SIZE), "mask": (SIZE, SIZE), "depth": (SIZE, SIZE), "K": (3, 3), "R": (3, 3),
              "T": (3,), "points": (500, 3), "normals": (500, 3)}  # fmt: skip
    for key, shape in shapes.items():
        assert item[key].shape == shape and item[key].dtype == torch.float32, key
    assert item["category"].dtype == torch.int64 and item["category"].shape == ()
    assert item["model_id"] == "m0" and item["view"] == 0 and item["sketch"] is False and ds[4]["sketch"] is True
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert torch.all(item["image"][:, 0, 0] == 1.0), "white background without augmentation"
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert torch.all((item["depth"] > 0) <= (item["mask"] > 0))
    assert torch.equal(ds[1]["points"], ds[1]["points"]), "deterministic without augmentation"


def test_points_in_view_frame(fake):
    root, _ = fake
    ds = RenderedViews(root / "shapenet", root / "renders", "train", num_points=300)
    for i in (2, 3):
        item = ds[i]
        R = item["R"].double().numpy()
        world = np.load(root / "renders" / CHAIR / item["model_id"] / "points.npz")
        back = item["points"].double().numpy() @ R  # R.T @ p_view, row-wise
        d = np.abs(back[:, None] - world["points"][None]).sum(-1)
        nearest = d.argmin(axis=1)
        assert d.min(axis=1).max() < 1e-5
        assert np.allclose(item["normals"].double().numpy() @ R, world["normals"][nearest], atol=1e-5)


def _dilated(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return np.max([p[1 + dy : SIZE + 1 + dy, 1 + dx : SIZE + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def test_cropped_mask_matches_projection(fake):
    root, verts = fake
    ds = RenderedViews(root / "shapenet", root / "renders", "all", num_points=4000)
    for i in range(len(ds)):
        item = ds[i]
        cam = item["points"].double().numpy() + item["T"].double().numpy()  # p_cam = p_view + T
        uvw = cam @ item["K"].double().numpy().T
        uv = uvw[:, :2] / uvw[:, 2:]
        mask = item["mask"].numpy() > 0.5
        near = _dilated(mask)  # points on the silhouette may fall just past the centres of its pixels
        cols, rows = np.clip(uv.astype(int), 0, SIZE - 1).T
        assert near[rows, cols].mean() > 0.99, f"item {i}: projected points off the cropped mask"
        assert mask[rows, cols].mean() > 0.75
        # The mask's box and the projected corners' box agree to about a pixel; the object fills the crop
        # up to its margin.
        corners = (verts @ item["R"].double().numpy().T + item["T"].double().numpy()) @ item["K"].double().numpy().T
        corners = corners[:, :2] / corners[:, 2:]
        ys, xs = np.nonzero(mask)
        box_mask = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        box_proj = np.array([*corners.min(0), *corners.max(0)])
        meta = json.loads((root / "renders" / SYNSETS[item["model_id"]] / f"{item['model_id']}/{item['view']:03d}.json").read_text())
        scale = item["K"][0, 0].item() / meta["K"][0][0]  # crop pixels per original pixel
        assert np.abs(box_mask - box_proj).max() < 1.0 * scale + 0.5, (box_mask, box_proj)
        assert max(box_mask[2] - box_mask[0], box_mask[3] - box_mask[1]) == pytest.approx(0.8 * SIZE, abs=2)


def test_augment_changes_the_image_and_the_crop_only(fake):
    root, _ = fake
    plain = RenderedViews(root / "shapenet", root / "renders", "train")
    aug = RenderedViews(root / "shapenet", root / "renders", "train", augment=True)
    for i in range(len(plain)):
        a, b = plain[i], aug[i]
        for key in ("R", "T"):  # the crop (K, mask, depth) moves: tests/test_augment.py checks that it stays aligned
            assert torch.equal(a[key], b[key]), key
        assert b["image"].shape == a["image"].shape and 0 <= b["image"].min() and b["image"].max() <= 1
        assert not torch.equal(a["image"], b["image"])
        assert not torch.equal(a["K"], b["K"])


@pytest.fixture(scope="module")
def packed(fake, tmp_path_factory):
    from training.pack_views import pack_views

    root, _ = fake
    return pack_views(root / "shapenet", root / "renders", tmp_path_factory.mktemp("pack") / "pack",
                      splits=("train", "val"), views_per_model=0, points=10000, backgrounds=None)


@pytest.mark.parametrize("augment", [False, True])
def test_a_pack_gives_the_folders_items(fake, packed, augment):
    """The pack (training/pack_views.py) read back: the same items as the render folders, but for the JPEG's
    colour and float16's points."""
    root, _ = fake
    kwargs = dict(augment=augment, augment_seed=5 if augment else None, num_points=500)
    for split in ("train", "val"):
        folders = RenderedViews(root / "shapenet", root / "renders", split, **kwargs)
        pack = RenderedViews("unused", "unused", split, pack=packed, **kwargs)
        assert len(pack) == len(folders) and pack.categories == folders.categories
        for i in range(len(folders)):
            a, b = folders[i], pack[i]
            assert (a["model_id"], a["view"], a["sketch"]) == (b["model_id"], b["view"], b["sketch"])
            for key in ("mask", "K", "R", "T", "category"):
                assert torch.equal(a[key], b[key]), key
            torch.testing.assert_close(b["depth"], a["depth"], atol=1e-3, rtol=0)
            assert (a["image"] - b["image"]).abs().mean() < 0.02
            torch.testing.assert_close(b["points"], a["points"], atol=2e-3, rtol=0)  # float16: all 10,000, drawn alike


def test_a_pack_is_small_and_its_bad_input_is_clear(fake, packed, tmp_path):
    from training.pack_views import main

    root, _ = fake
    view_bytes = sum(p.stat().st_size for p in (root / "renders").rglob("*") if p.name != "points.npz")
    with np.load(packed / "views.npz") as data:
        assert data["blob"].nbytes < view_bytes / 3
    with pytest.raises(ValueError, match="holds no views.npz"):
        RenderedViews("unused", "unused", "train", pack=tmp_path)
    with pytest.raises(ValueError, match="holds no solids"):
        from recon_core.mesh.occupancy import GridSpec

        RenderedViews("unused", "unused", "train", pack=packed, occupancy=GridSpec(8, 8, 0.75))
    assert main(["--shapenet", str(tmp_path / "none"), "--out", str(tmp_path / "p")]) == 2
    assert main(["--shapenet", str(root / "shapenet"), "--renders", str(root / "renders"), "--splits", "test",
                 "--backgrounds", "none", "--out", str(tmp_path / "p")]) == 2


def test_pack_views_refuses_a_backgrounds_folder_without_photographs(fake, tmp_path, capsys):
    """A mistyped --backgrounds packed no photograph and exited 0, so a GPU run trained without them: now one sentence
    and exit 2; ``none`` (or --background-count 0) packs none on purpose."""
    from training.pack_views import main

    root, _ = fake
    argv = ["--shapenet", str(root / "shapenet"), "--renders", str(root / "renders"), "--views-per-model", "1",
            "--points", "16", "--out", str(tmp_path / "p")]
    (tmp_path / "empty").mkdir()
    for given, what in ((tmp_path / "nobg", "does not exist"), (tmp_path / "empty", "holds no photographs")):
        assert main(argv + ["--backgrounds", str(given)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --backgrounds {given} {what}") and len(err.strip().splitlines()) == 1, err
        assert "build_backgrounds.py --sources finder" in err, "training's photographs, never the check set's"
        assert not (tmp_path / "p").exists()
    assert main(argv + ["--backgrounds", "none"]) == 0
    assert main(argv + ["--backgrounds", str(tmp_path / "nobg"), "--background-count", "0", "--out",
                        str(tmp_path / "q")]) == 0
    assert not (tmp_path / "p" / "backgrounds").exists() and not (tmp_path / "q" / "backgrounds").exists()


@pytest.mark.parametrize("extra,named", [(["--points", "0"], "--points"), (["--points", "-1"], "--points"),
                                         (["--views-per-model", "-1"], "--views-per-model"),
                                         (["--splits", "train", "tset"], "--splits tset: no such split"),
                                         (["--out", "FILE"], "--out"), (["--out", "FILE/x"], "--out")])
def test_pack_views_refuses_bad_options_in_one_sentence(fake, tmp_path, capsys, extra, named):
    from training.pack_views import main

    root, _ = fake
    (tmp_path / "FILE").write_text("")
    extra = [str(tmp_path / a) if a.startswith("FILE") else a for a in extra]
    argv = ["--shapenet", str(root / "shapenet"), "--renders", str(root / "renders"), "--out", str(tmp_path / "p")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]  # nothing written, no temporary folder left


def test_a_pack_that_fails_after_its_network_leaves_nothing(fake, tiny_config, tmp_path):
    """--init with a split of no views: the network is packed first, but the failed pack leaves no files; a good
    pack moves its views and its network into --out at once."""
    from recon_core.io.weights import save_model
    from recon_core.network.model import build_model
    from training.pack_views import main

    root, _ = fake
    stem = save_model(build_model(tiny_config), tmp_path / "net" / "model").with_suffix("")
    argv = ["--shapenet", str(root / "shapenet"), "--renders", str(root / "renders"), "--init", str(stem),
            "--backgrounds", "none", "--out", str(tmp_path / "packs" / "p")]
    assert main(argv + ["--splits", "test"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]
    assert main(argv + ["--views-per-model", "1", "--points", "16"]) == 0
    assert sorted(p.name for p in (tmp_path / "packs").iterdir()) == ["p"]
    assert sorted(p.name for p in (tmp_path / "packs" / "p").iterdir()) == ["init.json", "init.safetensors",
                                                                          "views.npz"]


def test_training_reads_a_pack_where_pytorch3d_is_not_installed(packed, tmp_path):
    """What a machine the renders cannot reach runs: train.py on the pack alone, without pytorch3d."""
    import os
    import subprocess
    import sys

    from tests.test_train import REPO, TINY_ARGS, _losses

    out = tmp_path / "run"
    args = [a for a in TINY_ARGS if not a.startswith("data.synthetic")]
    args += ["data.synthetic=0", f"data.pack={packed}", f"data.backgrounds={tmp_path / 'none'}", "data.num_points=500",
             "data.styles=0.5", "data.cutout=0.5", f"run.out={out}", "optim.steps=2"]
    blocked = ("import runpy, sys; sys.modules['pytorch3d'] = None; "
               f"sys.argv = ['train.py', *{args!r}]; runpy.run_path('training/train.py', run_name='__main__')")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "(pack " in proc.stdout + proc.stderr
    assert sorted(_losses(out)) == [1, 2]


def test_a_carried_network_comes_back_within_half_a_step(tiny_config, tmp_path):
    """``pack_views.py --init``: the network without its bank, large weights as int8 per output channel; unpacked,
    every weight is within half a quantisation step of the original (against an element-by-element reference),
    the rest is exact, and the result loads and starts a training run (``--init-from``)."""
    from recon_core.io.weights import load_model, save_model
    from recon_core.network.model import build_model
    from training.pack_views import main, pack_init, quantise_rows, unpack_init

    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 2, 2)).astype(np.float32)
    w[2] = 0.0  # an all-zero channel keeps a usable scale
    q, scale = quantise_rows(w)
    for c in range(w.shape[0]):  # the obvious reference: each channel on its own
        step = max(abs(float(x)) for x in w[c].ravel()) / 127.0
        for x, qx in zip(w[c].ravel(), q[c].ravel()):
            assert qx == (round(float(x) / step) if step else 0)
    assert np.abs(q.astype(np.float32) * scale[:, None, None, None] - w).max() <= scale.max() / 2 + 1e-7

    torch.manual_seed(0)
    model = build_model(tiny_config)
    stem = save_model(model, tmp_path / "net" / "model", {"trained": True, "steps": 7}).with_suffix("")
    assert main(["--init", str(stem), "--out", str(tmp_path / "pack"), "--shapenet", str(tmp_path / "none")]) == 2
    carried = pack_init(stem, tmp_path / "pack")
    assert carried.stat().st_size < 0.6 * stem.with_suffix(".safetensors").stat().st_size
    assert main(["--unpack-init", str(tmp_path / "pack"), "--out", str(tmp_path / "back" / "model")]) == 0
    back, meta = load_model(tmp_path / "back" / "model")
    assert meta["steps"] == 7 and meta["model"]["shape_bank"] is False
    original = {k: v.float() for k, v in model.state_dict().items()}
    int8 = 0
    for k, v in back.state_dict().items():
        o = original[k]
        if v.is_floating_point() and v.dim() >= 2 and v.numel() >= 4096:
            step = o.reshape(len(o), -1).abs().amax(1) / 127
            err = (v.float() - o).reshape(len(o), -1).abs().amax(1)
            assert (err <= 0.63 * step + 1e-6).all(), k  # half a step, plus fp16 rounding twice (2^-11 of 127 steps)
            int8 += 1
        elif v.is_floating_point():
            torch.testing.assert_close(v.float(), o.half().float(), rtol=0, atol=0)
        else:
            assert torch.equal(v, o.to(v.dtype)), k
    assert int8 > 10
    with pytest.raises(ValueError, match="carries no network"):
        unpack_init(tmp_path / "none", tmp_path / "x")


def test_a_carried_network_named_with_a_dot_keeps_it(tiny_config, tmp_path):
    """``--init runs/net.v2`` packs runs/net.v2.*, and ``--unpack-init`` to ``out.v3`` writes out.v3.* (with_suffix
    made runs/net.* of them)."""
    from recon_core.io.weights import load_model, save_model
    from recon_core.network.model import build_model
    from training.pack_views import main

    stem = save_model(build_model(tiny_config), tmp_path / "net.v2", {"trained": True, "steps": 3})
    from training.pack_views import pack_init

    pack_init(stem, tmp_path / "pack")
    assert main(["--unpack-init", str(tmp_path / "pack"), "--out", str(tmp_path / "back" / "out.v3")]) == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["out.v3.json", "out.v3.safetensors"]
    assert load_model(tmp_path / "back" / "out.v3")[1]["steps"] == 3


def test_a_new_pack_takes_away_an_earlier_packs_entries_it_does_not_hold(tmp_path):
    """A pack built without --init into a folder that holds a pack built with it: the earlier carried network goes
    (the GPU script would start from it), the views are replaced, and what is not a pack's stays."""
    from training.pack_views import _move_into

    out, built = tmp_path / "pack", tmp_path / "built"
    (out / "backgrounds").mkdir(parents=True)
    for name in ("views.npz", "init.json", "init.safetensors", "notes.txt"):
        (out / name).write_text("old")
    built.mkdir()
    (built / "views.npz").write_text("new")
    _move_into(built, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "views.npz"]
    assert (out / "views.npz").read_text() == "new" and (out / "notes.txt").read_text() == "old"


def test_the_loader_benchmark_counts_the_packs_pictures(packed, tmp_path, capsys):
    """bench.train_throughput --loader N: the configured loader's pictures a second over N batches after the first."""
    import yaml

    from bench import train_throughput
    from tests.test_train import REPO

    cfg = yaml.safe_load((REPO / "training" / "configs" / "device.yaml").read_text())
    cfg["data"].update(pack=str(packed), backgrounds=str(tmp_path / "none"), workers=0, num_points=500)
    cfg["optim"]["batch_size"] = 3
    path = tmp_path / "loader.yaml"
    path.write_text(yaml.safe_dump(cfg))
    returned = train_throughput.main(["--config", str(path), "--loader", "2", "--threads", "1"])
    printed = json.loads(capsys.readouterr().out)
    loader = printed["results"]["loader"]
    assert returned["results"]["loader"] == loader
    assert (loader["batches"], loader["batch_size"], loader["workers"]) == (2, 3, 0)
    assert loader["images_per_s"] > 0 and loader["seconds"] > 0
    assert loader["pictures"] == 6  # 2 batches of 3, the first (workers starting) not counted
    assert loader["images_per_s"] == pytest.approx(6 / loader["seconds"], rel=0.05)  # seconds rounded to 0.1 ms


def _cut(path: Path, keep: int) -> None:
    """Truncate ``path`` to its first ``keep`` bytes (a copy cut short)."""
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("case,named", [
    ("finder", "is the object finder's config"), ("truncated", "are truncated or corrupt"),
    ("unpack truncated", "The carried network's weights"), ("unpack no config", "The carried network's config")])
def test_pack_views_says_what_is_wrong_with_a_network_in_one_sentence(fake, tiny_config, tmp_path, capsys, case,
                                                                      named):
    """--init models/finder gave KeyError 'model'; a truncated model, or a pack's truncated init.safetensors with
    --unpack-init, gave safetensors' SafetensorError: tracebacks all. Now evaluate.py's sentences, and nothing
    written."""
    from recon_core.io.weights import save_finder, save_model
    from recon_core.network.finder import FinderConfig, ObjectFinder
    from recon_core.network.model import build_model
    from training.pack_views import main, pack_init

    root, _ = fake
    data = ["--shapenet", str(root / "shapenet"), "--renders", str(root / "renders"), "--backgrounds", "none"]
    if case == "finder":
        save_finder(ObjectFinder(FinderConfig(channels=(4, 4), size=32)), tmp_path / "finder")
        argv = ["--init", str(tmp_path / "finder"), "--out", str(tmp_path / "pack"), *data]
    else:
        stem = save_model(build_model(tiny_config), tmp_path / "net" / "model", {"trained": True}).with_suffix("")
        if case == "truncated":
            _cut(stem.with_suffix(".safetensors"), 1000)
            argv = ["--init", str(stem), "--out", str(tmp_path / "pack"), *data]
        else:
            pack_init(stem, tmp_path / "carried")
            if case == "unpack truncated":
                _cut(tmp_path / "carried" / "init.safetensors", 1000)
            else:
                (tmp_path / "carried" / "init.json").unlink()
            argv = ["--unpack-init", str(tmp_path / "carried"), "--out", str(tmp_path / "back" / "model")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pack").exists() and not (tmp_path / "back").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_truncated_pack_is_one_sentence_for_train_py(packed, tmp_path, capsys):
    """train.py data.pack=<a pack whose views.npz is cut short> gave zipfile's BadZipFile traceback."""
    import shutil

    from training.train import main

    shutil.copytree(packed, tmp_path / "pack")
    _cut(tmp_path / "pack" / "views.npz", 1000)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        RenderedViews("unused", "unused", "train", pack=tmp_path / "pack")
    argv = [f"data.pack={tmp_path / 'pack'}", f"run.out={tmp_path / 'run'}", "optim.steps=1", "optim.batch_size=1",
            "data.workers=0", "model.backbone=resnet18"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"{tmp_path / 'pack' / 'views.npz'} are truncated or corrupt" in err and "pack_views.py" in err
