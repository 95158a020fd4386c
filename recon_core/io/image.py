"""Reading user images safely, and writing the object's mask back.

:func:`load_image` turns any file a user may hand us into ``(rgb, alpha)`` arrays or
raises :class:`ImageError` with one sentence naming the problem and the fix. Large JPEGs
are decoded at reduced size (:data:`DECODE_MIN_SIDE`), and a photo whose EXIF orientation says it was taken turned
(a phone held upright) is turned upright, as image viewers show it (:func:`upright_size`): from then on every array,
box and size is in the decoded, upright image's pixels. :func:`mask_png` encodes an object mask and
:func:`save_mask` writes it at the picture file's size; :func:`load_mask` reads one back (a mask the
user drew or corrected, ``recon-mesh --mask``) in the decoded picture's pixels. Cutting the object out for the
network is :mod:`recon_core.network.crop`'s.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import threading
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from recon_core.io.export import atomic_write_bytes
from recon_core.io.notes import share

try:  # HEIC/HEIF, a phone's photo (an iPhone's by default): Pillow reads it through this plug-in, upright already
    import pillow_heif
except ImportError:  # an environment set up before it was required: such a photo is refused by name (_unreadable_kind)
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

__all__ = [
    "ImageError", "load_image", "MIN_SIDE", "MAX_PIXELS", "DECODE_MIN_SIDE", "UNIFORM_SPREAD", "NOISE_CORRELATION",
    "mask_png", "save_mask", "load_mask", "load_picture", "MASK_ALPHA_MAX_SHARE", "MASK_MAX_SCALE", "upright_size",
    "FAINT_ALPHA", "FAINT_ALPHA_MIN",
]

log = logging.getLogger(__name__)

MIN_SIDE = 16
"""Smallest accepted image side, in pixels."""
MAX_PIXELS = 64_000_000
"""Largest accepted image area (pixels), as decoded (a large JPEG's reduced decode, :data:`DECODE_MIN_SIDE`); larger
images are refused before decoding."""
DECODE_MIN_SIDE = 1024
"""Smallest shorter side, in pixels, a large JPEG is reduced to when decoded (JPEG's DCT scaling: 1/2, 1/4, 1/8).

The network sees at most 224 px (:attr:`recon_core.network.config.ModelConfig.image_size`, 137 as
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
SPECK_PIXELS = 16
"""A plain picture with fewer pixels than this off its colour is not refused as noise (:func:`_a_few_specks`): two dots
on grey were called random noise; the object's search then says it has too few pixels to be one (fewer than
``recon_core.network.crop.BORDER_FLOOR_PIXELS``, the same number: a test keeps them equal). As many scattered dots or
more are still noise: 30 dots on grey, let through, came out as a table."""


def _broken_link(path: str) -> str:
    """What to add to "not found" of a ``path`` that is a link to nothing (``ls`` lists it): where it points."""
    try:
        return f" (a link to {os.readlink(path)}, which does not exist)" if os.path.islink(path) else ""
    except OSError:
        return ""


class ImageError(ValueError):
    """An input image that cannot be used; the message says what is wrong and what to do."""


def load_image(path: str | os.PathLike, *, masked: bool = False) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read an image file (``masked``: the user gives the object's mask, :func:`load_picture`, so an alpha that shows
    nothing is dropped rather than refused).

    A JPEG whose shorter side is at least twice :data:`DECODE_MIN_SIDE` is decoded at 1/2,
    1/4 or 1/8 of its size, the largest reduction that keeps its shorter side at least
    :data:`DECODE_MIN_SIDE` (Pillow's draft mode: the decoder skips the detail instead of
    decoding it and throwing it away). Other formats are decoded at full size, then reduced by the same factor
    (:func:`_reduced`: each pixel the mean of a 2 x 2, 4 x 4 or 8 x 8 block), so that a picture's arrays have one
    size whatever its format, the shorter side under ~2,048 px. A picture whose EXIF
    orientation (2-8) says its pixels are stored turned or mirrored is turned upright, as viewers show it,
    with a note; an alpha that is faint everywhere (:data:`FAINT_ALPHA`) is scaled to full, with a note (fainter than
    :data:`FAINT_ALPHA_MIN`, refused); an alpha
    that leaves more than :data:`MASK_ALPHA_MAX_SHARE` of the picture opaque (rounded corners, a frame) holds no
    cut-out: the picture is read over white without it, with a note.

    Returns:
        rgb: (H, W, 3) uint8, at the decoded size.
        alpha: (H, W) uint8, or ``None`` when the image has no alpha channel (or one that holds no cut-out).
        notes: human-readable notes on conversions made (16-bit to 8-bit, CMYK to RGB, ...).

    Raises:
        ImageError: missing file, not an image, truncated or corrupt, too small, too
            large, fully or almost fully transparent, or (without transparency) one uniform colour
            (:data:`UNIFORM_SPREAD`) or random noise (:data:`NOISE_CORRELATION`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageError(f"Image file not found: {path}{_broken_link(path)}. Check the path and try again.")
    if os.path.isdir(path):
        raise ImageError(f"{path} is a folder, not an image file. Give the path of a picture in it (PNG, JPEG, HEIC, "
                         "...).")
    with contextlib.suppress(OSError):  # unreadable: said below, when it is opened
        if os.path.getsize(path) == 0:  # Pillow calls it "not an image file that can be read"
            raise ImageError(f"{path} is empty (0 bytes): it holds no picture. Save or copy the picture again and "
                             "try again.")
    with contextlib.ExitStack() as files:  # the file is closed however the reading ends (a refusal, a GIF's frames)
        return _read_image(path, files, masked)


def _read_image(path: str, files: contextlib.ExitStack, masked: bool = False
                ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """:func:`load_image`'s reading of an existing file, opened into ``files`` (closed by the caller after the arrays
    are made)."""
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = files.enter_context(_open_unlimited(path))  # our own size check below names the size
            width, height = img.size
            # a JPEG is decoded reduced (_request_reduced_decode): its decoded size is what must fit (a 108-megapixel
            # phone photo, 12000 x 9000, decodes at 1500 x 1125)
            jpeg = img.format in ("JPEG", "MPO")  # MPO: a camera's or phone's JPEG with more pictures in it
            factor = _reduction_factor((width, height)) if jpeg else 1
            if (width // factor) * (height // factor) > MAX_PIXELS:
                other = "" if jpeg else "; a JPEG is read reduced, and may be larger"
                raise ImageError(
                    f"{path} is too large ({width}x{height} pixels, {width * height / 1e6:.0f} million): at most "
                    f"{MAX_PIXELS / 1e6:g} million pixels are read (e.g. {int(MAX_PIXELS ** 0.5)}x"
                    f"{int(MAX_PIXELS ** 0.5)}){other}; downscale it and try again."
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"{path} is too small ({width}x{height} pixels); use an image at least {MIN_SIDE}x{MIN_SIDE} pixels."
                )
            orientation = _orientation(img)  # from the header, as upright_size reads it
            _request_reduced_decode(img)
            img.load()
            # an animated GIF, PNG or WebP, a TIFF of several pages (not a camera JPEG's preview, Pillow's MPO frames)
            frames = getattr(img, "n_frames", 1) if img.format in ("GIF", "PNG", "WEBP", "TIFF") else 1
            if isinstance(frames, int) and frames > 1:
                notes.append(f"it holds {frames} frames (an animation or several pages): the first is read")
            if orientation != 1:
                try:
                    img = ImageOps.exif_transpose(img)
                    notes.append(f"turned upright as its EXIF orientation ({orientation}) says")
                except (OSError, SyntaxError, TypeError, ValueError):  # read as stored rather than refused
                    notes.append(f"its EXIF orientation ({orientation}) could not be applied: read as stored")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_unreadable_message(path)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path} is too large to decode safely; downscale it and try again.") from None
    except PermissionError:
        raise ImageError(f"{path} cannot be read: permission denied. Check the file's permissions (or copy it "
                         "somewhere you can read) and try again.") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = " ".join(str(err).split())  # one line: a decoder's message may end in a line break (libheif's)
        raise ImageError(f"{path} is truncated or corrupt ({reason}); re-export the image and try again.") from None

    mode = img.mode
    if _png_16bit_colour(path, img):  # decoded at 8 bits by Pillow itself
        notes.append("16-bit image converted to 8 bits per channel")
    if mode in HIGH_DEPTH_MODES:
        key = img.info.get("transparency") if mode.startswith("I") else None  # a PNG's transparent grey (tRNS)
        key = key if isinstance(key, int) and not isinstance(key, bool) else None
        gray, bits = _grey_8bit(img, ignore=key)
        depth = {"I": "32-bit integer", "F": "floating-point"}.get(mode, "16-bit")  # "I;16", "I;16B", "I;16L"
        notes.append(f"{depth} image converted to 8 bits per channel" if bits is None else
                     f"{depth} image converted to 8 bits per channel (its values use {bits} bits: scaled from "
                     f"0-{2 ** bits - 1})")
        if mode == "F":
            broken = int((~np.isfinite(np.asarray(img))).sum())
            if broken:  # a silent black patch grew the mask to a corner and halved the width
                notes.append(f"{broken:,} of its pixels are not numbers (NaN or infinite): read as black")
        if key is None:
            gray = np.asarray(_reduced(Image.fromarray(gray, "L"), (width, height)))
            rgb = np.repeat(gray[..., None], 3, axis=2)
            _refuse_without_object(rgb, path)
            return rgb, None, notes
        # the transparent grey as an alpha: read below by the alpha's rules, as an 8-bit grey PNG's colour key is
        opaque = np.where(np.asarray(img) == key, 0, 255).astype(np.uint8)
        img = Image.fromarray(np.stack([gray, gray, gray, opaque], axis=2), "RGBA")
    elif mode == "CMYK":
        notes.append("CMYK image converted to RGB")
        img = img.convert("RGB")
    elif mode in ("P", "L", "1", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # a palette's transparent entries, or a PNG's transparent colour (its tRNS key)
    elif mode in ("LA", "PA"):
        img = img.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")

    if masked and img.mode == "RGBA" and img.getchannel("A").getextrema()[1] < FAINT_ALPHA_MIN:
        img = img.convert("RGB")  # the user's mask takes the place of an alpha that shows nothing: not refused
    if img.mode == "RGBA":  # the alpha's rules on the decoded pixels, before any reduction averages them
        channel = img.getchannel("A")  # one copy of the alpha, read for all three rules
        low, peak = channel.getextrema()
        if peak == 0:
            raise ImageError(
                f"{path} is fully transparent: there is no object to reconstruct. "
                "Export it with the object visible (alpha > 0 on the object)."
            )
        if peak < FAINT_ALPHA_MIN:  # nothing a viewer shows: its mask would mark nothing, and the fit would be skipped
            raise ImageError(
                f"{path} is almost fully transparent (its most opaque pixel is {peak} of 255): there is no object to "
                "reconstruct. Export it with the object opaque, or without transparency."
            )
        if FAINT_ALPHA_MIN <= peak <= FAINT_ALPHA:  # a cut-out exported faint (a glass object, an opacity below half)
            channel = channel.point(lambda v: min(255, round(v * 255.0 / peak)))
            img.putalpha(channel)
            low = channel.getextrema()[0]
            notes.append(f"{FAINT_NOTE} (at most {peak} of 255): its object taken at full "
                         "opacity")
        if low == 255:
            img = img.convert("RGB")  # an opaque alpha channel carries no mask
        else:
            opaque = sum(channel.histogram()[128:]) / (channel.width * channel.height)  # no copy of a large alpha
            if opaque > MASK_ALPHA_MAX_SHARE:  # rounded corners, a frame, a pixel or two: no cut-out's background
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img).convert("RGB")
                held = ("all of it at least half" if opaque == 1.0 else
                        f"{math.floor(1000.0 * opaque) / 10.0:.1f} % of it")  # never "100.0 %" for 99.96 %
                # no colon before the options: the add-on leaves out "recon-mesh --mask or ", which left "black: Object:"
                notes.append(f"{OPAQUE_NOTE} {held} opaque, too much for a cut-out: read over white as a "
                             "picture without transparency, and the object is found in it; if it is a cut-out of an "
                             "object that fills the picture, give its mask, white on black, with recon-mesh --mask or "
                             "the add-on's Object: Mask Image")
    arr = np.asarray(_reduced(img, (width, height)))
    rgb = np.ascontiguousarray(arr[..., :3])
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    if alpha is not None:
        alpha = _without_shadow(rgb, alpha, notes)
        if _marks_whole_border(alpha):  # as a --mask's: an object transparent on an opaque background was read silently
            notes.append(f"{INVERTED_NOTE}: if it is inverted (the object transparent), export the object opaque and "
                         "the rest transparent")
    if alpha is not None and alpha.max() == 0:  # a few faint pixels, averaged away by the reduction
        raise ImageError(f"{path} shows too little of an object (a few faint pixels) to reconstruct at the size it "
                         "is read; export it with the object more opaque or larger.")
    if alpha is None:
        _refuse_without_object(rgb, path)
    return rgb, alpha, notes


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
"""The major brands a HEIF file's ``ftyp`` box names (ISO/IEC 23008-12): HEVC pictures (HEIC, a phone's photos) and
the general image brand (an AVIF's is ``avif``, which Pillow 11.3 and later read themselves)."""


def _unreadable_kind(path: str) -> str | None:
    """What a file Pillow cannot identify is, from its first bytes, when a user may hand it to us as a picture: "a
    PDF document", "an SVG drawing", "a HEIC photo" (only when :mod:`pillow_heif` is missing); None otherwise."""
    try:
        with open(path, "rb") as file:
            head = file.read(1024)
    except OSError:
        return None
    if head.startswith(b"%PDF"):
        return "a PDF document"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # a UTF-8 byte-order mark, leading white space
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in text):
        return "an SVG drawing"
    if pillow_heif is None and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIC photo"
    return None


def _unreadable_message(path: str) -> str:
    """The sentence for a file Pillow cannot identify: what it is, when a user may hand it to us as a picture
    (:func:`_unreadable_kind`), and what to do."""
    kind = _unreadable_kind(path)
    if kind == "a PDF document":
        return (f"{path} is a PDF document, not a picture; export the page with the object as a PNG or JPEG picture "
                "(e.g. a PDF viewer's Export or a screenshot) and try again.")
    if kind == "an SVG drawing":
        return (f"{path} is an SVG drawing (vector graphics), which is not read; export it as a PNG picture (in "
                "Inkscape or Illustrator: Export PNG), with a transparent background, and try again.")
    if kind == "a HEIC photo":
        return (f"{path} is a HEIC photo, which needs the pillow-heif package, missing from this environment; "
                "install it (pip install pillow-heif, or rerun scripts/setup.sh) or save the photo as JPEG, and try "
                "again.")
    return f"{path} is not an image file that can be read; save it as PNG or JPEG."


def _without_shadow(rgb: np.ndarray, alpha: np.ndarray, notes: list[str]) -> np.ndarray:
    """The (H, W) uint8 ``alpha`` of a cut-out without its drop shadow, with a note; unchanged when it has none.

    A product's cut-out often keeps the shadow it casts: near black (no channel above :data:`SHADOW_DARK`) and half
    transparent (alpha below 250), and taken as the object where its alpha is above half (a chair's shadow took half of
    its mask and cut the mesh 68 mm wide to 53). Such pixels that fill a 5 x 5 square (their opening: the band of a
    dark object's anti-aliased edge vanishes, a shadow's area stays) are made transparent, when they are at least
    :data:`SHADOW_MIN_SHARE` of the object's pixels (alpha above half) and leave it some, mostly opaque (a cut-out of an
    opaque object: a drawing whose dark strokes are all half transparent, a marker's, is not one, and keeps them). None
    of the 984 validation renders has one such pixel (`runs/s41/shadow_probe.py`)."""
    candidate = (alpha > 0) & (alpha < 250)
    if candidate.sum() >= 25:  # else no 5 x 5 area of half-transparent pixels: an opaque cut-out's edge only
        candidate &= rgb.max(axis=2) <= SHADOW_DARK
    if candidate.sum() < 25:  # no 5 x 5 area of dark ones (a light object's soft edge): no opening to compute
        return alpha
    from scipy import ndimage  # imported by the reconstruction anyway (its mask's parts), not at start-up

    shadow = ndimage.binary_opening(candidate, np.ones((5, 5), dtype=bool)) & candidate
    inside = alpha > 127
    taken = int((shadow & inside).sum())
    left = int((inside & ~shadow).sum())
    if taken < SHADOW_MIN_SHARE * max(int(inside.sum()), 1) or left < 16:
        return alpha
    if (alpha[inside & ~shadow] >= 250).mean() < 0.5:  # what is left is no opaque object: half-transparent strokes
        return alpha
    alpha = alpha.copy()
    alpha[shadow] = 0
    notes.append(f"{SHADOW_NOTE} ({share(taken / (taken + left))} of the cut-out: a drop shadow) is not "
                 "taken as the object; if it is part of the object, give the object's mask (recon-mesh --mask; the "
                 "add-on's Object: Mask Image)")
    return alpha


SHADOW_NOTE = "a dark, half-transparent area"
"""How the note of a cut-out's drop shadow begins (:func:`_without_shadow`; :func:`load_picture` drops it when a mask
takes the place of the alpha)."""
INVERTED_NOTE = "its transparency marks the picture's whole border as the object"
"""How the note on an alpha that may be inverted begins (:func:`load_picture` drops it when a mask replaces it)."""
FAINT_NOTE = "its transparency is faint everywhere"
"""How the note on a faint alpha scaled to full begins (dropped likewise)."""
OPAQUE_NOTE = "its transparency leaves"
"""How the note on an alpha that leaves too much opaque for a cut-out begins (dropped likewise)."""
ALPHA_NOTES = (SHADOW_NOTE, INVERTED_NOTE, FAINT_NOTE, OPAQUE_NOTE)
"""The notes about the picture's own alpha, which a mask given in its place makes moot (:func:`load_picture`)."""
SHADOW_DARK = 40
"""A drop shadow's pixels have no channel above this (of 255): a shadow is black, made lighter by its transparency."""
SHADOW_MIN_SHARE = 0.02
"""A cut-out's dark, half-transparent area is taken out as its shadow when it holds at least this share of the pixels
above half alpha (fewer: left as it is)."""


def _png_16bit_colour(path: str, img: Image.Image) -> bool:
    """Whether ``img`` is a PNG of 16 bits a channel in colour or grey with alpha (colour types 2, 4 and 6), which
    Pillow decodes at 8 bits itself (16-bit grey without alpha it keeps, :data:`HIGH_DEPTH_MODES`): read from the
    file's IHDR chunk, which a PNG has first (bytes 24 and 25: bit depth and colour type)."""
    if img.format != "PNG":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return False
    return len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6)


FAINT_ALPHA = 127
"""A picture whose alpha is at most this everywhere (no pixel even half opaque, a cut-out exported at low opacity) has
it scaled so that its most opaque pixel is 255 (:func:`load_image`): the model takes the object where the mask is
above half, and would otherwise see none (its silhouette fit and outline skipped)."""
FAINT_ALPHA_MIN = 32
"""... unless its most opaque pixel is below this (1/8 opaque): so faint a picture shows nothing and is refused, as a
fully transparent one is (stray dots of an eraser are not made an object; until the forty-fifth session it was read
with its alpha as it was, and its mask marked nothing)."""
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
"""Pillow's grey modes of more than 8 bits a pixel (:func:`_grey_8bit`)."""


_PIXEL_LIMIT_LOCK = threading.Lock()
"""Held while :func:`_open_unlimited` lifts Pillow's global pixel limit: two threads opening pictures at once would
otherwise each save the other's lifted limit and could leave it lifted for good."""


def _open_unlimited(path: str) -> Image.Image:
    """``Image.open`` without Pillow's own pixel limit (the caller checks the size itself, with a sentence that
    names it); the limit is restored at once. Pillow keeps that limit in a global, so one thread at a time.

    A TIFF that a quarter turn stands upright (orientation 5-8) and that Pillow would decode itself, not through
    libtiff (uncompressed), is opened through libtiff (Pillow's ``READ_LIBTIFF``, a global too): Pillow's own decoder
    gave an RGBA one's pixels in stripes, 4 chairs side by side, at the size before the turn."""
    from PIL import TiffImagePlugin

    with _PIXEL_LIMIT_LOCK:
        bomb_limit, libtiff = Image.MAX_IMAGE_PIXELS, TiffImagePlugin.READ_LIBTIFF
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
            if img.format == "TIFF" and _quarter_turned_tiff(img):
                img.close()
                TiffImagePlugin.READ_LIBTIFF = True
                img = Image.open(path)
                img.n_frames  # counting the pages seeks back to the first, which chooses its decoder again: here
            return img
        finally:
            Image.MAX_IMAGE_PIXELS, TiffImagePlugin.READ_LIBTIFF = bomb_limit, libtiff


def _quarter_turned_tiff(img: Image.Image) -> bool:
    """Whether an opened TIFF is one that Pillow decodes itself (not through libtiff) and that its orientation tag
    turns by a quarter (5-8): Pillow then gives its size turned but decodes its pixels as stored."""
    if any(getattr(tile, "codec_name", tile[0]) == "libtiff" for tile in getattr(img, "tile", ())):
        return False
    try:
        return int(img.tag_v2.get(ExifTags.Base.Orientation, 1)) in _SWAPPING_ORIENTATIONS
    except (AttributeError, TypeError, ValueError):
        return False


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation an opened picture's stored pixels still need, 1 when none (or an unreadable one).

    Read only from an EXIF block the file's header holds (``img.info["exif"]``: JPEG, WebP, a PNG whose eXIf chunk
    comes before its pixels), so that asking does not decode the picture. A TIFF's is 1: Pillow opens a TIFF
    upright already (its size and pixels; an uncompressed one turned by a quarter through libtiff,
    :func:`_open_unlimited`)."""
    if img.format == "TIFF" or "exif" not in img.info:
        return 1
    try:
        value = int(img.getexif().get(ExifTags.Base.Orientation, 1))  # 1 upright; 2-8 mirrored/turned
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError):  # no EXIF, or a broken block: as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened picture as viewers show it: its stored size, the sides swapped when its EXIF
    orientation (5-8) turns it by 90° (what :func:`load_image` decodes, before any reduced decode)."""
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def _grey_8bit(img: Image.Image, ignore: int | None = None) -> tuple[np.ndarray, int | None]:
    """``(grey (H, W) uint8, bits)`` of a grey image of a :data:`HIGH_DEPTH_MODES` mode, rounded: integers over the
    largest value of the bits they use, 16 or more (over 65,535 for a 16-bit picture), or fewer when its values need
    fewer, 12 at most (12-bit sensor data in a 16-bit file, 0-4,095, over 4,095: not a near-black picture); floats
    over their largest finite value (a float pixel that is not finite, NaN or infinite, is black). ``bits`` is that
    count when it is 12 or fewer (None otherwise). Integer pixels of the value ``ignore`` (a PNG's transparent grey)
    do not count towards the bits used."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    bits = None
    if img.mode.startswith("I"):
        seen = arr if ignore is None else arr[arr != ignore]
        used = max(8, int(max(float(seen.max()) if seen.size else 0.0, 0.0)).bit_length())
        bits = used if used <= 12 else None  # 13-16 bits: a 16-bit picture, dark or not, is read as stored
        top = float(2 ** (used if used <= 12 else max(used, 16)) - 1)
    else:
        top = max(float(arr.max()), 1.0)
    return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), bits


def _refuse_without_object(rgb: np.ndarray, path: str) -> None:
    """Raise :class:`ImageError` when the (H, W, 3) uint8 picture is one colour (:data:`UNIFORM_SPREAD`)
    or random noise (:data:`NOISE_CORRELATION`)."""
    fix = "give a picture with the object on a plain background or with transparency."
    h, w = rgb.shape[:2]
    rows = rgb.reshape(h, w * 3)  # reduced over rows first: contiguous, fast
    top = rows.max(axis=0).reshape(w, 3).max(axis=0).astype(np.int16)
    if int((top - rows.min(axis=0).reshape(w, 3).min(axis=0)).max()) <= UNIFORM_SPREAD:
        raise ImageError(f"{path} is one uniform colour, so there is no object to reconstruct; {fix}")
    if max(_neighbour_correlation(rgb)) < NOISE_CORRELATION and not _a_few_specks(rgb):
        raise ImageError(f"{path} looks like random noise (neighbouring pixels are unrelated), so there is no object "
                         f"to reconstruct; {fix}")


def _a_few_specks(rgb: np.ndarray) -> bool:
    """Whether the (H, W, 3) uint8 picture is its median colour (within :data:`UNIFORM_SPREAD`) but for fewer than
    :data:`SPECK_PIXELS` pixels: a plain picture with a few dots, whose neighbouring pixels are as unrelated as noise's
    (its dots' neighbours are the background), is not noise; the object's search then says it has too few pixels to be
    one. Asked only of a picture the noise test refuses."""
    median = np.median(rgb[::4, ::4].reshape(-1, 3), axis=0)
    differ = (np.abs(rgb.astype(np.int16) - median.astype(np.int16)) > UNIFORM_SPREAD).any(axis=2)
    return int(differ.sum()) < SPECK_PIXELS


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


def _reduction_factor(stored: tuple[int, int]) -> int:
    """The largest of 1, 2, 4 and 8 that keeps the shorter side of a file's ``stored`` ``(width, height)`` at least
    :data:`DECODE_MIN_SIDE` after floor division (none below twice that): the one rule for a JPEG's reduced decode
    and every other format's reduction."""
    factor = 1
    while factor < 8 and min(stored) // (2 * factor) >= DECODE_MIN_SIDE:
        factor *= 2
    return factor


def _reduced(img: Image.Image, stored: tuple[int, int]) -> Image.Image:
    """A decoded picture reduced to the size :func:`load_image` documents: by :func:`_reduction_factor` of its
    file's ``stored`` ``(width, height)``, less what a JPEG's reduced decode already did (``Image.reduce``: each
    pixel the mean of a block, colours weighed by their alpha), so a picture comes out at one size whatever its
    format: a 6,000 x 6,000 PNG at 1,500 x 1,500, as the same JPEG."""
    factor = _reduction_factor(stored)
    done = max(1, round(min(stored) / max(1, min(img.size))))  # the reduced decode's own factor (1 for most)
    return img if factor <= done else img.reduce(factor // done)


def _request_reduced_decode(img: Image.Image) -> None:
    """Ask the decoder for the reduced size :func:`load_image` documents (a no-op unless the format can, i.e. JPEG)."""
    width, height = img.size
    factor = _reduction_factor((width, height))
    if factor == 1:
        return
    # draft() picks the largest of 1/8, 1/4, 1/2 whose scale is at most min(width // w, height // h) for the
    # requested (w, h): asking for the sides floor-divided by the factor gives exactly that factor (the scale
    # from the shorter side alone could be less on the longer side: 4,106 x 4,096 would be decoded at 1/2).
    # Mode None: the size only, the colour mode stays as decoded (and converted below).
    img.draft(None, (width // factor, height // factor))
    if img.size != (width, height):
        log.debug("%s decoded at %dx%d instead of %dx%d", img.format, *img.size, width, height)


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
    resized back to the file's size, so that it lies over the picture pixel for pixel, the picture upright as
    viewers show it (:func:`upright_size`).

    Args:
        mask: (H, W) float in [0, 1], in the picture's decoded pixels (``Reconstruction.mask``).
        picture: the image file the mask was made from.
        path: the PNG to write, through a temporary file in its folder and a rename.

    Raises:
        OSError: the picture cannot be opened again or the PNG cannot be written.
    """
    with _open_unlimited(picture) as img:  # read whole already: Pillow's pixel limit refused a 200 MP photo's header
        size = upright_size(img)
    atomic_write_bytes(path, mask_png(mask, size))


def load_mask(path: str | os.PathLike, picture: str | os.PathLike, shape: tuple[int, int]
              ) -> tuple[np.ndarray, str]:
    """Read an object mask the user gives for a picture (``recon-mesh --mask``, the worker's ``object_mask``).

    The mask is an image of the picture file's size (or of its shape at another resolution, resized): white (255)
    on the object, black (0) elsewhere, grey in between, as :func:`save_mask` writes it; or a cut-out whose
    transparency marks the object. Its alpha channel is read as the mask when it holds one: some of it opaque
    (above 127) and at most :data:`MASK_ALPHA_MAX_SHARE` of it (a mask painted white on black and saved with an
    alpha channel that one eraser stroke left less than opaque is read by its grey levels); else its grey levels
    are. It takes the place of the picture's alpha, so the object finder does not run.

    Args:
        path: the mask image file.
        picture: the picture file it belongs to (its size, upright as viewers show it, :func:`upright_size`, is the
            mask's).
        shape: ``(H, W)`` of the decoded picture (:func:`load_image`'s arrays; smaller than the file for a large
            JPEG): the mask is resized to it (bilinear) when they differ.

    Returns:
        ``(alpha, read)``: (H, W) uint8, 255 = object, the picture's alpha channel from now on; and what was read,
        ``"grey levels"`` or ``"transparency"``, with ``", resized from WxH to ..."`` when its size was not the
        picture's.

    Raises:
        ImageError: the mask file is missing, not an image, truncated or corrupt, or not of the picture's shape, or it
            marks no object (no pixel above half grey); or the picture cannot be read again.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ImageError(f"{path} is a folder, not a mask image. Give the path of the mask's PNG file.")
    if not os.path.isfile(path):
        raise ImageError(f"Mask file not found: {path}{_broken_link(path)}. Check the path, or leave the mask out to "
                         "let the model find the object.")
    try:
        with _open_unlimited(picture) as pic:  # a large JPEG's header, read reduced (no decompression-bomb warning)
            picture_size, stored_size, orientation = upright_size(pic), pic.size, _orientation(pic)
    except (OSError, ValueError) as err:
        raise ImageError(f"The picture {os.fspath(picture)} cannot be read again ({err}); check that it is still "
                         "there.") from None
    turn = None  # a mask painted over the picture as stored (Blender shows it so): turned as the picture is
    try:
        with _open_unlimited(path) as img:  # the size is compared with the picture's (at most MAX_PIXELS) first
            size = img.size  # checked before decoding it
            if (orientation in _SWAPPING_ORIENTATIONS and picture_size != stored_size
                    and not _same_shape(size, picture_size) and _same_shape(size, stored_size)):
                turn = orientation
                size = (size[1], size[0])
            if not _same_shape(size, picture_size):  # (the same size is the same shape)
                raise ImageError(
                    f"The mask {path} is {size[0]}x{size[1]} pixels but the picture is {picture_size[0]}x"
                    f"{picture_size[1]}: the mask must have the picture's size, or its shape (white on the "
                    "object, black elsewhere).")
            # at most MAX_PIXELS, but always the picture's own size (a large JPEG's mask, as --save-mask writes it)
            most = max(min(MAX_PIXELS, MASK_MAX_SCALE ** 2 * picture_size[0] * picture_size[1]),
                       picture_size[0] * picture_size[1])
            if min(size) < MIN_SIDE or size[0] * size[1] > most:
                which = "small" if min(size) < MIN_SIDE else "large"
                raise ImageError(f"The mask {path} is {size[0]}x{size[1]} pixels, too {which} for the picture's "
                                 f"{picture_size[0]}x{picture_size[1]}: save it at the picture's size.")
            img.load()
            values, read = _mask_values(img)
            if turn is not None:
                values = np.ascontiguousarray(np.asarray(
                    Image.fromarray(values, "L").transpose(_EXIF_TRANSPOSE[turn])))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"The mask {path} is not an image file that can be read; save it as PNG.") from None
    except PermissionError:
        raise ImageError(f"The mask {path} cannot be read: permission denied. Check the file's permissions and try "
                         "again.") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"The mask {path} is truncated or corrupt ({err}); save it again as PNG.") from None
    if values.max() == 1:  # NumPy's or OpenCV's 0/1 mask saved as it is: a viewer shows it all black
        raise ImageError(f"The mask {path} holds only the values 0 and 1 (a 0/1 array saved as it is): save it with "
                         "255 on the object (mask * 255), or leave the mask out to let the model find the object.")
    if values.max() <= 127:
        raise ImageError(f"The mask {path} marks no object (no pixel lighter than half grey): paint the object "
                         "white on black, or leave the mask out to let the model find the object.")
    if turn is not None:
        # no parentheses of its own: the note quotes it in one ("the object is the mask M (its ...)")
        read += (f", turned upright as the picture's EXIF orientation ({turn}) says, since the mask has the picture's "
                 "size as stored, as an editor that ignores that tag shows it")
    elif orientation != 1:
        read += (f", taken as lying over the picture upright, which its EXIF orientation, {orientation}, turns: a mask "
                 "painted over it as stored, where the tag is ignored, must be turned likewise")
    if size != picture_size:
        read += f", resized from {size[0]}x{size[1]} to the picture's {picture_size[0]}x{picture_size[1]}"
    if (values > 127).all():  # nothing to invert: a blank mask, most likely
        read += ("; it marks the whole picture as the object (no pixel darker than half grey), so the shape fills "
                 "the picture's rectangle: paint the background black")
    elif _marks_whole_border(values):
        read += ("; it marks the picture's whole border as the object: if it is inverted, paint the object white "
                 "and the rest black")
    height, width = shape
    if values.shape != (height, width):  # a mask of the picture's shape, or a picture decoded at reduced size
        values = np.asarray(Image.fromarray(values, "L").resize((width, height), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(values, dtype=np.uint8), read


def _marks_whole_border(mask: np.ndarray) -> bool:
    """Whether the (H, W) uint8 ``mask`` marks the picture's whole border as the object (above half grey all round):
    most likely inverted, the object left unmarked (a ``--mask``, or a cut-out's own alpha)."""
    return bool((np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]]) > 127).all())


_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn a picture by 90 degrees (its sides swap when it is shown upright)."""
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
                   7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
"""How each EXIF orientation's stored pixels are turned upright (as :func:`PIL.ImageOps.exif_transpose` does)."""

MASK_MAX_SCALE = 4
"""A mask of the picture's shape may be at most this many times its width (:func:`load_mask`)."""


def _same_shape(size: tuple[int, int], other: tuple[int, int]) -> bool:
    """Whether a mask's ``(width, height)`` ``size`` has the shape of a picture's ``other``: the same aspect ratio but
    for rounding either of its own sides by up to a pixel (a mask exported at another resolution):
    ``|w h' - h w'| <= w' + h'``, in integers."""
    (w, h), (w2, h2) = size, other
    return abs(w * h2 - h * w2) <= w2 + h2


MASK_ALPHA_MAX_SHARE = 0.97
"""A mask image's alpha channel is read as the mask (:func:`load_mask`), and a picture's as its object
(:func:`load_image`), only when at most this share of its pixels are opaque (above 127): a cut-out leaves the
background transparent, while an alpha that is opaque nearly everywhere (the share
:func:`recon_core.network.crop.object_pixels` takes for a whole picture) holds no mask."""


def _mask_values(img: Image.Image) -> tuple[np.ndarray, str]:
    """``((H, W) uint8 mask, what was read)`` of a decoded mask image: its alpha when it holds a mask, else its
    grey levels (16-bit grey scaled to 8 bits)."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "PA":
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA"):
        alpha = np.asarray(img.getchannel("A"))
        if 0 < (alpha > 127).mean() <= MASK_ALPHA_MAX_SHARE:
            return alpha, "transparency"
    if img.mode in HIGH_DEPTH_MODES:
        return _grey_8bit(img)[0], "grey levels"
    return np.asarray(img.convert("L")), "grey levels"


def load_picture(path: str | os.PathLike, mask: str | os.PathLike | None = None, *, return_own_alpha: bool = False
                 ) -> tuple:
    """:func:`load_image`, with the user's object mask (:func:`load_mask`) in place of its alpha when ``mask`` is given.

    Returns and raises as :func:`load_image` and :func:`load_mask`; with a mask, a note names it and what of it was
    read (its grey levels or its transparency), and says so when it replaced the picture's own transparency. With
    ``return_own_alpha``, ``(rgb, alpha, notes, own)``: ``own`` the picture's own alpha (None when it has none),
    whatever the mask (how the picture is shown, :func:`shown_picture`).
    """
    rgb, alpha, notes = load_image(path, masked=mask is not None)
    own = alpha
    if mask is not None:  # the alpha they were about is not used
        notes = [n for n in notes if not n.startswith(ALPHA_NOTES)]
        had_alpha = alpha is not None
        alpha, read = load_mask(mask, path, rgb.shape[:2])
        notes.append(f"the object is the mask {os.fspath(mask)} (its {read})"
                     + (", instead of the picture's own transparency" if had_alpha else ""))
    return (rgb, alpha, notes, own) if return_own_alpha else (rgb, alpha, notes)


SHOWN_SIDE = 2048
"""The longest side of the picture the worker writes for a front end to show (``picture_path``), in pixels."""


def shown_picture(rgb: np.ndarray, alpha: np.ndarray | None = None, side: int | None = SHOWN_SIDE) -> np.ndarray:
    """(h, w, 3) uint8: the decoded picture ``rgb`` (H, W, 3) uint8 as it is shown behind the mesh (the worker's
    ``picture_path``, ``recon-mesh --preview``): upright as it was read (EXIF orientation applied, whatever the
    format), a cut-out's ``alpha`` (H, W) uint8 made white, and shrunk to ``side`` at most along its longer side (None:
    not shrunk), in the decoded picture's proportions (a picture's camera is in its decoded pixels)."""
    if alpha is None:
        picture = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    else:  # Pillow's compositing: no float copy of a large picture
        cut = Image.fromarray(np.dstack([np.asarray(rgb, dtype=np.uint8), np.asarray(alpha, dtype=np.uint8)]), "RGBA")
        picture = Image.alpha_composite(Image.new("RGBA", cut.size, (255, 255, 255, 255)), cut).convert("RGB")
    w, h = picture.size
    if side is not None and max(h, w) > side:
        scale = side / max(h, w)
        # each pixel the mean of the area it covers: as sharp as a picture behind a mesh needs, and a 12-megapixel
        # photo's in about 0.1 s where Lanczos took 0.25 s
        picture = picture.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    return np.asarray(picture)
