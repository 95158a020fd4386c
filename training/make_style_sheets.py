"""A contact sheet of the picture styles: rows = views, columns = :data:`training.styles.STYLES`.

    python training/make_style_sheets.py --split val --rows 4 --tile 128 --out docs/styles_contact_sheet.png

Each row is one view of the evaluation's selection (:func:`training.eval_data.select_samples`,
categories interleaved) and each tile the picture :func:`training.eval_data.load_input` hands
the methods for that style, with the sample's seed: the check set of ``evaluate.py --style``
as it is scored. Pictures are resized to the tile as a whole (``small_offcentre`` stays small);
the ``clean`` picture, the only one with alpha, is shown over a checkerboard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from training.augment import BackgroundPhotos  # noqa: E402
from training.contact_sheet import checkerboard  # noqa: E402
from training.eval_data import DataError, Sample, discover, load_input, select_samples  # noqa: E402
from training.styles import STYLES  # noqa: E402

__all__ = ["HEADER", "style_sheet", "main"]

HEADER = 16
"""Height in pixels of the label row."""


def _tile(rgb: np.ndarray, alpha: np.ndarray | None, tile: int) -> Image.Image:
    """The picture fitted into a ``tile``-pixel square (aspect kept, white around), over a checkerboard with alpha."""
    h, w = rgb.shape[:2]
    size = (max(1, round(tile * w / max(h, w))), max(1, round(tile * h / max(h, w))))
    picture = Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)
    out = checkerboard(tile) if alpha is not None else Image.new("RGB", (tile, tile), (255, 255, 255))
    where = ((tile - size[0]) // 2, (tile - size[1]) // 2)
    if alpha is None:
        out.paste(picture, where)
    else:
        out.paste(picture, where, Image.fromarray(alpha).resize(size, Image.Resampling.LANCZOS))
    return out


def style_sheet(samples: list[Sample], tile: int = 128, backgrounds: BackgroundPhotos | None = None) -> Image.Image:
    """An RGB image ``(len(STYLES) * tile) x (HEADER + len(samples) * tile)``: a label row, then one row per sample."""
    sheet = Image.new("RGB", (len(STYLES) * tile, HEADER + len(samples) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, style in enumerate(STYLES):
        draw.text((j * tile + 4, 2), style, fill=(0, 0, 0))
    for i, sample in enumerate(samples):
        for j, style in enumerate(STYLES):
            rgb, alpha, _, _ = load_input(sample, style, backgrounds)
            sheet.paste(_tile(rgb, alpha, tile), (j * tile, HEADER + i * tile))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Contact sheet of the picture styles (training/styles.py).")
    p.add_argument("--shapenet", default="data/shapenet", help="meshes + manifest.json (default: data/shapenet)")
    p.add_argument("--renders", default="data/renders", help="rendered views (default: data/renders)")
    p.add_argument("--backgrounds", default="data/backgrounds",
                   help="background photographs (default: data/backgrounds)")
    p.add_argument("--split", default="val", help="split the views come from (default: val)")
    p.add_argument("--rows", type=int, default=4, help="views, one per row (default: 4)")
    p.add_argument("--tile", type=int, default=128, help="tile side in pixels (default: 128)")
    p.add_argument("--out", default="docs/styles_contact_sheet.png", help="PNG to write")
    args = p.parse_args(argv)
    try:
        if args.rows < 1 or args.tile < 16:
            raise DataError(f"--rows must be at least 1 and --tile at least 16, got {args.rows} and {args.tile}.")
        samples = select_samples(discover(args.shapenet, args.renders, args.split), 1, args.rows)
        if not samples:
            raise DataError(f"No {args.split} views with a mesh under {args.shapenet} and renders under "
                            f"{args.renders}; check the split and the folders.")
        sheet = style_sheet(samples, args.tile, BackgroundPhotos(args.backgrounds))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({len(samples)} views x {len(STYLES)} styles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
