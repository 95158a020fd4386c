"""Give a trained model a shape bank: its output is then snapped to the nearest training shape.

    python training/build_shape_bank.py [--model models/default] --out runs/shape_bank/model

For each model of the train split of the 13 categories (the models and views of the retrieval
baseline of ``evaluate.py``) and, with ``--extra-pool``, of the train split of the data set's extra
pool's categories that are not held out (every held-out category of :mod:`training.holdout` is never
in the bank), the bank (:class:`recon_core.network.retrieval.ShapeBank`) stores

* every photo-like view's :func:`recon_core.network.retrieval.embed_image` vector, reduced to
  ``--dim`` principal components, and its world-to-camera rotation;
* ``--points`` surface points of the model (the distance to the network's reconstruction);
* the model's solid at ``--resolution`` cells a side (:func:`recon_core.mesh.volume.occupancy_grid`
  without filling, so every wall, inner ones included, is kept as a thin slab), zlib-packed.

The network's weights are copied unchanged from ``--model``; the result is one model file
(``OUT.safetensors`` + ``OUT.json``) that ``recon-mesh --model OUT`` and ``evaluate.py
--model OUT`` use like any other.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from recon_core.network.categories import SYNSET_INDEX
from recon_core.network.retrieval import EMBED_VERSION, embed_image
from training.interrupt import one_sentence_on_ctrl_c

__all__ = ["build_shape_bank", "attach_bank", "trained_model", "principal_components", "embed_views", "main"]


RESOLUTION_RANGE = (4, 256)
"""Cells per side a model's solid may have: below 4 it holds no shape; at 256 the solid's walls are already finer
than the surface samples that find them (and each of its grids takes 16 MB while it is built)."""


def principal_components(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and the first ``dim`` principal directions (D, dim) of rows ``x`` (N, D)."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    dim = min(dim, vt.shape[0])
    return mean.astype(np.float32), vt[:dim].T.astype(np.float32)


def embed_views(entries: list) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Every photo-like view of the models ``entries``: (N, EMBED_DIM) :func:`embed_image` vectors,
    each view's model index into ``entries`` and its (3, 3) world-to-camera rotation."""
    from tqdm import tqdm

    from training.eval_data import DataError, load_view

    feats, view_model, rots = [], [], []
    for m, e in enumerate(tqdm(entries, desc="embed views", unit="model")):
        for v in e.views:
            rgb, alpha, cam, meta = load_view(e, v)
            if meta.get("sketch", False):
                continue  # queries are photos
            feats.append(embed_image(rgb, alpha))
            view_model.append(m)
            rots.append(cam.R)
    if not feats:
        raise DataError("The train split has no photo views (only sketches): retrieval needs some.")
    return np.stack(feats), view_model, rots


def build_shape_bank(
    shapenet: str | Path,
    renders: str | Path,
    dim: int = 128,
    num_points: int = 256,
    resolution: int = 64,
    limit: int | None = None,
    extra_pool: bool = False,
) -> tuple[dict[str, torch.Tensor], dict]:
    """The :class:`recon_core.network.retrieval.ShapeBank` buffers of the train split, and a JSON-able description.

    ``extra_pool``: the train split of the extra pool's categories that are not held out too (their
    ``shape_category`` is -1: no category of the network's)."""
    from tqdm import tqdm

    from recon_core.mesh.volume import occupancy_grid, pack_grid
    from training.eval_data import DataError, load_world_mesh, shape_points, training_models

    lo, hi = RESOLUTION_RANGE
    if min(dim, num_points) < 1 or not lo <= resolution <= hi or (limit is not None and limit < 1):
        raise ValueError(f"--dim, --points and --limit must be >= 1 and --resolution from {lo} to {hi}, got {dim}, "
                         f"{num_points}, {limit} and {resolution}")
    entries = training_models(shapenet, renders, extra_pool)  # never a held-out category (training/holdout.py)
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise DataError("The train split has no rendered models: run build_dataset.py and render.py first.")
    x, view_model, rots = embed_views(entries)
    mean, basis = principal_components(x, dim)
    blobs, points = [], []
    for e in tqdm(entries, desc="solids", unit="model"):
        verts, faces = load_world_mesh(e.mesh_path)
        blobs.append(np.frombuffer(pack_grid(occupancy_grid(verts, faces, resolution, fill=False)), dtype=np.uint8))
        points.append(shape_points(e, num_points, seed=0))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
    tensors = {
        "embed_mean": torch.from_numpy(mean),
        "embed_basis": torch.from_numpy(basis),
        "view_features": torch.from_numpy((x - mean) @ basis),
        "view_shape": torch.tensor(view_model, dtype=torch.long),
        "view_rotation": torch.tensor(np.stack(rots), dtype=torch.float32),
        "shape_points": torch.stack(points).float(),
        "shape_category": torch.tensor([SYNSET_INDEX.get(e.synset, -1) for e in entries], dtype=torch.long),
        "grid_data": torch.from_numpy(np.concatenate(blobs).copy()),
        "grid_offsets": torch.from_numpy(offsets.astype(np.int64)),
    }
    info = {
        "extra_pool": extra_pool,
        "model_ids": [e.model_id for e in entries],
        "synsets": [e.synset for e in entries],
        "embed_version": EMBED_VERSION,
        "sizes": {
            "bank_shapes": len(entries),
            "bank_views": len(view_model),
            "bank_dim": int(basis.shape[1]),
            "bank_points": num_points,
            "bank_grid_bytes": int(offsets[-1]),
            "bank_resolution": resolution,
        },
    }
    return tensors, info


def trained_model(model_path: str | Path | None) -> tuple[torch.nn.Module, dict]:
    """``load_model(model_path)``; raises ``ValueError`` (``WeightsError``) when it has no trained weights."""
    from recon_core.io.weights import load_model

    base, meta = load_model(model_path)
    if not meta.get("trained", False):
        raise ValueError(f"the model {model_path or 'models/default'} has no trained weights to attach a bank to")
    return base, meta


def attach_bank(model_path: str | Path | None, tensors: dict[str, torch.Tensor], info: dict, out: str | Path,
                shape_weight: float = 1.0, loaded: tuple[torch.nn.Module, dict] | None = None) -> Path:
    """Save the network of ``model_path`` (None: the shipped default) with the bank as model ``out``.

    ``loaded``: :func:`trained_model`'s ``(network, metadata)`` of ``model_path`` when already loaded."""
    from recon_core.io.weights import save_model
    from recon_core.network.config import ModelConfig
    from recon_core.network.model import build_model

    base, meta = loaded or trained_model(model_path)
    fields = {**base.config.to_dict(), **info["sizes"], "shape_bank": True, "bank_shape_weight": shape_weight}
    model = build_model(ModelConfig(**fields))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("bank.")}
    state.update({f"bank.{k}": v for k, v in tensors.items()})
    model.load_state_dict(state)
    keep = {k: v for k, v in meta.items() if k not in ("model", "trained", "shape_bank")}
    keep["shape_bank"] = {
        "from_model": str(model_path or "models/default"),
        "train_models": info["sizes"]["bank_shapes"],
        "views": info["sizes"]["bank_views"],
        "extra_pool": bool(info.get("extra_pool", False)),
        "note": "built by training/build_shape_bank.py from the train split; the network's weights are unchanged",
    }
    return save_model(model, out, keep)


def _check_out(out: str | Path) -> None:
    """Raise ``ValueError`` when the output stem ``out`` cannot be written (a file where its folder would be)."""
    from recon_core.io.export import unwritable_reason

    reason = unwritable_reason(Path(out).parent, folder=True)  # a stem: only its folder matters
    if reason:
        raise ValueError(f"--out {out}: {reason}; give another output stem")


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/build_shape_bank.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="trained model to copy the network from (default: the shipped one)")
    p.add_argument("--out", required=True, help="output model stem (.safetensors + .json)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--dim", type=int, default=128, help="principal components of the picture embedding kept")
    p.add_argument("--points", type=int, default=256, help="surface points per training model")
    p.add_argument("--resolution", type=int, default=64,
                   help="cells per side of each model's solid, %d to %d (default: 64)" % RESOLUTION_RANGE)
    p.add_argument("--shape-weight", type=float, default=1.0,
                   help="weight of the reconstruction's distance against the picture's (0: the picture alone)")
    p.add_argument("--limit", type=int, default=None, help="only the first N training models, N >= 1 (tests)")
    p.add_argument("--extra-pool", action="store_true",
                   help="also the train split of the extra pool's categories that are not held out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from recon_core.io.weights import WeightsError, model_files
    from training.eval_data import DataError

    try:
        for name in ("dim", "points", "limit"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
        if not RESOLUTION_RANGE[0] <= args.resolution <= RESOLUTION_RANGE[1]:
            raise ValueError("--resolution must be from %d to %d cells a side, got %d"
                             % (*RESOLUTION_RANGE, args.resolution))
        if args.shape_weight < 0:
            raise ValueError(f"--shape-weight must be >= 0, got {args.shape_weight}")
        _check_out(args.out)
        loaded = trained_model(args.model)  # a model that cannot take a bank is said before the bank is built
        tic = time.perf_counter()
        tensors, info = build_shape_bank(args.shapenet, args.renders, args.dim, args.points, args.resolution,
                                         args.limit, args.extra_pool)
        stem = attach_bank(args.model, tensors, info, args.out, args.shape_weight, loaded)
    except (DataError, ValueError, OSError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = model_files(stem)[1].stat().st_size / 2**20
    s = info["sizes"]
    print(f"wrote {stem}.safetensors ({size:.1f} MB): {s['bank_shapes']} shapes, {s['bank_views']} views, "
          f"{s['bank_grid_bytes'] / 2**20:.2f} MB of solids, in {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
