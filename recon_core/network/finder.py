"""Finding the object in a picture without transparency: a small segmentation network.

A designer's picture rarely has an alpha channel: a product photo on a desk, clip art, a
pencil sketch on tinted paper, the object small and off the centre. Before the reconstruction
network can crop its input it must know which pixels are the object. The border-colour rule of
:func:`recon_core.network.crop.object_mask` works on a plain background only; :class:`ObjectFinder`
is a small U-Net trained (training/train_finder.py) on the renders redrawn in every picture
style of :mod:`training.styles`, placed at random sizes and positions, over photographs of
other packages than the check sets'.

It looks twice (:func:`find_object`):

1. the whole picture, letterboxed to :data:`FINDER_SIZE`\\ ² (the longer side fits, the rest
   is the edge pixels repeated): the object's box;
2. a square around that box, so a small object is seen at full resolution: its mask there.

The result is a soft mask (H, W) in [0, 1] that :class:`recon_core.io.inference.Reconstructor`
then uses as the picture's alpha, less the parts the finder is unsure of (:func:`drop_unsure_parts`) and fitted to
the picture (:func:`fit_to_picture`: grown to the object's edges on a plain background, cut along its colours on a
photograph, or there the object in the middle cut instead where the finder took something off the middle and sees
the object in the middle too). A picture in which the finder sees no object (fewer than
:data:`MIN_OBJECT_SHARE` of its pixels above 0.5) gets ``None``: the caller says so. Its files
are saved and loaded by :mod:`recon_core.io.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from recon_core.network.crop import border_colour

__all__ = [
    "FINDER_SIZE",
    "MIN_OBJECT_SHARE",
    "CROP_PAD",
    "FinderConfig",
    "ObjectFinder",
    "letterbox",
    "find_object",
    "finder_alpha",
    "found_alpha",
    "drop_unsure_parts",
    "grow_to_edges",
    "cut_by_colour",
    "fit_to_picture",
    "MissingDependency",
    "UNSURE_MASK",
    "mask_confidence",
]


FINDER_SIZE = 96
"""Side of the finder's square input, in pixels."""
MIN_OBJECT_SHARE = 0.002
"""A picture whose found mask is above 0.5 on less than this share of its pixels has no object."""
CROP_PAD = 0.25
"""The second look's square is the found box's longer side times ``1 + 2 * CROP_PAD``."""
UNSURE_PART = 0.75
"""A separate part of the found mask (a connected region above 0.5) other than the largest is dropped when its mean
probability is below this (:func:`drop_unsure_parts`)."""
PART_MARGIN = 2
"""Pixels around the kept parts where the found mask keeps its values (:func:`drop_unsure_parts`)."""
UNSURE_MASK = 0.86
"""A found alpha whose :func:`mask_confidence` is below this is one the finder is unsure of, and the user is told to
check it. Chosen on the validation pictures of five styles (615, ``evaluate.py --style``, 3 views a model): it
flags 8 % of them, 40 of the 48 on photographs; 69 % of those flagged have a mask IoU below 0.5 with the
render's, and they hold 63 % of such masks (README, "What finding the object costs")."""

EDGE_PLAIN = 30.0
"""A border whose :func:`recon_core.network.crop.border_colour` spread is at most this is a plain background, whose
colour tells the object's edge pixels (:func:`grow_to_edges`)."""
EDGE_SHARE = 0.4
"""A pixel next to the found mask joins it when its difference from the background colour is at least this share of
the largest difference within its 3 x 3 neighbourhood (:func:`grow_to_edges`)."""
EDGE_MIN = 16
"""The least difference from the background colour (summed absolute difference over the three channels, 0-765) of a
pixel that joins the found mask (:func:`grow_to_edges`): fainter is background."""
EDGE_REACH = 2
"""How far (pixels, 4-neighbourhood steps) beyond the found mask a pixel may join it; more for an object larger than
the finder's own resolution shows: one cell of the second look (its square over :data:`FINDER_SIZE`)."""
FLAT_COLOURS = 8
"""How many of a found object's most common colours :data:`FLAT_SHARE` counts."""
FLAT_MIN_PIXELS = 64
"""A found object of fewer pixels is never taken for flat colours (a few pixels are always of few colours)."""
FLAT_SAMPLE = 1 << 16
"""At most this many of the object's pixels (evenly strided) are counted for :data:`FLAT_SHARE`."""
FLAT_SHARE = 0.5
"""A found object more than this share of whose pixels are of its :data:`FLAT_COLOURS` most common colours (exactly)
is drawn in flat colours (clip art, a cartoon): its outline is left as the finder took it (:func:`grow_to_edges`). On
the validation pictures the clip art's share is 0.66 or more, a render's at most 0.24 for nine in ten (137 px); one
render of 45 at 768 px is above it (docs/STYLES.md, "The finder's mask grown to the object's edges")."""

CUT_SIDE = 256
"""The longer side (pixels) of the picture :func:`cut_by_colour` works on; a larger picture is shrunk to it and the
cut mask enlarged back."""
CUT_BAND = 0.1
"""How far beyond the found mask :func:`cut_by_colour` may take pixels, as a share of its working picture's longer
side (GrabCut's "probably background"); farther is background for sure. Chosen on the validation photographs
(123, ``evaluate.py --style background``'s pictures, 137 pixels a side, 3 views a model; GrabCut not yet seeded):
mask IoU 61.3 with the found mask; 71.0, 73.6, 73.5 and 73.8 at a band of 0.07, 0.1, 0.14 and 0.2 of the side
(docs/STYLES.md, "The finder's mask cut along the object's colours")."""
CUT_SURE = 0.9
"""Found probability above which a pixel at least :data:`CUT_SURE_DEPTH` inside the found mask is the object for
sure in :func:`cut_by_colour`; the rest of the found mask is "probably the object"."""
CUT_SURE_DEPTH = 8
"""Pixels (of the working picture) a sure object pixel lies inside the found mask's edge (:data:`CUT_SURE`): on the
validation photographs mask IoU 71.6, 73.6 and 72.2 at 4, 8 and 12 (as :data:`CUT_BAND`'s)."""
CUT_ITERATIONS = 4
"""GrabCut's iterations (its colour models refitted, the cut found again), :func:`cut_by_colour`."""
CUT_MIN_SATURATION = 20.0
"""A picture whose mean colour saturation (HSV's S, 0-255) is at most this is not cut along its colours
(:func:`fit_to_picture`): a pencil or pen drawing on paper, whose object is the paper's colour inside its lines
(on the validation pencil drawings at most 12.5 for nine in ten, the photographs at least 32.6 for nine in ten;
cut, the pencil drawings' mask IoU fell from 82.7 to 78.8)."""

CENTRE_MARGIN = 0.05
"""The centred cut (:func:`cut_centred`) takes the picture's outer band, this share of each side wide, as background
for sure and learns the object's colours inside it."""
CENTRE_LEAD = 0.05
"""A photograph's cut found mask gives way to the centred cut only when its centre lies farther from the picture's
centre than the centred cut's by more than this (:func:`_centre_offset`: x as a share of the width, y of the height;
:func:`_takes_centred`)."""
CENTRE_SUPPORT = 0.5
"""... and only when the finder sees the object there too: its mean probability over the centred cut's pixels at
least this share of its mean over the cut found mask's (:func:`_takes_centred`)."""

_MEAN, _STD = 0.5, 0.25


@dataclass(frozen=True)
class FinderConfig:
    """Widths of the U-Net's levels (each halves the resolution after the first)."""

    channels: tuple[int, ...] = (16, 32, 48, 64, 96)
    size: int = FINDER_SIZE

    def to_dict(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "size": self.size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FinderConfig":
        return cls(channels=tuple(int(c) for c in data["channels"]), size=int(data.get("size", FINDER_SIZE)))


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True),
    )


class ObjectFinder(nn.Module):
    """U-Net: (B, 3, S, S) picture in [0, 1] -> (B, 1, S, S) object logits.

    Encoder levels at strides 1, 2, 4, ... (``config.channels``); the coarsest level's mean
    (a whole-picture context: what is background here) is added back to it before the decoder,
    which upsamples and concatenates each encoder level on the way back.
    """

    def __init__(self, config: FinderConfig | None = None):
        super().__init__()
        self.config = config or FinderConfig()
        ch = self.config.channels
        self.down = nn.ModuleList([_block(3, ch[0])] + [_block(ch[i - 1], ch[i], stride=2) for i in range(1, len(ch))])
        self.context = nn.Linear(ch[-1], ch[-1])
        self.up = nn.ModuleList([_block(ch[i + 1] + ch[i], ch[i]) for i in range(len(ch) - 1)])
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, S, S) in [0, 1], S divisible by 2^(levels-1) -> (B, 1, S, S) logits."""
        x = (x - _MEAN) / _STD
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = x + self.context(x.mean(dim=(2, 3)))[:, :, None, None]
        for i in range(len(self.up) - 1, -1, -1):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skip], dim=1))
        return self.head(x)


def letterbox(rgb: np.ndarray, size: int = FINDER_SIZE) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Fit a picture into a square: the longer side becomes ``size``, the rest repeats the edge pixels.

    Args:
        rgb: (H, W, 3) uint8.
        size: the square's side.

    Returns:
        ``(image, scale, (h, w))``: (3, size, size) float32 in [0, 1]; square pixels per picture
        pixel; the picture's extent ``h x w`` in the square (at its top-left corner).
    """
    h0, w0 = rgb.shape[:2]
    scale = size / max(h0, w0)
    h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0))
    padded = np.pad(small, ((0, size - h), (0, size - w), (0, 0)), mode="edge")
    image = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1))).float() / 255.0
    return image, scale, (h, w)


def _look(net: ObjectFinder, rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 object probability of a whole (H, W, 3) uint8 picture, one pass of ``net``."""
    size = net.config.size
    image, _, (h, w) = letterbox(rgb, size)
    prob = torch.sigmoid(net(image[None]))[0, 0, :h, :w].numpy()
    out = Image.fromarray(prob.astype(np.float32), "F").resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.float32)


@torch.inference_mode()
def find_object(net: ObjectFinder, rgb: np.ndarray) -> np.ndarray | None:
    """The object's mask in a picture without transparency, or None when there is none.

    Args:
        net: a trained :class:`ObjectFinder` (eval mode).
        rgb: (H, W, 3) uint8.

    Returns:
        (H, W) float32 object probability in [0, 1]: the first look's outside the second look's
        square, the second's inside it (see the module docstring); None when fewer than
        :data:`MIN_OBJECT_SHARE` of the pixels are above 0.5 after the first look.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    prob = _look(net, rgb)
    fg = prob > 0.5
    if fg.mean() < MIN_OBJECT_SHARE:
        return None
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    v0, v1, u0, u1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(u1 - u0, v1 - v0) * (1.0 + 2.0 * CROP_PAD)
    if side >= 0.8 * max(h, w):  # the object fills the picture: the first look saw it at full size
        return prob
    cu, cv = (u0 + u1) / 2.0, (v0 + v1) / 2.0
    a0 = int(np.clip(round(cu - side / 2), 0, max(w - side, 0)))
    b0 = int(np.clip(round(cv - side / 2), 0, max(h - side, 0)))
    a1, b1 = min(w, a0 + int(round(side))), min(h, b0 + int(round(side)))
    prob = prob.copy()
    prob[b0:b1, a0:a1] = _look(net, np.ascontiguousarray(rgb[b0:b1, a0:a1]))
    return prob


def finder_alpha(net: ObjectFinder, rgb: np.ndarray, fit: bool = True) -> np.ndarray | None:
    """:func:`find_object` as an alpha channel without its unsure parts (:func:`drop_unsure_parts`) and, with
    ``fit``, fitted to the object's edges in the picture (:func:`fit_to_picture`): (H, W) uint8 (255: object), or
    None when there is no object."""
    found = find_object(net, rgb)
    if found is None:
        return None
    alpha = found_alpha(found)
    return fit_to_picture(alpha, rgb) if fit else alpha


def fit_to_picture(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A found alpha fitted to the object's edges as the picture shows them: (H, W) uint8, or ``alpha`` itself when
    nothing changes it.

    On a plain background (the border's spread at most :data:`EDGE_PLAIN`) it is grown into the object's edge pixels
    (:func:`grow_to_edges`); on a busy background in colour (a photograph: mean saturation above
    :data:`CUT_MIN_SATURATION`, :func:`_saturation`) it is cut along the object's colours (:func:`cut_by_colour`),
    or, where the finder took something off the middle and sees the object in the middle too
    (:func:`_takes_centred`), the object in the middle is cut instead (:func:`cut_centred`); otherwise (a drawing on
    paper) it is left as found.

    Args:
        alpha: (H, W) uint8 found alpha (:func:`found_alpha`).
        rgb: (H, W, 3) uint8, the picture it was found in.

    Raises:
        MissingDependency: a photograph's cut needs OpenCV and it is not installed (one sentence saying how to install
            it).
    """
    _, spread = border_colour(rgb)
    if spread <= EDGE_PLAIN:
        return grow_to_edges(alpha, rgb)
    if _saturation(rgb) > CUT_MIN_SATURATION:
        cut = cut_by_colour(alpha, rgb)
        offset = _centre_offset(cut)
        if offset <= CENTRE_LEAD or offset == float("inf"):  # none nearer the middle by more; or no object to weigh
            return cut
        centred = cut_centred(rgb)
        return centred if centred is not None and _takes_centred(alpha, cut, centred) else cut
    return alpha


class MissingDependency(ImportError):
    """A package the reconstruction needs is not installed; the message says which and how to install it."""


def _opencv():
    """OpenCV's module.

    Raises:
        MissingDependency: OpenCV is not installed (one sentence saying how to install it). An OpenCV that is installed
            but fails to import (a broken build) raises its own ImportError.
    """
    try:
        import cv2
    except ModuleNotFoundError as err:
        if err.name != "cv2":
            raise
        raise MissingDependency(OPENCV_MISSING) from None
    return cv2


OPENCV_MISSING = ("Cutting a photograph's object mask along its colours needs the Python package opencv-python-headless: "
                  "install it with pip install opencv-python-headless==4.10.0.84 (scripts/setup.sh does).")
"""What :func:`_opencv` says when OpenCV is not installed (the add-on's worker says it at its start too)."""


def _saturation(rgb: np.ndarray, sample: int = FLAT_SAMPLE) -> float:
    """Mean HSV saturation (S, 0-255, as OpenCV computes it) of ``rgb`` (H, W, 3) uint8, over every k-th row and
    column (k the smallest stride that leaves at most ``sample`` pixels): a picture's own pixels, not a shrunk copy's
    (averaging neighbours greys out a fine colour texture)."""
    h, w = rgb.shape[:2]
    step = max(1, int(np.sqrt(h * w / sample)))
    while -(-h // step) * -(-w // step) > sample:  # the smallest stride that leaves at most `sample` pixels
        step += 1
    p = rgb[::step, ::step]
    hi = p.max(axis=2).astype(np.float32)
    lo = p.min(axis=2).astype(np.float32)
    return float(np.where(hi > 0, (hi - lo) * 255.0 / np.maximum(hi, 1.0), 0.0).mean())


def cut_by_colour(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A found alpha on a photograph cut along the object's colours: (H, W) uint8, 255 object, 0 background, the
    edge enlarged smoothly from the working size; or ``alpha`` itself where the cut cannot be made or keeps nothing.

    The finder sees a photograph at :data:`FINDER_SIZE` pixels a side and learned its backgrounds from few pictures,
    so its mask on a new photograph is blurred and often takes part of the background or misses part of the object.
    OpenCV's GrabCut (colour models of the object and of the background, refitted, and a graph cut between them,
    :data:`CUT_ITERATIONS` times; its random start seeded by ``cv2.setRNGSeed(0)``, which resets OpenCV's random
    state on the calling thread, so a picture always gets the same cut) redraws it on the
    picture shrunk (area average) so that its longer side is at most :data:`CUT_SIDE`, seeded by the found mask
    shrunk the same way: its pixels above :data:`CUT_SURE` at least :data:`CUT_SURE_DEPTH` inside its edge are the
    object for sure, the rest of it probably the object, a band of :data:`CUT_BAND` of the working side around it
    probably background, and all farther background for sure, so the cut moves the edge within that band only.
    ``alpha`` itself comes back when it has no pixel above 127 (at the working size either), when the band takes
    the whole picture (nothing is background for sure), or when the cut keeps less than :data:`MIN_OBJECT_SHARE` of
    the pixels (an unsure mask with no sure pixel, whose object's colours are the background's, can be cut to
    nothing): the finder's mask is better than none.

    Args:
        alpha: (H, W) uint8 found alpha (:func:`found_alpha`); above 127 is object.
        rgb: (H, W, 3) uint8, the picture it was found in.

    Raises:
        ValueError: ``alpha`` is not a 2D uint8 array of the picture's size.
        MissingDependency: OpenCV is not installed (one sentence saying how to install it).
    """
    alpha = np.asarray(alpha)
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha must be a uint8 array of the picture's size {rgb.shape[:2]}, got {alpha.shape} "
                         f"{alpha.dtype}")
    if not (alpha > 127).any():
        return alpha
    cv2 = _opencv()
    small, prob = _shrunk(cv2, rgb), _shrunk(cv2, alpha)
    seed = (prob > 127).astype(np.uint8)
    if not seed.any():
        return alpha
    cross = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    band = max(1, int(round(CUT_BAND * max(seed.shape))))
    near = cv2.dilate(seed, cross, iterations=band).astype(bool)
    if near.all():  # nothing is background for sure: no colours to learn it from
        return alpha
    inner = cv2.erode(seed, cross, iterations=CUT_SURE_DEPTH, borderValue=1).astype(bool)
    marks = np.full(seed.shape, cv2.GC_PR_BGD, np.uint8)
    marks[~near] = cv2.GC_BGD
    marks[seed.astype(bool)] = cv2.GC_PR_FGD
    marks[inner & (prob > CUT_SURE * 255)] = cv2.GC_FGD
    cut = _grabcut(cv2, small, marks, alpha.shape)
    return alpha if cut is None else cut


def cut_centred(rgb: np.ndarray) -> np.ndarray | None:
    """The object in the middle of a photograph, cut along its colours without the finder: (H, W) uint8, 255 object,
    0 background; None when the cut keeps less than :data:`MIN_OBJECT_SHARE` of the pixels.

    OpenCV's GrabCut started from a rectangle (its usual start): the band of :data:`CENTRE_MARGIN` of each side is
    background for sure, all inside it probably the object; on the picture shrunk to :data:`CUT_SIDE` as in
    :func:`cut_by_colour`, with its :data:`CUT_ITERATIONS` and seeded random start. The band is at least a pixel
    wide, so a picture of a few pixels has background to learn from too.

    Args:
        rgb: (H, W, 3) uint8 picture.

    Raises:
        MissingDependency: OpenCV is not installed (one sentence saying how to install it).
    """
    cv2 = _opencv()
    small = _shrunk(cv2, rgb)
    sh, sw = small.shape[:2]
    left, top = max(1, int(CENTRE_MARGIN * sw)), max(1, int(CENTRE_MARGIN * sh))
    if sw - 2 * left < 2 or sh - 2 * top < 2:
        return None
    return _grabcut(cv2, small, np.zeros((sh, sw), np.uint8), rgb.shape[:2], (left, top, sw - 2 * left, sh - 2 * top))


def _shrunk(cv2, picture: np.ndarray) -> np.ndarray:
    """The cuts' working copy of ``picture`` ((H, W, 3) or (H, W) uint8): shrunk (area average) so that its longer side
    is at most :data:`CUT_SIDE`; ``picture`` itself when it is that small."""
    h, w = picture.shape[:2]
    scale = min(1.0, CUT_SIDE / max(h, w))
    if scale == 1.0:
        return picture
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # OpenCV's (width, height)
    return cv2.resize(np.ascontiguousarray(picture), size, interpolation=cv2.INTER_AREA)


def _grabcut(cv2, small: np.ndarray, marks: np.ndarray, shape: tuple[int, int], rect=None) -> np.ndarray | None:
    """OpenCV's GrabCut of the working copy ``small`` (h, w, 3) uint8 RGB from ``marks`` (h, w) uint8 (its GC_* labels;
    with ``rect``, (x, y, width, height), started from that rectangle instead), :data:`CUT_ITERATIONS` times, its random
    start seeded (``cv2.setRNGSeed(0)``: GrabCut's k-means starts from OpenCV's global random state): the object it
    keeps, (H, W) = ``shape`` uint8, 255 object, 0 background, enlarged smoothly from the working size; None when it
    keeps less than :data:`MIN_OBJECT_SHARE` of the pixels."""
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), marks, rect, bgd, fgd, CUT_ITERATIONS,
                cv2.GC_INIT_WITH_MASK if rect is None else cv2.GC_INIT_WITH_RECT)
    cut = np.where((marks == cv2.GC_FGD) | (marks == cv2.GC_PR_FGD), np.uint8(255), np.uint8(0))
    if np.count_nonzero(cut) < MIN_OBJECT_SHARE * cut.size:
        return None
    h, w = shape
    return cut if cut.shape == (h, w) else cv2.resize(cut, (w, h), interpolation=cv2.INTER_LINEAR)


def _takes_centred(alpha: np.ndarray, cut: np.ndarray, centred: np.ndarray) -> bool:
    """Whether a photograph's centred cut (:func:`cut_centred`) replaces its found mask's cut: the finder took
    something off the middle (the cut's centre farther from the picture's than the centred cut's by more than
    :data:`CENTRE_LEAD`) and sees the object in the middle too (``alpha``'s mean over the centred cut's pixels at least
    :data:`CENTRE_SUPPORT` times its mean over the cut's). A photograph's object is mostly in its middle, but the
    object of one taken off the middle is found there, and the centred cut of it is background: the finder gives that
    little probability.

    Args:
        alpha: (H, W) uint8 found alpha (the finder's probability times 255).
        cut, centred: (H, W) uint8 masks (above 127: object) of :func:`cut_by_colour` and :func:`cut_centred`.
    """
    if not _centre_offset(cut) > _centre_offset(centred) + CENTRE_LEAD:
        return False
    on_cut = alpha[cut > 127]
    if not on_cut.size:  # no found object to weigh it against: the finder's verdict (none) stands
        return False
    return float(alpha[centred > 127].mean()) >= CENTRE_SUPPORT * float(on_cut.mean())


def _centre_offset(alpha: np.ndarray) -> float:
    """How far the centre of the object pixels (above 127) of ``alpha``, (H, W) uint8, lies from the picture's centre:
    the distance with x as a share of the width and y of the height (0 centred, about 0.7 at a corner); infinite when
    it has none."""
    mask = np.asarray(alpha) > 127
    total = int(np.count_nonzero(mask))
    if not total:
        return float("inf")
    h, w = mask.shape
    rows, cols = np.count_nonzero(mask, axis=1), np.count_nonzero(mask, axis=0)  # the pixels' mean by their counts
    y = float(rows @ (np.arange(h) + 0.5)) / total / h
    x = float(cols @ (np.arange(w) + 0.5)) / total / w
    return float(np.hypot(y - 0.5, x - 0.5))


def found_alpha(found: np.ndarray) -> np.ndarray:
    """:func:`find_object`'s (H, W) float probability as the alpha inference takes: (H, W) uint8, rounded, without
    its unsure parts (:func:`drop_unsure_parts`)."""
    return drop_unsure_parts((found * 255.0 + 0.5).astype(np.uint8))


def mask_confidence(alpha: np.ndarray) -> float:
    """How sure the finder is of a found alpha: the mean object probability over its object pixels (above 127), in
    (0.5, 1]; 0 when it has none. A wrong mask (a photograph's background taken, the object missed) is mostly an
    unsure one (:data:`UNSURE_MASK`).

    Args:
        alpha: (H, W) uint8 found alpha, the probability times 255 (:func:`found_alpha`, or
            :func:`finder_alpha` with ``fit=False``: grown or cut pixels are 255 and would raise it).
    """
    counts = np.bincount(np.asarray(alpha, dtype=np.uint8).ravel(), minlength=256)[128:]  # a histogram: ~4x faster
    total = int(counts.sum())  # than gathering the pixels (5.6 against 20 ms for a 2,000 x 2,000 found alpha)
    return float((counts * np.arange(128, 256)).sum()) / total / 255.0 if total else 0.0


def _grow4(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` (H, W) bool grown by ``steps`` steps of the 4-neighbourhood (scipy's binary_dilation with its default
    cross, ~3x slower on large pictures)."""
    for _ in range(steps):
        step = mask.copy()
        step[1:] |= mask[:-1]
        step[:-1] |= mask[1:]
        step[:, 1:] |= mask[:, :-1]
        step[:, :-1] |= mask[:, 1:]
        mask = step
    return mask


def _common_colour_share(rgb: np.ndarray, fg: np.ndarray) -> float:
    """The share of the object's pixels ``rgb[fg]`` ((H, W, 3) uint8, (H, W) bool) that are of its
    :data:`FLAT_COLOURS` most common colours (exactly), over at most :data:`FLAT_SAMPLE` of them (every k-th, k the
    smallest stride that leaves no more); 0 with fewer than :data:`FLAT_MIN_PIXELS`."""
    where = np.flatnonzero(fg)
    if len(where) < FLAT_MIN_PIXELS:
        return 0.0
    sample = where[:: -(-len(where) // FLAT_SAMPLE)]
    p = rgb[sample // fg.shape[1], sample % fg.shape[1]].astype(np.int64)  # only these pixels (rgb may be a window)
    _, counts = np.unique((p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2], return_counts=True)
    return float(np.sort(counts)[-FLAT_COLOURS:].sum()) / len(p)


def grow_to_edges(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A found alpha on a plain background grown to the object's own edges: (H, W) uint8.

    The finder sees the object at :data:`FINDER_SIZE` pixels a side, so its mask's edge is a cell off here and there,
    and a part thinner than a cell (a chair's leg, a lamp's arm) can be missing. On a plain background (the
    border's :func:`recon_core.network.crop.border_colour` spread at most :data:`EDGE_PLAIN`) the picture itself
    tells: with ``d`` each pixel's summed absolute difference from the background colour, an *edge pixel* is one
    whose ``d`` is at least :data:`EDGE_MIN` and at least :data:`EDGE_SHARE` of the largest ``d`` in its 3 x 3
    neighbourhood (a pixel half covered by the object is; JPEG ringing and a faint shadow beside a darker object are
    not), and the mask grows into edge pixels only, one 4-neighbourhood step at a time, for :data:`EDGE_REACH` steps
    (more for a large object: one cell of the finder's second look); the pixels it takes are set to 255. Growing
    only through edge pixels, a shadow or a vignette beyond a ring that is not taken stays out. No pixel is taken
    away. A picture in flat colours (more than :data:`FLAT_SHARE` of the object's pixels of its :data:`FLAT_COLOURS`
    most common colours: clip art, a cartoon) is left as found: the finder learned where the silhouette lies under
    such a drawing's outline (its middle), and growing would take the outline's outer half. (A drawing saved as JPEG
    has no exactly flat colours: it is grown.)

    Args:
        alpha: (H, W) uint8 found alpha (:func:`found_alpha`); 255 and above 127 are object.
        rgb: (H, W, 3) uint8, the picture it was found in.

    Returns:
        The grown alpha, or ``alpha`` itself when the background is not plain, the picture is in flat colours or the
        mask is empty.
    """
    from scipy import ndimage

    fg = np.asarray(alpha) > 127
    if not fg.any():
        return alpha
    bg, spread = border_colour(rgb)
    if spread > EDGE_PLAIN:
        return alpha
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    reach = max(EDGE_REACH, int(round(side * (1.0 + 2.0 * CROP_PAD) / FINDER_SIZE)))
    # the window: the mask's box widened by the reach, and by one more pixel for the 3 x 3 neighbourhood
    pad = reach + 1
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, fg.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, fg.shape[1])
    f = fg[r0:r1, c0:c1]
    if _common_colour_share(rgb[r0:r1, c0:c1], f) > FLAT_SHARE:
        return alpha
    # float32 (the differences, halves at most and below 766, are exact), the channels summed one by one (numpy's
    # reduction over a last axis of 3 is several times slower): ~40 % of the time of the float64 sum on large pictures
    x, b = rgb[r0:r1, c0:c1], bg.astype(np.float32)
    d = np.abs(x[..., 0] - b[0])
    d += np.abs(x[..., 1] - b[1])
    d += np.abs(x[..., 2] - b[2])
    strongest = ndimage.maximum_filter(d, size=3, mode="nearest")
    allowed = f | ((d >= EDGE_MIN) & (d >= EDGE_SHARE * strongest))  # the mask and the edge pixels
    grown = f
    for _ in range(reach):  # one step at a time, into edge pixels only: the growth stays joined to the mask
        step = _grow4(grown, 1) & allowed
        if np.array_equal(step, grown):
            break
        grown = step
    add = grown & ~f
    if not add.any():
        return alpha
    out = np.array(alpha, copy=True)
    out[r0:r1, c0:c1][add] = 255
    return out


def drop_unsure_parts(alpha: np.ndarray, unsure: float = UNSURE_PART, margin: int = PART_MARGIN) -> np.ndarray:
    """A found alpha without the separate parts the finder is unsure of: (H, W) uint8.

    The parts are the connected regions (4-neighbourhood) of ``alpha > 127``. The largest is kept, and every other
    whose mean alpha is at least ``unsure * 255``; the alpha keeps its values within ``margin`` pixels of the kept
    parts (4-neighbourhood steps) and is 0 beyond. On a photograph the finder's mask often has small blobs of
    background beside the object, far enough to widen its 2D box (the crop, the silhouette fit's frame); they are
    rarely confident, while a sketch's separate strokes are (on the validation pictures, README).

    A found alpha with no pixel above 127 (the second look can leave none) comes back unchanged; ``margin=0`` keeps
    the kept parts' pixels only.

    Args:
        alpha: (H, W) uint8 found alpha.

    Raises:
        ValueError: ``margin`` negative.
    """
    from scipy import ndimage

    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    alpha = np.asarray(alpha)
    labels, count = ndimage.label(alpha > 127)
    if count == 0:
        return alpha
    fg = labels > 0
    inside = labels[fg]  # the parts' pixels only (the background's are most of a picture)
    sizes = np.bincount(inside, minlength=count + 1)
    sums = np.bincount(inside, weights=alpha[fg], minlength=count + 1)
    kept = sums >= unsure * 255.0 * sizes  # each part's mean alpha at least unsure * 255 (row 0: no part)
    kept[0] = False
    kept[int(np.argmax(sizes[1:])) + 1] = True
    keep = kept[labels]
    # the margin grows the kept parts only within their box, widened by the margin (the rest of the picture is 0)
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    r0, r1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, alpha.shape[0])
    c0, c1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, alpha.shape[1])
    grown = _grow4(keep[r0:r1, c0:c1], margin)
    out = np.zeros_like(alpha)
    out[r0:r1, c0:c1] = np.where(grown, alpha[r0:r1, c0:c1], 0)
    return out
