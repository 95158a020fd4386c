"""Time mesh_loss forward + backward: batch 8 of 2562-vertex meshes, with and without the silhouette.

Run: ``python -m tests.benchmarks.bm_losses [--size 64] [--repeats 3]``.
"""

import argparse
import math
import time

import numpy as np
import torch
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.structures import Meshes
from pytorch3d.utils import ico_sphere

from recon_core.mesh.camera import Camera, intrinsics, to_pytorch3d
from recon_core.network.losses import LossWeights, RenderSettings, SilhouetteTarget, mesh_loss

BATCH = 8
LEVEL = 4  # 2562 vertices, 5120 faces


def _setup(size: int):
    s = ico_sphere(LEVEL)
    torch.manual_seed(0)
    verts = (0.5 * s.verts_packed())[None] + 0.01 * torch.randn(BATCH, s.verts_packed().shape[0], 3)
    verts.requires_grad_()
    pred = Meshes(verts=verts, faces=s.faces_packed()[None].expand(BATCH, -1, -1))
    gt_points, gt_normals = sample_points_from_meshes(Meshes(verts=(0.5 * s.verts_packed())[None].expand(BATCH, -1, -1),
                                                             faces=s.faces_packed()[None].expand(BATCH, -1, -1)),
                                                      5000, return_normals=True)
    # Object bbox diagonal 1 filling ~80 % of the image, as the crops do.
    distance = math.hypot(35.0 / 32.0 * 0.5 / 0.4, 0.5)
    camera = Camera(R=np.eye(3), T=np.array([0.0, 0.0, distance]), K=intrinsics(35.0, 32.0, size, size), width=size, height=size)
    target = SilhouetteTarget(masks=torch.ones(BATCH, size, size), cameras=to_pytorch3d([camera] * BATCH),
                              depths=torch.full((BATCH, size, size), distance))
    return pred, verts, gt_points, gt_normals, target


def _time(fn, repeats: int) -> str:
    """Best wall time and the CPU time of that run (all threads): on a shared machine, both matter."""
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = min(runs)
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    pred, verts, gt_points, gt_normals, target = _setup(args.size)
    render = RenderSettings(image_size=args.size)
    weights = LossWeights(normal=1.0, laplacian=1.0)
    weights_sil = LossWeights(normal=1.0, laplacian=1.0, silhouette=1.0, depth=1.0)

    def without():
        verts.grad = None
        mesh_loss(pred, gt_points, gt_normals, weights)[0].backward()

    def with_silhouette():
        verts.grad = None
        mesh_loss(pred, gt_points, gt_normals, weights_sil, silhouette=target, render=render)[0].backward()

    print(f"torch threads {torch.get_num_threads()}, batch {BATCH}, {verts.shape[1]} verts, render {args.size}^2")
    print(f"mesh_loss fwd+bwd without silhouette: {_time(without, args.repeats)}")
    print(f"mesh_loss fwd+bwd with silhouette+depth: {_time(with_silhouette, args.repeats)}")


if __name__ == "__main__":
    main()
