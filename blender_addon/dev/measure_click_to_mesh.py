"""Measure click-to-mesh time of the add-on in headless Blender (the bpy module), cold and warm worker.

    .venv/bin/python blender_addon/dev/measure_click_to_mesh.py [--python PY] [--model PATH] [--detail low|medium|high] [--runs 3]
        [--candidates K]

Builds and installs the extension into a temporary user folder, then runs Reconstruct
from Image on a generated image: the first run starts the worker and loads the model
(cold), the next ones reuse it (warm). Headless, the operator runs its blocking path
(``execute``: same worker, same mesh building); from the UI the modal timer adds at most
one timer period (0.1 s). Not part of the zip.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from recon_core.mesh.detail import DEFAULT_DETAIL, detail_for_vertices, vertices_for_detail  # noqa: E402


def detail_level(text: str) -> str:
    """``--detail``'s value as a level name: low, medium or high, or a vertex count as before (642, 2562, 10242)."""
    try:
        if text.isdigit():
            return detail_for_vertices(int(text))
        vertices_for_detail(text)
        return text
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", help="worker interpreter (default: the one build_addon.py picks)")
    parser.add_argument("--model", default="", help="model file (default: the shipped models/default)")
    parser.add_argument("--detail", type=detail_level, default=DEFAULT_DETAIL,
                        help="low, medium or high (or 642, 2562, 10242 vertices as before; default: medium)")
    parser.add_argument("--height-mm", type=float, default=120.0)
    parser.add_argument("--runs", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--candidates", type=int, default=1,
                        help="the panel's Candidates: shapes per click (default: 1, one object)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="recon-measure-") as tmp:  # the add-on's install and the picture
        return _measure(args, Path(tmp))


def _measure(args, root: Path) -> int:
    os.environ["BLENDER_USER_RESOURCES"] = str(root / "user")
    import bpy

    import build_addon
    from tests.test_worker import make_shape_image

    bpy.context.preferences.use_preferences_save = False
    zip_path = build_addon.build(root / "dist")
    bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default", enable_on_install=True)
    module = "bl_ext.user_default.reconstruct_from_image"
    prefs = bpy.context.preferences.addons[module].preferences
    prefs.model_path = args.model
    if args.python:
        prefs.python_path = args.python
    settings = bpy.context.scene.recon_settings
    settings.image_path = str(make_shape_image(root / "shape.png"))
    settings.detail, settings.height_mm = args.detail.upper(), args.height_mm
    settings.candidates = args.candidates

    # The worker's own time for each request (its result's timings["worker_total"]: reading the picture to the
    # result sent), read as the operator builds the object; the rest of a click is the add-on's.
    operators = sys.modules[module + ".operators"]
    build, worker_s = operators._Reconstruction.build, []

    def timed_build(self, context):
        worker_s.append(float(self.job.result.timings.get("worker_total", float("nan"))))
        return build(self, context)

    operators._Reconstruction.build = timed_build
    times = []
    for _ in range(1 + args.runs):
        start = time.perf_counter()
        assert bpy.ops.recon.reconstruct_image() == {'FINISHED'}
        times.append(time.perf_counter() - start)
        obj = bpy.context.active_object
        print(f"{obj.name}: {len(obj.data.vertices)} vertices in {times[-1]:.2f} s (worker {worker_s[-1]:.2f} s)",
              flush=True)
    operators._Reconstruction.build = build
    print(f"python {prefs.python_path}, model {args.model or 'models/default'}, detail {args.detail}, "
          f"candidates {args.candidates}, {os.cpu_count()} CPUs")
    print(f"cold (worker start + model load + reconstruction): {times[0]:.2f} s")
    print(f"warm (median of {args.runs}): {statistics.median(times[1:]):.2f} s; the worker's own time "
          f"(median): {statistics.median(worker_s[1:]):.2f} s; outside the worker (median of the differences): "
          f"{1000 * statistics.median(t - w for t, w in zip(times[1:], worker_s[1:])):.0f} ms")
    bpy.ops.preferences.addon_disable(module=module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
