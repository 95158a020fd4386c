"""The evaluation's data: the models and views of a ShapeNet-layout data set, and what each method sees of a view.

Data layout (ShapeNet's, so ShapeNet or Pix3D arranged the same way works):

* ``shapenet``: ``<synset>/<model_id>/models/model_normalized.obj`` (or ``model.obj``, or any
  single ``.obj/.ply/.off/.stl/.glb`` in the model's folder), world frame normalised to a
  bounding-box diagonal of 1 (:mod:`recon_core.mesh.camera`); ``manifest.json`` lists
  ``{"model_id", "synset", "split"}`` records (a list, or ``{"models": [...]}``). Without a
  manifest, models are split by a hash of their id: 80 % train, 10 % val, 10 % test.
* ``renders``: ``<synset>/<model_id>/NNN.png`` (RGBA, alpha = object mask) with ``NNN.json``
  (the camera, :meth:`recon_core.mesh.camera.Camera.to_json`, possibly under a ``"camera"`` key) and
  ``NNN_mask.png`` (the object mask, L; without it the PNG's alpha is the mask).

Picture styles (:mod:`training.styles`): :func:`load_input` redraws a view in a style; the camera and the mask the
silhouette is scored against stay the render's own. Held-out categories (:mod:`training.holdout`) are found with
``discover(..., held_out=True)`` and are never among the training models.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon_core.mesh.camera import Camera
from recon_core.network.categories import CATEGORIES
from training.holdout import is_held_out
from training.npz import NPZ_ERRORS
from training.readers.rules import EXTRA_SYNSETS

__all__ = [
    "DataError",
    "ModelEntry",
    "Sample",
    "category_name",
    "category_order",
    "find_mesh",
    "read_manifest",
    "check_folder",
    "discover",
    "training_models",
    "is_sketch",
    "select_samples",
    "load_world_mesh",
    "load_view",
    "load_mask",
    "load_depth",
    "load_input",
    "shape_points",
    "background_photos",
    "NOT_IN_RENDER_PIXELS",
]

log = logging.getLogger(__name__)

_MESH_NAMES = ("models/model_normalized.obj", "model_normalized.obj", "model.obj")


_MESH_EXTS = (".obj", ".ply", ".off", ".stl", ".glb")


_HASH_SPLIT = (("train", 8), ("val", 1), ("test", 1))
"""Split of a data set without manifest: tenths of the hash of the model id."""


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


_EXTRA_NAMES = {synset: name for name, synset in EXTRA_SYNSETS.items()}


def category_name(synset: str) -> str:
    """The name of one of the 13 categories or of the extra pool (held-out ones included), else the synset."""
    for c in CATEGORIES:
        if c.synset == synset:
            return c.name
    return _EXTRA_NAMES.get(synset, synset)


_KNOWN_SYNSETS = frozenset(c.synset for c in CATEGORIES)


def category_order(name: str) -> tuple[int, str]:
    """Sort key of a category name: the 13 categories in their order, then any other name alphabetically."""
    names = [c.name for c in CATEGORIES]
    return (names.index(name), name) if name in names else (len(names), name)


def _hash_split(model_id: str) -> str:
    tenth = int(hashlib.sha1(model_id.encode()).hexdigest(), 16) % 10
    for name, share in _HASH_SPLIT:
        if tenth < share:
            return name
        tenth -= share
    return _HASH_SPLIT[-1][0]


def find_mesh(shapenet: Path, record: dict[str, Any]) -> Path | None:
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


def read_manifest(shapenet: Path) -> list[dict[str, Any]]:
    """The ``{"model_id", "synset", "split", ...}`` records of the data set under ``shapenet``: its ``manifest.json``,
    or without one every ``<synset>/<model_id>`` folder split by a hash of its id (:func:`_hash_split`).

    Raises:
        DataError: a manifest that is not JSON, or not a list of such records.
    """
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


def check_folder(path: Path, what: str, flag: str) -> None:
    """Raise :class:`DataError` naming ``flag`` when the ``what`` folder ``path`` does not exist."""
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
    check_folder(shapenet, "meshes", "--shapenet")
    check_folder(renders, "renders", "--renders")
    out, no_mesh, no_views = [], 0, 0
    for rec in read_manifest(shapenet):
        if split is not None and str(rec.get("split", "")) != split:
            continue
        synset, model_id = str(rec["synset"]), str(rec["model_id"])
        if not wanted(synset):
            continue
        mesh = find_mesh(shapenet, rec)
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


def shape_points(entry: ModelEntry, num_points: int, seed: int) -> torch.Tensor:
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


NOT_IN_RENDER_PIXELS = ("--given-mask: the {style} pictures are not in the render's pixels, so its mask cannot be "
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
            raise DataError(NOT_IN_RENDER_PIXELS.format(style=style))
        picture_alpha = mask.astype(np.uint8) * np.uint8(255)
    return picture, picture_alpha, cam, mask


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
