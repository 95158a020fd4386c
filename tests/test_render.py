"""Tests of training/render.py: real headless Blender (the bpy module) in a subprocess, checked against recon_core.mesh.camera."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recon_core.mesh.camera import Camera
from training.render import view_done

pytest.importorskip("bpy")

REPO = Path(__file__).resolve().parent.parent
SYNSET, MODEL = "03001627", "asym0001"
VIEWS = 5


def _asymmetric_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Two boxes, an L seen from most sides, off the origin: (V, 3) float64, (F, 3) int64 in the ShapeNet frame."""

    def box(lo, hi):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
        v = lo + corners * (hi - lo)
        f = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
             [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]  # fmt: skip
        return v, np.array(f)

    v1, f1 = box([-0.30, -0.20, -0.15], [0.25, -0.05, 0.10])  # a wide slab
    v2, f2 = box([0.10, -0.05, -0.15], [0.25, 0.35, 0.00])  # a post on its right-front corner
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def _write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    path.parent.mkdir(parents=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def _render(shapenet: Path, out: Path, seed: int = 3) -> str:
    cmd = [sys.executable, str(REPO / "training" / "render.py"), "--shapenet", str(shapenet), "--out", str(out),
           "--views", str(VIEWS), "--seed", str(seed), "--sketch-share", "0.4", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _write_dataset(root: Path, model_ids: list[str]) -> Path:
    """A ShapeNet-layout root with the asymmetric mesh under each id (one synset, split train)."""
    verts, faces = _asymmetric_mesh()
    for model_id in model_ids:
        _write_obj(root / SYNSET / model_id / "models" / "model_normalized.obj", verts, faces)
    records = [{"model_id": m, "synset": SYNSET, "split": "train"} for m in model_ids]
    (root / "manifest.json").write_text(json.dumps(records))
    return root


def _raster_mask(camera: Camera, verts: np.ndarray, faces: np.ndarray, supersample: int = 4) -> np.ndarray:
    """(H, W) bool coverage of the projected triangles (pixel centres at (j + 0.5, i + 0.5))."""
    s = supersample
    img = Image.new("L", (camera.width * s, camera.height * s), 0)
    draw = ImageDraw.Draw(img)
    uv = camera.project(verts) * s - 0.5  # PIL puts hi-res pixel J's centre at coordinate J
    for tri in faces:
        draw.polygon([tuple(p) for p in uv[tri]], fill=255)
    hi = np.asarray(img, np.float32).reshape(camera.height, s, camera.width, s) / 255.0
    return hi.mean(axis=(1, 3)) > 0.5


def _zbuffer(camera: Camera, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(H, W) camera-frame z of the nearest surface through each pixel centre (inf where none), by ray casting."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width] + 0.5
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    dirs = pix @ np.linalg.inv(camera.K).T  # camera frame, z = 1
    tri = camera.world_to_camera(verts)[faces]  # (F, 3, 3)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(dirs[:, None], e2[None])  # (N, F, 3)
    det = (p * e1[None]).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = -tri[None, :, 0]  # ray origin is the camera centre (0, 0, 0)
        a = (s * p).sum(-1) * inv
        q = np.cross(s, e1[None])
        b = (dirs[:, None] * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
    ok = (np.abs(det) > 1e-12) & (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
    z = np.where(ok, t, np.inf).min(axis=1)  # dirs have z = 1, so t is the z-depth
    return z.reshape(camera.height, camera.width)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    verts, faces = _asymmetric_mesh()
    shapenet = _write_dataset(root / "shapenet", [MODEL])
    out = root / "renders"
    _render(shapenet, out)
    return shapenet, out, verts, faces


@pytest.mark.blender
def test_files_and_formats(rendered):
    _, out, _, _ = rendered
    folder = out / SYNSET / MODEL
    for view in range(VIEWS):
        img = Image.open(folder / f"{view:03d}.png")
        assert img.mode == "RGBA" and img.size == (137, 137)
        mask = Image.open(folder / f"{view:03d}_mask.png")
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
        depth = np.load(folder / f"{view:03d}_depth.npy")
        assert depth.dtype == np.float16 and depth.shape == (137, 137)
        meta = json.loads((folder / f"{view:03d}.json").read_text())
        for key in ("R", "T", "K", "blender_matrix_world", "azimuth", "elevation", "distance", "focal_mm", "sketch", "seed"):
            assert key in meta
    points = np.load(folder / "points.npz")
    assert points["points"].shape == (10000, 3) and points["normals"].shape == (10000, 3)
    verts = _asymmetric_mesh()[0]
    assert np.all(points["points"] >= verts.min(0) - 1e-6) and np.all(points["points"] <= verts.max(0) + 1e-6)
    assert not list(folder.glob(".*tmp")), "temporary files left behind"


@pytest.mark.blender
def test_mask_matches_projected_mesh(rendered):
    _, out, verts, faces = rendered
    folder = out / SYNSET / MODEL
    kinds = set()
    for view in range(VIEWS):
        meta = json.loads((folder / f"{view:03d}.json").read_text())
        kinds.add(meta["sketch"])
        camera = Camera.from_json(meta)
        expected = _raster_mask(camera, verts, faces)
        mask = np.asarray(Image.open(folder / f"{view:03d}_mask.png")) > 127
        iou = (mask & expected).sum() / (mask | expected).sum()
        assert iou >= 0.9, f"view {view} (sketch={meta['sketch']}): IoU {iou:.3f}"
        alpha = np.asarray(Image.open(folder / f"{view:03d}.png"))[..., 3] > 127
        if meta["sketch"]:  # lines may be drawn a pixel past the silhouette
            assert np.all(alpha[mask])
        else:
            assert (alpha == mask).mean() > 0.99
    assert kinds == {True, False}, "expected both shaded and sketch views"


@pytest.mark.blender
def test_depth_is_camera_z(rendered):
    _, out, verts, faces = rendered
    folder = out / SYNSET / MODEL
    for view in range(VIEWS):
        camera = Camera.from_json(json.loads((folder / f"{view:03d}.json").read_text()))
        depth = np.load(folder / f"{view:03d}_depth.npy").astype(np.float64)
        z = _zbuffer(camera, verts, faces)
        both = (depth > 0) & np.isfinite(z)
        assert both.sum() > 200
        err = np.abs(depth[both] - z[both])
        assert np.median(err) < 2e-3, f"view {view}: median |depth - z| {np.median(err):.4f}"
        assert np.mean(err < 0.01) > 0.95
        assert np.all(depth[~(np.asarray(Image.open(folder / f"{view:03d}_mask.png")) > 127)] == 0)


@pytest.mark.blender
def test_deterministic_and_resumable(rendered, tmp_path):
    shapenet, out, _, _ = rendered
    folder = out / SYNSET / MODEL
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    log = _render(shapenet, out)  # everything there: nothing to do
    assert "rendered 0 views" in log
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    (folder / "002_mask.png").unlink()  # an incomplete view is redone, the same
    again = tmp_path / "again"
    _render(shapenet, again)
    _render(shapenet, out)
    for view in range(VIEWS):
        a = json.loads((folder / f"{view:03d}.json").read_text())
        b = json.loads((again / SYNSET / MODEL / f"{view:03d}.json").read_text())
        assert a == b
    assert (folder / "002_mask.png").exists()


@pytest.mark.blender
def test_parallel_run_exits_zero(tmp_path):
    """Two worker processes: every view is written and the parent exits 0.

    The parent used to import bpy on a shard thread to name the workers' executable; the interpreter's exit
    then crashed in Blender's teardown (exit 139) after all views were written. The workers, which skip that
    teardown, leave no folder of Blender's temporary files behind.
    """
    models = ["par0001", "par0002", "par0003"]
    shapenet = _write_dataset(tmp_path / "shapenet", models)
    out = tmp_path / "renders"
    temp = tmp_path / "temp"
    temp.mkdir()
    cmd = [sys.executable, str(REPO / "training" / "render.py"), "--shapenet", str(shapenet), "--out", str(out),
           "--views", "2", "--workers", "2", "--threads", "1", "--samples", "1", "--points", "100"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    assert not list(temp.iterdir()), "left in the temporary folder: " + ", ".join(p.name for p in temp.iterdir())
    assert "0 models failed" in proc.stderr
    for model_id in models:
        for view in range(2):
            assert view_done(out / SYNSET / model_id, view), f"{model_id} view {view} missing"
        assert (out / SYNSET / model_id / "points.npz").exists()
    assert not (out / "failed.txt").exists()


# -- the contact sheet of a render run ------------------------------------------------------------------------


def _fake_renders(root: Path) -> Path:
    """``root/renders`` with two views of one model in a core category and one in an extra-pool category, and the
    data set's manifest naming the extra pool's category."""
    renders = root / "renders"
    for synset, model, views in (("03001627", "m1", 2), ("02747177", "m2", 1)):
        for v in range(views):
            folder = renders / synset / model
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGBA", (16, 16), (200, 40, 40, 255)).save(folder / f"{v:03d}.png")
            (folder / f"{v:03d}.json").write_text(json.dumps({"sketch": False}))
    (root / "shapenet").mkdir()
    (root / "shapenet" / "manifest.json").write_text(json.dumps(
        {"extra_taxonomy": [{"synsetId": "02747177", "name": "ashcan", "numInstances": 1}]}))
    return renders


def test_the_contact_sheet_names_every_category(tmp_path, capsys):
    from training.contact_sheet import category_name, main

    renders = _fake_renders(tmp_path)
    assert category_name("03001627", renders) == "chair"
    assert category_name("02747177", renders) == "ashcan", "the extra pool's name, from the manifest"
    assert category_name("01234567", renders) == "01234567"
    assert main(["--renders", str(renders), "--out", str(tmp_path / "sheet.png"), "--columns", "3", "--tile", "16"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size == (120 + 3 * 16, 2 * 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["renders", "shapenet", "sheet.png"], "no temporary file"


@pytest.mark.parametrize("extra, fragment", [
    (["--renders", "NONE"], "is not a folder"), (["--renders", "EMPTY"], "no rendered views"),
    (["--out", "NONE/sheet.png"], "does not exist; create it first"), (["--tile", "0"], "--tile must be at least 1"),
    (["--columns", "0"], "--columns must be at least 1"),
    # an existing folder named raw OS words and a temporary file; a file in the folder's place was "does not exist";
    # a .jpg name held PNG data
    (["--out", "EMPTY"], "EMPTY: it is a folder; give another path"),
    (["--out", "AFILE/sheet.png"], "AFILE is a file, not a folder; give another path"),
    (["--out", "NONE.jpg"], "the sheet is a PNG; give a name ending in .png")])
def test_the_contact_sheet_refuses_bad_input_in_one_sentence(tmp_path, capsys, extra, fragment):
    """Each gave a traceback (exit 1), or with --columns 0 a sheet of labels only (exit 0)."""
    from training.contact_sheet import main

    renders = _fake_renders(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "AFILE").write_text("a file")
    extra = [str(tmp_path / a) if a.startswith(("NONE", "EMPTY", "AFILE")) else a for a in extra]
    argv = ["--renders", str(renders), "--out", str(tmp_path / "sheet.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "sheet.png").exists() and not list(tmp_path.glob(".*.tmp"))
