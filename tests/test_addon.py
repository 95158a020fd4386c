"""The Blender add-on in real headless Blender (the bpy module): build, install, reconstruct, fail, undo, unregister.

Driving the operator headless: bpy-as-a-module has no event loop, and its window has no
event state, so ``INVOKE_DEFAULT`` falls back to ``execute()`` (which runs the same worker
and waits). The modal path is tested by calling the operator class's own ``invoke`` and
``modal`` on a stand-in for the operator instance, with a real window-manager timer;
only ``modal_handler_add`` is recorded instead of performed (:class:`ModalDriver`).

Undo: Blender pushes the undo step of an operator with ``{'UNDO'}`` when it finishes from
the UI, not when a script calls it; the tests push that step themselves
(``ed.undo_push``), as the UI would, then check that one ``ed.undo()`` removes the object.

The tests share one warm worker (the add-on keeps it between clicks) running a tiny,
randomly initialised model; tests that kill the worker or change the interpreter come last.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import bmesh  # noqa: E402

import build_addon  # noqa: E402
from recon_core.worker import DELAY_ENV as DELAY_ENV_NAME  # noqa: E402
from tests.test_worker import PYTHON, make_shape_image, write_tiny_model  # noqa: E402

pytestmark = pytest.mark.blender

EXTENSION = "reconstruct_from_image"
CLASS_NAMES = ("RECON_PT_reconstruct", "RECON_PT_check", "ReconSettings", "ReconPreferences")


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
                              image=make_shape_image(root / "shape.png"))
        if module in preferences.addons:
            bpy.ops.preferences.addon_disable(module=module)
        index = next(i for i, r in enumerate(preferences.extensions.repos) if r.custom_directory == repo_dir)
        bpy.ops.preferences.extension_repo_remove(index=index, remove_files=True)


@pytest.fixture
def settings(addon):
    s = bpy.context.scene.recon_settings
    s.source, s.image_path, s.image, s.category, s.detail, s.height_mm = 'FILE', str(addon.image), None, 'AUTO', '642', 50.0
    bpy.context.scene.unit_settings.scale_length = 1.0
    addon.prefs.python_path, addon.prefs.timeout_s = PYTHON, 300.0
    return s


def scene_state() -> tuple[frozenset, frozenset]:
    return frozenset(o.name for o in bpy.data.objects), frozenset(m.name for m in bpy.data.meshes)


def reconstruct() -> bpy.types.Object:
    """Run the operator as a script would; returns the one object it added."""
    before = scene_state()[0]
    assert bpy.ops.recon.reconstruct_image() == {'FINISHED'}
    new = [o for o in bpy.data.objects if o.name not in before]
    assert len(new) == 1
    return new[0]


def assert_closed_manifold(obj) -> None:
    bm = bmesh.new()
    try:
        bm.from_mesh(obj.data)
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

    def tick(self, event_type='TIMER'):
        return self.op.modal(self.context, SimpleNamespace(type=event_type, value='NOTHING'))


# -- the happy path ------------------------------------------------------------------------------------


def test_panel_and_operators_are_registered(addon):
    assert bpy.types.RECON_PT_reconstruct.bl_category == "Reconstruct"
    assert bpy.types.RECON_PT_reconstruct.bl_space_type == 'VIEW_3D'
    assert bpy.ops.recon.reconstruct_image.poll() and hasattr(bpy.types.Scene, "recon_settings")
    for source in Path(addon.package.__file__).parent.glob("*.py"):  # torch never loads inside Blender
        assert not re.search(r"^\s*(import|from) (torch|recon_core)\b", source.read_text(), re.MULTILINE), source


def test_reconstruct_adds_one_printable_object_at_the_cursor_and_one_undo_removes_it(addon, settings):
    bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
    bpy.ops.ed.undo_push(message="before")
    objects, meshes = scene_state()
    obj = reconstruct()
    assert obj.name == "shape" and obj.type == 'MESH'
    assert obj.select_get() and bpy.context.view_layer.objects.active == obj
    assert [o.name for o in bpy.context.selected_objects] == ["shape"]
    assert tuple(obj.location) == pytest.approx((1.0, 2.0, 3.0))
    assert all(p.use_smooth for p in obj.data.polygons) and len(obj.data.vertices) == 642
    assert_closed_manifold(obj)
    # Default scene: 1 Blender unit = 1 m (unit scale 1), so 50 mm is 0.05 units, resting on the cursor.
    assert obj.dimensions.z == pytest.approx(0.050, rel=1e-4)
    assert min(v.co.z for v in obj.data.vertices) == pytest.approx(0.0, abs=1e-6)
    check = obj["recon_check"]
    assert check["watertight"] and check["manifold"] and check["ok"] and check["volume_mm3"] > 0

    bpy.ops.ed.undo_push(message="Reconstruct from Image")  # what the UI does when the operator finishes
    bpy.ops.ed.undo()
    assert scene_state() == (objects, meshes)


def test_packed_image_is_written_to_a_temporary_file(addon, settings, tmp_path):
    path = make_shape_image(tmp_path / "packed_photo.png")
    image = bpy.data.images.load(str(path))
    image.pack()
    path.unlink()  # only the packed copy remains
    settings.source, settings.image = 'IMAGE', image
    temp_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    obj = reconstruct()
    assert obj.name == "packed_photo"
    assert_closed_manifold(obj)
    leftovers = {n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - temp_before if n.startswith("recon-")}
    assert not leftovers
    bpy.data.objects.remove(obj)
    bpy.data.images.remove(image)


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
    assert corners[:, 2].min() == pytest.approx(obj.location.z, abs=1e-3)
    bpy.data.objects.remove(obj)


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
        for panel in (bpy.types.RECON_PT_reconstruct, bpy.types.RECON_PT_check):
            calls = []
            assert panel.poll(bpy.context) if hasattr(panel, "poll") else True
            panel.draw(SimpleNamespace(layout=RecordingLayout(calls)), bpy.context)
            texts += [kw.get("text", "") for name, _, kw in calls if name == "label"]
            assert calls
    assert "Watertight: yes" in texts and "Volume: 1.00 cm³" in texts and "Size: 1000.0 x 1000.0 x 1000.0 mm" in texts
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(mesh)


# -- failures: one sentence, scene unchanged --------------------------------------------------------------


def expect_error(addon, match: str) -> None:
    state = scene_state()
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.recon.reconstruct_image()
    assert scene_state() == state
    assert addon.package.operators.running() is None


def test_bad_image(addon, settings, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    settings.image_path = str(bad)
    expect_error(addon, re.escape(str(bad)))
    settings.image_path = ""
    expect_error(addon, "Choose an image file in the Reconstruct panel first")


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
    assert_closed_manifold(new[0])
    bpy.data.objects.remove(new[0])


def test_timeout(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    addon.prefs.timeout_s = 1.0
    expect_error(addon, "took longer than 1 s and was stopped")


def test_escape_cancels_and_kills_the_worker(addon, settings, monkeypatch):
    monkeypatch.setenv(DELAY_ENV_NAME, "30")
    state = scene_state()
    driver = ModalDriver(addon.package.operators.RECON_OT_reconstruct)
    assert driver.invoke() == {'RUNNING_MODAL'}
    client = driver.op._run.job.client
    assert driver.tick() == {'PASS_THROUGH'}
    assert driver.tick('ESC') == {'CANCELLED'}
    assert client.process.poll() is not None, "the worker is killed"
    assert scene_state() == state and driver.op._timer is None
    assert ({'INFO'}, "Reconstruction cancelled; the scene is unchanged.") in driver.reports


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
    while (status := driver.tick()) == {'PASS_THROUGH'}:
        time.sleep(0.05)
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
    expect_error(addon, re.escape(f"recon_core is not installed in {python}; install it with {python} -m pip install -e "
                           f"{build_addon.REPO}."))


def test_unregister_leaves_nothing_behind(addon):
    clients = list(addon.package.worker_client._CLIENTS.values())
    bpy.ops.preferences.addon_disable(module=addon.module)
    assert addon.module not in bpy.context.preferences.addons
    assert not hasattr(bpy.types.Scene, "recon_settings")
    assert not any(hasattr(bpy.types, name) for name in CLASS_NAMES)
    for idname in ("reconstruct_image", "export_stl"):
        with pytest.raises((AttributeError, KeyError)):
            getattr(bpy.ops.recon, idname).get_rna_type()
    assert all(c.process is None or c.process.poll() is not None for c in clients), "workers are shut down"
