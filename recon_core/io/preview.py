"""``recon-mesh --preview``: one picture of what was made, to look at rather than read.

Each reconstruction is a row of two tiles and a caption:

- **on the picture**: the picture (a cut-out on white), with the mesh shaded in orange through its picture camera
  (:attr:`recon_core.io.inference.Reconstruction.camera`) 60 % opaque over it and its outline drawn, so that
  where the mesh departs from the object shows at a glance; without a camera (a model without a shape bank), the
  picture with the object mask's outline;
- **the mesh**: shaded in a 3/4 view from the front right, above (:data:`recon_core.mesh.render.THREE_QUARTER_VIEW`),
  the faces whose walls are too thin to print (:attr:`~recon_core.io.inference.Reconstruction.thin_faces`) in red;
- the caption: its name, category, size and printable verdict.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from recon_core.mesh.render import face_shade, rasterize, render_mesh

__all__ = ["TILE", "CAPTION", "preview_png", "picture_tile"]

TILE = 320
"""Side of each tile, in pixels."""
CAPTION = 18
"""Height of each row's caption, in pixels."""
MESH_COLOUR = (95, 140, 215)
"""The mesh's base colour in its 3/4 view (the evaluation sheets' colour of ours)."""
OVER_COLOUR = (255, 150, 40)
"""The mesh's base colour over the picture: orange, which few product pictures are."""
THIN_COLOUR = (215, 40, 40)
"""The base colour of faces whose walls are too thin to print."""
OUTLINE_COLOUR = (230, 0, 190)
"""The outline of the mesh through the picture's camera (or, without one, of the object mask): magenta."""
MESH_OPACITY = 0.6
"""How opaque the shaded mesh is over the picture."""


def _fitted(rgb: np.ndarray, alpha: np.ndarray | None, tile: int
            ) -> tuple[np.ndarray, float, tuple[int, int], tuple[int, int]]:
    """The (H, W, 3) picture, a cut-out's ``alpha`` made white (:func:`recon_core.io.image.shown_picture`), scaled so
    that its longer side is ``tile`` and centred on a white ``tile`` square; the scale, the ``(x, y)`` offset of its
    top-left corner and its ``(width, height)`` there."""
    from PIL import Image

    from recon_core.io.image import shown_picture

    h, w = rgb.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    offset = ((tile - size[0]) // 2, (tile - size[1]) // 2)
    canvas = Image.new("RGB", (tile, tile), (255, 255, 255))
    canvas.paste(Image.fromarray(shown_picture(rgb, alpha, side=None)).resize(size, Image.BILINEAR), offset)
    return np.asarray(canvas, dtype=np.float64), scale, offset, size


def _outline(covered: np.ndarray) -> np.ndarray:
    """(H, W) bool: the covered pixels with an uncovered 4-neighbour (or on the border)."""
    padded = np.pad(covered, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return covered & ~inner


def picture_tile(rgb: np.ndarray, result, tile: int = TILE, alpha: np.ndarray | None = None) -> np.ndarray:
    """The "on the picture" tile of ``result`` (a :class:`~recon_core.io.inference.Reconstruction`) for the decoded
    picture ``rgb`` (H, W, 3) uint8, its cut-out's ``alpha`` (H, W) uint8 made white: (tile, tile, 3) uint8.

    Through its camera (pixel ``u`` of the picture is ``offset + scale u`` here, so the camera's ``K`` is scaled and
    moved the same way), the nearest face of the mesh at each pixel is shaded (:func:`recon_core.mesh.render.face_shade`,
    the camera's frame turned to a viewer's) and laid over the picture at :data:`MESH_OPACITY`; the covered pixels'
    edge is drawn in :data:`OUTLINE_COLOUR`. Without a camera, the object mask's edge is drawn instead.
    """
    canvas, scale, (ox, oy), (sw, sh) = _fitted(rgb, alpha, tile)
    camera = getattr(result, "camera", None)
    if camera is None:
        mask = getattr(result, "mask", None)
        if mask is not None:
            h, w = np.asarray(mask).shape
            cols = np.clip(((np.arange(tile) - ox + 0.5) / scale).astype(np.int64), 0, w - 1)
            rows = np.clip(((np.arange(tile) - oy + 0.5) / scale).astype(np.int64), 0, h - 1)
            inside = ((np.arange(tile) >= ox) & (np.arange(tile) < ox + sw))[None, :] & \
                     ((np.arange(tile) >= oy) & (np.arange(tile) < oy + sh))[:, None]
            covered = (np.asarray(mask)[rows[:, None], cols[None, :]] > 0.5) & inside
            canvas[_outline(covered)] = OUTLINE_COLOUR
        return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    verts = np.asarray(result.verts, dtype=np.float64)
    faces = np.asarray(result.faces, dtype=np.int64)
    seen = camera.world_to_camera(verts)  # (V, 3) OpenCV: x right, y down, z forward
    K = np.diag([scale, scale, 1.0]) @ camera.K
    K[0, 2] += ox
    K[1, 2] += oy
    uvw = seen @ K.T
    xy = uvw[:, :2] / uvw[:, 2:3]
    face_id = rasterize(xy, seen[:, 2], faces, tile)
    covered = face_id >= 0
    shade = face_shade(seen[faces] * [1.0, -1.0, -1.0])  # a viewer's frame: y up, the viewer on +z
    mesh = shade[face_id[covered]][:, None] * np.asarray(OVER_COLOUR, dtype=np.float64)
    canvas[covered] = (1.0 - MESH_OPACITY) * canvas[covered] + MESH_OPACITY * mesh
    canvas[_outline(covered)] = OUTLINE_COLOUR
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def mesh_tile(result, tile: int = TILE) -> np.ndarray:
    """The "mesh" tile of ``result``: its 3/4 view, the thin-walled faces in :data:`THIN_COLOUR`; (tile, tile, 3)."""
    faces = np.asarray(result.faces, dtype=np.int64)
    colours = np.broadcast_to(np.asarray(MESH_COLOUR, dtype=np.float64), (len(faces), 3)).copy()
    thin = getattr(result, "thin_faces", None)
    if thin is not None and len(thin):
        colours[np.asarray(thin, dtype=np.int64)] = THIN_COLOUR
    return render_mesh(result.verts, faces, tile, face_colours=colours)


def _caption(result, name: str, millimetres: bool) -> str:
    """``name``: its category, size (width x height x depth) and printable verdict, and what red means if it has
    thin walls."""
    size = np.ptp(np.asarray(result.verts, dtype=np.float64), axis=0) if len(result.verts) else np.zeros(3)
    unit = " mm" if millimetres else " (the data's units)"
    text = (f"{name}: {result.category}, {size[0]:.1f} x {size[1]:.1f} x {size[2]:.1f}{unit}, "
            + ("printable" if result.report.ok else "NOT printable"))
    if getattr(result, "thin_faces", None) is not None and len(result.thin_faces):
        text += "; red: walls too thin to print"
    return text


def preview_png(rgb: np.ndarray, results: Sequence, names: Sequence[str], millimetres: bool,
                tile: int = TILE, alpha: np.ndarray | None = None) -> bytes:
    """The preview PNG of ``results`` (:class:`~recon_core.io.inference.Reconstruction`, one row each, named
    ``names``: their files) made from the decoded picture ``rgb`` (H, W, 3) uint8, its cut-out's ``alpha`` (H, W)
    uint8 made white (None: as it is).

    Size: ``2 tile`` x ``len(results) (tile + CAPTION)``: each row the picture tile (:func:`picture_tile`), the mesh
    tile (:func:`mesh_tile`) and a caption (sizes in mm when ``millimetres``).
    """
    from PIL import Image, ImageDraw

    if len(results) != len(names) or not results:
        raise ValueError(f"{len(results)} results and {len(names)} names: one name a result, at least one")
    sheet = Image.new("RGB", (2 * tile, len(results) * (tile + CAPTION)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, (result, name) in enumerate(zip(results, names)):
        top = row * (tile + CAPTION)
        sheet.paste(Image.fromarray(picture_tile(rgb, result, tile, alpha)), (0, top))
        sheet.paste(Image.fromarray(mesh_tile(result, tile)), (tile, top))
        draw.text((4, top + tile + 3), _caption(result, name, millimetres), fill=(0, 0, 0))
    png = io.BytesIO()
    sheet.save(png, format="PNG")
    return png.getvalue()
