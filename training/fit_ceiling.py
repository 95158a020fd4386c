"""The representation's ceiling: the output mesh fitted directly to each test shape, no network.

    python training/fit_ceiling.py --split test --limit 13 [--steps 150] [loss.edge=0.1 ...]

For each evaluation image (the same images and ground-truth pose as ``evaluate.py``), an
ico-sphere is optimised with Adam against points sampled on the posed ground truth, coarse
to fine like the network (162 -> 642 -> 2,562 vertices, ``--steps`` at each level), with
the training losses and weights of a training config (Chamfer, normal, edge, Laplacian).
The result goes through the same repair as the model's output and is scored with the same
protocol. It answers: what could a perfect network reach with this mesh and these losses?
If the model is far below this ceiling, the network is the bottleneck; if the ceiling itself
is low, the representation or the losses are.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from recon_core.mesh.topology import IcoTopology
from recon_core.network.losses import LossWeights, mesh_loss
from training.config import LossConfig, load_train_config

__all__ = ["fit_sphere", "main"]


def fit_sphere(
    points: torch.Tensor,
    normals: torch.Tensor,
    loss: LossConfig,
    levels: tuple[int, ...] = (2, 3, 4),
    steps: int = 150,
    lr: float = 0.01,
    radius: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit an ico-sphere to a surface, coarse to fine, with the training losses.

    Args:
        points, normals: (N, 3) float surface samples and unit normals of the target.
        loss: the weights (``chamfer``, ``normal``, ``edge``, ``laplacian``, ``num_samples``).
        levels: ico levels to optimise at, in order (midpoint subdivision between them).
        steps: Adam steps per level.

    Returns:
        ``(verts (V, 3) float64, faces (F, 3) int64)`` at the last level.
    """
    torch.manual_seed(seed)
    topo = IcoTopology(levels[0], levels[-1])
    weights = LossWeights(chamfer=loss.chamfer, normal=loss.normal, edge=loss.edge, laplacian=loss.laplacian,
                          silhouette=0.0, depth=0.0)
    centre = points.mean(0)
    verts = (topo.sphere(levels[0]) * radius + centre)[None].float()
    for i, level in enumerate(levels):
        if i:
            for lv in range(levels[i - 1], level):
                (verts,) = topo.subdivide(lv, verts)
        verts = verts.detach().requires_grad_(True)
        opt = torch.optim.Adam([verts], lr=lr / (2 ** i))
        for _ in range(steps):
            total, _ = mesh_loss(topo.meshes(verts, level), points[None], normals[None], weights,
                                 num_samples=loss.num_samples)
            opt.zero_grad()
            total.backward()
            opt.step()
    faces = topo.faces(levels[-1]).numpy().astype(np.int64)
    return verts.detach()[0].double().numpy(), faces


def main(argv: list[str] | None = None) -> int:
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.structures import Meshes
    from tqdm import tqdm

    from recon_core.io.inference import SMOOTH_ITERATIONS
    from recon_core.mesh.repair import make_printable
    from training.baselines import world_to_output
    from training.eval_data import DataError, category_name, discover, load_view, load_world_mesh, select_samples
    from training.scoring import Prediction, score_meshes

    p = argparse.ArgumentParser(prog="python training/fit_ceiling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="training/configs/default.yaml", help="training config (loss weights)")
    p.add_argument("--split", default="test")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--limit", type=int, default=13, help="first N evaluation images (as evaluate.py --limit)")
    p.add_argument("--steps", type=int, default=150, help="Adam steps per ico level")
    p.add_argument("--samples", type=int, default=10000, help="points per surface for the metrics")
    p.add_argument("overrides", nargs="*", help="loss.KEY=VALUE overrides of the config")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = load_train_config(args.config, args.overrides)
        samples = select_samples(discover(args.shapenet, args.renders, args.split), 1, args.limit)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sphere = IcoTopology(2, 4).sphere(4).double().numpy()  # the directions of the fitted topology (repair)
    rows = []
    for s in tqdm(samples, desc="fit", unit="shape"):
        _, _, cam, _ = load_view(s.entry, s.view)
        gt_v, gt_f = load_world_mesh(s.entry.mesh_path)
        gt = Prediction(world_to_output(gt_v, cam.R), gt_f)
        torch.manual_seed(s.seed)
        mesh = Meshes([torch.tensor(gt.verts, dtype=torch.float32)], [torch.tensor(np.asarray(gt_f))])
        pts, nrm = sample_points_from_meshes(mesh, 5000, return_normals=True)
        verts, faces = fit_sphere(pts[0], nrm[0], cfg.loss, steps=args.steps, seed=s.seed)
        verts, faces, repair = make_printable(verts, faces, smooth_iterations=SMOOTH_ITERATIONS, sphere_verts=sphere)
        try:
            (score,) = score_meshes([Prediction(verts, faces)], gt, num_samples=args.samples, seed=s.seed)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        rows.append((category_name(s.entry.synset), score, repair.path))
    by_cat: dict[str, list[float]] = {}
    for cat, score, path in rows:
        by_cat.setdefault(cat, []).append(score["F1@0.3"])
        print(f"{cat:12s} F1@0.3 {100 * score['F1@0.3']:5.1f}  Chamfer-L2 {score['Chamfer-L2']:.3f}  repair {path}")
    mean_cat = float(np.mean([np.mean(v) for v in by_cat.values()]))
    mean_img = float(np.mean([score["F1@0.3"] for _, score, _ in rows]))
    mean_ch = float(np.mean([score["Chamfer-L2"] for _, score, _ in rows]))
    print(f"fitted ceiling on {len(rows)} images: F1@0.3 {100 * mean_img:.1f} (images), {100 * mean_cat:.1f} "
          f"(categories); Chamfer-L2 {mean_ch:.3f}; losses chamfer {cfg.loss.chamfer:g} normal {cfg.loss.normal:g} "
          f"edge {cfg.loss.edge:g} laplacian {cfg.loss.laplacian:g}, {args.steps} steps a level")
    return 0


if __name__ == "__main__":
    sys.exit(main())
