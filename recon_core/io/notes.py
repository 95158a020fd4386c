"""How the notes write numbers, and the sentences ``recon-mesh``, the worker and the add-on's exports share (and how
likely a candidate is, in words, for recon-mesh, its preview and the worker), and how a script's standard streams
show what their encoding cannot.

Light (numpy only where a size is measured, no torch): ``python -m recon_core.io.export``, which the add-on runs to
write a file to print, imports it.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["mm", "share", "thin_wall_figures", "plate_note", "output_size", "likelihood_text", "likelihood_said",
           "ADDON_CONTROLS", "for_command_line", "escape_what_streams_cannot_show", "LARGER_THAN_PRINTERS", "PLATE_MM",
           "AGAINST_THE_LIKELIEST"]

PLATE_MM = 256.0
"""The side of a large printer's build volume, in millimetres (256 x 256 x 256 mm: Bambu Lab's X1 and P1; Prusa's MK4
plate is 250 x 210, an Ender-3's 220 x 220): a mesh larger than it along a side gets a note (``recon-mesh``'s, and
the add-on's exports')."""
LARGER_THAN_PRINTERS = f"larger than the build volume of most printers ({PLATE_MM:.0f} mm a side on a large one)"
"""What the note of a mesh larger than :data:`PLATE_MM` says it is."""


def mm(value: float) -> str:
    """A length or an area in millimetres as the notes write it: "1,180", "13", "5.9", "0.083", "under 0.01"."""
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.2g}" if value >= 0.01 or value == 0 else "under 0.01"


def share(fraction: float) -> str:
    """A share as the notes write it: two significant digits ("54%", "1.2%", "0.018%"), "under 0.001%" below that,
    "over 99%" for a share that would read 100% and is not all."""
    percent = 100.0 * fraction
    if percent < 0.001:
        return "under 0.001%"
    if percent < 10:
        return f"{percent:.2g}%"
    return "over 99%" if 99.5 <= percent < 100 else f"{percent:.0f}%"


def output_size(verts) -> np.ndarray:
    """(3,) the width, depth and height of (V, 3) output-frame vertices (their x, z and y extents: +Y is up), the order
    the report, the notes and a slicer give a size in; zeros for no vertices."""
    import numpy as np  # here: recon-mesh says its errors through this module, a broken numpy among them

    verts = np.asarray(verts, dtype=np.float64)
    return np.ptp(verts, axis=0)[[0, 2, 1]] if len(verts) else np.zeros(3)


def plate_note(size_mm, fix: str, which: str = "it is") -> str | None:
    """The note of a mesh larger than :data:`PLATE_MM` along a side: its ``size_mm`` (width, depth, height: the +Z-up
    x, y and z of a file to print, the output frame's x, z and y), that ``which`` ("it is", "some are") larger than
    most printers' build volume, and how to print it whole (``fix``: "scale it down"); None when it fits."""
    width, depth, height = (float(s) for s in size_mm)
    if max(width, depth, height) <= PLATE_MM:
        return None
    return (f"at {mm(width)} x {mm(depth)} x {mm(height)} mm (width x depth x height) {which} {LARGER_THAN_PRINTERS}: "
            f"{fix} to print it whole, or cut it into parts")


def thin_wall_figures(wall_mm: float, thin: float, surface: float, median: float) -> str:
    """The figures of a mesh's walls thinner than ``wall_mm``: covering ``thin`` mm² of its ``surface`` mm², ``median``
    mm thick in the median there (:class:`recon_core.mesh.thickness.ThinWalls`). It ends inside its parenthesis, so
    that a caller can add to it: the caller closes it."""
    return (f"walls thinner than {wall_mm:g} mm cover {mm(thin)} mm² of it ({share(thin / surface)} of the surface; "
            f"{mm(median)} mm thick in the median there")


LIKELY_AS = 0.8
"""A candidate whose confidence is at least this share of the likeliest one's is "about as likely" (its fit's silhouette
IoU about 0.01 below), down to :data:`LESS_LIKELY` "less likely", below it "much less likely" (0.05 below)."""
LESS_LIKELY = 0.4


def likelihood_text(confidence: float | None, best: float | None) -> str:
    """How likely a candidate is against the likeliest one (confidence ``best``), in words: "the likeliest", "about as
    likely", "less likely", "much less likely"; "" without confidences. The confidences are shares among the ten
    fitted shapes, so the likeliest of three close ones read "25%", which a designer took for a poor result."""
    if confidence is None or best is None or best <= 0:
        return ""
    ratio = confidence / best
    if ratio >= 1.0 - 1e-9:
        return "the likeliest"
    return "about as likely" if ratio >= LIKELY_AS else "less likely" if ratio >= LESS_LIKELY else "much less likely"


AGAINST_THE_LIKELIEST = {"about as likely": " as the likeliest", "less likely": " than the likeliest",
                         "much less likely": " than the likeliest"}
"""What each of :func:`likelihood_text`'s words is said against, where a line has no list's heading to say it
(recon-mesh's candidate lines, the preview's captions, the add-on's Next Shape: "less likely than the likeliest"); the
add-on holds a copy."""


def likelihood_said(words: str) -> str:
    """:func:`likelihood_text`'s ``words`` with what they are said against (:data:`AGAINST_THE_LIKELIEST`)."""
    return words + AGAINST_THE_LIKELIEST.get(words, "")


ADDON_CONTROLS = ("Fill Hollow Pockets", "Height", "Category", "Object: Mask Image", "Object Mask", "Use This Mask")
"""The add-on's controls that the sentences shared by both front ends name beside the command line's options
("--solid (the add-on's Fill Hollow Pockets) fills them"); a test checks that every one named is here."""
_CONTROL = "(?:" + "|".join(re.escape(c) for c in sorted(ADDON_CONTROLS, key=len, reverse=True)) + ")"
_OPTION = r"(--[a-z][a-z-]*(?: [A-Za-z][\w.]*)?)"  # "--solid", "--category NAME", "--mask MASK.png"
_ADDON_WORDS = (  # each after its option, so that a path or a user's words are never cut
    # "--solid (the add-on's Fill Hollow Pockets) fills them", "--category NAME (the add-on's Category) names it"
    (re.compile(rf"{_OPTION} \(the add-on's {_CONTROL}\)"), r"\1"),
    # "(--solid, the add-on's Fill Hollow Pockets)", "(--mask, Use This Mask)", "recon-mesh --mask MASK.png; the
    # add-on's Object: Mask Image", "recon-mesh --save-mask or the add-on's Object Mask", "--mask or Use This Mask"
    (re.compile(rf"{_OPTION}(?:, |; | or )(?:the add-on's )?{_CONTROL}(?=[),.;]|$)"), r"\1"),
    (re.compile(r" \(the add-on marks them\)"), ""),  # "or thicken them in your modeller (the add-on marks them)"
)


def for_command_line(text: str) -> str:
    """A sentence shared by both front ends (a note, an error) as ``recon-mesh`` says it: the add-on's controls named
    beside its options left out ("--solid (the add-on's Fill Hollow Pockets) fills them": "--solid fills them"). The
    add-on leaves out the options instead (its ``_CLI_WORDS``)."""
    for pattern, replacement in _ADDON_WORDS:
        text = pattern.sub(replacement, text)
    return text


def escape_what_streams_cannot_show() -> None:
    """Let stdout and stderr escape what their encoding cannot show ("✓", a path's accents or an object's name in
    Chinese, on an ASCII stream or a Windows console's cp1252 when redirected), rather than raise UnicodeEncodeError
    once the files are written (recon-mesh, and ``python -m recon_core.io.export``). A stream in UTF-8 mode's
    surrogateescape is left: it keeps a path's own bytes."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict":
            try:
                stream.reconfigure(errors="backslashreplace")
            except (AttributeError, ValueError):  # a stream without reconfigure, or closed
                pass
