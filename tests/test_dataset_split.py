"""The group split: no group in two splits, deterministic, roughly 80/10/10; the ShapeNet-folder path end to end;
and a build that fails (no model kept, bad paths, a write error) leaves the data set as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.build_dataset import FilterConfig, build, split_groups
from training.readers import discover_shapenet


def _items():
    items = []
    for cat, n_groups in (("chair", 40), ("airplane", 25), ("bench", 3)):
        for g in range(n_groups):
            items += [(cat, f"{cat}:{g}")] * (1 + g % 3)
    return items


def test_split_is_by_group_and_deterministic():
    items = _items()
    a = split_groups(items, seed=0)
    assert a == split_groups(items, seed=0)
    assert a != split_groups(items, seed=1)
    assert set(a) == {g for _, g in items}  # one split per group, so no group straddles
    assert set(a.values()) <= {"train", "val", "test"}


def test_split_is_stratified_near_80_10_10():
    items = _items()
    a = split_groups(items, seed=3)
    for cat in ("chair", "airplane", "bench"):
        splits = [a[g] for c, g in items if c == cat]
        frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
        assert frac["val"] > 0 and frac["test"] > 0
        if cat != "bench":
            assert 0.65 < frac["train"] < 0.9


def _cube_obj() -> str:
    v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = [f"v {2 * x} {y} {3 * z}" for x, y, z in v]
    for q in quads:
        lines.append("f " + " ".join(str(i + 1) for i in q))
    return "\n".join(lines) + "\n"


def test_shapenet_folder_round_trip(tmp_path):
    root = tmp_path / "ShapeNetCore.v2"
    for i in range(4):
        d = root / "03001627" / f"id{i}" / "models"
        d.mkdir(parents=True)
        text = _cube_obj().replace("v 2 ", f"v {2 + i} ")
        (d / "model_normalized.obj").write_text(text)
    (root / "03001627" / "v1model").mkdir()
    (root / "03001627" / "v1model" / "model.obj").write_text(_cube_obj())  # same geometry as id0: a duplicate
    (root / "99999999" / "x").mkdir(parents=True)  # not one of the 13: ignored
    candidates = discover_shapenet(root)
    assert sorted(c.model_id for c in candidates) == ["id0", "id1", "id2", "id3", "v1model"]
    out = tmp_path / "out"
    records = build(candidates, out, seed=0, cfg=FilterConfig(min_faces=1), workers=1)
    assert len(records) == 4  # the duplicate cube is dropped
    manifest = json.loads((out / "manifest.json").read_text())
    assert {r["model_id"] for r in manifest["models"]} == {r["model_id"] for r in records}
    taxonomy = json.loads((out / "taxonomy.json").read_text())
    assert {t["name"]: t["numInstances"] for t in taxonomy}["chair"] == 4
    first = records[0]
    obj = out / first["synset"] / first["model_id"] / "models" / "model_normalized.obj"
    v = np.array([line.split()[1:] for line in obj.read_text().splitlines() if line.startswith("v ")], float)
    assert abs(np.linalg.norm(np.ptp(v, axis=0)) - 1) < 1e-5
    np.testing.assert_allclose(v.min(0) + v.max(0), 0, atol=1e-5)
    assert (out / "summary.md").exists()


def test_packages_extract_with_a_relative_cache_path(tmp_path, monkeypatch):
    """apt-get and dpkg run inside debs/: every path they get must still point to the right place."""
    import training.build_dataset as bd

    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_run(cmd, cwd):
        calls.append((cmd, Path(cwd)))
        if cmd[0] == "apt-get":
            (Path(cwd) / f"{cmd[-1]}_1.0_all.deb").write_bytes(b"deb")
        else:  # dpkg -x FILE DIR, resolved from cwd as the real command would
            deb, dest = (Path(cwd) / cmd[2]), (Path(cwd) / cmd[3])
            assert deb.is_file(), f"dpkg would not find {cmd[2]} from {cwd}"
            (dest / "usr").mkdir(parents=True)

    monkeypatch.setattr(bd, "_run", fake_run)
    extracted = bd.ensure_packages(Path("data/cache"), ("pkg-a", "pkg-b"))
    assert sorted(p.name for p in extracted.iterdir()) == ["pkg-a", "pkg-b"]
    assert (tmp_path / "data/cache/extracted/pkg-a/usr").is_dir()
    assert len(calls) == 4
    calls.clear()
    bd.ensure_packages(Path("data/cache"), ("pkg-a", "pkg-b"))  # cached: nothing runs
    assert calls == []


def _chairs(root: Path, ids) -> Path:
    for n, model_id in enumerate(ids):
        d = root / "03001627" / model_id / "models"
        d.mkdir(parents=True)
        (d / "model_normalized.obj").write_text(_cube_obj().replace("v 2 ", f"v {2 + n} "))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_that_keeps_no_model_fails_and_leaves_the_data_set(tmp_path, capsys):
    import training.build_dataset as bd

    root = _chairs(tmp_path / "ShapeNetCore.v2", ["id0", "id1", "id2"])
    out = tmp_path / "out"
    assert len(build(discover_shapenet(root), out, seed=0, cfg=FilterConfig(min_faces=1), workers=1)) == 3
    before = _files(out)
    with pytest.raises(ValueError, match="no model was kept"):
        build(discover_shapenet(root), out, seed=0, cfg=FilterConfig(min_faces=1, max_faces=0), workers=1)
    capsys.readouterr()
    code = bd.main(["--no-packages", "--shapenet-root", str(root), "--out", str(out), "--workers", "1", "--max-faces", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: no model was kept")
    # these chairs have too few faces for the default filter: raising --max-faces would not help, so it is not advised
    assert err.strip().endswith("; give other models") and "--max-faces" not in err.splitlines()[-1]
    assert err.count("error:") == 1 and "Traceback" not in err
    assert _files(out) == before


def test_bad_paths_are_one_sentence_and_exit_2(tmp_path, capsys):
    import training.build_dataset as bd

    root = _chairs(tmp_path / "ShapeNetCore.v2", ["id0"])
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in (
        (["--shapenet-root", str(tmp_path / "missing"), "--out", str(tmp_path / "out")], "does not exist"),
        (["--shapenet-root", str(a_file), "--out", str(tmp_path / "out")], "is a file"),
        (["--shapenet-root", str(root), "--out", str(a_file / "out")], "is a file, not a folder"),
        (["--shapenet-root", str(root), "--out", str(a_file)], "is a file, not a folder"),
        (["--shapenet-root", str(root), "--out", str(tmp_path / "out"), "--max-faces", "0"], "--max-faces must be at"),
        (["--shapenet-root", str(empty), "--out", str(tmp_path / "out")], f"no models found in --shapenet-root {empty}"),
        (["--out", str(tmp_path / "out")], "--no-packages leaves no models to read"),
    ):
        assert bd.main(["--no-packages", "--workers", "1", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err and "Traceback" not in err
    assert a_file.read_text() == "mine\n" and not (tmp_path / "out").exists()


def test_a_failed_rebuild_keeps_the_earlier_data_set(tmp_path, monkeypatch):
    import training.build_dataset as bd

    out = tmp_path / "out"
    build(discover_shapenet(_chairs(tmp_path / "a", ["old0", "old1"])), out, seed=0, cfg=FilterConfig(min_faces=1), workers=1)
    before = _files(out)
    write = bd.atomic_write_bytes

    def disk_full_at_the_manifest(path, data):
        if Path(path).name == "manifest.json":
            raise OSError(28, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(bd, "atomic_write_bytes", disk_full_at_the_manifest)
    with pytest.raises(OSError):
        build(discover_shapenet(_chairs(tmp_path / "b", ["new0", "new1"])), out, seed=0, cfg=FilterConfig(min_faces=1),
              workers=1)
    after = _files(out)
    assert {k: v for k, v in after.items() if k.endswith(".obj") or k == "manifest.json"} == \
        {k: v for k, v in before.items() if k.endswith(".obj") or k == "manifest.json"}
    assert not any("new" in k or k.endswith(".tmp") for k in after)
