"""What the shipped model does with a picture, step by step, as one PNG (the README's "How it works").

    python training/pipeline_sheet.py examples/chair.png examples/chair_sketch.png --out docs/pipeline.png

One row a picture: the picture; the object mask it was given or found; the network's own shape (the refined
ico-sphere, which only ranks the shape bank); the bank's first-ranked model in its view's rotation; the one of the
best-ranked models fitted to the silhouette that covers it best (turned and stretched, its silhouette IoU on the
fit's grid); that solid warped onto the
mask, carved and placed; the output as written (decimated, printable); and the output turned to a three-quarter
view. Every mesh but the last is seen from the picture's side (orthographic, the output frame's +Z), each framed by
its own bounding box. The steps are :class:`recon_core.io.inference.Reconstructor`'s own, called one by one.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

TILE = 160
"""Side of each tile in pixels."""
HEADER = 30
"""Height of the label row."""
COLUMNS = ("picture", "object mask", "network's shape", "first ranked", "fitted to the mask",
           "warped, carved", "output", "output, turned")
_FRONT = np.eye(3)
"""render_mesh's rotation that looks at the output frame from +Z, as the picture's camera does."""


def pipeline_steps(rec, rgb: np.ndarray, alpha: np.ndarray | None) -> dict[str, Any]:
    """Each step's result for one decoded picture: ``mask`` (H, W) float in [0, 1], meshes ``(verts (V, 3) output
    frame, faces (F, 3))`` under ``network``, ``first``, ``fitted``, ``warped`` and ``output``, the fit's ``iou``
    and the ``category``.

    Raises:
        ValueError: the model has no shape bank with fitted candidates (the steps shown are the shape bank's).
    """
    import torch

    from recon_core.io.inference import VIEW_TO_OUTPUT
    from recon_core.mesh.silhouette import stretch_factors, to_diagonal
    from recon_core.network.crop import object_mask, prepare_image

    cfg, bank = rec.model.config, getattr(rec.model, "bank", None)
    if not rec.banked or not cfg.bank_fit_candidates:
        raise ValueError("the pipeline sheet shows a shape-bank model's steps; this model has no fitted shape bank")
    result = rec.reconstruct(rgb, alpha)
    if alpha is None and any(n.startswith("object found by the object finder") for n in result.notes):
        alpha = np.clip(np.rint(result.mask * 255.0), 0, 255).astype(np.uint8)  # the finder's, as reconstruct took it
    mask = object_mask(rgb, alpha)
    device = next(rec.model.parameters()).device
    with torch.inference_mode():
        out = rec.model(prepare_image(rgb, alpha, cfg.image_size).image[None].to(device))
        ranked = rec._ranked(rgb, alpha, out.verts[0], None, cfg.bank_fit_candidates)
        fitted = rec._fitted(ranked, mask)
    to_out = VIEW_TO_OUTPUT.T
    network = (out.verts[0].double().cpu().numpy() @ to_out, rec.model.topology.faces(out.level).cpu().numpy())
    first_v, first_f = bank.view_mesh(ranked[0][0], cfg.bank_smoothing, cfg.bank_level)
    row, pose, _ = fitted[0]
    world, faces = bank.shape_mesh(int(bank.view_shape[row]), cfg.bank_smoothing, cfg.bank_level)
    posed = (world * stretch_factors(world, pose.scale)) @ pose.rotation.T
    if cfg.bank_unit_diagonal:  # as the output is scaled (Reconstructor._snap)
        posed = to_diagonal(posed, float(np.linalg.norm(np.ptp(world, axis=0))))
    warped = rec._snap(row, pose, mask)
    return {
        "mask": np.asarray(mask, dtype=np.float64),
        "network": network,
        "first": (first_v @ to_out, first_f),
        "fitted": (posed @ to_out, faces),
        "iou": pose.iou,
        "warped": None if warped is None else warped[:2],
        "output": (result.verts, result.faces),
        "category": result.category,
    }


def pipeline_sheet(rows: list[tuple[np.ndarray, dict[str, Any]]], path: str | Path, tile: int = TILE) -> Path:
    """Write the PNG: a label row, then one row per ``(rgb (H, W, 3) uint8, steps)`` (:func:`pipeline_steps`).

    Size: ``(len(COLUMNS) * tile) x (HEADER + len(rows) * tile)``; a step without a mesh is a grey tile.
    """
    from PIL import Image, ImageDraw

    from recon_core.io.export import atomic_write_bytes
    from recon_core.io.preview import label_font
    from recon_core.mesh.render import THREE_QUARTER_VIEW, render_mesh

    sheet = Image.new("RGB", (len(COLUMNS) * tile, HEADER + len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = label_font()  # Pillow's own, 10 pixels, dropped the space of "network's shape"
    for j, name in enumerate(COLUMNS):
        draw.text((j * tile + 4, 8), name, fill=(0, 0, 0), font=font)
    colours = {"network": (200, 120, 60), "first": (150, 150, 150), "fitted": (90, 120, 200),
               "warped": (90, 120, 200), "output": (70, 140, 90)}
    for i, (rgb, steps) in enumerate(rows):
        mask = np.repeat((255.0 * (1.0 - steps["mask"]))[..., None], 3, axis=2)  # black on white
        tiles = [_fit(rgb, tile), _fit(np.clip(mask + 0.5, 0, 255).astype(np.uint8), tile)]
        for key in ("network", "first", "fitted", "warped", "output"):
            mesh = steps.get(key)
            tiles.append(np.full((tile, tile, 3), 200, np.uint8) if mesh is None
                         else render_mesh(mesh[0], mesh[1], tile, colour=colours[key], rotation=_FRONT))
        out_v, out_f = steps["output"]
        tiles.append(render_mesh(out_v, out_f, tile, colour=colours["output"], rotation=THREE_QUARTER_VIEW))
        y = HEADER + i * tile
        for j, t in enumerate(tiles):
            sheet.paste(Image.fromarray(t), (j * tile, y))
        draw.text((4 * tile + 4, y + tile - 17), f"IoU {steps['iou']:.2f}", fill=(0, 0, 0), font=font)
        draw.text((6 * tile + 4, y + tile - 17), f"{len(out_f):,} faces, {steps['category']}", fill=(0, 0, 0),
                  font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    atomic_write_bytes(path, png.getvalue())
    return path


def _fit(picture: np.ndarray, tile: int) -> np.ndarray:
    """(tile, tile, 3) uint8: ``picture`` (H, W, 3) scaled to fit, centred on white."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(picture))
    scale = tile / max(img.size)
    img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), Image.BILINEAR)
    canvas = Image.new("RGB", (tile, tile), (255, 255, 255))
    canvas.paste(img, ((tile - img.size[0]) // 2, (tile - img.size[1]) // 2))
    return np.asarray(canvas)


MIN_TILE = 32
"""The smallest tile side (pixels) whose captions still fit."""


def _tile_side(text: str) -> int:
    """argparse type of ``--tile``: a whole number of pixels, at least :data:`MIN_TILE`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels, got {text!r}") from None
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_TILE} pixels, got {value}")
    return value


def _refuse(message: str) -> int:
    print(f"pipeline_sheet: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", help="pictures, as recon-mesh reads them")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--model", default=None, help="model files' stem (default: the shipped model)")
    parser.add_argument("--tile", type=_tile_side, default=TILE,
                        help=f"tile side in pixels, {MIN_TILE} or more (default {TILE})")
    args = parser.parse_args(argv)
    from recon_core.io.export import unwritable_reason
    from recon_core.io.image import ImageError, load_picture
    from recon_core.io.inference import Reconstructor

    out = Path(args.out)
    if out.is_dir():
        return _refuse(f"--out {out} is a folder; name the PNG file to write.")
    if not out.parent.is_dir():
        return _refuse(f"the folder of --out {out} does not exist (or is not a folder); create it first.")
    reason = unwritable_reason(out, folder=False)  # its folder is there: only whether it can be written is left
    if reason:
        return _refuse(f"--out {out}: {reason}; choose another folder.")
    try:
        pictures = [load_picture(p)[:2] for p in args.images]
        rec = Reconstructor.from_file(args.model)
        rows = []
        for path, (rgb, alpha) in zip(args.images, pictures):
            steps = pipeline_steps(rec, rgb, alpha)
            cover = 1.0 if alpha is None else alpha[..., None] / 255.0  # the picture over white, as it is seen
            rows.append((np.clip(rgb * cover + 255.0 * (1.0 - cover) + 0.5, 0, 255).astype(np.uint8), steps))
            print(f"{path}: {steps['category']}, fit IoU {steps['iou']:.2f}, {len(steps['output'][1])} faces")
    except (ImageError, ValueError, OSError) as err:
        return _refuse(str(err))
    try:
        print(f"wrote {pipeline_sheet(rows, args.out, args.tile)}")
    except OSError as err:
        return _refuse(f"cannot write {out} ({err.strerror or err}); choose a writable folder.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
