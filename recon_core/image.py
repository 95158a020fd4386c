"""Reading user images safely and cropping them to the object, the same way in training and inference.

:func:`load_image` turns any file a user may hand us into ``(rgb, alpha)`` arrays or
raises :class:`ImageError` with one sentence naming the problem and the fix.
:func:`prepare_image` finds the object (the alpha channel when there is one, else the
pixels that differ from the border colour), cuts a square around it with
:data:`recon_core.camera.CROP_MARGIN` free on each side, and resizes it to the
network's input size. Large JPEGs are decoded at reduced size (:data:`DECODE_MIN_SIDE`):
from then on every array, box and size is in the decoded image's pixels. :func:`object_mask`
and :func:`uncrop_mask` give the object's mask in those pixels, :func:`mask_png` encodes it and
:func:`save_mask` writes it at the picture file's size.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from recon_core.camera import CROP_MARGIN

__all__ = [
    "ImageError", "PreparedImage", "load_image", "prepare_image", "object_box", "MIN_SIDE", "MAX_PIXELS",
    "DECODE_MIN_SIDE", "UNIFORM_SPREAD", "NOISE_CORRELATION", "object_mask", "object_pixels", "uncrop_mask", "mask_png",
    "save_mask",
]

log = logging.getLogger(__name__)

MIN_SIDE = 16
"""Smallest accepted image side, in pixels."""
MAX_PIXELS = 64_000_000
"""Largest accepted image area (pixels); larger images are refused before decoding."""
DECODE_MIN_SIDE = 1024
"""Smallest shorter side, in pixels, a large JPEG is reduced to when decoded (JPEG's DCT scaling: 1/2, 1/4, 1/8).

The network sees at most 224 px (:attr:`recon_core.config.ModelConfig.image_size`, 137 as
shipped) and the object spans ``1 - 2 * CROP_MARGIN`` = 80 % of its crop, so an object that
spans at least 224 * 0.8 / 1024 = 18 % of the picture's shorter side (11 % at 137 px) is
still resampled down, never up. The decoded shorter side lies in [1024, 2048): an
8000x8000 photo is decoded at 2000x2000, 16x fewer pixels to decode, search and crop
(1/8 would need a shorter side of 8192, beyond :data:`MAX_PIXELS`).
"""
UNIFORM_SPREAD = 12
"""A picture without transparency whose every channel spans at most this many levels (of 255) is one
uniform colour and is refused by :func:`load_image`: a flat colour saved as JPEG stays within it,
while a stroke or an object 13 levels (5 %) darker or lighter than the paper already passes."""
NOISE_CORRELATION = 0.25
"""A picture without transparency whose neighbouring pixels (of its grey, box-averaged over up to 4 x 4
pixels so that sensor noise and dithering average out) correlate less than this, both across and
down, is random noise and is refused by :func:`load_image`. Random noise measures about 0.0 (uniform,
Gaussian, salt-and-pepper, JPEG-compressed); of 70 photos, renders, sketches, textures and a
dithered picture tried, the lowest was 0.58 (a nature photo), in its better direction."""


class ImageError(ValueError):
    """An input image that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class PreparedImage:
    """A network-ready crop of one image.

    Attributes:
        image: (3, S, S) float32 tensor in [0, 1], RGB, object centred.
        mask: (S, S) float32 tensor in [0, 1] (the alpha channel cropped), or ``None`` for RGB input.
        box: ``(u0, v0, u1, v1)`` square crop box in the pixels of the image given to :func:`prepare_image`
            (may extend past its border).
        original_size: ``(width, height)`` of that image: for a large JPEG, the reduced size
            :func:`load_image` decoded it at, not the size in the file's header.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    box: tuple[float, float, float, float]
    original_size: tuple[int, int]


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read an image file.

    A JPEG whose shorter side is at least twice :data:`DECODE_MIN_SIDE` is decoded at 1/2,
    1/4 or 1/8 of its size, the largest reduction that keeps its shorter side at least
    :data:`DECODE_MIN_SIDE` (Pillow's draft mode: the decoder skips the detail instead of
    decoding it and throwing it away). Other formats are decoded at full size.

    Returns:
        rgb: (H, W, 3) uint8, at the decoded size.
        alpha: (H, W) uint8, or ``None`` when the image has no alpha channel.
        notes: human-readable notes on conversions made (16-bit to 8-bit, CMYK to RGB, ...).

    Raises:
        ImageError: missing file, not an image, truncated or corrupt, too small, too
            large, fully transparent, or (without transparency) one uniform colour
            (:data:`UNIFORM_SPREAD`) or random noise (:data:`NOISE_CORRELATION`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"Image file not found: {path}. Check the path and try again.")
    if os.path.isdir(path):
        raise ImageError(f"{path} is a folder, not an image file. Give the path of a PNG or JPEG file.")
    notes: list[str] = []
    bomb_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # our own size check below names the size
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = bomb_limit
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{path} is too large ({width}x{height} pixels); downscale it to at most "
                    f"{int(MAX_PIXELS ** 0.5)}x{int(MAX_PIXELS ** 0.5)} pixels and try again."
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"{path} is too small ({width}x{height} pixels); use an image at least {MIN_SIDE}x{MIN_SIDE} pixels."
                )
            _request_reduced_decode(img)
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file that can be read; save it as PNG or JPEG.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path} is too large to decode safely; downscale it and try again.") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path} is truncated or corrupt ({err}); re-export the image and try again.") from None

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I") else max(float(arr.max()), 1.0)
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append("16-bit image converted to 8 bits per channel")
        rgb = np.repeat(gray[..., None], 3, axis=2)
        _refuse_without_object(rgb, path)
        return rgb, None, notes
    if mode == "CMYK":
        notes.append("CMYK image converted to RGB")
        img = img.convert("RGB")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")

    arr = np.asarray(img)
    rgb = np.ascontiguousarray(arr[..., :3])
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    if alpha is not None:
        if alpha.max() == 0:
            raise ImageError(
                f"{path} is fully transparent: there is no object to reconstruct. "
                "Export it with the object visible (alpha > 0 on the object)."
            )
        if alpha.min() == 255:
            alpha = None  # an opaque alpha channel carries no mask
    if alpha is None:
        _refuse_without_object(rgb, path)
    return rgb, alpha, notes


def _refuse_without_object(rgb: np.ndarray, path: str) -> None:
    """Raise :class:`ImageError` when the (H, W, 3) uint8 picture is one colour (:data:`UNIFORM_SPREAD`)
    or random noise (:data:`NOISE_CORRELATION`)."""
    fix = "give a picture with the object on a plain background or with transparency."
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)  # reduced over rows first: contiguous, fast
    top = rows.max(axis=0).reshape(w, 3).max(axis=0).astype(np.int16)
    if int((top - rows.min(axis=0).reshape(w, 3).min(axis=0)).max()) <= UNIFORM_SPREAD:
        raise ImageError(f"{path} is one uniform colour, so there is no object to reconstruct; {fix}")
    if max(_neighbour_correlation(rgb)) < NOISE_CORRELATION:
        raise ImageError(f"{path} looks like random noise (neighbouring pixels are unrelated), so there is no object "
                         f"to reconstruct; {fix}")


def _neighbour_correlation(rgb: np.ndarray) -> tuple[float, float]:
    """Correlation of horizontally and of vertically neighbouring pixels of the (H, W, 3) uint8 picture's
    grey, box-averaged over ``b x b`` pixels (``b`` up to 4, at least 32 blocks a side); 0 for a flat picture."""
    h, w = rgb.shape[:2]
    b = max(1, min(4, min(h, w) // 32))
    blocks = rgb[: h // b * b, : w // b * b].reshape(h // b, b, w // b, b * 3)  # a block's rows of b pixels x 3
    grey = blocks.sum(axis=(1, 3), dtype=np.uint32).astype(np.float32)  # 3 b^2 x the block's mean grey
    out = []
    for x, y in ((grey[:, :-1], grey[:, 1:]), (grey[:-1], grey[1:])):
        x, y = x - x.mean(), y - y.mean()
        denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
        out.append(float((x * y).sum()) / denom if denom > 0 else 0.0)
    return out[0], out[1]


def _request_reduced_decode(img: Image.Image) -> None:
    """Ask the decoder for the reduced size :func:`load_image` documents (a no-op unless the format can, i.e. JPEG)."""
    width, height = img.size
    shorter = min(width, height)
    if shorter < 2 * DECODE_MIN_SIDE:
        return
    # draft() picks the largest of 1/8, 1/4, 1/2 that keeps both sides >= the requested size;
    # mode None: the size only, the colour mode stays as decoded (and converted below).
    scale = DECODE_MIN_SIDE / shorter
    img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
    if img.size != (width, height):
        log.debug("%s decoded at %dx%d instead of %dx%d", img.format, *img.size, width, height)


def object_pixels(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray | None:
    """(H, W) bool pixels :func:`object_box` takes for the object, or ``None`` when it takes the whole image.

    Args:
        rgb: (H, W, 3) uint8; alpha: (H, W) uint8 or None (then the border-colour rule).
    """
    if alpha is not None:
        fg = alpha > 127
        return fg if fg.any() else alpha > 0
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    bg = np.median(border, axis=0)
    spread = np.abs(border - bg).sum(axis=1)
    if np.percentile(spread, 75) > 60:  # busy border: no plain background to separate from
        return None
    fg = np.abs(rgb.astype(np.int16) - bg).sum(axis=2) > 60
    if fg.mean() < 1e-4 or fg.mean() > 0.97:
        return None
    return fg


def object_box(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[int, int, int, int]:
    """2D box ``(u0, v0, u1, v1)`` (pixels, exclusive end) around the object.

    With alpha, the box of ``alpha > 127``. Without, the pixels whose colour differs
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


def mask_png(mask: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Encode a mask as an 8-bit grey PNG (0: background, 255: object).

    Args:
        mask: (H, W) float in [0, 1].
        size: ``(width, height)`` to resize it to (bilinear), e.g. the file's size when a large
            JPEG was decoded at reduced size; ``None`` keeps its own.
    """
    mask = np.asarray(mask, np.float32)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a (H, W) array, got shape {mask.shape}")
    img = Image.fromarray(np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if size is not None and tuple(size) != img.size:
        img = img.resize(tuple(size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def save_mask(mask: np.ndarray, picture: str | os.PathLike, path: str | os.PathLike) -> None:
    """Write ``mask`` as a :func:`mask_png` of the picture file's size, atomically (``--save-mask``, the worker).

    A large JPEG's mask was made at its reduced decode size (:data:`DECODE_MIN_SIDE`); it is
    resized back to the file's size, so that it lies over the picture pixel for pixel.

    Args:
        mask: (H, W) float in [0, 1], in the picture's decoded pixels (``Reconstruction.mask``).
        picture: the image file the mask was made from.
        path: the PNG to write, through a temporary file in its folder and a rename.

    Raises:
        OSError: the picture cannot be opened again or the PNG cannot be written.
    """
    from recon_core.weights import atomic_write_bytes  # here, not above: recon_core.weights loads the network

    with Image.open(picture) as img:
        size = img.size
    atomic_write_bytes(path, mask_png(mask, size))


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
        (use :func:`recon_core.camera.crop_camera` to adjust a camera).
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
