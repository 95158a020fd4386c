"""Pictures of an evaluation: shaded renders of meshes, the contact sheets (input | ours | retrieval | ground truth,
and our candidates), and the F1-against-steps curve, as PNG bytes (evaluate.py writes them atomically)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from recon_core.mesh.render import render_mesh
from training.scoring import Prediction

__all__ = [
    "contact_sheet_png",
    "candidate_sheet_png",
    "curve_png",
]

_COLOURS = {"ours": (95, 140, 215), "retrieval": (225, 150, 70), "gt": (120, 175, 110)}


SHEET_COLUMNS = ("input", "ours", "retrieval", "ground truth")


SHEET_HEADER = 18
"""Height in pixels of the contact sheet's label row."""


_SHEET_KEYS = list(zip(SHEET_COLUMNS[1:], ("ours", "retrieval", "gt")))
"""``(label, key)`` of the contact sheet's columns after the input."""


def contact_sheet_png(rows: list[dict[str, Any]], tile: int = 128) -> bytes:
    """A PNG: a label row, then one row per sample: input | ours | retrieval | ground truth.

    Size: ``(4 * tile) x (SHEET_HEADER + len(rows) * tile)``. Meshes of a row share the
    ground truth's framing, so sizes compare; a missing method leaves a grey tile.
    """
    return _sheet_png(rows, tile, _SHEET_KEYS)


def candidate_sheet_png(rows: list[dict[str, Any]], tile: int = 128, count: int = 3) -> bytes:
    """A PNG of our candidates: input | candidate 1 | ... | candidate ``count`` | ground truth, one row a sample
    (each row's ``candidates``: its :class:`Prediction` list, the likeliest first); as
    :func:`contact_sheet_png`."""
    return _sheet_png(_with_candidates(rows), tile, _candidate_keys(count))


def _candidate_keys(count: int) -> list[tuple[str, str]]:
    """``(label, key)`` of the candidate sheet's columns after the input (:func:`candidate_sheet`)."""
    return [(f"candidate {k + 1}", f"candidate_{k + 1}") for k in range(count)] + [("ground truth", "gt")]


def _with_candidates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its ``candidates`` under ``candidate_1``, ``candidate_2``, ... (:func:`candidate_sheet`)."""
    return [{**row, **{f"candidate_{k + 1}": c for k, c in enumerate(row.get("candidates") or [])}} for row in rows]


def _sheet_png(rows: list[dict[str, Any]], tile: int, columns: list[tuple[str, str]]) -> bytes:
    """The PNG of :func:`contact_sheet`: the input, then a tile per ``(label, key)`` of ``columns`` (the row's
    :class:`Prediction` under ``key``, framed as the row's ground truth; grey when it has none)."""
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", ((1 + len(columns)) * tile, SHEET_HEADER + len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(["input"] + [label for label, _ in columns]):
        draw.text((j * tile + 4, 3), name, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        gt: Prediction = row["gt"]
        centre = (gt.verts.min(axis=0) + gt.verts.max(axis=0)) / 2
        radius = float(np.linalg.norm(gt.verts.max(axis=0) - gt.verts.min(axis=0))) / 2
        tiles = [np.asarray(Image.fromarray(row["input"]).resize((tile, tile)))]
        for _, key in columns:
            pred = row.get(key)
            if pred is None:
                tiles.append(np.full((tile, tile, 3), 200, dtype=np.uint8))
            else:
                tiles.append(render_mesh(pred.verts, pred.faces, tile, centre, radius,
                                         _COLOURS.get(key, _COLOURS["ours"])))
        for j, t in enumerate(tiles):
            sheet.paste(Image.fromarray(t), (j * tile, SHEET_HEADER + i * tile))
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return png.getvalue()


def curve_png(steps: list[int], values: list[float], ylabel: str = "F1@0.3",
               size: tuple[int, int] = (640, 400)) -> bytes:
    """A PNG line plot of ``values`` (fractions, shown ×100) against ``steps``: matplotlib if installed, else PIL."""
    ys = [100 * v for v in values]
    png = io.BytesIO()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
        ax.plot(steps, ys, marker="o")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{ylabel} (×100)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, format="png")
        plt.close(fig)
        return png.getvalue()
    except ImportError:
        pass
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 20, 20, 45
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    x0, x1 = (min(steps), max(steps)) if steps else (0, 1)
    finite = [y for y in ys if math.isfinite(y)]
    y0, y1 = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        return px, h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = to_px(x0, yv)
        d.line([(left - 4, py), (left, py)], fill=(0, 0, 0))
        d.text((4, py - 6), f"{yv:.1f}", fill=(0, 0, 0))
        xv = x0 + (x1 - x0) * i / 4
        px, _ = to_px(xv, y0)
        d.line([(px, h - bottom), (px, h - bottom + 4)], fill=(0, 0, 0))
        d.text((px - 12, h - bottom + 8), f"{xv:.0f}", fill=(0, 0, 0))
    d.text(((w - left) // 2, h - 16), "training step", fill=(0, 0, 0))
    d.text((left + 6, 4), f"{ylabel} (x100)", fill=(0, 0, 0))
    pts = [to_px(x, y) for x, y in zip(steps, ys) if math.isfinite(y)]
    if len(pts) > 1:
        d.line(pts, fill=(40, 90, 200), width=2)
    for px, py in pts:
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(40, 90, 200))
    img.save(png, format="PNG")
    return png.getvalue()
