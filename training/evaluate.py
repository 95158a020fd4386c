"""``recon-eval``: our model and three baselines on the test split, one protocol, one table.

Run from the repository root::

    python training/evaluate.py --model models/default --split test --limit 50
    python training/evaluate.py --other-categories                 # the held-out categories (training/holdout.py)
    python training/evaluate.py --curve runs/train/checkpoints/   # F1@0.3 against training step
    python training/evaluate.py --split val --style clipart        # the pictures redrawn (training/styles.py)

Data layout: :mod:`training.eval_data` (ShapeNet's, so ShapeNet or Pix3D arranged the same way works).

Protocol. Our model runs as users get it with ``recon-mesh --as-seen``, :meth:`Reconstructor.reconstruct(rgb,
alpha)` (network, repair, printable check), one image at a time; its output is in the output frame,
so each ground truth is posed the same way, ``p_out = VIEW_TO_OUTPUT @ R @ p_world``. Every
method's mesh is scored against the same ground truth with the protocol of
:func:`recon_core.mesh.metrics.compare_meshes` (Mesh R-CNN: GT long edge rescaled to 10, 10k points
sampled on each surface, Chamfer-L2, normal consistency, F1@0.1/0.3/0.5) and Pixel2Mesh's
F@tau, F@2tau (:func:`recon_core.mesh.metrics.pixel2mesh_fscore`) on the same points, in our frame
(:func:`score_meshes`; the tests check both against the metrics module). The silhouette IoU
(``Sil-IoU``, :func:`silhouette_iou`) rasterises each method's mesh with the view's true
camera (perspective, the render's resolution) and compares it with the rendered mask: every
prediction is in the output frame, centred on the camera's look-at point like the ground
truth, so ``p_cam = VIEW_TO_OUTPUT.T @ p_out + T``. Torch is seeded per sample, so the
numbers are repeatable. Per-category numbers are means over that category's samples; the
"mean" row is the mean over categories (as both papers report), the "all" row the mean over
samples. The baselines are defined in :mod:`training.baselines`. Our model's category
prediction is scored too: its accuracy (images of the 13 categories only) and the expected
calibration error of its confidence (:func:`training.scoring.expected_calibration_error`).

Picture styles (``--style``, :mod:`training.styles`): every method sees each view redrawn by
:func:`training.styles.stylize` (seeded with the sample's seed), without alpha for every style
but ``clean``; the ground truth, the camera and the mask of the silhouette IoU stay the
render's own (:func:`load_input` says why that is right for ``small_offcentre`` too).

Held-out categories (:mod:`training.holdout`): never trained on and never in the baselines'
index; ``--other-categories`` evaluates every model of them (all splits) instead of a split of
the 13 categories.

Outputs in ``--out``: ``metrics.json`` (everything), ``table.md`` (also printed) and
``contact_sheet.png`` (rows: input | ours | retrieval | ground truth).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from recon_core.network.categories import category_by_name
from training.baselines import (
    EMBED_VERSION,
    BaselineIndex,
    RetrievalIndex,
    embed_image,
    medoid,
    sphere_baseline,
    world_to_output,
)
from training.eval_data import (
    NOT_IN_RENDER_PIXELS,
    DataError,
    ModelEntry,
    Sample,
    background_photos,
    category_name,
    check_folder,
    discover,
    load_input,
    load_view,
    load_world_mesh,
    read_manifest,
    select_samples,
    shape_points,
    training_models,
)
from training.holdout import HELD_OUT_SYNSETS, is_held_out
from training.interrupt import one_sentence_on_ctrl_c
from training.scoring import (
    METHOD_LABELS,
    METHODS,
    METRICS,
    Prediction,
    candidate_diversity,
    candidate_summary,
    format_candidate_table,
    format_table,
    mean_of,
    score_meshes,
    silhouette_iou,
    summarize,
)
from training.sheets import candidate_sheet_png, contact_sheet_png, curve_png
from training.styles import STYLES

__all__ = [
    "build_baseline_index",
    "load_or_build_baseline_index",
    "evaluate_samples",
    "checkpoint_steps",
    "evaluate_curve",
    "finder_choice",
    "make_folder",
    "output_folder",
    "main",
]

log = logging.getLogger(__name__)


TABLE_NOTE = (
    "Scores on {n} {images} ({views} view(s) per model, {samples} points sampled per surface). "
    "Chamfer-L2 and the F1 thresholds are in Mesh R-CNN's "
    "units (each ground truth rescaled to a longest bounding-box edge of 10); F1 and F@τ (Pixel2Mesh, τ = 1e-4 on "
    "squared distances, scale 0.57) are ×100; Normal is normal consistency; Sil-IoU (×100) = intersection over "
    "union of the mesh's silhouette, rasterised with the view's true camera at the render's resolution, and the "
    "rendered object mask. *mean* = mean over categories, *all* = "
    "mean over images. Baselines: *silhouette ellipsoid* = unit sphere stretched to the mask's 2D box aspect, depth "
    "semi-axis the mean of the other two, bounding-box diagonal 1; *category mean shape* = medoid training model "
    "(Chamfer) of the category our model predicts, posed with the test view's TRUE rotation (\\* oracle pose); "
    "*nearest-view retrieval* = the training model of the nearest training view under a 32×32 silhouette + "
    "darkness embedding of the object crop, posed in that view's frame. Printable = share of our outputs passing "
    "the printable check after repair. Category = share of our category predictions that are right (images of "
    "the 13 categories); ECE = expected calibration error (×100) of that prediction's confidence (its top "
    "probability; 10 equal-width bins), over all images."
)
STYLE_NOTES = {
    "clean": "the renders as they are, with their alpha",
    "background": "each object over a background photograph (or a synthetic background when there are none), "
                  "no alpha",
    "jpeg": "on white, JPEG re-compressed at quality 40-90, no alpha",
    "clipart": "clip art: 3-6 flat colours, a thick dark outline and crease lines, on white, no alpha",
    "pencil": "pencil drawings on tinted paper in uneven light, no alpha",
    "small_offcentre": "each object at 25-45% of a white canvas twice the render's size, off centre, no alpha",
    "no_alpha": "the renders on white, no alpha",
}
"""One phrase per picture style (:data:`training.styles.STYLES`) for the table's note."""


# ----------------------------------------------------------------------------------------------- data


# -------------------------------------------------------------------------------------------- metrics


# ------------------------------------------------------------------------------------------ baselines


def _embedding_probe() -> bytes:
    """The embedding of a fixed synthetic image: changes whenever the embedding or the crop it uses changes."""
    yy, xx = np.mgrid[0:48, 0:64]
    alpha = (((xx - 30) / 20.0) ** 2 + ((yy - 22) / 14.0) ** 2 < 1).astype(np.uint8) * 255
    rgb = np.stack([xx * 4, yy * 5, 255 - xx * 3], axis=2).astype(np.uint8)
    return np.round(embed_image(rgb, alpha), 4).tobytes()


def _fingerprint(train: list[ModelEntry], index_views: int) -> str:
    h = hashlib.sha1(f"embed-v{EMBED_VERSION};views={index_views};".encode())
    h.update(_embedding_probe())
    for e in train:
        h.update(f"{e.synset}/{e.model_id}:{e.mesh_path}:{','.join(e.views)};".encode())
    return h.hexdigest()


def _index_views(entry: ModelEntry, index_views: int) -> tuple[str, ...]:
    if index_views <= 0 or index_views >= len(entry.views):
        return entry.views
    n = len(entry.views)
    return tuple(entry.views[(i * n) // index_views] for i in range(index_views))


def build_baseline_index(
    train: list[ModelEntry],
    index_views: int = 0,
    medoid_points: int = 1024,
    medoid_max_models: int = 48,
    progress: bool = True,
) -> BaselineIndex:
    """Embed the train split's views (retrieval) and find each category's medoid (mean shape).

    Args:
        train: the train split's models.
        index_views: views per model in the retrieval index (evenly spaced); 0 = all.
        medoid_points: points per model for the medoid's Chamfer distances.
        medoid_max_models: models per category considered for the medoid (evenly spaced over the sorted ids).
    """
    from tqdm import tqdm

    if not train:
        raise DataError("The train split is empty: the mean-shape and retrieval baselines need training models.")
    held = sorted({category_name(e.synset) for e in train if is_held_out(e.synset)})
    if held:
        raise DataError(f"The baselines' training models include held-out categories ({', '.join(held)}); "
                        "they must stay out of every index (training/holdout.py).")
    feats, ids, syns, views, rots = [], [], [], [], []
    jobs = [(e, v) for e in train for v in _index_views(e, index_views)]
    for e, v in tqdm(jobs, desc="retrieval index", unit="view", disable=not progress):
        rgb, alpha, cam, meta = load_view(e, v)
        if meta.get("sketch", False):
            continue  # queries are photos
        feats.append(embed_image(rgb, alpha).astype(np.float16))
        ids.append(e.model_id)
        syns.append(e.synset)
        views.append(v)
        rots.append(cam.R)
    if not feats:
        raise DataError("The train split has no photo views (only sketches): the retrieval baseline needs some.")
    retrieval = RetrievalIndex(np.stack(feats), np.asarray(ids), np.asarray(syns), np.asarray(views), np.stack(rots))

    by_cat: dict[str, list[ModelEntry]] = defaultdict(list)
    for e in train:
        by_cat[e.synset].append(e)
    medoids: dict[str, str] = {}
    reps: list[ModelEntry] = []
    for synset in tqdm(sorted(by_cat), desc="mean shapes", unit="category", disable=not progress):
        members = by_cat[synset]
        if len(members) > medoid_max_models:
            members = [members[(i * len(members)) // medoid_max_models] for i in range(medoid_max_models)]
        pts = torch.stack([shape_points(e, medoid_points, seed=i) for i, e in enumerate(members)])
        rep = members[medoid(pts)]
        medoids[synset] = rep.model_id
        reps.append(rep)
    pts = torch.stack([shape_points(e, medoid_points, seed=i) for i, e in enumerate(reps)])
    medoids["*"] = reps[medoid(pts)].model_id
    return BaselineIndex(retrieval, medoids, _fingerprint(train, index_views))


def load_or_build_baseline_index(
    train: list[ModelEntry], cache: str | Path | None, index_views: int = 0, progress: bool = True
) -> tuple[BaselineIndex, Path]:
    """The cached :class:`BaselineIndex` of ``train``, rebuilt (and saved) when missing or stale.

    ``cache`` None: ``runs/cache/baselines_<fingerprint>.npz``.
    """
    fp = _fingerprint(train, index_views)
    path = Path(cache) if cache else Path("runs/cache") / f"baselines_{fp[:12]}.npz"
    if path.is_file():
        try:
            index = BaselineIndex.load(path)
            if index.fingerprint == fp:
                log.info("baseline index loaded from %s", path)
                return index, path
            log.info("baseline index %s is stale: rebuilding", path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("baseline index %s unreadable (%s): rebuilding", path, err)
    index = build_baseline_index(train, index_views=index_views, progress=progress)
    index.save(path)
    return index, path


# ------------------------------------------------------------------------------------------ evaluation


Predictor = Callable[[np.ndarray, np.ndarray | None], Any]
"""``reconstruct(rgb, alpha)`` returning an object with ``verts``, ``faces``, ``category`` (name) and
``report.ok``: :meth:`recon_core.io.inference.Reconstructor.reconstruct`."""


@dataclass
class EvalResult:
    records: list[dict[str, Any]]
    sheet: list[dict[str, Any]]
    """For the first samples: ``input`` (tile² RGB crop) and ``ours``/``retrieval``/``gt`` :class:`Prediction`."""


def _synset_of(category: str) -> str | None:
    try:
        return category_by_name(category).synset
    except ValueError:
        return None


def evaluate_samples(
    samples: list[Sample],
    reconstruct: Predictor,
    index: BaselineIndex | None,
    train_by_id: dict[str, ModelEntry],
    num_samples: int = 10000,
    sheet_count: int = 8,
    tile: int = 128,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    style: str = "clean",
    backgrounds: Any = None,
    candidates: int = 1,
    given_mask: bool = False,
) -> EvalResult:
    """Run our model and the baselines on every sample; score them against the posed ground truth and the mask.

    Each record's ``metrics`` holds, per method, the keys of :data:`METRICS`: the point metrics
    of :func:`score_meshes` and the :func:`silhouette_iou` with the view's rendered mask.

    Args:
        samples: the test images (:func:`select_samples`).
        reconstruct: our model's user-facing ``reconstruct(rgb, alpha)``.
        index: train split's baseline index; None (or a method left out of ``methods``) drops
            the mean-shape and retrieval baselines.
        train_by_id: model id -> training :class:`ModelEntry` (meshes of retrieved / mean shapes).
        num_samples: points sampled on each surface.
        sheet_count: samples kept for the contact sheet.
        style: picture style every method sees (:func:`load_input`); the records name it.
        backgrounds: photographs of the ``background`` style (:func:`load_input`).
        given_mask: every method is given the render's own mask as the picture's alpha (:func:`load_input`).
        candidates: K > 1: ``reconstruct`` returns a list of candidate meshes (the first is scored as ours);
            each record gets ``candidates``: their count, F1@0.3 and confidences, the best F1@0.3 of them
            (``oracle_f1``) and :func:`candidate_diversity`.
    """
    from tqdm import tqdm

    from recon_core.io.image import ImageError
    from recon_core.network.crop import prepare_image

    records, sheet = [], []
    for s in tqdm(samples, desc="evaluate", unit="image", disable=not progress):
        rgb, alpha, cam, mask = load_input(s, style, backgrounds, given_mask)
        gt_v, gt_f = load_world_mesh(s.entry.mesh_path)
        gt = Prediction(world_to_output(gt_v, cam.R), gt_f)
        preds: dict[str, Prediction] = {}
        rec: dict[str, Any] = {
            "model_id": s.entry.model_id,
            "synset": s.entry.synset,
            "category": category_name(s.entry.synset),
            "view": s.view,
            "seed": s.seed,
            "style": style,
        }
        if "ours" in methods:
            start = time.perf_counter()
            others = []
            try:
                out = reconstruct(rgb, alpha)
                if candidates > 1:
                    out, others = out[0], list(out[1:])
            except ImageError as err:  # the picture was refused ("No object found"): a miss, not a crash
                out = None
                rec["refused"] = str(err)
            rec["seconds_ours"] = time.perf_counter() - start
            if out is not None:
                rec["timings_ours"] = dict(getattr(out, "timings", {}))
                preds["ours"] = Prediction(np.asarray(out.verts, dtype=np.float64),
                                           np.asarray(out.faces, dtype=np.int64))
                rec["predicted_category"] = out.category
                probs = getattr(out, "category_probs", None)
                rec["category_probs"] = None if probs is None else [float(x) for x in np.asarray(probs).ravel()]
                rec["printable"] = bool(out.report.ok)
        if "sphere" in methods:
            v, f, box = sphere_baseline(rgb, alpha)
            preds["sphere"] = Prediction(v, f)
            rec["mask_box"] = list(box)
        if index is not None and "mean_shape" in methods:
            synset = _synset_of(rec.get("predicted_category", "")) or s.entry.synset
            mid = index.medoids.get(synset)
            rec["mean_shape_fallback"] = mid is None
            mid = mid or index.medoids["*"]
            v, f = load_world_mesh(train_by_id[mid].mesh_path)
            preds["mean_shape"] = Prediction(world_to_output(v, cam.R), f)  # oracle pose
            rec["mean_shape_model"] = mid
        if index is not None and "retrieval" in methods:
            row, d2 = index.retrieval.query(embed_image(rgb, alpha))
            mid = str(index.retrieval.model_ids[row])
            v, f = load_world_mesh(train_by_id[mid].mesh_path)
            preds["retrieval"] = Prediction(world_to_output(v, index.retrieval.rotations[row]), f)
            rec.update(retrieved_model=mid, retrieved_view=str(index.retrieval.views[row]), retrieval_distance=d2)
        names = list(preds)
        start = time.perf_counter()
        extra = [Prediction(np.asarray(c.verts, dtype=np.float64), np.asarray(c.faces, dtype=np.int64)) for c in others]
        scores = score_meshes([preds[m] for m in names], gt, num_samples=num_samples, seed=s.seed)
        rec["metrics"] = {m: {**score, "Sil-IoU": silhouette_iou(preds[m].verts, preds[m].faces, cam, mask)}
                          for m, score in zip(names, scores)}
        if candidates > 1 and "ours" in preds:
            # scored apart, so that ours' figures are those of a run without candidates (same points, same seed)
            extra_scores = score_meshes(extra, gt, num_samples=num_samples, seed=s.seed) if extra else []
            f1 = [rec["metrics"]["ours"]["F1@0.3"]] + [score["F1@0.3"] for score in extra_scores]
            rec["candidates"] = {
                "count": len(f1),
                "F1@0.3": f1,
                "confidence": [getattr(c, "confidence", None) for c in [out, *others]],
                "printable": [bool(c.report.ok) for c in [out, *others]],
                "oracle_f1": max(f1),
                "diversity": candidate_diversity([preds["ours"], *extra], gt, seed=s.seed),
            }
        if "refused" in rec:  # no mesh: nothing found, nothing covered; the distances have no value
            rec["metrics"]["ours"] = {k: (None if k in ("Chamfer-L2", "NormalConsistency") else 0.0) for k in METRICS}
        rec["seconds_metrics"] = time.perf_counter() - start
        records.append(rec)
        if len(sheet) < sheet_count:
            prepared = prepare_image(rgb, alpha, tile)
            crop = prepared.image.numpy().transpose(1, 2, 0)
            if prepared.mask is not None:  # show the object on white
                m = prepared.mask.numpy()[..., None]
                crop = crop * m + (1.0 - m)
            row = {"input": (crop * 255 + 0.5).astype(np.uint8), "gt": gt}
            sheet.append({**row, "ours": preds.get("ours"), "retrieval": preds.get("retrieval"),
                          "candidates": [preds["ours"], *extra] if candidates > 1 and "ours" in preds else None})
    return EvalResult(records, sheet)


# ------------------------------------------------------------------------------------------- rendering


# ------------------------------------------------------------------------------------------ the curve


_STEP_RE = re.compile(r"step_(\d+)$")


def checkpoint_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, stem)`` of every ``step_*.safetensors`` with its ``.json`` in ``folder``, by step.

    The step is the JSON's ``steps`` (training steps in the weights, those of an
    ``--init-from`` model included) when it has one, else the number in the file name.
    """
    folder = Path(folder)
    check_folder(folder, "checkpoints", "--curve")
    out = []
    for p in folder.glob("step_*.safetensors"):
        m = _STEP_RE.match(p.stem)
        if m and p.with_suffix(".json").is_file():
            try:
                steps = json.loads(p.with_suffix(".json").read_text()).get("steps")
            except (OSError, ValueError, AttributeError):
                steps = None
            out.append((int(steps) if isinstance(steps, int) else int(m.group(1)), p.with_suffix("")))
    if not out:
        raise DataError(f"No step_*.safetensors checkpoints (with their .json) in {folder}; "
                        "point --curve at the training run's checkpoints folder.")
    return sorted(out)


def evaluate_curve(
    checkpoints: list[tuple[int, Path]],
    samples: list[Sample],
    num_samples: int = 10000,
    progress: bool = True,
    style: str = "clean",
    backgrounds: Any = None,
) -> list[dict[str, float]]:
    """Our model's metrics at each checkpoint on a fixed subset (pictures of ``style``, :func:`load_input`): one
    row per step.

    Each row: ``step``, ``F1@0.3`` and ``Chamfer-L2`` (means over the samples), ``printable``
    (share passing the check), ``n``.
    """
    from tqdm import tqdm

    from recon_core.io.inference import Reconstructor

    rows = []
    for step, stem in tqdm(checkpoints, desc="checkpoints", unit="ckpt", disable=not progress):
        rec = Reconstructor.from_file(stem)
        result = evaluate_samples(samples, rec.reconstruct, None, {}, num_samples, sheet_count=0,
                                  methods=("ours",), progress=False, style=style, backgrounds=backgrounds)
        scores = [r["metrics"]["ours"] for r in result.records]
        rows.append({
            "step": step,
            "F1@0.3": mean_of([s["F1@0.3"] for s in scores]),
            "Chamfer-L2": mean_of([s["Chamfer-L2"] for s in scores]),
            "printable": mean_of([float(r["printable"]) for r in result.records]),
            "n": len(scores),
        })
    return rows


# ------------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="recon-eval",
        description="Evaluate the model and three baselines (silhouette ellipsoid, category mean shape, "
        "nearest-view retrieval) on a split of a ShapeNet-layout data set, or plot F1@0.3 against training step.",
    )
    p.add_argument("--model", help="model to evaluate (NAME.safetensors + NAME.json; default: models/default)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--shapenet", default="data/shapenet", help="meshes + manifest.json (default: data/shapenet)")
    p.add_argument("--renders", default="data/renders", help="rendered views (default: data/renders)")
    p.add_argument("--views-per-model", type=int, default=1, help="evenly spaced views per test model (default: 1)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images (categories interleaved)")
    p.add_argument("--other-categories", action="store_true",
                   help="evaluate the held-out categories instead (training/holdout.py: never trained on, in no "
                        "index): every model of theirs, whatever its split (--split is ignored)")
    p.add_argument("--sketches", action="store_true", help="evaluate the sketch views instead of the photo views")
    p.add_argument("--style", choices=STYLES, default="clean",
                   help="redraw every picture in this style first (training/styles.py; all but clean drop the "
                        "alpha, so every method must find the object itself; default: clean)")
    p.add_argument("--given-mask", action="store_true",
                   help="give every method the render's own object mask as the picture's alpha, whatever the style "
                        "(what recon-mesh --mask does with a right mask): what finding the object costs")
    p.add_argument("--backgrounds", default="data/backgrounds",
                   help="photographs of --style background (training/build_backgrounds.py; none: synthetic "
                        "backgrounds; default: data/backgrounds)")
    p.add_argument("--finder", default=None, metavar="PATH|none",
                   help="object finder for pictures without alpha (default: models/finder when it is there; "
                        "none: the border-colour rule)")
    p.add_argument("--out", default="runs/eval", help="output folder (default: runs/eval)")
    p.add_argument("--samples", type=int, default=10000, help="points sampled per surface (default: 10000)")
    p.add_argument("--sheet", type=int, default=8,
                   help="images on the contact sheet (default: 8; 0: none, and an earlier run's sheets in --out are "
                        "removed, so that no sheet lies beside metrics it does not show)")
    p.add_argument("--tile", type=int, default=128,
                   help=f"contact-sheet tile side in pixels, at least {MIN_TILE} (default: 128)")
    p.add_argument("--cache", help="baseline index .npz (default: runs/cache/baselines_<hash>.npz; rebuilt when stale)")
    p.add_argument("--index-views", type=int, default=0,
                   help="training views per model in the retrieval index (0: all)")
    p.add_argument("--curve", metavar="DIR",
                   help="evaluate every step_*.safetensors in DIR; writes curve.csv and curve.png")
    p.add_argument("--curve-limit", type=int, default=24, help="images used for --curve (default: 24)")
    p.add_argument("--curve-earlier", metavar="CSV",
                   help="a curve.csv of the earlier steps (e.g. docs/f1_curve.csv, measured on the same images "
                        "before an --init-from run): its rows before this run's first step are kept")
    p.add_argument("--candidates", type=int, default=1, metavar="K",
                   help="also score our K candidate shapes (recon-mesh --candidates): the first is 'ours'; adds the "
                        "best of K (oracle) F1@0.3 and their diversity (mean pairwise Chamfer-L2) (default: 1)")
    p.add_argument("--solid", action="store_true",
                   help="our outputs with their sealed hollow pockets filled (recon-mesh --solid)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--debug", action="store_true", help="full tracebacks and debug logging")
    return p


def _read_curve_csv(path: str | Path) -> list[dict]:
    """Rows of a curve.csv written by ``--curve`` (step, F1@0.3, Chamfer-L2, printable, n)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--curve-earlier: {path} does not exist; give a curve.csv written by --curve.")
    try:
        with open(path, newline="") as f:
            return [{"step": int(r["step"]), "F1@0.3": float(r["F1@0.3"]), "Chamfer-L2": float(r["Chamfer-L2"]),
                     "printable": float(r["printable"]), "n": int(r["n"])} for r in csv.DictReader(f)]
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(f"--curve-earlier: {path} is not a curve.csv written by --curve ({err}).") from None


def _run_curve(args: argparse.Namespace, test: list[ModelEntry], out: Path) -> int:
    if args.given_mask:
        raise DataError("--given-mask is for one model's evaluation, not --curve; leave one of them out.")
    checkpoints = checkpoint_steps(args.curve)
    samples = select_samples(test, 1, args.curve_limit, args.sketches)
    earlier = _read_curve_csv(args.curve_earlier) if args.curve_earlier else []
    if any(r["n"] != len(samples) for r in earlier):
        raise DataError(f"--curve-earlier: {args.curve_earlier} was measured on other images than these "
                        f"{len(samples)}; use the same --curve-limit (and data set).")
    with output_folder(out, "--out"):
        rows = evaluate_curve(checkpoints, samples, args.samples, progress=not args.no_progress, style=args.style,
                              backgrounds=_backgrounds(args))
        rows = [r for r in earlier if r["step"] < rows[0]["step"]] + rows
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=["step", "F1@0.3", "Chamfer-L2", "printable", "n"])
        writer.writeheader()
        writer.writerows(rows)
        png = curve_png([r["step"] for r in rows], [r["F1@0.3"] for r in rows])
        _write_output(out / "curve.csv", text.getvalue().encode())
        _write_output(out / "curve.png", png)
    for r in rows:
        print(f"step {r['step']:>8}  F1@0.3 {100 * r['F1@0.3']:5.1f}  Chamfer-L2 {r['Chamfer-L2']:.3f}  "
              f"printable {100 * r['printable']:.0f}%")
    print(f"wrote {out / 'curve.csv'} and {out / 'curve.png'} ({len(samples)} images per checkpoint, "
          f"style {args.style})")
    return 0


def _backgrounds(args: argparse.Namespace):
    """The photographs of ``--style background`` (None for other styles, and for ``--backgrounds none``)."""
    if args.style != "background":
        return None
    return background_photos(args.backgrounds)


def finder_choice(value: str | None) -> str | bool:
    """``--finder``: None -> the shipped finder (True); "none" -> no finder (False); else its path, whose files must
    be there.

    Raises:
        DataError: the path names no object finder (its ``.json`` and ``.safetensors`` are not both there).
    """
    if value is None:
        return True
    if value.strip().lower() == "none":
        return False
    from recon_core.io.weights import model_files

    files = "it is no file name"
    if Path(value).name:
        cfg_path, weights_path = model_files(value)
        if cfg_path.is_file() and weights_path.is_file():
            return value
        files = f"{cfg_path} and {weights_path} are not both there"
    raise DataError(f"--finder {value!r} names no object finder ({files}): fix the path, leave --finder out for the "
                    "shipped finder, or give --finder none to find the object by the border colour.")


def make_folder(path: str | Path, what: str) -> Path | None:
    """Make the folder ``path`` (and its missing parents) before a run starts; returns the topmost folder it made
    (None: ``path`` was there), for :func:`output_folder` to take away again.

    Raises:
        DataError: ``path`` is a file, or cannot be made or written into; ``what`` names it (e.g. ``"--out"``).
    """
    from recon_core.io.export import unwritable_reason

    path = Path(path)
    reason = unwritable_reason(path, folder=True)
    if reason:
        raise DataError(f"{what} {path}: {reason}; give a folder that can be written.")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{what} {path} cannot be made ({err.strerror or err}); give a folder that can be "
                        "written.") from None
    if not os.access(path, os.W_OK):
        raise DataError(f"{what} {path} cannot be written into; give a folder that can be written.")
    return missing[-1] if missing else None


@contextmanager
def output_folder(path: str | Path, what: str):
    """Make the output folder ``path`` up front (:func:`make_folder`); when the block fails, the folders made here
    are taken away again (the outputs are written at its end, so they are empty)."""
    path = Path(path)
    made = make_folder(path, what)
    try:
        yield path
    except BaseException:
        if made is not None:
            for folder in (path, *path.parents):
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == made:
                    break
        raise


MIN_TILE = 16
"""The smallest contact-sheet tile side (``--tile``), pixels."""
_SHEET_FILES = frozenset({"contact_sheet.png", "candidates_sheet.png"})
"""The sheets an evaluation may write into ``--out``; one this run does not write is removed after the run."""


def _write_output(path: Path, data: bytes) -> None:
    """Write one output file atomically (a temporary file beside it, then a rename)."""
    from recon_core.io.export import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise DataError(f"{path} cannot be written ({err.strerror or err}); give an --out folder that can be "
                        "written.") from None


def _check_cache(cache: str | None) -> None:
    """``--cache``: a file name whose folder can be made."""
    if not cache:
        return
    path = Path(cache)
    if path.is_dir():
        raise DataError(f"--cache {path} is a folder; give the index's file name, e.g. {path / 'baselines.npz'}.")
    make_folder(path.parent, "the folder of --cache")


def _run(args: argparse.Namespace) -> int:
    from recon_core.io.inference import Reconstructor

    out = Path(args.out)
    if args.given_mask and args.style == "small_offcentre":
        raise DataError(NOT_IN_RENDER_PIXELS.format(style=args.style))  # before anything loads
    finder = finder_choice(args.finder)
    _backgrounds(args)  # a wrong --backgrounds is said before anything loads
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder; give a folder.")
    if args.other_categories:
        test = discover(args.shapenet, args.renders, None, held_out=True)
        if not test:
            raise DataError(f"No model of the held-out categories (training/holdout.py) has both a mesh under "
                            f"{args.shapenet} and renders under {args.renders}; build and render the data set's "
                            "extra pool (build_dataset.py, render.py --split all).")
    else:
        test = discover(args.shapenet, args.renders, args.split)
        if not test:
            splits = sorted({str(r.get("split")) for r in read_manifest(Path(args.shapenet)) if r.get("split")})
            if splits and args.split not in splits:
                raise DataError(f"--split {args.split}: the data set under {args.shapenet} has no such split; give "
                                f"one of {', '.join(splits)}.")
            raise DataError(
                f"No {args.split} models with both a mesh under {args.shapenet} and renders under {args.renders}; "
                "check the manifest's split names and the folders."
            )
    if args.curve:
        return _run_curve(args, test, out)
    samples = select_samples(test, args.views_per_model, args.limit, args.sketches)
    if not samples:
        raise DataError(f"No {'sketch' if args.sketches else 'photo'} views among the models to evaluate; "
                        f"{'leave out --sketches' if args.sketches else 'render the data set again'}.")
    rec = Reconstructor.from_file(args.model or None, finder=finder)  # load_model refuses a JSON without weights
    if args.candidates > 1 and not rec.banked:
        raise DataError(f"--candidates {args.candidates}: {args.model or 'models/default'} gives one shape per picture; "
                        "several candidates need a model with a shape bank.")
    _check_cache(args.cache)
    with output_folder(out, "--out"):
        return _evaluate(args, rec, samples, out)


def _evaluate(args: argparse.Namespace, rec, samples: list[Sample], out: Path) -> int:
    """The evaluation of :func:`_run`, its outputs written into the folder ``out`` (made already)."""
    # the baselines' index holds the same training models as our bank (build_shape_bank.py --extra-pool)
    extra_pool = bool((rec.metadata.get("shape_bank") or {}).get("extra_pool", False))
    train = training_models(args.shapenet, args.renders, extra_pool)
    methods, index, cache_path = METHODS, None, None
    if train:
        index, cache_path = load_or_build_baseline_index(train, args.cache, args.index_views,
                                                         progress=not args.no_progress)
    else:
        log.warning("no train split: the mean-shape and retrieval baselines are left out")
        methods = ("ours", "sphere")
    start = time.perf_counter()
    def predict(rgb, alpha):
        if args.candidates > 1:
            return rec.reconstruct_candidates(rgb, alpha, args.candidates, solid=args.solid)
        return rec.reconstruct(rgb, alpha, solid=args.solid)
    result = evaluate_samples(
        samples, predict, index, {e.model_id: e for e in train}, args.samples, args.sheet, args.tile,
        methods, progress=not args.no_progress, style=args.style, backgrounds=_backgrounds(args),
        candidates=args.candidates, given_mask=args.given_mask,
    )
    summary = summarize(result.records, methods)
    candidates = candidate_summary(result.records)
    images = (f"images of the {len(HELD_OUT_SYNSETS)} held-out categories, all splits, never trained on"
              if args.other_categories else f"{args.split} images")
    note = (f"Picture style *{args.style}*: {STYLE_NOTES[args.style]} (training/styles.py). "
            + TABLE_NOTE.format(n=len(samples), images=images, views=args.views_per_model, samples=args.samples))
    if extra_pool:
        note += (" Our shape bank and the baselines' training models include the train split of the extra pool's "
                 "categories that are not held out.")
    if args.given_mask:
        note += (" Every method was given the render's own object mask as the picture's alpha (--given-mask, as "
                 "recon-mesh --mask gives a right mask): no method had to find the object.")
    elif args.style != "clean":
        note += (" Our model finds the object in these pictures without alpha with the object finder "
                 f"({args.finder or 'models/finder'}, recon_core/network/finder.py)." if rec.finder is not None else
                 " Our model finds the object in these pictures without alpha by the border colour (no object finder).")
    refused = sum("refused" in r for r in result.records)
    if refused:
        note += (f" Our model refused {refused} picture(s) (no object found): they count as 0 F1 and 0 Sil-IoU, "
                 "without Chamfer or normal scores.")
    fallbacks = sum(bool(r.get("mean_shape_fallback")) for r in result.records)
    if fallbacks:
        note += (f" For {fallbacks} image(s) the predicted category has no training model: the mean shape there is "
                 "the medoid of all categories' medoids.")
    if not rec.trained:
        note += " The model is untrained (random weights)."
    table = format_table(summary, methods, note)
    if candidates is not None:
        table += (f"\n\nOur {args.candidates} candidate shapes (recon-mesh --candidates {args.candidates}): the first is "
                  "*ours* above; *best of K* is the highest F1@0.3 among them (an oracle: it knows the ground truth); "
                  "*diversity* is their mean pairwise Chamfer-L2 (Mesh R-CNN units, as above).\n\n"
                  + format_candidate_table(candidates))

    report = {
        "model": str(args.model or "models/default"),
        "model_trained": rec.trained,
        "split": "all (held-out categories)" if args.other_categories else args.split,
        "held_out_synsets": list(HELD_OUT_SYNSETS),
        "shapenet": str(args.shapenet),
        "renders": str(args.renders),
        "views_per_model": args.views_per_model,
        "style": args.style,
        "finder": "none" if rec.finder is None or args.given_mask else (args.finder or "models/finder"),
        "given_mask": args.given_mask,
        "solid": args.solid,
        "sketches": args.sketches,
        "images": len(samples),
        "num_samples": args.samples,
        "baseline_index": str(cache_path) if cache_path else None,
        "methods": {m: METHOD_LABELS[m] for m in methods},
        "note": note,
        "seconds": time.perf_counter() - start,
        "summary": summary,
        "candidates": args.candidates,
        "candidate_summary": candidates,
        "records": result.records,
    }
    files = {"table.md": (table + "\n").encode(),
             "metrics.json": (json.dumps(report, indent=1, default=float) + "\n").encode()}
    if result.sheet:
        files["contact_sheet.png"] = contact_sheet_png(result.sheet, args.tile)
        if args.candidates > 1:
            files["candidates_sheet.png"] = candidate_sheet_png(result.sheet, args.tile, args.candidates)
    printable = summary["all"]["methods"]["ours"]["Printable"]
    for name, data in files.items():
        _write_output(out / name, data)
    for name in _SHEET_FILES - set(files):  # an earlier run's sheet would pass for this run's
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as err:  # this run's files are written: said, not a failure of the run
            print(f"note: {out / name} is an earlier run's and could not be removed ({err.strerror or err}): it is "
                  "not this run's sheet.", file=sys.stderr)
    print(table)
    print("\nwrote " + ", ".join(str(out / name) for name in files))
    if candidates is not None and candidates["all"]["printable"] < 1.0:
        print(f"FAIL: only {100 * candidates['all']['printable']:.1f}% of the pictures have every candidate "
              "printable (must be 100%).", file=sys.stderr)
        return 3
    if printable < 1.0:
        print(f"FAIL: only {100 * printable:.1f}% of our outputs pass the printable check (must be 100%).",
              file=sys.stderr)
        return 3
    return 0


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from recon_core.io.image import ImageError
        from recon_core.io.weights import WeightsError

        if args.views_per_model < 1:
            raise DataError(f"--views-per-model must be at least 1, got {args.views_per_model}.")
        if args.limit is not None and args.limit < 1:
            raise DataError(f"--limit must be at least 1, got {args.limit}; leave it out to evaluate every image.")
        if args.samples < 1:
            raise DataError(f"--samples must be at least 1, got {args.samples}.")
        if args.curve and args.curve_limit < 1:
            raise DataError(f"--curve-limit must be at least 1, got {args.curve_limit}.")
        if args.candidates < 1:
            raise DataError(f"--candidates must be at least 1, got {args.candidates}.")
        if args.sheet < 0:
            raise DataError(f"--sheet must be 0 (no contact sheet) or more, got {args.sheet}.")
        if args.tile < MIN_TILE:
            raise DataError(f"--tile must be at least {MIN_TILE} pixels, got {args.tile}.")
        if args.index_views < 0:
            raise DataError(f"--index-views must be 0 (every view) or more, got {args.index_views}.")
        return _run(args)
    except (DataError, ImageError, WeightsError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
