"""Rendering throughput: views per second of ``training/render.py`` (Cycles on the CPU) on 2 cores.

    python -m bench.render_throughput [--shapenet data/shapenet] [--limit 4] [--views 8] [--tiny]

Renders the first ``--limit`` models of a data set (default: ``data/shapenet`` when its
``manifest.json`` is there, else a temporary data set of ico-spheres in the ShapeNet
layout that ``training/build_dataset.py`` writes) into a temporary folder, with one
worker process on ``--threads`` render threads. Reports the script's own views/s
(from its final log line: Blender scene set-up and rendering, without the interpreter
start) and the views/s of the whole process.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import REPO, emit, machine, parser, positive_int

_RATE = re.compile(r"rendered (\d+) views in ([\d.]+) s \(([\d.]+) views/s\)")


def write_sphere_dataset(root: Path, count: int) -> Path:
    """A data set of ``count`` ico-spheres (bounding-box diagonal 1) in ShapeNet layout with a manifest."""
    import trimesh

    records = []
    for i in range(count):
        mesh = trimesh.creation.icosphere(subdivisions=3)
        verts = mesh.vertices * np.array([0.3, 0.2 + 0.05 * i, 0.25])
        verts /= np.linalg.norm(verts.max(0) - verts.min(0))
        model_id = f"bench{i:04d}"
        folder = root / "03001627" / model_id / "models"
        folder.mkdir(parents=True)
        lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
        (folder / "model_normalized.obj").write_text("\n".join(lines) + "\n")
        records.append({"model_id": model_id, "synset": "03001627", "split": "train"})
    (root / "manifest.json").write_text(json.dumps(records))
    return root


def run(args) -> dict:
    limit = args.limit if args.limit is not None else (1 if args.tiny else 4)
    views = args.views if args.views is not None else (2 if args.tiny else 8)
    with tempfile.TemporaryDirectory(prefix="bench_render_") as tmp:
        shapenet = Path(args.shapenet) if args.shapenet else REPO / "data" / "shapenet"
        if args.tiny or not (shapenet / "manifest.json").is_file():
            shapenet = write_sphere_dataset(Path(tmp) / "shapenet", limit)
        cmd = [sys.executable, str(REPO / "training" / "render.py"), "--shapenet", str(shapenet),
               "--out", str(Path(tmp) / "renders"), "--views", str(views), "--limit", str(limit),
               "--workers", "1", "--threads", str(args.threads)]
        if args.tiny:
            cmd += ["--size", "32", "--samples", "1", "--points", "100"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"render.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
        found = _RATE.findall(proc.stderr)
        if not found:
            raise RuntimeError(f"render.py printed no rate line: {proc.stderr[-2000:]}")
        rendered, seconds, _ = found[-1]
        rendered, seconds = int(rendered), float(seconds)
        written = len(list((Path(tmp) / "renders").glob("*/*/[0-9][0-9][0-9].png")))
    return {
        "benchmark": "render_throughput",
        "machine": machine(args.threads),
        "data": "temporary ico-spheres" if args.tiny or "bench_render_" in str(shapenet) else str(shapenet),
        "models": limit,
        "views_per_model": views,
        "render_threads": args.threads,
        "size": 32 if args.tiny else 137,
        "views_rendered": rendered,
        "views_written": written,
        "render_s": seconds,
        "process_s": round(wall, 3),
        "views_per_s": round(rendered / seconds, 3) if seconds > 0 else None,
        "views_per_s_with_startup": round(rendered / wall, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--shapenet", help="data set root with manifest.json (default: data/shapenet if present)")
    p.add_argument("--limit", type=positive_int, help="models to render (default 4; --tiny 1)")
    p.add_argument("--views", type=positive_int, help="views per model (default 8; --tiny 2)")
    args = p.parse_args(argv)
    if args.shapenet is not None and not (Path(args.shapenet) / "manifest.json").is_file():
        p.error(f"--shapenet {args.shapenet} holds no manifest.json: give a data set root (training/build_dataset.py)")
    return emit(run(args))


if __name__ == "__main__":
    main()
