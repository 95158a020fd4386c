"""A contact sheet of rendered views: one row per category, labelled, to check a render run at a glance.

    python training/contact_sheet.py --renders data/renders --out data/renders/contact_sheet.png

Exit code 0 when the sheet is written, 2 for bad input (a folder without renders, an --out folder that does not
exist, a --tile or --columns below 1), with one sentence.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

LABEL_WIDTH = 120
"""Pixels left of each row for its label."""


def category_name(synset: str, renders: Path) -> str:
    """The category's name: one of the 13 or of the extra pool (:func:`training.eval_data.category_name`), else from
    the data set's taxonomy.json when present (a ShapeNet folder's other categories), else the synset."""
    import json

    from training.eval_data import category_name as known

    if known(synset) != synset:
        return known(synset)
    try:
        entries = json.loads((renders.parent / "shapenet" / "taxonomy.json").read_text())
    except (OSError, ValueError):  # missing or not the data set's: the synset is the label
        return synset
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("synsetId") == synset:
            return str(entry.get("name", synset)).split(",")[0]
    return synset


def checkerboard(size: int, cell: int = 8) -> Image.Image:
    """A light grey checkerboard, so transparent pixels and white objects stay visible."""
    img = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    for y in range(0, size, cell):
        for x in range((y // cell) % 2 * cell, size, 2 * cell):
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(205, 205, 205))
    return img


def contact_sheet(renders: Path, columns: int = 12, tile: int = 96, seed: int = 0) -> Image.Image:
    """One row per synset folder under ``renders``: ``columns`` random views, each from a random model.

    Sketch views are drawn on white; their tiles get a thin blue frame.
    """
    rng = random.Random(seed)
    rows = []
    if not renders.is_dir():
        raise FileNotFoundError(f"--renders {renders} is not a folder; render the data set first (training/render.py)")
    for synset_dir in sorted(p for p in renders.iterdir() if p.is_dir()):
        views = sorted(synset_dir.glob("*/[0-9][0-9][0-9].png"))
        if views:
            rows.append((synset_dir.name, rng.sample(views, min(columns, len(views)))))
    if not rows:
        raise FileNotFoundError(f"no rendered views (<synset>/<model_id>/NNN.png) under {renders}; render the data "
                                "set first (training/render.py)")
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * tile, len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    background = checkerboard(tile)
    for r, (synset, views) in enumerate(rows):
        y = r * tile
        models = len({v.parent for v in synset_dir_views(renders / synset)})
        draw.text((6, y + tile // 2 - 12), category_name(synset, renders), fill=(0, 0, 0))
        draw.text((6, y + tile // 2 + 2), f"{synset} ({models})", fill=(110, 110, 110))
        for c, path in enumerate(views):
            img = Image.open(path).convert("RGBA").resize((tile, tile), Image.Resampling.BILINEAR)
            meta = path.with_suffix(".json")
            sketch = meta.exists() and '"sketch": true' in meta.read_text()
            base = Image.new("RGB", (tile, tile), (255, 255, 255)) if sketch else background.copy()
            base.paste(img, (0, 0), img)
            x = LABEL_WIDTH + c * tile
            sheet.paste(base, (x, y))
            if sketch:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], outline=(60, 120, 220))
    return sheet


def synset_dir_views(synset_dir: Path) -> list[Path]:
    return list(synset_dir.glob("*/000.json")) or list(synset_dir.glob("*/*.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--renders", type=Path, default=_REPO / "data" / "renders",
                   help="the rendered views, CATEGORY/MODEL/NNN.png (default: data/renders)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: <renders>/contact_sheet.png)")
    p.add_argument("--columns", type=int, default=12, help="tiles a row (default: 12)")
    p.add_argument("--tile", type=int, default=96, help="tile side in pixels (default: 96)")
    p.add_argument("--seed", type=int, default=0, help="which views are drawn (default: 0)")
    args = p.parse_args(argv)
    out = args.out or args.renders / "contact_sheet.png"
    try:
        from recon_core.io.export import unwritable_reason

        for flag in ("columns", "tile"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
        if args.out is not None and not out.parent.exists():
            raise ValueError(f"--out {out}: the folder {out.parent} does not exist; create it first")
        reason = unwritable_reason(out, folder=False)  # a folder given, a file where a folder should be, no rights
        if reason:
            raise ValueError(f"--out {out}: {reason}; give another path")
        if out.suffix.lower() != ".png":  # a .jpg name held PNG data
            raise ValueError(f"--out {out}: the sheet is a PNG; give a name ending in .png")
        sheet = contact_sheet(args.renders, args.columns, args.tile, args.seed)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            sheet.save(tmp, format="PNG")
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
