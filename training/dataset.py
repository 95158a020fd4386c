"""The rendered views (training/render.py) as a torch Dataset: cropped image, mask, depth, cameras, target points.

One item is one view of one model. Images go through :func:`recon_core.image.prepare_image`
with the object box of the rendered mask, so the crop is the one inference makes of a
clean photo; the cameras are adjusted to the crop with :func:`recon_core.camera.crop_camera`.
Target points are in the view frame (:mod:`recon_core.camera`): ``p_view = R @ p_world``,
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

from recon_core.camera import Camera, crop_camera
from recon_core.categories import CATEGORIES
from recon_core.image import object_box, prepare_image
from recon_core.occupancy import GridSpec, crop_units_camera, voxelize_frustum
from training.holdout import is_held_out

__all__ = ["RenderedViews", "UNKNOWN_CATEGORY"]

log = logging.getLogger(__name__)

UNKNOWN_CATEGORY = -1
"""``category`` of a model whose synset is not one of :data:`recon_core.categories.CATEGORIES`."""

_CATEGORY_INDEX = {c.synset: i for i, c in enumerate(CATEGORIES)}
_VIEW_FILES = (".png", "_depth.npy", "_mask.png", ".json")


def _read_manifest(shapenet_root: Path) -> list[dict]:
    data = json.loads((shapenet_root / "manifest.json").read_text())
    return data["models"] if isinstance(data, dict) else data


class RenderedViews(Dataset):
    """Views of the manifest's models in one split whose files are all on disk (held-out categories left out).

    Args:
        shapenet_root: folder of ``manifest.json``.
        renders_root: output folder of ``training/render.py``.
        split: "train", "val", "test" or "all".
        image_size: side S of the network input.
        num_points: target surface points per item (drawn from the model's points.npz).
        augment: background swap, colour jitter, blur and noise on the image (shaded
            views); paper tint, blur and noise (sketch views). Off: white background.
        seed: seeds the point draws when ``augment`` is off (then an item is always the same).
        occupancy: the frustum grid of ``model.coarse=occupancy``; when given, items also hold
            ``occupancy`` and ``grid_camera`` (the models' ``solid.npz``, training/build_solids.py).

    An item is a dict:
        ``image`` (3, S, S) float32 in [0, 1]; ``mask`` (S, S) float32 {0, 1};
        ``depth`` (S, S) float32 camera-frame z, 0 off the object; ``K`` (3, 3) float32
        intrinsics of the crop; ``R`` (3, 3), ``T`` (3,) float32 world-to-camera;
        ``points``, ``normals`` (num_points, 3) float32 in the view frame;
        ``category`` int64 index in CATEGORIES (:data:`UNKNOWN_CATEGORY` for other
        synsets); ``model_id`` str; ``view`` int; ``sketch`` bool; with ``occupancy``:
        ``occupancy`` (Z, N, N) float32 {0, 1} the frustum target
        (:func:`recon_core.occupancy.voxelize_frustum`), ``grid_camera`` (3,) float32
        ``(log s, p_cx - 0.5, p_cy - 0.5)`` of the crop's true :class:`recon_core.occupancy.GridCamera`.
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
    ):
        self.occupancy = occupancy
        self._solids: dict[int, tuple[np.ndarray, float]] = {}
        self.renders_root = Path(renders_root)
        self.image_size = image_size
        self.num_points = num_points
        self.augment = augment
        self.seed = seed
        self._folders: list[Path] = []
        self._model_ids: list[str] = []
        self._model_category: list[int] = []
        items: list[tuple[int, int]] = []
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
            self._model_category.append(_CATEGORY_INDEX.get(rec["synset"], UNKNOWN_CATEGORY))
            items += [(m, v) for v in views]
        self._items = items
        self.categories: list[int] = [self._model_category[m] for m, _ in items]
        """Category index of every item, for weighted sampling without loading anything."""
        log.info("%s: %d views of %d/%d models", split, len(items), len(self._folders), len(records))

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

    def __getitem__(self, index: int) -> dict:
        m, view = self._items[index]
        folder, stem = self._folders[m], f"{view:03d}"
        meta = json.loads((folder / f"{stem}.json").read_text())
        camera = Camera.from_json(meta)
        sketch = bool(meta.get("sketch", False))
        rgba = np.asarray(Image.open(folder / f"{stem}.png").convert("RGBA"))
        mask = np.asarray(Image.open(folder / f"{stem}_mask.png").convert("L"))
        depth = np.load(folder / f"{stem}_depth.npy").astype(np.float32)
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        box = object_box(rgb, mask)
        rng = np.random.default_rng(None if self.augment else (self.seed, index))

        # Composite here rather than in prepare_image: its RGBA path loses the background colour of
        # transparent pixels (Pillow resamples RGBA premultiplied, so they come back black).
        if alpha.min() == 255:  # background already in the image (render.py --background color/noise)
            comp, fill = rgb, (255, 255, 255)
        else:
            if not self.augment:
                background = np.full(3, 255.0, np.float32)
            elif sketch:
                background = _paper(rng)
            else:
                background = _random_background(rng, rgb.shape[:2])
            a = alpha[..., None].astype(np.float32) * np.float32(1.0 / 255.0)
            comp = np.clip(rgb * a + background * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
            fill = tuple(int(c + 0.5) for c in np.broadcast_to(background, rgb.shape).reshape(-1, 3).mean(axis=0))
        prepared = prepare_image(comp, None, self.image_size, background=fill, box=box)
        image = prepared.image
        if self.augment:
            image = _jitter(image, rng, colour=not sketch)

        crop = prepared.box
        cropped = crop_camera(camera, crop, self.image_size)
        points, normals = self._points(m, rng)
        R = camera.R.astype(np.float32)
        extra = {}
        if self.occupancy is not None:
            solid, bound = self._solid(m)
            grid_camera = crop_units_camera(cropped.K, float(camera.T[2]), self.image_size)
            target = voxelize_frustum(solid, bound, camera.R, grid_camera, self.occupancy)
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

    def _solid(self, m: int) -> tuple[np.ndarray, float]:
        """The world-frame solid of model ``m`` (cached per process)."""
        if m not in self._solids:
            from training.build_solids import SOLID_FILE, read_solid

            self._solids[m] = read_solid(self._folders[m] / SOLID_FILE)
        return self._solids[m]

    def _points(self, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self._folders[m] / "points.npz") as data:
            points, normals = data["points"], data["normals"]
        # The file's points are independent uniform samples, so any run of them is a uniform subset.
        idx = (int(rng.integers(len(points))) + np.arange(self.num_points)) % len(points)
        return points[idx].astype(np.float32), normals[idx].astype(np.float32)


def _crop_nearest(array: np.ndarray, crop: tuple[float, float, float, float], size: int) -> np.ndarray:
    """(H, W) float32 cut to ``crop`` and resized to (size, size) with nearest sampling, 0 outside the image.

    The same Pillow EXTENT transform as :func:`recon_core.image.prepare_image`, so the pixels line up.
    """
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F")
    out = img.transform((size, size), Image.Transform.EXTENT, crop, resample=Image.Resampling.NEAREST, fillcolor=0.0)
    return np.asarray(out, dtype=np.float32).copy()


def _paper(rng: np.random.Generator) -> np.ndarray:
    """(3,) float32 colour of off-white paper."""
    base = rng.uniform(225.0, 255.0)
    return np.clip(base + rng.normal(0.0, 4.0, 3), 0, 255).astype(np.float32)


def _random_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 background: a plain colour, smooth colour noise, or a linear gradient."""
    h, w = shape
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (h, w, 3))
    if kind == 1:
        cells = int(rng.integers(2, 12))
        coarse = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), np.float32)
        grain = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(0.0, 15.0))
        return np.clip(smooth + grain, 0, 255)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (u / w - 0.5) * math.cos(angle) + (v / h - 0.5) * math.sin(angle) + 0.5
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    return np.clip(c0 + t[..., None] * (c1 - c0), 0, 255)


def _jitter(image: torch.Tensor, rng: np.random.Generator, colour: bool) -> torch.Tensor:
    """Brightness/contrast/saturation jitter (when ``colour``), sometimes blur, sometimes noise; (3, S, S) in [0, 1]."""
    if colour:
        image = image * float(rng.uniform(0.75, 1.25))
        mean = image.mean()
        image = (image - mean) * float(rng.uniform(0.75, 1.25)) + mean
        grey = image.mean(dim=0, keepdim=True)
        image = (image - grey) * float(rng.uniform(0.6, 1.4)) + grey
    if rng.random() < 0.3:
        sigma = float(rng.uniform(0.3, 1.2))
        radius = max(1, int(math.ceil(2 * sigma)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-(x**2) / (2 * sigma**2))
        k = k / k.sum()
        padded = torch.nn.functional.pad(image[None], (radius, radius, radius, radius), mode="replicate")
        padded = torch.nn.functional.conv2d(padded, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        image = torch.nn.functional.conv2d(padded, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    if rng.random() < 0.3:
        noise = rng.standard_normal(tuple(image.shape), dtype=np.float32) * np.float32(rng.uniform(0.005, 0.03))
        image = image + torch.from_numpy(noise)
    return image.clamp(0.0, 1.0).contiguous()
