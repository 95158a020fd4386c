"""Cutting the object out of a picture for the network, the same way in training and inference.

:func:`prepare_image` finds the object (the alpha channel when there is one, else the
pixels that differ from the border colour, :func:`object_pixels`), cuts a square around it
with :data:`recon_core.mesh.camera.CROP_MARGIN` free on each side, and resizes it to the
network's input size. :func:`object_mask` and :func:`uncrop_mask` give the object's mask in
the picture's pixels. Every array, box and size is in the pixels of the array given (for a
large JPEG, the reduced size :func:`recon_core.io.image.load_image` decoded it at).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from recon_core.mesh.camera import CROP_MARGIN

__all__ = ["PreparedImage", "prepare_image", "border_colour", "object_box", "object_mask", "object_pixels",
           "uncrop_mask", "separate_parts", "PART_SHARE", "PARTS_SIDE", "BORDER_MIN_SHARE", "BORDER_MIN_PIXELS"]


@dataclass(frozen=True)
class PreparedImage:
    """A network-ready crop of one image.

    Attributes:
        image: (3, S, S) float32 tensor in [0, 1], RGB, object centred.
        mask: (S, S) float32 tensor in [0, 1] (the alpha channel cropped), or ``None`` for RGB input.
        box: ``(u0, v0, u1, v1)`` square crop box in the pixels of the image given to :func:`prepare_image`
            (may extend past its border).
        original_size: ``(width, height)`` of that image: for a large JPEG, the reduced size
            :func:`recon_core.io.image.load_image` decoded it at, not the size in the file's header.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    box: tuple[float, float, float, float]
    original_size: tuple[int, int]


def border_colour(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The picture's background colour as its border shows it, and how plain that border is.

    Args:
        rgb: (H, W, 3) uint8.

    Returns:
        ``(colour, spread)``: (3,) float64, the median of the border pixels, channel by channel; the 75th percentile
        of the border pixels' summed absolute difference from it (0-765: 0 on one plain colour).
    """
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    bg = np.median(border, axis=0)
    return bg, float(np.percentile(np.abs(border - bg).sum(axis=1), 75))


def object_pixels(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray | None:
    """(H, W) bool pixels :func:`object_box` takes for the object, or ``None`` when it takes the whole image.

    Args:
        rgb: (H, W, 3) uint8; alpha: (H, W) uint8 or None (then the border-colour rule).
    """
    if alpha is not None:
        for fg in (alpha > 127, alpha > 0):
            if fg.any():
                return fg
        return None  # nothing opaque at all: the whole image (callers refuse such pictures earlier)
    return border_object(differing_pixels(rgb))


BUSY_BORDER = 60.0
"""A border whose spread (:func:`border_colour`) is above this gives no background colour to the border-colour rule."""
COLOUR_DIFFERENCE = 60
"""A pixel whose summed absolute difference from the border colour (0-765) is above this differs from it."""


def differing_pixels(rgb: np.ndarray) -> np.ndarray | None:
    """(H, W) bool: the pixels of ``rgb`` (H, W, 3) uint8 whose colour differs from the border colour by more than
    :data:`COLOUR_DIFFERENCE`; None when the border is busy (its spread above :data:`BUSY_BORDER`): no plain
    background to separate from."""
    bg, spread = border_colour(rgb)
    if spread > BUSY_BORDER:
        return None
    return np.abs(rgb.astype(np.int16) - bg).sum(axis=2) > COLOUR_DIFFERENCE


def border_object(fg: np.ndarray | None) -> np.ndarray | None:
    """:func:`differing_pixels`' ``fg`` as the object the border-colour rule takes: ``fg`` itself, or None when the
    border is busy (``fg`` None), too few pixels differ (:func:`too_few_pixels`) or nearly all do."""
    if fg is None or too_few_pixels(fg) or fg.mean() > 0.97:
        return None
    return fg


def too_few_pixels(fg: np.ndarray) -> bool:
    """Whether :func:`differing_pixels`' ``fg`` (H, W) bool is too few to be an object: fewer than
    :data:`BORDER_FLOOR_PIXELS` whatever the picture's size, or fewer than :data:`BORDER_MIN_SHARE` of the picture and
    than :data:`BORDER_MIN_PIXELS`; none at all included."""
    count = int(fg.sum())
    return count < BORDER_FLOOR_PIXELS or bool(fg.mean() < BORDER_MIN_SHARE and count < BORDER_MIN_PIXELS)


BORDER_MIN_SHARE = 1e-4
"""The border-colour rule (:func:`object_pixels`) sees no object when fewer than this share of the picture's pixels,
and fewer than :data:`BORDER_MIN_PIXELS`, differ from the border colour (a speck of dust on a plain picture)."""
BORDER_MIN_PIXELS = 64
"""See :data:`BORDER_MIN_SHARE`: a small object in a large picture (a 30-pixel chair in 2,000 x 2,000 pixels, less than
0.01 % of them) is still one."""
BORDER_FLOOR_PIXELS = 16
"""Fewer pixels than this (a 4 x 4 patch) differing from the border colour are never an object, however small the
picture: in a 137-pixel picture 0.01 % is two pixels, and two stray pixels of a dark chair on a dark background were
taken for the object (a 1.27 m airplane came out, exit 0)."""
PART_MIN_PIXELS = 4
"""A separate part of fewer pixels than this (of the mask as :func:`separate_parts` looks at it) is a speck, not a part
that may be another object."""


def object_box(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[int, int, int, int]:
    """2D box ``(u0, v0, u1, v1)`` (pixels, exclusive end) around the object.

    With alpha, the box of ``alpha > 127`` (of ``alpha > 0`` when no pixel is above 127; the whole
    image when none is above 0). Without, the pixels whose colour differs
    from the median border colour by more than a threshold; if those cover nearly the
    whole image or nothing at all, the whole image.

    Args:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8 or ``None``.
    """
    h, w = rgb.shape[:2]
    fg = object_pixels(rgb, alpha)
    if fg is None:
        return 0, 0, w, h
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def object_mask(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The object's mask as the picture gives it: (H, W) float32 in [0, 1].

    With alpha, ``alpha / 255``. Without, the pixels :func:`object_box` separates from
    the border colour (0 or 1), or all ones when it takes the whole image (a busy border,
    or nearly every pixel or none differing from it). This is the mask a model without a
    mask head uses: the crop around it is all that model takes from it.

    Args:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8 or ``None``.
    """
    if alpha is not None:
        return alpha.astype(np.float32) / 255.0
    fg = object_pixels(rgb, None)
    return np.ones(rgb.shape[:2], np.float32) if fg is None else fg.astype(np.float32)


SMALL_OBJECT_SIDE = 32
"""An object mask whose box's longer side is below this many pixels is small for the network (it reads the object's
crop at 137 pixels, so each picture pixel is more than four of its own): :func:`object_side` measures it, and the
reconstruction notes it. In the data set's 137-pixel renders the object's longer side is 73 pixels in the median and
below 32 in 0.7 % of them (27 of every third render, 3,888, 15 of them watercraft)."""


def object_side(mask: np.ndarray) -> int:
    """The longer side, in pixels, of the box of a (H, W) mask's pixels above 0.5 (0 when there are none)."""
    fg = np.asarray(mask) > 0.5
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not len(rows):
        return 0
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1


CUT_MIN_PIXELS = 3
"""An object runs off a picture's edge (:func:`cut_sides`) where at least this many of its mask's pixels lie on that
edge's outermost row or column: one or two are a stray pixel of a mask's edge, not a part cut away."""
CUT_MIN_SHARE = 0.1
"""... and at least this share of the object's extent along that edge: an object touching an edge with a tip (a leg's
end: 4 of the example chair's 66 pixels across) is not cut there, where a cut runs across the object."""


def cut_sides(mask: np.ndarray, least: int = CUT_MIN_PIXELS, share: float = CUT_MIN_SHARE) -> list[str]:
    """The picture's edges that a (H, W) float mask's object (pixels above 0.5) runs off: those of "top", "bottom",
    "left", "right" whose outermost row or column holds at least ``least`` of its pixels and at least ``share`` of the
    object's extent along that edge, in that order.

    None for an object whose box spans the whole picture both ways: a cut-out trimmed to its object's box (the example
    chair trimmed so touches the top edge with 7 of its 66 pixels across, the back's top: not a cut), a mask of the
    whole picture or an inverted one (they have notes of their own when given by ``--mask``), or an object cut on
    every side, which the picture cannot tell from a trimmed one.
    """
    fg = np.asarray(mask) > 0.5
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    h, w = fg.shape
    if not len(rows) or (rows[0] == 0 and rows[-1] == h - 1 and cols[0] == 0 and cols[-1] == w - 1):
        return []
    width, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    edges = {"top": (fg[0], width), "bottom": (fg[-1], width), "left": (fg[:, 0], height), "right": (fg[:, -1], height)}
    return [name for name, (line, extent) in edges.items()
            if int(line.sum()) >= max(least, share * extent)]


PART_SHARE = 0.3
"""A separate part of an object mask counts (:func:`separate_parts`) when it holds at least this share of the largest
part's pixels. Of the 123 validation pictures a style (single objects, 3 views a model), none has two such parts in
its true mask at any share down to 0.2; of the masks the reconstruction takes (the alpha, or the object finder's), at
0.3 / at 0.5 (its value before 2026-12-07): none / none clean and in clip art, 2 / 1 without alpha, 1 / 1 in JPEG,
3 / 3 in pencil and 8 / 5 on background photographs (where it also took things of the room; `runs/s39/parts_count.py
val`, one-off; docs/COMMAND_LINE.md). At 0.5 a chair with a lamp beside it, the lamp 39 % of the chair's pixels, got
no note."""
PARTS_SIDE = 512
""":func:`separate_parts` looks at the mask at most this many pixels a side: a larger one is reduced by blocks, a
block inside when any of its pixels is (so parts can only join, across gaps narrower than a block, never split)."""


def separate_parts(mask: np.ndarray, share: float = PART_SHARE) -> int:
    """How many separate parts (8-connected regions above 0.5) of a (H, W) mask hold at least ``share`` of the
    largest's pixels and :data:`PART_MIN_PIXELS`: 2 or more when the picture may show several objects; 0 for an empty
    mask (and for one of specks only, when there are several).

    A mask larger than :data:`PARTS_SIDE` a side is reduced by k x k blocks, the least k that brings it within, a
    block inside when any of its pixels is.
    """
    from scipy import ndimage

    inside = np.asarray(mask) > 0.5
    step = max(1, -(-max(inside.shape) // PARTS_SIDE))
    if step > 1:
        h, w = inside.shape
        padded = np.zeros((-(-h // step) * step, -(-w // step) * step), dtype=bool)
        padded[:h, :w] = inside
        inside = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).any(axis=(1, 3))
    labels, count = ndimage.label(inside, structure=np.ones((3, 3), dtype=bool))
    if count < 2:
        return count
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= max(share * sizes.max(), PART_MIN_PIXELS)).sum())


def uncrop_mask(mask: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int],
                fill: float = 0.0) -> np.ndarray:
    """Map a mask of a square crop back onto the whole picture (the inverse of :func:`prepare_image`'s crop).

    Args:
        mask: (h, w) float values over the crop (any resolution: the crop's S x S pixels,
            or a network's stride-4 map of them).
        box: the crop box ``(u0, v0, u1, v1)`` in the picture's pixels (:attr:`PreparedImage.box`; may
            extend past the border).
        size: ``(width, height)`` of the picture (:attr:`PreparedImage.original_size`).
        fill: value outside the crop.

    Returns:
        (height, width) float32: at pixels whose centre (``+ 0.5``) lies in the box, the mask
        bilinearly interpolated (clamped at the crop's edge, as :func:`prepare_image` samples);
        ``fill`` elsewhere.
    """
    mask = np.asarray(mask, np.float32)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a (h, w) array, got shape {mask.shape}")
    h, w = mask.shape
    u0, v0, u1, v1 = box
    sx, sy = w / (u1 - u0), h / (v1 - v0)  # mask pixels per picture pixel
    width, height = size
    # EXTENT: the output's corners (0, 0) and (width, height) are these points of the mask.
    extent = (-u0 * sx, -v0 * sy, (width - u0) * sx, (height - v0) * sy)
    out = Image.fromarray(mask, "F").transform((width, height), Image.Transform.EXTENT, extent,
                                               resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.array(out, dtype=np.float32)  # a writable copy


def prepare_image(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    size: int,
    background: tuple[int, int, int] = (255, 255, 255),
    box: tuple[int, int, int, int] | None = None,
) -> PreparedImage:
    """Crop an image to its object and resize it to ``size``².

    Args:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8 object mask or ``None``. With alpha, the object is composited over ``background``.
        size: output side in pixels.
        background: RGB colour behind transparent pixels and outside the image.
        box: the object's box; found by :func:`object_box` when omitted.

    Returns:
        The :class:`PreparedImage`; its ``box`` maps crop pixels to original pixels
        (use :func:`recon_core.mesh.camera.crop_camera` to adjust a camera).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    u0, v0, u1, v1 = box if box is not None else object_box(rgb, alpha)
    side = max(u1 - u0, v1 - v0) / (1.0 - 2.0 * CROP_MARGIN)
    cu, cv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    crop = (cu - side / 2, cv - side / 2, cu + side / 2, cv + side / 2)

    if alpha is not None:
        a = alpha.astype(np.float32)[..., None] / 255.0
        comp = rgb.astype(np.float32) * a + np.asarray(background, np.float32) * (1.0 - a)
        rgb = np.clip(comp + 0.5, 0, 255).astype(np.uint8)
    # Pillow's EXTENT transform maps the crop box (may leave the image) onto size x size. The colour
    # and the mask are resampled separately: Pillow resamples RGBA premultiplied, which would turn
    # the background of transparent pixels black.
    def _resample(arr: np.ndarray, mode: str, fill) -> np.ndarray:
        img = Image.fromarray(arr, mode)
        out = img.transform((size, size), Image.Transform.EXTENT, crop, resample=Image.Resampling.BILINEAR,
                            fillcolor=fill)
        return np.asarray(out, dtype=np.float32) / 255.0

    colour = _resample(rgb, "RGB", tuple(background))
    image = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1)))
    mask = torch.from_numpy(_resample(alpha, "L", 0)) if alpha is not None else None
    return PreparedImage(image=image, mask=mask, box=crop, original_size=(w, h))
