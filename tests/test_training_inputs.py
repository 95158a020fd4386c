"""Bad input to the developer scripts in training/ found by probing them: each is one ``error:`` sentence and a
non-zero exit (or, where the script can mend it itself, the mend), never a traceback.

Each test failed before its mend: a manifest.json that is not text, a truncated ``solid.npz``, ``points.npz`` or
picture cache raised ``UnicodeDecodeError`` or ``zipfile.BadZipFile`` through the scripts' handlers, and Ctrl-C in
``training/train.py`` printed torch's traceback; a background folder whose ``sources.json`` is not text was
refused with the codec's words alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recon_core.mesh.camera import look_at
from tests.test_dataset import _box, _write_view
from training import build_backgrounds, build_solids, eval_data, pack_views, train, train_finder
from training.dataset import RenderedViews
from training.render import sample_surface

CHAIR = "03001627"


def _data_set(root: Path, views: bool = False) -> tuple[Path, Path]:
    """A one-model data set: ``(shapenet, renders)`` with a box mesh, its points.npz and, with ``views``, one view."""
    shapenet, folder = root / "shapenet", root / "renders" / CHAIR / "m0"
    folder.mkdir(parents=True)
    (shapenet / CHAIR / "m0").mkdir(parents=True)
    verts, faces = _box()
    (shapenet / CHAIR / "m0" / "model.obj").write_text(
        "".join("v %f %f %f\n" % tuple(v) for v in verts) + "".join("f %d %d %d\n" % tuple(f + 1) for f in faces))
    (shapenet / "manifest.json").write_text(json.dumps({"models": [
        {"synset": CHAIR, "model_id": "m0", "split": "train"}]}))
    points, normals = sample_surface(verts, faces, 500, np.random.default_rng(0))
    np.savez(folder / "points.npz", points=points, normals=normals)
    if views:
        _write_view(folder, 0, look_at(30, 20, 1.7, 40.0), verts, faces, sketch=False)
    return shapenet, root / "renders"


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _one_sentence(err: str, *named: str) -> None:
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for part in named:
        assert part in err, err


def test_a_manifest_that_is_not_text_is_one_sentence(tmp_path, capsys):
    shapenet, renders = _data_set(tmp_path)
    (shapenet / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(eval_data.DataError, match="manifest.json cannot be read"):
        eval_data.discover(shapenet, renders, "train")
    assert build_solids.main(["--shapenet", str(shapenet), "--renders", str(renders), "--workers", "1"]) == 2
    _one_sentence(capsys.readouterr().err, "manifest.json cannot be read", "rebuild the data set")


def test_a_truncated_solid_is_said_and_built_again(tmp_path, capsys):
    shapenet, renders = _data_set(tmp_path)
    solid = renders / CHAIR / "m0" / build_solids.SOLID_FILE
    solid.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="is corrupt.*build_solids.py"):
        build_solids.read_solid(solid)
    argv = ["--shapenet", str(shapenet), "--renders", str(renders), "--workers", "1", "--resolution", "8"]
    assert build_solids.main(argv) == 0
    assert "built 1 solids" in capsys.readouterr().out
    assert build_solids.read_solid(solid)[0].shape == (8, 8, 8)


def test_a_truncated_points_file_is_one_sentence(tmp_path, capsys):
    from training.dataset import read_points

    shapenet, renders = _data_set(tmp_path, views=True)
    points = renders / CHAIR / "m0" / "points.npz"
    _truncate(points)
    with pytest.raises(ValueError, match="points.npz is corrupt or truncated.*training/render.py"):
        read_points(points)
    with pytest.raises(ValueError, match="points.npz is corrupt or truncated"):
        RenderedViews(shapenet, renders, "train", image_size=64, num_points=16, augment=False)[0]
    for workers in (0, 1):  # in a data loader's worker process torch wraps the error in its traceback
        argv = [f"data.shapenet={shapenet}", f"data.renders={renders}", f"run.out={tmp_path / f'run{workers}'}",
                "optim.steps=1", "optim.batch_size=1", f"data.workers={workers}", "model.backbone=resnet18",
                "model.image_size=64"]
        assert train.main(argv) == 2
        err = capsys.readouterr().err  # the training's progress bar is on stderr too
        assert "Traceback" not in err and err.count("error: ") == 1, err
        _one_sentence(err[err.index("error: "):].splitlines()[0] + "\n", "points.npz is corrupt or truncated",
                      "training/render.py")
    out = tmp_path / "pack"
    argv = ["--shapenet", str(shapenet), "--renders", str(renders), "--out", str(out), "--background-count", "0"]
    assert pack_views.main(argv) == 2
    _one_sentence(capsys.readouterr().err, "points.npz is corrupt or truncated")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("run")) == ["renders", "shapenet"]


def test_evaluate_samples_the_mesh_for_a_truncated_points_file(tmp_path):
    shapenet, renders = _data_set(tmp_path, views=True)
    _truncate(renders / CHAIR / "m0" / "points.npz")
    (entry,) = eval_data.discover(shapenet, renders, "train")
    assert tuple(eval_data.shape_points(entry, 64, seed=0).shape) == (64, 3)


def test_a_truncated_picture_cache_is_drawn_again(tmp_path):
    cache = tmp_path / "train_4.npz"
    np.savez(cache, images=np.zeros((2, 8, 8, 3), np.uint8), targets=np.zeros((2, 8, 8), np.uint8))
    assert train_finder._read_cache(cache) is not None
    _truncate(cache)
    assert train_finder._read_cache(cache) is None


def test_backgrounds_whose_manifest_is_not_text_are_not_replaced(tmp_path, capsys):
    out = tmp_path / "backgrounds"
    out.mkdir()
    (out / "sources.json").write_bytes(b"\xff\xfe not a manifest")
    argv = ["--out", str(out), "--cache", str(tmp_path / "cache"), "--crops", "1"]
    assert build_backgrounds.main(argv) == 2
    _one_sentence(capsys.readouterr().err, str(out), "already holds files that this script did not write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backgrounds"]  # nothing fetched, nothing written


@pytest.mark.parametrize("checkpoint", [False, True])
def test_ctrl_c_in_training_is_one_sentence_and_exit_code_130(tmp_path, capsys, monkeypatch, checkpoint):
    out = tmp_path / "run"
    if checkpoint:
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(b"written atomically by an earlier step")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", interrupted)
    try:
        code = train.main([f"run.out={out}"])
    except KeyboardInterrupt:  # escaping, it would stop the whole test run
        pytest.fail("Ctrl-C went through train.main as a traceback")
    assert code == 130
    if checkpoint:
        _one_sentence(capsys.readouterr().err, "interrupted", str(out / "checkpoint.pt"), "--resume")
    else:
        _one_sentence(capsys.readouterr().err, "interrupted", "no checkpoint was written")


LONG_SCRIPTS = ["evaluate", "calibrate", "build_shape_bank", "train_category", "train_finder", "build_solids",
                "pack_views", "build_dataset", "build_backgrounds"]


@pytest.mark.parametrize("script", LONG_SCRIPTS)
def test_ctrl_c_in_a_long_script_is_one_sentence_and_exit_code_130(script, monkeypatch, capsys):
    """Ctrl-C printed Python's traceback (KeyboardInterrupt through every frame); each script's main says it in one
    sentence. Here Ctrl-C arrives as the script reads its options, its first step."""
    import argparse
    import importlib

    from training.interrupt import INTERRUPTED

    def interrupted(self, args=None, namespace=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    module = importlib.import_module(f"training.{script}")
    assert module.main([]) == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"


def test_a_pools_workers_leave_ctrl_c_to_the_main_process():
    """Ctrl-C reaches every process of the terminal's group: a worker started with the pools' initializer lives on
    (the main process ends the pool), instead of printing a traceback of its own."""
    import multiprocessing
    import os
    import signal
    import time

    from training.interrupt import ignore_ctrl_c

    with multiprocessing.get_context("spawn").Pool(1, initializer=ignore_ctrl_c) as pool:
        pid = pool.apply(os.getpid)
        os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert pool.apply(os.getpid) == pid  # the same worker, alive
