"""Array helpers of the add-on, without bpy: frame conversion, placement, mesh buffers and binary STL.

Units: Blender lengths follow the scene's unit scale, 1 Blender unit = ``scale_length``
metres, so ``mm_per_unit = 1000 * scale_length`` (1000 in a default scene; 1 in a scene
set up for printing with unit scale 0.001).
"""

from __future__ import annotations

import os
import struct
import uuid

import numpy as np

__all__ = ["OUTPUT_TO_BLENDER", "PLATE_MM", "print_problems", "to_blender", "on_plate", "picture_view", "mesh_motion",
           "mesh_buffers", "stl_bytes", "write_stl"]

OUTPUT_TO_BLENDER = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
"""Rotation from the output frame (+Y up, camera on +Z) to Blender (+Z up): (x, y, z) -> (x, -z, y),
as in ``recon_core.mesh.camera``; the photo's view becomes Blender's Front view (level, for a mesh stood upright)."""


PLATE_MM = 256.0
"""The side of a large printer's build volume, in millimetres: an export larger than it along a side is warned of
(``recon_core.io.cli.PLATE_MM``, which the tests keep equal)."""


def on_plate(verts: np.ndarray) -> np.ndarray:
    """``(V, 3)`` +Z-up vertices moved to rest on z = 0 with their bounding box centred on the Z axis, as
    ``recon_core.io.export.on_plate`` places an STL (the tests compare them)."""
    lo, hi = verts.min(0), verts.max(0)
    return verts - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])


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


def print_problems(coords: np.ndarray, tris: np.ndarray) -> list[str]:
    """What keeps a triangle mesh from printing that its faces alone show, as phrases ("not watertight (12 open edges:
    holes)"); an
    empty list when it is watertight, edge-manifold, consistently oriented and outward.

    The rules of those properties of ``recon_core.mesh.printable.check_topology`` (the tests compare them), worded as
    :meth:`recon_core.mesh.printable.PrintableReport.problems` words them, with vertices at exactly one place joined
    first, as a file of triangles (STL) holds them; what needs positions beyond that and the volume's sign
    (self-intersections) is not looked for: Export 3MF has recon_core's whole check.

    Args:
        coords: (V, 3) float vertex positions.
        tris: (F, 3) int triangles (each face's corners counter-clockwise seen from outside).
    """
    tris = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if not len(tris):
        return ["no faces"]
    # vertices at exactly one place are one (a file of triangles holds positions only, and slicers join them): an Edge
    # Split modifier's or an imported STL's split vertices are not holes
    coords, joined = np.unique(coords, axis=0, return_inverse=True)
    tris = joined.reshape(-1)[tris]
    directed = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])  # (3F, 2) each face's edges
    undirected, uses = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    problems = []
    open_edges, crowded = int((uses == 1).sum()), int((uses > 2).sum())
    if open_edges:
        problems.append(f"not watertight ({open_edges} open edge{'s' * (open_edges != 1)}: holes)")
    if crowded:
        problems.append(f"edges shared by more than two faces ({crowded})")
    _, directed_uses = np.unique(directed, axis=0, return_counts=True)
    flipped = int((directed_uses > 1).sum())
    if flipped:
        problems.append(f"faces that face opposite ways ({flipped} edge{'s' * (flipped != 1)})")
    a, b, c = coords[tris[:, 0]], coords[tris[:, 1]], coords[tris[:, 2]]
    volume = float(np.einsum("ij,ij->", a, np.cross(b, c))) / 6.0
    if not problems and not volume > 0:
        problems.append("inside out (its faces point inward)")
    return problems


def stl_bytes(triangles: np.ndarray, header: str = "reconstruct_from_image") -> bytes:
    """Binary STL of (T, 3, 3) triangle corner positions (counter-clockwise seen from outside)."""
    tri = np.asarray(triangles, dtype=np.float64).reshape(-1, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    record = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
    data = np.zeros(len(tri), dtype=record)
    data["normal"], data["corners"] = normals, tri
    return header.encode()[:80].ljust(80, b" ") + struct.pack("<I", len(tri)) + data.tobytes()


def write_stl(path: str, triangles: np.ndarray) -> None:
    """Write a binary STL through a temporary file and a rename (never a half-written file), with the permissions a
    new file gets (``0o666`` less the umask, as Blender's own exporter and Export 3MF give), not mkstemp's 0600.

    The temporary file, a new name in the target's folder, is created with mode ``0o666`` and the kernel takes the
    umask off; the umask is never read (reading it means setting it, for a moment, for every thread of Blender)."""
    folder = os.path.dirname(os.path.abspath(path))
    data = stl_bytes(triangles)
    for _ in range(100):
        tmp = os.path.join(folder, f".recon-{uuid.uuid4().hex}.stl.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free temporary name in {folder}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
