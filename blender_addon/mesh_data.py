"""Array helpers of the add-on, without bpy: frame conversion, placement, the picture camera and mesh buffers.

Units: Blender lengths follow the scene's unit scale, 1 Blender unit = ``scale_length``
metres, so ``mm_per_unit = 1000 * scale_length`` (1000 in a default scene; 1 in a scene
set up for printing with unit scale 0.001).
"""

from __future__ import annotations

import numpy as np

__all__ = ["OUTPUT_TO_BLENDER", "to_blender", "picture_view", "mesh_motion", "mesh_buffers"]

OUTPUT_TO_BLENDER = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
"""Rotation from the output frame (+Y up, camera on +Z) to Blender (+Z up): (x, y, z) -> (x, -z, y),
as in ``recon_core.mesh.camera``; the photo's view becomes Blender's Front view (level, for a mesh stood upright)."""


def to_blender(verts: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Output-frame vertices to Blender coordinates, scaled, with the bounding box's bottom centre at the origin.

    Args:
        verts: (V, 3) float, output frame.
        scale: Blender units per input unit.

    Returns:
        (V, 3) float64: the object rests on its origin, as on a print bed.
    """
    verts = np.asarray(verts, dtype=np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {verts.shape}")
    out = verts @ OUTPUT_TO_BLENDER.T * scale
    return out - _base_point(out)


def _base_point(out: np.ndarray) -> np.ndarray:
    """(3,) the bottom centre of the bounding box of (V, 3) Blender-frame vertices (:func:`to_blender`'s origin)."""
    lo, hi = out.min(0), out.max(0)
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])


SENSOR_MM = 36.0
"""The picture camera's sensor along the picture's longer side, in mm (Blender's default sensor width)."""

PLANE_BEYOND = 1.25
"""The picture's plane stands this many times the mesh's farthest depth from the picture camera (behind the mesh)."""


def picture_view(camera: dict, verts: np.ndarray, scale: float = 1.0) -> dict:
    """The picture's camera (the worker's ``camera``) in the frame of the object that holds :func:`to_blender`'s
    mesh of ``verts``: what a Blender camera and an image empty need so that, looked through, the mesh lies on the
    picture's object.

    Blender cameras look along their local -Z with +Y up; the OpenCV camera's rows ``R`` (x right, y down, z forward)
    give its local axes ``x = R[0]``, ``y = -R[1]``, ``z = -R[2]`` in the output frame, turned into Blender's by
    :data:`OUTPUT_TO_BLENDER`; its centre ``C = -R^T T`` goes where :func:`to_blender` takes the mesh. The lens is the
    focal length ``f`` (pixels) over the picture's longer side as :data:`SENSOR_MM`, fitted along that side; the
    shift puts the principal point where the picture has it, so that with the render resolution at the picture's size
    the camera's frame is the picture. The picture stands as a plane :data:`PLANE_BEYOND` times the mesh's farthest
    depth away, the size at which the camera sees it fill its pixels.

    Args:
        camera: ``{"R": (3, 3), "T": (3,), "K": (3, 3), "width": W, "height": H}`` (the worker's ``camera``, decoded:
            :func:`.worker_client._camera`), in the worker's units.
        verts: (V, 3) float output-frame vertices as the worker sent them.
        scale: Blender units per worker unit, as :func:`to_blender` was given.

    Returns:
        ``{"matrix": (4, 4) camera-to-object, "lens", "sensor_fit" ('HORIZONTAL' or 'VERTICAL'), "shift_x",
        "shift_y", "clip_start", "clip_end", "plane_location": (3,) in the camera's frame, "plane_size" (the picture's
        longer side), "width", "height", "vertex_count", "anchors": the indices of a few outermost vertices and
        "anchor_co": their (K, 3) places in the object's frame (to follow the mesh through a transform applied since,
        and to tell a mesh edited since: :func:`mesh_motion`)}``, lengths in Blender units, numbers as floats and lists
        (an ID property).

    Raises:
        ValueError: a vertex that is not in front of the camera.
    """
    R = np.asarray(camera["R"], dtype=np.float64)
    T = np.asarray(camera["T"], dtype=np.float64)
    K = np.asarray(camera["K"], dtype=np.float64)
    width, height = int(camera["width"]), int(camera["height"])
    verts = np.asarray(verts, dtype=np.float64)
    depth = (verts @ R.T + T)[:, 2] * scale  # (V,) distance along the view, Blender units
    if not (depth > 0).all():
        raise ValueError("the mesh is not wholly in front of the picture's camera")
    out = verts @ OUTPUT_TO_BLENDER.T * scale
    placed = (out - _base_point(out)).astype(np.float32)  # as the object holds it
    signs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, -1, 1], [1, 1, -1], [-1, 1, 1]], np.float64)
    along = placed.astype(np.float64) @ signs.T  # (V, 7): the outermost vertices both ways along 7 directions
    anchors = np.unique(np.concatenate([along.argmin(axis=0), along.argmax(axis=0)]))
    matrix = np.eye(4)
    matrix[:3, :3] = OUTPUT_TO_BLENDER @ np.stack([R[0], -R[1], -R[2]], axis=1)
    matrix[:3, 3] = OUTPUT_TO_BLENDER @ (-R.T @ T) * scale - _base_point(out)
    focal, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    longer = max(width, height)
    far = float(depth.max()) * PLANE_BEYOND
    return {
        "matrix": matrix.tolist(),
        "lens": focal * SENSOR_MM / longer,
        "sensor_fit": 'HORIZONTAL' if width >= height else 'VERTICAL',
        "shift_x": (width / 2.0 - cx) / longer,
        "shift_y": (cy - height / 2.0) / longer,
        "clip_start": float(depth.min()) / 10.0,
        "clip_end": far * 4.0,
        "plane_location": [(width / 2.0 - cx) * far / focal, (cy - height / 2.0) * far / focal, -far],
        "plane_size": longer * far / focal,
        "width": width,
        "height": height,
        "vertex_count": len(placed),
        "anchors": anchors.tolist(),
        "anchor_co": placed[anchors].astype(np.float64).tolist(),
    }


def mesh_motion(view: dict, co: np.ndarray) -> np.ndarray | None:
    """The (4, 4) affine map that took the mesh as :func:`picture_view` saw it (its ``anchors``) to its vertices ``co``
    now, in the object's frame: the identity for a mesh as made, another map after Apply Scale or Rotation or Set
    Origin; None when the mesh was edited (another vertex count, or anchors that no affine map takes there, to within
    float32's rounding of coordinates far from the origin). A view recorded without anchors (made before they were)
    gives the identity.

    Args:
        view: :func:`picture_view`'s dict.
        co: (V, 3) float vertex positions of the object's mesh now.
    """
    co = np.asarray(co, dtype=np.float64).reshape(-1, 3)
    if "anchors" not in view:
        return np.eye(4)
    if len(co) != int(view["vertex_count"]):
        return None
    old = np.asarray(view["anchor_co"], dtype=np.float64)
    new = co[np.asarray(view["anchors"], dtype=np.int64)]
    lifted = np.concatenate([old, np.ones((len(old), 1))], axis=1)  # (K, 4)
    solved, *_ = np.linalg.lstsq(lifted, new, rcond=None)  # (4, 3): new = lifted @ solved
    size = max(float(np.linalg.norm(np.ptp(new, axis=0))), 1e-12)
    rounding = 1e-6 * max(float(np.abs(new).max()), float(np.abs(old).max()))  # float32 far from the origin
    if np.abs(lifted @ solved - new).max() > 1e-4 * size + rounding:
        return None
    motion = np.eye(4)
    motion[:3, :3], motion[:3, 3] = solved[:3].T, solved[3]
    return motion


def mesh_buffers(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat arrays of a triangle mesh in the types Blender's ``foreach_set`` copies without conversion.

    Blender stores a mesh as vertex positions, face corners ("loops", each naming a vertex) and
    faces (each the index of its first corner); triangle ``f`` owns corners ``3f, 3f + 1, 3f + 2``.

    Args:
        verts: (V, 3) float positions.
        faces: (F, 3) int triangles, indices into ``verts``.

    Returns:
        ``(co, loop_verts, loop_starts)``: (3V,) float32 positions ``x0, y0, z0, x1, ...``;
        (3F,) int32 vertex of each corner, the faces' rows one after the other; (F,) int32
        first corner of each face, ``0, 3, 6, ...``.

    Raises:
        ValueError: a shape other than (V, 3) and (F, 3), or a face index outside ``0 .. V-1``
            (Blender does not check, and would read outside its vertex array).
    """
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"faces index vertices {faces.min()} .. {faces.max()}, but there are {len(verts)} vertices")
    co = np.ascontiguousarray(verts, dtype=np.float32).reshape(-1)
    loop_verts = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1)
    loop_starts = np.arange(0, len(loop_verts), 3, dtype=np.int32)
    return co, loop_verts, loop_starts
