"""Picture styles: a rendered view redrawn the way designers' pictures come (photo, JPEG, clip art, pencil, ...).

:func:`stylize` turns one rendered view (RGBA, object mask, depth, intrinsics) into the picture
of one of :data:`STYLES`. It is a pure function of ``(view, style, seed)``: every random choice
comes from one ``numpy`` generator seeded with the seed and the style, so a check set built
from it is the same on every machine and every run. ``training/evaluate.py --style NAME``
scores the model on such pictures; the training augmentation can draw from the same
functions.

The styles (in :data:`STYLES` order):

* ``clean``: the render as it is, with its alpha.
* ``background``: the object over a background photograph (``data/backgrounds``,
  training/build_backgrounds.py; a synthetic background when there is none); no alpha.
* ``jpeg``: on white, re-compressed as a JPEG of quality 40-90 (:data:`JPEG_QUALITY`); no alpha.
* ``clipart``: flat colours (the shaded colours quantised to 3-6 shades by k-means inside the
  mask), a thick dark outline of the silhouette and thinner lines along creases and depth
  edges (:func:`object_lines`), on white; no alpha.
* ``pencil``: grey strokes of varying width and pressure along the silhouette, creases and
  depth edges, wobbling, drawn twice (slightly offset) and broken in places, sometimes light
  hatching on the darker side, on tinted paper in uneven light; no alpha.
* ``small_offcentre``: the object on white, scaled so that its box's longer side is 25-45 %
  (:data:`OFFCENTRE_FILL`) of a canvas twice the render's size (:data:`OFFCENTRE_CANVAS`),
  placed off the centre; no alpha. The picture's size changes to the canvas's.
* ``no_alpha``: the render on white; no alpha.

Every style but ``clean`` drops the alpha: whoever reads the picture must find the object.
``small_offcentre`` moves the object's pixels by a similarity (a scale and a shift), the same
map for every pixel, so the picture's camera is the render's with ``K' = S @ K``
(``S = [[s, 0, tu], [0, s, tv], [0, 0, 1]]``); a silhouette IoU is unchanged by such a map, so
scores against the render's own camera and mask stay correct.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from training.augment import BackgroundPhotos, jpeg_round_trip, light_falloff, paper, synthetic_background
from training.render import sketch_lines

__all__ = [
    "STYLES",
    "SEEDLESS_STYLES",
    "JPEG_QUALITY",
    "CLIPART_COLOURS",
    "CREASE_DEG",
    "OFFCENTRE_FILL",
    "OFFCENTRE_CANVAS",
    "REFERENCE_SIDE",
    "stylize",
    "normals_from_depth",
    "object_lines",
    "quantize_colours",
]

STYLES = ("clean", "background", "jpeg", "clipart", "pencil", "small_offcentre", "no_alpha")
"""Names of the styles, in the order of tables and contact sheets."""
SEEDLESS_STYLES = ("clean", "no_alpha")
"""Styles that draw nothing at random: the same picture for every seed."""

JPEG_QUALITY = (40, 90)
"""Range (inclusive) of the ``jpeg`` style's quality."""
CLIPART_COLOURS = (3, 6)
"""Range (inclusive) of the number of flat colours inside the object of a ``clipart`` picture."""
CREASE_DEG = 35.0
"""Neighbouring pixels whose depth-derived normals differ by more than this draw a crease line."""
OFFCENTRE_FILL = (0.25, 0.45)
"""Range of the object's box's longer side as a fraction of the ``small_offcentre`` canvas's shorter side."""
OFFCENTRE_CANVAS = 2.0
"""The ``small_offcentre`` canvas's size over the render's."""
REFERENCE_SIDE = 137.0
"""Picture side (pixels) up to which line widths and wobble have their nominal sizes; above, they grow with the side."""

_WHITE = np.float32(255.0)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""Rec. 601 luma weights of R, G, B."""


# ----------------------------------------------------------------------------------------- geometry


def normals_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit camera-frame surface normals from a depth map, facing the camera.

    Each pixel is lifted to its camera-frame point ``z * K^-1 (u + 0.5, v + 0.5, 1)`` and the
    normal is the cross product of the point's differences along ``u`` and ``v``: central
    differences where both neighbours are on the object, one-sided ones at its border.

    Args:
        depth: (H, W) float camera-frame z, 0 off the object.
        K: (3, 3) intrinsics.

    Returns:
        (H, W, 3) float32 unit normals with ``n_z <= 0`` (towards the camera), 0 off the object
        and where the surface is a single pixel wide in a direction.
    """
    depth = np.asarray(depth, dtype=np.float64)
    h, w = depth.shape
    hit = depth > 0
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=2)
    pts = rays * depth[..., None]  # (H, W, 3)

    def derivative(axis: int) -> np.ndarray:
        """(H, W, 3) change of the points from one pixel to the next along ``axis`` (0: v, 1: u)."""
        pad = [(1, 1) if a == axis else (0, 0) for a in range(2)]
        p, ok, n = np.pad(pts, pad + [(0, 0)]), np.pad(hit, pad), depth.shape[axis]
        before, after = (np.take(p, np.arange(k, k + n), axis=axis) for k in (0, 2))
        back, fwd = (np.take(ok, np.arange(k, k + n), axis=axis)[..., None] & hit[..., None] for k in (0, 2))
        return np.where(back & fwd, (after - before) / 2.0,
                        np.where(fwd, after - pts, np.where(back, pts - before, 0.0)))

    n = np.cross(derivative(1), derivative(0))  # d/du x d/dv
    length = np.linalg.norm(n, axis=2, keepdims=True)
    n = np.where(length > 0, n / np.maximum(length, 1e-30), 0.0)
    n *= np.where(n[..., 2:3] > 0, -1.0, 1.0)
    n[~hit] = 0.0
    return n.astype(np.float32)


def object_lines(mask: np.ndarray, depth: np.ndarray, K: np.ndarray,
                 crease_deg: float = CREASE_DEG) -> tuple[np.ndarray, np.ndarray]:
    """The lines of a drawing of the object: its silhouette, and its creases and depth edges.

    The inner lines are :func:`training.render.sketch_lines` of the depth inside the mask with
    the normals of :func:`normals_from_depth` (the render's own sketches use the normal pass).

    Args:
        mask: (H, W) bool object mask.
        depth: (H, W) float camera-frame z, 0 off the object.
        K: (3, 3) intrinsics.
        crease_deg: neighbouring normals differing by more than this make a crease line.

    Returns:
        ``(silhouette, inner)``, each (H, W) bool: the mask's border pixels (none along the
        picture's border, where the object is cut), and the crease and depth-edge pixels inside
        the mask that are not on its border.
    """
    mask = np.asarray(mask, dtype=bool)
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)  # the mask's border, along the picture's too
    silhouette = mask & ~ndimage.binary_erosion(mask, border_value=1)  # where the object is cut, no line
    z = np.where(mask, np.asarray(depth, dtype=np.float64), 0.0)
    lines = sketch_lines(z, normals_from_depth(z, K), np.asarray(K, np.float64), crease_deg)
    return silhouette, lines & mask & ~edge


def _object_window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Rows and columns of the mask's box widened by ``pad`` pixels on each side, within the picture."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)))


def _window_camera(K: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """(3, 3) intrinsics of the pixels ``window`` cuts out (the principal point moves with the corner)."""
    K = np.array(K, dtype=np.float64)
    K[0, 2] -= window[1].start
    K[1, 2] -= window[0].start
    return K


def _distance_to(lines: np.ndarray) -> np.ndarray:
    """(H, W) float32 Euclidean distance (pixels) of every pixel to the nearest ``lines`` pixel; inf without lines."""
    if not lines.any():
        return np.full(lines.shape, np.inf, dtype=np.float32)
    return ndimage.distance_transform_edt(~lines).astype(np.float32)


def _stroke(distance: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """(H, W) float32 antialiased coverage in [0, 1] of a line of ``half_width`` around the pixels at distance 0."""
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------ colours


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: the render composited over white with its alpha."""
    a = rgba[..., 3:4].astype(np.float32) / np.float32(255.0)
    return rgba[..., :3].astype(np.float32) * a + _WHITE * (1.0 - a)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def quantize_colours(colours: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 10,
                     fit_pixels: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """k-means of colours: ``k`` centres, sorted by luminance, and each colour's centre.

    The centres start at the luminance quantiles ``(i + 0.5) / k`` of the colours (shades of the
    shading) and are fitted on at most ``fit_pixels`` colours drawn with ``rng``; a centre that
    loses all its colours keeps its place.

    Args:
        colours: (N, 3) float colours, N >= 1.
        k: number of centres (fewer when the colours have fewer distinct values).
        rng: draws the fitting subset.

    Returns:
        ``(centres, labels)``: (k', 3) float32 centres by increasing luminance, (N,) int64 index
        of each colour's nearest centre.
    """
    colours = np.asarray(colours, dtype=np.float32)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) == 0:
        raise ValueError(f"colours must be a non-empty (N, 3) array, got {colours.shape}")
    fit = colours if len(colours) <= fit_pixels else colours[rng.choice(len(colours), fit_pixels, replace=False)]
    k = int(min(k, len(np.unique(fit.view(np.dtype((np.void, 12))).ravel()))))  # distinct colours of the fit
    order = np.argsort(fit @ _LUMA, kind="stable")
    centres = fit[order[((np.arange(k) + 0.5) / k * len(fit)).astype(np.int64)]].copy()

    def nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:  # |x - c|^2 up to the per-row constant |x|^2
        return ((c * c).sum(axis=1)[None] - 2.0 * (x @ c.T)).argmin(axis=1)

    for _ in range(iterations):
        labels = nearest(fit, centres)
        counts = np.bincount(labels, minlength=k).astype(np.float32)
        sums = np.stack([np.bincount(labels, weights=fit[:, c], minlength=k) for c in range(3)], axis=1)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centres).astype(np.float32)
        if np.allclose(moved, centres, atol=0.05):
            centres = moved
            break
        centres = moved
    centres = centres[np.argsort(centres @ _LUMA, kind="stable")]
    return centres, nearest(colours, centres)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """(H, W) float32 in [0, 1]: uniform noise on a grid of ``cell`` pixels, bicubically upsampled (smooth)."""
    h, w = shape
    coarse = rng.random((max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)), dtype=np.float32)
    grid = Image.fromarray(coarse, "F")
    # The grid's cells are ``cell`` pixels wide: sample its first h / cell rows and w / cell columns.
    box = (0.0, 0.0, w / cell, h / cell)
    return np.clip(np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC, box=box), dtype=np.float32), 0.0, 1.0)


# ------------------------------------------------------------------------------------------- styles


def _clean(rgba, mask, depth, K, rng, photos):
    return rgba[..., :3].copy(), rgba[..., 3].copy()


def _no_alpha(rgba, mask, depth, K, rng, photos):
    return _to_uint8(_on_white(rgba)), None


def _background(rgba, mask, depth, K, rng, photos):
    h, w = rgba.shape[:2]
    if photos is not None and photos.available:
        back = photos.sample(rng, max(h, w))[:h, :w]
    else:
        back = synthetic_background(rng, (h, w))
    a = rgba[..., 3:4].astype(np.float32) / np.float32(255.0)
    return _to_uint8(rgba[..., :3].astype(np.float32) * a + back * (1.0 - a)), None


def _jpeg(rgba, mask, depth, K, rng, photos):
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return jpeg_round_trip(_to_uint8(_on_white(rgba)), quality), None


def _line_scale(shape: tuple[int, int]) -> float:
    """Factor of the nominal line widths and wobble: the picture's side over :data:`REFERENCE_SIDE`, at least 1."""
    return max(1.0, max(shape) / REFERENCE_SIDE)


def _clipart(rgba, mask, depth, K, rng, photos):
    h, w = mask.shape
    scale = _line_scale((h, w))
    k = int(rng.integers(CLIPART_COLOURS[0], CLIPART_COLOURS[1] + 1))
    saturation = float(rng.uniform(1.0, 1.5))
    outline = float(rng.uniform(0.9, 1.5)) * scale  # half-widths in pixels
    inner_width = float(rng.uniform(0.4, 0.8)) * scale
    ink = np.float32(rng.uniform(0.0, 40.0))

    win = _object_window(mask, math.ceil(outline) + 2)  # everything drawn lies in here
    m = mask[win]
    centres, labels = quantize_colours(rgba[win][..., :3][m], k, rng)
    grey = centres.mean(axis=1, keepdims=True)
    centres = np.clip(grey + (centres - grey) * saturation, 0.0, 255.0)
    # Flat regions: the label map (shades sorted by luminance) median-filtered, the background
    # filled with the nearest object label first so the filter does not eat the border.
    label_map = np.zeros(m.shape, np.int64)
    label_map[m] = labels
    nearest = ndimage.distance_transform_edt(~m, return_distances=False, return_indices=True)
    label_map = ndimage.median_filter(label_map[nearest[0], nearest[1]], size=3, mode="nearest")
    part = np.where(m[..., None], centres[label_map], _WHITE)

    _, inner = object_lines(m, depth[win], _window_camera(K, win))
    # The outline straddles the silhouette: a band of half-width ``outline`` around the mask's edge.
    edge = (np.where(m, ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m)) - 0.5).astype(np.float32)
    cover = np.maximum(_stroke(edge, outline - 0.5), _stroke(_distance_to(inner), inner_width))[..., None]
    out = np.full((h, w, 3), 255, np.uint8)
    out[win] = _to_uint8(part * (1.0 - cover) + ink * cover)
    return out, None


def _pencil(rgba, mask, depth, K, rng, photos):
    h, w = mask.shape
    scale = _line_scale((h, w))
    cell = REFERENCE_SIDE * scale  # the noise grids below are spaced at fractions of this many pixels
    overshoot = 0.025  # the second go over the lines is scaled by up to this much about the object's centre
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    win = _object_window(mask, math.ceil(5.0 * scale + overshoot * extent) + 2)  # every stroke lies in here
    m = mask[win]
    sh, sw = m.shape
    silhouette, inner = object_lines(m, depth[win], _window_camera(K, win))
    distance = np.minimum(_distance_to(silhouette | inner), 1e4)
    ys, xs = np.nonzero(m)
    centre = np.array([ys.mean(), xs.mean()], np.float32)
    v, u = np.mgrid[0:sh, 0:sw].astype(np.float32)

    ink = np.zeros((sh, sw), np.float32)
    for stroke_pass in range(2):  # the drawing and a lighter second go over it, slightly off
        wobble = 1.2 * scale
        du = (_smooth_noise(rng, (sh, sw), cell / 6) - 0.5) * 2.0 * wobble
        dv = (_smooth_noise(rng, (sh, sw), cell / 6) - 0.5) * 2.0 * wobble
        if stroke_pass == 1:  # over-drawn: a slightly scaled and shifted copy, so ends overshoot
            grow = np.float32(rng.uniform(-overshoot, overshoot))
            shift = rng.uniform(-1.0, 1.0, 2).astype(np.float32) * scale
            dv += (v - centre[0]) * grow + shift[0]
            du += (u - centre[1]) * grow + shift[1]
        warped = ndimage.map_coordinates(distance, [v + dv, u + du], order=1, mode="nearest")
        half_width = (0.3 + 1.0 * _smooth_noise(rng, (sh, sw), cell / 8)) * scale
        pressure = 0.35 + 0.65 * _smooth_noise(rng, (sh, sw), cell / 10)
        gaps = _smooth_noise(rng, (sh, sw), cell / 24)  # broken where this noise is high
        kept = float(rng.uniform(0.75, 0.9)) if stroke_pass == 0 else float(rng.uniform(0.35, 0.55))
        keep = np.clip((kept - gaps) / 0.08, 0.0, 1.0)
        strength = 1.0 if stroke_pass == 0 else float(rng.uniform(0.4, 0.7))
        ink = 1.0 - (1.0 - ink) * (1.0 - _stroke(warped, half_width) * pressure * keep * strength)

    if rng.random() < 0.6:  # light hatching over the darker part of the shading
        lum = rgba[win][..., :3].astype(np.float32) @ _LUMA
        dark = m & (lum <= np.quantile(lum[m], float(rng.uniform(0.25, 0.5))))
        dark = ndimage.binary_opening(dark, iterations=max(1, round(scale)))
        angle = float(rng.uniform(0.15, 0.45) * math.pi)
        period = float(rng.uniform(3.0, 5.0)) * scale
        jitter = (_smooth_noise(rng, (sh, sw), cell / 8) - 0.5) * 0.8 * period
        phase = np.mod((u * math.cos(angle) + v * math.sin(angle) + jitter) / period, 1.0)
        lines = np.clip(1.0 - np.abs(phase - 0.5) * period / max(0.6 * scale, 0.5), 0.0, 1.0)
        fade = _smooth_noise(rng, (sh, sw), cell / 12)
        hatch = lines * ndimage.gaussian_filter(dark.astype(np.float32), 1.0 * scale) * (0.15 + 0.3 * fade)
        ink = 1.0 - (1.0 - ink) * (1.0 - hatch)

    drawn = np.zeros((h, w), np.float32)
    drawn[win] = ink
    drawn *= 0.75 + 0.25 * rng.random((h, w), dtype=np.float32)  # graphite grain
    light = 1.0 - 0.5 * (1.0 - light_falloff(rng, (h, w))[..., None])  # a photographed sheet: 70-90 % at the darkest
    sheet = paper(rng) + rng.normal(0.0, 2.0, (h, w, 1)).astype(np.float32)  # (H, W, 3) tinted paper, fibres
    graphite = np.float32(rng.uniform(40.0, 80.0)) + rng.normal(0.0, 3.0, 3).astype(np.float32)
    out = (sheet * (1.0 - drawn[..., None]) + graphite * drawn[..., None]) * light
    return _to_uint8(out), None


def _small_offcentre(rgba, mask, depth, K, rng, photos):
    h, w = mask.shape
    canvas_h, canvas_w = round(OFFCENTRE_CANVAS * h), round(OFFCENTRE_CANVAS * w)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    v0, v1, u0, u1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    fill = float(rng.uniform(*OFFCENTRE_FILL))
    s = fill * min(canvas_h, canvas_w) / max(u1 - u0, v1 - v0)
    # The box and a pixel of white around it, resampled (antialiased when shrinking) to s times its size.
    box = (max(u0 - 1, 0), max(v0 - 1, 0), min(u1 + 1, w), min(v1 + 1, h))
    size = (max(1, round((box[2] - box[0]) * s)), max(1, round((box[3] - box[1]) * s)))
    piece = Image.fromarray(_to_uint8(_on_white(rgba))).resize(size, Image.Resampling.BICUBIC, box=box)
    # Off the centre: the shift is at least half the room left around the piece, in a random direction.
    angle, reach = float(rng.uniform(0.0, 2.0 * math.pi)), float(rng.uniform(0.5, 1.0))
    room_u, room_v = (canvas_w - size[0]) / 2.0, (canvas_h - size[1]) / 2.0
    left = int(np.clip(round(room_u + reach * room_u * math.cos(angle)), 0, canvas_w - size[0]))
    top = int(np.clip(round(room_v + reach * room_v * math.sin(angle)), 0, canvas_h - size[1]))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (255, 255, 255))
    canvas.paste(piece, (left, top))
    return np.asarray(canvas, dtype=np.uint8).copy(), None


_DRAW: dict[str, Callable] = {  # each: (rgba, mask, depth, K, rng, photos) -> (rgb, alpha or None)
    "clean": _clean,
    "background": _background,
    "jpeg": _jpeg,
    "clipart": _clipart,
    "pencil": _pencil,
    "small_offcentre": _small_offcentre,
    "no_alpha": _no_alpha,
}
_NEEDS_OBJECT = ("clipart", "pencil", "small_offcentre")


def _validate(rgba: np.ndarray, mask: np.ndarray, depth: np.ndarray, K: np.ndarray, style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"Unknown picture style {style!r}: choose one of {', '.join(STYLES)}.")
    if not (isinstance(rgba, np.ndarray) and rgba.ndim == 3 and rgba.shape[2] == 4 and rgba.dtype == np.uint8):
        raise ValueError(f"rgba must be a (H, W, 4) uint8 array, got {getattr(rgba, 'shape', None)} "
                         f"{getattr(rgba, 'dtype', type(rgba).__name__)}")
    h, w = rgba.shape[:2]
    if np.shape(mask) != (h, w) or np.asarray(mask).dtype != bool:
        raise ValueError(f"mask must be a ({h}, {w}) bool array like the picture, got {np.shape(mask)} "
                         f"{np.asarray(mask).dtype}")
    if np.shape(depth) != (h, w) or not np.issubdtype(np.asarray(depth).dtype, np.floating):
        raise ValueError(f"depth must be a ({h}, {w}) float array like the picture, got {np.shape(depth)} "
                         f"{np.asarray(depth).dtype}")
    if np.shape(K) != (3, 3):
        raise ValueError(f"K must be the (3, 3) intrinsics, got {np.shape(K)}")
    if style in _NEEDS_OBJECT and not np.asarray(mask).any():
        raise ValueError(f"The mask is empty: the {style!r} style draws the object and needs its pixels.")


def stylize(
    rgba: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    style: str,
    seed: int,
    backgrounds: BackgroundPhotos | str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One rendered view as a picture of ``style``, the same for the same ``(style, seed)``.

    Args:
        rgba: (H, W, 4) uint8 render, straight alpha.
        mask: (H, W) bool object mask.
        depth: (H, W) float camera-frame z, 0 off the object (the render's ``NNN_depth.npy``).
        K: (3, 3) intrinsics of the render.
        style: one of :data:`STYLES`.
        seed: non-negative int; with the style, seeds every random choice.
        backgrounds: the photographs of the ``background`` style (a :class:`training.augment.BackgroundPhotos`
            or its folder); None or an empty folder: synthetic backgrounds.

    Returns:
        ``(rgb, alpha)``: (H', W', 3) uint8 picture and, for ``clean`` only, its (H', W') uint8
        alpha, else None. ``(H', W') = (H, W)`` except for ``small_offcentre``
        (:data:`OFFCENTRE_CANVAS` times larger).

    Raises:
        ValueError: an unknown style (the message names the valid ones), arrays of the wrong
            shape or type, or an empty mask for a style that draws the object.
    """
    _validate(rgba, mask, depth, K, style)
    if isinstance(backgrounds, (str, os.PathLike)):
        backgrounds = BackgroundPhotos(backgrounds)
    rng = np.random.default_rng((STYLES.index(style), int(seed)))
    return _DRAW[style](rgba, np.asarray(mask, bool), np.asarray(depth, np.float32), np.asarray(K, np.float64),
                        rng, backgrounds)
