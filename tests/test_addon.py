"""The Blender add-on in real headless Blender (the bpy module): build, install, reconstruct, fail, undo, unregister.

Driving the operator headless: bpy-as-a-module has no event loop, and its window has no
event state, so ``INVOKE_DEFAULT`` falls back to ``execute()`` (which runs the same worker
and waits). The modal path is tested by calling the operator class's own ``invoke`` and
``modal`` on a stand-in for the operator instance, with a real window-manager timer;
only ``modal_handler_add`` is recorded instead of performed (:class:`ModalDriver`).

Undo: Blender pushes the undo step of an operator with ``{'UNDO'}`` when it finishes from
the UI, not when a script calls it; the tests push that step themselves
(``ed.undo_push``), as the UI would, then check that one ``ed.undo()`` removes the object
and its mask image.

Previews: background Blender makes no image previews (``icon_id`` stays 0), so the mask
panel's tests check its labels and the mask image's size and pixels, not the picture drawn.

The tests share one warm worker (the add-on keeps it between clicks) running a tiny,
randomly initialised model; tests that kill the worker or change the interpreter come last.
Candidates need a model with a shape bank: the candidate tests use a tiny one with a bank of four
fake models (tests/test_shape_bank.py's), built once in a child process so that Blender's process
never imports torch; they run one after the other, so the worker switches model twice in all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

bpy = pytest.importorskip("bpy")
import bmesh  # noqa: E402
from mathutils import Vector  # noqa: E402

import build_addon  # noqa: E402
from recon_core.io.worker import DELAY_ENV as DELAY_ENV_NAME  # noqa: E402
from tests.test_worker import PYTHON, make_alpha_image, make_shape_image, worker_client, write_tiny_model  # noqa: E402

pytestmark = pytest.mark.blender

EXTENSION = "reconstruct_from_image"
CLASS_NAMES = ("RECON_PT_reconstruct", "RECON_PT_candidates", "RECON_PT_check", "RECON_PT_notes", "RECON_PT_mask",
               "ReconSettings", "ReconCandidateRef", "ReconPreferences")


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """Build the zip, install and enable it into a throw-away extensions repository; yields the add-on."""
    root = tmp_path_factory.mktemp("addon")
    preferences = bpy.context.preferences
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLENDER_USER_RESOURCES", str(root / "user"))  # nothing lands in the real user folders
        preferences.use_preferences_save = False
        repo_dir = str(root / "extensions")
        assert bpy.ops.preferences.extension_repo_add(
            name="recon_test", type='LOCAL', use_custom_directory=True, custom_directory=repo_dir) == {'FINISHED'}
        repo = next(r for r in preferences.extensions.repos if r.custom_directory == repo_dir)
        module = f"bl_ext.{repo.module}.{EXTENSION}"
        zip_path = build_addon.build(root / "dist")
        result = bpy.ops.extensions.package_install_files(
            filepath=str(zip_path), repo=repo.module, enable_on_install=True)
        assert result == {'FINISHED'}
        assert module in preferences.addons
        prefs = preferences.addons[module].preferences
        assert prefs.python_path == build_addon.default_python()  # written into the zip by build_addon.py
        prefs.model_path = str(write_tiny_model(root))
        yield SimpleNamespace(module=module, package=sys.modules[module], prefs=prefs, root=root,
                              image=make_shape_image(root / "shape.png"), tiny_model=prefs.model_path)
        if module in preferences.addons:
            bpy.ops.preferences.addon_disable(module=module)
        index = next(i for i, r in enumerate(preferences.extensions.repos) if r.custom_directory == repo_dir)
        bpy.ops.preferences.extension_repo_remove(index=index, remove_files=True)


@pytest.fixture
def settings(addon):
    s = bpy.context.scene.recon_settings
    s.source, s.image_path, s.image, s.category, s.detail = 'FILE', str(addon.image), None, 'AUTO', 'LOW'
    s.height_mm = 50.0
    s.candidates, s.object_source, s.mask_image, s.upright = 1, 'FIND', None, True
    bpy.context.scene.unit_settings.scale_length = 1.0
    addon.prefs.python_path, addon.prefs.timeout_s, addon.prefs.model_path = PYTHON, 300.0, addon.tiny_model
    return s


def scene_state() -> tuple[frozenset, frozenset, frozenset, frozenset]:
    return (frozenset(o.name for o in bpy.data.objects), frozenset(m.name for m in bpy.data.meshes),
            frozenset(i.name for i in bpy.data.images), frozenset(c.name for c in bpy.data.collections))


def temp_leftovers(before: set[str]) -> set[str]:
    """The add-on's temporary files and folders (``TEMP_PREFIX*``) made since ``before`` and still there."""
    now = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    return {n for n in now - before if n.startswith(worker_client.TEMP_PREFIX)}


def mask_pixels(image) -> np.ndarray:
    """(H, W) uint8 grey of a mask image, top row first (Blender stores the rows bottom-up)."""
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return np.round(pixels.reshape(height, width, 4)[::-1, :, 0] * 255).astype(np.uint8)


def reconstruct() -> bpy.types.Object:
    """Run the operator as a script would; returns the one object it added."""
    before = scene_state()[0]
    assert bpy.ops.recon.reconstruct_image() == {'FINISHED'}
    new = [o for o in bpy.data.objects if o.name not in before]
    assert len(new) == 1
    return new[0]


def assert_closed_manifold(mesh) -> None:
    bm = bmesh.new()
    try:
        bm.from_mesh(mesh)
        assert len(bm.faces) > 0
        assert all(len(e.link_faces) == 2 and e.is_manifold for e in bm.edges)
        assert all(v.is_manifold for v in bm.verts)
        assert bm.calc_volume(signed=True) > 0  # outward normals
    finally:
        bm.free()


class ModalDriver:
    """Runs the operator class's own ``invoke``/``modal`` the way Blender's event loop would.

    A stand-in instance receives the operator's methods and records ``report`` calls; the
    context is ``bpy.context`` with ``window_manager.modal_handler_add`` recorded (Blender
    cannot dispatch events headless), everything else real, including the timer.
    """

    def __init__(self, operator_class):
        methods = {k: v for k, v in vars(operator_class).items() if inspect.isfunction(v)}
        self.op = type("OperatorStandIn", (), methods)()
        self.op.report = lambda kind, message: self.reports.append((set(kind), message))
        self.reports: list[tuple[set, str]] = []
        self.handlers: list = []
        wm = bpy.context.window_manager
        self.context = SimpleNamespace(**{k: getattr(bpy.context, k) for k in (
            "scene", "collection", "view_layer", "workspace", "window", "screen", "object", "preferences")})
        self.context.window_manager = SimpleNamespace(
            modal_handler_add=self.handlers.append, event_timer_add=wm.event_timer_add,
            event_timer_remove=wm.event_timer_remove, progress_begin=wm.progress_begin,
            progress_update=wm.progress_update, progress_end=wm.progress_end)

    def invoke(self):
        return self.op.invoke(self.context, SimpleNamespace(type='LEFTMOUSE', value='PRESS'))

    def tick(self, event_type='TIMER', value='NOTHING'):
        return self.op.modal(self.context, SimpleNamespace(type=event_type, value=value))

    def finish(self, poll_s: float = 0.05):
        """Timer ticks until the operator stops passing them through; its final status."""
        while (status := self.tick()) == {'PASS_THROUGH'}:
            time.sleep(poll_s)
        return status


# -- the happy path ------------------------------------------------------------------------------------


def test_panel_and_operators_are_registered(addon):
    assert bpy.types.RECON_PT_reconstruct.bl_category == "Reconstruct"
    assert bpy.types.RECON_PT_reconstruct.bl_space_type == 'VIEW_3D'
    assert bpy.ops.recon.reconstruct_image.poll() and hasattr(bpy.types.Scene, "recon_settings")
    for idname in ("next_candidate", "keep_candidate"):
        op = getattr(bpy.ops.recon, idname)
        assert set(op.bl_options) >= {'REGISTER', 'UNDO'} and not op.poll()  # no candidate is active
    for source in Path(addon.package.__file__).parent.glob("*.py"):  # torch never loads inside Blender
        assert not re.search(r"^\s*(import|from) (torch|recon_core)\b", source.read_text(), re.MULTILINE), source


def test_tooltips_are_one_line_of_plain_words(addon):
    """Blender shows a class's docstring as its tooltip, line breaks and indentation included, and a property's
    description as is: each is one line, without the docstrings' cross-references; a category's reads "as an
    airplane", not "as a airplane"."""
    texts = {cls.__name__: cls.bl_rna.description for cls in addon.package.classes}
    blenders = set().union(*(base.bl_rna.properties.keys() for base in (  # Blender's own, e.g. bl_cursor_pending
        bpy.types.Operator, bpy.types.Panel, bpy.types.PropertyGroup, bpy.types.AddonPreferences)))
    for cls in addon.package.classes:
        for prop in (p for p in cls.bl_rna.properties if p.identifier not in blenders):
            texts[f"{cls.__name__}.{prop.identifier}"] = prop.description
            for item in getattr(prop, "enum_items", ()):
                texts[f"{cls.__name__}.{prop.identifier}.{item.identifier}"] = item.description
    for prop in bpy.types.Scene.bl_rna.properties["recon_settings"].fixed_type.bl_rna.properties:
        for item in getattr(prop, "enum_items", ()):
            texts[f"recon_settings.{prop.identifier}.{item.identifier}"] = item.description
    assert texts["recon_settings.category.airplane"] == "Reconstruct it as an airplane"
    assert texts["recon_settings.category.chair"] == "Reconstruct it as a chair"
    for name, text in texts.items():
        assert "\n" not in text and "  " not in text and ":func:" not in text and ":data:" not in text, (name, text)
        assert "``" not in text and len(text) <= 200, (name, text)


def test_reconstruct_adds_one_printable_object_at_the_cursor_and_one_undo_removes_it(addon, settings):
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    bpy.ops.ed.undo_push(message="before")
    objects, meshes, images, collections = scene_state()
    obj = reconstruct()
    assert obj.name == "shape" and obj.type == 'MESH'
    assert obj.select_get() and bpy.context.view_layer.objects.active == obj
    assert [o.name for o in bpy.context.selected_objects] == ["shape"]
    assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
    assert all(p.use_smooth for p in obj.data.polygons) and len(obj.data.vertices) == 642
    assert_closed_manifold(obj.data)
    # Default scene: 1 Blender unit = 1 m (unit scale 1), so 50 mm is 0.05 units, resting on the cursor.
    assert obj.dimensions.z == pytest.approx(0.050, rel=1e-4)
    assert min(v.co.z for v in obj.data.vertices) == pytest.approx(0.0, abs=1e-6)
    check = obj["recon_check"]
    assert check["watertight"] and check["manifold"] and check["ok"] and check["volume_mm3"] > 0
    assert obj["recon_mask"].name == "shape mask" and "shape mask" not in images

    bpy.ops.ed.undo_push(message="Reconstruct from Image")  # what the UI does when the operator finishes
    bpy.ops.ed.undo()
    assert scene_state() == (objects, meshes, images, collections)


# -- the mesh from the worker's arrays -------------------------------------------------------------------


def mesh_arrays(mesh) -> dict[str, np.ndarray | list]:
    """Everything the add-on's mesh holds: positions, edges, corners, faces, smoothness and the attribute layers."""
    def get(collection, prop, dtype, width=1):
        out = np.empty(len(collection) * width, dtype)
        collection.foreach_get(prop, out)
        return out.reshape(-1, width) if width > 1 else out

    return {
        "co": get(mesh.vertices, "co", np.float32, 3),
        "edges": get(mesh.edges, "vertices", np.int32, 2),
        "loop_verts": get(mesh.loops, "vertex_index", np.int32),
        "loop_edges": get(mesh.loops, "edge_index", np.int32),
        "loop_starts": get(mesh.polygons, "loop_start", np.int32),
        "loop_totals": get(mesh.polygons, "loop_total", np.int32),
        "smooth": get(mesh.polygons, "use_smooth", bool),
        "attributes": sorted((a.name, a.domain, a.data_type) for a in mesh.attributes),
    }


def closed_meshes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Closed, outward-facing triangle meshes as numpy arrays: a box, and an ico-sphere with its vertices shuffled."""
    import trimesh

    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.3)  # 2,562 vertices, 5,120 faces
    order = np.random.default_rng(0).permutation(len(sphere.vertices))
    new_index = np.argsort(order)  # the vertex at old index i moves to new_index[i]
    return {"box": (box.vertices, box.faces),
            "sphere": (sphere.vertices[order] + (1.0, -2.0, 3.0), new_index[sphere.faces])}


@pytest.mark.parametrize("corners", ["attribute", "loops"])
@pytest.mark.parametrize("name", ["box", "sphere"])
def test_fill_mesh_holds_the_arrays_and_equals_from_pydata(addon, name, corners, monkeypatch):
    """Both ways of setting the corners (the corner attribute of this Blender, ``mesh.loops`` where a Blender lacks
    it) make the mesh ``from_pydata`` makes."""
    verts, faces = closed_meshes()[name]
    mesh = bpy.data.meshes.new(name)
    reference = bpy.data.meshes.new(f"{name} from_pydata")  # the slow path it replaces: Python lists
    if corners == "loops":
        monkeypatch.setattr(addon.package.operators, "CORNER_VERT", ".no_such_attribute")
    else:  # this Blender has it, so the fast path is the one taken
        probe = bpy.data.meshes.new("probe")
        probe.vertices.add(3)
        probe.loops.add(3)
        attribute = probe.attributes.get(addon.package.operators.CORNER_VERT)
        assert attribute is not None and (attribute.domain, attribute.data_type) == ('CORNER', 'INT')
        bpy.data.meshes.remove(probe)
    try:
        addon.package.operators.fill_mesh(mesh, verts, faces)
        reference.from_pydata(verts.tolist(), [], faces.tolist(), shade_flat=False)
        got, want = mesh_arrays(mesh), mesh_arrays(reference)
        np.testing.assert_array_equal(got["co"], verts.astype(np.float32))
        np.testing.assert_array_equal(got["loop_verts"].reshape(-1, 3), faces)  # same corners, same order
        np.testing.assert_array_equal(got["loop_starts"], 3 * np.arange(len(faces)))
        assert (got["loop_totals"] == 3).all() and len(got["edges"]) == len(faces) * 3 // 2
        assert mesh.validate() is False  # nothing to correct
        assert_closed_manifold(mesh)
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    finally:
        bpy.data.meshes.remove(mesh)
        bpy.data.meshes.remove(reference)


def test_fill_mesh_refuses_bad_arrays_and_a_mesh_with_geometry(addon):
    verts, faces = closed_meshes()["box"]
    mesh = bpy.data.meshes.new("bad")
    try:
        with pytest.raises(ValueError, match=r"faces index vertices 0 \.\. 8, but there are 8 vertices"):
            addon.package.operators.fill_mesh(mesh, verts, np.where(faces == 7, 8, faces))
        with pytest.raises(ValueError, match=r"\(F, 3\)"):
            addon.package.operators.fill_mesh(mesh, verts, faces.reshape(-1, 6))
        assert len(mesh.vertices) == len(mesh.loops) == len(mesh.polygons) == 0  # checked before anything is added
        addon.package.operators.fill_mesh(mesh, verts, faces)
        with pytest.raises(ValueError, match="already has geometry"):
            addon.package.operators.fill_mesh(mesh, verts, faces)
    finally:
        bpy.data.meshes.remove(mesh)


def _capture_results(addon, monkeypatch) -> list:
    """The list that each worker result the operator builds an object from is appended to."""
    operators = addon.package.operators
    results = []
    build = operators._Reconstruction.build
    monkeypatch.setattr(operators._Reconstruction, "build",
                        lambda self, context: results.append(self.job.result) or build(self, context))
    return results

def test_the_object_holds_the_workers_vertices_in_blender_frame_and_its_faces(addon, settings, monkeypatch):
    results = _capture_results(addon, monkeypatch)
    obj = reconstruct()
    [result] = results
    got = mesh_arrays(obj.data)
    # Default scene: 1 unit = 1000 mm, and the worker answers in mm (the panel's height is set).
    want = addon.package.mesh_data.to_blender(result.verts, 1.0 / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(got["co"], want)
    np.testing.assert_array_equal(got["loop_verts"].reshape(-1, 3), result.faces)
    assert got["smooth"].all() and "sharp_face" not in [name for name, _, _ in got["attributes"]]
    bpy.data.objects.remove(obj)


def test_detail_is_a_level_the_worker_turns_into_the_output_size(addon, settings):
    """The panel's Detail is Low / Medium / High (the worker's level names), not a vertex count."""
    prop = settings.bl_rna.properties["detail"]
    assert [(item.identifier, item.name) for item in prop.enum_items] == [
        ('LOW', "Low"), ('MEDIUM', "Medium"), ('HIGH', "High")]
    assert prop.name == "Detail" and prop.default == 'MEDIUM'
    assert prop.enum_items['HIGH'].description.startswith("About 20,500 faces")
    settings["detail"] = 2  # what a .blend saved with the earlier 642 / 2562 / 10242 items stores for 10242
    assert settings.detail == 'HIGH'
    vertices = {}
    for level in ('LOW', 'MEDIUM'):  # the tiny ico-sphere model outputs the level's vertex count
        settings.detail = level
        obj = reconstruct()
        vertices[level] = len(obj.data.vertices)
        assert_closed_manifold(obj.data)
        bpy.data.objects.remove(obj)
    assert vertices == {'LOW': 642, 'MEDIUM': 2562}


def test_a_killed_blenders_temporary_files_go_at_the_first_run(addon, settings, monkeypatch):
    """A Blender killed mid-run leaves its run's folder (the mask, the picture) in the temporary folder; the first run
    of a Blender session removes those written over a day ago, and no run removes a newer one."""
    folder = os.environ.get("TMPDIR", "/tmp")
    old = tempfile.mkdtemp(prefix=worker_client.TEMP_PREFIX, dir=folder)
    Path(old, "mask.png").write_bytes(b"mask")
    recent = tempfile.mkdtemp(prefix=worker_client.TEMP_PREFIX, dir=folder)
    stale = time.time() - worker_client.STALE_TEMP_S - 60
    os.utime(old, (stale, stale))
    monkeypatch.setattr(addon.package.worker_client, "_swept", False)  # as in a new Blender session

    def run_and_remove():
        obj = reconstruct()
        mesh, mask = obj.data, obj.get("recon_mask")
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        if mask is not None:
            bpy.data.images.remove(mask)

    state = scene_state()
    try:
        run_and_remove()
        assert not os.path.exists(old) and os.path.isdir(recent)
        os.utime(recent, (stale, stale))
        run_and_remove()
        assert os.path.isdir(recent), "swept once a session, not at every run"
        after = scene_state()  # an earlier test's mask of this picture was replaced by the first run's, and removed
        assert after[:2] == state[:2] and after[2] <= state[2] and after[3] == state[3]
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(recent, ignore_errors=True)


def test_a_temporary_file_windows_will_not_remove_ends_the_run_all_the_same(addon, settings, tmp_path, monkeypatch):
    """Windows refuses to remove a file that another program holds open (a worker being stopped, a virus scanner):
    the error skipped ending the operator's progress and status and left the add-on marked as running."""
    path = make_shape_image(tmp_path / "packed.png")
    image = bpy.data.images.load(str(path))
    image.pack()
    settings.source, settings.image = 'IMAGE', image
    unlink, refused = os.unlink, []

    def held_open(name, *args, **kwargs):
        if os.path.basename(name).startswith(worker_client.TEMP_PREFIX):
            refused.append(name)
            raise PermissionError(13, "The process cannot access the file because it is being used by another process",
                                  name)
        return unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", held_open)
    try:
        obj = reconstruct()
    finally:
        monkeypatch.undo()
        for name in refused:
            unlink(name)
    assert refused and addon.package.operators._RUNNING is None
    mask = obj["recon_mask"]
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(mask)
    bpy.data.images.remove(image)


def test_packed_image_is_written_to_a_temporary_file(addon, settings, tmp_path):
    path = make_shape_image(tmp_path / "packed_photo.png")
    image = bpy.data.images.load(str(path))
    image.pack()
    image.name = "packed_photo.png.001"  # as Blender names a second image of the same file
    path.unlink()  # only the packed copy remains
    settings.source, settings.image = 'IMAGE', image
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    obj = reconstruct()
    assert obj.name == "packed_photo", "named without the extension and Blender's duplicate suffix"
    assert_closed_manifold(obj.data)
    assert not temp_leftovers(temp_before)  # the picture's copy and the mask's folder
    mask = obj["recon_mask"]
    assert mask.name == "packed_photo mask" and mask["recon_picture"] == "Blender image packed_photo.png.001"
    assert tuple(mask.size) == tuple(image.size) and mask.packed_file is not None
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(image)
    bpy.data.images.remove(mask)


def test_a_packed_photo_turned_by_its_exif_tag_is_read_upright_as_its_file_is(addon, settings, tmp_path):
    """Blender shows a photo as stored, ignoring its EXIF orientation; the worker turns it upright. Packed, the photo
    is handed over as its own bytes, so it gives the same mask as its file: upright, not sideways."""
    stored = Image.new("RGB", (128, 96), "white")  # stored lying down: orientation 6 turns it to 96 x 128
    stored.paste((200, 40, 40), (20, 30, 110, 70))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned_photo.jpg"
    stored.save(path, quality=95, exif=exif)
    image = bpy.data.images.load(str(path))
    assert tuple(image.size) == (128, 96)  # as stored
    settings.source, settings.image = 'IMAGE', image
    masks = []
    for packed in (False, True):
        if packed:
            image.pack()
            path.unlink()  # only the packed copy remains
        obj = reconstruct()
        mask = obj["recon_mask"]
        masks.append((tuple(mask.size), mask_pixels(mask)))
        bpy.data.objects.remove(obj)
        bpy.data.images.remove(mask)
    assert masks[0][0] == masks[1][0] == (96, 128), "the mask has the upright photo's size"
    assert np.array_equal(masks[0][1], masks[1][1])
    bpy.data.images.remove(image)


def test_object_names_drop_the_extension_and_blenders_duplicate_suffix(addon):
    object_name = addon.package.operators._object_name
    assert [object_name(n) for n in ("chair.png", "chair.png.001", "chair.001", "chair.png.1234", "chair",
                                     "Render Result", "v1.2.png", ".001", "")] == [
        "chair", "chair", "chair", "chair", "chair", "Render Result", "v1.2", "Reconstruction", "Reconstruction"]


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer undone: 8-bit sRGB levels / 255 to linear values."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def float_image(name: str, picture: Path):
    """A float Blender image holding ``picture``'s pixels as Blender holds a float image's: linear, premultiplied by
    alpha, rows bottom first."""
    with Image.open(picture) as img:
        rgba = np.asarray(img.convert("RGBA"), np.float64) / 255.0
    height, width = rgba.shape[:2]
    linear = np.concatenate([srgb_to_linear(rgba[..., :3]) * rgba[..., 3:], rgba[..., 3:]], axis=2)
    image = bpy.data.images.new(name, width, height, alpha=True, float_buffer=True)
    image.pixels.foreach_set(linear[::-1].astype(np.float32).ravel())
    return image


@pytest.mark.parametrize("kind", ["OPEN_EXR", "HDR", "EXR file"])
def test_a_float_image_the_worker_cannot_read_is_handed_over_as_an_8_bit_png(addon, settings, tmp_path, kind):
    """An image in a format Pillow does not read (here OpenEXR, Radiance HDR: generated, or an EXR file loaded into
    Blender) is written as an 8-bit RGBA PNG of what Blender shows: the picture it was made from, within a level.

    The EXR file is of an opaque picture: Blender's own EXR writer does not give back a half-transparent pixel."""
    if kind == "EXR file":
        picture = make_shape_image(tmp_path / "cutout.png")
    else:
        picture = make_alpha_image(tmp_path / "cutout.png")  # a half-transparent corner: the premultiplication shows
    image = float_image("cutout", picture)
    if kind == "EXR file":
        image.filepath_raw, image.file_format = str(tmp_path / "cutout.exr"), 'OPEN_EXR'
        image.save()
        bpy.data.images.remove(image)
        image = bpy.data.images.load(str(tmp_path / "cutout.exr"))
        assert image.source == 'FILE' and not image.is_dirty and image.packed_file is None
    else:
        image.file_format = kind
    path, temp = addon.package.operators._image_file(image, bpy.context.scene)
    try:
        assert path == temp and temp.endswith(".png"), "a copy, not the file itself"
        with Image.open(path) as png:
            got = np.asarray(png).astype(int)
            assert (png.format, png.mode) == ("PNG", "RGBA")
        want = np.asarray(Image.open(picture).convert("RGBA")).astype(int)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got[..., 3], want[..., 3])
        seen = want[..., 3] > 0  # where the alpha is 0 the colour is lost to the premultiplication
        assert np.abs(got[seen, :3] - want[seen, :3]).max() <= 1
    finally:
        os.unlink(temp)
        bpy.data.images.remove(image)


def test_reconstruct_from_an_exr_image(addon, settings, tmp_path):
    image = float_image("photo.exr", make_shape_image(tmp_path / "photo.png"))
    image.file_format = 'OPEN_EXR'
    settings.source, settings.image = 'IMAGE', image
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    obj = reconstruct()
    assert obj.name == "photo"
    assert_closed_manifold(obj.data)
    assert not temp_leftovers(temp_before), "the PNG copy is removed"
    assert [i.name for i in bpy.data.images if i.name.startswith("photo.exr")] == ["photo.exr"], "no copy is kept"
    mask = obj["recon_mask"]
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(image)
    bpy.data.images.remove(mask)


def exr_file(path: Path, picture: Path) -> Path:
    """``picture`` written to ``path`` as an OpenEXR file by Blender (nothing of it left in the .blend file)."""
    image = float_image(path.stem, picture)
    image.filepath_raw, image.file_format = str(path), 'OPEN_EXR'
    image.save()
    bpy.data.images.remove(image)
    return path


def test_reconstruct_from_an_exr_file(addon, settings, tmp_path):
    """The File source with an OpenEXR file (which the worker cannot read) is handed over as a PNG copy of what Blender
    shows, then removed; the .blend file keeps no image of it, and the mask names the file itself."""
    path = exr_file(tmp_path / "photo.exr", make_shape_image(tmp_path / "photo.png"))
    settings.source, settings.image_path = 'FILE', str(path)
    images = {i.name for i in bpy.data.images}
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    obj = reconstruct()
    assert obj.name == "photo"
    assert_closed_manifold(obj.data)
    assert not temp_leftovers(temp_before), "the PNG copy is removed"
    mask = obj["recon_mask"]
    assert {i.name for i in bpy.data.images} - images == {mask.name}, "only the mask is kept"
    assert mask[addon.package.operators.PICTURE_KEY] == str(path)
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(mask)


def test_an_exr_file_blender_cannot_read_is_one_sentence(addon, settings, tmp_path):
    path = tmp_path / "broken.exr"
    path.write_bytes(b"not an OpenEXR file at all")
    settings.source, settings.image_path = 'FILE', str(path)
    state = scene_state()
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    with pytest.raises(RuntimeError, match=rf"The image file {re.escape(str(path))} cannot be read \(.*\); check that "
                                           "it is an image, or save it as PNG and choose that."):
        bpy.ops.recon.reconstruct_image()
    assert scene_state() == state and not temp_leftovers(temp_before)


def format_settings(settings) -> dict:
    """Every value of an ``ImageFormatSettings``, nested settings included (arrays as tuples, the curve left out)."""
    out = {}
    for prop in settings.bl_rna.properties:
        value = getattr(settings, prop.identifier)
        if prop.identifier in ("rna_type", "curve_mapping") or prop.type == 'COLLECTION':
            continue
        if prop.type == 'POINTER':
            out[prop.identifier] = format_settings(value) if value is not None else None
        else:
            out[prop.identifier] = tuple(value) if getattr(prop, "is_array", False) else value
    return out


def failed_sentence() -> str:
    """The sentence a Reconstruct click that fails raises (as Blender's RuntimeError: "Error: ...\\n")."""
    with pytest.raises(RuntimeError) as failed:
        bpy.ops.recon.reconstruct_image()
    return str(failed.value)


def test_an_image_without_pixels_is_one_sentence_naming_its_role_and_a_fix(addon, settings, tmp_path):
    """Its file missing (as picture, as mask), or a Render Result before any render (before the render tests below):
    what it is to the run and what to do, without Blender's own "Error: ..." nested inside."""
    shutil.copy(addon.image, tmp_path / "moved.png")
    moved = bpy.data.images.load(str(tmp_path / "moved.png"))
    (tmp_path / "moved.png").unlink()  # the file moved away since
    missing = (f"has no pixels because its file {tmp_path / 'moved.png'} is missing; point it at the file again "
               "(Image Editor: Image > Replace), or choose another image.")

    try:
        settings.source, settings.image = 'IMAGE', moved
        assert failed_sentence() == f"Error: The picture moved.png {missing}\n"
        settings.image = bpy.data.images["Render Result"]
        assert failed_sentence() == ("Error: The picture Render Result holds no render yet; render first, or choose "
                                     "another image.\n")
        settings.source, settings.image, settings.object_source, settings.mask_image = 'FILE', None, 'MASK', moved
        assert failed_sentence() == f"Error: The mask image moved.png {missing}\n"
    finally:
        settings.image = settings.mask_image = None
        bpy.data.images.remove(moved)


def test_a_udim_texture_or_an_image_sequence_is_not_one_picture(addon, settings, tmp_path, monkeypatch):
    """A tiled (UDIM) texture or an image sequence chosen as the picture or the mask: one sentence naming what it is
    and a tile's file to choose, not Blender's save error about a temporary file."""
    for tile in (1001, 1002):
        Image.new("RGBA", (32, 32), (200, 0, 0, 255)).save(tmp_path / f"tex.{tile}.png")
    for frame in (1, 2):
        Image.new("RGBA", (32, 32), (0, 200, 0, 255)).save(tmp_path / f"seq_{frame:04d}.png")
    tiled = bpy.data.images.load(str(tmp_path / "tex.1001.png"), check_existing=False)
    tiled.source = 'TILED'
    generated = bpy.data.images.new("painted tiles", 16, 16, tiled=True)
    sequence = bpy.data.images.load(str(tmp_path / "seq_0001.png"), check_existing=False)
    sequence.source = 'SEQUENCE'
    temp = tmp_path / "temp"  # the add-on's temporary copies, had it made any
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    try:
        settings.source, settings.image = 'IMAGE', tiled
        assert tiled.filepath_raw.endswith("tex.<UDIM>.png")
        assert failed_sentence() == (f"Error: The picture tex.1001.png is a tiled (UDIM) texture of 2 tiles, not one "
                                     f"picture; choose the image file of one tile (e.g. {tmp_path / 'tex.1001.png'}), or "
                                     "another image.\n")
        settings.image = generated
        assert failed_sentence() == ("Error: The picture painted tiles is a tiled (UDIM) texture of 1 tile, not one "
                                     "picture; choose the image file of one tile, or another image.\n")
        settings.source, settings.image, settings.object_source, settings.mask_image = 'FILE', None, 'MASK', sequence
        settings.image_path = str(addon.image)
        assert failed_sentence() == ("Error: The mask image seq_0001.png is an image sequence, not one picture; save "
                                     "the frame you want as an image (Image Editor: Image > Save As) and choose that.\n")
        assert not list(temp.iterdir())
    finally:
        settings.image = settings.mask_image = None
        for image in (tiled, generated, sequence):
            bpy.data.images.remove(image)


@pytest.mark.parametrize("output", ["half-float EXR", "multilayer EXR", "video", "JPEG"])
def test_a_render_result_is_handed_over_as_png_and_the_output_format_is_left_as_it_was(addon, settings, output):
    """A Render Result's pixels cannot be read from Python: it is saved with the scene's output format set to PNG for
    the moment; every setting of that format is as before afterwards (whatever the format was)."""
    scene = bpy.context.scene
    render, fmt = scene.render, scene.render.image_settings
    resolution = (render.resolution_x, render.resolution_y, render.resolution_percentage)
    render.resolution_x, render.resolution_y, render.resolution_percentage = 64, 48, 100
    if output == "half-float EXR":
        fmt.file_format, fmt.color_mode, fmt.color_depth, fmt.exr_codec = 'OPEN_EXR', 'RGB', '16', 'PIZ'
        fmt.color_management = 'OVERRIDE'
        fmt.view_settings.exposure = 1.5
    elif output == "multilayer EXR":
        fmt.media_type = 'MULTI_LAYER_IMAGE'
    elif output == "video":
        fmt.media_type = 'VIDEO'
    else:
        fmt.file_format, fmt.quality = 'JPEG', 50
    try:
        assert bpy.ops.render.render() == {'FINISHED'}
        before = format_settings(fmt)
        path, temp = addon.package.operators._image_file(bpy.data.images["Render Result"], scene)
        try:
            with Image.open(path) as png:
                assert (png.format, png.mode, png.size) == ("PNG", "RGBA", (64, 48))
        finally:
            os.unlink(temp)
        assert format_settings(fmt) == before
    finally:
        fmt.color_management = 'FOLLOW_SCENE'
        fmt.media_type, fmt.file_format, fmt.color_mode, fmt.color_depth = 'IMAGE', 'PNG', 'RGBA', '8'
        render.resolution_x, render.resolution_y, render.resolution_percentage = resolution


def test_print_units_and_export_stl_in_millimetres(addon, settings, tmp_path):
    bpy.context.scene.unit_settings.scale_length = 0.001  # a scene set up for printing: 1 unit = 1 mm
    pid = addon.package.worker_client._CLIENTS[(PYTHON, addon.prefs.model_path)].process.pid
    obj = reconstruct()
    assert addon.package.worker_client._CLIENTS[(PYTHON, addon.prefs.model_path)].process.pid == pid  # warm
    assert obj.dimensions.z == pytest.approx(50.0, rel=1e-4)
    out = tmp_path / "print.stl"
    assert bpy.ops.recon.export_stl(filepath=str(out)) == {'FINISHED'}
    data = out.read_bytes()
    count = int.from_bytes(data[80:84], "little")
    assert count == len(obj.data.polygons) and len(data) == 84 + 50 * count
    records = np.frombuffer(data[84:], dtype=np.dtype([("n", "<f4", 3), ("c", "<f4", (3, 3)), ("a", "<u2")]))
    corners = records["c"].reshape(-1, 3)
    assert np.ptp(corners[:, 2]) == pytest.approx(50.0, rel=1e-4)
    assert corners[:, 2].min() == pytest.approx(0.0, abs=1e-3)  # on the build plate
    bpy.data.objects.remove(obj)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_stl_gives_the_file_the_permissions_of_a_new_file(addon, settings, tmp_path, umask):
    """0o666 less the umask, as Blender's own STL exporter and Export 3MF: not the temporary file's 0600, also when it
    replaces an existing file."""
    mesh = bpy.data.meshes.new("tetra")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], [], [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)])
    obj = bpy.data.objects.new("tetra", mesh)
    bpy.context.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    new, existing = tmp_path / "new.stl", tmp_path / "existing.stl"
    existing.write_bytes(b"")
    existing.chmod(0o644)
    old = os.umask(umask)
    try:
        for out in (new, existing):
            assert bpy.ops.recon.export_stl(filepath=str(out)) == {'FINISHED'}
            assert out.stat().st_mode & 0o777 == 0o666 & ~umask, (out.name, oct(out.stat().st_mode))
    finally:
        os.umask(old)
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)


def test_export_3mf_writes_each_selected_object_in_millimetres(addon, settings, tmp_path):
    from tests.test_export import _read_3mf, _signed_volume

    bpy.context.scene.unit_settings.scale_length = 0.001  # 1 unit = 1 mm
    obj = reconstruct()
    bpy.ops.mesh.primitive_cube_add(size=10.0, location=(100.0, 0.0, 5.0))
    cube = bpy.context.active_object
    for o in bpy.context.view_layer.objects:
        o.select_set(o in (obj, cube))
    state = scene_state()
    out = tmp_path / "plate.3mf"
    assert bpy.ops.recon.export_3mf(filepath=str(out)) == {'FINISHED'}
    assert scene_state() == state  # exporting changes nothing in the scene
    unit, objects, items = _read_3mf(out)
    names = sorted([obj.name, cube.name])
    assert [o[0] for o in objects] == names and items == 2 and unit == 1  # lib3mf.ModelUnit.MilliMeter
    read = {name: (v, f) for name, v, f, _ in objects}
    v, f = read[obj.name]
    world = np.array([obj.matrix_world @ vert.co for vert in obj.data.vertices])
    cube_world = np.array([cube.matrix_world @ vert.co for vert in cube.data.vertices])
    # as they stand to each other, 1 unit = 1 mm, +Z up as in Blender, moved together onto the plate: resting on
    # z = 0, their box centred 100 mm from 3MF's origin (the plate's front-left corner) along X and Y
    both = np.concatenate([world, cube_world])
    lo, hi = both.min(0), both.max(0)
    shift = np.array([100.0 - (lo[0] + hi[0]) / 2, 100.0 - (lo[1] + hi[1]) / 2, -lo[2]])
    np.testing.assert_allclose(v, world + shift, atol=1e-4)
    assert np.ptp(v[:, 2]) == pytest.approx(50.0, rel=1e-4) and _signed_volume(v, f) > 0
    cv, _ = read[cube.name]
    np.testing.assert_allclose(np.sort(cv, axis=0), np.sort(cube_world + shift, axis=0), atol=1e-4)
    bpy.data.objects.remove(obj)
    bpy.data.objects.remove(cube)


def test_a_mirrored_object_exports_outward_faces(addon, settings, tmp_path):
    from tests.test_export import _read_3mf, _signed_volume

    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    cube.scale = (-1.0, 1.0, 1.0)
    bpy.context.view_layer.update()
    for o in bpy.context.view_layer.objects:
        o.select_set(o is cube)
    mm = addon.package.operators.mm_per_unit(bpy.context.scene)
    assert bpy.ops.recon.export_3mf(filepath=str(tmp_path / "m.3mf")) == {'FINISHED'}
    _, [(_, v, f, manifold)], _ = _read_3mf(tmp_path / "m.3mf")
    assert manifold and _signed_volume(v, f) == pytest.approx(8.0 * mm**3, rel=1e-6)
    assert bpy.ops.recon.export_stl(filepath=str(tmp_path / "m.stl")) == {'FINISHED'}
    stl = trimesh_load_stl(tmp_path / "m.stl")
    assert stl.volume == pytest.approx(8.0 * mm**3, rel=1e-4)
    bpy.data.objects.remove(cube)


def test_exports_warn_when_an_edited_mesh_would_not_print(addon, settings, tmp_path, capfd):
    """The Printable Check is the reconstruction's; a mesh edited since (a face deleted, an overlapping cube joined)
    was exported with no word. Now both exports write it and warn with what is wrong, by recon_core's whole check,
    self-intersections too (Export STL checked only the faces, and called the joined cubes fine); a closed mesh
    exports with none."""
    corners = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]  # outward

    def cube_mesh(name, shifts, drop=0):
        verts, faces = [], []
        for shift in shifts:
            base = len(verts)
            verts += [(x + shift, y, z) for x, y, z in corners]
            faces += [tuple(base + k for k in q) for q in quads]
        mesh = bpy.data.meshes.new(name)
        mesh.from_pydata(verts, [], faces[drop:])
        obj = bpy.data.objects.new(name, mesh)
        bpy.context.scene.collection.objects.link(obj)
        return obj

    def export(op, obj, path) -> str:
        for o in bpy.context.view_layer.objects:
            o.select_set(o is obj)
        bpy.context.view_layer.objects.active = obj
        capfd.readouterr()
        assert op(filepath=str(path)) == {'FINISHED'} and path.exists()
        return capfd.readouterr().out  # a report is printed in background mode, its type first

    closed, opened, joined = cube_mesh("closed", [0.0]), cube_mesh("opened", [0.0], drop=1), cube_mesh("joined",
                                                                                                      [0.0, 0.5])
    assert "not printable" not in export(bpy.ops.recon.export_stl, closed, tmp_path / "closed.stl")
    assert "not printable" not in export(bpy.ops.recon.export_3mf, closed, tmp_path / "closed.3mf")
    said = export(bpy.ops.recon.export_stl, opened, tmp_path / "open.stl")
    assert re.search(r"Warning: Wrote .*open\.stl .* opened is not printable as it is: not watertight \(holes\); "
                     r"mend it before printing \(Edit Mode: select all, Mesh > Clean Up > Fill Holes\)", said), said
    said = export(bpy.ops.recon.export_3mf, opened, tmp_path / "open.3mf")
    assert re.search(r"Warning: Wrote .*open\.3mf .* opened is not printable as it is: not watertight", said), said
    for op, ext in ((bpy.ops.recon.export_stl, "stl"), (bpy.ops.recon.export_3mf, "3mf")):
        said = export(op, joined, tmp_path / f"joined.{ext}")
        assert re.search(r"joined is not printable as it is: \d+ self-intersecting face pairs; mend it before "
                         r"printing \(Clean Up does not undo faces that cross: a Remesh modifier in Voxel mode, "
                         r"applied, makes it one closed solid\)\.", said), said
        assert "modifiers" not in said
    shell = cube_mesh("shell", [0.0])  # copies that cross each other: its modifier's, which Edit Mode hides
    array = shell.modifiers.new("copies", 'ARRAY')
    array.relative_offset_displace = (0.25, 0.0, 0.0)
    for op, ext in ((bpy.ops.recon.export_stl, "stl"), (bpy.ops.recon.export_3mf, "3mf")):
        said = export(op, shell, tmp_path / f"shell.{ext}")
        assert "shell is not printable as it is" in said and ("Its modifiers made part of what is written, which "
                                                              "Edit Mode does not show") in said, said
    closed.modifiers.new("tris", 'TRIANGULATE')  # a harmless modifier on the object that prints: not named
    for o in bpy.context.view_layer.objects:
        o.select_set(o in (closed, opened))
    capfd.readouterr()
    assert bpy.ops.recon.export_3mf(filepath=str(tmp_path / "two.3mf")) == {'FINISHED'}
    said = capfd.readouterr().out
    assert "opened is not printable as it is" in said and "closed is not printable" not in said, said
    assert "Its modifiers" not in said, said
    inward = cube_mesh("inward", [0.0])  # closed, every face turned in: Clean Up does not mend it
    inward.data.flip_normals()
    for op, ext in ((bpy.ops.recon.export_stl, "stl"), (bpy.ops.recon.export_3mf, "3mf")):
        said = export(op, inward, tmp_path / f"inward.{ext}")
        assert re.search(r"inward is not printable as it is: inside out \(its faces point inward\); mend it before "
                         r"printing \(Edit Mode: select all, Mesh > Normals > Recalculate Outside\)", said), said
    for obj in (closed, opened, joined, inward, shell):
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)


@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_exports_note_walls_too_thin_at_the_size_they_write(addon, settings, tmp_path, capfd, ext):
    """A mesh made thinner in the scene than when it was checked (scaled down, here a plank 0.5 mm thick) was exported
    with no word: the thin walls are measured at the size written, and noted."""
    bpy.ops.mesh.primitive_cube_add(size=0.02)  # 20 mm in a scene in metres
    plank = bpy.context.active_object
    plank.scale = (1.0, 1.0, 0.025)  # 0.5 mm thick
    bpy.context.view_layer.update()
    for o in bpy.context.view_layer.objects:
        o.select_set(o is plank)
    capfd.readouterr()
    op = bpy.ops.recon.export_stl if ext == ".stl" else bpy.ops.recon.export_3mf
    assert op(filepath=str(tmp_path / f"plank{ext}")) == {'FINISHED'}
    said = capfd.readouterr().out
    assert re.search(rf"Warning: Wrote .* {re.escape(plank.name)}: its walls thinner than 0\.8 mm cover 8\d\d mm² of "
                     r"it \(\d+% of the surface; 0\.5 mm thick in the median there\): they print weak and break "
                     r"easily; scale it up, or thicken them\.", said), said
    assert "not printable" not in said
    plank.scale = (1.0, 1.0, 1.0)
    bpy.context.view_layer.update()
    assert op(filepath=str(tmp_path / f"plank{ext}")) == {'FINISHED'}
    said = capfd.readouterr().out
    assert "Info: Wrote" in said and "thinner" not in said
    bpy.data.objects.remove(plank)


def _sentences_naming_both_front_ends() -> list[str]:
    """Every sentence recon_core writes that names the add-on's controls beside the command line's options: its string
    literals (an f-string's fields as "X"; docstrings and bare strings left out), read from the source."""
    import ast

    found = []
    for path in sorted((Path(__file__).resolve().parent.parent / "recon_core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if id(node) in bare:
                continue
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if ("add-on's" in text or "Use This Mask" in text) and ("--" in text or "recon-mesh" in text):
                found.append(text)
    return found


def test_the_workers_sentences_name_the_add_ons_controls_not_the_command_lines(addon):
    """The worker writes its notes for both front ends ("check the mask it took (recon-mesh --save-mask, the add-on's
    Object Mask)"); in Blender the command line's options were noise. Every sentence of recon_core that names both
    (read from its source, so that a new one is tested too) reads with the add-on's controls alone."""
    words = addon.package.operators._user_text
    sentences = _sentences_naming_both_front_ends()
    assert len(sentences) >= 10
    for note in sentences:
        said = words(note, {})
        assert "--" not in said and "recon-mesh" not in said and "add-on" not in said, (note, said)
    quoted = ("check the mask it took (recon-mesh --save-mask, the add-on's Object Mask) and give a corrected one "
              "(--mask, Use This Mask)")
    assert words(quoted, {}) == "check the mask it took (Object Mask) and give a corrected one (Use This Mask)"
    assert words("and --solid (the add-on's Fill Hollow Pockets) fills them", {}) == "and Fill Hollow Pockets fills them"
    assert words("give its mask, white on black, with recon-mesh --mask or the add-on's Object: Mask Image", {}) == (
        "give its mask, white on black, with Object: Mask Image")
    assert words("a note with no option in it", {}) == "a note with no option in it"
    # the next note says how the thin walls are marked: this one said "(their faces are marked)" before it
    assert words("or thicken them in your modeller (the add-on marks them)", {}) == "or thicken them here"
    assert words("give a smaller --height-mm (the add-on's Height) to print it whole", {}) == (
        "give a smaller Height to print it whole")


def test_the_check_panel_gives_the_volume_at_the_size_now(addon, settings):
    """Its volume is the reconstruction's, beside the size now: a chair scaled to half said 26.79 cm³ beside half its
    size. Scaled (the object, or the scene's unit), the panel gives the volume at the size now too; a mesh edited
    since (a modifier, vertices moved out of its box) gets none, and says it was edited."""
    obj = reconstruct()
    bpy.context.view_layer.objects.active = obj
    volume = obj["recon_check"]["volume_mm3"] / 1000.0
    assert obj["recon_check"]["size_mm"] == pytest.approx([d * 1000.0 for d in obj.dimensions], rel=1e-5)
    edited = "Edited: the exports check it again"
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert f"Volume: {volume:.2f} cm³" in texts and not any(t.startswith("Volume at this size") for t in texts)
    obj.scale = (0.5, 0.5, 0.5)
    bpy.context.view_layer.update()
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert f"Volume at this size: {volume / 8.0:.2f} cm³" in texts, texts
    obj.scale = (1.0, 1.0, 1.0)
    bpy.context.view_layer.update()
    bpy.context.scene.unit_settings.scale_length = 2.0  # the scene's unit doubled: 8 times the volume
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert f"Volume at this size: {volume * 8.0:.2f} cm³" in texts and edited not in texts, texts
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode='EDIT')  # its faces as Object Mode left them: an edit here does not show yet
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert not any(t.startswith("Volume at this size") for t in texts), texts
    bpy.ops.object.mode_set(mode='OBJECT')
    obj.scale = (0.5, 0.5, 0.5)
    modifier = obj.modifiers.new("copy", 'MIRROR')  # a second copy beside it: not half the volume any more
    bpy.context.view_layer.update()
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert edited in texts and not any(t.startswith("Volume at this size") for t in texts), texts
    obj.modifiers.remove(modifier)
    top = max(v.co.z for v in obj.data.vertices)
    for v in obj.data.vertices:  # the top raised: the same faces, a taller box
        if v.co.z > top - 1e-6:
            v.co.z += 0.05
    obj.data.update()
    bpy.context.view_layer.update()
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert edited in texts and not any(t.startswith("Volume at this size") for t in texts), texts
    bpy.context.scene.unit_settings.scale_length = 1.0
    bpy.data.objects.remove(obj)


def test_the_check_panel_says_when_the_mesh_was_edited_since(addon, settings):
    """Its figures are the reconstruction's: a mesh with other faces since, or with modifiers, says the exports check
    it again."""
    obj = reconstruct()
    bpy.context.view_layer.objects.active = obj
    assert "Edited: the exports check it again" not in labels(draw_panel(bpy.types.RECON_PT_check))
    modifier = obj.modifiers.new("thicker", 'SOLIDIFY')
    assert "Edited: the exports check it again" in labels(draw_panel(bpy.types.RECON_PT_check))
    obj.modifiers.remove(modifier)
    obj.data.polygons.foreach_set("select", [False] * len(obj.data.polygons))
    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.select_all(action='DESELECT')
    bpy.ops.object.mode_set(mode='OBJECT')
    obj.data.polygons[0].select = True
    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.delete(type='FACE')
    bpy.ops.object.mode_set(mode='OBJECT')
    assert "Edited: the exports check it again" in labels(draw_panel(bpy.types.RECON_PT_check))
    bpy.data.objects.remove(obj)


def test_exports_offer_the_objects_name_and_add_a_missing_extension(addon, settings, tmp_path):
    """The dialogs offer the active object's name (ExportHelper offered "Untitled.stl" for every object), in the .blend
    file's folder once it is saved; a path given without an extension gets the format's (a script's "part" wrote a
    file named "part")."""
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    cube.name = "Bracket v2"
    export_path = addon.package.operators.export_path
    assert export_path(bpy.context, ".stl") == "Bracket_v2.stl"  # bpy.path.clean_name: a name any file system takes
    for device, offered in (("Con", "Con_.stl"), ("com1", "com1_.stl"), ("Console", "Console.stl")):
        cube.name = device  # Windows keeps CON, COM1, ...: a file "Con.stl" is the console, and the mesh is lost
        assert export_path(bpy.context, ".stl") == offered
    cube.name = "Bracket v2"
    saved = tmp_path / "project" / "design.blend"  # as a saved .blend file's context shows it (not saved here: the
    context = SimpleNamespace(active_object=cube, blend_data=SimpleNamespace(filepath=str(saved)))  # tests need none)
    assert export_path(context, ".3mf") == str(saved.parent / "Bracket_v2.3mf")
    context.active_object = None
    assert export_path(context, ".stl") == str(saved.parent / "design.stl")
    assert bpy.ops.recon.export_stl(filepath=str(tmp_path / "part")) == {'FINISHED'}
    assert bpy.ops.recon.export_3mf(filepath=str(tmp_path / "plate")) == {'FINISHED'}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["part.stl", "plate.3mf"]
    bpy.data.objects.remove(cube)


def test_export_stl_says_the_selected_meshes_it_leaves_out(addon, settings, tmp_path, capfd):
    """Export STL writes the active mesh; with another selected it wrote "(1 object)" without a word, while Export 3MF
    beside it writes both: it says so, and with one selected nothing is added."""
    bpy.ops.mesh.primitive_cube_add(size=0.02, location=(0.0, 0.0, 0.0))
    first = bpy.context.active_object
    bpy.ops.mesh.primitive_cube_add(size=0.02, location=(0.05, 0.0, 0.0))
    second = bpy.context.active_object
    first.select_set(True)  # both selected, the second active
    capfd.readouterr()
    assert bpy.ops.recon.export_stl(filepath=str(tmp_path / "two.stl")) == {'FINISHED'}
    said = capfd.readouterr().out
    assert f"Only the active object, {second.name}, is written; Export 3MF writes all 2 selected meshes, one object " \
           "each." in said, said
    first.select_set(False)
    assert bpy.ops.recon.export_stl(filepath=str(tmp_path / "one.stl")) == {'FINISHED'}
    assert "Only the active object" not in capfd.readouterr().out
    for obj in (first, second):
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)


@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_exports_refuse_a_folder_another_extension_or_a_missing_folder_alike(addon, settings, tmp_path, ext):
    """A folder given for the file ("…/exports/") wrote a hidden file ".stl" and called it written; Export STL wrote an
    STL named part.obj; the two exports named a missing folder differently. Now each gets one sentence, the same for
    both, and nothing is written."""
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    op = bpy.ops.recon.export_stl if ext == ".stl" else bpy.ops.recon.export_3mf
    kind = ext[1:].upper()
    cases = [(str(tmp_path) + os.sep, f"is a folder, not a file; give a file name in it, e.g. {tmp_path / ('part' + ext)}"),
             (str(tmp_path), "is a folder, not a file"),
             (str(tmp_path / "part.obj"), f"Cannot write part.obj as {kind}: the extension must be {ext}."),
             (str(tmp_path / "no" / f"part{ext}"), f"the folder {tmp_path / 'no'} does not exist; create it first."),
             ("", f"No file to write: give the {kind} file's path.")]
    for path, said in cases:
        with pytest.raises(RuntimeError) as err:
            op(filepath=path)
        assert said in str(err.value), (path, str(err.value))
    assert list(tmp_path.iterdir()) == []
    bpy.data.objects.remove(cube)


@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_exports_take_paths_as_the_panel_takes_them(addon, settings, tmp_path, monkeypatch, ext):
    """A relative path is the working folder's, "~" the home folder, a pasted path's quotes go; "//" in a file not
    saved yet is said to be so (the path check took the first three for a folder that does not exist)."""
    bpy.ops.mesh.primitive_cube_add(size=0.02)
    cube = bpy.context.active_object
    op = bpy.ops.recon.export_stl if ext == ".stl" else bpy.ops.recon.export_3mf
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert op(filepath=f"part{ext}") == {'FINISHED'} and (tmp_path / f"part{ext}").is_file()
    assert op(filepath="plain") == {'FINISHED'} and (tmp_path / f"plain{ext}").is_file()
    assert op(filepath=f"~/home{ext}") == {'FINISHED'} and (tmp_path / "home" / f"home{ext}").is_file()
    assert op(filepath=f'"{tmp_path / ("quoted" + ext)}"') == {'FINISHED'} and (tmp_path / f"quoted{ext}").is_file()
    with pytest.raises(RuntimeError, match="is relative to the .blend file, which is not saved yet"):
        op(filepath=f"//rel{ext}")
    # a "//" path is the add-on's to read: in a saved file Blender warned that the property "does not support" it
    assert op.get_rna_type().properties["filepath"].is_path_supports_blend_relative
    for hidden in (ext, ".obj"):  # "…/.obj" wrote "…/.obj.stl"
        with pytest.raises(RuntimeError, match="has no file name before its extension"):
            op(filepath=str(tmp_path / hidden))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        f"{stem}{ext}" for stem in ("part", "plain", "quoted"))
    bpy.data.objects.remove(cube)


@pytest.mark.parametrize("ext", [".stl", ".3mf"])
def test_exports_put_a_moved_turned_object_on_the_plate_and_warn_when_it_is_too_large(addon, settings, tmp_path,
                                                                                     capfd, ext):
    """Where the object stands in the scene is not where its print stands: a reconstruction moved up, turned and
    shrunk exported 83 mm above the plate (or below it, in a scene in millimetres). The file holds it resting on
    z = 0, its size as in the scene; larger than a large printer's build volume, the report says so."""
    from tests.test_export import _read_3mf

    obj = reconstruct()
    obj.location, obj.rotation_euler, obj.scale = (0.3, 0.2, 0.1), (np.pi / 2, 0.0, np.pi / 6), (0.5, 0.5, 0.5)
    bpy.context.view_layer.update()
    for o in bpy.context.view_layer.objects:
        o.select_set(o is obj)
    bpy.context.view_layer.objects.active = obj
    mm = addon.package.operators.mm_per_unit(bpy.context.scene)
    world = np.array([obj.matrix_world @ v.co for v in obj.data.vertices]) * mm
    out = tmp_path / f"moved{ext}"
    op = bpy.ops.recon.export_stl if ext == ".stl" else bpy.ops.recon.export_3mf
    capfd.readouterr()
    assert op(filepath=str(out)) == {'FINISHED'}
    said = capfd.readouterr().out
    if ext == ".stl":
        data = out.read_bytes()
        v = np.frombuffer(data[84:], dtype=np.dtype([("n", "<f4", 3), ("c", "<f4", (3, 3)), ("a", "<u2")]))["c"]
        v = v.reshape(-1, 3).astype(np.float64)
        centre = [0.0, 0.0]
    else:
        v = _read_3mf(out)[1][0][1]
        centre = [100.0, 100.0]
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-3) and "mm (width x depth x height), on the build plate" in said
    assert np.ptp(v, axis=0) == pytest.approx(np.ptp(world, axis=0), rel=1e-4)  # its size as it stands in the scene
    assert (v.min(0)[:2] + v.max(0)[:2]) / 2 == pytest.approx(centre, abs=1e-3)
    assert "larger than the build volume" not in said
    obj.scale = (6.0, 6.0, 6.0)  # the 50 mm reconstruction 300 mm tall
    bpy.context.view_layer.update()
    assert op(filepath=str(out)) == {'FINISHED'}
    said = capfd.readouterr().out
    assert re.search(r"Warning: .* At \d+ x \d+ x \d+ mm \(width x depth x height\) it is larger than the build volume "
                     r"of most printers \(256 mm a side on a large one\)", said), said
    bpy.data.objects.remove(obj)


def trimesh_load_stl(path):
    import trimesh

    return trimesh.load(path, force="mesh")


def test_export_3mf_failures_say_why_and_write_nothing(addon, settings, tmp_path):
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    cube = bpy.context.active_object
    out = tmp_path / "cube.3mf"
    addon.prefs.python_path = "/nonexistent/bin/python"
    with pytest.raises(RuntimeError, match="The Python interpreter /nonexistent/bin/python does not exist"):
        bpy.ops.recon.export_3mf(filepath=str(out))
    addon.prefs.python_path = PYTHON
    with pytest.raises(RuntimeError, match="does not exist; create it first"):
        bpy.ops.recon.export_3mf(filepath=str(tmp_path / "no" / "cube.3mf"))
    empty = bpy.data.objects.new("Empty mesh", bpy.data.meshes.new("Empty mesh"))
    bpy.context.collection.objects.link(empty)
    empty.select_set(True)
    with pytest.raises(RuntimeError, match="Empty mesh has no faces to export"):
        bpy.ops.recon.export_3mf(filepath=str(out))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    bpy.data.objects.remove(cube)
    bpy.data.objects.remove(empty)


class RecordingLayout:
    """Stands in for ``UILayout`` (headless Blender draws nothing): records calls, checks property names."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in ("prop", "template_ID"):
                assert args[1] in args[0].bl_rna.properties.keys(), args[1]
            if name == "operator":
                category, op = args[0].split(".")
                getattr(getattr(bpy.ops, category), op).get_rna_type()  # raises if not registered
            return RecordingLayout(self.calls)
        return call


def draw_panel(panel) -> list:
    """Run ``panel``'s poll and draw on a :class:`RecordingLayout`; returns the calls made."""
    calls = []
    assert panel.poll(bpy.context) if hasattr(panel, "poll") else True
    panel.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
    assert calls
    return calls


def labels(calls: list) -> list[str]:
    return [kw.get("text", "") for name, _, kw in calls if name == "label"]


def test_panels_draw(addon, settings):
    mesh = bpy.data.meshes.new("cube")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], [], [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)])
    obj = bpy.data.objects.new("tetra", mesh)
    bpy.context.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj["recon_check"] = {"ok": True, "watertight": True, "manifold": True, "volume_mm3": 1000.0, "summary": "",
                          "category": "chair"}
    texts = []
    for source in ('FILE', 'IMAGE'):
        settings.source = source
        for panel in (bpy.types.RECON_PT_reconstruct, bpy.types.RECON_PT_check, bpy.types.RECON_PT_mask):
            texts += labels(draw_panel(panel))
    assert "Watertight: yes" in texts and "Volume: 1.00 cm³" in texts and "1000.0 x 1000.0 x 1000.0" in texts
    assert "No object mask was kept" in texts  # made before masks were kept
    del obj["recon_check"]
    assert not bpy.types.RECON_PT_mask.poll(bpy.context), "only objects made by Reconstruct have a mask"
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)


def test_a_run_in_flight_shows_its_stage_and_a_progress_bar_in_the_panel(addon, settings, monkeypatch):
    run = SimpleNamespace(name="chair", stage="fitting the shape bank", fraction=0.42, elapsed=3.4)
    monkeypatch.setattr(addon.package.panel, "running", lambda: run)
    calls = draw_panel(bpy.types.RECON_PT_reconstruct)
    assert "chair: fitting the shape bank" in labels(calls)
    bars = [kw for name, _, kw in calls if name == "progress"]
    assert bars == [{"factor": 0.42, "type": 'BAR', "text": "42 %, 3 s"}]
    assert not [kw for name, _, kw in calls if name == "operator"], "no second Reconstruct button while one runs"


# -- the object mask ------------------------------------------------------------------------------------


def test_mask_image_is_the_pictures_alpha_and_a_second_run_replaces_it(addon, settings, tmp_path):
    picture = make_alpha_image(tmp_path / "cutout.png")
    alpha = np.asarray(Image.open(picture))[..., 3]  # (90, 120): what the worker used as the mask
    settings.image_path = str(picture)
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    first = reconstruct()
    first_name, mask = first.name, first["recon_mask"]
    assert mask.name == "cutout mask" and tuple(mask.size) == (120, 90)
    assert mask.packed_file is not None and mask.colorspace_settings.name == 'Non-Color'
    assert np.array_equal(mask_pixels(mask), alpha)
    assert not temp_leftovers(temp_before), "the worker's PNG is removed once packed"
    assert labels(draw_panel(bpy.types.RECON_PT_mask)) == [  # wrapped to the sidebar's width (300 px here)
        "Mask used: cutout mask", "Wrong? Use This Mask, paint it in the", "Image Editor, then Reconstruct"]

    bpy.ops.ed.undo_push(message="first")
    state = scene_state()
    second = reconstruct()
    assert scene_state()[2] == state[2], "the second run replaces the mask image"
    [mask] = [i for i in bpy.data.images if i.name.startswith("cutout mask")]
    assert mask.name == "cutout mask" and second["recon_mask"] == mask
    assert first["recon_mask"] == mask, "objects of the same picture follow the new image"
    assert np.array_equal(mask_pixels(mask), alpha)

    bpy.ops.ed.undo_push(message="Reconstruct from Image")
    bpy.ops.ed.undo()  # the earlier mask comes back with the scene (undo reloads the data: look names up again)
    assert scene_state() == state
    first, mask = bpy.data.objects[first_name], bpy.data.images["cutout mask"]
    assert first["recon_mask"] == mask and np.array_equal(mask_pixels(mask), alpha)
    bpy.data.objects.remove(first)
    bpy.data.images.remove(mask)


def test_the_packed_mask_unpacks_next_to_the_blend_file_under_its_own_name(addon, settings, tmp_path):
    """The mask image's file is ``//NAME.png``, not the worker's temporary file: Unpack Resources writes it there (or
    in ``//textures``), named after the mask."""
    picture = make_alpha_image(tmp_path / "cutout.png")
    settings.image_path = str(picture)
    obj = reconstruct()
    mask = obj["recon_mask"]
    assert mask.name == "cutout mask" and mask.filepath_raw == "//cutout_mask.png"
    assert [f.filepath for f in mask.packed_files] == ["//cutout_mask.png"]
    path = tmp_path / "unpack" / "masks.blend"
    path.parent.mkdir()
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True) == {'FINISHED'}
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(mask)
    script = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
              "assert bpy.ops.file.unpack_all(method='USE_LOCAL') == {'FINISHED'}")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in path.parent.rglob("*.png")) == ["cutout_mask.png"]
    unpacked = np.asarray(Image.open(path.parent / "textures" / "cutout_mask.png"))
    assert np.array_equal(unpacked, np.asarray(Image.open(picture))[..., 3])


def test_use_this_mask_then_a_painted_mask_is_the_object(addon, settings):
    """Use This Mask points Object at the kept mask image; what is painted on it is the next run's object."""
    first = reconstruct()
    bpy.context.view_layer.objects.active = first
    mask = first["recon_mask"]
    found = mask_pixels(mask)
    calls = draw_panel(bpy.types.RECON_PT_mask)
    assert ("operator", ("recon.use_mask",), {"icon": 'BRUSH_DATA'}) in calls
    assert bpy.ops.recon.use_mask() == {'FINISHED'}
    assert settings.object_source == 'MASK' and settings.mask_image == mask
    assert "mask_image" in [args[1] for name, args, _ in draw_panel(bpy.types.RECON_PT_reconstruct)
                            if name == "template_ID"]
    width, height = mask.size
    painted = np.zeros((height, width), np.float32)
    painted[10:60, 20:110] = 1.0  # a block, not the ellipse that was found (rows top first)
    rgba = np.repeat(painted[::-1, :, None], 4, axis=2)  # Blender's rows bottom first
    rgba[..., 3] = 1.0
    mask.pixels.foreach_set(rgba.ravel())
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    second = reconstruct()
    assert not temp_leftovers(temp_before), "the painted mask's temporary PNG is removed"
    used = mask_pixels(second["recon_mask"])
    assert np.array_equal(used, (painted * 255).astype(np.uint8)) and not np.array_equal(used, found)
    settings.mask_image = None
    expect_error(addon, "Choose the object's mask image")
    settings.object_source = 'FIND'
    image = second["recon_mask"]
    for obj in (first, second):
        bpy.data.objects.remove(obj)
    bpy.data.images.remove(image)


def test_a_mask_painted_without_use_this_mask_is_kept_and_said(addon, settings, capfd, tmp_path):
    """Painted in the Image Editor with Object still Find It, the next run found the object again and replaced the
    painted image with its own mask, the painting lost without a word: it is kept, with its objects, and said."""
    first = reconstruct()
    mask = first["recon_mask"]
    width, height = mask.size
    rgba = np.zeros((height, width, 4), np.float32)
    rgba[10:40, 20:60] = 1.0  # a block painted white
    rgba[..., 3] = 1.0
    mask.pixels.foreach_set(rgba.ravel())
    painted = mask_pixels(mask)
    capfd.readouterr()
    second = reconstruct()
    said = capfd.readouterr().out
    assert f"The mask image {mask.name} was painted but not used (Object is Find It): it is kept as painted; to " \
           "reconstruct with it, select one of its objects, press Use This Mask, then Reconstruct." in said, said
    assert first["recon_mask"] == mask and np.array_equal(mask_pixels(mask), painted)
    assert second["recon_mask"] != mask and not np.array_equal(mask_pixels(second["recon_mask"]), painted)
    # painted and packed (as Image > Save or Pack leaves it: not dirty): kept too; one only looked at stays replaced
    other = second["recon_mask"]
    rgba[10:40, 20:60] = 0.0
    other.pixels.foreach_set(rgba.ravel())
    other.pack()
    assert not other.is_dirty
    capfd.readouterr()
    third = reconstruct()
    said = capfd.readouterr().out
    assert f"The mask image {other.name} was painted" in said and second["recon_mask"] == other != third["recon_mask"]
    assert not third["recon_mask"].is_dirty
    fourth = reconstruct()  # the third's mask, not painted, is replaced
    assert third["recon_mask"] == fourth["recon_mask"]
    # not painted, a file of its name where its path points (the user's own mask, an unpacked one): replaced
    beside = fourth["recon_mask"]
    beside.filepath_raw = str(tmp_path / "chair_mask.png")
    Image.new("L", tuple(beside.size), 255).save(beside.filepath_raw)
    capfd.readouterr()
    fifth = reconstruct()
    said = capfd.readouterr().out
    assert "was painted" not in said and fifth["recon_mask"] == fourth["recon_mask"], said  # the others said once
    # painted and saved with Image > Save (which repacks a packed image): kept too
    saved = fourth["recon_mask"]
    saved.pixels.foreach_set(rgba.ravel())
    with bpy.context.temp_override(edit_image=saved):
        assert bpy.ops.image.save() == {'FINISHED'}
    assert not saved.is_dirty and saved.packed_file is not None
    capfd.readouterr()
    sixth = reconstruct()
    assert f"The mask image {saved.name} was painted" in capfd.readouterr().out
    assert fourth["recon_mask"] == saved != sixth["recon_mask"]
    images = [mask, other, saved, sixth["recon_mask"]]
    for obj in (first, second, third, fourth, fifth, sixth):
        bpy.data.objects.remove(obj)
    for image in images:
        bpy.data.images.remove(image)


def test_a_folder_or_a_missing_picture_is_said_before_the_worker_starts(addon, settings, tmp_path, monkeypatch):
    """Said by the worker, it cost a first click a worker's start (4 s) before the sentence."""
    def no_worker(*args, **kwargs):
        raise AssertionError("the worker was asked for")

    monkeypatch.setattr(addon.package.worker_client, "get_client", no_worker)
    settings.image_path = str(tmp_path)
    expect_error(addon, rf"^Error: {re.escape(str(tmp_path))} is a folder, not an image file; choose a picture in it "
                        r"\(PNG, JPEG, HEIC, \.\.\.\)\.")
    settings.image_path = str(tmp_path / "gone.png")
    expect_error(addon, rf"^Error: Image file not found: {re.escape(str(tmp_path / 'gone.png'))}\. Check the path")


def test_another_pictures_mask_is_refused_and_a_mask_the_user_made_is_taken(addon, settings, tmp_path):
    """Use This Mask on one picture's object, then another picture of the same size chosen: the first picture's
    outline is not taken for the second's object (it was, silently), nor when the other picture has the same name in
    another folder; the same picture moved to another folder, and a mask image the add-on did not make, are."""
    first = reconstruct()
    bpy.context.view_layer.objects.active = first
    assert bpy.ops.recon.use_mask() == {'FINISHED'}
    mask = settings.mask_image
    other = tmp_path / "other.png"
    shutil.copy(addon.image, other)  # the same size, so only the record tells the masks apart
    settings.image_path = str(other)
    expect_error(addon, rf"^Error: The mask image {mask.name} is the object of {Path(addon.image).name}, not of "
                        r"other\.png; click Find It, or choose this picture's mask\.")
    moved = tmp_path / "moved" / Path(addon.image).name  # the project moved: the same picture in another folder
    moved.parent.mkdir()
    shutil.copy(addon.image, moved)
    settings.image_path = str(moved)
    made = [first, reconstruct()]  # its kept mask is still taken
    # and replaced by this run's, as a run of the same picture replaces it (a moved project made "shape mask.001")
    assert [i.name for i in bpy.data.images if i.name.startswith(mask_name := made[1]["recon_mask"].name)] == [mask_name]
    mask = settings.mask_image
    assert mask == made[1]["recon_mask"] == first["recon_mask"] and mask["recon_picture"] == str(moved)
    elsewhere = tmp_path / "elsewhere" / Path(addon.image).name  # another picture of the same name and size
    elsewhere.parent.mkdir()
    Image.open(addon.image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(elsewhere)
    settings.image_path = str(elsewhere)
    expect_error(addon, rf"^Error: The mask image {mask.name} is the object of {re.escape(str(moved))}, not of "
                        rf"{re.escape(str(elsewhere))}; click Find It, or choose this picture's mask\.")
    settings.image_path = str(other)
    del mask["recon_picture"]  # as a mask painted by hand: no record of a picture, taken as given
    made.append(reconstruct())
    settings.object_source, settings.mask_image = 'FIND', None
    images = {mask.name} | {obj["recon_mask"].name for obj in made}
    for obj in made:
        bpy.data.objects.remove(obj)
    for name in images:
        bpy.data.images.remove(bpy.data.images[name])


def test_a_mask_recorded_on_windows_or_in_other_case_is_this_pictures(addon, tmp_path):
    """A .blend made on Windows records its picture as "C:\\...\\chair.png": opened on macOS or Linux, its name was
    the whole path, and the mask was refused as another picture's; a name in other letter case is one file on Windows'
    and macOS's disks. Names still tell apart two files that differ."""
    same, names = addon.package.operators._same_picture, addon.package.operators._picture_name
    picture = tmp_path / "chair.png"
    shutil.copy(addon.image, picture)
    assert names(r"C:\Users\Zoë\Desktop\chair.png") == "chair.png"
    assert same(r"C:\Users\Zoë\Desktop\chair.png", str(picture))  # the recorded file is not on this machine
    assert same(str(tmp_path / "CHAIR.PNG"), str(picture))
    assert not same(r"C:\Users\Zoë\Desktop\table.png", str(picture))
    other = tmp_path / "other" / "Chair.png"
    other.parent.mkdir()
    Image.open(addon.image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    assert not same(str(other), str(picture)), "a file of that name with other pixels is another picture"


def test_a_mask_the_finder_was_unsure_of_is_flagged_in_the_panel(addon, settings, monkeypatch):
    job = addon.package.worker_client.Job
    handle = job._handle
    first = reconstruct()
    bpy.context.view_layer.objects.active = first
    assert first["recon_mask"]["recon_unsure"] == False  # noqa: E712 - written, and False (an ID property)
    assert "Unsure of the object: check it" not in labels(draw_panel(bpy.types.RECON_PT_mask))

    def unsure(self, message):
        if message.get("type") == "result":
            message = {**message, "mask_unsure": True}
        handle(self, message)

    monkeypatch.setattr(job, "_handle", unsure)
    second = reconstruct()
    bpy.context.view_layer.objects.active = second
    assert second["recon_mask"]["recon_unsure"]
    assert "Unsure of the object: check it" in labels(draw_panel(bpy.types.RECON_PT_mask))
    assert bpy.ops.recon.use_mask() == {'FINISHED'}  # the user's mask now: the warning goes
    assert "Unsure of the object: check it" not in labels(draw_panel(bpy.types.RECON_PT_mask))
    image = second["recon_mask"]
    for obj in (first, second):
        bpy.data.objects.remove(obj)
    bpy.data.images.remove(image)


def test_mask_image_equals_recon_mesh_save_mask(addon, settings, tmp_path):
    """A picture without alpha: the mask image is the file ``recon-mesh --save-mask`` writes."""
    cli_mask = tmp_path / "cli_mask.png"
    subprocess.run([PYTHON, "-m", "recon_core.io.cli", str(addon.image), "-o", str(tmp_path / "mesh.stl"),
                    "--model", addon.prefs.model_path, "--detail", "low", "--save-mask", str(cli_mask)],
                   check=True, capture_output=True)
    expected = np.asarray(Image.open(cli_mask))
    assert 0 < expected.mean() < 255, "the ellipse, not the whole picture"
    obj = reconstruct()
    assert np.array_equal(mask_pixels(obj["recon_mask"]), expected)
    bpy.data.objects.remove(obj)


def test_no_mask_or_a_deleted_one_and_the_panel_still_draws(addon, settings, monkeypatch):
    job = addon.package.worker_client.Job
    handle = job._handle

    def older_worker(self, message):  # a worker that predates masks sends none
        message.pop("mask_path", None)
        handle(self, message)

    monkeypatch.setattr(job, "_handle", older_worker)
    images = scene_state()[2]
    obj = reconstruct()
    assert "recon_mask" not in obj and scene_state()[2] == images
    assert labels(draw_panel(bpy.types.RECON_PT_mask)) == ["No object mask was kept"]
    monkeypatch.undo()

    obj = reconstruct()
    bpy.data.images.remove(obj["recon_mask"])  # the user deletes the image
    assert obj.get("recon_mask") is None
    assert labels(draw_panel(bpy.types.RECON_PT_mask)) == ["Its mask image was deleted"]
    again = reconstruct()
    assert again["recon_mask"].name == "shape mask"
    bpy.data.images.remove(again["recon_mask"])


def test_a_copied_projects_mask_is_replaced_by_a_later_run_of_its_picture(addon, settings, tmp_path):
    """A .blend copied with its picture records the picture's old path: a later run made "cutout mask.001" beside
    "cutout mask" (two packed copies) where a project that was not copied has one, as the README says. A mask whose
    recorded picture is gone stays (it may be another product's of the same name)."""
    picture = make_alpha_image(tmp_path / "cutout.png")
    settings.image_path = str(picture)
    first = reconstruct()
    mask = first["recon_mask"]
    old = tmp_path / "old folder" / "cutout.png"  # the project copied elsewhere: the old copy is still there
    old.parent.mkdir()
    shutil.copy(picture, old)
    mask["recon_picture"] = str(old)  # as made before the project was copied
    second = reconstruct()
    assert [i.name for i in bpy.data.images if i.name.startswith("cutout mask")] == ["cutout mask"]
    assert first["recon_mask"] == second["recon_mask"], "the earlier object follows the new mask"
    # a mask of a picture of the same name whose file is gone may be another product's: it stays with its objects
    second["recon_mask"]["recon_picture"] = str(tmp_path / "gone" / "cutout.png")
    third = reconstruct()
    assert first["recon_mask"] == second["recon_mask"] != third["recon_mask"]
    for obj in (first, second, third):
        bpy.data.objects.remove(obj)
    for image in [i for i in bpy.data.images if i.name.startswith("cutout mask")]:
        bpy.data.images.remove(image)


def test_a_failed_build_keeps_the_earlier_mask_and_an_unreadable_mask_is_a_warning(addon, settings, monkeypatch):
    earlier_obj = reconstruct()
    earlier = earlier_obj["recon_mask"]
    pixels = mask_pixels(earlier)

    def broken(*args):
        raise RuntimeError("simulated")

    monkeypatch.setattr(addon.package.operators, "_check_property", broken)  # fails after the mask is loaded
    expect_error(addon, r"Could not create the mesh in Blender \(RuntimeError: simulated\)")
    assert earlier_obj["recon_mask"] == earlier and earlier.name == "shape mask"
    assert np.array_equal(mask_pixels(earlier), pixels)
    monkeypatch.undo()

    job = addon.package.worker_client.Job
    handle = job._handle

    def corrupting(self, message):
        if message.get("type") == "result" and message.get("mask_path"):
            Path(message["mask_path"]).write_bytes(b"not a PNG")
        handle(self, message)

    monkeypatch.setattr(job, "_handle", corrupting)
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    status = driver.finish()
    assert status == {'FINISHED'}
    assert any(kind == {'WARNING'} and message.startswith("The object mask could not be loaded")
               for kind, message in driver.reports), driver.reports
    [new] = [o for o in bpy.data.objects if o.name not in state[0]]
    assert "recon_mask" not in new and scene_state()[2] == state[2]
    assert earlier_obj["recon_mask"] == earlier and np.array_equal(mask_pixels(earlier), pixels)
    for obj in (new, earlier_obj):
        bpy.data.objects.remove(obj)
    bpy.data.images.remove(earlier)


# -- candidates: several plausible shapes, one shown -------------------------------------------------------


def default_keymap_items() -> list[tuple[str, str, dict]]:
    """``(keymap name, operator, event)`` of every item of Blender's default keymap, legacy variant included, but
    for the modal keymaps (those only act while their modal operator runs, e.g. a bevel in Edit Mode).

    Headless Blender leaves its keyconfigurations empty, so the keymap's own data file is read."""
    scripts = bpy.utils.system_resource('SCRIPTS')
    path = os.path.join(scripts, "presets", "keyconfig", "keymap_data", "blender_default.py")
    spec = importlib.util.spec_from_file_location("recon_test_blender_default", path)
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    items = []
    for legacy in (False, True):
        for name, args, content in data.generate_keymaps(data.Params(legacy=legacy)):
            if not args.get("modal"):
                items += [(name, idname, event) for idname, event, _ in content["items"]]
    return items


def test_next_shape_has_a_shortcut_that_blender_does_not_use(addon):
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    found = [(km.name, km.space_type, kmi) for km in keyconfig.keymaps for kmi in km.keymap_items
             if kmi.idname.startswith("recon.")]
    [(name, space_type, item)] = found
    assert (name, space_type, item.idname, item.type, item.value) == (
        "Object Mode", 'EMPTY', "recon.next_candidate", 'N', 'PRESS')
    assert item.shift and item.alt and not item.ctrl and not item.oskey and item.active
    assert addon.package.operators.NEXT_SHAPE_KEYS == "Shift+Alt+N"
    default = default_keymap_items()
    assert len(default) > 1000 and ("Object Mode", "object.hide_view_set", {"type": 'H', "value": 'PRESS'}) in default
    def shift_alt_n(event: dict) -> bool:
        modifiers = event.get("shift") and event.get("alt") and not event.get("ctrl") and not event.get("oskey")
        return event.get("type") == 'N' and bool(event.get("any") or modifiers)

    clashes = [(name, idname, event) for name, idname, event in default if shift_alt_n(event)]
    assert clashes == []


@pytest.fixture(scope="module")
def banked(addon) -> SimpleNamespace:
    """A tiny model with a shape bank of four fake models and a picture of a chair ("chair.png"), built in a
    child process (this one never imports torch)."""
    folder = addon.root / "banked"
    script = ("import json, shutil, sys; from pathlib import Path; "
              "from tests.test_shape_bank import write_banked_model; "
              "folder = Path(sys.argv[1]); model, picture = write_banked_model(folder); "
              "shutil.copy(picture, folder / 'chair.png'); print(json.dumps(str(model)))")
    done = subprocess.run([PYTHON, "-c", script, str(folder)], capture_output=True, text=True, cwd=build_addon.REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return SimpleNamespace(model=json.loads(done.stdout.splitlines()[-1]), image=folder / "chair.png")


@pytest.fixture
def candidate_settings(addon, settings, banked):
    """The panel set to 3 candidates of the chair picture, with the banked model."""
    settings.image_path, settings.candidates = str(banked.image), 3
    addon.prefs.model_path = banked.model
    return settings


def candidates_in(collection) -> list:
    """The objects of a candidate collection, by rank."""
    return sorted(collection.objects, key=lambda o: o["recon_candidate"]["rank"])


def shown(objects) -> list[str]:
    """The names of the visible objects among ``objects``."""
    return [o.name for o in objects if not o.hide_get()]


def remove_candidates(name: str = "chair candidates") -> None:
    """Delete a candidate collection, its objects, their meshes and the mask image (test clean-up)."""
    collection = bpy.data.collections.get(name)
    for obj in list(collection.objects) if collection is not None else []:
        mesh = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
    if collection is not None:
        bpy.data.collections.remove(collection)
    for image in [i for i in bpy.data.images if i.name.startswith("chair mask")]:
        bpy.data.images.remove(image)


def reconstruct_candidates(count: int = 3) -> bpy.types.Collection:
    """Run the operator with the panel's Candidates at ``count``; returns the one new collection."""
    before = {c.name for c in bpy.data.collections}
    bpy.context.scene.recon_settings.candidates = count
    assert bpy.ops.recon.reconstruct_image() == {'FINISHED'}
    [collection] = [c for c in bpy.data.collections if c.name not in before]
    return collection


def test_thin_walls_are_marked_for_select_by_attribute(addon, settings, monkeypatch):
    """The worker's thin_faces (walls too thin to print, named by a note) become a boolean face attribute, active,
    which Edit Mode's Select > By Attribute selects; the message says so. A shape without them has none."""
    job = addon.package.worker_client.Job
    handle = job._handle
    encode = __import__("recon_core.io.worker", fromlist=["encode_array"]).encode_array

    def thin(self, message):
        if message.get("type") == "result":
            message = {**message, "thin_faces": encode([0, 5, 7], "<i4")}
        handle(self, message)

    monkeypatch.setattr(job, "_handle", thin)
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'} and driver.finish() == {'FINISHED'}
    [obj] = [o for o in bpy.data.objects if o.name not in state[0]]
    attribute = obj.data.attributes["thin_wall"]
    assert (attribute.domain, attribute.data_type) == ('FACE', 'BOOLEAN') and obj.data.attributes.active == attribute
    assert [i for i, d in enumerate(attribute.data) if d.value] == [0, 5, 7]
    assert ({'INFO'}, f"{obj.name}: its thin walls are marked: in Edit Mode, Select > By Attribute selects them (the "
                      "attribute thin_wall).") in driver.reports
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.select_mode(type='FACE')
    bpy.ops.mesh.select_all(action='DESELECT')
    bpy.ops.mesh.select_by_attribute()
    bpy.ops.object.mode_set(mode='OBJECT')
    assert [p.index for p in obj.data.polygons if p.select] == [0, 5, 7]
    monkeypatch.setattr(job, "_handle", handle)
    plain = reconstruct()
    assert "thin_wall" not in plain.data.attributes
    for made in (obj, plain):
        image = made["recon_mask"]
        bpy.data.objects.remove(made)
        if image.users == 0:
            bpy.data.images.remove(image)


def test_a_model_without_a_bank_makes_its_one_object_and_says_why(addon, settings):
    settings.candidates = 3
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    status = driver.finish()
    assert status == {'FINISHED'}
    [obj] = [o for o in bpy.data.objects if o.name not in state[0]]
    assert re.fullmatch(r"shape(\.\d+)?", obj.name) and "recon_candidate" not in obj and scene_state()[3] == state[3]
    note = ("Note: this model gives one shape per picture, so you get 1 candidate, not 3 (several need a model "
            "with a shape bank).")
    assert ({'WARNING'}, note) in driver.reports
    assert not bpy.types.RECON_PT_candidates.poll(bpy.context)
    bpy.data.images.remove(obj["recon_mask"])
    bpy.data.objects.remove(obj)


def test_candidates_are_objects_in_one_collection_the_most_confident_shown(addon, candidate_settings, monkeypatch):
    results = _capture_results(addon, monkeypatch)
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    bpy.ops.ed.undo_push(message="before")
    state = scene_state()
    collection = reconstruct_candidates(3)
    [result] = results
    assert collection.name == "chair candidates"
    assert collection["recon_candidates"] == str(candidate_settings.image_path)
    assert bpy.context.collection.children.get(collection.name) == collection, "under the active collection"
    objects = candidates_in(collection)
    assert [o.name for o in objects] == ["chair 1", "chair 2", "chair 3"]
    assert set(scene_state()[0]) - state[0] == {"chair 1", "chair 2", "chair 3"}
    assert [o["recon_candidate"]["rank"] for o in objects] == [1, 2, 3]
    confidences = [o["recon_candidate"]["confidence"] for o in objects]
    assert confidences == pytest.approx([c.confidence for c in result.candidates], rel=1e-12)
    assert 1 >= confidences[0] > confidences[1] >= confidences[2] > 0
    assert shown(objects) == ["chair 1"] and [o.hide_render for o in objects] == [False, True, True]
    assert [o.name for o in bpy.context.selected_objects] == ["chair 1"]
    assert bpy.context.view_layer.objects.active == objects[0]
    mask = objects[0]["recon_mask"]
    assert mask.name == "chair mask" and all(o["recon_mask"] == mask for o in objects)
    for obj, candidate in zip(objects, result.candidates):
        check = obj["recon_check"]
        assert check["ok"] and check["watertight"] and check["manifold"] and check["volume_mm3"] > 0
        assert check["summary"] == candidate.report["summary"] and check["category"] == "chair"
        assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
        assert obj.data.name == obj.name and all(p.use_smooth for p in obj.data.polygons)
        want = addon.package.mesh_data.to_blender(candidate.verts, 1.0 / 1000.0).astype(np.float32)
        np.testing.assert_array_equal(mesh_arrays(obj.data)["co"], want)
        assert_closed_manifold(obj.data)
        assert obj.dimensions.z == pytest.approx(0.050, rel=1e-4)
    assert len({mesh_arrays(o.data)["co"].tobytes() for o in objects}) == 3, "three different shapes"
    # in words against the likeliest, not as shares of the ten fitted (the best of three close ones read "25%")
    words = [c.likelihood for c in result.candidates]
    assert words[0] == "the likeliest" and all(w in ("about as likely", "less likely", "much less likely")
                                               for w in words[1:]), words
    assert [o["recon_candidate"]["likelihood"] for o in objects] == words
    texts = labels(draw_panel(bpy.types.RECON_PT_candidates))
    # short enough for the sidebar's default width (the eye icon says which is shown); printable unless said
    assert texts[:4] == ["chair candidates", "1. chair 1: the likeliest", f"2. chair 2: {words[1]}",
                         f"3. chair 3: {words[2]}"]
    assert not any("%" in t for t in texts)
    objects[2]["recon_check"]["ok"] = False
    assert labels(draw_panel(bpy.types.RECON_PT_candidates))[3] == f"3. chair 3: {words[2]}, NOT printable"
    objects[2]["recon_check"]["ok"] = True

    bpy.ops.ed.undo_push(message="Reconstruct from Image")
    bpy.ops.ed.undo()
    assert scene_state() == state


def test_next_shape_cycles_and_wraps_and_each_step_is_one_undo(addon, candidate_settings):
    objects = candidates_in(reconstruct_candidates(3))
    names = [o.name for o in objects]
    for expected in ("chair 2", "chair 3", "chair 1", "chair 2"):
        assert bpy.ops.recon.next_candidate() == {'FINISHED'}
        objects = [bpy.data.objects[n] for n in names]
        assert shown(objects) == [expected] and [o.name for o in bpy.context.selected_objects] == [expected]
        assert bpy.context.view_layer.objects.active.name == expected
        assert [o.hide_render for o in objects] == [n != expected for n in names]
    bpy.ops.ed.undo_push(message="before")
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}
    bpy.ops.ed.undo_push(message="Next Shape")
    assert shown([bpy.data.objects[n] for n in names]) == ["chair 3"]
    bpy.ops.ed.undo()  # undo reloads the data: look the objects up again
    objects = [bpy.data.objects[n] for n in names]
    assert shown(objects) == ["chair 2"] and bpy.context.view_layer.objects.active.name == "chair 2"
    assert [o.hide_render for o in objects] == [True, False, True]
    # shown by hand in the outliner: Next Shape goes on from the active one and hides the rest again
    objects[0].hide_set(False)
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}
    assert shown([bpy.data.objects[n] for n in names]) == ["chair 3"]
    remove_candidates()
    bpy.ops.mesh.primitive_cube_add()
    assert not bpy.ops.recon.next_candidate.poll() and not bpy.ops.recon.keep_candidate.poll()
    with pytest.raises(RuntimeError, match="The active object is not a candidate shape"):
        bpy.ops.recon.next_candidate()
    bpy.data.objects.remove(bpy.context.active_object)


def test_next_shape_counts_the_candidates_left_after_one_was_deleted(addon, candidate_settings):
    collection = reconstruct_candidates(3)
    before = [t for t in labels(draw_panel(bpy.types.RECON_PT_candidates)) if t.startswith(("2. ", "3. "))]
    first = bpy.data.objects["chair 1"]
    mesh = first.data
    bpy.data.objects.remove(first)
    bpy.data.meshes.remove(mesh)
    bpy.context.view_layer.objects.active = bpy.data.objects["chair 2"]
    operator = ModalDriver(addon.package.operators.RECON_OT_next_candidate)
    assert operator.op.execute(bpy.context) == {'FINISHED'} and operator.op.execute(bpy.context) == {'FINISHED'}
    texts = [message.split(",")[0] for _, message in operator.reports]
    assert texts == ["Showing chair 3: candidate 2 of 2 (ranked 3 when made)",
                     "Showing chair 2: candidate 1 of 2 (ranked 2 when made)"]
    # each says how likely it is against the likeliest as made, also once that one is gone (chair 2 became "the
    # likeliest", and the others' words moved)
    assert all(re.search(r", (about as likely as|(much )?less likely than) the likeliest, ", m)
               for _, m in operator.reports), operator.reports
    after = [t for t in labels(draw_panel(bpy.types.RECON_PT_candidates)) if t.startswith(("2. ", "3. "))]
    assert [t.replace(" (shown)", "") for t in after] == [t.replace(" (shown)", "") for t in before], (before, after)
    assert shown(candidates_in(collection)) == ["chair 2"]
    remove_candidates()


def test_next_shape_says_the_words_against_the_likeliest_as_recon_mesh_does(addon):
    """Blender's Python has no recon_core: the add-on's copy of what a candidate's words are said against is
    recon_core's, so Next Shape and recon-mesh say "less likely than the likeliest" alike."""
    from recon_core.io.notes import AGAINST_THE_LIKELIEST

    assert addon.package.operators.AGAINST_THE_LIKELIEST == AGAINST_THE_LIKELIEST


def test_deleting_the_shown_candidate_leaves_the_others_reachable(addon, candidate_settings):
    """X on the shown candidate leaves nothing active and the others hidden: the Candidates sub-panel still lists
    them and Next Shape shows the first left; Keep This One waits for one shown. With another object active, they are
    not stranded (the user may have hidden them on purpose): Next Shape shows none of them."""
    collection = reconstruct_candidates(3)
    mesh_name = bpy.context.active_object.data.name
    assert bpy.ops.object.delete() == {'FINISHED'}  # "not this one": the shown chair 1
    assert bpy.context.active_object is None and shown(candidates_in(collection)) == []
    texts = labels(draw_panel(bpy.types.RECON_PT_candidates))
    assert [t.split(":")[0] for t in texts if re.match(r"\d\. ", t)] == ["2. chair 2", "3. chair 3"]
    assert "None shown: press Next Shape" in texts
    assert not bpy.ops.recon.keep_candidate.poll()
    with pytest.raises(RuntimeError, match=r"No candidate shape of chair candidates is shown; Next Shape"):
        bpy.ops.recon.keep_candidate()
    empty = bpy.data.objects.new("empty", None)  # an unrelated object made active: not stranded
    bpy.context.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    assert not bpy.types.RECON_PT_candidates.poll(bpy.context) and not bpy.ops.recon.next_candidate.poll()
    with pytest.raises(RuntimeError, match="The active object is not a candidate shape"):
        bpy.ops.recon.next_candidate()
    assert shown(candidates_in(collection)) == [] and bpy.context.view_layer.objects.active == empty
    bpy.context.view_layer.objects.active = None  # as the delete left it
    operator = ModalDriver(addon.package.operators.RECON_OT_next_candidate)
    assert bpy.ops.recon.next_candidate.poll() and operator.op.execute(bpy.context) == {'FINISHED'}
    assert operator.reports == [({'INFO'}, "Showing chair 2: candidate 1 of 2 (ranked 2 when made), "
                                           + operator.reports[0][1].split(", ", 1)[1])]
    assert shown(candidates_in(collection)) == ["chair 2"] and not empty.hide_get()
    assert bpy.context.view_layer.objects.active.name == "chair 2"
    assert "chair 1" not in bpy.data.objects and mesh_name not in bpy.data.meshes, "the deleted one is gone"
    assert bpy.ops.recon.next_candidate() == {'FINISHED'} and shown(candidates_in(collection)) == ["chair 3"]
    assert bpy.ops.recon.keep_candidate.poll()
    bpy.data.objects.remove(empty)
    remove_candidates()


def test_a_deleted_candidate_is_not_saved_in_the_file(addon, candidate_settings, tmp_path):
    """X on a candidate leaves it held by the collection's record (a pointer is a user): saving forgets it, with its
    mesh, so the file does not carry it (File > Clean Up > Purge would not remove it); the other candidates stay."""
    collection = reconstruct_candidates(3)
    mesh_name = bpy.context.active_object.data.name
    assert bpy.ops.object.delete() == {'FINISHED'}
    assert "chair 1" in bpy.data.objects, "held by the record until something forgets it"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "kept.blend"), copy=True)
    assert "chair 1" not in bpy.data.objects and mesh_name not in bpy.data.meshes
    assert sorted(o.name for o in candidates_in(collection)) == ["chair 2", "chair 3"]
    remove_candidates()


@contextlib.contextmanager
def local_view():
    """The startup screen's 3D Viewport in Local View (of a new cube), as the context of what runs inside; yields its
    space."""
    area = next(a for a in bpy.context.screen.areas if a.type == 'VIEW_3D')
    region = next(r for r in area.regions if r.type == 'WINDOW')
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    try:
        with bpy.context.temp_override(area=area, region=region):
            assert bpy.ops.view3d.localview() == {'FINISHED'} and area.spaces.active.local_view is not None
            try:
                yield area.spaces.active
            finally:
                bpy.ops.view3d.localview()  # back to the whole scene
                assert area.spaces.active.local_view is None
    finally:
        mesh = cube.data
        bpy.data.objects.remove(cube)
        bpy.data.meshes.remove(mesh)


def test_in_local_view_the_new_objects_are_in_it(addon, candidate_settings):
    """As Blender's Add menu does: the objects made in a 3D Viewport in Local View are in it, hidden candidates too.

    (Blender 5.0 gives a new object's base every local view's bit, so this passes without the add-on's own
    ``local_view_set`` too; the add-on sets it as Blender's Add operators do.)"""
    outside = bpy.data.objects.new("outside", None)  # not selected when the local view begins: not in it
    bpy.context.collection.objects.link(outside)
    with local_view() as space:
        objects = candidates_in(reconstruct_candidates(3))
        candidate_settings.candidates = 1
        single = reconstruct()
        bpy.context.view_layer.update()  # local_view_get reads the evaluated state
        assert [o.local_view_get(space) for o in objects + [single, outside]] == [True] * 4 + [False]
    remove_candidates()
    bpy.data.objects.remove(outside)
    bpy.data.objects.remove(single)


def _frame_pixels(scene, camera, obj, size) -> np.ndarray:
    """(V, 2) where ``camera`` shows the vertices of ``obj`` in a render of ``size`` pixels, ``(u right, v down)``, by
    Blender's own projection (its lens, sensor fit and shift: ``bpy_extras.object_utils.world_to_camera_view``)."""
    from bpy_extras.object_utils import world_to_camera_view

    width, height = size
    render = scene.render
    kept = render.resolution_x, render.resolution_y, render.resolution_percentage
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    try:
        bpy.context.view_layer.update()
        frame = np.array([tuple(world_to_camera_view(scene, camera, obj.matrix_world @ v.co))[:2]
                          for v in obj.data.vertices])
    finally:
        render.resolution_x, render.resolution_y, render.resolution_percentage = kept
    return np.stack([frame[:, 0] * width, (1.0 - frame[:, 1]) * height], axis=1)


def _on_the_mask(scene, camera, obj) -> None:
    """Through ``camera``, the box of ``obj``'s vertices has the centre and the longer side of its mask's box (the
    worker's fit), to a hundredth of a pixel."""
    mask = mask_pixels(obj["recon_mask"]) > 127
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    uv = _frame_pixels(scene, camera, obj, (mask.shape[1], mask.shape[0]))
    longer = max(np.ptp(uv[:, 0]), np.ptp(uv[:, 1]))
    assert longer == pytest.approx(max(cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]), abs=0.01)
    np.testing.assert_allclose((uv.min(axis=0) + uv.max(axis=0)) / 2,
                               [(cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2], atol=0.01)


def _fills_the_frame(scene, camera, plane, view) -> None:
    """The picture's plane has the camera's frame's corners (Blender draws an image empty with its longer side the
    display size, times the empty's scale, centred on its origin at the offset -0.5: its overlay's
    image_calc_aspect)."""
    from bpy_extras.object_utils import world_to_camera_view

    half = plane.empty_display_size / 2
    aspect = view["height"] / view["width"]
    bpy.context.view_layer.update()
    render = scene.render
    kept = render.resolution_x, render.resolution_y
    render.resolution_x, render.resolution_y = view["width"], view["height"]
    corners = [tuple(world_to_camera_view(scene, camera, plane.matrix_world @ Vector((x, y, 0.0))))[:2]
               for x, y in ((-half, -half * aspect), (half, half * aspect))]
    render.resolution_x, render.resolution_y = kept
    np.testing.assert_allclose(corners, [(0.0, 0.0), (1.0, 1.0)], atol=1e-4)


def test_look_through_picture_fills_the_frame_for_a_large_object_in_millimetres(addon, candidate_settings):
    """Blender clamps an empty's display size to 1,000: a 900 mm chair in a millimetre scene needs ~3,000, and its
    picture filled the middle third of the frame, off the mesh. The empty's scale makes up the rest."""
    scene = bpy.context.scene
    scene.unit_settings.scale_length = 0.001
    candidate_settings.height_mm, candidate_settings.candidates = 900.0, 1
    obj = reconstruct()
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.recon.view_picture() == {'FINISHED'}
    camera = obj["recon_picture_camera"]
    plane = camera["recon_picture_plane"]
    assert plane.empty_display_size <= 1000.0 and max(plane.scale) > 1.0
    _fills_the_frame(scene, camera, plane, obj["recon_view"])
    _on_the_mask(scene, camera, obj)
    for o in (plane, camera, obj):
        bpy.data.objects.remove(o)
    for image in [i for i in bpy.data.images if i.name.startswith("chair")]:
        bpy.data.images.remove(image)


def test_look_through_picture_shows_the_picture_over_the_shown_candidate(addon, candidate_settings):
    """Look Through Picture makes one camera for the candidates, outside their collection, parented to the shown
    one: through it (Blender's own projection, the render at the picture's size) the mesh lies on the picture's
    object, and the picture's plane fills the camera's frame; it follows the mesh when moved, goes to the candidate
    Next Shape shows and stays with the one Keep This One keeps; pressed again, it is the same camera. The 3D
    Viewport would look through it; headless there is none, and the message says how to."""
    scene = bpy.context.scene
    scene.cursor.location = (1.0, 2.0, 3.0)
    state = scene_state()
    collection = reconstruct_candidates(3)
    objects = candidates_in(collection)
    assert all("recon_view" in o for o in objects)
    assert bpy.ops.recon.view_picture.poll()
    calls = draw_panel(bpy.types.RECON_PT_mask)
    assert any(name == "operator" and args[0] == "recon.view_picture" for name, args, _ in calls)
    assert bpy.ops.recon.view_picture() == {'FINISHED'}
    camera = collection["recon_picture_camera"]
    plane = camera["recon_picture_plane"]
    assert camera.name == "chair picture camera" and camera.type == 'CAMERA' and camera.parent == objects[0]
    assert collection.objects.get(camera.name) is None and bpy.context.collection.objects.get(camera.name) == camera
    assert plane.name == "chair picture" and plane.parent == camera and plane.empty_display_type == 'IMAGE'
    assert plane.hide_select and plane.empty_image_depth == 'BACK' and plane.show_empty_image_only_axis_aligned
    # the picture as the worker read it, packed: the same pixels as the file (a JPEG's, to its quality)
    shown = plane.data
    assert shown.name == "chair picture" and shown.packed_file is not None and objects[1]["recon_picture_image"] == shown
    width, height = shown.size
    pixels = np.empty(width * height * 4, np.float32)
    shown.pixels.foreach_get(pixels)
    with Image.open(candidate_settings.image_path) as img:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    on_white = rgba[..., :3] * rgba[..., 3:] / 255.0 + 255.0 * (1.0 - rgba[..., 3:] / 255.0)
    assert (width, height) == (img.width, img.height)
    got = np.round(pixels.reshape(height, width, 4)[::-1, :, :3] * 255.0)  # Blender's rows run bottom-up
    assert np.abs(got - on_white).mean() < 3.0
    _on_the_mask(scene, camera, objects[0])
    _fills_the_frame(scene, camera, plane, objects[0]["recon_view"])
    # it follows the mesh
    objects[0].location.x += 0.5
    _on_the_mask(scene, camera, objects[0])
    assert bpy.ops.recon.view_picture() == {'FINISHED'} and collection["recon_picture_camera"] == camera
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}
    assert camera.parent == objects[1]
    _on_the_mask(scene, camera, objects[1])
    assert bpy.ops.recon.keep_candidate() == {'FINISHED'}
    kept_object = bpy.data.objects["chair"]
    assert camera.parent == kept_object and kept_object["recon_picture_camera"] == camera
    assert "chair candidates" not in bpy.data.collections
    _on_the_mask(scene, camera, kept_object)
    assert bpy.ops.recon.view_picture() == {'FINISHED'}
    assert set(scene_state()[0]) - state[0] == {"chair", "chair picture camera", "chair picture"}
    # the kept one's camera removed outright (a script): made again, no picture left behind, the names plain
    bpy.data.objects.remove(camera)
    assert bpy.ops.recon.view_picture() == {'FINISHED'}
    camera = kept_object["recon_picture_camera"]
    plane = camera["recon_picture_plane"]
    assert set(scene_state()[0]) - state[0] == {"chair", "chair picture camera", "chair picture"}
    for obj in (plane, camera, kept_object):
        bpy.data.objects.remove(obj)
    for image in [i for i in bpy.data.images if i.name.startswith("chair")]:
        bpy.data.images.remove(image)


def test_a_deleted_picture_camera_leaves_no_picture_behind_in_the_file(addon, candidate_settings):
    """Deleting results and their picture cameras (X) left each camera's picture, an image empty that shows only along
    its axis and cannot be selected: invisible, unclickable, and saved in the file with its picture. At save they go
    (and a camera kept only by its object's pointer); a camera whose mesh alone was deleted stays, the user's."""
    candidate_settings.candidates = 1
    made = []
    for _ in range(3):
        obj = reconstruct()
        bpy.context.view_layer.objects.active = obj
        assert bpy.ops.recon.view_picture() == {'FINISHED'}
        made.append((obj, obj["recon_picture_camera"], obj["recon_picture_camera"]["recon_picture_plane"]))
    names = [(o.name, c.name, p.name) for o, c, p in made]
    for obj, camera, _ in made[:2]:  # mesh and camera deleted (X: unlinked; the camera held by its object's pointer)
        for target in (obj, camera):
            for collection in list(target.users_collection):
                collection.objects.unlink(target)
    first_mesh = made[0][0].data
    bpy.data.objects.remove(made[0][0])  # the first one's mesh purged outright: its camera unparented, in no scene
    addon.package.operators.forget_deleted_before_save()
    for (obj_name, camera_name, plane_name), keep in zip(names, (False, False, True)):
        assert (bpy.data.objects.get(plane_name) is not None) == keep, plane_name
        camera = bpy.data.objects.get(camera_name)  # gone, or nothing uses it: not saved (the first's, unparented)
        assert (camera is not None and bool(camera.users_collection or camera.users > 0)) == keep, camera_name
    obj, camera, plane = made[2]
    for collection in list(obj.users_collection):  # the third's mesh alone deleted: its camera and picture stay
        collection.objects.unlink(obj)
    addon.package.operators.forget_deleted_before_save()
    assert bpy.data.objects.get(camera.name) == camera and plane.parent == camera
    meshes = [first_mesh, made[1][0].data, obj.data]
    for target in (plane, camera, obj, made[1][0], bpy.data.objects.get(names[0][1])):  # the first's camera, unused
        if target is not None:
            bpy.data.objects.remove(target)
    for data in (*meshes, *[c for c in bpy.data.cameras if c.users == 0]):
        if data.users == 0:
            (bpy.data.meshes if isinstance(data, bpy.types.Mesh) else bpy.data.cameras).remove(data)
    for image in [i for i in bpy.data.images if i.users == 0]:
        bpy.data.images.remove(image)


def test_look_through_picture_mends_what_the_user_changed_and_says_what_it_cannot(addon, candidate_settings, tmp_path):
    """One shape: the camera is the object's own, in its collection, and its clipping follows the object's scale. The
    shown picture deleted, the camera is made alone, with a warning; a camera the user deleted goes with its picture
    and a new one is made (no second picture left over); a copy of the object (Shift+D) gets a camera of its own; a
    mesh edited since it was made keeps the camera of the mesh as made, with a warning. An object made without a camera
    cannot be looked through."""
    picture = tmp_path / "lamp.png"
    shutil.copy(candidate_settings.image_path, picture)
    candidate_settings.image_path, candidate_settings.candidates = str(picture), 1
    obj = reconstruct()
    driver = ModalDriver(addon.package.operators.RECON_OT_view_picture)
    driver.context.active_object, driver.context.space_data = obj, None
    assert driver.op.execute(driver.context) == {'FINISHED'}
    camera = obj["recon_picture_camera"]
    assert camera["recon_picture_plane"].data == obj["recon_picture_image"]
    assert camera.parent == obj and obj.users_collection == camera.users_collection
    [(kind, message)] = driver.reports
    view = obj["recon_view"]
    render = bpy.context.scene.render
    assert (render.resolution_x, render.resolution_y) == (1920, 1080) != (view['width'], view['height'])
    assert kind == {'INFO'} and message == (
        "Made lamp picture camera (press Look Through Picture in a 3D Viewport to look through it). The picture is "
        "behind lamp: Alt+Z (X-ray) shows it through the mesh. The camera's frame is the picture at a render "
        f"resolution of its proportions ({view['width']} x {view['height']}); this scene's is 1920 x 1080.")
    render.resolution_x, render.resolution_y = 3 * view['width'], 3 * view['height']  # its proportions: not said
    driver.reports.clear()
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert [message for _, message in driver.reports] == [
        "Placed lamp picture camera (press Look Through Picture in a 3D Viewport to look through it). The picture "
        "is behind lamp: Alt+Z (X-ray) shows it through the mesh."]
    render.resolution_x, render.resolution_y = 1920, 1080
    obj.scale = (4.0, 4.0, 4.0)  # bigger: the picture behind it is farther, and still inside the clipping
    bpy.context.view_layer.update()
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert camera.data.clip_end == pytest.approx(4.0 * view["clip_end"])
    assert camera.data.clip_end > 4.0 * -view["plane_location"][2]
    # a transform applied to the mesh since (Apply Scale and Rotation, Set Origin): the camera follows the mesh
    obj.rotation_euler = (0.0, 0.0, 0.5)
    bpy.context.view_layer.objects.active = obj
    for other in bpy.context.view_layer.objects:
        other.select_set(other == obj)
    assert bpy.ops.object.transform_apply(location=False, rotation=True, scale=True) == {'FINISHED'}
    assert bpy.ops.object.origin_set(type='ORIGIN_GEOMETRY') == {'FINISHED'}
    driver.reports.clear()
    assert driver.op.execute(driver.context) == {'FINISHED'} and driver.reports[0][0] == {'INFO'}
    assert camera.data.clip_end == pytest.approx(4.0 * view["clip_end"], rel=1e-4)
    _on_the_mask(bpy.context.scene, camera, obj)
    obj.scale = (1.0, 1.0, 2.0)  # stretched: a camera cannot follow, and it is said
    bpy.context.view_layer.update()
    driver.reports.clear()
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert "lamp is stretched unevenly (its scale, applied or not, differs between its axes)" in driver.reports[0][1]
    obj.scale = (1.0, 1.0, 1.0)
    bpy.context.view_layer.update()
    # the same picture again shares its image; another picture of the same size at that path (a re-shot photo) does
    # not take the earlier objects' (they were fitted to theirs)
    same = reconstruct()
    shown = obj["recon_picture_image"]
    assert same["recon_picture_image"] == shown  # one image: the newer took the earlier's users
    assert len([i for i in bpy.data.images if i.get("recon_shown_picture") == str(picture)]) == 1
    with Image.open(picture) as img:
        img.transpose(Image.FLIP_LEFT_RIGHT).save(picture)  # the same size, the object elsewhere
    other = reconstruct()
    assert other["recon_picture_image"] != shown
    assert obj["recon_picture_image"] == shown and same["recon_picture_image"] == shown
    for made in (same, other):
        mesh = made.data
        bpy.data.objects.remove(made)
        bpy.data.meshes.remove(mesh)
    # the user deletes the camera (the picture stays, unclickable): pressed again, both are made anew
    bpy.data.collections["Collection"].objects.unlink(camera)
    assert driver.op.execute(driver.context) == {'FINISHED'}
    again = obj["recon_picture_camera"]
    assert again != camera and again.name == "lamp picture camera"
    assert sorted(o.name for o in bpy.data.objects if o.name.startswith("lamp picture")) == [
        "lamp picture", "lamp picture camera"]
    # a camera removed outright (a script's objects.remove): no picture left behind, the names plain
    bpy.data.objects.remove(again)
    assert driver.op.execute(driver.context) == {'FINISHED'}
    again = obj["recon_picture_camera"]
    assert again.name == "lamp picture camera" and again.data.name == "lamp picture camera"
    assert sorted(o.name for o in bpy.data.objects if o.name.startswith("lamp picture")) == [
        "lamp picture", "lamp picture camera"]
    # the picture deleted by the user (X): made again under its own name
    bpy.data.collections["Collection"].objects.unlink(again["recon_picture_plane"])
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert again["recon_picture_plane"].name == "lamp picture" and again["recon_picture_plane"].users_collection
    # the shown picture deleted: the camera alone
    bpy.data.images.remove(obj["recon_picture_image"])
    driver.reports.clear()
    assert driver.op.execute(driver.context) == {'FINISHED'} and obj["recon_picture_camera"] == again
    assert "recon_picture_plane" not in again and "lamp picture" not in bpy.data.objects
    [(kind, message)] = driver.reports
    assert kind == {'WARNING'} and message.endswith(
        "the picture's image is gone (deleted, or made before the add-on kept it), so only the camera is made.")
    # a copy gets its own camera; the original keeps its own
    copy = obj.copy()
    copy.data = obj.data.copy()
    bpy.context.collection.objects.link(copy)
    driver.context.active_object = copy
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert copy["recon_picture_camera"] != again and again.parent == obj and copy["recon_picture_camera"].parent == copy
    # an edited mesh: the camera as made, said
    copy.data.vertices[0].co.z += 1.0
    driver.reports.clear()
    assert driver.op.execute(driver.context) == {'FINISHED'}
    assert f"{copy.name}'s mesh was edited since it was made, so the camera is where the picture's was" in driver.reports[0][1]
    del obj["recon_view"]
    driver.context.active_object = obj
    bpy.context.view_layer.objects.active = obj
    assert not bpy.ops.recon.view_picture.poll()
    for made in (copy["recon_picture_camera"], again, copy, obj):
        data = made.data
        bpy.data.objects.remove(made)
        (bpy.data.cameras if isinstance(data, bpy.types.Camera) else bpy.data.meshes).remove(data)
    for image in [i for i in bpy.data.images if i.name.startswith("lamp")]:
        bpy.data.images.remove(image)


def test_keep_this_one_deletes_the_others_and_moves_it_to_the_parent_collection(addon, candidate_settings):
    collection = reconstruct_candidates(3)
    parent = bpy.context.collection
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}
    bpy.ops.ed.undo_push(message="before")
    state = scene_state()
    assert bpy.ops.recon.keep_candidate() == {'FINISHED'}
    kept = bpy.data.objects["chair"]  # named as one reconstruction is: the next candidates are "chair 1" ... again
    assert re.fullmatch(r"chair(\.\d{3})?", kept.data.name)  # .001 where a deleted chair's mesh still holds "chair"
    assert "chair candidates" not in bpy.data.collections, "the emptied collection is removed"
    deleted = {"chair 1", "chair 2", "chair 3"}
    assert scene_state()[0] == state[0] - deleted | {"chair"}
    assert scene_state()[1] == state[1] - deleted | {kept.data.name}
    assert parent.objects.get("chair") == kept and len(kept.users_collection) == 1
    assert not kept.hide_get() and not kept.hide_render and kept.select_get()
    assert bpy.context.view_layer.objects.active == kept and kept["recon_check"]["ok"]
    assert kept["recon_mask"].name == "chair mask"
    assert not bpy.types.RECON_PT_candidates.poll(bpy.context) and not bpy.ops.recon.next_candidate.poll()

    bpy.ops.ed.undo_push(message="Keep This One")
    bpy.ops.ed.undo()  # undo reloads the data: look everything up again
    assert scene_state() == state
    collection, parent = bpy.data.collections["chair candidates"], bpy.context.collection
    assert shown(candidates_in(collection)) == ["chair 2"] and parent.objects.get("chair 2") is None
    # the last candidate left: Keep This One still takes it out of the collection
    for name in ("chair 1", "chair 3"):
        bpy.data.objects.remove(bpy.data.objects[name])
    bpy.context.view_layer.objects.active = bpy.data.objects["chair 2"]
    bpy.data.objects["chair 2"].name = "table 2"  # a name the user gave it stays, though it ends in the rank
    assert not bpy.ops.recon.next_candidate.poll() and bpy.ops.recon.keep_candidate() == {'FINISHED'}
    assert "chair candidates" not in bpy.data.collections and parent.objects.get("table 2") is not None
    kept = bpy.data.objects["table 2"]
    mask = kept["recon_mask"]
    bpy.data.objects.remove(kept)
    bpy.data.images.remove(mask)


def test_keep_this_one_on_a_second_set_of_the_picture_names_it_as_one_reconstruction(addon, candidate_settings,
                                                                                    capfd):
    """A second set of the same picture comes as "chair 1.001", ... in "chair candidates.001" (the first set still
    there): Keep This One said "Kept chair 2.001 as chair 2.001" and renamed nothing, and the picture camera was
    "chair candidates.001 picture camera"."""
    first = reconstruct_candidates(3)
    second = reconstruct_candidates(3)
    assert second.name == "chair candidates.001"
    assert addon.package.operators._picture_base(candidates_in(second)[0]) == "chair"
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}  # the second set's "chair 2.001" shown
    shown_name = bpy.context.active_object.name
    assert shown_name == "chair 2.001"
    capfd.readouterr()
    assert bpy.ops.recon.keep_candidate() == {'FINISHED'}
    said = capfd.readouterr().out
    kept = bpy.data.objects.get("chair")
    assert kept is not None, [o.name for o in bpy.data.objects]
    assert re.fullmatch(r"chair(\.\d{3})?", kept.data.name), kept.data.name  # .001 where an earlier mesh holds it
    assert f"Kept {shown_name} as chair and deleted the 2 other candidates of chair candidates.001." in said, said
    mesh = kept.data
    bpy.data.objects.remove(kept)
    bpy.data.meshes.remove(mesh)
    remove_candidates(first.name)  # and the mask image they share


def test_keep_this_one_keeps_it_in_another_scene_that_links_the_candidates(addon, candidate_settings):
    """A second scene linking the candidates collection lost the kept one with the emptied collection, silently."""
    collection = reconstruct_candidates(3)
    other = bpy.data.scenes.new("Scene 2")
    other.collection.children.link(collection)
    try:
        assert bpy.ops.recon.keep_candidate() == {'FINISHED'}
        kept = bpy.data.objects["chair"]
        assert other.collection.objects.get("chair") == kept, [o.name for o in other.collection.all_objects]
        assert bpy.context.collection.objects.get("chair") == kept
    finally:
        bpy.data.scenes.remove(other)
    mask = kept["recon_mask"]
    bpy.data.objects.remove(kept)
    bpy.data.images.remove(mask)


def test_a_copy_of_a_candidate_is_the_users_never_hidden_or_deleted(addon, candidate_settings):
    """Shift+D copies the candidate property into the copy ("chair 1.001"), in the same collection: only the objects
    the reconstruction made (the collection's record points at them) are candidates."""
    collection = reconstruct_candidates(3)
    assert [entry.obj.name for entry in collection.recon_candidate_objects] == ["chair 1", "chair 2", "chair 3"]
    assert bpy.ops.object.duplicate() == {'FINISHED'}  # Shift+D on the shown "chair 1"
    copy = bpy.context.active_object
    assert copy.name == "chair 1.001" and "recon_candidate" in copy and collection.objects.get(copy.name) == copy
    operators = addon.package.operators
    assert operators.candidate_collection(copy) is None and not bpy.ops.recon.next_candidate.poll()
    assert [o.name for o in operators.candidates_of(collection, bpy.context.view_layer)] == ["chair 1", "chair 2",
                                                                                              "chair 3"]
    bpy.context.view_layer.objects.active = bpy.data.objects["chair 1"]
    listed = [text for text in labels(draw_panel(bpy.types.RECON_PT_candidates)) if re.match(r"\d\. ", text)]
    assert [text.split(":")[0] for text in listed] == ["1. chair 1", "2. chair 2", "3. chair 3"]
    for expected in ("chair 2", "chair 3", "chair 1"):  # Next Shape never cycles to the copy, nor hides it
        assert bpy.ops.recon.next_candidate() == {'FINISHED'}
        assert bpy.context.view_layer.objects.active.name == expected and not copy.hide_get()
    assert bpy.ops.recon.keep_candidate() == {'FINISHED'}  # "chair 1", kept, is named "chair"; the copy stays
    assert sorted(o.name for o in bpy.data.objects if o.name.startswith("chair")) == ["chair", "chair 1.001"]
    assert not copy.hide_get() and not copy.hide_render and collection.objects.get("chair 1.001") == copy
    assert bpy.context.collection.objects.get("chair") is not None
    mask = copy["recon_mask"]
    for obj in (bpy.data.objects["chair"], copy):
        bpy.data.objects.remove(obj)
    bpy.data.collections.remove(collection)
    bpy.data.images.remove(mask)


def test_a_renamed_candidate_stays_a_candidate_and_keep_this_one_keeps_it(addon, candidate_settings):
    """The record points at the objects, not at their names: the candidate the user likes and renames is still listed,
    Next Shape goes on from it and Keep This One keeps it; also after an undo."""
    collection = reconstruct_candidates(3)
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}  # chair 2 shown
    bpy.data.objects["chair 2"].name = "my chair"
    bpy.ops.ed.undo_push(message="rename")
    bpy.ops.ed.undo_push(message="after")
    bpy.ops.ed.undo()  # undo reloads the data: the pointers follow
    collection, liked = bpy.data.collections["chair candidates"], bpy.data.objects["my chair"]
    operators = addon.package.operators
    assert operators.candidate_collection(liked) == collection
    assert [o.name for o in operators.candidates_of(collection, bpy.context.view_layer)] == ["chair 1", "my chair",
                                                                                              "chair 3"]
    bpy.context.view_layer.objects.active = liked
    assert bpy.types.RECON_PT_candidates.poll(bpy.context)
    listed = [text for text in labels(draw_panel(bpy.types.RECON_PT_candidates)) if re.match(r"\d\. ", text)]
    assert [text.split(":")[0] for text in listed] == ["1. chair 1", "2. my chair", "3. chair 3"]
    assert bpy.ops.recon.keep_candidate() == {'FINISHED'}
    assert "chair candidates" not in bpy.data.collections
    assert not {"chair 1", "chair 3"} & set(bpy.data.objects.keys())
    kept = bpy.data.objects["my chair"]
    assert bpy.context.collection.objects.get("my chair") == kept and not kept.hide_get()
    mask = kept["recon_mask"]
    bpy.data.objects.remove(kept)
    bpy.data.images.remove(mask)


def test_one_candidate_is_todays_single_object(addon, candidate_settings):
    """Candidates at 1, with a model that could give several: one object named after the picture, no
    collection, no candidate property; the shape is the first of the candidates."""
    first = mesh_arrays(candidates_in(reconstruct_candidates(3))[0].data)["co"]
    remove_candidates()
    candidate_settings.candidates = 1
    collections = scene_state()[3]
    obj = reconstruct()
    assert obj.name == "chair" and "recon_candidate" not in obj and scene_state()[3] == collections
    assert obj.users_collection[0] == bpy.context.collection and not obj.hide_get() and not obj.hide_render
    np.testing.assert_array_equal(mesh_arrays(obj.data)["co"], first)
    assert obj["recon_check"]["ok"]
    mask = obj["recon_mask"]
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(mask)


def test_hidden_candidates_stay_hidden_in_the_saved_file(addon, candidate_settings, tmp_path):
    reconstruct_candidates(3)
    assert bpy.ops.recon.next_candidate() == {'FINISHED'}
    path = tmp_path / "candidates.blend"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True) == {'FINISHED'}
    remove_candidates()
    script = ("import bpy, json, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
              "c = bpy.data.collections['chair candidates']; print(json.dumps({o.name: [o.hide_get(), o.hide_render, "
              "o['recon_candidate'].to_dict(), o['recon_check']['ok']] for o in c.objects}))")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    read = json.loads(done.stdout.splitlines()[-1])
    assert {name: (hidden, render, info["rank"], ok) for name, (hidden, render, info, ok) in read.items()} == {
        "chair 1": (True, True, 1, True), "chair 2": (False, False, 2, True), "chair 3": (True, True, 3, True)}


@pytest.mark.parametrize("fail_in", ["_check_property", "_show_only"])
def test_a_failed_candidate_build_leaves_the_scene_unchanged(addon, candidate_settings, monkeypatch, fail_in):
    """A failure at the second candidate's check, or once every object is linked: nothing is left."""
    operators = addon.package.operators
    real, calls = getattr(operators, fail_in), []

    def fails(*args):
        calls.append(args)
        if fail_in == "_show_only" or len(calls) == 2:
            raise RuntimeError("simulated")
        return real(*args)

    monkeypatch.setattr(operators, fail_in, fails)
    candidate_settings.candidates = 3
    expect_error(addon, r"Could not create the mesh in Blender \(RuntimeError: simulated\)")
    assert calls, "the build got as far as the failure"


# -- failures: one sentence, scene unchanged --------------------------------------------------------------


def expect_error(addon, match: str) -> None:
    state = scene_state()
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.recon.reconstruct_image()
    assert scene_state() == state
    assert addon.package.operators.running() is None


def test_faces_outside_the_vertices_are_refused_not_built(addon, settings, monkeypatch):
    job = addon.package.worker_client.Job
    handle = job._handle

    def out_of_range(self, message):
        handle(self, message)
        if self.result is not None:
            self.result.faces = self.result.faces + len(self.result.verts)

    monkeypatch.setattr(job, "_handle", out_of_range)
    expect_error(addon, r"Could not create the mesh in Blender \(ValueError: faces index vertices \d+ \.\. \d+, "
                        r"but there are 642 vertices\)")


def test_bad_image(addon, settings, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    settings.image_path = str(bad)
    expect_error(addon, re.escape(str(bad)))
    settings.image_path = ""
    expect_error(addon, "Choose an image file in the Reconstruct panel first")


def reconstruct_error(match: str) -> str:
    """The one sentence of a failed run (``match`` a pattern of it), which names no temporary file of the add-on."""
    with pytest.raises(RuntimeError, match=match) as failed:
        bpy.ops.recon.reconstruct_image()
    message = str(failed.value)
    assert worker_client.TEMP_PREFIX not in message and os.environ.get("TMPDIR", "/tmp") not in message, message
    return message


def test_messages_name_the_users_images_not_their_temporary_copies(addon, settings):
    flat = bpy.data.images.new("flat", 128, 128)  # generated: one colour, handed over as a temporary copy
    settings.source, settings.image = 'IMAGE', flat
    reconstruct_error(r"^Error: The Blender image flat is one uniform colour, so there is no object")
    settings.source, settings.image = 'FILE', None
    small = bpy.data.images.new("small mask", 50, 80)
    settings.object_source, settings.mask_image = 'MASK', small
    reconstruct_error(r"^Error: The mask image small mask is 50x80 pixels but the picture is 128x128")
    painted = bpy.data.images.new("painted", 128, 128)
    block = np.zeros((128, 128, 4), np.float32)
    block[20:100, 30:90] = 1.0
    block[..., 3] = 1.0
    painted.pixels.foreach_set(block.ravel())
    settings.mask_image = painted
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'} and driver.finish() == {'FINISHED'}
    assert ({'WARNING'}, "Note: the object is the mask image painted (its grey levels).") in driver.reports
    assert not any(worker_client.TEMP_PREFIX in message for _, message in driver.reports), driver.reports
    [obj] = [o for o in bpy.data.objects if o.name not in state[0]]
    mask = obj["recon_mask"]
    bpy.data.objects.remove(obj)
    for image in (flat, small, painted, mask):
        bpy.data.images.remove(image)


def test_relative_paths_need_a_saved_blend_file_and_one_file_is_one_picture(addon, settings, monkeypatch):
    for owner, name in ((settings, "image_path"), (addon.prefs, "python_path"), (addon.prefs, "model_path")):
        assert owner.bl_rna.properties[name].is_path_supports_blend_relative, name
    assert not bpy.data.filepath, "an unsaved .blend file: // has no folder"
    settings.image_path = "//shape.png"
    expect_error(addon, "^" + re.escape("Error: The image file //shape.png is relative to the .blend file, which is "
                                        "not saved yet; save the .blend file first, or give an absolute path."))
    settings.image_path = str(addon.image)
    addon.prefs.python_path = "//bin/python"
    expect_error(addon, re.escape("The Python interpreter //bin/python is relative to the .blend file"))
    addon.prefs.python_path, addon.prefs.model_path = PYTHON, "//tiny"
    expect_error(addon, re.escape("The model file //tiny is relative to the .blend file"))
    addon.prefs.model_path = addon.tiny_model
    # the same file by a relative path, then by its absolute path: one picture, so one mask image
    monkeypatch.chdir(addon.image.parent)
    settings.image_path = addon.image.name
    first = reconstruct()
    assert first["recon_mask"]["recon_picture"] == str(addon.image)
    images = scene_state()[2]
    settings.image_path = str(addon.image)
    second = reconstruct()
    assert scene_state()[2] == images and first["recon_mask"] == second["recon_mask"]
    mask = second["recon_mask"]
    for obj in (first, second):
        bpy.data.objects.remove(obj)
    bpy.data.images.remove(mask)


def test_a_wrong_model_names_the_preferences_setting_and_a_pasted_path_is_stripped(addon, settings, tmp_path):
    """The add-on preferences' Model is checked before a worker starts, in the add-on's words (not recon-mesh's
    "--model"); the panel's image path and the preferences' paths lose the spaces a paste brought along."""
    (tmp_path / "finder.json").write_text(json.dumps({"finder": {}}))
    (tmp_path / "untrained.json").write_text(json.dumps({"model": {}}))  # weights expected, none there
    fix = ("choose a model saved by training (NAME.safetensors with NAME.json beside it), or clear Model for the model "
           "shipped with recon_core.")
    where = "Error: The Model in the add-on preferences, {},"
    for model, wrong in (
            (tmp_path, "is a folder; choose the model's NAME.safetensors file in it (NAME.json beside it), or clear "
                       "Model for the model shipped with recon_core."),
            (tmp_path / "nowhere.safetensors", f"does not exist; {fix}"),
            (tmp_path / "finder", f"is the object finder (its finder.json has no \"model\" section); {fix}"),
            (tmp_path / "untrained.json", f"has no untrained.safetensors beside its untrained.json; restore the file "
                                          f"or {fix}")):
        addon.prefs.model_path = str(model)
        state = scene_state()
        with pytest.raises(RuntimeError) as failed:
            bpy.ops.recon.reconstruct_image()
        assert str(failed.value) == f"{where.format(model)} {wrong}\n" and scene_state() == state
        assert "--model" not in str(failed.value)
    addon.prefs.model_path = f" {addon.tiny_model} "
    addon.prefs.python_path = f"{PYTHON}\n"
    settings.image_path = f"  {addon.image}  "
    obj = reconstruct()
    assert obj["recon_mask"]["recon_picture"] == str(addon.image)
    bpy.data.images.remove(obj["recon_mask"])
    bpy.data.objects.remove(obj)


def test_modal_operator_returns_control_while_the_worker_runs(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "2.0")
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    start = time.perf_counter()
    assert driver.invoke() == {'RUNNING_MODAL'}
    assert time.perf_counter() - start < 1.0, "invoke starts the request and returns"
    assert driver.handlers == [driver.op] and isinstance(driver.op._timer, bpy.types.Timer)
    assert not bpy.ops.recon.reconstruct_image.poll(), "one reconstruction at a time"
    ticks, slowest = 0, 0.0
    while True:
        time.sleep(0.05)  # the timer's period, roughly
        tick_start = time.perf_counter()
        status = driver.tick()
        slowest = max(slowest, time.perf_counter() - tick_start) if status == {'PASS_THROUGH'} else slowest
        if status != {'PASS_THROUGH'}:
            break
        ticks += 1
        assert scene_state() == state, "nothing appears before the result"
        assert driver.tick('MOUSEMOVE') == {'PASS_THROUGH'}, "other events go on to Blender"
    assert status == {'FINISHED'}
    assert ticks >= 15 and slowest < 0.1, (ticks, slowest)
    assert driver.op._timer is None and addon.package.operators.running() is None
    assert any("Reconstructed shape" in message for _, message in driver.reports)
    new = [o for o in bpy.data.objects if o.name not in state[0]]
    assert len(new) == 1
    assert_closed_manifold(new[0].data)
    bpy.data.objects.remove(new[0])


class LiveContext:
    """What Blender passes to ``modal()``: the context of that moment (the scene shown now), with the driver's
    recording window manager."""

    def __init__(self, window_manager):
        self.window_manager = window_manager

    def __getattr__(self, name):
        return getattr(bpy.context, name)


def test_the_result_lands_in_the_scene_clicked_in_or_says_where_when_it_was_deleted(addon, settings):
    """Switching scenes while the worker runs: the object goes to the scene, collection and cursor of the click, in
    that scene's units; when that scene was deleted meanwhile, to the scene shown, at its cursor, with a warning."""
    window, design = bpy.context.window, bpy.context.scene
    parts = bpy.data.collections.new("Parts")
    design.collection.children.link(parts)
    view_layer = bpy.context.view_layer
    active_layer_collection = view_layer.active_layer_collection
    view_layer.active_layer_collection = view_layer.layer_collection.children["Parts"]
    design.cursor.location = (1.0, 2.0, 3.0)
    other = bpy.data.scenes.new("Print layout")
    other.unit_settings.scale_length, other.cursor.location = 0.001, (-5.0, 0.0, 0.0)
    made, before = [], scene_state()[0]
    try:
        driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
        assert driver.invoke() == {'RUNNING_MODAL'}
        window.scene = other  # the user looks at another scene meanwhile
        driver.context = LiveContext(driver.context.window_manager)
        assert driver.finish() == {'FINISHED'}, driver.reports
        [obj] = [o for o in bpy.data.objects if o.name not in before]
        made.append(obj)
        assert obj.users_collection == (parts,) and obj.name not in other.objects
        assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
        assert obj.dimensions.z == pytest.approx(0.050, rel=1e-4), "50 mm in the design scene's metres"
        assert ({'INFO'}, f"{obj.name} is in the scene {design.name}, where Reconstruct was clicked.") in driver.reports
        # clicked in a scene that is deleted before the result comes in
        gone = bpy.data.scenes.new("Gone")
        for name in ("image_path", "detail", "height_mm", "candidates"):  # the panel's settings are the scene's
            setattr(gone.recon_settings, name, getattr(settings, name))
        window.scene = gone
        driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
        assert driver.invoke() == {'RUNNING_MODAL'}, driver.reports
        window.scene = other
        bpy.data.scenes.remove(gone)
        driver.context = LiveContext(driver.context.window_manager)
        assert driver.finish() == {'FINISHED'}
        [obj] = [o for o in other.objects if o.name not in before]
        made.append(obj)
        assert tuple(obj.location) == pytest.approx((-5.0, 0.0, 0.0)) and obj.dimensions.z == pytest.approx(50.0)
        assert ({'WARNING'}, "The scene Gone was deleted while the reconstruction ran; the result is in the scene "
                             "Print layout, at its cursor.") in driver.reports
    finally:
        window.scene = design
        view_layer.active_layer_collection = active_layer_collection
        masks = {o["recon_mask"] for o in made}
        for obj in made:
            bpy.data.objects.remove(obj)
        for image in masks:
            bpy.data.images.remove(image)
        bpy.data.collections.remove(parts)
        bpy.data.scenes.remove(other)


def test_timeout(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    addon.prefs.timeout_s = 1.0
    expect_error(addon, r"The reconstruction took longer than 1 s \(after the model was loaded\) and was stopped")


def test_escape_cancels_and_kills_the_worker(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    client, mask_dir = driver.op._run.job.client, driver.op._run.mask_dir
    assert os.path.isdir(mask_dir)
    assert driver.tick() == {'PASS_THROUGH'}
    # the release of an Esc whose press closed a menu or cancelled a move (G) goes on to Blender: the run goes on
    assert driver.tick('ESC', 'RELEASE') == {'PASS_THROUGH'} and driver.tick() == {'PASS_THROUGH'}
    assert client.process.poll() is None and addon.package.operators.running() is driver.op._run
    assert driver.tick('ESC', 'PRESS') == {'CANCELLED'}
    assert client.process.poll() is not None, "the worker is killed"
    assert not os.path.exists(mask_dir), "the mask's temporary folder is removed"
    assert scene_state() == state and driver.op._timer is None
    assert ({'INFO'}, "Reconstruction cancelled; the scene is unchanged.") in driver.reports


def test_disabling_the_add_on_mid_run_ends_the_timer_the_progress_and_the_status_text(addon, settings, monkeypatch):
    """Add-on disable and Reload Scripts call ``cancel_running``; Blender then frees the modal operator without its
    ``cancel``, so ``cancel_running`` itself removes the timer, ends the progress and clears the status text."""
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    operators = addon.package.operators
    driver = ModalDriver(operators.RECON_OT_reconstruct)
    calls = []
    wm = driver.context.window_manager
    remove_timer, progress_end = wm.event_timer_remove, wm.progress_end
    wm.event_timer_remove = lambda timer: calls.append(("event_timer_remove", timer)) or remove_timer(timer)
    wm.progress_end = lambda: calls.append(("progress_end",)) or progress_end()
    driver.context.workspace = SimpleNamespace(status_text_set=lambda text: calls.append(("status_text_set", text)))
    assert driver.invoke() == {'RUNNING_MODAL'}
    timer, client, mask_dir = driver.op._timer, driver.op._run.job.client, driver.op._run.mask_dir
    assert calls[-1][0] == "status_text_set" and calls[-1][1].startswith("Reconstructing shape")
    calls.clear()
    operators.cancel_running()
    assert calls == [("event_timer_remove", timer), ("progress_end",), ("status_text_set", None)]
    assert operators.running() is None and bpy.ops.recon.reconstruct_image.poll()
    assert client.process.poll() is not None and not os.path.exists(mask_dir), "the worker and the temporary files"
    # an operator that Blender did not free ends on its next tick, and ends nothing twice
    assert driver.tick() == {'CANCELLED'} and calls == [("event_timer_remove", timer), ("progress_end",),
                                                        ("status_text_set", None)]


def test_repeat_last_in_a_window_starts_the_modal_run_instead_of_waiting(addon, settings, monkeypatch):
    """Repeat Last (Shift+R) and Repeat History call execute(); in a window, waiting there for the worker would freeze
    Blender, so it changes nothing itself and a one-shot timer starts the modal run, as a click does."""
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    operators = addon.package.operators
    timers = []
    monkeypatch.setattr(bpy.app.timers, "register", lambda fn, first_interval=None: timers.append((fn, first_interval)))
    state = scene_state()
    driver = ModalDriver(operators.RECON_OT_reconstruct)
    driver.context.area, driver.context.region = bpy.context.area, bpy.context.region  # None in background mode
    for flags in ({"is_repeat": False, "is_repeat_last": True}, {"is_repeat": True, "is_repeat_last": False}):
        driver.op.options = SimpleNamespace(**flags)
        start = time.perf_counter()
        assert driver.op.execute(driver.context) == {'CANCELLED'}
        assert time.perf_counter() - start < 1.0 and operators.running() is None and scene_state() == state
    assert [interval for _, interval in timers] == [0.0, 0.0]
    # the timer, in a window that is gone by then: nothing starts
    gone = SimpleNamespace(**vars(driver.context))
    gone.window = bpy.data.window_managers[0]  # not a window
    driver.op.options = SimpleNamespace(is_repeat=False, is_repeat_last=True)
    driver.op.execute(gone)
    assert timers[-1][0]() is None and operators.running() is None
    # the timer in the window still there: Reconstruct from Image runs there with 'INVOKE_DEFAULT' (in a window
    # with events its modal run; headless, Blender has no event to invoke with and executes it, so it is waited for)
    monkeypatch.setenv(DELAY_ENV_NAME, "0")
    assert timers[0][0]() is None and operators.running() is None
    new = [o for o in bpy.data.objects if o.name not in state[0]]
    assert len(new) == 1 and new[0].type == 'MESH'
    mesh = new[0].data
    bpy.data.images.remove(new[0]["recon_mask"])
    bpy.data.objects.remove(new[0])
    bpy.data.meshes.remove(mesh)
    # a repeat that cannot start (no image chosen): its sentence, which Blender raises at the timer instead of
    # reporting it, goes to the status bar
    shown = []
    monkeypatch.setattr(operators, "_show_in_status_bar", lambda window, text: shown.append((window, text)))
    settings.source, settings.image = 'IMAGE', None
    driver.op.execute(driver.context)
    assert timers[-1][0]() is None and operators.running() is None and scene_state() == state
    assert shown == [(bpy.context.window, "Reconstruct from Image: Choose an image in the Reconstruct panel first.")]
    # a run going by the time the timer fires (its poll fails): nothing starts and nothing is said
    running = object()
    monkeypatch.setattr(operators, "_RUNNING", running)
    driver.op.execute(driver.context)
    assert timers[-1][0]() is None and operators.running() is running and len(shown) == 1


def test_an_operator_error_is_its_sentence_and_an_exception_its_last_line(addon):
    operator_error = addon.package.operators._operator_error
    assert operator_error(RuntimeError("Error: Choose an image in the Reconstruct panel first.\n")) == (
        "Choose an image in the Reconstruct panel first")
    traceback = RuntimeError("Error: Python: Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                             "OSError: [Errno 28] No space left on device\nLocation: /bpy/ops.py:107\n")
    assert operator_error(traceback) == "failed unexpectedly (OSError: [Errno 28] No space left on device)"


def test_a_sentence_in_the_status_bar_is_cleared_after_a_while_unless_a_run_shows_its_progress(addon, monkeypatch):
    """Shown in the window's workspace, cleared by a timer after STATUS_SHOWN_S (not while a run shows its progress
    there); a second sentence replaces the first's timer, so it is shown its own full time."""
    operators = addon.package.operators
    texts = []
    monkeypatch.setattr(operators, "_set_status", lambda window, text: texts.append((window, text)))
    window = bpy.context.window
    operators._show_in_status_bar(window, "Reconstruct from Image: why")
    first = operators._STATUS_CLEAR
    assert texts == [(window, "Reconstruct from Image: why")] and bpy.app.timers.is_registered(first)
    operators._show_in_status_bar(window, "Reconstruct from Image: why again")
    second = operators._STATUS_CLEAR
    assert not bpy.app.timers.is_registered(first) and bpy.app.timers.is_registered(second)
    bpy.app.timers.unregister(second)  # fired by hand below
    monkeypatch.setattr(operators, "_RUNNING", object())  # a run started meanwhile: its progress stays
    assert second() is None and len(texts) == 2 and operators._STATUS_CLEAR is None
    monkeypatch.setattr(operators, "_RUNNING", None)
    assert second() is None and texts[-1] == (window, None)


def test_worker_killed_mid_run(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    client = driver.op._run.job.client
    deadline = time.perf_counter() + 60
    while client.hello is None and time.perf_counter() < deadline:  # the worker is up and working
        assert driver.tick() == {'PASS_THROUGH'}
        time.sleep(0.05)
    os.kill(client.process.pid, signal.SIGKILL)
    status = driver.finish()
    assert status == {'CANCELLED'}
    [(kind, message)] = driver.reports
    assert kind == {'ERROR'} and "stopped unexpectedly (killed by SIGKILL)" in message
    assert scene_state() == state


def test_missing_interpreter(addon, settings):
    addon.prefs.python_path = "/nonexistent/bin/python"
    expect_error(addon, "The Python interpreter /nonexistent/bin/python does not exist")
    addon.prefs.python_path = ""
    expect_error(addon, "No Python interpreter is set")


def test_recon_core_missing_in_interpreter(addon, settings, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    addon.prefs.python_path = python
    said = f"recon_core is not installed in {python}; install it with {python} -m pip install -e {build_addon.REPO}."
    expect_error(addon, re.escape(said))
    # Export 3MF names the same folder (it said "the seed-recon source folder")
    bpy.ops.mesh.primitive_cube_add(size=1.0)
    cube = bpy.context.active_object
    with pytest.raises(RuntimeError, match=re.escape(said)):
        bpy.ops.recon.export_3mf(filepath=str(tmp_path / "cube.3mf"))
    assert not (tmp_path / "cube.3mf").exists()
    bpy.data.objects.remove(cube)


def test_fill_hollow_pockets_stand_upright_and_the_height_reach_the_worker_as_set(addon, settings, monkeypatch):
    """The panel's Fill Hollow Pockets is the request's solid, its Stand Upright the request's upright; a height
    between 0 and the worker's least is refused in one sentence before any work, the scene unchanged."""
    client_class = addon.package.worker_client.WorkerClient
    real, sent = client_class.submit, []

    def recording(self, image, **kwargs):
        sent.append(kwargs)
        return real(self, image, **kwargs)

    monkeypatch.setattr(client_class, "submit", recording)
    for solid, upright in ((False, True), (True, False)):
        settings.solid, settings.upright = solid, upright
        obj = reconstruct()
        bpy.data.images.remove(obj["recon_mask"])
        bpy.data.objects.remove(obj)
    assert [(k["solid"], k["upright"]) for k in sent] == [(False, True), (True, False)]
    settings.solid, settings.upright = False, True
    settings["height_mm"] = 0.05  # as a .blend saved before Height (mm) took the smallest height holds it
    state = scene_state()
    with pytest.raises(RuntimeError, match=r"Height \(mm\) must be 0 \(the model's size\) or at least 0.1 mm, got 0.05"):
        bpy.ops.recon.reconstruct_image()
    assert scene_state() == state and len(sent) == 2
    # refused before any temporary copy is made (a packed image's copy was left behind before 2026-12-06)
    image = bpy.data.images.load(str(addon.image))
    image.pack()
    settings.source, settings.image = 'IMAGE', image
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    with pytest.raises(RuntimeError, match=r"Height \(mm\) must be 0"):
        bpy.ops.recon.reconstruct_image()
    assert not temp_leftovers(temp_before)
    settings.image = None
    bpy.data.images.remove(image)


def saved_image_path(blend: Path) -> str:
    """The panel's Image path as saved in ``blend``, read in a child Blender without the add-on (Blender 5.0 keeps an
    add-on's properties among the system properties)."""
    script = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
              "print(repr(bpy.context.scene.bl_system_properties_get()['recon_settings']['image_path']))")
    done = subprocess.run([sys.executable, "-c", script, str(blend)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return eval(done.stdout.splitlines()[-1])


def test_a_blend_relative_image_path_follows_save_as_to_another_folder(addon, settings, tmp_path):
    """Save As into another folder remaps Blender's own relative paths, and now the panel's: the saved file and the
    session point at the same picture; a Save Copy writes the copy's path and leaves the session's as it was.
    (Saves the session's .blend: after the tests that need it unsaved.)"""
    project, elsewhere, copies = tmp_path / "project", tmp_path / "elsewhere", tmp_path / "copies"
    for folder in (project / "photos", elsewhere, copies):
        folder.mkdir(parents=True)
    shutil.copy(addon.image, project / "photos" / "chair.png")
    assert bpy.ops.wm.save_as_mainfile(filepath=str(project / "design.blend")) == {'FINISHED'}
    settings.image_path = "//photos/chair.png"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(project / "same folder.blend")) == {'FINISHED'}
    assert settings.image_path == "//photos/chair.png", "the same folder: left as it was"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(elsewhere / "design_v2.blend")) == {'FINISHED'}
    settings = bpy.context.scene.recon_settings
    assert settings.image_path == "//../project/photos/chair.png"
    assert saved_image_path(elsewhere / "design_v2.blend") == "//../project/photos/chair.png"
    assert os.path.normpath(bpy.path.abspath(settings.image_path)) == str(project / "photos" / "chair.png")
    assert bpy.ops.wm.save_as_mainfile(filepath=str(copies / "copy.blend"), copy=True) == {'FINISHED'}
    assert saved_image_path(copies / "copy.blend") == "//../project/photos/chair.png"
    with pytest.raises(RuntimeError, match="Cannot open file"):  # a failed Save As: the path as it was
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "no folder" / "design.blend"))
    assert bpy.context.scene.recon_settings.image_path == "//../project/photos/chair.png"
    (copies / "sub").mkdir()
    assert bpy.ops.wm.save_as_mainfile(filepath=str(copies / "sub" / "copy.blend"), copy=True) == {'FINISHED'}
    assert saved_image_path(copies / "sub" / "copy.blend") == "//../../project/photos/chair.png"
    assert bpy.context.scene.recon_settings.image_path == "//../project/photos/chair.png", "the session's is kept"
    obj = reconstruct()  # the picture is found
    bpy.data.images.remove(obj["recon_mask"])
    bpy.data.objects.remove(obj)


def test_an_active_collection_linked_from_another_file_gives_way_to_the_scenes(addon, settings, tmp_path):
    """The active collection linked from a library, or a library override of it, cannot take objects: the result goes
    to the scene's own collection with a warning (the run ended in "Could not create the mesh in Blender (RuntimeError
    ...)")."""
    props = bpy.data.collections.new("Props")
    library_file = tmp_path / "props.blend"
    bpy.data.libraries.write(str(library_file), {props}, fake_user=True)
    bpy.data.collections.remove(props)
    with bpy.data.libraries.load(str(library_file), link=True) as (_, linked):
        linked.collections = ["Props"]
    [props] = linked.collections
    scene, view_layer = bpy.context.scene, bpy.context.view_layer
    scene.collection.children.link(props)
    active = view_layer.active_layer_collection
    view_layer.active_layer_collection = view_layer.layer_collection.children["Props"]
    before = scene_state()[0]
    try:
        assert props.library is not None
        driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
        assert driver.invoke() == {'RUNNING_MODAL'} and driver.finish() == {'FINISHED'}, driver.reports
        [obj] = [o for o in bpy.data.objects if o.name not in before]
        assert obj.users_collection == (scene.collection,)
        assert ({'WARNING'}, "The active collection Props is linked or overridden from another file and cannot take "
                             "objects; the result is in the scene's own collection.") in driver.reports
        mask = obj["recon_mask"]
        bpy.data.objects.remove(obj)
        bpy.data.images.remove(mask)
        override = props.override_hierarchy_create(scene, view_layer)  # editable in name, yet refuses objects
        view_layer.active_layer_collection = view_layer.layer_collection.children[override.name]
        assert override.library is None and override.override_library is not None
        before = scene_state()[0]
        driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
        assert driver.invoke() == {'RUNNING_MODAL'} and driver.finish() == {'FINISHED'}, driver.reports
        [obj] = [o for o in bpy.data.objects if o.name not in before]
        assert obj.users_collection == (scene.collection,)
        mask = obj["recon_mask"]
        bpy.data.objects.remove(obj)
        bpy.data.images.remove(mask)
        scene.collection.children.unlink(override)
        bpy.data.collections.remove(override)
    finally:
        view_layer.active_layer_collection = active
        scene.collection.children.unlink(props)
        bpy.data.libraries.remove(props.library)


def test_pasted_paths_are_read_as_the_file_system_names_them(addon):
    """Quotes around a path (a file manager's "Copy as path"), a file:// URL and ~ are the file they name (they were
    glued onto Blender's working folder)."""
    pasted = addon.package.operators._pasted
    home = os.path.expanduser("~")
    assert pasted('  "/tmp/my pictures/chair.png" ') == "/tmp/my pictures/chair.png"
    assert pasted("'/tmp/chair.png'") == "/tmp/chair.png"
    assert pasted("file:///tmp/my%20pictures/chair%C3%A9.png") == "/tmp/my pictures/chairé.png"
    assert pasted("~/chair.png") == os.path.join(home, "chair.png")
    assert pasted("file:/tmp/chair.png") == "/tmp/chair.png" and pasted("file://localhost/tmp/a.png") == "/tmp/a.png"
    assert pasted("file://server/share/a.png") == "file://server/share/a.png"  # another host's: left as typed
    assert pasted("//chair.png") == "//chair.png" and pasted('"') == '"'


def test_a_python_setting_given_by_name_is_found_on_the_path(addon, monkeypatch):
    """``python3`` as the Python setting is the program the PATH finds (it was taken as a file in Blender's working
    folder); a name the PATH does not hold is said to be so."""
    interpreter = addon.package.operators._interpreter
    monkeypatch.setattr(addon.package.operators.shutil, "which", lambda name: PYTHON if name == "python3" else None)
    assert interpreter("python3") == os.path.abspath(PYTHON)
    with pytest.raises(addon.package.operators.InputError, match="no-such-python is not a program on the PATH"):
        interpreter("no-such-python")


def test_a_full_temporary_folder_is_one_sentence(addon, settings, monkeypatch):
    """No room for the run's temporary folder: one sentence naming the folder and the mend, the scene unchanged (it
    was an OSError's traceback)."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(addon.package.operators.tempfile, "mkdtemp", full)
    expect_error(addon, r"Cannot write a temporary file in .* \(No space left on device\); free some disk space")
    image = bpy.data.images.new("generated", 64, 64)  # handed over as a temporary copy: no room for that either
    monkeypatch.setattr(addon.package.operators.tempfile, "mkstemp", full)
    settings.source, settings.image = 'IMAGE', image
    try:
        expect_error(addon, r"^Error: Cannot write a temporary file in .* \(No space left on device\)")
    finally:
        settings.source, settings.image = 'FILE', None
        bpy.data.images.remove(image)


@pytest.mark.parametrize("file_format", ['OPEN_EXR', 'PNG'])
def test_a_float_image_larger_than_the_worker_reads_is_refused_before_its_copy(addon, settings, monkeypatch,
                                                                               file_format):
    """A float image (EXR, HDR) larger than the worker reads is refused before its PNG copy, which froze Blender for
    43 s on a 10,000-pixel one; so is a generated one that Blender would save as a PNG (its copy froze Blender for
    16 s on a 9000x9000 one before the worker refused it); the limit is recon_core's."""
    from recon_core.io.image import MAX_PIXELS

    operators = addon.package.operators
    assert addon.package.worker_client.MAX_PIXELS == MAX_PIXELS
    monkeypatch.setattr(addon.package.worker_client, "MAX_PIXELS", 100)

    def no_copy(*args, **kwargs):
        raise AssertionError("copied before the size was checked")

    monkeypatch.setattr(operators, "_temp_copy", no_copy)
    image = bpy.data.images.new("hdr", 16, 16, float_buffer=True)
    image.file_format = file_format  # OpenEXR: the worker cannot read it, copied as a PNG; PNG: Blender's own save
    settings.source, settings.image = 'IMAGE', image
    try:
        expect_error(addon, r"The image hdr is 16x16 pixels, more than the 0.0001 million pixels the reconstruction "
                            r"reads \(e.g. 10x10\); scale it down")
    finally:
        settings.source, settings.image = 'FILE', None
        bpy.data.images.remove(image)


def test_the_result_says_how_tall_the_shape_is_and_a_height_of_0_says_to_set_it(addon, settings):
    """The status message gives the shape's height in millimetres of the scene's unit, and its faces; with Height (mm)
    0 the model's own size is kept, which in a millimetre scene is under a millimetre: a note says so and asks for the
    real one."""
    def run() -> tuple[bpy.types.Object, list[str]]:
        state = scene_state()
        driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
        assert driver.invoke() == {'RUNNING_MODAL'}
        assert driver.finish() == {'FINISHED'}
        [obj] = [o for o in bpy.data.objects if o.name not in state[0]]
        return obj, [message for _, message in driver.reports]

    obj, messages = run()
    # faces, as the Detail menu counts them (it said vertices)
    assert any(m.startswith(f"Reconstructed {obj.name} (50.0 mm tall, {len(obj.data.polygons):,} faces, ")
               for m in messages), messages
    assert not any("Height (mm) is 0" in m for m in messages)
    made = [obj]
    settings.height_mm = 0.0
    bpy.context.scene.unit_settings.scale_length = 0.001  # a scene set up in millimetres, as for printing
    obj, messages = run()
    made.append(obj)
    tall = obj.dimensions.z  # one unit a millimetre
    assert tall < 2.0
    assert any(f"({tall:.1f} mm tall, " in m for m in messages), messages
    assert (f"Note: Height (mm) is 0, so the model chose the size: {tall:.1f} mm tall in the scene "
            f"\"{bpy.context.scene.name}\" (1 unit = 1 mm). Set Height (mm) to the object's real height before you "
            "print or export it.") in messages
    assert not any("Unit System None" in m for m in messages)
    # Unit System None: Blender shows plain numbers, and its greyed-out Unit Scale still counts (1 unit = 1,000 mm
    # at 1.0: a 90 mm shape 0.09 units tall, which a designer took for 1 unit = 1 mm)
    settings.height_mm = 90.0
    bpy.context.scene.unit_settings.system, bpy.context.scene.unit_settings.scale_length = 'NONE', 1.0
    try:
        obj, messages = run()
    finally:
        bpy.context.scene.unit_settings.system = 'METRIC'
    made.append(obj)
    assert obj.dimensions.z == pytest.approx(0.09, rel=1e-4)
    assert (f"Note: the scene \"{bpy.context.scene.name}\" has Unit System None: its Unit Scale still counts here and "
            "in the exports (1 unit = 1,000 mm); set Unit System to Metric to see the sizes in millimetres.") in messages
    for obj in made:
        image = obj.get("recon_mask")
        bpy.data.objects.remove(obj)
        if image is not None and image.users == 0:
            bpy.data.images.remove(image)


def test_the_result_message_comes_last_and_the_notes_stay_on_the_object(addon, settings):
    """Blender's status bar shows the last message alone: the notes came after the result's message ("Reconstructed
    chair (50.0 mm tall, ...)"), which the designer then never saw. The notes now come first, the result's message
    last with how many notes there are, and the object keeps them, in full, for the sidebar's Notes."""
    state = scene_state()
    settings.height_mm = 0.0  # a note of the add-on's own; the tiny model's notes (untrained, ...) too
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    assert driver.finish() == {'FINISHED'}
    [obj] = [o for o in bpy.data.objects if o.name not in state[0]]
    messages = [message for _, message in driver.reports]
    said = [m.removeprefix("Note: ") for m in messages if m.startswith("Note: ")]
    assert said[0].startswith("Height (mm) is 0") and len(said) > 1, messages  # the tiny model is noted untrained
    notes = addon.package.operators.notes_of(obj)
    # every note said is kept, the Height reminder first: it outlives the message (it was said, then lost)
    assert notes == [f"{n[:1].upper()}{n[1:]}" for n in said], (notes, said)
    count = len(notes)
    assert messages[-1].startswith(f"Reconstructed {obj.name} (") and messages[-1].endswith(
        f" {count} note{'s' if count != 1 else ''} on it: see Notes in the sidebar."), messages
    bpy.context.view_layer.objects.active = obj
    texts = labels(draw_panel(bpy.types.RECON_PT_notes))
    assert " ".join(texts) == " ".join(notes) and all(len(t) <= 40 for t in texts), texts  # wrapped, nothing lost
    bpy.context.view_layer.objects.active = None
    assert not bpy.types.RECON_PT_notes.poll(bpy.context)
    image = obj.get("recon_mask")
    bpy.data.objects.remove(obj)
    if image is not None and image.users == 0:
        bpy.data.images.remove(image)


def test_the_check_panel_gives_the_size_along_the_worlds_axes_as_the_exports_do(addon, settings, tmp_path, capfd):
    """Turned a quarter about X, the chair's panel said "102.2 x 93.0 x 120.0 mm" (its own axes) while Export STL said
    "102.2 x 120.0 x 93.0 mm (width x depth x height)": the panel now gives the size as the export writes it. A small
    part's volume is in mm³ (a 10 mm part said "0.03 cm³")."""
    operators = addon.package.operators
    obj = reconstruct()
    bpy.context.view_layer.objects.active = obj
    obj.scale = (1.0, 1.0, 2.0)  # the tiny model's shape is about a cube: twice as tall, then lying
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
    bpy.context.view_layer.update()
    capfd.readouterr()
    target = tmp_path / "turned.stl"
    with bpy.context.temp_override(selected_objects=[obj], active_object=obj):
        assert bpy.ops.recon.export_stl(filepath=str(target)) == {'FINISHED'}
    said = capfd.readouterr().out
    exported = re.search(r"([0-9.]+) x ([0-9.]+) x ([0-9.]+) mm \(width x depth x height\)", said)
    assert exported, said
    texts = labels(draw_panel(bpy.types.RECON_PT_check))
    assert texts[texts.index("Size, W x D x H (mm):") + 1] == ' x '.join(exported.groups()), (texts, said)
    assert obj.dimensions.y * 1000 != pytest.approx(float(exported.group(2)), abs=0.5)  # the object's own axes differ
    obj.modifiers.new("two", 'ARRAY').count = 2  # a modifier's copy beside it: twice as wide, as the export would be
    bpy.context.view_layer.update()
    wide = operators.size_mm(bpy.context, obj)
    assert wide[0] == pytest.approx(2 * float(exported.group(1)), rel=1e-3), wide
    obj.modifiers.clear()
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode='EDIT')  # an edit not yet back in the mesh's data: the size as shown follows it
    edit = bmesh.from_edit_mesh(obj.data)
    for v in edit.verts:
        v.co.x *= 3.0
    bmesh.update_edit_mesh(obj.data)
    bpy.context.view_layer.update()
    stretched = operators.size_mm(bpy.context, obj)
    bpy.ops.object.mode_set(mode='OBJECT')
    assert stretched[0] == pytest.approx(3 * float(exported.group(1)), rel=1e-3), stretched
    assert operators.volume_text(26790.0) == "26.79 cm³" and operators.volume_text(28.4) == "28.4 mm³"
    assert operators.volume_text(999.7) == "1.00 cm³"  # not "1e+03 mm³"
    assert operators.volume_text(11601990.0) == "11,601.99 cm³"  # grouped, as recon-mesh writes its mm³
    assert operators.volume_text(0.001) == "under 0.01 mm³"
    bpy.data.objects.remove(obj)


def test_a_hidden_or_excluded_active_collection_is_said(addon, settings, capfd):
    """The active collection's eye off: the result landed in it, hidden, with a message of success alone; excluded
    from the view layer, the whole run ended in "Could not create the mesh in Blender (RuntimeError: Error: Object
    'chair.002' cannot be selected ...)". Hidden is now said; excluded puts the result in the scene's own collection,
    and says so."""
    scene, view_layer = bpy.context.scene, bpy.context.view_layer
    collection = bpy.data.collections.new("parts")
    scene.collection.children.link(collection)
    layer = next(child for child in view_layer.layer_collection.children if child.collection == collection)
    made = []
    try:
        layer.hide_viewport = True
        view_layer.active_layer_collection = layer  # a hidden collection clicked in the Outliner is the active one
        capfd.readouterr()
        obj = reconstruct()
        made.append(obj)
        said = capfd.readouterr().out
        assert obj.name in collection.objects and not obj.visible_get()
        assert ("The active collection parts is hidden, and the result with it: show the collection, and those it is "
                "in, in the Outliner to see it.") in said, said
        layer.hide_viewport = False
        view_layer.active_layer_collection = layer
        layer.exclude = True  # Blender makes another collection active, but a script may still name this one
        with bpy.context.temp_override(collection=collection):
            obj = reconstruct()
        made.append(obj)
        said = capfd.readouterr().out
        assert obj.name in scene.collection.objects and obj.name not in collection.objects and obj.visible_get()
        assert ("The active collection parts is excluded from the view layer; the result is in the scene's own "
                "collection.") in said, said
    finally:
        for obj in made:
            image = obj.get("recon_mask")
            bpy.data.objects.remove(obj)
            if image is not None and image.users == 0:
                bpy.data.images.remove(image)
        bpy.data.collections.remove(collection)
        view_layer.active_layer_collection = view_layer.layer_collection


def test_a_height_under_the_smallest_becomes_the_smallest(addon, settings):
    """Height (mm) 0.01 showed as "0.0" (one decimal) and Reconstruct then refused "got 0.01": a height between 0 and
    the smallest the worker takes becomes the smallest, as a slider's minimum would; 0 (the model's size) stays."""
    smallest = addon.package.worker_client.MIN_HEIGHT_MM
    for typed, kept in ((0.01, smallest), (0.0, 0.0), (0.25, 0.25), (120.0, 120.0)):
        settings.height_mm = typed
        assert settings.height_mm == pytest.approx(kept), typed
    settings.height_mm = 50.0


def test_every_candidate_keeps_the_runs_own_notes_beside_its_own(addon, candidate_settings):
    """The run's notes that no candidate owns (here: the bank holds 4 models, so 4 candidates, not 5) were said in the
    messages but kept on no object: the Notes of each candidate hold them after its own."""
    collection = reconstruct_candidates(5)
    objects = candidates_in(collection)
    assert len(objects) == 4
    for obj in objects:
        notes = addon.package.operators.notes_of(obj)
        assert "The model found 4 candidate shapes for this picture, not 5." in notes, (obj.name, notes)
    remove_candidates()


# Last: it unregisters the module's add-on, which every test above uses.
def test_unregister_leaves_nothing_behind(addon):
    clients = list(addon.package.worker_client._CLIENTS.values())
    bpy.ops.preferences.addon_disable(module=addon.module)
    assert addon.module not in bpy.context.preferences.addons
    assert not hasattr(bpy.types.Scene, "recon_settings")
    assert not hasattr(bpy.types.Collection, "recon_candidate_objects")
    assert not any(hasattr(bpy.types, name) for name in CLASS_NAMES)
    for idname in ("reconstruct_image", "next_candidate", "keep_candidate", "export_stl", "export_3mf"):
        with pytest.raises((AttributeError, KeyError)):
            getattr(bpy.ops.recon, idname).get_rna_type()
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    assert not [kmi.idname for km in keyconfig.keymaps for kmi in km.keymap_items if kmi.idname.startswith("recon.")]
    assert addon.package._keymap_items == []
    assert not [h for name in ("save_pre", "save_post", "save_post_fail") for h in getattr(bpy.app.handlers, name)
                if h.__module__.startswith(addon.module)], "the save handlers are removed"
    assert all(c.process is None or c.process.poll() is not None for c in clients), "workers are shut down"
