"""Solid grids of the data set's models, the targets of the occupancy head.

    python training/build_solids.py [--shapenet data/shapenet] [--renders data/renders] [--workers 2]

For every model of the manifest with a render folder, writes ``solid.npz`` there: the
model's solid on a ``--resolution``³ grid over the cube ``[-GRID_BOUND, GRID_BOUND]³``
of the world frame (:func:`recon_core.mesh.volume.occupancy_grid`: the cells its surface passes
through plus every cell the outside cannot reach, so open shells and single-sided wings
still count), bit-packed (:func:`recon_core.mesh.volume.pack_grid`). Existing files of the same
resolution are kept, so the command resumes. :class:`training.dataset.RenderedViews` cuts
each view's frustum target out of it (:func:`recon_core.mesh.occupancy.voxelize_frustum`).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from multiprocessing import Pool
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from recon_core.io.export import atomic_write_bytes
from recon_core.mesh.volume import GRID_BOUND, occupancy_grid, pack_grid, unpack_grid
from training.interrupt import ignore_ctrl_c, one_sentence_on_ctrl_c
from training.npz import NPZ_ERRORS

__all__ = ["SOLID_FILE", "build_solid", "read_solid", "main"]

log = logging.getLogger("build-solids")

SOLID_FILE = "solid.npz"
"""Name of the solid grid in each model's render folder."""


def build_solid(mesh_path: str | Path, out: str | Path, resolution: int = 64) -> Path:
    """Write the solid grid of one mesh file to ``out`` (atomically)."""
    from training.eval_data import load_world_mesh

    verts, faces = load_world_mesh(mesh_path)
    grid = occupancy_grid(verts, faces, resolution=resolution, bound=GRID_BOUND)
    buf = io.BytesIO()
    np.savez(buf, packed=np.frombuffer(pack_grid(grid), dtype=np.uint8), resolution=resolution, bound=GRID_BOUND)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)


def read_solid(path: str | Path) -> tuple[np.ndarray, float]:
    """``(solid (R, R, R) bool, bound)`` of a file written by :func:`build_solid`.

    Raises:
        FileNotFoundError: no such file (run this script first).
        ValueError: the file is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; build the solids first: python training/build_solids.py")
    try:
        with np.load(path, allow_pickle=False) as data:
            resolution, bound = int(data["resolution"]), float(data["bound"])
            solid = unpack_grid(data["packed"].tobytes(), resolution)
    except NPZ_ERRORS as err:
        raise ValueError(f"{path} is corrupt ({err}); delete it and run python training/build_solids.py") from None
    return solid, bound


def _job(args: tuple[str, str, int]) -> str | None:
    mesh, out, resolution = args
    try:
        build_solid(mesh, out, resolution)
    except Exception as err:  # noqa: BLE001 - one bad model must not stop the others; reported below
        return f"{mesh}: {type(err).__name__}: {err}"
    return None


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/build_solids.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapenet", default="data/shapenet", help="data set root with manifest.json")
    p.add_argument("--renders", default="data/renders", help="renders root (training/render.py)")
    p.add_argument("--resolution", type=int, default=64, help="cells per side (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default: 2)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from training.eval_data import DataError, find_mesh, read_manifest

    shapenet, renders = Path(args.shapenet), Path(args.renders)
    if args.resolution < 2 or args.workers < 1:
        which = (f"--resolution must be at least 2 cells a side, got {args.resolution}" if args.resolution < 2 else
                 f"--workers must be at least 1, got {args.workers}")
        print(f"error: {which}.", file=sys.stderr)
        return 2
    for flag, folder, what in (("--shapenet", shapenet, "the data set's root (training/build_dataset.py writes it)"),
                               ("--renders", renders, "the renders' root (training/render.py writes it)")):
        if not folder.is_dir():
            print(f"error: {flag} {folder} is not a folder; give {what}.", file=sys.stderr)
            return 2
    try:
        records = read_manifest(shapenet)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: the manifest of {shapenet} cannot be read ({err.strerror or err}); rebuild it with "
              "training/build_dataset.py.", file=sys.stderr)
        return 2
    jobs, missing = [], 0
    for rec in records:
        folder = renders / str(rec["synset"]) / str(rec["model_id"])
        if not folder.is_dir():
            continue
        out = folder / SOLID_FILE
        if out.is_file():
            try:
                if read_solid(out)[0].shape[0] == args.resolution:
                    continue
            except ValueError:
                pass
        mesh = find_mesh(shapenet, rec)
        if mesh is None:
            missing += 1
            continue
        jobs.append((str(mesh), str(out), args.resolution))
    if not any((renders / str(rec["synset"]) / str(rec["model_id"])).is_dir() for rec in records):
        print(f"error: {renders} holds the views of none of the {len(records)} models of {shapenet}; give the renders' "
              "root with --renders (training/render.py writes it).", file=sys.stderr)
        return 2
    start = time.perf_counter()
    from tqdm import tqdm

    with Pool(max(1, args.workers), initializer=ignore_ctrl_c) as pool:
        errors = [e for e in tqdm(pool.imap_unordered(_job, jobs), total=len(jobs), desc="solids") if e]
    for e in errors:
        log.error("%s", e)
    print(f"built {len(jobs) - len(errors)} solids in {time.perf_counter() - start:.1f} s; "
          f"{len(errors)} failed, {missing} without a mesh")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
