"""``recon-mesh --preview``: one picture of what was made, to look at rather than read.

A legend strip says what the colours and lines mean; then each reconstruction is a row of two tiles and a caption:

- **on the picture**: the picture around the object (a cut-out on a light checkerboard, as image editors show
  transparency), with the mesh shaded in orange through its picture camera
  (:attr:`recon_core.io.inference.Reconstruction.camera`) 60 % opaque over it and its outline drawn solid in magenta,
  and the object mask's outline dashed in black and yellow, so that where the mesh departs from the object shows at a
  glance, told by the lines' pattern as well as their colour; without a camera (a model without a shape bank), the
  mask's outline alone. A small object (the tile showing under half the picture) gets an inset of the whole picture
  in the tile's corner, the part shown framed: a finder that took the wrong thing shows where it looked;
- **the mesh**: shaded in a 3/4 view from the front right, above (:data:`recon_core.mesh.render.THREE_QUARTER_VIEW`),
  the faces whose walls are too thin to print (:attr:`~recon_core.io.inference.Reconstruction.thin_faces`) in red;
- the caption: its name, category, size and printable verdict, the share of its surface in thin walls, and a line
  asking to check the outline when the object finder was unsure of it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from recon_core.io.notes import output_size
from recon_core.mesh.printable import number_text
from recon_core.mesh.render import face_shade, rasterize, render_mesh

__all__ = ["TILE", "CAPTION", "LINE", "preview_png", "picture_tile", "label_font"]

TILE = 320
"""Side of each tile, in pixels."""
CAPTION = 72
"""Height of each row's caption (up to four lines), in pixels."""
LINE = 18
"""Height of a caption's line, and of the legend strip above the rows, in pixels."""
CAPTION_FONT = 13
"""The caption's font size, in pixels."""
MARGIN = 0.15
"""The picture tile shows the object (the mask's box and the mesh's, together) with this share of its side around it."""
MESH_COLOUR = (95, 140, 215)
"""The mesh's base colour in its 3/4 view (the evaluation sheets' colour of ours)."""
OVER_COLOUR = (255, 150, 40)
"""The mesh's base colour over the picture: orange, which few product pictures are."""
THIN_COLOUR = (215, 40, 40)
"""The base colour of faces whose walls are too thin to print."""
OUTLINE_COLOUR = (230, 0, 190)
"""The outline of the mesh through the picture's camera, solid: magenta."""
MASK_DASHES = ((0, 0, 0), (255, 215, 0))
"""The object mask's outline: dashes of black and yellow, which read on any picture and to colour-blind eyes, and
are told from the mesh's solid outline by their pattern."""
DASH = 4
"""The length of a dash of the mask's outline, in pixels."""
LINE_WIDTH = 2
"""The width of the outlines, in pixels."""
CHECKER = (255, 214)
"""The grey levels of the checkerboard behind a cut-out's transparency (white showed a white object as nothing)."""
CHECKER_SQUARE = 8
"""The side of a square of that checkerboard, in the tile's pixels (half that in the inset)."""
INSET, INSET_WHEN = 0.3, 0.5
"""The inset of the whole picture: its side, a share of the tile's; shown when the tile shows less than
``INSET_WHEN`` of the picture's longer side."""
MESH_OPACITY = 0.6
"""How opaque the shaded mesh is over the picture."""


def _window(picture_size: tuple[int, int], boxes: list[tuple[float, float, float, float]]
            ) -> tuple[float, float, float]:
    """``(x0, y0, side)``: the square of the picture (pixels, ``(width, height)`` ``picture_size``) that the tile shows:
    around the union of ``boxes`` (``(u0, v0, u1, v1)`` each: the object's), :data:`MARGIN` of its side on each side;
    the whole picture, centred, when there is none."""
    w, h = picture_size
    if not boxes:
        side = float(max(w, h))
        return (w - side) / 2.0, (h - side) / 2.0, side
    u0, v0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    u1, v1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    side = max(u1 - u0, v1 - v0, 1.0) * (1.0 + 2.0 * MARGIN)
    return (u0 + u1 - side) / 2.0, (v0 + v1 - side) / 2.0, side


def _picture(rgb: np.ndarray, alpha: np.ndarray | None):
    """The decoded picture ``rgb`` (H, W, 3) uint8 as a Pillow image: a cut-out's ``alpha`` (H, W) uint8 premultiplied
    ("RGBa"), so that shrinking and resampling it blend no colour of its transparent pixels in."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if alpha is None:
        return picture
    return Image.merge("RGBA", (*picture.split(), Image.fromarray(np.asarray(alpha, dtype=np.uint8)))).convert("RGBa")


def _flattened(picture, square: int) -> np.ndarray:
    """(h, w, 3) float: the Pillow image ``picture`` (from :func:`_picture`, resampled), a premultiplied cut-out laid
    over a checkerboard of :data:`CHECKER` greys, ``square`` pixels a square, as image editors show transparency."""
    pixels = np.asarray(picture, dtype=np.float64)
    if picture.mode != "RGBa":
        return pixels
    h, w = pixels.shape[:2]
    board = np.where((np.arange(h)[:, None] // square + np.arange(w)[None, :] // square) % 2 == 0, *CHECKER)
    return pixels[..., :3] + (1.0 - pixels[..., 3:] / 255.0) * board[..., None]


def _shown(rgb: np.ndarray, alpha: np.ndarray | None, window: tuple[float, float, float], tile: int) -> np.ndarray:
    """(tile, tile, 3) float: the picture's ``window`` (:func:`_window`), white beyond its edges; a cut-out's ``alpha``
    on a checkerboard of :data:`CHECKER_SQUARE`-pixel squares, transparent beyond its edges. A picture shown smaller
    than its size is first reduced by the whole factor that leaves less than a halving to the bilinear step (each
    pixel the mean of a block), so that fine detail does not alias."""
    from PIL import Image

    x0, y0, side = window
    picture = _picture(rgb, alpha)
    factor = max(1, int(side / tile))
    if factor > 1:  # pixel i of the reduced picture covers [i k, (i + 1) k): its coordinates are the picture's / k
        picture = picture.reduce(factor)
        x0, y0, side = x0 / factor, y0 / factor, side / factor
    shown = picture.transform((tile, tile), Image.EXTENT, (x0, y0, x0 + side, y0 + side), resample=Image.BILINEAR,
                              fillcolor=(255, 255, 255) if alpha is None else (0, 0, 0, 0))
    return _flattened(shown, CHECKER_SQUARE)


def _outline(covered: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) bool: the covered pixels within ``width`` steps of an uncovered 4-neighbour (or of the border)."""
    line, inner = np.zeros_like(covered), covered
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        core = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        line |= inner & ~core
        inner = core
    return line


def _dashed(canvas: np.ndarray, line: np.ndarray) -> None:
    """Draw the (H, W) bool ``line`` onto the (H, W, 3) ``canvas`` in :data:`MASK_DASHES`, :data:`DASH` pixels each
    along it: each pixel's colour is set by its distance along the line (steps between 8-neighbours) from the line's
    first pixel, so that an edge in any direction is dashed (by the pixel's position alone, one diagonal was not)."""
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    rows, cols = np.nonzero(line)
    if not len(rows):
        return
    index = np.full((line.shape[0] + 2, line.shape[1] + 2), -1, np.int64)
    index[rows + 1, cols + 1] = np.arange(len(rows))
    ends = [index[rows + 1 + dr, cols + 1 + dc] for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1))]  # each step once
    a = np.concatenate([np.flatnonzero(j >= 0) for j in ends])
    b = np.concatenate([j[j >= 0] for j in ends])
    steps = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(rows), len(rows)))
    parts = ndimage.label(line, structure=np.ones((3, 3), bool))[0][rows, cols]
    starts = np.unique(parts, return_index=True)[1]  # each separate line's first pixel
    along = dijkstra(steps, directed=False, indices=starts, unweighted=True, min_only=True)
    canvas[rows, cols] = np.asarray(MASK_DASHES, dtype=canvas.dtype)[(along // DASH).astype(np.int64) % 2]


def _mask_in_tile(mask, window: tuple[float, float, float], tile: int) -> np.ndarray:
    """(tile, tile) bool: the object ``mask`` (H, W) sampled at the tile's pixel centres (:func:`_window`'s
    ``window``), False beyond the picture."""
    mask = np.asarray(mask)
    h, w = mask.shape
    x0, y0, side = window
    centres = (np.arange(tile) + 0.5) * side / tile
    cols, rows = np.floor(x0 + centres).astype(np.int64), np.floor(y0 + centres).astype(np.int64)
    inside = ((cols >= 0) & (cols < w))[None, :] & ((rows >= 0) & (rows < h))[:, None]
    return (mask[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]] > 0.5) & inside


def _inset(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray | None, window: tuple[float, float, float],
           shown: np.ndarray) -> None:
    """Draw the whole picture (``rgb`` (H, W, 3) uint8, a cut-out's ``alpha`` (H, W) uint8), :data:`INSET` of the
    tile's side, framed, in the corner of the (tile, tile, 3) ``canvas`` where it covers fewest of the ``shown``
    (tile, tile) bool pixels (the object's and the mesh's), with the ``window`` the tile shows framed in it."""
    from PIL import Image

    tile, (h, w) = canvas.shape[0], rgb.shape[:2]
    scale = INSET * tile / max(w, h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = _flattened(_picture(rgb, alpha).resize((sw, sh), Image.BOX), CHECKER_SQUARE // 2)
    corners = [(top, left) for top in (4, tile - 4 - sh) for left in (4, tile - 4 - sw)]
    top, left = min(corners, key=lambda c: int(shown[c[0] - 1:c[0] + sh + 1, c[1] - 1:c[1] + sw + 1].sum()))
    canvas[top - 1:top + sh + 1, left - 1:left + sw + 1] = 90  # a grey frame
    canvas[top:top + sh, left:left + sw] = small
    x0, y0, side = window
    c0, r0 = (int(np.clip(np.floor(at + v * scale), at, at + n - 1)) for v, at, n in ((x0, left, sw), (y0, top, sh)))
    c1, r1 = (int(np.clip(np.ceil(at + (v + side) * scale) - 1, at, at + n - 1))  # the last pixel it covers
              for v, at, n in ((x0, left, sw), (y0, top, sh)))
    box = np.zeros(canvas.shape[:2], bool)
    box[r0:r1 + 1, c0:c1 + 1] = True
    outer = _outline(box)  # the part the tile shows: black outside, white inside, on any picture
    canvas[outer] = 0
    canvas[_outline(box & ~outer)] = 255


def _mask_box(mask) -> tuple[float, float, float, float] | None:
    """``(u0, v0, u1, v1)`` of the object mask's pixels (their corners), or None when it has none."""
    if mask is None:
        return None
    inside = np.asarray(mask) > 0.5
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not len(rows):
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def picture_tile(rgb: np.ndarray, result, tile: int = TILE, alpha: np.ndarray | None = None) -> np.ndarray:
    """The "on the picture" tile of ``result`` (a :class:`~recon_core.io.inference.Reconstruction`) for the decoded
    picture ``rgb`` (H, W, 3) uint8, its cut-out's ``alpha`` (H, W) uint8 on a checkerboard: (tile, tile, 3) uint8.

    The tile shows the picture around the object (:func:`_window`: the mask's box and the mesh's projected box), so
    picture pixel ``u`` is tile pixel ``scale (u - x0)``, and the camera's ``K`` is scaled and moved the same way.
    Through it, the nearest face of the mesh at each pixel is shaded (:func:`recon_core.mesh.render.face_shade`, the
    camera's frame turned to a viewer's) in :data:`OVER_COLOUR` and laid over the picture at :data:`MESH_OPACITY`; the
    covered pixels' edge is drawn in :data:`OUTLINE_COLOUR`, and the object mask's edge over it in
    :data:`MASK_DASHES` (without a camera, the mask's alone), each :data:`LINE_WIDTH` wide. A tile showing less than
    :data:`INSET_WHEN` of the picture's longer side gets the whole picture inset (:func:`_inset`).
    """
    h, w = rgb.shape[:2]
    camera = getattr(result, "camera", None)
    mask = getattr(result, "mask", None)
    boxes = [b for b in [_mask_box(mask)] if b is not None]
    if camera is not None:
        verts = np.asarray(result.verts, dtype=np.float64)
        seen = camera.world_to_camera(verts)  # (V, 3) OpenCV: x right, y down, z forward
        uv = seen @ camera.K.T
        uv = uv[:, :2] / uv[:, 2:3]
        boxes.append((float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())))
    window = _window((w, h), boxes)
    x0, y0, side = window
    scale = tile / side
    canvas = _shown(rgb, alpha, window, tile)
    shown = np.zeros((tile, tile), bool)  # the object's and the mesh's pixels, which the inset keeps clear of
    if camera is not None:
        faces = np.asarray(result.faces, dtype=np.int64)
        xy = np.stack([scale * (uv[:, 0] - x0), scale * (uv[:, 1] - y0)], axis=1)
        face_id = rasterize(xy, seen[:, 2], faces, tile)
        shown = covered = face_id >= 0
        shade = face_shade(seen[faces] * [1.0, -1.0, -1.0])  # a viewer's frame: y up, the viewer on +z
        mesh = shade[face_id[covered]][:, None] * np.asarray(OVER_COLOUR, dtype=np.float64)
        canvas[covered] = (1.0 - MESH_OPACITY) * canvas[covered] + MESH_OPACITY * mesh
        canvas[_outline(covered, LINE_WIDTH)] = OUTLINE_COLOUR
    if mask is not None:
        inside = _mask_in_tile(mask, window, tile)
        shown = shown | inside
        _dashed(canvas, _outline(inside, LINE_WIDTH))
    if side < INSET_WHEN * max(w, h):
        _inset(canvas, rgb, alpha, window, shown)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def mesh_tile(result, tile: int = TILE) -> np.ndarray:
    """The "mesh" tile of ``result``: its 3/4 view, the thin-walled faces in :data:`THIN_COLOUR`; (tile, tile, 3)."""
    faces = np.asarray(result.faces, dtype=np.int64)
    colours = np.broadcast_to(np.asarray(MESH_COLOUR, dtype=np.float64), (len(faces), 3)).copy()
    thin = getattr(result, "thin_faces", None)
    if thin is not None and len(thin):
        colours[np.asarray(thin, dtype=np.int64)] = THIN_COLOUR
    return render_mesh(result.verts, faces, tile, face_colours=colours)


def _number(value: float) -> str:
    """A size as the caption writes it, as the printable report does (:func:`recon_core.mesh.printable.number_text`:
    "1,180" where it wrote "1180"), but "under 0.0001" for the tiny: never in scientific notation."""
    text = number_text(value)
    return "under 0.0001" if "e-" in text else text


def _caption(result, name: str, millimetres: bool, ranked: bool = False) -> tuple[str, ...]:
    """The lines under a row: ``name``, its category and, when ``ranked`` (one of several candidates), how likely it is
    against the likeliest (:attr:`recon_core.io.inference.Reconstruction.likelihood`; was its confidence, "25%" for
    the likeliest of three close ones); its size (width x depth x height, as the report says it) and printable
    verdict; its thin walls (in red, with the share of the surface they cover; none to note; or not checked without a
    height); and, when the object finder was unsure of the mask, to check its outline."""
    first = f"{name}: {result.category}"
    if ranked and getattr(result, "likelihood", ""):
        from recon_core.io.notes import likelihood_said

        first += f", {likelihood_said(result.likelihood)}"
    second = " x ".join(_number(v) for v in output_size(result.verts))
    second += " mm" if millimetres else " (the data's units)"
    second += ", printable" if result.report.ok else ", NOT printable"
    lines = [first, second]
    if not millimetres:
        lines.append("Thin walls not checked (no height given)")
    elif getattr(result, "thin_share", None) is not None:
        from recon_core.io.notes import share
        from recon_core.mesh.thickness import THIN_WALL_MM

        lines.append(f"Red: walls under {THIN_WALL_MM:g} mm, {share(result.thin_share)} of the surface, weak in print")
    elif result.report.finite:
        lines.append("No thin walls to note")
    if getattr(result, "mask_unsure", False):
        lines.append("The object finder was unsure of the object: check its dashed outline")
    return tuple(lines)


CAPTION_FONTS = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "arial.ttf", "Arial.ttf",
                 "Helvetica.ttc", "segoeui.ttf")
"""Fonts the caption is written in, the first found among the system's (they have accented letters; Pillow's own,
the last resort, has ASCII only): Linux's, then Windows' and macOS's (Pillow matches the file's name in its case)."""


def label_font(size: int = CAPTION_FONT):
    """The font of the captions and labels of the pictures the project draws (this preview, the training's sheets):
    the first of :data:`CAPTION_FONTS` the system has, ``size`` pixels, else Pillow's own."""
    from PIL import ImageFont

    for name in CAPTION_FONTS:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _fitted_text(draw, text: str, font, width: float) -> str:
    """``text``, cut in its middle with an ellipsis where it is wider than ``width`` pixels in ``font``."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        cut = text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]
        if draw.textlength(cut, font=font) <= width:
            return cut
    return text[:4] + "…"


def _legend(draw, font, cameras: bool, masks: bool, thin: bool) -> None:
    """The strip above the rows, :data:`LINE` high: a swatch and its words for each mark the rows show (the mesh over
    the picture and its outline where there is a camera, the object's outline where there is a mask, thin walls)."""
    from recon_core.mesh.thickness import THIN_WALL_MM

    over = tuple(round(MESH_OPACITY * c + (1.0 - MESH_OPACITY) * 255) for c in OVER_COLOUR)  # over white
    items = ([("fill", over, "the mesh on the picture"), ("line", OUTLINE_COLOUR, "its outline")] if cameras else [])
    items += [("dashes", None, "the object's outline")] if masks else []
    items += [("fill", THIN_COLOUR, f"walls under {THIN_WALL_MM:g} mm")] if thin else []
    x, middle = 4, LINE // 2
    for kind, colour, words in items:
        if kind == "fill":
            draw.rectangle((x, middle - 5, x + 15, middle + 5), fill=colour)
        elif kind == "line":
            draw.rectangle((x, middle - 1, x + 15, middle), fill=colour)
        else:
            for i in range(0, 16, DASH):
                draw.rectangle((x + i, middle - 1, x + i + DASH - 1, middle), fill=MASK_DASHES[(i // DASH) % 2])
        x += 21
        draw.text((x, 2), words, fill=(0, 0, 0), font=font)
        x += draw.textlength(words, font=font) + 14


def preview_png(rgb: np.ndarray, results: Sequence, names: Sequence[str], millimetres: bool,
                tile: int = TILE, alpha: np.ndarray | None = None) -> bytes:
    """The preview PNG of ``results`` (:class:`~recon_core.io.inference.Reconstruction`, one row each, named
    ``names``: their files) made from the decoded picture ``rgb`` (H, W, 3) uint8, its cut-out's ``alpha`` (H, W)
    uint8 on a checkerboard (None: as it is).

    Size: ``2 tile`` x ``LINE + len(results) (tile + CAPTION)``: the legend (:func:`_legend`), then each row the
    picture tile (:func:`picture_tile`), the mesh tile (:func:`mesh_tile`) and a caption of up to four lines
    (:func:`_caption`; sizes in mm when ``millimetres``), each cut to the row's width.
    """
    from PIL import Image, ImageDraw

    if len(results) != len(names) or not results:
        raise ValueError(f"{len(results)} results and {len(names)} names: one name a result, at least one")
    sheet = Image.new("RGB", (2 * tile, LINE + len(results) * (tile + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = label_font()
    _legend(draw, font, cameras=any(getattr(r, "camera", None) is not None for r in results),
            masks=any(getattr(r, "mask", None) is not None for r in results),
            thin=millimetres and any(getattr(r, "thin_faces", None) is not None and len(r.thin_faces) for r in results))
    for row, (result, name) in enumerate(zip(results, names)):
        top = LINE + row * (tile + CAPTION)
        sheet.paste(Image.fromarray(picture_tile(rgb, result, tile, alpha)), (0, top))
        sheet.paste(Image.fromarray(mesh_tile(result, tile)), (tile, top))
        for line, text in enumerate(_caption(result, name, millimetres, ranked=len(results) > 1)):
            draw.text((4, top + tile + 2 + line * LINE), _fitted_text(draw, text, font, 2 * tile - 8),
                      fill=(0, 0, 0), font=font)
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return png.getvalue()
