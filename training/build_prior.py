"""Build the retrieval prior's bank: every training model fitted by an ico-sphere, every training view embedded.

    python training/build_prior.py [--out data/prior/bank] [--dim 128] [--level 4]

For each model of the train split (the same models and views as the retrieval baseline of
``evaluate.py``):

* **template**: an ico-sphere fitted to the model's surface points (``points.npz`` of its
  renders) in the world frame, coarse to fine (levels 2 -> ``level``), by Adam on a vertex
  Chamfer distance plus edge-length and Laplacian regularisers, many models at once;
* **views**: every photo-like view's :func:`recon_core.retrieval.embed_image` vector and
  world-to-camera rotation.

The embeddings are reduced to ``dim`` principal components. Writes ``OUT.safetensors``
(the buffers of :class:`recon_core.retrieval.ShapePrior`) and ``OUT.json`` (model ids,
synsets, groups, sizes). ``train.py`` puts the bank into a ``model.coarse=retrieval``
network, which then carries it in its own weights file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from recon_core.categories import CATEGORIES
from recon_core.retrieval import EMBED_VERSION, embed_image
from recon_core.topology import IcoTopology, neighbour_mean
from recon_core.weights import atomic_write_bytes

__all__ = ["fit_templates", "principal_components", "embed_views", "build_bank", "load_bank", "main"]

log = logging.getLogger("build-prior")

_CATEGORY_INDEX = {c.synset: i for i, c in enumerate(CATEGORIES)}


def fit_templates(
    points: torch.Tensor,
    levels: tuple[int, ...] = (2, 3, 4),
    steps: tuple[int, ...] = (150, 100, 60),
    lr: float = 0.01,
    edge: float = 0.5,
    laplacian: float = 0.5,
    radius: float = 0.3,
) -> torch.Tensor:
    """Fit one ico-sphere to each point set, coarse to fine.

    The loss is the symmetric Chamfer distance between the mesh *vertices* and the points
    (mean squared nearest distances both ways), plus ``edge`` times the mean squared edge
    length and ``laplacian`` times the mean distance of a vertex to its neighbours' mean.

    Args:
        points: (B, P, 3) float surface points, one set per model.
        levels: ico levels to optimise at, in order (midpoint subdivision between them).
        steps: Adam steps at each level.

    Returns:
        (B, V, 3) float32 vertices at ``levels[-1]``.
    """
    from pytorch3d.ops import knn_points

    if points.dim() != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be (B, P, 3), got {tuple(points.shape)}")
    if len(levels) != len(steps):
        raise ValueError(f"one step count per level: {levels} vs {steps}")
    points = points.float()
    topo = IcoTopology(levels[0], levels[-1])
    centre = points.mean(dim=1, keepdim=True)
    verts = topo.sphere(levels[0])[None] * radius + centre
    for i, (level, n_steps) in enumerate(zip(levels, steps)):
        if i:
            for lv in range(levels[i - 1], level):
                (verts,) = topo.subdivide(lv, verts)
        edges = topo.edges(level)
        verts = verts.detach().requires_grad_(True)
        opt = torch.optim.Adam([verts], lr=lr / (2**i))
        for _ in range(n_steps):
            to_points = knn_points(verts, points, K=1).dists[..., 0].mean()
            to_verts = knn_points(points, verts, K=1).dists[..., 0].mean()
            edge_len2 = (verts[:, edges[:, 0]] - verts[:, edges[:, 1]]).pow(2).sum(-1).mean()
            lap = (verts - neighbour_mean(verts, edges)).norm(dim=-1).mean()
            loss = to_points + to_verts + edge * edge_len2 + laplacian * lap
            opt.zero_grad()
            loss.backward()
            opt.step()
    return verts.detach()


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

    from training.evaluate import DataError, load_view

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


def _read_groups(shapenet: Path) -> dict[str, str]:
    """Model id -> its manifest group (its own id when it has none)."""
    from training.evaluate import _read_manifest

    return {str(r["model_id"]): str(r.get("group") or r["model_id"]) for r in _read_manifest(shapenet)}


def build_bank(
    shapenet: str | Path,
    renders: str | Path,
    dim: int = 128,
    level: int = 4,
    steps: tuple[int, ...] = (150, 100, 60),
    batch: int = 32,
    num_points: int = 2000,
    limit: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit the templates and embed the views of the train split (see the module docstring).

    Returns:
        ``(tensors, info)``: the :class:`recon_core.retrieval.ShapePrior` buffers by name, and
        the JSON-able description (``model_ids``, ``synsets``, ``groups``, sizes).
    """
    from tqdm import tqdm

    from training.evaluate import DataError, _shape_points, discover

    entries = discover(shapenet, renders, "train")
    if limit is not None:
        entries = entries[:limit]
    if not entries:
        raise DataError("The train split has no rendered models: run build_dataset.py and render.py first.")
    groups_by_id = _read_groups(Path(shapenet))
    levels = tuple(range(2, level + 1))
    if len(steps) != len(levels):
        raise ValueError(f"--steps needs one count per level {levels}, got {steps}")

    templates = []
    for start in tqdm(range(0, len(entries), batch), desc="fit templates", unit="batch"):
        chunk = entries[start : start + batch]
        pts = torch.stack([_shape_points(e, num_points, seed=start + i) for i, e in enumerate(chunk)])
        templates.append(fit_templates(pts, levels=levels, steps=steps))
    templates_t = torch.cat(templates)

    x, view_tmpl, rots = embed_views(entries)
    mean, basis = principal_components(x, dim)
    group_names = sorted({groups_by_id.get(e.model_id, e.model_id) for e in entries})
    group_index = {g: i for i, g in enumerate(group_names)}
    tensors = {
        "embed_mean": torch.from_numpy(mean),
        "embed_basis": torch.from_numpy(basis),
        "view_features": torch.from_numpy((x - mean) @ basis),
        "view_template": torch.tensor(view_tmpl, dtype=torch.long),
        "view_rotation": torch.tensor(np.stack(rots), dtype=torch.float32),
        "templates": templates_t.float(),
        "template_category": torch.tensor([_CATEGORY_INDEX.get(e.synset, -1) for e in entries], dtype=torch.long),
        "template_group": torch.tensor([group_index[groups_by_id.get(e.model_id, e.model_id)] for e in entries],
                                       dtype=torch.long),
    }
    info = {
        "model_ids": [e.model_id for e in entries],
        "synsets": [e.synset for e in entries],
        "groups": [groups_by_id.get(e.model_id, e.model_id) for e in entries],
        "prior_templates": len(entries),
        "prior_views": len(view_tmpl),
        "prior_dim": int(basis.shape[1]),
        "prior_level": level,
        "embed_version": EMBED_VERSION,
        "fit_steps": list(steps),
        "fit_points": num_points,
    }
    return tensors, info


def save_bank(tensors: dict[str, torch.Tensor], info: dict, stem: str | Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically."""
    from safetensors.torch import save

    stem = _bank_stem(stem)
    atomic_write_bytes(_with(stem, ".safetensors"), save({k: v.contiguous() for k, v in tensors.items()}))
    atomic_write_bytes(_with(stem, ".json"), json.dumps(info, indent=1).encode())
    return stem


def _bank_stem(path: str | Path) -> Path:
    """The bank's stem: ``path`` without a ``.safetensors``/``.json`` extension (other dots are kept)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _with(stem: Path, extension: str) -> Path:
    return stem.parent / (stem.name + extension)


def load_bank(stem: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a bank written by :func:`save_bank`; raises ``FileNotFoundError`` naming the command that builds it."""
    from safetensors.torch import load_file

    stem = _bank_stem(stem)
    weights, meta = _with(stem, ".safetensors"), _with(stem, ".json")
    if not (weights.is_file() and meta.is_file()):
        raise FileNotFoundError(f"No retrieval bank at {stem}(.safetensors/.json): build it with "
                                "python training/build_prior.py --out " + str(stem))
    from safetensors import SafetensorError

    rebuild = "rebuild it (python training/build_prior.py --out " + str(stem) + ")"
    try:
        info = json.loads(meta.read_text())
        tensors = load_file(str(weights))
    except (json.JSONDecodeError, SafetensorError, OSError) as err:
        raise ValueError(f"The retrieval bank {stem} is unreadable ({err}); {rebuild}.") from None
    if not isinstance(info, dict) or info.get("embed_version") != EMBED_VERSION:
        raise ValueError(f"The retrieval bank {stem} was built with another embedding; {rebuild}.")
    missing = [k for k in _INFO_KEYS if k not in info] + [k for k in _TENSOR_KEYS if k not in tensors]
    if missing:
        raise ValueError(f"The retrieval bank {stem} lacks {', '.join(missing)}; {rebuild}.")
    return tensors, info


_INFO_KEYS = ("model_ids", "prior_templates", "prior_views", "prior_dim", "prior_level")
_TENSOR_KEYS = ("embed_mean", "embed_basis", "view_features", "view_template", "view_rotation", "templates",
                "template_category", "template_group")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="build-prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--out", default="data/prior/bank", help="output stem (.safetensors + .json)")
    p.add_argument("--dim", type=int, default=128, help="principal components of the embedding kept")
    p.add_argument("--level", type=int, default=4, help="ico level of the templates (4: 2,562 vertices)")
    p.add_argument("--steps", default="150,100,60", help="Adam steps per level, comma-separated")
    p.add_argument("--batch", type=int, default=32, help="models fitted at once")
    p.add_argument("--limit", type=int, default=None, help="only the first N training models (tests)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from training.evaluate import DataError

    try:
        if args.dim < 1:
            raise ValueError(f"--dim must be at least 1, got {args.dim}")
        steps = tuple(int(s) for s in args.steps.split(","))
        tic = time.perf_counter()
        tensors, info = build_bank(args.shapenet, args.renders, args.dim, args.level, steps, args.batch,
                                   limit=args.limit)
        stem = save_bank(tensors, info, args.out)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {stem}.safetensors: {info['prior_templates']} templates, {info['prior_views']} views, "
          f"{info['prior_dim']} dims, in {time.perf_counter() - tic:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
