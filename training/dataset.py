"""The rendered views (training/render.py) as a torch Dataset: cropped image, mask, depth, cameras, target points.

One item is one view of one model. Images go through :func:`recon_core.network.crop.prepare_image`
with the object box of the rendered mask, so the crop is the one inference makes of a
clean photo (with ``augment``, a randomly rescaled and shifted one, :mod:`training.augment`);
the mask and depth are cut with the same crop box and the cameras adjusted to it with
:func:`recon_core.mesh.camera.crop_camera`.
Target points are in the view frame (:mod:`recon_core.mesh.camera`): ``p_view = R @ p_world``,
and ``p_cam = p_view + T``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from recon_core.mesh.camera import Camera, crop_camera
from recon_core.mesh.occupancy import GridSpec, crop_units_camera, voxelize_frustum
from recon_core.network.categories import SYNSET_INDEX
from recon_core.network.crop import PreparedImage, object_box, prepare_image
from training.augment import (PHOTO_SHARE, BackgroundPhotos, augment_box, cutout_mask, paper, photometric,
                              synthetic_background)
from training.holdout import is_held_out
from training.npz import NPZ_ERRORS

__all__ = ["RenderedViews", "UNKNOWN_CATEGORY", "read_points"]

log = logging.getLogger(__name__)

UNKNOWN_CATEGORY = -1
"""``category`` of a model whose synset is not one of :data:`recon_core.network.categories.CATEGORIES`."""

_VIEW_FILES = (".png", "_depth.npy", "_mask.png", ".json")


def data_folder_error(shapenet_root: str | os.PathLike, renders_root: str | os.PathLike, shapenet_flag: str,
                      renders_flag: str) -> str | None:
    """Why the data set's folders cannot be read, as one sentence naming the option to fix; None when they can.

    ``shapenet_flag`` and ``renders_flag`` are how the caller's user gives them (``--shapenet``,
    ``data.shapenet=PATH``). The wording is training/evaluate.py's.
    """
    shapenet, renders = Path(shapenet_root), Path(renders_root)
    if not shapenet.is_dir():
        return f"The meshes folder {shapenet} does not exist; pass the right one with {shapenet_flag}."
    if not (shapenet / "manifest.json").is_file():
        return (f"The meshes folder {shapenet} has no manifest.json; pass the data set's folder with {shapenet_flag}, "
                "or build it: python training/build_dataset.py.")
    if not renders.is_dir():
        return f"The renders folder {renders} does not exist; pass the right one with {renders_flag}."
    return None


def _read_manifest(shapenet_root: Path) -> list[dict]:
    path = shapenet_root / "manifest.json"
    if not shapenet_root.is_dir():
        raise ValueError(f"The meshes folder {shapenet_root} does not exist; pass the right one.")
    try:
        data = json.loads(path.read_text())
        records = data["models"] if isinstance(data, dict) else data
    except FileNotFoundError:
        raise ValueError(f"The meshes folder {shapenet_root} has no manifest.json; build the data set: "
                         "python training/build_dataset.py.") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} cannot be read ({err}); rebuild the data set or fix the file.") from None
    if not (isinstance(records, list) and all(isinstance(r, dict) and "model_id" in r and "synset" in r
                                              for r in records)):
        raise ValueError(f"{path} must be a list of {{model_id, synset, split}} records (or {{\"models\": [...]}}).")
    return records


def read_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(points, normals)`` of a model's ``points.npz`` (training/render.py writes it), each (P, 3).

    Raises:
        ValueError: the file is truncated or corrupt, or lacks either array, naming it and the mend.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            points, normals = data["points"], data["normals"]
    except NPZ_ERRORS as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); delete it and run python training/render.py "
                         "again, which writes only what is missing.") from None
    return points, normals


class RenderedViews(Dataset):
    """Views of the manifest's models in one split whose files are all on disk (held-out categories left out).

    Args:
        shapenet_root: folder of ``manifest.json``.
        renders_root: output folder of ``training/render.py``.
        split: "train", "val", "test" or "all".
        image_size: side S of the network input.
        num_points: target surface points per item (drawn from the model's points.npz).
        augment: a random crop (object 30-100% of the side, off centre, sometimes cut by the
            border; the targets follow it) and, on the image, a background photograph or a
            synthetic background, lighting gradient, colour jitter, grey-scale, blur, noise and
            JPEG re-compression (shaded views); the same with paper instead of a background and
            no colour jitter (sketch views). Off: white background, the inference crop.
        seed: seeds the point draws when ``augment`` is off (then an item is always the same).
        augment_seed: with ``augment``, item ``i`` is drawn from the seed ``(augment_seed, i)``
            (always the same: tests, previews); ``None``: fresh randomness on every draw (training).
        backgrounds: folder of background photographs (training/build_backgrounds.py) for
            augmented shaded views; missing or empty: synthetic backgrounds only.
        occupancy_share: the ``occupancy`` target is each cell's share in the solid
            (:func:`recon_core.mesh.occupancy.voxelize_frustum` with ``share``), not 0/1.
        styles: with ``augment``, the share of shaded views redrawn first as clip art or pencil
            (:func:`training.styles.stylize`, on white or paper: the crop, the targets and the
            photometric augmentation follow as for a picture without alpha).
        cutout: with ``augment``, the share of shaded views over a background that are then cut out
            onto white by an imperfect mask (:func:`training.augment.cutout_mask`) after the photometric
            augmentation, as the object finder hands a photograph to the network; the targets stay the view's.
        occupancy: the frustum grid of ``model.coarse=occupancy``; when given, items also hold
            ``occupancy`` and ``grid_camera`` (the models' ``solid.npz``, training/build_solids.py).
        pack: a pack of the views (training/pack_views.py) to read instead of ``shapenet_root`` and
            ``renders_root`` (both then unused), and, when ``backgrounds`` is None, its photographs.
            Not with ``occupancy`` (the pack holds no solids).

    An item is a dict:
        ``image`` (3, S, S) float32 in [0, 1]; ``mask`` (S, S) float32 {0, 1};
        ``depth`` (S, S) float32 camera-frame z, 0 off the object; ``K`` (3, 3) float32
        intrinsics of the crop; ``R`` (3, 3), ``T`` (3,) float32 world-to-camera;
        ``points``, ``normals`` (num_points, 3) float32 in the view frame;
        ``category`` int64 index in CATEGORIES (:data:`UNKNOWN_CATEGORY` for other
        synsets); ``model_id`` str; ``view`` int; ``sketch`` bool; with ``occupancy``:
        ``occupancy`` (Z, N, N) float32 {0, 1} the frustum target
        (:func:`recon_core.mesh.occupancy.voxelize_frustum`), ``grid_camera`` (3,) float32
        ``(log s, p_cx - 0.5, p_cy - 0.5)`` of the crop's true :class:`recon_core.mesh.occupancy.GridCamera`.
    """

    def __init__(
        self,
        shapenet_root: str | os.PathLike,
        renders_root: str | os.PathLike,
        split: str,
        image_size: int = 137,
        num_points: int = 2048,
        augment: bool = False,
        seed: int = 0,
        occupancy: GridSpec | None = None,
        augment_seed: int | None = None,
        backgrounds: str | os.PathLike | None = None,
        styles: float = 0.0,
        occupancy_share: bool = False,
        cutout: float = 0.0,
        pack: str | os.PathLike | None = None,
    ):
        if not 0.0 <= styles <= 1.0:
            raise ValueError(f"styles must be a share in [0, 1], got {styles}")
        if not 0.0 <= cutout <= 1.0:
            raise ValueError(f"cutout must be a share in [0, 1], got {cutout}")
        self.styles = styles
        self.cutout = cutout
        self.occupancy_share = occupancy_share
        self.occupancy = occupancy
        self._solids: dict[int, tuple[np.ndarray, float]] = {}
        self.renders_root = Path(renders_root)
        self.image_size = image_size
        self.num_points = num_points
        self.augment = augment
        self.seed = seed
        self.augment_seed = augment_seed
        self._pack = None
        if pack is not None:
            from training.pack_views import PackedViews

            if occupancy is not None:
                raise ValueError("a pack of views holds no solids: train model.coarse=occupancy from the renders")
            self._pack = PackedViews(pack)
            if backgrounds is None:
                backgrounds = self._pack.backgrounds
        self.photos = BackgroundPhotos(backgrounds)
        if augment and backgrounds is not None:
            if self.photos.available:
                log.info("backgrounds: %d photographs in %s", len(self.photos), backgrounds)
            else:
                log.info("backgrounds: synthetic only (no photographs in %s; python training/build_backgrounds.py)",
                         backgrounds)
        self._folders: list[Path] = []
        self._model_ids: list[str] = []
        self._model_category: list[int] = []
        self._pack_model: list[int] = []
        self._pack_row: dict[tuple[int, int], int] = {}
        items: list[tuple[int, int]] = []
        if self._pack is not None:
            records = self._index_pack(split, items)
            self._items = items
            self.categories = [self._model_category[m] for m, _ in items]
            log.info("%s: %d views of %d/%d models (pack %s)", split, len(items), len(self._model_ids),
                     len(records), pack)
            return
        # Held-out categories (training.holdout) are evaluation material only, whatever their split.
        records = [r for r in _read_manifest(Path(shapenet_root))
                   if (split == "all" or r.get("split") == split) and not is_held_out(str(r["synset"]))]
        for rec in sorted(records, key=lambda r: (r["synset"], r["model_id"])):
            folder = self.renders_root / rec["synset"] / rec["model_id"]
            views = self._complete_views(folder)
            if not views:
                continue
            m = len(self._folders)
            self._folders.append(folder)
            self._model_ids.append(rec["model_id"])
            self._model_category.append(SYNSET_INDEX.get(rec["synset"], UNKNOWN_CATEGORY))
            items += [(m, v) for v in views]
        self._items = items
        self.categories: list[int] = [self._model_category[m] for m, _ in items]
        """Category index of every item, for weighted sampling without loading anything."""
        log.info("%s: %d views of %d/%d models", split, len(items), len(self._folders), len(records))

    def _index_pack(self, split: str, items: list[tuple[int, int]]) -> list[int]:
        """Fill the index from the pack's models of ``split`` (held-out categories left out); their pack rows."""
        pack = self._pack
        records = [i for i, (synset, sp) in enumerate(zip(pack.synsets, pack.splits))
                   if (split == "all" or sp == split) and not is_held_out(synset)]
        for i in sorted(records, key=lambda i: (pack.synsets[i], pack.model_ids[i])):
            m = len(self._model_ids)
            self._model_ids.append(pack.model_ids[i])
            self._model_category.append(SYNSET_INDEX.get(pack.synsets[i], UNKNOWN_CATEGORY))
            self._pack_model.append(i)
            for row, view in pack.views_of(i):
                self._pack_row[(m, view)] = row
                items.append((m, view))
        return records

    def _read_view(self, m: int, view: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
        """``(meta, rgba (H, W, 4) uint8, mask (H, W) uint8, depth (H, W) float32)`` of a model's view."""
        if self._pack is not None:
            return self._pack.view(self._pack_row[(m, view)])
        folder, stem = self._folders[m], f"{view:03d}"
        meta = json.loads((folder / f"{stem}.json").read_text())
        rgba = np.asarray(Image.open(folder / f"{stem}.png").convert("RGBA"))
        mask = np.asarray(Image.open(folder / f"{stem}_mask.png").convert("L"))
        depth = np.load(folder / f"{stem}_depth.npy").astype(np.float32)
        return meta, rgba, mask, depth

    @staticmethod
    def _complete_views(folder: Path) -> list[int]:
        try:
            names = set(os.listdir(folder))
        except FileNotFoundError:
            return []
        if "points.npz" not in names:
            return []
        views = sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())
        return [v for v in views if all(f"{v:03d}{s}" in names for s in _VIEW_FILES)]

    def __len__(self) -> int:
        return len(self._items)

    def category_of(self, index: int) -> int:
        return self.categories[index]

    def view_folder(self, index: int) -> tuple[Path, int]:
        """``(folder, view)`` of item ``index``: its files are ``folder / f"{view:03d}..."`` (not for a pack)."""
        if self._pack is not None:
            raise ValueError("a pack of views has no render folders")
        m, view = self._items[index]
        return self._folders[m], view

    def __getitem__(self, index: int) -> dict:
        m, view = self._items[index]
        meta, rgba, mask, depth = self._read_view(m, view)
        camera = Camera.from_json(meta)
        sketch = bool(meta.get("sketch", False))
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        box = object_box(rgb, mask)
        rng = np.random.default_rng(self._item_seed(index))
        if self.augment:
            box = augment_box(box, rng)  # the crop below, hence the camera and every target, follow it

        styled = self.augment and not sketch and self.styles > 0 and rng.random() < self.styles
        if styled:  # clip art or pencil, drawn on white or paper: the same pixels, no alpha
            from training.styles import stylize

            style = ("clipart", "pencil")[int(rng.integers(2))]
            rgb, _ = stylize(rgba, mask > 127, depth, camera.K, style, int(rng.integers(2**31)))
            alpha = np.full_like(alpha, 255)
        cut = False  # data.cutout: the shaded view over a background cut out onto white (below)
        if alpha.min() == 255:  # background already in the image (render.py --background color/noise)
            prepared = prepare_image(rgb, None, self.image_size, background=(255, 255, 255), box=box)
            image = prepared.image
        elif not self.augment:
            # Composite here rather than in prepare_image: its RGBA path loses the background colour of
            # transparent pixels (Pillow resamples RGBA premultiplied, so they come back black).
            a = alpha[..., None].astype(np.float32) * np.float32(1.0 / 255.0)
            comp = np.clip(rgb * a + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
            prepared = prepare_image(comp, None, self.image_size, background=(255, 255, 255), box=box)
            image = prepared.image
        else:
            prepared, image, cover = self._composite(rgb, alpha, box, sketch, rng)
            cut = not sketch and self.cutout > 0 and rng.random() < self.cutout
        if self.augment:
            image = photometric(image, rng, colour=not (sketch or styled))
        if cut:
            # as the object finder hands a photograph (camera effects and all) to the network: cut out by an
            # imperfect mask onto exact white, after the camera's effects, as recon_core's prepare_image does
            kept = cutout_mask(cover, rng)
            image = image * kept + (1.0 - kept)

        crop = prepared.box
        cropped = crop_camera(camera, crop, self.image_size)
        points, normals = self._points(m, rng)
        R = camera.R.astype(np.float32)
        extra = {}
        if self.occupancy is not None:
            solid, bound = self._solid(m)
            grid_camera = crop_units_camera(cropped.K, float(camera.T[2]), self.image_size)
            target = voxelize_frustum(solid, bound, camera.R, grid_camera, self.occupancy, share=self.occupancy_share)
            extra["occupancy"] = torch.from_numpy(target.astype(np.float32))
            extra["grid_camera"] = torch.tensor(
                [math.log(grid_camera.scale), grid_camera.principal[0] - 0.5, grid_camera.principal[1] - 0.5],
                dtype=torch.float32)
        return {
            **extra,
            "image": image,
            "mask": torch.from_numpy(_crop_nearest(mask.astype(np.float32) / 255.0, crop, self.image_size)),
            "depth": torch.from_numpy(_crop_nearest(depth, crop, self.image_size)),
            "K": torch.from_numpy(cropped.K.astype(np.float32)),
            "R": torch.from_numpy(R),
            "T": torch.from_numpy(camera.T.astype(np.float32)),
            "points": torch.from_numpy(points @ R.T),
            "normals": torch.from_numpy(normals @ R.T),
            "category": torch.tensor(self._model_category[m], dtype=torch.int64),
            "model_id": self._model_ids[m],
            "view": view,
            "sketch": sketch,
        }

    def _item_seed(self, index: int) -> tuple[int, int] | None:
        if not self.augment:
            return (self.seed, index)
        return None if self.augment_seed is None else (self.augment_seed, index)

    def _composite(self, rgb: np.ndarray, alpha: np.ndarray, box: tuple[float, float, float, float], sketch: bool,
                   rng: np.random.Generator) -> tuple[PreparedImage, torch.Tensor, torch.Tensor]:
        """The render over a background drawn at the crop's resolution: ``(prepared, (3, S, S) image, (S, S) cover)``,
        ``cover`` the render's alpha in [0, 1] at the crop's resolution.

        The colour is cropped premultiplied by alpha and the alpha on its own, both with the crop
        box of :func:`recon_core.network.crop.prepare_image`, so the background fills the whole crop, also
        where it leaves the render, and no colour of transparent pixels bleeds into the edges.
        """
        size = self.image_size
        a = alpha.astype(np.float32) * np.float32(1.0 / 255.0)
        premultiplied = np.clip(rgb * a[..., None] + 0.5, 0, 255).astype(np.uint8)
        prepared = prepare_image(premultiplied, None, size, background=(0, 0, 0), box=box)
        cover = torch.from_numpy(_crop_linear(a, prepared.box, size))
        if sketch:
            background = np.broadcast_to(paper(rng), (size, size, 3))
        elif self.photos.available and rng.random() < PHOTO_SHARE:
            background = self.photos.sample(rng, size)
        else:
            background = synthetic_background(rng, (size, size))
        background = torch.from_numpy(np.ascontiguousarray(background.transpose(2, 0, 1), dtype=np.float32) / 255.0)
        image = (prepared.image + background * (1.0 - cover)).clamp(0.0, 1.0)
        return prepared, image, cover

    def _solid(self, m: int) -> tuple[np.ndarray, float]:
        """The world-frame solid of model ``m`` (cached per process)."""
        if m not in self._solids:
            from training.build_solids import SOLID_FILE, read_solid

            self._solids[m] = read_solid(self._folders[m] / SOLID_FILE)
        return self._solids[m]

    def _points(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self._pack is not None:
            points, normals = self._pack.points(self._pack_model[m])
        else:
            points, normals = read_points(self._folders[m] / "points.npz")
        # The file's points are independent uniform samples, so any run of them is a uniform subset.
        idx = (int(rng.integers(len(points))) + np.arange(self.num_points)) % len(points)
        return points[idx].astype(np.float32), normals[idx].astype(np.float32)


def _crop_linear(array: np.ndarray, crop: tuple[float, float, float, float], size: int) -> np.ndarray:
    """(H, W) float32 cut to ``crop`` and resized to (size, size) with bilinear sampling, 0 outside the image.

    The resampling :func:`recon_core.network.crop.prepare_image` applies to the colour, so the two line up.
    """
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")
    out = img.transform((size, size), Image.Transform.EXTENT, crop, resample=Image.Resampling.BILINEAR, fillcolor=0.0)
    return np.asarray(out, dtype=np.float32).copy()


def _crop_nearest(array: np.ndarray, crop: tuple[float, float, float, float], size: int) -> np.ndarray:
    """(H, W) float32 cut to ``crop`` and resized to (size, size) with nearest sampling, 0 outside the image.

    The same Pillow EXTENT transform as :func:`recon_core.network.crop.prepare_image`, so the pixels line up.
    """
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")
    out = img.transform((size, size), Image.Transform.EXTENT, crop, resample=Image.Resampling.NEAREST, fillcolor=0.0)
    return np.asarray(out, dtype=np.float32).copy()
