"""Augmentation of the rendered views: the crop (scale, offset, objects cut by the border), backgrounds, photometry.

Pictures as designers take them: the object small or large in the frame, off centre or cut by
the border, in front of a room or a desk, in uneven light, grey, blurred, noisy, re-compressed.

The crop is geometry: :func:`augment_box` only moves the object box handed to
:func:`recon_core.network.crop.prepare_image`, whose crop box then cuts the image, the mask and the
depth and gives the camera (:func:`recon_core.mesh.camera.crop_camera`), so every target follows it.
Everything else here changes pixels only. All draws come from one ``numpy`` generator, so an
item is a function of its seed.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recon_core.mesh.camera import CROP_MARGIN

__all__ = [
    "FILL_RANGE",
    "MAX_OFFSET",
    "MAX_CUT",
    "CUT_PROBABILITY",
    "augment_box",
    "BackgroundPhotos",
    "paper",
    "synthetic_background",
    "photometric",
    "light_falloff",
    "lighting_gradient",
    "jpeg_round_trip",
    "jpeg_recompress",
    "CUTOUT_GROW",
    "cutout_mask",
]

FILL_RANGE = (0.3, 1.0)
"""The object's longer box side as a fraction of the crop's side (unaugmented: ``1 - 2 * CROP_MARGIN`` = 0.8)."""
MAX_OFFSET = 0.15
"""Largest shift of the crop's centre, as a fraction of its side (the object stays whole)."""
CUT_PROBABILITY = 0.15
"""Share of crops shifted so that the border cuts the object."""
MAX_CUT = 0.15
"""Largest fraction of the object's box extent left outside the crop when it is cut."""

PHOTO_SHARE = 0.7
"""Share of shaded views composited onto a photograph when photographs are available."""

CUTOUT_GROW = 4
"""Largest growth or shrinkage, in pixels of the crop, of a cut-out's mask (:func:`cutout_mask`)."""


def augment_box(box: tuple[float, float, float, float], rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A random object box for :func:`recon_core.network.crop.prepare_image`: the crop it makes is rescaled and shifted.

    The crop's side is the object's longer side over a fill drawn from :data:`FILL_RANGE`; its
    centre moves by up to :data:`MAX_OFFSET` of the side along each axis, never so far that the
    object leaves the crop; with probability :data:`CUT_PROBABILITY` it moves further, so that
    a fraction in ``(0, MAX_CUT]`` of the object's extent along one axis lies past one border.

    Args:
        box: ``(u0, v0, u1, v1)`` the object's 2D box (pixels, exclusive end), as from
            :func:`recon_core.network.crop.object_box`.
        rng: the item's generator.

    Returns:
        ``(u0, v0, u1, v1)`` floats: a square box whose :func:`~recon_core.network.crop.prepare_image`
        crop (the box widened by :data:`recon_core.mesh.camera.CROP_MARGIN` on each side) is the
        augmented crop.
    """
    u0, v0, u1, v1 = (float(x) for x in box)
    width, height = u1 - u0, v1 - v0
    side = max(width, height) / float(rng.uniform(*FILL_RANGE))
    centre = np.array([(u0 + u1) / 2.0, (v0 + v1) / 2.0])
    extent = np.array([width, height])
    room = (side - extent) / 2.0  # free space on each side of the object, per axis
    centre += rng.uniform(-1.0, 1.0, 2) * np.minimum(MAX_OFFSET * side, room)
    if rng.random() < CUT_PROBABILITY:
        axis, sign = int(rng.integers(2)), float(rng.choice((-1.0, 1.0)))
        cut = float(rng.uniform(0.0, MAX_CUT))
        # Crop centre such that ``cut * extent`` of the object lies past the border on the ``sign`` side.
        centre[axis] = (u0 + u1, v0 + v1)[axis] / 2.0 - sign * (room[axis] + cut * extent[axis])
    half = side * (0.5 - CROP_MARGIN)  # prepare_image widens the box by the margin again
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


class BackgroundPhotos:
    """The photographs of a background folder (training/build_backgrounds.py; ``data.backgrounds``): random square crops of them.

    Args:
        folder: a folder of ``*.jpg`` / ``*.png`` pictures. Missing or empty: :attr:`available`
            is False and :meth:`sample` raises.
    """

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        files: list[Path] = []
        if self.folder is not None and self.folder.is_dir():
            files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        self.files = files

    @property
    def available(self) -> bool:
        return bool(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, size, 3) float32 in [0, 255]: a random square part of a random photograph, maybe mirrored."""
        if not self.files:
            raise ValueError(f"no background photographs in {self.folder}; build them: "
                             "python training/build_backgrounds.py")
        with Image.open(self.files[int(rng.integers(len(self.files)))]) as img:
            photo = img.convert("RGB")
        w, h = photo.size
        side = min(w, h) * float(rng.uniform(0.5, 1.0))
        u0, v0 = float(rng.uniform(0.0, w - side)), float(rng.uniform(0.0, h - side))
        out = photo.resize((size, size), Image.Resampling.BILINEAR, box=(u0, v0, u0 + side, v0 + side))
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out, dtype=np.float32)


def paper(rng: np.random.Generator) -> np.ndarray:
    """(3,) float32 colour of off-white paper."""
    base = rng.uniform(225.0, 255.0)
    return np.clip(base + rng.normal(0.0, 4.0, 3), 0, 255).astype(np.float32)


def synthetic_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
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


def light_falloff(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 factor in [1 - strength, 1]: a linear or radial fall-off of the light.

    Linear: darkening along a random direction. Radial: bright around a random point, darker
    with the distance from it (a lamp, a vignette). ``strength`` is drawn from [0.2, 0.6].
    Coordinates are fractions of the width and height.
    """
    h, w = shape
    strength = float(rng.uniform(0.2, 0.6))
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    u, v = u / w, v / h
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = (u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:
        cu, cv = rng.uniform(0.0, 1.0, 2)
        radius = float(rng.uniform(0.5, 1.2))
        t = np.clip(np.hypot(u - cu, v - cv) / radius, 0.0, 1.0) ** 2
    return (1.0 - strength * t).astype(np.float32)


def lighting_gradient(rng: np.random.Generator, size: int) -> torch.Tensor:
    """(size, size) float32 tensor: :func:`light_falloff` of a square picture."""
    return torch.from_numpy(light_falloff(rng, (size, size)))


def jpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 saved as a JPEG of ``quality`` (Pillow, in memory) and read back: (H, W, 3) uint8."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def jpeg_recompress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1] through :func:`jpeg_round_trip` at ``quality``."""
    pixels = (image.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    back = jpeg_round_trip(pixels, quality).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(back.transpose(2, 0, 1)))


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    padded = torch.nn.functional.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    padded = torch.nn.functional.conv2d(padded, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return torch.nn.functional.conv2d(padded, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


def photometric(image: torch.Tensor, rng: np.random.Generator, colour: bool) -> torch.Tensor:
    """Pixel changes of a (3, H, W) image in [0, 1], in the order a camera would make them.

    Sometimes a lighting gradient (:func:`lighting_gradient`, p = 0.3); brightness, contrast and
    saturation jitter (only when ``colour``: sketches keep their ink); sometimes grey-scale
    (p = 0.1), blur (p = 0.3), noise (p = 0.3) and JPEG re-compression at a quality in
    [30, 95] (p = 0.3).
    """
    if rng.random() < 0.3:
        image = image * torch.from_numpy(light_falloff(rng, tuple(image.shape[-2:])))  # (H, W): any shape
    if colour:
        image = image * float(rng.uniform(0.75, 1.25))
        mean = image.mean()
        image = (image - mean) * float(rng.uniform(0.75, 1.25)) + mean
        grey = image.mean(dim=0, keepdim=True)
        image = (image - grey) * float(rng.uniform(0.6, 1.4)) + grey
    if rng.random() < 0.1:
        image = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).expand(3, -1, -1)
    if rng.random() < 0.3:
        image = _blur(image, float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        noise = rng.standard_normal(tuple(image.shape), dtype=np.float32) * np.float32(rng.uniform(0.005, 0.03))
        image = image + torch.from_numpy(noise)
    if rng.random() < 0.3:
        image = jpeg_recompress(image, int(rng.integers(30, 96)))
    return image.clamp(0.0, 1.0).contiguous()


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float
             ) -> torch.Tensor:
    """(H, W) bool: the pixels inside an ellipse (centre and radii in pixels, ``angle`` in radians)."""
    y, x = torch.meshgrid(torch.arange(shape[0], dtype=torch.float32), torch.arange(shape[1], dtype=torch.float32),
                          indexing="ij")
    dy, dx = y - centre[0], x - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * dx + s * dy) / radii[1], (-s * dx + c * dy) / radii[0]
    return u * u + v * v <= 1.0


def cutout_mask(cover: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The mask an object finder might give a photograph: ``cover`` (H, W) in [0, 1] with its errors.

    A picture without transparency reaches the network cut out by the object finder's soft mask onto white
    (:func:`recon_core.network.finder.finder_alpha`), so what the network sees of a photograph is the object with
    bits of the background along its edge and bits of itself missing. Here: the mask grown or shrunk by up to
    :data:`CUTOUT_GROW` pixels, then up to two ellipses of background beside the object taken in and up to two
    ellipses inside it left out (each 4-15 % of the side across), then its edge softened (a blur of 0.5-2 px).

    Returns (H, W) float32 in [0, 1].
    """
    h, w = cover.shape
    mask = cover.float()[None, None]
    grow = int(rng.integers(-CUTOUT_GROW, CUTOUT_GROW + 1))
    if grow:
        k = 2 * abs(grow) + 1
        pool = torch.nn.functional.max_pool2d
        mask = pool(mask, k, 1, abs(grow)) if grow > 0 else -pool(-mask, k, 1, abs(grow))
    mask = mask[0, 0]
    near = torch.nn.functional.max_pool2d(cover.float()[None, None], 15, 1, 7)[0, 0] > 0.5
    inside = cover > 0.5
    for where, value in ((near & ~inside, 1.0), (inside, 0.0)):
        pixels = torch.nonzero(where)
        for _ in range(int(rng.integers(0, 3))):
            if len(pixels) == 0:
                break
            cy, cx = pixels[int(rng.integers(len(pixels)))].tolist()
            radii = tuple(float(r) * 0.5 * min(h, w) for r in rng.uniform(0.04, 0.15, size=2))
            mask = torch.where(_ellipse((h, w), (cy, cx), radii, float(rng.uniform(0, math.pi))),
                               torch.tensor(value), mask)
    soft = _blur(mask[None].expand(3, -1, -1), float(rng.uniform(0.5, 2.0)))[0]
    return soft.clamp(0.0, 1.0).contiguous()
