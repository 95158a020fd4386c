"""Fit a model's size head: how large the object in a picture is, read from the picture.

    python training/fit_size.py --model models/default --weight 0.5

A shape-bank output's silhouette is fitted to the picture (posed, stretched and warped onto its mask), so it has
the picture's shape whatever its size; its size follows from the training solid's depth, which a picture does not
show, and the data's frame (bounding-box diagonal 1). On 123 validation pictures the output's longer side across
the view was off the true object's by 0.157 in log units (root mean square), and scaled by the best factor each
picture would have scored a silhouette IoU of 82 instead of 72.

The size head reads that side from the picture instead: ``e = w . g + b``, ``g`` the encoder's pooled features
(:attr:`recon_core.network.encoder.ImageEncoder.global_dim`, computed on the picture as inference prepares it) and
``e`` the log of the object's longer side across the view (the larger of its x and y extents in the view frame, data
units). It is ridge regression on every view of the model's training models (those of its shape bank; standardised
features, the strength chosen by cross-validation over models, :data:`FOLDS` folds), written to
``STEM.size.safetensors`` with the fingerprint of the weights it was fitted on
(:func:`recon_core.io.weights.weights_fingerprint`); ``--weight`` becomes ``model.size_weight`` in the model's JSON
(:func:`recon_core.mesh.silhouette.toward_size`: how far each output moves toward the head's reading). The network's
weights do not change. Choose ``--weight`` on the validation split (``training/evaluate.py --split val``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

__all__ = ["LAMBDAS", "FOLDS", "view_extent", "fit_ridge", "choose_lambda", "collect", "main"]

log = logging.getLogger("recon-fit-size")

LAMBDAS = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
"""Ridge strengths tried (on standardised features)."""
FOLDS = 5
"""Cross-validation folds; a model's views stay in one fold."""


def view_extent(world_verts: np.ndarray, R: np.ndarray) -> float:
    """The log of a world-frame mesh's longer side across a view of rotation ``R`` (3, 3): the larger of its x and y
    extents once turned into the view frame (``p_view = R p_world``)."""
    view = np.asarray(world_verts, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T
    return float(np.log(np.ptp(view[:, :2], axis=0).max()))


def fit_ridge(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Ridge regression on standardised features: ``(w, b)`` such that ``X @ w + b`` predicts ``y``.

    Each column of ``X`` (N, D) is standardised (mean 0, standard deviation 1; a constant column is left at 0), the
    weights minimise ``|Xs w - (y - mean y)|^2 + lam |w|^2``, and are mapped back to the raw features.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, np.inf)  # a constant feature gets weight 0
    Xs = (X - mu) / sd
    w = np.linalg.solve(Xs.T @ Xs + lam * np.eye(X.shape[1]), Xs.T @ (y - y.mean()))
    w = w / sd
    return w, float(y.mean() - mu @ w)


def choose_lambda(X: np.ndarray, y: np.ndarray, groups: np.ndarray, lambdas=LAMBDAS, folds: int = FOLDS,
                  seed: int = 0) -> tuple[float, dict[float, float]]:
    """The ridge strength of ``lambdas`` with the lowest cross-validated root mean square error, and each one's error.

    ``groups`` (N,) names each row's model: a model's rows share a fold (drawn with ``seed``), so a model is never
    predicted from its own views."""
    names = np.unique(groups)
    if len(names) < folds:
        raise ValueError(f"{folds} folds need at least {folds} models, got {len(names)}")
    # every fold gets models: the models in a random order, dealt out in turn
    fold_of = dict(zip(names[np.random.default_rng(seed).permutation(len(names))], np.arange(len(names)) % folds))
    fold = np.array([fold_of[g] for g in groups])
    errors = {}
    for lam in lambdas:
        squared = []
        for k in range(folds):
            test = fold == k
            w, b = fit_ridge(X[~test], y[~test], lam)
            squared.append((X[test] @ w + b - y[test]) ** 2)
        errors[lam] = float(np.sqrt(np.concatenate(squared).mean()))
    return min(errors, key=errors.get), errors


def collect(model, entries, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features (N, D) float32, extents (N,) float64, groups (N,))`` of every view of ``entries``: the model's
    pooled encoder features of the view prepared as inference prepares it, the true mesh's :func:`view_extent` in
    the view's camera, and the view's model id."""
    import torch
    from tqdm import tqdm

    from recon_core.network.crop import prepare_image
    from training.evaluate import load_view, load_world_mesh

    size = model.config.image_size
    features, extents, groups, batch = [], [], [], []

    def flush():
        with torch.inference_mode():
            _, pooled = model.encoder(torch.stack(batch), pyramid=False)
        features.append(pooled.float().numpy())
        batch.clear()

    items = [(e, v) for e in entries for v in e.views]
    for entry, view in tqdm(items, desc="views", unit="view", disable=not progress):
        rgb, alpha, cam, _ = load_view(entry, view)
        batch.append(prepare_image(rgb, alpha, size).image)
        verts, _ = load_world_mesh(entry.mesh_path)
        extents.append(view_extent(verts, cam.R))
        groups.append(entry.model_id)
        if len(batch) == 32:
            flush()
    if batch:
        flush()
    return np.concatenate(features), np.array(extents), np.array(groups)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recon-fit-size", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model stem (default: the shipped models/default)")
    p.add_argument("--out", default=None,
                   help="write the fitted model here instead (its .json and .size.safetensors, and a copy of the "
                        "weights; default: beside --model, which is changed in place)")
    p.add_argument("--weight", type=float, default=0.5,
                   help="model.size_weight: how far each output moves toward the head's reading, in (0, 1] "
                        "(default: 0.5, chosen on the validation split)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from safetensors.torch import load_file
    import torch

    from recon_core.io.export import atomic_write_bytes
    from recon_core.io.inference import Reconstructor
    from recon_core.io.weights import WeightsError, default_model_path, save_size_head, weights_fingerprint
    from training.evaluate import DataError, training_models

    if not 0 < args.weight <= 1:
        print(f"error: --weight must be in (0, 1], got {args.weight}", file=sys.stderr)
        return 2
    stem = Path(args.model) if args.model else default_model_path()
    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    out = Path(args.out) if args.out else stem
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        if not stem.with_suffix(".safetensors").is_file():
            raise WeightsError(f"{stem.with_suffix('.safetensors')} is missing: a size head is fitted on a trained "
                               "model's features.")
        fingerprint = weights_fingerprint(load_file(str(stem.with_suffix(".safetensors"))))
        rec = Reconstructor.from_file(stem, finder=False)
        if not rec.banked:
            raise WeightsError(f"{stem} has no shape bank: its size head would have nothing to scale.")
        extra = bool((meta.get("shape_bank") or {}).get("extra_pool", False))
        entries = training_models(args.shapenet, args.renders, extra)
        if len(entries) < 2:
            raise DataError(f"Fewer than two training models with renders under {args.renders}: build and render the "
                            "data set (training/build_dataset.py, training/render.py).")
        features, extents, groups = collect(rec.model, entries, progress=not args.no_progress)
    except (DataError, WeightsError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    folds = min(FOLDS, len(np.unique(groups)))
    lam, errors = choose_lambda(features, extents, groups, folds=folds)
    w, b = fit_ridge(features, extents, lam)
    spread = float(extents.std())
    print(f"{len(extents)} views of {len(entries)} training models: the log longer side across the view has a "
          f"standard deviation of {spread:.3f}; cross-validated error (RMS, {folds} folds over models) "
          + ", ".join(f"{k:g}: {v:.3f}" for k, v in errors.items()) + f"; ridge strength {lam:g}")
    if out != stem:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stem.with_suffix(".safetensors"), out.with_suffix(".safetensors"))
    record = {"views": int(len(extents)), "models": len(entries), "ridge": lam, "cv_rms": round(errors[lam], 4),
              "target_sd": round(spread, 4), "weight": args.weight,
              "command": "python training/fit_size.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    path = save_size_head(torch.from_numpy(w), b, out, fingerprint, {"record": json.dumps(record)})
    meta["model"]["size_weight"] = args.weight
    meta["size_head"] = record
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    print(f"wrote {path} and model.size_weight = {args.weight} into {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
