"""``recon-eval``: our model and three baselines on the test split, one protocol, one table.

Run from the repository root::

    python training/evaluate.py --model models/default --split test --limit 50
    python training/evaluate.py --other-categories                 # the held-out categories (training/holdout.py)
    python training/evaluate.py --curve runs/train/checkpoints/   # F1@0.3 against training step
    python training/evaluate.py --split val --style clipart        # the pictures redrawn (training/styles.py)

Data layout (ShapeNet's, so ShapeNet or Pix3D arranged the same way works):

* ``--shapenet``: ``<synset>/<model_id>/models/model_normalized.obj`` (or ``model.obj``, or any
  single ``.obj/.ply/.off/.stl/.glb`` in the model's folder), world frame normalised to a
  bounding-box diagonal of 1 (:mod:`recon_core.mesh.camera`); ``manifest.json`` lists
  ``{"model_id", "synset", "split"}`` records (a list, or ``{"models": [...]}``). Without a
  manifest, models are split by a hash of their id: 80 % train, 10 % val, 10 % test.
* ``--renders``: ``<synset>/<model_id>/NNN.png`` (RGBA, alpha = object mask) with ``NNN.json``
  (the camera, :meth:`recon_core.mesh.camera.Camera.to_json`, possibly under a ``"camera"`` key) and
  ``NNN_mask.png`` (the object mask, L; without it the PNG's alpha is the mask).

Protocol. Our model runs exactly as users get it, :meth:`Reconstructor.reconstruct(rgb, alpha)`
(network, repair, printable check), one image at a time; its output is in the output frame,
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
calibration error of its confidence (:func:`expected_calibration_error`).

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
import math
import os
import re
import sys
import time
from collections import OrderedDict, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from recon_core.mesh.camera import VIEW_TO_OUTPUT, Camera, rotation_x, rotation_y
from recon_core.network.categories import CATEGORIES, category_by_name
from training.baselines import (
    EMBED_VERSION,
    BaselineIndex,
    RetrievalIndex,
    embed_image,
    medoid,
    sphere_baseline,
    world_to_output,
)
from training.holdout import HELD_OUT_SYNSETS, is_held_out
from training.readers.rules import EXTRA_SYNSETS
from training.styles import STYLES
from training.interrupt import one_sentence_on_ctrl_c
from training.npz import NPZ_ERRORS

__all__ = [
    "DataError",
    "ModelEntry",
    "Sample",
    "Prediction",
    "METHODS",
    "POINT_METRICS",
    "METRICS",
    "discover",
    "select_samples",
    "load_world_mesh",
    "load_view",
    "load_mask",
    "load_depth",
    "load_input",
    "point_metrics",
    "score_meshes",
    "expected_calibration_error",
    "summarize",
    "format_table",
    "build_baseline_index",
    "load_or_build_baseline_index",
    "evaluate_samples",
    "silhouette",
    "silhouette_iou",
    "render_mesh",
    "contact_sheet",
    "evaluate_curve",
    "plot_curve",
    "finder_choice",
    "make_folder",
    "output_folder",
    "main",
]

log = logging.getLogger(__name__)

METHODS = ("ours", "sphere", "mean_shape", "retrieval")
"""Methods of the table, in column order."""
METHOD_LABELS = {
    "ours": "ours",
    "sphere": "silhouette ellipsoid",
    "mean_shape": "category mean shape*",
    "retrieval": "nearest-view retrieval",
}
POINT_METRICS = ("Chamfer-L2", "NormalConsistency", "F1@0.1", "F1@0.3", "F1@0.5", "P2M-F@1e-04", "P2M-F@2e-04")
"""Metrics of the points sampled on the surfaces (:func:`score_meshes`)."""
METRICS = POINT_METRICS + ("Sil-IoU",)
"""Per-sample metrics (keys of the JSON): the point metrics and :func:`silhouette_iou`; ``Printable``
(ours only) is added by :func:`summarize`."""
_HEADERS = {
    "Chamfer-L2": "Chamfer-L2 ↓",
    "NormalConsistency": "Normal ↑",
    "F1@0.1": "F1@0.1 ↑",
    "F1@0.3": "F1@0.3 ↑",
    "F1@0.5": "F1@0.5 ↑",
    "P2M-F@1e-04": "F@τ ↑",
    "P2M-F@2e-04": "F@2τ ↑",
    "Sil-IoU": "Sil-IoU ↑",
    "CategoryAccuracy": "category ↑",
    "CategoryECE": "ECE ↓",
}
_OURS_ONLY = ("CategoryAccuracy", "CategoryECE")
"""Columns of our model's category prediction (:func:`summarize`), after ``printable``."""
_LOWER_IS_BETTER = {"Chamfer-L2"}
_MESH_NAMES = ("models/model_normalized.obj", "model_normalized.obj", "model.obj")
_MESH_EXTS = (".obj", ".ply", ".off", ".stl", ".glb")
_HASH_SPLIT = (("train", 8), ("val", 1), ("test", 1))
"""Split of a data set without manifest: tenths of the hash of the model id."""

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


class DataError(ValueError):
    """A data folder that cannot be evaluated; the message is one sentence naming the fix."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the data set with its mesh and rendered views."""

    model_id: str
    synset: str
    split: str
    mesh_path: Path
    render_dir: Path
    views: tuple[str, ...]
    """Stems of the views (``NNN`` for ``NNN.png`` + ``NNN.json``), sorted."""


@dataclass(frozen=True)
class Sample:
    """One test image: a model and one of its views; ``seed`` makes its point sampling repeatable."""

    entry: ModelEntry
    view: str
    seed: int


@dataclass
class Prediction:
    """One method's mesh for one image, in the output frame."""

    verts: np.ndarray
    """(V, 3) float64."""
    faces: np.ndarray
    """(F, 3) int64."""
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- data


_EXTRA_NAMES = {synset: name for name, synset in EXTRA_SYNSETS.items()}


def _category_name(synset: str) -> str:
    """The name of one of the 13 categories or of the extra pool (held-out ones included), else the synset."""
    for c in CATEGORIES:
        if c.synset == synset:
            return c.name
    return _EXTRA_NAMES.get(synset, synset)


_KNOWN_SYNSETS = frozenset(c.synset for c in CATEGORIES)


def _category_order(name: str) -> tuple[int, str]:
    names = [c.name for c in CATEGORIES]
    return (names.index(name), name) if name in names else (len(names), name)


def _hash_split(model_id: str) -> str:
    tenth = int(hashlib.sha1(model_id.encode()).hexdigest(), 16) % 10
    for name, share in _HASH_SPLIT:
        if tenth < share:
            return name
        tenth -= share
    return _HASH_SPLIT[-1][0]


def _find_mesh(shapenet: Path, record: dict[str, Any]) -> Path | None:
    """The mesh of a manifest record: its ``mesh`` path if given, else the ShapeNet names under the
    root (or its ``pool`` / ``extra`` sub-folder, as the data-set builder stores them)."""
    if record.get("mesh"):
        path = shapenet / str(record["mesh"])
        return path if path.is_file() else None
    rel = Path(str(record["synset"])) / str(record["model_id"])
    for base in (shapenet, shapenet / str(record.get("pool", "")), shapenet / "extra"):
        folder = base / rel
        for name in _MESH_NAMES:
            if (folder / name).is_file():
                return folder / name
        for sub in (folder, folder / "models"):
            if sub.is_dir():
                found = sorted(p for p in sub.iterdir() if p.suffix.lower() in _MESH_EXTS and p.is_file())
                if found:
                    return found[0]
    return None


def _read_manifest(shapenet: Path) -> list[dict[str, Any]]:
    path = shapenet / "manifest.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:  # not text, or not JSON
            raise DataError(f"{path} cannot be read ({err}); rebuild the data set or fix the file.") from None
        records = data.get("models", data) if isinstance(data, dict) else data
        well_formed = isinstance(records, list) and all(
            isinstance(r, dict) and "model_id" in r and "synset" in r for r in records
        )
        if not well_formed:
            raise DataError(f"{path} must be a list of {{model_id, synset, split}} records (or {{\"models\": [...]}}).")
        return records
    records = []
    for synset_dir in sorted(p for p in shapenet.iterdir() if p.is_dir()):
        for model_dir in sorted(p for p in synset_dir.iterdir() if p.is_dir()):
            split = _hash_split(model_dir.name)
            records.append({"model_id": model_dir.name, "synset": synset_dir.name, "split": split})
    return records


def _check_folder(path: Path, what: str, flag: str) -> None:
    if not path.is_dir():
        raise DataError(f"The {what} folder {path} does not exist; pass the right one with {flag}.")


def discover(
    shapenet: str | Path, renders: str | Path, split: str | None, held_out: bool = False, extra: bool = False
) -> list[ModelEntry]:
    """Models of ``split`` (None: every split) that have both a mesh and a rendered view, sorted by (synset, id).

    Models missing either are skipped with a warning. Without ``held_out`` or ``extra``, only the 13
    categories the network knows (the data set's extra pool, held-out categories included,
    is left out); with ``held_out``, only the held-out categories
    (:data:`training.holdout.HELD_OUT_SYNSETS`); with ``extra``, only the extra pool's categories
    that are not held out.

    Raises:
        DataError: a folder or the manifest is missing or malformed.
    """
    if held_out and extra:
        raise ValueError("held_out and extra are two different pools: ask for one")
    if held_out:
        wanted = is_held_out
    elif extra:
        def wanted(synset: str) -> bool:
            return synset not in _KNOWN_SYNSETS and not is_held_out(synset)
    else:
        wanted = _KNOWN_SYNSETS.__contains__
    shapenet, renders = Path(shapenet), Path(renders)
    _check_folder(shapenet, "meshes", "--shapenet")
    _check_folder(renders, "renders", "--renders")
    out, no_mesh, no_views = [], 0, 0
    for rec in _read_manifest(shapenet):
        if split is not None and str(rec.get("split", "")) != split:
            continue
        synset, model_id = str(rec["synset"]), str(rec["model_id"])
        if not wanted(synset):
            continue
        mesh = _find_mesh(shapenet, rec)
        if mesh is None:
            no_mesh += 1
            continue
        render_dir = renders / synset / model_id
        views = ()
        if render_dir.is_dir():
            views = tuple(sorted(p.stem for p in render_dir.glob("*.png") if p.with_suffix(".json").is_file()))
        if not views:
            no_views += 1
            continue
        out.append(ModelEntry(model_id, synset, str(rec.get("split", "")), mesh, render_dir, views))
    if no_mesh or no_views:
        log.warning("%s: skipped %d model(s) without a mesh and %d without rendered views",
                    "held-out categories" if held_out else ("extra pool, " if extra else "") + f"split {split}",
                    no_mesh, no_views)
    return sorted(out, key=lambda e: (e.synset, e.model_id))


def training_models(shapenet: str | Path, renders: str | Path, extra_pool: bool = False) -> list[ModelEntry]:
    """The training models of a shape bank and of the baselines' index: the train split of the 13 categories and,
    with ``extra_pool``, of the extra pool's categories that are not held out (:func:`discover`)."""
    entries = discover(shapenet, renders, "train")
    if extra_pool:
        entries += discover(shapenet, renders, "train", extra=True)
    return entries


def is_sketch(entry: ModelEntry, view: str) -> bool:
    """Whether a view is a line drawing (its camera JSON has ``"sketch": true``)."""
    try:
        return bool(json.loads((entry.render_dir / f"{view}.json").read_text()).get("sketch", False))
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def select_samples(
    entries: list[ModelEntry], views_per_model: int = 1, limit: int | None = None, sketches: bool = False
) -> list[Sample]:
    """Deterministic test images: ``views_per_model`` evenly spaced views of each model.

    Only photo-like views are used, or only sketch views with ``sketches=True``. Categories
    are interleaved (round robin over the sorted models of each category), so that the first
    ``limit`` samples cover every category. A sample's seed is its position in that order.
    """
    if views_per_model < 1:
        raise ValueError(f"views_per_model must be >= 1, got {views_per_model}")
    by_cat: dict[str, list[tuple[ModelEntry, str]]] = defaultdict(list)
    for e in entries:
        views = [v for v in e.views if is_sketch(e, v) == sketches]
        n, k = len(views), min(views_per_model, len(views))
        by_cat[e.synset] += [(e, views[(i * n) // k]) for i in range(k)]
    queues = [by_cat[k] for k in sorted(by_cat)]
    ordered = []
    for i in range(max((len(q) for q in queues), default=0)):
        ordered += [q[i] for q in queues if i < len(q)]
    if limit is not None:
        ordered = ordered[: max(limit, 0)]
    return [Sample(e, v, seed=i) for i, (e, v) in enumerate(ordered)]


@lru_cache(maxsize=64)
def _load_mesh_cached(path: str) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as err:  # noqa: BLE001 - trimesh raises many types for bad files
        raise DataError(f"The mesh {path} cannot be read ({type(err).__name__}: {err}); re-export it.") from None
    verts = np.asarray(getattr(mesh, "vertices", np.empty((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.empty((0, 3))), dtype=np.int64)
    if len(verts) == 0 or len(faces) == 0:
        raise DataError(f"The mesh {path} has no triangles; re-export it as a triangle mesh.")
    verts.flags.writeable = False
    faces.flags.writeable = False
    return verts, faces


def load_world_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float64 world-frame vertices and (F, 3) int64 faces of a mesh file (cached, read-only)."""
    return _load_mesh_cached(str(path))


def load_view(entry: ModelEntry, view: str) -> tuple[np.ndarray, np.ndarray | None, Camera, dict[str, Any]]:
    """``(rgb, alpha, camera, metadata)`` of one rendered view, the image read as users' images are.

    ``alpha`` is the PNG's alpha channel; when the PNG is opaque (renders composited over a
    background) it is ``NNN_mask.png`` if present. ``metadata`` is the view's JSON.
    """
    from PIL import Image

    from recon_core.io.image import load_image

    rgb, alpha, _ = load_image(entry.render_dir / f"{view}.png")
    mask_path = entry.render_dir / f"{view}_mask.png"
    if alpha is None and mask_path.is_file():
        with Image.open(mask_path) as im:
            alpha = np.asarray(im.convert("L"), dtype=np.uint8)
        if alpha.shape != rgb.shape[:2] or alpha.max() == 0:
            alpha = None
    path = entry.render_dir / f"{view}.json"
    try:
        data = json.loads(path.read_text())
        camera = Camera.from_json(data.get("camera", data))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"The camera file {path} cannot be read ({err}); re-render this model.") from None
    return rgb, alpha, camera, data


def load_mask(entry: ModelEntry, view: str, camera: Camera) -> np.ndarray:
    """(H, W) bool object mask of a rendered view: ``NNN_mask.png`` > 127, else the PNG's alpha > 127.

    ``(H, W)`` is ``(camera.height, camera.width)``, the view's camera (:func:`load_view`).

    Raises:
        DataError: the view has neither mask nor alpha, or its mask is empty or of another size.
    """
    from PIL import Image

    png, mask_path = entry.render_dir / f"{view}.png", entry.render_dir / f"{view}_mask.png"
    path = mask_path if mask_path.is_file() else png
    try:
        with Image.open(path) as im:
            if path == mask_path:
                mask = np.asarray(im.convert("L")) > 127
            elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                mask = np.asarray(im.convert("RGBA").getchannel("A")) > 127
            else:
                raise DataError(f"The view {png} has neither {mask_path.name} nor an alpha channel; re-render it.")
    except OSError as err:
        raise DataError(f"The mask {path} cannot be read ({err}); re-render this model.") from None
    if mask.shape != (camera.height, camera.width):
        raise DataError(f"The mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels but its camera "
                        f"{camera.width}x{camera.height}; re-render this model.")
    if not mask.any():
        raise DataError(f"The mask {path} is empty; re-render this model.")
    return mask


def load_depth(entry: ModelEntry, view: str, camera: Camera) -> np.ndarray:
    """(H, W) float32 camera-frame z of a rendered view, 0 off the object (``NNN_depth.npy``).

    Raises:
        DataError: the file is missing, unreadable or not of the camera's size.
    """
    path = entry.render_dir / f"{view}_depth.npy"
    if not path.is_file():
        raise DataError(f"The depth {path} is missing: picture styles draw from it; re-render this model "
                        "(training/render.py writes it).")
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"The depth {path} cannot be read ({err}); re-render this model.") from None
    if depth.shape != (camera.height, camera.width):
        raise DataError(f"The depth {path} is {depth.shape} but its camera {camera.width}x{camera.height}; "
                        "re-render this model.")
    return depth.astype(np.float32)


_NOT_IN_RENDER_PIXELS = ("--given-mask: the {style} pictures are not in the render's pixels, so its mask cannot be "
                         "laid over them; choose another style.")


def load_input(
    sample: Sample, style: str = "clean", backgrounds: Any = None, given_mask: bool = False
) -> tuple[np.ndarray, np.ndarray | None, Camera, np.ndarray]:
    """What every method sees of a sample, and what its silhouette is scored against.

    ``clean``: the view as :func:`load_view` reads it. Any other style: the view redrawn by
    :func:`training.styles.stylize` with the sample's seed, from its colour and alpha (the mask
    when the PNG has none), mask and depth (:func:`load_depth`); the alpha is then dropped.

    The camera and mask are always the render's own. For ``small_offcentre`` the picture is the
    render's pixels moved by a similarity ``x' = s x + t`` (the object scaled about 25-45 % of a
    larger canvas, shifted); its true camera is ``K' = [[s, 0, t_u], [0, s, t_v], [0, 0, 1]] @ K``
    and its mask the render's moved the same way, so a mesh's silhouette moves with it and the
    IoU (a ratio of areas) is the same, and measured at the render's resolution, exactly.

    Args:
        sample: the test image.
        style: one of :data:`training.styles.STYLES`.
        backgrounds: photographs of the ``background`` style (:class:`training.augment.BackgroundPhotos`
            or a folder); None: synthetic backgrounds.
        given_mask: the picture's alpha is the render's own mask (``mask * 255``), whatever the style: what
            ``recon-mesh --mask`` does with a right mask, so no method has to find the object. Not for
            ``small_offcentre``, whose picture is not in the render's pixels.

    Returns:
        ``(rgb, alpha, camera, mask)``: (H', W', 3) uint8 picture, (H', W') uint8 alpha or None,
        the view's camera, its (H, W) bool mask (:func:`load_mask`).
    """
    from training.styles import stylize

    rgb, alpha, cam, _ = load_view(sample.entry, sample.view)
    mask = load_mask(sample.entry, sample.view, cam)
    if style == "clean":
        picture, picture_alpha = rgb, alpha
    else:
        depth = load_depth(sample.entry, sample.view, cam)
        cover = alpha if alpha is not None else (mask * np.uint8(255))
        rgba = np.concatenate([rgb, cover[..., None]], axis=2)
        picture, picture_alpha = stylize(rgba, mask, depth, cam.K, style, sample.seed, backgrounds)
    if given_mask:
        if picture.shape[:2] != mask.shape:
            raise DataError(_NOT_IN_RENDER_PIXELS.format(style=style))
        picture_alpha = mask.astype(np.uint8) * np.uint8(255)
    return picture, picture_alpha, cam, mask


# -------------------------------------------------------------------------------------------- metrics


def point_metrics(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    pred_normals: torch.Tensor,
    gt_normals: torch.Tensor,
    scale: float,
) -> dict[str, torch.Tensor]:
    """Both protocols' metrics from one nearest-neighbour pass, on points in data units.

    Mesh R-CNN's (:func:`recon_core.mesh.metrics.sampling_metrics` on the points multiplied by
    ``scale``, the factor that gives the ground truth a long edge of ``GT_LONG_EDGE``) and
    Pixel2Mesh's F-scores: :func:`recon_core.mesh.metrics.pixel2mesh_fscore` thresholds squared
    distances ``(P2M_SCALE * d)² < tau``, i.e. Euclidean ``scale * d < scale * sqrt(tau) / P2M_SCALE``
    in the rescaled units, so they are ``F1`` at those extra thresholds (the test checks the
    two agree).

    Args:
        pred_points, pred_normals: (B, P, 3) float, data units.
        gt_points, gt_normals: (B, G, 3) float, data units.
        scale: Mesh R-CNN's rescaling factor.

    Returns:
        Keys of :data:`POINT_METRICS` -> (B,) float tensors.
    """
    from recon_core.mesh.metrics import MESHRCNN_THRESHOLDS, P2M_SCALE, P2M_TAUS, sampling_metrics

    p2m = {f"P2M-F@{tau:.0e}": scale * math.sqrt(tau) / P2M_SCALE for tau in P2M_TAUS}
    m = sampling_metrics(pred_points * scale, gt_points * scale, pred_normals, gt_normals,
                         thresholds=tuple(MESHRCNN_THRESHOLDS) + tuple(p2m.values()))
    out = {k: m[k] for k in ("Chamfer-L2", "NormalConsistency")}
    out.update({f"F1@{t:g}": m[f"F1@{t:g}"] for t in MESHRCNN_THRESHOLDS})
    out.update({name: m[f"F1@{t:g}"] for name, t in p2m.items()})
    return out


@torch.no_grad()
def score_meshes(
    preds: list[Prediction], gt: Prediction, num_samples: int = 10000, seed: int = 0
) -> list[dict[str, float]]:
    """Score several predictions against one ground truth (all in the same frame, data units).

    The protocol of :func:`recon_core.mesh.metrics.compare_meshes` (rescale each pair so the ground
    truth's longest bounding-box edge is 10, sample ``num_samples`` points with normals on each
    surface, :func:`recon_core.mesh.metrics.sampling_metrics`) plus Pixel2Mesh's F-scores on the same
    points (:func:`point_metrics`), so one nearest-neighbour pass serves both. The ground truth
    is sampled once for all predictions. Torch is seeded with ``seed``.

    Returns:
        One dict per prediction with the keys of :data:`POINT_METRICS`.
    """
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.structures import Meshes

    from recon_core.mesh.metrics import GT_LONG_EDGE

    def meshes(items: list[Prediction]) -> Meshes:
        return Meshes(
            verts=[torch.tensor(np.asarray(p.verts), dtype=torch.float32) for p in items],
            faces=[torch.tensor(np.asarray(p.faces), dtype=torch.int64) for p in items],
        )

    torch.manual_seed(seed)
    pred_m, gt_m = meshes(preds), meshes([gt])
    bbox = gt_m.get_bounding_boxes()[0]  # (3, 2)
    long_edge = float((bbox[:, 1] - bbox[:, 0]).max())
    if not long_edge > 0:
        raise DataError("A ground-truth mesh has an empty bounding box; it cannot be evaluated.")
    pred_pts, pred_n = sample_points_from_meshes(pred_m, num_samples, return_normals=True)
    gt_pts, gt_n = sample_points_from_meshes(gt_m, num_samples, return_normals=True)
    b = len(preds)
    m = point_metrics(pred_pts, gt_pts.expand(b, -1, -1), pred_n, gt_n.expand(b, -1, -1), GT_LONG_EDGE / long_edge)
    return [{k: float(m[k][i]) for k in POINT_METRICS} for i in range(b)]


DIVERSITY_SAMPLES = 2000
"""Points sampled on each candidate for :func:`candidate_diversity`."""


@torch.no_grad()
def candidate_diversity(preds: list[Prediction], gt: Prediction, num_samples: int = DIVERSITY_SAMPLES,
                        seed: int = 0) -> float | None:
    """Mean pairwise Chamfer-L2 between candidate meshes, in Mesh R-CNN's units (the ground truth's longest
    bounding-box edge rescaled to 10, as :func:`score_meshes` scores them); None for fewer than two.

    Chamfer-L2 of two point sets is the mean squared distance from each point of one to the nearest of the
    other, summed over both directions (:func:`recon_core.mesh.metrics.sampling_metrics`'s definition).
    """
    if len(preds) < 2:
        return None
    from pytorch3d.ops import knn_points, sample_points_from_meshes
    from pytorch3d.structures import Meshes

    from recon_core.mesh.metrics import GT_LONG_EDGE

    torch.manual_seed(seed)
    long_edge = float(np.ptp(np.asarray(gt.verts), axis=0).max())
    meshes = Meshes(verts=[torch.tensor(np.asarray(p.verts), dtype=torch.float32) for p in preds],
                    faces=[torch.tensor(np.asarray(p.faces), dtype=torch.int64) for p in preds])
    points = sample_points_from_meshes(meshes, num_samples) * (GT_LONG_EDGE / long_edge)
    values = []
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            a, b = points[i : i + 1], points[j : j + 1]
            d_ab = knn_points(a, b, K=1).dists[0, :, 0].mean()
            d_ba = knn_points(b, a, K=1).dists[0, :, 0].mean()
            values.append(float(d_ab + d_ba))
    return float(np.mean(values))


def candidate_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per category (and the mean over categories, and over images) of the records' ``candidates``: the
    first candidate's F1@0.3 (ours), the best of them (oracle) and the diversity; None without candidates."""
    have = [r for r in records if "candidates" in r]
    if not have:
        return None
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in have:
        groups[r["category"]].append(r)

    def block(recs: list[dict[str, Any]]) -> dict[str, float]:
        return {"n": len(recs),
                "first_f1": _mean([r["candidates"]["F1@0.3"][0] for r in recs]),
                "oracle_f1": _mean([r["candidates"]["oracle_f1"] for r in recs]),
                "diversity": _mean([r["candidates"]["diversity"] for r in recs]),
                "count": _mean([r["candidates"]["count"] for r in recs]),
                "printable": _mean([float(all(r["candidates"]["printable"])) for r in recs])}

    per = OrderedDict((name, block(groups[name])) for name in sorted(groups, key=_category_order))
    mean = {k: _mean([b[k] for b in per.values()]) for k in ("first_f1", "oracle_f1", "diversity", "count", "printable")}
    return {"per_category": per, "mean": {"n": len(have), **mean}, "all": block(have)}


def format_candidate_table(summary: dict[str, Any]) -> str:
    """Markdown table of :func:`candidate_summary`."""
    lines = ["| category | n | candidates | first F1@0.3 ↑ | best of K F1@0.3 (oracle) ↑ | diversity (Chamfer-L2) "
             "| every candidate printable |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    rows = [*summary["per_category"].items(), ("**mean** (categories)", summary["mean"]), ("**all** (images)",
                                                                                           summary["all"])]
    for name, b in rows:
        lines.append(f"| {name} | {b['n']} | {b['count']:.1f} | {100 * b['first_f1']:.1f} | {100 * b['oracle_f1']:.1f} "
                     f"| {b['diversity']:.3f} | {100 * b['printable']:.0f}% |")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


ECE_BINS = 10
"""Equal-width confidence bins of :func:`expected_calibration_error`."""


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of a classifier's top-probability confidence (Guo et al. 2017).

    ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over ``bins`` equal-width bins of the
    confidence ``max_c probs[i, c]``, bin ``b`` holding the confidences in ``(b / bins, (b + 1) / bins]``
    (the first also 0); a prediction is right when its arg-max is the label.

    Args:
        probs: (N, C) float class probabilities, N >= 1.
        labels: (N,) int true class indices.
        bins: number of bins.

    Returns:
        The ECE in [0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) == 0 or labels.shape != (len(probs),):
        raise ValueError(f"probs must be (N, C) with N >= 1 and labels (N,), got {probs.shape} and {labels.shape}")
    confidence = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # (N,) bin of each
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # summed per bin
    return float(np.abs(gap).sum() / len(probs))


_CATEGORY_SYNSETS = tuple(c.synset for c in CATEGORIES)


def _category_scores(recs: list[dict[str, Any]], with_ece: bool) -> dict[str, float]:
    """``CategoryAccuracy`` (and with ``with_ece``, ``CategoryECE``) of our model on the records of the 13
    categories that have its prediction; NaN without any."""
    known = [r for r in recs if r.get("synset") in _CATEGORY_SYNSETS and "predicted_category" in r]
    out = {"CategoryAccuracy": _mean([float(r["predicted_category"] == r["category"]) for r in known])}
    if with_ece:
        scored = [r for r in known if r.get("category_probs") is not None]
        out["CategoryECE"] = (expected_calibration_error(
            np.array([r["category_probs"] for r in scored]),
            np.array([_CATEGORY_SYNSETS.index(r["synset"]) for r in scored])) if scored else float("nan"))
    return out


def summarize(records: list[dict[str, Any]], methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Aggregate per-sample records into per-category, class-mean and instance-mean tables.

    Args:
        records: dicts with ``category`` (name), ``synset``, ``metrics`` (method -> metric -> value)
            and, for our model, ``printable`` (bool), ``predicted_category`` (name) and
            ``category_probs`` ((13,) in ``CATEGORIES`` order, or None).
        methods: methods to aggregate (a method missing from a record is skipped there).

    Returns:
        ``{"per_category": {name: {"n": int, "methods": {method: {metric: mean}}}},
        "mean": {...same without per-category}, "all": {...}}``; ``ours`` also gets
        ``Printable``, the share of its outputs that passed the printable check, and
        ``CategoryAccuracy``, the share of its category predictions that are right over the
        images of the 13 categories (NaN without any; the mean row: the mean over categories);
        the ``all`` row's ``ours`` also gets ``CategoryECE``, the
        :func:`expected_calibration_error` of those predictions.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["category"]].append(r)

    def block(recs: list[dict[str, Any]], with_ece: bool = False) -> dict[str, dict[str, float]]:
        out = {}
        for m in methods:
            have = [r["metrics"][m] for r in recs if m in r.get("metrics", {})]
            if not have:
                continue
            out[m] = {k: _mean([h.get(k) for h in have]) for k in METRICS}
            if m == "ours":
                out[m]["Printable"] = _mean([float(bool(r["printable"])) for r in recs if "printable" in r])
                out[m].update(_category_scores(recs, with_ece))
        return out

    per_category = OrderedDict(
        (name, {"n": len(groups[name]), "methods": block(groups[name])}) for name in sorted(groups, key=_category_order)
    )
    class_mean: dict[str, dict[str, float]] = {}
    for m in methods:
        rows = [c["methods"][m] for c in per_category.values() if m in c["methods"]]
        if rows:
            class_mean[m] = {k: _mean([r.get(k) for r in rows]) for k in rows[0]}
    return {
        "per_category": per_category,
        "mean": {"n": len(records), "categories": len(per_category), "methods": class_mean},
        "all": {"n": len(records), "methods": block(records, with_ece=True)},
    }


def _fmt(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if metric == "Chamfer-L2":
        return f"{value:.3f}"
    if metric == "NormalConsistency":
        return f"{value:.3f}"
    if metric in ("Printable", "CategoryAccuracy"):
        return f"{100 * value:.0f}%"
    return f"{100 * value:.1f}"


def format_table(summary: dict[str, Any], methods: tuple[str, ...] = METHODS, note: str | None = None) -> str:
    """A markdown table: one block of rows per category (one row per method), then *mean* and *all*.

    The best value of each metric within a block is bold. The last columns are our model's
    category accuracy and calibration error (:func:`summarize`), "—" where there are none.
    """
    header = ["category", "n", "method"] + [_HEADERS[k] for k in METRICS] + ["printable"] + [
        _HEADERS[k] for k in _OURS_ONLY]
    align = ["---", "--:", "---"] + ["--:"] * (len(METRICS) + 1 + len(_OURS_ONLY))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]

    def rows(label: str, n: int, block: dict[str, dict[str, float]]) -> None:
        present = [m for m in methods if m in block]
        best = {}
        for k in METRICS:
            vals = [(block[m][k], m) for m in present if math.isfinite(block[m].get(k, float("nan")))]
            if len(vals) > 1:
                best[k] = (min if k in _LOWER_IS_BETTER else max)(vals)[1]
        for i, m in enumerate(present):
            cells = [label if i == 0 else "", str(n) if i == 0 else "", METHOD_LABELS.get(m, m)]
            for k in METRICS:
                text = _fmt(k, block[m].get(k))
                cells.append(f"**{text}**" if best.get(k) == m else text)
            cells.append(_fmt("Printable", block[m].get("Printable")) if "Printable" in block[m] else "—")
            cells += [_fmt(k, block[m].get(k)) for k in _OURS_ONLY]
            lines.append("| " + " | ".join(cells) + " |")

    for name, cat in summary["per_category"].items():
        rows(name, cat["n"], cat["methods"])
    rows(f"**mean** ({summary['mean']['categories']} categories)", summary["mean"]["n"], summary["mean"]["methods"])
    rows("**all** (images)", summary["all"]["n"], summary["all"]["methods"])
    text = "\n".join(lines)
    return text + ("\n\n" + note if note else "")


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


def _shape_points(entry: ModelEntry, num_points: int, seed: int) -> torch.Tensor:
    """(num_points, 3) world-frame points of a model: its ``points.npz`` if present, else sampled on the mesh."""
    npz = entry.render_dir / "points.npz"
    rng = np.random.default_rng(seed)
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as data:
                pts = np.asarray(data["points"] if "points" in data.files else data[data.files[0]], dtype=np.float32)
            if pts.ndim == 2 and pts.shape[1] == 3 and len(pts):
                return torch.from_numpy(pts[rng.choice(len(pts), num_points, replace=len(pts) < num_points)])
        except NPZ_ERRORS:
            log.warning("unreadable %s: sampling the mesh instead", npz)
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.structures import Meshes

    verts, faces = load_world_mesh(entry.mesh_path)
    torch.manual_seed(seed)
    mesh = Meshes([torch.tensor(verts, dtype=torch.float32)], [torch.tensor(faces)])
    return sample_points_from_meshes(mesh, num_points)[0]


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
    held = sorted({_category_name(e.synset) for e in train if is_held_out(e.synset)})
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
        pts = torch.stack([_shape_points(e, medoid_points, seed=i) for i, e in enumerate(members)])
        rep = members[medoid(pts)]
        medoids[synset] = rep.model_id
        reps.append(rep)
    pts = torch.stack([_shape_points(e, medoid_points, seed=i) for i, e in enumerate(reps)])
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
            "category": _category_name(s.entry.synset),
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


SHEET_VIEW = rotation_x(25.0) @ rotation_y(-35.0)
"""Rotation applied to output-frame meshes for the contact sheet: a 3/4 view from the front right, above."""
_LIGHT = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])
_COLOURS = {"ours": (95, 140, 215), "retrieval": (225, 150, 70), "gt": (120, 175, 110)}


def _cross2(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """z component of the cross product of (..., 2) vectors."""
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Z-buffer: index of the nearest face covering each pixel centre, -1 for none.

    Args:
        xy: (V, 2) pixel coordinates (u right, v down; pixel (i, j) has centre (j + 0.5, i + 0.5)).
        depth: (V,) smaller is nearer.
        faces: (F, 3) int.
        size: image side, or ``(height, width)``.

    Returns:
        (height, width) int64.
    """
    height, width = (size, size) if np.isscalar(size) else size
    bounds = np.array([width, height])  # (2,) as (u, v)
    tri = xy[faces]  # (F, 3, 2)
    z = depth[faces]  # (F, 3)
    lo = np.clip(np.ceil(tri.min(axis=1) - 0.5), 0, bounds).astype(np.int64)  # (F, 2) first pixel index
    hi = np.clip(np.floor(tri.max(axis=1) - 0.5), -1, bounds - 1).astype(np.int64)  # last pixel index
    (a, b, c) = (tri[:, 0], tri[:, 1], tri[:, 2])
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ext = (hi - lo + 1).max(axis=1)
    keep = np.flatnonzero((hi >= lo).all(axis=1) & (np.abs(area) > 1e-12))
    pix_all, z_all, f_all = [], [], []
    k_max = int(ext[keep].max()) if len(keep) else 0
    k = 1
    while k // 2 < k_max:  # faces grouped by the power of two that bounds their pixel box
        sel = keep[(ext[keep] <= k) & (ext[keep] > k // 2)]
        oy, ox = np.mgrid[0:k, 0:k]
        offs = np.stack([ox.ravel(), oy.ravel()], axis=1)  # (k², 2) as (du, dv)
        chunk = max(1, 2_000_000 // (k * k))
        for start in range(0, len(sel), chunk):
            f = sel[start : start + chunk]
            px = lo[f][:, None, :] + offs[None]  # (n, k², 2)
            valid = (px <= hi[f][:, None, :]).all(axis=2)
            p = px + 0.5
            pa, pb, pc = a[f][:, None], b[f][:, None], c[f][:, None]
            w0 = _cross2(pb - p, pc - p) / area[f][:, None]  # barycentric weight of a
            w1 = _cross2(pc - p, pa - p) / area[f][:, None]  # of b
            w2 = 1.0 - w0 - w1
            inside = valid & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            zz = w0 * z[f][:, 0:1] + w1 * z[f][:, 1:2] + w2 * z[f][:, 2:3]
            n_idx, o_idx = np.nonzero(inside)
            pix_all.append(px[n_idx, o_idx, 1] * width + px[n_idx, o_idx, 0])
            z_all.append(zz[n_idx, o_idx])
            f_all.append(f[n_idx])
        k *= 2
    image = np.full(height * width, -1, dtype=np.int64)
    if pix_all:
        pix, zs, fs = np.concatenate(pix_all), np.concatenate(z_all), np.concatenate(f_all)
        order = np.lexsort((zs, pix))
        pix, fs = pix[order], fs[order]
        first = np.ones(len(pix), dtype=bool)
        first[1:] = pix[1:] != pix[:-1]
        image[pix[first]] = fs[first]
    return image.reshape(height, width)


NEAR = 1e-3
"""Camera-frame depth (data units) of the near plane that :func:`silhouette` clips meshes at."""


def _clip_near(tri: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Clip camera-frame triangles to the half-space ``z >= near``.

    A triangle with one vertex behind the plane becomes two, one with two behind becomes one
    smaller triangle, one with three behind is dropped.

    Args:
        tri: (F, 3, 3) float camera-frame vertices of each triangle.

    Returns:
        (F', 3, 3) float64.
    """
    tri = np.asarray(tri, dtype=np.float64)
    behind = tri[..., 2] < near  # (F, 3)
    count = behind.sum(axis=1)  # (F,)
    out = [tri[count == 0]]
    for k in (1, 2):
        sel, b = tri[count == k], behind[count == k]
        lone = np.argmax(b if k == 1 else ~b, axis=1)  # (n,) the vertex alone on its side of the plane
        order = (lone[:, None] + np.arange(3)) % 3  # (n, 3) cyclic, so the lone vertex comes first
        a, p, q = np.moveaxis(np.take_along_axis(sel, order[..., None], axis=1), 1, 0)  # each (n, 3)
        ap = a + (p - a) * ((near - a[:, 2]) / (p[:, 2] - a[:, 2]))[:, None]  # on the plane, along a-p
        aq = a + (q - a) * ((near - a[:, 2]) / (q[:, 2] - a[:, 2]))[:, None]
        if k == 1:  # a behind: the quad (ap, p, q, aq) is in front
            out += [np.stack([ap, p, q], axis=1), np.stack([ap, q, aq], axis=1)]
        else:  # a alone in front
            out.append(np.stack([a, ap, aq], axis=1))
    return np.concatenate(out)


def silhouette(verts: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixels covered by an output-frame mesh seen through a view's camera (perspective).

    The mesh is placed as the evaluation's ground truth is, ``p_out = VIEW_TO_OUTPUT @ R @ p_world``,
    so ``p_cam = VIEW_TO_OUTPUT.T @ p_out + T`` (:mod:`recon_core.mesh.camera`); it is clipped at the
    near plane ``z = NEAR`` and a pixel is covered when its centre is in a projected triangle
    (:func:`_rasterize`, edges included).

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        camera: the view's camera.

    Returns:
        (camera.height, camera.width) bool.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    p_cam = verts @ VIEW_TO_OUTPUT + camera.T  # rows: VIEW_TO_OUTPUT.T @ p_out + T
    tri = _clip_near(p_cam[faces]).reshape(-1, 3)  # (3 F', 3)
    uvw = tri @ camera.K.T
    xy = uvw[:, :2] / uvw[:, 2:3]
    soup = np.arange(len(tri), dtype=np.int64).reshape(-1, 3)
    return _rasterize(xy, tri[:, 2], soup, (camera.height, camera.width)) >= 0


def silhouette_iou(verts: np.ndarray, faces: np.ndarray, camera: Camera, mask: np.ndarray) -> float:
    """Intersection over union of an output-frame mesh's :func:`silhouette` and an object mask.

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        camera: the view's camera.
        mask: (camera.height, camera.width) bool object mask of the view.

    Returns:
        The IoU in [0, 1].

    Raises:
        ValueError: the mask is empty or not of the camera's size.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (camera.height, camera.width):
        raise ValueError(f"mask must have the camera's shape {(camera.height, camera.width)}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: its IoU with a silhouette is undefined")
    sil = silhouette(verts, faces, camera)
    return float((sil & mask).sum() / (sil | mask).sum())


def render_mesh(
    verts: np.ndarray,
    faces: np.ndarray,
    size: int = 128,
    centre: np.ndarray | None = None,
    radius: float | None = None,
    colour: tuple[int, int, int] = (160, 160, 160),
    rotation: np.ndarray = SHEET_VIEW,
) -> np.ndarray:
    """Shaded orthographic picture of an output-frame mesh, seen through ``rotation`` (white background).

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        size: image side in pixels.
        centre, radius: the sphere mapped onto the image (default: the mesh's bounding box centre
            and half-diagonal), so that several meshes can share one framing.
        colour: base RGB; Lambert shading, two-sided (ground truths have mixed winding).

    Returns:
        (size, size, 3) uint8.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if centre is None:
        centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    if radius is None:
        radius = float(np.linalg.norm(verts.max(axis=0) - verts.min(axis=0))) / 2
    p = (verts - centre) @ rotation.T * (0.95 / max(radius, 1e-9))
    xy = np.stack([(p[:, 0] + 1) / 2 * size, (1 - p[:, 1]) / 2 * size], axis=1)
    face_id = _rasterize(xy, -p[:, 2], faces, size)
    tri = p[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    shade = 0.25 + 0.75 * np.abs(normals @ _LIGHT)
    out = np.full((size, size, 3), 255.0)
    hit = face_id >= 0
    out[hit] = shade[face_id[hit]][:, None] * np.asarray(colour, dtype=np.float64)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


SHEET_COLUMNS = ("input", "ours", "retrieval", "ground truth")
SHEET_HEADER = 18
"""Height in pixels of the contact sheet's label row."""
_SHEET_KEYS = list(zip(SHEET_COLUMNS[1:], ("ours", "retrieval", "gt")))
"""``(label, key)`` of the contact sheet's columns after the input."""


def contact_sheet(rows: list[dict[str, Any]], path: str | Path, tile: int = 128) -> Path:
    """Write a PNG: a label row, then one row per sample: input | ours | retrieval | ground truth.

    Size: ``(4 * tile) x (SHEET_HEADER + len(rows) * tile)``. Meshes of a row share the
    ground truth's framing, so sizes compare; a missing method leaves a grey tile.
    """
    return _write_png(path, _sheet_png(rows, tile, _SHEET_KEYS))


def candidate_sheet(rows: list[dict[str, Any]], path: str | Path, tile: int = 128, count: int = 3) -> Path:
    """Write a PNG of our candidates: input | candidate 1 | ... | candidate ``count`` | ground truth, one row a sample
    (each row's ``candidates``: its :class:`Prediction` list, the most confident first); as :func:`contact_sheet`."""
    rows = _with_candidates(rows)
    return _write_png(path, _sheet_png(rows, tile, _candidate_keys(count)))


def _candidate_keys(count: int) -> list[tuple[str, str]]:
    """``(label, key)`` of the candidate sheet's columns after the input (:func:`candidate_sheet`)."""
    return [(f"candidate {k + 1}", f"candidate_{k + 1}") for k in range(count)] + [("ground truth", "gt")]


def _with_candidates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its ``candidates`` under ``candidate_1``, ``candidate_2``, ... (:func:`candidate_sheet`)."""
    return [{**row, **{f"candidate_{k + 1}": c for k, c in enumerate(row.get("candidates") or [])}} for row in rows]


def _write_png(path: str | Path, png: bytes) -> Path:
    """Write a PNG's bytes atomically (a temporary file, then a rename), its folder made if need be."""
    from recon_core.io.export import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, png)
    return path


def _sheet_png(rows: list[dict[str, Any]], tile: int, columns: list[tuple[str, str]]) -> bytes:
    """The PNG of :func:`contact_sheet`: the input, then a tile per ``(label, key)`` of ``columns`` (the row's
    :class:`Prediction` under ``key``, framed as the row's ground truth; grey when it has none)."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", ((1 + len(columns)) * tile, SHEET_HEADER + len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(["input"] + [label for label, _ in columns]):
        draw.text((j * tile + 4, 3), name, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        gt: Prediction = row["gt"]
        centre = (gt.verts.min(axis=0) + gt.verts.max(axis=0)) / 2
        radius = float(np.linalg.norm(gt.verts.max(axis=0) - gt.verts.min(axis=0))) / 2
        tiles = [np.asarray(Image.fromarray(row["input"]).resize((tile, tile)))]
        for _, key in columns:
            pred = row.get(key)
            if pred is None:
                tiles.append(np.full((tile, tile, 3), 200, dtype=np.uint8))
            else:
                tiles.append(render_mesh(pred.verts, pred.faces, tile, centre, radius,
                                         _COLOURS.get(key, _COLOURS["ours"])))
        for j, t in enumerate(tiles):
            sheet.paste(Image.fromarray(t), (j * tile, SHEET_HEADER + i * tile))
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return png.getvalue()


# ------------------------------------------------------------------------------------------ the curve


_STEP_RE = re.compile(r"step_(\d+)$")


def checkpoint_steps(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, stem)`` of every ``step_*.safetensors`` with its ``.json`` in ``folder``, by step.

    The step is the JSON's ``steps`` (training steps in the weights, those of an
    ``--init-from`` model included) when it has one, else the number in the file name.
    """
    folder = Path(folder)
    _check_folder(folder, "checkpoints", "--curve")
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
            "F1@0.3": _mean([s["F1@0.3"] for s in scores]),
            "Chamfer-L2": _mean([s["Chamfer-L2"] for s in scores]),
            "printable": _mean([float(r["printable"]) for r in result.records]),
            "n": len(scores),
        })
    return rows


def plot_curve(steps: list[int], values: list[float], path: str | Path, ylabel: str = "F1@0.3",
               size: tuple[int, int] = (640, 400)) -> Path:
    """Line plot of ``values`` (fractions, shown ×100) against ``steps``: matplotlib if installed, else PIL; the PNG
    is written atomically."""
    return _write_png(path, _curve_png(steps, values, ylabel, size))


def _curve_png(steps: list[int], values: list[float], ylabel: str = "F1@0.3",
               size: tuple[int, int] = (640, 400)) -> bytes:
    """The PNG of :func:`plot_curve`."""
    ys = [100 * v for v in values]
    png = io.BytesIO()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
        ax.plot(steps, ys, marker="o")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{ylabel} (×100)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, format="png")
        plt.close(fig)
        return png.getvalue()
    except ImportError:
        pass
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 20, 45
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    x0, x1 = (min(steps), max(steps)) if steps else (0, 1)
    finite = [y for y in ys if math.isfinite(y)]
    y0, y1 = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        return px, h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, yv)
        d.line([(left - 4, py), (left, py)], fill=(0, 0, 0))
        d.text((4, py - 6), f"{yv:.1f}", fill=(0, 0, 0))
        xv = x0 + (x1 - x0) * i / 4
        px, _ = to_px(xv, y0)
        d.line([(px, h - bottom), (px, h - bottom + 4)], fill=(0, 0, 0))
        d.text((px - 12, h - bottom + 8), f"{xv:.0f}", fill=(0, 0, 0))
    d.text(((w - left) // 2, h - 16), "training step", fill=(0, 0, 0))
    d.text((left + 6, 4), f"{ylabel} (x100)", fill=(0, 0, 0))
    pts = [to_px(x, y) for x, y in zip(steps, ys) if math.isfinite(y)]
    if len(pts) > 1:
        d.line(pts, fill=(40, 90, 200), width=2)
    for px, py in pts:
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(40, 90, 200))
    img.save(png, format="PNG")
    return png.getvalue()


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
        png = _curve_png([r["step"] for r in rows], [r["F1@0.3"] for r in rows])
        _write_output(out / "curve.csv", text.getvalue().encode())
        _write_output(out / "curve.png", png)
    for r in rows:
        print(f"step {r['step']:>8}  F1@0.3 {100 * r['F1@0.3']:5.1f}  Chamfer-L2 {r['Chamfer-L2']:.3f}  "
              f"printable {100 * r['printable']:.0f}%")
    print(f"wrote {out / 'curve.csv'} and {out / 'curve.png'} ({len(samples)} images per checkpoint, "
          f"style {args.style})")
    return 0


def background_photos(value: str | None, flag: str = "--backgrounds",
                      build: str = "python training/build_backgrounds.py", need: str | None = None):
    """The photographs of the ``background`` style named by ``flag``: ``none`` (any case) is synthetic backgrounds
    (None), unless ``need`` says why photographs are needed; a folder must hold photographs, which the command
    ``build`` makes (the check set's by default; training's are ``--sources finder``, never the check set's).

    Raises:
        DataError: a folder that does not exist or holds no photographs (a mistyped path fell back to synthetic
            backgrounds silently, and calibrate.py fitted its temperature on them).
    """
    if value is None or str(value).strip().lower() == "none":
        if need:
            raise DataError(f"{flag} none: {need}; give their folder (build it: {build}).")
        return None
    from training.augment import BackgroundPhotos

    photos = BackgroundPhotos(value)
    if not photos.available:
        what = "does not exist" if not Path(value).exists() else "holds no photographs (*.jpg, *.png)"
        none = "" if need else f", or give {flag} none for synthetic backgrounds"
        raise DataError(f"{flag} {value} {what}; build them ({build}) or fix the path{none}.")
    return photos


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
        raise DataError(_NOT_IN_RENDER_PIXELS.format(style=args.style))  # before anything loads
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
            splits = sorted({str(r.get("split")) for r in _read_manifest(Path(args.shapenet)) if r.get("split")})
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
        files["contact_sheet.png"] = _sheet_png(result.sheet, args.tile, _SHEET_KEYS)
        if args.candidates > 1:
            files["candidates_sheet.png"] = _sheet_png(_with_candidates(result.sheet), args.tile,
                                                       _candidate_keys(args.candidates))
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
