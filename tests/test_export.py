"""Writing meshes: 3MF for slicers (millimetres, +Z up, on the build plate), read back with the 3MF
Consortium's lib3mf, an independent reader; the other formats; atomic writes and clear errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lib3mf
import numpy as np
import pytest
import trimesh

from recon_core.io.cli import main as recon_mesh
from recon_core.io.export import (OUTPUT_TO_Z_UP, ExportError, current_umask, export_mesh, on_plate, stl_bytes,
                                  unwritable_reason, write_3mf)

REPO = Path(__file__).resolve().parent.parent


def _read_3mf(path: Path, metadata: dict | None = None
              ) -> tuple[int, list[tuple[str, np.ndarray, np.ndarray, bool]], int]:
    """(unit, [(name, verts (V, 3), faces (F, 3), manifold and oriented)], build items) as lib3mf reads them in its
    strict mode (a warning is an error); the file's metadata into ``metadata``, name -> value."""
    model = lib3mf.get_wrapper().CreateModel()
    reader = model.QueryReader("3mf")
    reader.SetStrictModeActive(True)
    reader.ReadFromFile(str(path))
    group = model.GetMetaDataGroup()
    for i in range(group.GetMetaDataCount()):
        entry = group.GetMetaData(i)
        if metadata is not None:
            metadata[entry.GetName()] = entry.GetValue()
    objects = []
    it = model.GetMeshObjects()
    while it.MoveNext():
        obj = it.GetCurrentMeshObject()
        verts = np.array([v.Coordinates[0:3] for v in obj.GetVertices()], dtype=np.float64)
        faces = np.array([t.Indices[0:3] for t in obj.GetTriangleIndices()], dtype=np.int64)
        objects.append((obj.GetName(), verts, faces, obj.IsManifoldAndOriented()))
    items = model.GetBuildItems()
    count = 0
    while items.MoveNext():
        count += 1
    return model.GetUnit(), objects, count


def _signed_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _torus() -> trimesh.Trimesh:
    return trimesh.creation.torus(major_radius=20.0, minor_radius=6.0, major_sections=24, minor_sections=12)


def test_3mf_is_millimetres_z_up_on_the_plate_and_keeps_every_vertex(tmp_path):
    rng = np.random.default_rng(0)
    box = trimesh.creation.box([30.0, 60.0, 90.0])  # output frame: 60 mm tall (Y), 90 deep (Z)
    verts = box.vertices + rng.normal(size=3) * 10  # anywhere: the file puts it on the plate
    path = export_mesh(verts, box.faces, tmp_path / "box.3mf", millimetres=True)
    unit, objects, items = _read_3mf(path)
    assert unit == lib3mf.ModelUnit.MilliMeter and items == 1 and len(objects) == 1
    name, v, f, manifold = objects[0]
    assert name == "box" and manifold
    assert np.array_equal(f, box.faces)
    expected = verts @ OUTPUT_TO_Z_UP.T  # on 3MF's plate: its box's centre 100 mm from the front-left corner
    expected -= [(expected[:, 0].min() + expected[:, 0].max()) / 2 - 100.0,
                 (expected[:, 1].min() + expected[:, 1].max()) / 2 - 100.0, expected[:, 2].min()]
    np.testing.assert_allclose(v, expected, atol=1e-9)
    assert np.ptp(v, axis=0) == pytest.approx([30.0, 90.0, 60.0])  # the output's height is the 3MF's Z
    assert v[:, 2].min() == pytest.approx(0.0)
    assert _signed_volume(v, f) == pytest.approx(30.0 * 60.0 * 90.0)  # still outward after the rotation


def test_3mf_holds_one_object_per_mesh_with_its_name(tmp_path):
    torus, box = _torus(), trimesh.creation.box([10.0, 10.0, 10.0])
    path = write_3mf([("shape_1", torus.vertices, torus.faces), ("shape_2", box.vertices + [50, 0, 5], box.faces),
                      ("shape_2", box.vertices, box.faces)], tmp_path / "all.3mf")
    unit, objects, items = _read_3mf(path)
    assert unit == lib3mf.ModelUnit.MilliMeter and items == 3
    assert [o[0] for o in objects] == ["shape_1", "shape_2", "shape_2_"]
    assert all(o[3] for o in objects)
    # on the plate together, as they stand to each other: the box of all of them rests on z = 0, centred at (100, 100)
    everything = np.concatenate([torus.vertices, box.vertices + [50, 0, 5], box.vertices])
    lo, hi = everything.min(0), everything.max(0)
    shift = np.array([100.0, 100.0, 0.0]) - [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]]
    np.testing.assert_allclose(objects[0][1], torus.vertices + shift, atol=1e-9)
    np.testing.assert_allclose(objects[1][1], box.vertices + [50, 0, 5] + shift, atol=1e-9)
    assert objects[0][2].shape == torus.faces.shape and _signed_volume(objects[0][1], objects[0][2]) > 0


def test_a_3mf_wider_than_its_plate_centre_has_no_negative_coordinate_and_names_its_title(tmp_path):
    """A 300 mm object stands at X >= 0 (its centre 150 mm from the corner, not 100); lib3mf's strict reading takes
    the file (trimesh repeated the namespaces on each build item, which it refused) and finds its metadata."""
    import datetime

    from recon_core.io.export import APPLICATION

    wide = trimesh.creation.box([300.0, 40.0, 20.0])
    metadata: dict = {}
    _, objects, items = _read_3mf(write_3mf([("wide", wide.vertices - 7.0, wide.faces)], tmp_path / "plank.3mf"),
                                  metadata)
    v = objects[0][1]
    assert items == 1 and v.min(0) == pytest.approx([0.0, 80.0, 0.0]) and v.max(0) == pytest.approx([300, 120, 20])
    assert metadata == {"Title": "plank", "Application": APPLICATION,
                        "CreationDate": datetime.date.today().isoformat()}


def test_a_control_character_in_a_3mf_s_name_is_written_as_an_underscore(tmp_path):
    """XML cannot hold it: lxml raised, and the add-on's writer exited with a traceback."""
    box = trimesh.creation.box([10.0, 10.0, 10.0])
    metadata: dict = {}
    _, objects, _ = _read_3mf(write_3mf([("bell\x07", box.vertices, box.faces)], tmp_path / "ring\x07.3mf"), metadata)
    assert objects[0][0] == "bell_" and metadata["Title"] == "ring_"
    for name, said in ((None, "ring_"), ("x\x02y", "x_y")):  # recon-mesh's writer too (it raised lxml's ValueError)
        _, objects, _ = _read_3mf(export_mesh(box.vertices, box.faces, tmp_path / "ring\x07.3mf", name,
                                              millimetres=True))
        assert objects[0][0] == said


@pytest.mark.parametrize("objects, fragment", [
    ([], "no mesh"),
    ([("a", np.zeros((3, 2)), np.array([[0, 1, 2]]))], "must be (V, 3)"),
    ([("a", np.zeros((3, 3)), np.zeros((0, 3), int))], "no faces"),
    ([("a", np.full((3, 3), np.nan), np.array([[0, 1, 2]]))], "not finite"),
    ([("a", np.zeros((3, 3)), np.array([[0, 1, 3]]))], "must index its 3 vertices"),
    ([("a", np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]))], "must be whole numbers (vertex indices), got float64"),
])
def test_bad_meshes_get_one_sentence_and_no_file(tmp_path, objects, fragment):
    with pytest.raises(ExportError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        write_3mf(objects, tmp_path / "bad.3mf")
    assert list(tmp_path.iterdir()) == []


def test_stl_is_trimesh_s_binary_stl(tmp_path):
    """Our binary STL against trimesh's writer (the same records after the header) and reader (the same mesh)."""
    mesh = _torus()
    verts = mesh.vertices + np.array([1.5, -2.0, 0.25])
    faces = np.vstack([mesh.faces, [[0, 0, 1]]])  # a degenerate face: its normal is zero, as trimesh writes it
    ours = stl_bytes(verts, faces)
    theirs = trimesh.Trimesh(verts, faces, process=False).export(file_type="stl")
    assert len(ours) == len(theirs) == 84 + 50 * len(faces)
    assert ours[80:] == theirs[80:]
    path = export_mesh(verts, faces[:-1], tmp_path / "torus.stl")
    back = trimesh.load(path, file_type="stl", process=False)  # +Z up on the plate (the next test checks how)
    np.testing.assert_array_equal(back.vertices[back.faces],
                                  on_plate(verts @ OUTPUT_TO_Z_UP.T)[faces[:-1]].astype(np.float32))
    merged = trimesh.load(path, file_type="stl")  # STL repeats each corner: merged, it is the closed torus again
    assert merged.is_watertight and merged.is_winding_consistent and merged.volume > 0


@pytest.mark.parametrize("ext", [".stl", ".ply"])
def test_stl_and_ply_stand_plus_z_up_on_the_build_plate_as_slicers_read_them(tmp_path, ext):
    """A mesh in the output frame (+Y up, the camera on +Z), somewhere off the origin, comes out of an STL or a PLY
    +Z up (its +Y along +Z, its front, +Z, along -Y), resting on z = 0 and centred on the Z axis, as a 3MF does: an
    STL came +Y up and lay on its back in a slicer and in Blender's STL import. OBJ and GLB keep +Y up, placed alike
    on the ground (they kept the output frame's coordinates, and half a chair lay below Blender's floor)."""
    rng = np.random.default_rng(0)
    verts = rng.uniform(-1, 1, (60, 3)) * [10.0, 40.0, 5.0] + [3.0, 7.0, -2.0]  # tall along +Y, thin along Z
    hull = trimesh.convex.convex_hull(verts)
    path = export_mesh(hull.vertices, hull.faces, tmp_path / f"part{ext}")
    back = trimesh.load(path, force="mesh", process=False)
    v = np.asarray(back.vertices)
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose((v[:, :2].min(0) + v[:, :2].max(0)) / 2, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.ptp(v, axis=0), np.ptp(hull.vertices, axis=0)[[0, 2, 1]], rtol=1e-6)
    np.testing.assert_allclose(back.vertices[back.faces], on_plate(hull.vertices @ OUTPUT_TO_Z_UP.T)[hull.faces],
                               atol=1e-4)  # the file's own triangles: a turn, not a mirror or a half turn
    front = hull.vertices[:, 2].argmax()  # the vertex nearest the camera ends lowest along Y
    v_front = back.vertices[back.faces][hull.faces == front][0]
    assert v_front[1] == pytest.approx(v[:, 1].min(), abs=1e-4)
    merged = trimesh.load(path, force="mesh")  # an STL repeats each corner: merged, it is closed
    assert merged.is_watertight and merged.volume > 0  # a turn, not a mirror: still outward
    for other in (".obj", ".glb"):  # +Y up, placed alike: resting on y = 0, centred on the Y axis
        obj = trimesh.load(export_mesh(hull.vertices, hull.faces, tmp_path / f"part{other}"), force="mesh",
                           process=False)
        np.testing.assert_allclose(np.ptp(obj.vertices, axis=0), np.ptp(hull.vertices, axis=0), rtol=1e-6)
        lo, hi = obj.vertices.min(0), obj.vertices.max(0)
        assert lo[1] == pytest.approx(0.0, abs=1e-5), other  # on the ground: half of it lay below
        np.testing.assert_allclose((lo + hi)[[0, 2]] / 2, 0.0, atol=1e-5)
        centre = (hull.vertices.min(0) + hull.vertices.max(0)) / 2
        placed = hull.vertices - [centre[0], hull.vertices[:, 1].min(), centre[2]]
        np.testing.assert_allclose(obj.vertices[obj.faces], placed[hull.faces], atol=1e-4)  # moved, not turned


@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch, ext):
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    path = export_mesh(box.vertices, box.faces, tmp_path / f"box{ext}", millimetres=True)
    before = path.read_bytes()

    def full_disk(src, dst):  # the rename, the last step of the real atomic write, fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recon_core.io.export.os.replace", full_disk)
    with pytest.raises(ExportError, match="No space left on device"):
        export_mesh(box.vertices * 2, box.faces, path, millimetres=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temporary file is gone too


def test_an_object_named_camera_is_on_the_build_plate(tmp_path):
    box = trimesh.creation.box([10.0, 10.0, 10.0])
    path = write_3mf([("camera", box.vertices, box.faces), ("Camera mount", box.vertices + 20, box.faces)],
                     tmp_path / "camera.3mf")
    _, objects, items = _read_3mf(path)
    assert [o[0] for o in objects] == ["camera", "Camera mount"] and items == 2


def test_the_rotation_is_the_add_ons(tmp_path):
    """The add-on cannot import recon_core, so it holds its own copy of the rotation into +Z up."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mesh_data", REPO / "blender_addon" / "mesh_data.py")
    mesh_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mesh_data)  # the module alone: the add-on package's __init__ needs bpy
    assert np.array_equal(mesh_data.OUTPUT_TO_BLENDER, OUTPUT_TO_Z_UP)
    assert np.linalg.det(OUTPUT_TO_Z_UP) == pytest.approx(1.0)


def test_recon_mesh_writes_a_3mf_90_mm_tall_along_z(tmp_path, tiny_model_path, capsys):
    from PIL import Image

    from tests.test_cli import _object_rgb

    picture = tmp_path / "obj.png"
    Image.fromarray(_object_rgb(), "RGB").save(picture)
    out = tmp_path / "obj.3mf"
    code = recon_mesh([str(picture), "-o", str(out), "--model", str(tiny_model_path), "--height-mm", "90",
                       "--detail", "low"])
    printed = capsys.readouterr().out
    assert code == 0 and "✓ printable" in printed
    unit, objects, items = _read_3mf(out)
    assert unit == lib3mf.ModelUnit.MilliMeter and len(objects) == 1 and items == 1
    _, v, f, manifold = objects[0]
    assert manifold and _signed_volume(v, f) > 0
    assert np.ptp(v[:, 2]) == pytest.approx(90.0, rel=1e-6) and v[:, 2].min() == pytest.approx(0.0, abs=1e-9)
    # the report's size names its axes, true of the 3MF too (its Z is the height), not "a x b x c" read as x, y, z
    import re

    size = re.search(r"^size (\S+) x (\S+) x (\S+) mm \(width x depth x height\), ", printed, re.M)
    assert size, printed  # the 3MF's x, y and z, as a slicer and the add-on give them (was width x height x depth)
    assert [float(x) for x in size.groups()] == pytest.approx([np.ptp(v[:, 0]), np.ptp(v[:, 1]), 90.0], rel=1e-3)


def test_the_add_on_writer_says_how_it_is_used(capsys):
    from recon_core.io.export import main

    assert main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: python -m recon_core.io.export")
    assert main([]) == 2 and capsys.readouterr().err.startswith("error: Give the meshes' file and the file to write")


def test_the_add_on_writer_says_what_is_wrong_with_its_paths_as_recon_mesh_does(tmp_path, capsys, monkeypatch):
    """A name that is only an extension was "the extension must be .3mf or .stl" (Path(".3mf").suffix is ""); a
    folder was "Is a directory. Choose a writable location."; a missing meshes file was FileNotFoundError's text, a text
    file numpy's "Cannot load file containing pickled data"; Ctrl-C was a traceback. Each is now one sentence, as
    recon-mesh says it, and nothing is written."""
    from recon_core.io import export

    box = trimesh.creation.box([10.0, 10.0, 10.0])
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["Cube"]), verts_0=box.vertices, faces_0=box.faces)
    (tmp_path / "dir.3mf").mkdir()
    (tmp_path / "notes.txt").write_text("not meshes\n")
    cases = [
        ([meshes, tmp_path / ".3mf"], f"Cannot write {tmp_path}/.3mf: .3mf is an extension without a name; give the "
                                      f"file a name, e.g. {tmp_path}/part.3mf."),
        ([meshes, tmp_path / "dir.3mf"], f"Cannot write {tmp_path}/dir.3mf: it is a folder; give a file name, e.g. "
                                         f"{tmp_path}/dir.3mf/part.3mf."),
        ([meshes, tmp_path / "no" / "x.stl"], f"Cannot write {tmp_path}/no/x.stl: the folder {tmp_path}/no does not "
                                              "exist; create it first."),
        ([tmp_path / "gone.npz", tmp_path / "x.stl"], f"Cannot read the meshes in {tmp_path}/gone.npz: there is no "
                                                      "such file."),
        ([tmp_path / "notes.txt", tmp_path / "x.stl"], f"Cannot read the meshes in {tmp_path}/notes.txt: it is not a "
                                                       ".npz file of meshes; write them with numpy.savez as verts_0, "
                                                       "faces_0, ... and names."),
    ]
    for argv, said in cases:
        assert export.main([str(a) for a in argv]) == 2, argv
        assert capsys.readouterr().err == f"error: {said}\n"

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "print_notes", interrupted)  # after the write: the file is whole, its check cut short
    assert export.main([str(meshes), str(tmp_path / "y.stl")]) == 130
    said = f"error: Interrupted: {tmp_path / 'y.stl'} was written, but its check was not finished.\n"
    assert capsys.readouterr().err == said
    assert (tmp_path / "y.stl").stat().st_size == 84 + 50 * 12
    monkeypatch.setattr(export, "write_stl", interrupted)
    assert export.main([str(meshes), str(tmp_path / "x.stl")]) == 130
    assert capsys.readouterr().err == "error: Interrupted; nothing was written.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.3mf", "meshes.npz", "notes.txt", "y.stl"]


def test_the_add_on_writer_runs_without_torch(tmp_path):
    torus, box = _torus(), trimesh.creation.box([10.0, 10.0, 10.0])
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["Torus", "Cube"]), verts_0=torus.vertices, faces_0=torus.faces,
             verts_1=box.vertices, faces_1=box.faces)
    out = tmp_path / "scene.3mf"
    code = ("import runpy, sys; sys.argv = ['export', sys.argv[1], sys.argv[2]]\n"
            "try:\n    runpy.run_module('recon_core.io.export', run_name='__main__')\n"
            "except SystemExit as e:\n    assert 'torch' not in sys.modules, 'imported torch'\n    raise")
    proc = subprocess.run([sys.executable, "-c", code, str(meshes), str(out)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "(2 objects)" in proc.stdout
    _, objects, items = _read_3mf(out)
    assert [o[0] for o in objects] == ["Torus", "Cube"] and items == 2
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(meshes.read_bytes()[:200])
    for source in ("nope.npz", "empty.npz", "cut.npz"):
        bad = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(tmp_path / source),
                              str(tmp_path / "x.3mf")], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert bad.returncode == 2, (source, bad.stderr)
        assert bad.stderr.startswith("error: Cannot read the meshes") and bad.stderr.count("\n") == 1, bad.stderr
        assert not (tmp_path / "x.3mf").exists()


def _unwritable_reference(path: str, folder: bool) -> str | None:
    """The rule of :func:`unwritable_reason`, spelled out with ``os.path``."""
    if not folder and os.path.isdir(path):
        return "it is a folder"
    here = os.path.abspath(path if folder else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        return f"{here} is a file, not a folder"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"the folder {here} cannot be written to"
    return None


UNWRITABLE_CASES = {  # (path under the test folder, folder, the clause with {tmp} for the test folder)
    "new file, missing folders": ("new/deeper/out.stl", False, None),
    "new folder, missing folders": ("new/deeper", True, None),
    "existing file": ("file", False, None),  # written over through a rename
    "existing folder": ("folder", True, None),
    "file in an existing folder": ("folder/out.stl", False, None),
    "a file that is a folder": ("folder", False, "it is a folder"),
    "a folder that is a file": ("file", True, "{tmp}/file is a file, not a folder"),
    "a file under a file": ("file/out.stl", False, "{tmp}/file is a file, not a folder"),
    "a folder under a file": ("file/sub/deeper", True, "{tmp}/file is a file, not a folder"),
    "a file in a locked folder": ("locked/out.stl", False, "the folder {tmp}/locked cannot be written to"),
    "a folder under a locked folder": ("locked/new/deeper", True, "the folder {tmp}/locked cannot be written to"),
    "a locked folder": ("locked", True, "the folder {tmp}/locked cannot be written to"),
    "a file in a folder in a locked folder": ("locked/open/out.stl", False, None),
}


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("case", sorted(UNWRITABLE_CASES))
def test_unwritable_reason_names_the_obstacle_as_the_reference_does(tmp_path, monkeypatch, case, relative):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    locked = tmp_path / "locked"
    (locked / "open").mkdir(parents=True)
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere, and os.access says so: the folder is locked for the test
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.path.abspath(p) != str(locked)
                            and real_access(p, mode, **kw))
    name, folder, expected = UNWRITABLE_CASES[case]
    expected = None if expected is None else expected.format(tmp=tmp_path)
    if relative:
        monkeypatch.chdir(tmp_path)
    path = name if relative else str(tmp_path / name)
    try:
        assert unwritable_reason(path, folder=folder) == _unwritable_reference(path, folder) == expected
        assert unwritable_reason(Path(path), folder=folder) == expected
    finally:
        locked.chmod(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "locked"]  # nothing was made


def test_current_umask_reads_the_umask_and_leaves_it_as_it_was():
    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and current_umask() == 0o027
    finally:
        os.umask(before)


def test_a_folder_that_cannot_be_searched_is_a_reason_not_an_error(tmp_path, monkeypatch):
    """Python 3.11's Path.exists()/is_dir() raise PermissionError under a folder that cannot be searched (a case
    root does not meet): the reason names that folder instead."""
    import pathlib

    from recon_core.io.export import unwritable_reason

    locked = tmp_path / "locked"

    def refused(self):
        raise PermissionError(13, "Permission denied", str(locked / "out.stl"))

    monkeypatch.setattr(pathlib.Path, "is_dir", refused)
    assert unwritable_reason(locked / "out.stl", folder=False) == f"the folder {locked} cannot be opened"


def test_a_name_at_the_file_system_s_limit_is_written_atomically(tmp_path, monkeypatch):
    """The temporary file's name is short whatever the name's length: a name of the limit's length (255 bytes) is
    written, through a temporary file that a failed rename leaves behind neither."""
    from recon_core.io.export import atomic_write_bytes, name_too_long

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    box = trimesh.creation.box([1.0, 1.0, 1.0])
    for length in (limit - 10, limit):
        path = export_mesh(box.vertices, box.faces, tmp_path / ("b" * (length - 4) + ".stl"))
        assert path.is_file() and len(os.fsencode(path.name)) == length and name_too_long(path) is None
    assert name_too_long(tmp_path / ("b" * limit + ".stl")) == (limit + 4, limit, "bytes")
    assert name_too_long(tmp_path / "missing" / "folders" / ("é" * limit)) == (2 * limit, limit, "bytes")
    with monkeypatch.context() as windows:  # NTFS counts UTF-16 code units: 100 Chinese characters are 300 bytes
        windows.setattr(sys, "platform", "win32")
        assert name_too_long(tmp_path / ("椅" * 100 + ".stl")) is None
        assert name_too_long(tmp_path / ("椅" * 252 + ".stl")) == (256, 255, "characters")
    monkeypatch.setattr("recon_core.io.export.os.replace", lambda src, dst: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / ("d" * limit), b"data")
    assert len(list(tmp_path.iterdir())) == 2  # the two meshes: no temporary file left


def test_a_glb_in_millimetres_is_written_in_metres_the_others_in_millimetres(tmp_path):
    """glTF's unit is the metre: a mesh 90 mm tall is a GLB 0.09 tall (it was 90, a 90-metre chair in Blender and
    every glTF viewer); OBJ, STL and PLY stay in millimetres, and a unitless mesh (no height given) stays as it is."""
    box = trimesh.creation.box([40.0, 90.0, 30.0])  # output frame: 90 mm tall along +Y
    for ext, height in ((".glb", 0.09), (".obj", 90.0)):  # +Y up
        path = export_mesh(box.vertices, box.faces, tmp_path / f"mm{ext}", millimetres=True)
        mesh = trimesh.load(path, force="mesh")
        assert mesh.extents == pytest.approx([40.0 * height / 90.0, height, 30.0 * height / 90.0], rel=1e-6), ext
    for ext in (".stl", ".ply"):  # +Z up, as slicers read them
        mesh = trimesh.load(export_mesh(box.vertices, box.faces, tmp_path / f"mm{ext}", millimetres=True),
                            force="mesh")
        assert mesh.extents == pytest.approx([40.0, 30.0, 90.0], rel=1e-6), ext
    _, objects, _ = _read_3mf(export_mesh(box.vertices, box.faces, tmp_path / "mm.3mf", millimetres=True))
    with pytest.raises(ExportError, match=r"Cannot write unitless\.3mf without a size: a 3MF declares millimetres"):
        export_mesh(box.vertices / 100, box.faces, tmp_path / "unitless.3mf")  # a library user's: 0.9 mm in mm
    assert not (tmp_path / "unitless.3mf").exists()
    assert np.ptp(objects[0][1][:, 2]) == pytest.approx(90.0)  # 3MF declares millimetres: its Z is the height
    unitless = trimesh.load(export_mesh(box.vertices / 100, box.faces, tmp_path / "unitless.glb"), force="mesh")
    assert unitless.extents == pytest.approx([0.4, 0.9, 0.3], rel=1e-6)


def test_obj_and_glb_name_the_mesh_after_the_file_with_its_faces_as_they_were(tmp_path):
    """A GLB's mesh was "geometry_0" while a 3MF's object is named after the file: OBJ and GLB now name it so too
    (or as asked), and the vertices and faces read back are the ones given, in order."""
    box = trimesh.creation.box([40.0, 90.0, 30.0])
    for ext in (".obj", ".glb"):
        for name, expected in ((None, "chair"), ("Seat", "Seat")):
            path = export_mesh(box.vertices, box.faces, tmp_path / f"chair{ext}", name)
            scene = trimesh.load(path, force="scene", process=False)
            assert list(scene.geometry) == [expected], (ext, list(scene.geometry))
            back = scene.geometry[expected]
            np.testing.assert_allclose(back.vertices, box.vertices + [0.0, 45.0, 0.0], atol=1e-6)  # on the ground
            np.testing.assert_array_equal(back.faces, box.faces)
            if ext == ".obj":
                assert f"\no {expected}\n" in path.read_text()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o000])  # 0o002 and 0 tell 0666 from 0644
def test_a_written_file_has_the_permissions_of_a_new_file(tmp_path, umask):
    """Meshes go through a temporary file and a rename: the file gets 0666 less the umask, as any new file, not a
    temporary file's 0600 (a slicer or print server run as another user could not read it); an existing file
    replaced too."""
    import stat

    from recon_core.io.export import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new.stl", b"solid")
        (tmp_path / "old.stl").write_bytes(b"x")
        os.chmod(tmp_path / "old.stl", 0o600)
        atomic_write_bytes(tmp_path / "old.stl", b"solid")
    finally:
        os.umask(old)
    for name in ("new.stl", "old.stl"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.stl", "old.stl"]  # no temporary file left


def _broken_meshes():
    """(name, verts, faces): a closed box and the ways an edit breaks one."""
    box = trimesh.creation.box()
    v, f = box.vertices, box.faces
    fin = np.vstack([f, [[0, 1, len(v)]]])  # a third face on edge 0-1: shared by three
    flipped = f.copy()
    flipped[3] = flipped[3, ::-1]
    return [
        ("closed", v, f),
        ("a face deleted", v, f[1:]),
        ("a fin", np.vstack([v, [[2.0, 2.0, 2.0]]]), fin),
        ("a face flipped", v, flipped),
        ("inside out", v, f[:, ::-1]),
        ("no faces", v, f[:0]),
        # split vertices (an Edge Split modifier, an imported STL): each face its own corners, closed by position
        ("split vertices", v[f].reshape(-1, 3), np.arange(3 * len(f)).reshape(-1, 3)),
    ]


@pytest.mark.parametrize("name, verts, faces", _broken_meshes()[:-2], ids=[m[0] for m in _broken_meshes()[:-2]])
@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_the_add_on_writer_says_what_would_not_print_as_recon_core_checks_it(tmp_path, name, verts, faces, ext):
    """Export STL and Export 3MF both write through ``python -m recon_core.io.export``: one verdict, the printable
    check's (Export STL checked the faces in Blender alone, and the two disagreed on a mesh with a Solidify
    modifier); the file is written all the same."""
    from recon_core.io.export import main
    from recon_core.mesh.printable import check_printable

    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array([name]), verts_0=verts * 20.0, faces_0=faces)
    out = tmp_path / f"part{ext}"
    printed = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(out)], cwd=REPO,
                             capture_output=True, text=True).stdout
    assert out.exists()
    problems = check_printable(verts * 20.0, faces).problems()
    warned = [line for line in printed.splitlines() if line.startswith("warning: ")]
    assert warned == ([f"warning: {name} is not printable as it is: {', '.join(problems)}"] if problems else [])
    assert main([str(meshes), str(tmp_path / "again.obj")]) == 2 and not (tmp_path / "again.obj").exists()


def test_the_add_on_writer_escapes_what_the_console_cannot_show(tmp_path):
    """Run by hand on Windows with its output redirected (cp1252), an object's name in Chinese in a note ended in a
    UnicodeEncodeError traceback, exit 1, after the file was written."""
    plate = trimesh.creation.box([20.0, 20.0, 0.3])  # walls under 0.8 mm: a note that names the object
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["椅子"]), verts_0=plate.vertices + [0, 0, 10], faces_0=plate.faces)
    out = tmp_path / "Zoë part.3mf"
    proc = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(out)], cwd=REPO,
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert proc.returncode == 0 and out.exists(), proc.stderr.decode("cp1252", "replace")
    assert b"\\u6905\\u5b50" in proc.stdout and b"Traceback" not in proc.stderr


def test_an_stl_is_checked_as_slicers_read_it_without_the_faces_its_joined_corners_collapse(tmp_path):
    """A box with one edge collapsed (its two ends at one place, not merged): in an STL the two faces on it are
    zero-area triangles, which slicers drop, and what is left is closed; joining the corners and keeping those faces
    called it open and crowded."""
    box = trimesh.creation.box([20.0, 20.0, 20.0])
    verts, faces = box.vertices.copy(), box.faces
    edge = next((int(a), int(b)) for a, b in box.edges_unique)
    verts[edge[1]] = verts[edge[0]]
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["wedge"]), verts_0=verts, faces_0=faces)
    printed = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(tmp_path / "w.stl")],
                             cwd=REPO, capture_output=True, text=True).stdout
    assert "wrote" in printed and "warning" not in printed, printed


def test_an_stl_of_several_objects_is_checked_as_the_one_mesh_it_is(tmp_path):
    """Two closed cubes sharing a face are each printable, but the file of them is one mesh with crowded edges: it was
    checked object by object and passed."""
    a, b = trimesh.creation.box([20.0, 20.0, 20.0]), trimesh.creation.box([20.0, 20.0, 20.0])
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["a", "b"]), verts_0=a.vertices, faces_0=a.faces, verts_1=b.vertices + [20, 0, 0],
             faces_1=b.faces)
    printed = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(tmp_path / "two.stl")],
                             cwd=REPO, capture_output=True, text=True).stdout
    assert "warning: two is not printable as it is: " in printed and "more than two faces" in printed, printed


def test_an_stl_joins_split_vertices_before_its_check_and_notes_thin_walls_and_size(tmp_path):
    """An Edge Split modifier's split vertices are one in an STL (positions only; slicers join them): no warning, where
    a 3MF, which holds them split, is not watertight. A plank 0.5 mm thick is noted for its thin walls, and at 300 mm
    for its size; the STL rests on the plate, centred on the Z axis."""
    box = trimesh.creation.box([300.0, 40.0, 0.5])
    split = box.vertices[box.faces].reshape(-1, 3) + [50.0, 60.0, 70.0]
    meshes = tmp_path / "meshes.npz"
    np.savez(meshes, names=np.array(["plank"]), verts_0=split, faces_0=np.arange(len(split)).reshape(-1, 3))
    printed = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(tmp_path / "p.stl")],
                             cwd=REPO, capture_output=True, text=True).stdout.splitlines()
    assert printed[0] == f"wrote {tmp_path / 'p.stl'} (1 object)"
    assert printed[1].startswith("note: plank: its walls thinner than 0.8 mm cover 24,000 mm² of it (99% of the "
                                 "surface; 0.5 mm thick in the median there)")
    assert printed[2].startswith("note: at 300 x 40 x 0.5 mm (width x depth x height) it is larger than the build "
                                 "volume of most printers")
    assert len(printed) == 3
    back = trimesh.load(tmp_path / "p.stl", force="mesh")
    np.testing.assert_allclose(back.bounds, [[-150, -20, 0], [150, 20, 0.5]], atol=1e-4)
    printed = subprocess.run([sys.executable, "-m", "recon_core.io.export", str(meshes), str(tmp_path / "p.3mf")],
                             cwd=REPO, capture_output=True, text=True).stdout
    assert "warning: plank is not printable as it is: not watertight" in printed


def test_a_printable_reports_problems_name_each_failure():
    from recon_core.mesh.printable import check_printable

    box = trimesh.creation.box()
    assert check_printable(box.vertices, box.faces).problems() == []
    assert check_printable(box.vertices, box.faces[1:]).problems() == ["not watertight (holes)"]
    assert check_printable(box.vertices, box.faces[:, ::-1]).problems() == ["inside out (its faces point inward)"]
    through = trimesh.util.concatenate([box, box.copy().apply_translation((0.5, 0.2, 0.1))])
    [found] = check_printable(through.vertices, through.faces).problems()
    assert re.fullmatch(r"\d+ self-intersecting face pairs", found)


def test_staged_writes_replace_the_earlier_files_only_once_every_new_one_is_written(tmp_path, monkeypatch):
    """``recon-mesh -o chair.stl --preview p.png`` stopped while the preview was drawn had replaced the user's earlier
    chair.stl, then removed it. Inside ``staged_writes`` the writes wait in their temporary files and are renamed into
    place together at the end (or by its callable); a failure before then leaves the earlier files as they were, and
    one rename that fails removes the files not yet renamed."""
    from recon_core.io import export

    a, b = tmp_path / "a.stl", tmp_path / "b.png"
    a.write_bytes(b"earlier a")
    with pytest.raises(KeyboardInterrupt):
        with export.staged_writes():
            export.atomic_write_bytes(a, b"new a")
            export.atomic_write_bytes(b, b"new b")
            assert a.read_bytes() == b"earlier a" and not b.exists() and len(list(tmp_path.glob(".*.tmp"))) == 2
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.stl"] and a.read_bytes() == b"earlier a"
    with export.staged_writes():
        export.atomic_write_bytes(a, b"new a")
        export.atomic_write_bytes(b, b"new b")
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b") and not list(tmp_path.glob(".*.tmp"))
    with export.staged_writes() as commit:  # renamed when the caller says, once
        export.atomic_write_bytes(a, b"third a")
        commit()
        assert a.read_bytes() == b"third a"
    export.atomic_write_bytes(b, b"direct b")  # outside the block: at once
    assert b.read_bytes() == b"direct b"
    renamed = []

    def replace_then_fail(src, dst):
        if renamed:
            raise OSError(5, "Input/output error")
        renamed.append(dst)
        os.rename(src, dst)

    with pytest.raises(ExportError, match=rf"^Cannot write {re.escape(str(b))}: Input/output error "  # exit 2, one
                       rf"\({re.escape(str(a))} was written\)\. Choose a writable location\.$"):  # sentence
        with export.staged_writes():
            export.atomic_write_bytes(a, b"fourth a")
            export.atomic_write_bytes(b, b"fourth b")
            monkeypatch.setattr(export.os, "replace", replace_then_fail)
    monkeypatch.undo()
    assert (a.read_bytes(), b.read_bytes()) == (b"fourth a", b"direct b") and not list(tmp_path.glob(".*.tmp"))


def test_a_file_held_open_on_windows_is_replaced_once_it_is_let_go(tmp_path, monkeypatch):
    """Windows refuses to replace a file that another program holds open (a slicer's preview, a virus scanner, a cloud
    folder's sync, each for a moment after the file changes): the rename is tried again for about 1.5 s, and a file
    held longer is said so, with what to do. Elsewhere a refused rename is not tried again."""
    from recon_core.io import export

    target = tmp_path / "part.stl"
    target.write_bytes(b"earlier")
    replace, waits, held = os.replace, [], {"tries": 2}

    def held_open(src, dst):
        if held["tries"]:
            held["tries"] -= 1
            raise PermissionError(13, "Access is denied", str(dst))
        replace(src, dst)

    monkeypatch.setattr(export.os, "replace", held_open)
    monkeypatch.setattr(export.time, "sleep", waits.append)
    monkeypatch.setattr(sys, "platform", "win32")
    export.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and waits == [0.05, 0.1] and not list(tmp_path.glob(".*.tmp"))
    held["tries"] = 10
    with pytest.raises(ExportError, match=rf"^Cannot write {re.escape(str(target))}: Access is denied\. Close it in "
                       r"any program that has it open \(a slicer, a viewer\), or choose a writable location\.$"):
        with export.staged_writes():
            export.atomic_write_bytes(target, b"newer")
    assert target.read_bytes() == b"new" and not list(tmp_path.glob(".*.tmp"))
    assert waits[2:] == list(export.REPLACE_RETRY_S)
    box = trimesh.creation.box([20.0, 20.0, 20.0])  # the add-on's Export 3MF over a file a slicer has open
    held["tries"] = 10
    with pytest.raises(ExportError, match=r"Access is denied\. Close it in any program that has it open"):
        export.write_3mf([("box", box.vertices, box.faces)], tmp_path / "plate.3mf")
    monkeypatch.setattr(sys, "platform", "linux")
    held["tries"], waits[:] = 1, []
    with pytest.raises(PermissionError):
        export.atomic_write_bytes(target, b"newest")
    assert waits == [] and target.read_bytes() == b"new"
