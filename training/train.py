"""Train the reconstruction network.

    python training/train.py --config training/configs/default.yaml [section.key=value ...]
    torchrun --nproc_per_node 2 training/train.py --config ...        # DDP (gloo on CPU, nccl on CUDA)
    python training/train.py --resume [run.out=runs/x]                 # continue a run exactly, its own settings
    python training/train.py --config ... --init-from models/default    # start from the shipped model

Writes to ``run.out``: ``checkpoint.pt`` (model, optimiser, scaler, step; atomically,
every ``run.checkpoint_every`` steps), ``snapshots/step_N.safetensors`` + ``.json``
(model only, for the learning curve and for shipping; the JSON's ``steps`` counts the
steps of an ``--init-from`` model too, ``run_step`` this run's alone), ``log.csv`` (loss parts per
logged step), TensorBoard events when tensorboard is installed, and ``config.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recon_core.io.export import atomic_write_bytes, unwritable_reason
from recon_core.io.weights import load_model, save_model
from recon_core.mesh.topology import BatchMeshes
from recon_core.network.encoder import cpu_has_native_bf16
from recon_core.network.heads import OccupancyOutput
from recon_core.network.losses import LossWeights, RenderSettings, SilhouetteTarget, mesh_loss
from recon_core.network.model import ReconOutput, build_model
from recon_core.network.soft_raster import PinholeCameras
from training.config import TrainConfig, load_train_config
from training.sampling import StepBatchSampler, category_item_weights

__all__ = ["main", "train", "train_step", "compute_loss", "occupancy_loss", "refine_loss"]

log = logging.getLogger("recon-train")


def compute_loss(model, out: ReconOutput, batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total and unweighted parts for one batch.

    Each refiner stage gets Chamfer, normal, edge and Laplacian losses; the last stage
    also the silhouette and depth losses through the differentiable rasteriser; the
    coarse shape a Chamfer loss; the category head a cross-entropy.

    Args:
        out: the network's output for ``batch["image"]`` (B, 3, S, S).
        batch: a collated :class:`training.dataset.RenderedViews` batch.
    """
    if isinstance(out, OccupancyOutput):
        total, parts = occupancy_loss(out, batch, cfg)
        if model.config.occupancy_refine:
            refined, refine_parts = refine_loss(model, out, batch, cfg)
            total = total + refined
            parts.update(refine_parts)
            parts["total"] = float(total.detach())
        return total, parts
    lc = cfg.loss
    points, normals = batch["points"], batch["normals"]  # (B, N, 3) view frame
    weights = LossWeights(chamfer=lc.chamfer, normal=lc.normal, edge=lc.edge, laplacian=lc.laplacian,
                          silhouette=lc.silhouette, depth=lc.depth)
    total = torch.zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    n_stages = len(out.stage_verts)
    render = _render_settings(lc)
    for i, (verts, level) in enumerate(zip(out.stage_verts, out.levels)):
        meshes = model.topology.meshes(verts.float(), level)
        last = i == n_stages - 1 and (lc.silhouette > 0 or lc.depth > 0)
        stage_weights = weights if last else dataclasses.replace(weights, silhouette=0.0, depth=0.0)
        target = _silhouette_target(batch, lc.rasteriser, lc.depth > 0) if last else None
        loss, stage_parts = mesh_loss(meshes, points, normals, stage_weights, num_samples=lc.num_samples,
                                      silhouette=target, render=render)
        total = total + loss / n_stages
        for k, v in stage_parts.items():
            parts[f"{k}/{i}"] = float(v.detach())
    coarse = model.topology.meshes(out.coarse_verts.float(), out.coarse_level)
    coarse_loss, coarse_parts = mesh_loss(coarse, points, normals, LossWeights(chamfer=1.0, normal=0.0, edge=0.0,
                                                                                laplacian=0.0, silhouette=0.0, depth=0.0),
                                          num_samples=lc.num_samples)
    total = total + lc.coarse * coarse_loss
    parts["chamfer/coarse"] = float(coarse_parts["chamfer"].detach())
    ce = F.cross_entropy(out.category_logits.float(), batch["category"], ignore_index=-1)
    total = total + lc.category * ce
    parts["category"] = float(ce.detach())
    parts["total"] = float(total.detach())
    return total, parts


def occupancy_loss(out: OccupancyOutput, batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total and unweighted parts of a ``coarse="occupancy"`` network's losses.

    Frustum cells: binary cross-entropy and soft Dice against ``batch["occupancy"]`` (B, Z, N, N).
    Stride-4 maps (h x w), against the render's mask and depth averaged over each cell: mask
    cross-entropy; depth L1 in crop units (``z_c = (z_cam - d) f_c / d``) and normals
    ``1 - cos`` (from the depth map's back-projected gradients), both on cells wholly on the
    object. Grid camera: L1 of ``(log s, p_c - 0.5)``. Category: cross-entropy.
    """
    lc = cfg.loss
    parts: dict[str, torch.Tensor] = {}
    logits = out.occupancy_logits.float()
    target = batch["occupancy"]
    parts["occupancy"] = F.binary_cross_entropy_with_logits(logits, target)
    p = logits.sigmoid()
    overlap = (p * target).sum(dim=(1, 2, 3))
    parts["dice"] = (1.0 - (2.0 * overlap + 1.0) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)).mean()

    h, w = out.mask_logits.shape[-2:]
    mask = batch["mask"][:, None]  # (B, 1, S, S)
    size = mask.shape[-1]
    pool = lambda x: F.adaptive_avg_pool2d(x, (h, w))  # noqa: E731
    parts["mask_2d"] = F.binary_cross_entropy_with_logits(out.mask_logits.float(), pool(mask))
    K, distance = batch["K"], batch["T"][:, 2]
    focal = (K[:, 0, 0] / size)[:, None, None, None]
    d = distance[:, None, None, None]
    depth = batch["depth"][:, None]
    on = (mask > 0.5).float()
    coverage = pool(on)
    full = (coverage > 0.999).float()
    z_c = pool((depth - d) * focal / d * on) / coverage.clamp_min(1e-6)
    parts["depth_2d"] = ((out.depth.float() - z_c).abs() * full).sum() / full.sum().clamp_min(1.0)
    # Camera-frame points of the depth map, their gradients along u and v, normals toward the camera.
    coords = (torch.arange(size, dtype=depth.dtype, device=depth.device) + 0.5)
    x = (coords[None, None, None, :] - K[:, 0, 2, None, None, None]) * depth / K[:, 0, 0, None, None, None]
    y = (coords[None, None, :, None] - K[:, 1, 2, None, None, None]) * depth / K[:, 1, 1, None, None, None]
    pts = torch.cat([x, y, depth], dim=1)  # (B, 3, S, S)
    du = pts[..., 1:-1, 2:] - pts[..., 1:-1, :-2]
    dv = pts[..., 2:, 1:-1] - pts[..., :-2, 1:-1]
    normal = -torch.cross(du, dv, dim=1)
    inner = on[..., 1:-1, 1:-1] * on[..., 1:-1, 2:] * on[..., 1:-1, :-2] * on[..., 2:, 1:-1] * on[..., :-2, 1:-1]
    normal = F.normalize(normal, dim=1) * inner
    normal = F.pad(normal, (1, 1, 1, 1))
    gt_normal = F.normalize(pool(normal), dim=1)
    cos = (F.normalize(out.normals.float(), dim=1) * gt_normal).sum(dim=1, keepdim=True)
    parts["normal_2d"] = ((1.0 - cos) * full).sum() / full.sum().clamp_min(1.0)
    parts["camera"] = (out.camera.float() - batch["grid_camera"]).abs().mean()
    parts["category"] = F.cross_entropy(out.category_logits.float(), batch["category"], ignore_index=-1)
    weights = {"occupancy": lc.occupancy, "dice": lc.dice, "mask_2d": lc.mask_2d, "depth_2d": lc.depth_2d,
               "normal_2d": lc.normal_2d, "camera": lc.camera, "category": lc.category}
    total = sum(weights[k] * v for k, v in parts.items())
    out_parts = {k: float(v.detach()) for k, v in parts.items()}
    out_parts["total"] = float(total.detach())
    return total, out_parts


def refine_loss(model, out: OccupancyOutput, batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The refiner stages' losses on the occupancy meshes (``model.occupancy_refine``).

    Each picture's occupancy is meshed as inference meshes it (:func:`recon_core.io.inference.coarse_surfaces`:
    carved by the render's mask, as a picture with transparency is, with the predicted grid camera;
    no gradient flows into the occupancy through the meshing), the stages move its vertices
    (:meth:`recon_core.network.model.ReconstructionNet.refine_mesh`), and every stage gets Chamfer, normal,
    edge and Laplacian losses against the view-frame target points (each picture's mesh on its own, averaged
    over the pictures, then over the stages); the
    last stage also the silhouette and depth losses through the differentiable rasteriser with the
    render's true camera (``loss.silhouette``, ``loss.depth``), which the predicted camera's
    mesh alone does not match.
    ``chamfer/coarse`` (logged, not trained) is the occupancy mesh's own Chamfer distance.
    """
    from recon_core.io.inference import SMOOTH_ITERATIONS, coarse_surfaces
    from recon_core.mesh.occupancy import GridCamera
    from recon_core.mesh.topology import MeshGraph

    lc = cfg.loss
    spec = model.grid_spec
    logits = out.category_logits.detach().float()
    probs = logits.softmax(dim=-1)
    known = batch["category"] >= 0
    probs[known] = F.one_hot(batch["category"][known], probs.shape[-1]).float()
    coarse, stages, faces, rows = [], [[] for _ in model.stages], [], []
    for b in range(out.camera.shape[0]):
        meshes = coarse_surfaces(out.occupancy_logits[b], batch["mask"][b], out.camera[b], spec,
                                 lc.refine_faces, SMOOTH_ITERATIONS)
        if not meshes:
            continue
        _, v, f = meshes[0]
        v = torch.as_tensor(v, dtype=torch.float32, device=out.camera.device)
        f = torch.as_tensor(f, dtype=torch.long, device=out.camera.device)
        camera = GridCamera.from_prediction(out.camera[b].detach().float().cpu().numpy())
        moved = model.refine_mesh([p[b:b + 1].float() for p in out.pyramid], v, MeshGraph(f, len(v)), camera,
                                  probs[b:b + 1])
        for s, x in zip(stages, moved):
            s.append(x)
        coarse.append(v)
        faces.append(f)
        rows.append(b)
    if not rows:
        return torch.zeros((), dtype=torch.float32), {}
    points, normals = batch["points"][rows], batch["normals"][rows]
    weights = LossWeights(chamfer=lc.chamfer, normal=lc.normal, edge=lc.edge, laplacian=lc.laplacian,
                          silhouette=lc.silhouette, depth=lc.depth)
    plain = dataclasses.replace(weights, silhouette=0.0, depth=0.0)
    rendered = lc.silhouette > 0 or lc.depth > 0
    target = (_silhouette_target({k: batch[k][rows] for k in ("mask", "depth", "K", "T")}, lc.rasteriser,
                                 lc.depth > 0) if rendered else None)
    render = _render_settings(lc)


    def each(verts: list[torch.Tensor], stage_weights: LossWeights, silhouette) -> tuple[torch.Tensor, dict]:
        """mesh_loss of each picture's own mesh (their topologies differ), averaged over the pictures."""
        n = len(verts)
        results = [mesh_loss(BatchMeshes(v[None], f), points[j:j + 1], normals[j:j + 1], stage_weights,
                             num_samples=lc.num_samples, render=render,
                             silhouette=None if silhouette is None else SilhouetteTarget(
                                 masks=silhouette.masks[j:j + 1], cameras=silhouette.cameras[j],
                                 depths=None if silhouette.depths is None else silhouette.depths[j:j + 1]))
                   for j, (v, f) in enumerate(zip(verts, faces))]
        return (sum(t for t, _ in results) / n, {k: sum(p[k] for _, p in results) / n for k in results[0][1]})

    total = torch.zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    for i, verts in enumerate(stages):
        last = i == len(stages) - 1 and rendered
        loss, stage_parts = each(verts, weights if last else plain, target if last else None)
        total = total + loss / len(stages)
        for k, v in stage_parts.items():
            parts[f"{k}/{i}"] = float(v.detach())
    with torch.no_grad():
        _, coarse_parts = each(coarse, plain, None)
    parts["chamfer/coarse"] = float(coarse_parts["chamfer"])
    parts["refine"] = float(total.detach())
    return total, parts


def _render_settings(lc) -> RenderSettings:
    """The soft rasteriser at ``loss.render_size``, its edge as wide in pixels as at 64 px."""
    return RenderSettings(image_size=lc.render_size, sigma=1e-4 * (64 / lc.render_size) ** 2)


def _silhouette_target(batch: dict, rasteriser: str = "pytorch3d", depth: bool = True) -> SilhouetteTarget:
    """Masks, depths and cameras of the batch, for view-frame points (R = I, T = (0, 0, d)): pytorch3d's
    cameras, or with ``rasteriser="torch"`` the torch-only rasteriser's (then the depth only with ``depth``: it
    costs a second pass there, while pytorch3d's rasteriser has it anyway)."""
    masks = batch["mask"]  # (B, S, S)
    b, size = masks.shape[0], masks.shape[-1]
    if rasteriser == "torch":
        return SilhouetteTarget(masks=masks, depths=batch["depth"] if depth else None,
                                cameras=PinholeCameras(batch["K"], batch["T"], (size, size)))
    from pytorch3d.utils import cameras_from_opencv_projection

    eye = torch.eye(3, device=masks.device).expand(b, 3, 3)
    image_size = torch.tensor([[size, size]] * b, dtype=torch.float32, device=masks.device)
    cams = cameras_from_opencv_projection(eye, batch["T"], batch["K"], image_size)
    return SilhouetteTarget(masks=masks, depths=batch["depth"], cameras=cams)


def _setup_distributed() -> tuple[int, int, torch.device]:
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """``run.amp`` where it pays: always on CUDA (fp16), on the CPU (bf16) only with native bf16."""
    return cfg.run.amp and (device.type == "cuda" or cpu_has_native_bf16())


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _lr_at(step: int, cfg: TrainConfig, clock: float = 0.0) -> float:
    """The learning rate of ``step``: linear warm-up, then a cosine down to 5 % at ``optim.steps``, or sooner
    when ``clock`` (the share of ``optim.minutes`` spent, 0..1) is further along."""
    o = cfg.optim
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    progress = max((step - o.warmup) / max(1, o.steps - o.warmup), clock)
    return o.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _clock_share(tic: float, cfg: TrainConfig, world: int, device: torch.device) -> float:
    """The share of ``optim.minutes`` spent since ``tic`` (0 without a time budget); rank 0's clock for all."""
    if cfg.optim.minutes <= 0:
        return 0.0
    share = (time.perf_counter() - tic) / (60.0 * cfg.optim.minutes)
    if world == 1:
        return share  # no device tensor: a GPU would wait for its queue every step
    shared = torch.tensor([share], dtype=torch.float64, device=device)
    dist.broadcast(shared, src=0)
    return float(shared)


def _save_checkpoint(path: Path, model, optimizer, scaler, step: int, init_steps: int = 0, average=None) -> None:
    import io

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}, "step": step,
                "init_steps": init_steps, "ema": average.state_dict() if average is not None else {}}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _weight_average(model, decay: float):
    """The exponential moving average of ``model``'s weights and buffers (``optim.ema``), or None for 0.

    ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: its first update copies the
    weights, each later one moves the average to ``decay * average + (1 - decay) * weights``.

    Raises:
        ValueError: ``decay`` outside [0, 1).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"optim.ema={decay}: give 0 (no average) or a decay below 1, e.g. 0.995.")
    if decay == 0.0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _collate(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
            torch.tensor(vals) if isinstance(vals[0], (int, bool, float)) else vals)
    return out


def training_views(cfg: TrainConfig):
    """The configured training split: the render folders or the pack (``data.pack``), augmented as configured."""
    from training.dataset import RenderedViews

    grid = cfg.model.grid_spec if cfg.model.coarse == "occupancy" else None
    backgrounds = cfg.data.backgrounds
    if cfg.data.pack is not None and not Path(backgrounds).is_dir():
        backgrounds = None  # the pack's own photographs
    return RenderedViews(cfg.data.shapenet, cfg.data.renders, "train", image_size=cfg.model.image_size,
                         num_points=cfg.data.num_points, augment=cfg.data.augment, seed=cfg.run.seed,
                         occupancy=grid, backgrounds=backgrounds, styles=cfg.data.styles,
                         occupancy_share=cfg.data.occupancy_share, cutout=cfg.data.cutout, pack=cfg.data.pack)


def training_loader(cfg: TrainConfig, dataset, steps: int, rank: int = 0, world: int = 1, start: int = 0):
    """Batches of ``cfg.optim.batch_size`` for steps ``start`` to ``steps`` of this ``rank``, category-weighted."""
    weights = category_item_weights(dataset.categories, cfg.data.category_balance, cfg.data.category_weights)
    sampler = StepBatchSampler(weights, cfg.optim.batch_size, steps, cfg.run.seed, rank, world, start)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
                                       collate_fn=_collate, persistent_workers=False)


def _check_config(cfg: TrainConfig, world: int = 1) -> None:
    """Refuse settings no run can train with, before anything is read or written.

    Raises:
        ValueError: the first setting out of range, named with what to give instead.
    """
    o, r, d = cfg.optim, cfg.run, cfg.data
    rules = [
        ("optim.steps", o.steps, o.steps >= 1, "give the number of steps to train to, at least 1"),
        ("optim.batch_size", o.batch_size, o.batch_size >= 1 and o.batch_size % world == 0,
         f"give at least 1{f', divisible by the {world} processes' if world > 1 else ''}"),
        ("optim.lr", o.lr, o.lr > 0, "give a positive learning rate, e.g. 3e-4"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, "give 0 or more"),
        ("optim.warmup", o.warmup, o.warmup >= 0, "give 0 or more steps"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip > 0, "give the largest gradient norm, above 0, e.g. 1.0"),
        ("optim.minutes", o.minutes, o.minutes >= 0, "give 0 (no time budget) or more"),
        ("run.checkpoint_every", r.checkpoint_every, r.checkpoint_every >= 1, "give at least 1 step"),
        ("run.log_every", r.log_every, r.log_every >= 1, "give at least 1 step"),
        ("run.snapshots", r.snapshots, r.snapshots >= 1, "give at least 1"),
        ("run.threads", r.threads, r.threads >= 0, "give 0 (torch's default) or more"),
        ("run.seed", r.seed, r.seed >= 0, "give 0 or more"),
        ("data.num_points", d.num_points, d.num_points >= 1, "give at least 1"),
        ("data.workers", d.workers, d.workers >= 0, "give 0 (load in the training process) or more"),
        ("data.synthetic", d.synthetic, d.synthetic >= 0, "give 0 (off) or more"),
        ("data.styles", d.styles, 0 <= d.styles <= 1, "give a share from 0 to 1"),
        ("data.cutout", d.cutout, 0 <= d.cutout <= 1, "give a share from 0 to 1"),
        ("loss.num_samples", cfg.loss.num_samples, cfg.loss.num_samples >= 1, "give at least 1"),
        ("loss.render_size", cfg.loss.render_size, cfg.loss.render_size >= 1, "give at least 1 pixel"),
        ("model.category_branch", cfg.model.category_branch, not cfg.model.category_branch,
         "give false: the branch is fitted on a trained network by training/train_category.py"),
    ]
    weights = {f.name: getattr(cfg.loss, f.name) for f in dataclasses.fields(cfg.loss) if f.type in (float, "float")}
    rules += [(f"loss.{k}", v, v >= 0, "give a weight of 0 or more") for k, v in weights.items()]
    for key, value, ok, fix in rules:
        if not ok:
            raise ValueError(f"{key}={value}: {fix}.")


def _check_out_dir(out_dir: Path) -> None:
    """Refuse a ``run.out`` that cannot be a folder: it or a folder above it is a file, or cannot be written.

    Raises:
        ValueError: naming the path in the way.
    """
    reason = unwritable_reason(out_dir, folder=True)
    if reason:
        raise ValueError(f"run.out={out_dir}: {reason}; give a folder for the run's output that you can write to.")


def _read_checkpoint(path: Path, device: torch.device) -> dict:
    """The state of ``--resume``'s checkpoint (our own file, read with ``weights_only``: tensors and plain values).

    Raises:
        ValueError: a file that torch cannot read (truncated, empty, not a checkpoint) or that lacks the step.
    """
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, IndexError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError,
            pickle.UnpicklingError, zipfile.BadZipFile) as err:
        log.debug("reading %s: %s", path, err)
        state = None
    except OSError as err:
        raise ValueError(f"--resume: the checkpoint {path} cannot be read ({err.strerror or err}); check its "
                         "permissions, or start the run over in another run.out, without --resume.") from None
    step = state.get("step") if isinstance(state, dict) else None
    if not (isinstance(state, dict) and {"model", "optimizer"} <= set(state) and isinstance(step, int) and step >= 0):
        raise ValueError(f"--resume: the checkpoint {path} is corrupt or truncated; restore it, or start the run over "
                         "in another run.out (or delete that folder first), without --resume.")
    return state


LOCK_FILE = "train.lock"
"""The file in ``run.out`` that holds the process id of the run writing there (:func:`_run_lock`)."""


@contextlib.contextmanager
def _run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir``'s :data:`LOCK_FILE` while a run reads and writes there, so that a second
    run into the same folder (a ``--resume`` started twice) is refused instead of writing over the first's
    checkpoints. The operating system's own lock on the open file (``flock``; on Windows ``msvcrt.locking`` of a byte
    far past its text), so a run that is killed lets go of it with its process; the file names its holder and is
    removed when the run ends. Where the file system cannot lock, a warning says so and the run goes on unlocked.

    Raises:
        ValueError: another run holds it.
        OSError: the file cannot be made.
    """
    path = out_dir / LOCK_FILE
    for _ in range(5):
        handle = open(path, "a+", encoding="utf-8")
        try:
            _lock_file(handle)
        except (BlockingIOError, PermissionError):  # held (flock's EWOULDBLOCK; msvcrt's EACCES)
            try:
                handle.seek(0)
                holder = handle.read().strip()
            except OSError:
                holder = ""
            finally:
                handle.close()
            raise ValueError(f"run.out={out_dir} is in use by another training run"
                             + (f" ({holder})" if holder else "") + "; wait for it to end, or give another "
                             "run.out.") from None
        except OSError as err:  # no locks on this file system (a network mount without them)
            log.warning("cannot lock %s (%s): two runs into this folder would not be kept apart", path,
                        err.strerror or err)
            break
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except OSError:
            same = False
        if same:
            break
        handle.close()  # the file was removed and made again meanwhile (a run ending): lock the new one
    else:
        raise ValueError(f"run.out={out_dir}: its {LOCK_FILE} keeps changing; is another run starting there?")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        if os.name == "nt":  # an open file cannot be removed there: let go first
            handle.close()
            with contextlib.suppress(OSError):
                path.unlink()
        else:
            with contextlib.suppress(OSError):
                path.unlink()  # before the lock is let go, so no one locks a removed file
            handle.close()


def _lock_file(handle) -> None:
    """Lock the open file ``handle`` for this process, without waiting.

    Raises:
        BlockingIOError, PermissionError: another process holds it.
        OSError: the file system cannot lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(1 << 30)  # a byte past any text, so the holder's line stays readable
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when nothing is in it (a run that made it and failed before writing anything)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _check_run_state(out_dir: Path, ckpt_path: Path, resume: bool) -> None:
    """Refuse ``--resume`` without a checkpoint, and a new run where one is (it would write over its checkpoint and
    log).

    Raises:
        FileNotFoundError, ValueError: saying which, and what to do.
    """
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; start without --resume.")
    if not resume and ckpt_path.is_file():
        raise ValueError(f"run.out={out_dir} already holds a run ({ckpt_path}); continue it with --resume, or give "
                         "another run.out (delete that folder first to start it over).")


def train(cfg: TrainConfig, resume: bool = False, init_from: str | None = None, dataset=None) -> Path:
    """Run training as configured; returns the output folder. ``dataset`` overrides the configured data (tests).

    The settings, ``run.out``, the checkpoint of ``resume`` and the model of ``init_from`` are all checked
    before the data is read or anything is written. Resuming a run whose checkpoint is at ``optim.steps`` already
    does nothing (a note says so); one past ``optim.steps`` is refused. While it writes, ``run.out`` holds its
    :data:`LOCK_FILE` (:func:`_run_lock`).

    Raises:
        ValueError, FileNotFoundError: a setting out of range, an unusable ``run.out`` (or one that holds a run
            already, without ``resume``, or one another run is writing in), a missing or unfitting checkpoint or
            ``init_from`` model.
    """
    with contextlib.ExitStack() as held:
        return _train(cfg, resume, init_from, dataset, held)


def _train(cfg: TrainConfig, resume: bool, init_from: str | None, dataset, held: contextlib.ExitStack) -> Path:
    """:func:`train`'s work; ``held`` keeps the run's lock until it returns."""
    rank, world, device = _setup_distributed()
    _check_config(cfg, world)
    out_dir = Path(cfg.run.out)
    _check_out_dir(out_dir)
    if dataset is None and not cfg.data.synthetic and cfg.data.pack is None:
        from training.dataset import data_folder_error

        error = data_folder_error(cfg.data.shapenet, cfg.data.renders, "data.shapenet=PATH", "data.renders=PATH")
        if error:
            raise ValueError(error)
    ckpt_path = out_dir / "checkpoint.pt"
    _check_run_state(out_dir, ckpt_path, resume)
    refusal: Exception | None = None
    if rank == 0:  # one run at a time in a folder, before its checkpoint is read
        try:
            if not out_dir.exists():
                out_dir.mkdir(parents=True)
                held.callback(_remove_if_empty, out_dir)  # a run refused or failing before it writes leaves none
            held.enter_context(_run_lock(out_dir))
            _check_run_state(out_dir, ckpt_path, resume)  # again, locked: a run may have written there meanwhile
        except (ValueError, FileNotFoundError) as err:  # the run state's sentences (before the OSError below)
            refusal = err
        except OSError as err:
            refusal = ValueError(f"run.out={out_dir}: cannot write there ({err.strerror or err}); "
                                 "give a folder you can write to.")
    if world > 1:  # every rank stops with rank 0's sentence, none waits in a collective for it
        said = [None if refusal is None else str(refusal)]
        dist.broadcast_object_list(said, src=0)
        if said[0] is not None:
            raise ValueError(said[0])
    if refusal is not None:
        raise refusal
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    init_steps = 0  # training steps already in the weights we start from
    if init_from:
        init_model, init_meta = load_model(init_from, overrides={"category_branch": False})  # dropped anyway
        _load_init_weights(model, init_model)
        init_steps = int(init_meta.get("steps") or 0)
        log.info("initialised from %s (%d steps)", init_from, init_steps)
    if cfg.optim.freeze_encoder:
        for module in (model.encoder, model.category_head):
            module.requires_grad_(False)
    if cfg.optim.freeze_heads and model.heads is not None:
        model.heads.requires_grad_(False)
    for module in _frozen_backbone_parts(model, cfg.optim.freeze_stages):
        module.requires_grad_(False)
    model.to(device)
    if cfg.run.channels_last:
        model.encoder.to(memory_format=torch.channels_last)
    average = _weight_average(model, cfg.optim.ema)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    use_scaler = cfg.run.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    if cfg.run.amp and not amp_enabled(cfg, device) and rank == 0:
        log.info("mixed precision off: this CPU has no native bfloat16 (AVX512-BF16 or AMX), where float32 is faster")

    start = 0
    if resume:
        state = _read_checkpoint(ckpt_path, device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError):
            raise ValueError(f"--resume: the checkpoint at {ckpt_path} holds another network than this config's; "
                             "resume with the settings that run was started with.") from None
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        if start > cfg.optim.steps:
            raise ValueError(f"--resume: the checkpoint at {ckpt_path} is at step {start}, past optim.steps="
                             f"{cfg.optim.steps}, so there is nothing to train; give optim.steps above {start} to "
                             "train on, or evaluate the run's snapshots as they are.")
        if start == cfg.optim.steps:
            log.info("the checkpoint at %s is at step %d = optim.steps: the run is finished, nothing to train",
                     ckpt_path, start)
            if world > 1:
                dist.destroy_process_group()
            return out_dir  # nothing written: config.yaml stays the run's
        init_steps = int(state.get("init_steps", 0))
        if average is not None and state.get("ema"):
            average.load_state_dict(state["ema"])
        elif average is not None:
            log.info("the checkpoint has no weight average: it starts from the weights of step %d", start)
        log.info("resumed from step %d", start)

    if dataset is None and cfg.data.synthetic:
        from training.synthetic import SyntheticViews

        dataset = SyntheticViews(cfg.data.synthetic, cfg.model.image_size, cfg.data.num_points, cfg.run.seed,
                                 occupancy=cfg.model.grid_spec if cfg.model.coarse == "occupancy" else None,
                                 occupancy_share=cfg.data.occupancy_share)
    if dataset is None:
        dataset = training_views(cfg)
    loader = training_loader(cfg, dataset, cfg.optim.steps, rank, world, start)

    if rank == 0:
        import yaml

        try:
            (out_dir / "snapshots").mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
        except OSError as err:
            raise ValueError(f"run.out={out_dir}: cannot write there ({err.strerror or err}); "
                             "give a folder you can write to.") from None

    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    csv_file = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"))
        except ImportError:
            log.info("tensorboard not installed: logging to CSV only")
        csv_path = out_dir / "log.csv"
        if not resume and csv_path.exists():
            csv_path.unlink()
        csv_file = open(csv_path, "a", newline="")

    from tqdm import tqdm

    bar = held.enter_context(tqdm(total=cfg.optim.steps, initial=start, disable=rank != 0, desc="train",
                                  dynamic_ncols=True))  # closed on every way out: an error's sentence stands alone
    held.callback(lambda: [log_file.close() for log_file in (csv_file, writer) if log_file is not None])
    csv_writer = None
    model.train()
    if cfg.optim.freeze_encoder:
        model.encoder.eval()  # frozen: keep the BatchNorm running statistics too
    for module in _frozen_backbone_parts(model, cfg.optim.freeze_stages):
        module.eval()
    step = start
    tic = time.perf_counter()
    clock = 0.0
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        torch.manual_seed(cfg.run.seed * 1_000_003 + step * 101 + rank)  # point sampling: exact on resume
        clock = _clock_share(tic, cfg, world, device)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg, clock)
        parts = train_step(model, ddp_model, batch, optimizer, scaler, cfg, device)
        if average is not None:
            average.update_parameters(model)
        step += 1
        if rank == 0:
            bar.update(1)
            bar.set_postfix(loss=f"{parts['total']:.4f}", chamfer=f"{parts.get('chamfer/2', 0):.4f}")
            if step % cfg.run.log_every == 0 or step == start + 1:
                row = {"step": step, "lr": _lr_at(step - 1, cfg, clock), "seconds": round(time.perf_counter() - tic, 2), **parts}
                if csv_writer is None:
                    fields = _log_fields(csv_path, list(row))
                    csv_file.close()  # reopened: _log_fields may have replaced the file
                    csv_file = open(csv_path, "a", newline="")
                    csv_writer = csv.DictWriter(csv_file, fieldnames=fields, restval="")
                    if csv_file.tell() == 0:
                        csv_writer.writeheader()
                csv_writer.writerow(row)
                csv_file.flush()
                if writer is not None:
                    for k, v in parts.items():
                        writer.add_scalar(f"loss/{k}", v, step)
        out_of_time = clock >= 1.0
        if step % cfg.run.checkpoint_every == 0 or step == cfg.optim.steps or out_of_time:
            if rank == 0:
                _save_checkpoint(ckpt_path, model, optimizer, scaler, step, init_steps, average)
                meta = {"steps": init_steps + step, "run_step": step, "init_steps": init_steps, "trained": True}
                if average is not None:
                    meta["ema"] = {"decay": cfg.optim.ema, "averaged_steps": int(average.n_averaged)}
                save_model(model if average is None else average.module, out_dir / "snapshots" / f"step_{step:06d}",
                           meta)
                _prune_snapshots(out_dir / "snapshots", cfg.run.snapshots)
            if world > 1:
                dist.barrier()
        if out_of_time:
            log.info("optim.minutes=%g spent at step %d of %d: stopped with a snapshot", cfg.optim.minutes, step,
                     cfg.optim.steps)
            break
    bar.close()
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:  # where the run's files are: its last snapshot is the model to evaluate or ship
        log.info("done at step %d: the snapshot %s, the checkpoint %s (--resume goes on from it)", step,
                 out_dir / "snapshots" / f"step_{step:06d}", ckpt_path)
    return out_dir  # the logs are closed and the lock let go as train() returns


def _log_fields(path: Path, fields: list[str]) -> list[str]:
    """The columns of ``log.csv`` for rows with ``fields``: the file's own header when it has every one
    of them; else (a resumed run logs new loss parts) the file is rewritten with the union of both
    headers, old rows blank in the new columns, so no value ever lands under another's name."""
    if not path.is_file() or path.stat().st_size == 0:
        return fields
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        old = list(reader.fieldnames or [])
        if set(fields) <= set(old):
            return old
        rows = list(reader)
    union = old + [k for k in fields if k not in old]
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=union, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    return union


def _frozen_backbone_parts(model, count: int) -> list:
    """The first ``count`` of the backbone's (stem, stage 1, ..., stage 4) (``optim.freeze_stages``).

    Raises:
        ValueError: ``count`` outside 0..5.
    """
    parts = [model.encoder.stem, *model.encoder.stages]
    if not 0 <= count <= len(parts):
        raise ValueError(f"optim.freeze_stages={count}: give 0 (train everything) to {len(parts)} "
                         "(the stem and all four stages).")
    return parts[:count]


def _load_init_weights(model, init_model) -> None:
    """Copy ``init_model``'s weights into ``model`` (``--init-from``), the shape bank and the category branch
    excepted (a network trained from a shipped model comes out without them: ``training/build_shape_bank.py --model
    SNAPSHOT`` attaches a bank, ``training/train_category.py`` a branch fitted on the new encoder).
    """
    state = {k: v for k, v in init_model.state_dict().items()
             if not k.startswith(("bank.", "category_branch."))}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("bank.")}
    if model.config.coarse == "occupancy" and init_model.config.coarse != "occupancy":
        # A mesh model's encoder, category head and refiner start an occupancy model; its coarse head
        # has no counterpart and the occupancy heads start fresh.
        shared = {k: v for k, v in state.items() if k in expected and expected[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
        fresh = sorted({k.split(".")[0] for k in set(expected) - set(shared)})
        log.info("copied %d tensors from a %s model; new: %s", len(shared), init_model.config.coarse, ", ".join(fresh))
        return
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    resized = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or resized:
        raise ValueError(f"--init-from: the model does not fit this config ({len(missing)} tensors missing, "
                         f"{len(unexpected)} unexpected, {len(resized)} of another shape, e.g. "
                         f"{', '.join((missing or unexpected or resized)[:3])}).")
    model.load_state_dict(state, strict=False)


def train_step(model, ddp_model, batch: dict, optimizer, scaler, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """One optimisation step on a collated batch (already on ``device``); returns the loss parts.

    ``ddp_model`` is ``model`` or its DistributedDataParallel wrapper; ``scaler`` a CUDA
    GradScaler or None.
    """
    with _autocast(device, amp_enabled(cfg, device)):
        out = ddp_model(batch["image"], category=batch["category"])
    total, parts = compute_loss(model, out, batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.optim.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return parts


def _prune_snapshots(folder: Path, keep: int) -> None:
    """Keep ``keep`` snapshots spread over the run (always the newest)."""
    snaps = sorted(folder.glob("step_*.safetensors"))
    if len(snaps) <= keep:
        return
    # drop every other one of the oldest half, so the curve keeps its span
    for victim in snaps[1:-1:2][: len(snaps) - keep]:
        victim.unlink(missing_ok=True)
        victim.with_suffix(".json").unlink(missing_ok=True)


def _sentence(err: BaseException) -> str:
    """An error's sentence; one raised in a data loader's worker process comes wrapped by torch ("Caught ValueError
    in DataLoader worker process 0. Original Traceback ..."), the sentence after the traceback's last ``ValueError: ``
    (the type's name, with or without its module), all its lines."""
    text = str(err)
    caught = re.match(r"Caught (\w+) in DataLoader", text)
    if caught is None or "Original Traceback" not in text:
        return text
    lines = text.splitlines()
    prefix = re.compile(rf"^(?:[\w.]+\.)?{caught.group(1)}: ")
    starts = [i for i, line in enumerate(lines) if prefix.match(line)]
    if not starts:
        return text
    first = starts[-1]
    return "\n".join([prefix.sub("", lines[first])] + lines[first + 1:]).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recon-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config (default: with --resume, the run's own run.out/config.yaml; else the "
                                    "built-in defaults, which are not training/configs/default.yaml's)")
    p.add_argument("--resume", action="store_true", help="continue from run.out/checkpoint.pt, with the settings the "
                                                         "run was started with unless --config is given")
    p.add_argument("--init-from", help="start from a saved model (e.g. models/default)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.steps=100")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = None
    try:
        cfg = load_train_config(args.config, args.overrides)
        saved = Path(cfg.run.out) / "config.yaml"
        if args.resume and args.config is None and saved.is_file():
            # the run's own settings: the built-in defaults differ from them (a resumed run trained on with other
            # losses, and its config.yaml was written over with the defaults)
            cfg = load_train_config(saved, args.overrides)
            log.info("settings from %s (the run's own)%s", saved,
                     f", with {' '.join(args.overrides)}" if args.overrides else "")
        if args.resume and args.init_from:
            raise ValueError(f"--resume continues from {Path(cfg.run.out) / 'checkpoint.pt'}, whose weights replace "
                             f"--init-from's ({args.init_from}); give one of them.")
        train(cfg, resume=args.resume, init_from=args.init_from)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {_sentence(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the checkpoint is written atomically, so the last one is whole
        checkpoint = None if cfg is None else Path(cfg.run.out) / "checkpoint.pt"
        kept = (f"the last checkpoint, {checkpoint}, is whole: continue with --resume run.out={cfg.run.out}"
                if checkpoint is not None and checkpoint.is_file() else "no checkpoint was written")
        print(f"error: interrupted; {kept}.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
