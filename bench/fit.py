"""Time of the silhouette fit, the largest part of the shipped model's shape-bank stage.

    python -m bench.fit [--model models/default] [--solids 40] [--runs 5] [--tiny]

Each of ``--solids`` training solids of the shape bank (a fixed random choice, with the rotation of one of its
views) is posed to the silhouette of another bank solid by :func:`recon_core.mesh.silhouette.fit_pose` (91
rotations, then 25 stretches, of :data:`recon_core.mesh.silhouette.FIT_POINTS` points), as
:meth:`recon_core.io.inference.Reconstructor._fitted` poses the picture's candidates: one after the other on one
thread (``per_fit_ms``), and all of them on the thread pool the inference shares them out on
(``per_fit_threaded_ms``: the batch's time over its size). Each figure is the median of ``--runs`` passes over
the solids after one warm-up pass. The solids' points (:func:`recon_core.mesh.silhouette.solid_points`) are
made before the clock starts. ``--tiny``: random blobs on a 32³ grid, no model.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench._common import check_model, emit, machine, parser, positive_int


def _bank_cases(model: str | None, count: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``[(points (N, 3), R0 (3, 3), target (G, G) bool), ...]`` from the shipped model's shape bank."""
    from recon_core.io.weights import load_model
    from recon_core.mesh.silhouette import silhouette_grids, solid_points
    from recon_core.mesh.volume import GRID_BOUND

    bank = load_model(model)[0].bank  # the bank alone: no inference set-up
    if bank is None:  # bad input: one sentence, exit code 2 as for the options
        print(f"error: {model or 'the default model'} has no shape bank: nothing to fit; give a model with one, "
              "e.g. models/default", file=sys.stderr)
        raise SystemExit(2)
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        row, other = (int(r) for r in rng.integers(len(bank.view_shape), size=2))
        shape, seen = int(bank.view_shape[row]), int(bank.view_shape[other])
        points = solid_points(bank.grid(shape), GRID_BOUND, seed=shape)
        posed = solid_points(bank.grid(seen), GRID_BOUND, seed=seen) @ bank.view_rotation[other].double().numpy().T
        cases.append((points, bank.view_rotation[row].double().numpy(), silhouette_grids(posed[None])[0]))
    return cases


def _tiny_cases(count: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The same kind of cases from random ellipsoid blobs on a 32³ grid."""
    from recon_core.mesh.camera import rotation_y
    from recon_core.mesh.silhouette import silhouette_grids, solid_points

    rng = np.random.default_rng(seed)
    axis = (np.arange(32) + 0.5) / 16.0 - 1.0
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    cases = []
    for _ in range(count):
        a, b, c = rng.uniform(0.3, 0.9, size=3)
        points = solid_points((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 < 1.0, 0.5, seed=0)
        turn = rotation_y(float(rng.uniform(0, 360)))
        cases.append((points, turn, silhouette_grids((points @ rotation_y(25.0).T)[None])[0]))
    return cases


def run(args) -> dict:
    import torch

    from recon_core.mesh.silhouette import fit_pose
    from recon_core.mesh.threads import thread_map

    torch.set_num_threads(args.threads)
    cases = _tiny_cases(min(args.solids, 4)) if args.tiny else _bank_cases(args.model, args.solids)

    def one_by_one() -> None:
        for case in cases:
            fit_pose(*case)

    def threaded() -> None:
        thread_map(lambda case: fit_pose(*case), cases)

    figures = {}
    for name, work in (("per_fit_ms", one_by_one), ("per_fit_threaded_ms", threaded)):
        work()  # warm-up
        passes = []
        for _ in range(args.runs):
            start = time.perf_counter()
            work()
            passes.append((time.perf_counter() - start) / len(cases))
        figures[name] = round(1000.0 * float(np.median(passes)), 3)
    return {"benchmark": "fit", "machine": machine(args.threads), "model": "tiny blobs" if args.tiny else
            (args.model or "models/default"), "solids": len(cases), "runs": args.runs, **figures}


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--model", default=None, help="model stem (default: the shipped model)")
    p.add_argument("--solids", type=positive_int, default=40, help="bank solids fitted in each pass")
    p.add_argument("--runs", type=positive_int, default=5, help="timed passes over the solids")
    args = p.parse_args(argv)
    if not args.tiny:
        check_model(p, args.model)
    if args.tiny:
        args.runs = min(args.runs, 2)
    return emit(run(args))


if __name__ == "__main__":
    main()
