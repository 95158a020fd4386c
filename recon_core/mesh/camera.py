"""Every camera and axis convention of the project, in one place (numpy only: Blender's Python can import it).

Frames
------
*World* (the ShapeNetCore v2 frame, used by the data set): right-handed, **+Y up,
the object's front faces -Z**, centred on its bounding box, bounding-box diagonal 1.

*Blender world*: right-handed, +Z up. ``p_blender = SHAPENET_TO_BLENDER @ p_world``,
i.e. ``(x, y, z) -> (x, -z, y)``, the rotation Blender's OBJ importer applies with
its default axes (forward -Z, up Y).

*Camera* (OpenCV convention, the canonical one here): x right, y down, z forward
(away from the camera, into the scene). A :class:`Camera` maps world points with
``p_cam = R @ p_world + T`` and pixels with ``K``.

*View frame* (what the network predicts): the camera's axes centred on the object,
``p_view = R @ p_world``. For the look-at cameras of the renderer ``T = (0, 0, d)``,
so ``p_cam = p_view + (0, 0, d)``.

*Output frame* (meshes handed to users; OBJ and GLB files keep its axes, moved onto y = 0):
``p_out = VIEW_TO_OUTPUT @ p_view
= (x, -y, -z)``: +X right, +Y up, the camera on +Z looking toward -Z (the glTF
convention). STL, PLY and 3MF files hold it turned +Z up, ``(x, y, z) -> (x, -z, y)``, resting on z = 0
(:data:`recon_core.io.export.OUTPUT_TO_Z_UP`), as slicers read them. Seen from +Z, the mesh as seen (``recon-mesh
--as-seen``, and every mesh the evaluation scores) looks like the photo. In Blender (after the usual Y-up import
rotation) it looks like the photo from the Front view (numpad 1).

*Upright* output (``recon-mesh``'s and the add-on's default, :func:`stand_upright`): the mesh as seen, turned about
its bounding box's centre ``c`` by the least rotation ``L`` that takes the object's own up ``u = VIEW_TO_OUTPUT @
R_pose @ e_y`` (its training shape's +Y, as the fitted pose turns it into the view) onto +Y: ``p = L @ (p_out - c) +
c``. The camera's elevation and roll are taken out; its turn about the vertical stays, so from +Z (Blender's Front
view) the object is seen level, from the side the photo saw it. A shape with a flat base is then settled on it
(:func:`settle_on_base`: a further least turn, at most :data:`SETTLE_MAX_TURN`, that lays flat the convex-hull facet
its centre of mass stands over).

*Picture camera* of an output (:func:`picture_camera`, ``Reconstruction.camera``): a :class:`Camera` whose world is
the output mesh's frame and units. The shape bank's fit sees the view-frame solid from ``d`` =
``silhouette.FIT_DISTANCE`` on the axis, so as seen that camera sits at ``(0, 0, d)`` in the output frame, ``R =
VIEW_TO_OUTPUT`` (:func:`seen_camera`); standing and settling move the mesh rigidly, ``p' = M p + t``
(:func:`rigid_motion`), and the camera with it: ``R' = R M^T``, ``C' = M C + t``; ``--height-mm`` scales ``C'``
as it scales the mesh. Its ``K`` is fitted afterwards, so that the box of the mesh's projected vertices has the
mask's box's centre and longer side.

Pixels
------
Pixel ``(u, v)``: ``u`` to the right, ``v`` down, origin at the top-left *corner* of
the top-left pixel, so the centre of pixel ``(i, j)`` (row ``i``) is ``(j + 0.5, i + 0.5)``.
``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with ``f = focal_mm / sensor_mm * width``
(Blender's horizontal sensor fit) and ``(cx, cy) = (width / 2, height / 2)``.

Blender cameras
---------------
A Blender camera looks along its local -Z with local +Y up (OpenGL). Its
``matrix_world`` has as rotation columns the camera's local axes in Blender world
coordinates, ``SHAPENET_TO_BLENDER @ [x_c, -y_c, -z_c]`` where ``x_c, y_c, z_c`` are the
rows of ``R``, and as translation the camera centre ``SHAPENET_TO_BLENDER @ C`` with
``C = -R.T @ T``. :func:`blender_matrix_world` and :func:`camera_from_blender` convert;
the renderer writes both forms in its camera JSON (:meth:`Camera.to_json`).

Feature projection
------------------
The refiner samples image features at the vertices' projections. The network's input
is cropped to the object (:mod:`recon_core.network.crop`), so the true camera is unknown at
inference. :func:`fit_projection` therefore projects view-frame vertices
orthographically and fits their x/y bounding box into the crop's object box, the same
way at training and inference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch only where a function takes tensors; the rest of the module is numpy
    import torch

__all__ = [
    "SHAPENET_TO_BLENDER",
    "VIEW_TO_OUTPUT",
    "Camera",
    "look_at",
    "rotation_x",
    "rotation_y",
    "rotation_between",
    "stand_upright",
    "base_turn",
    "settle_on_base",
    "rigid_motion",
    "seen_camera",
    "picture_camera",
    "SETTLE_MAX_TURN",
    "FLAT_BASE_TURN",
    "blender_matrix_world",
    "camera_from_blender",
    "crop_camera",
    "to_pytorch3d",
    "fit_projection",
    "CROP_MARGIN",
]

SHAPENET_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""(3, 3) rotation from the ShapeNet world frame (+Y up) to Blender's (+Z up)."""

VIEW_TO_OUTPUT = np.diag([1.0, -1.0, -1.0])
"""(3, 3) rotation from the view frame (OpenCV axes) to the output frame (+Y up, camera on +Z)."""

_OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])

CROP_MARGIN = 0.1
"""Fraction of the crop's side left free on each side of the object's 2D box."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in the OpenCV convention.

    Attributes:
        R: (3, 3) float64 world-to-camera rotation (rows: camera x, y, z axes in world coordinates).
        T: (3,) float64 world-to-camera translation, ``p_cam = R @ p_world + T``.
        K: (3, 3) float64 intrinsics in pixels.
        width: image width in pixels.
        height: image height in pixels.
    """

    R: np.ndarray
    T: np.ndarray
    K: np.ndarray
    width: int
    height: int

    @property
    def centre(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return -self.R.T @ self.T

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.T

    def world_to_view(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) view-frame points (rotation only)."""
        return np.asarray(points, dtype=np.float64) @ self.R.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates ``(u, v)`` (see module docstring)."""
        cam = self.world_to_camera(points)
        uvw = cam @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict with the OpenCV form and the Blender form of this camera."""
        return {
            "convention": "opencv; world = ShapeNet frame (+Y up, front -Z); see recon_core.mesh.camera",
            "R": self.R.tolist(),
            "T": self.T.tolist(),
            "K": self.K.tolist(),
            "width": self.width,
            "height": self.height,
            "blender_matrix_world": blender_matrix_world(self).tolist(),
        }

    @staticmethod
    def from_json(data: dict[str, Any] | str) -> "Camera":
        """Inverse of :meth:`to_json` (accepts the dict or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        return Camera(
            R=np.asarray(data["R"], dtype=np.float64),
            T=np.asarray(data["T"], dtype=np.float64),
            K=np.asarray(data["K"], dtype=np.float64),
            width=int(data["width"]),
            height=int(data["height"]),
        )


def rotation_x(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``deg`` degrees about the x axis."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``deg`` degrees about the y axis (the data's up axis)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) rotation by the least angle that turns the direction ``a`` into the direction ``b`` (Rodrigues' formula
    about ``a x b``); for opposite directions, the half turn about an axis square to ``a``.

    Args:
        a, b: (3,) float, non-zero.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin, cos = float(np.linalg.norm(axis)), float(np.dot(a, b))
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # opposite: a half turn about the axis square to a that is nearest the basis vector least along a
        other = np.eye(3)[int(np.argmin(np.abs(a)))]
        axis = np.cross(a, other)
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    axis /= sin
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + sin * k + (1.0 - cos) * (k @ k)


def stand_upright(verts: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Output-frame vertices turned about their bounding box's centre so that the object's own ``up`` (an
    output-frame direction: where its +Y points as the picture's camera sees it) becomes the output frame's +Y, by the
    least turn (:func:`rotation_between`): the camera's elevation and roll taken out, the turn about the vertical as
    the picture shows it kept.

    Args:
        verts: (V, 3) float output-frame vertices.
        up: (3,) float, non-zero.

    Returns:
        (V, 3) float64.
    """
    verts = np.asarray(verts, dtype=np.float64)
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    turn = rotation_between(up, np.array([0.0, 1.0, 0.0]))
    return (verts - centre) @ turn.T + centre


SETTLE_MAX_TURN = 20.0
"""Degrees: :func:`settle_on_base` lays a mesh on its base only when that turns it by at most this much (a mesh stood
upright leans by a few degrees where the outline's warp and the carving moved its feet; more is not a lean). On the
123 validation pictures (`runs/s40/stable.py`) 10° left 49 outputs resting stably within 0.5 mm, 20° and 30° 59."""
FLAT_BASE_TURN = 5.0
"""Degrees: a shape that as modelled (level, its own +Y up) would settle by more than this has no flat base to rest
on (most airplanes, whose modelled level the settling would tip by several degrees): its mesh is stood, not settled.
Of the shape bank's 330 models as modelled (their surface vertices' mean as the centre; `runs/s40/bank_base.py`), 79
of the 106 airplanes settle by more (median 8.5°), and 6 others: a display, a lamp, three boats and one of the extra
pool; every other model within 3.2°."""


def base_turn(verts: np.ndarray, faces: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The least turn, in degrees, that lays flat a facet of the vertices' convex hull over which their centre of mass
    stands (``inf`` if none: it cannot happen for a solid, but a sliver facet is no base), and that facet's (3,)
    outward normal. See :func:`settle_on_base`.

    Args:
        verts: (V, 3) float output-frame vertices, at least 4 not in one plane.
        faces: (F, 3) int triangles of the closed mesh, whose solid's centre of mass is used; None: the vertices' mean.
    """
    from scipy.spatial import ConvexHull

    from recon_core.mesh.printable import solid_centroid  # here: this module is numpy only, for Blender's Python

    verts = np.asarray(verts, dtype=np.float64)
    mass = verts.mean(axis=0) if faces is None else solid_centroid(verts, np.asarray(faces, dtype=np.int64))
    hull = ConvexHull(verts)
    normals = hull.equations[:, :3]  # (H, 3) outward unit normals
    corners = verts[hull.simplices]  # (H, 3, 3)
    # the centre of mass projected onto each facet's plane, in the facet's barycentric coordinates
    foot = mass - ((mass - corners[:, 0]) * normals).sum(axis=1, keepdims=True) * normals
    e1, e2, d = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], foot - corners[:, 0]
    d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    d1, d2 = (d * e1).sum(1), (d * e2).sum(1)
    det = d11 * d22 - d12 ** 2
    sound = det > 1e-12 * d11 * d22  # a sliver facet (its corners nearly in a line) is no base
    det = np.where(sound, det, 1.0)
    b1, b2 = (d22 * d1 - d12 * d2) / det, (d11 * d2 - d12 * d1) / det
    under = sound & (b1 >= -1e-9) & (b2 >= -1e-9) & (b1 + b2 <= 1 + 1e-9)
    angles = np.where(under, np.degrees(np.arccos(np.clip(-normals[:, 1], -1.0, 1.0))), np.inf)
    k = int(np.argmin(angles))
    return float(angles[k]), normals[k]


def settle_on_base(verts: np.ndarray, faces: np.ndarray | None = None,
                   max_turn: float = SETTLE_MAX_TURN) -> tuple[np.ndarray, float]:
    """Output-frame vertices turned about their bounding box's centre so that they rest on a plate on the facet of
    their convex hull over which their centre of mass stands (so at least three lowest points share the lowest height,
    and it does not tip) that takes the least turn down (-Y) (:func:`base_turn`, :func:`rotation_between`); unchanged
    when no such facet lies within ``max_turn`` degrees. A body leaning past its edge is set back on the base nearest
    its lean, not on the one it would fall onto.

    Args:
        verts: (V, 3) float output-frame vertices, at least 4 not in one plane.
        faces: (F, 3) int triangles of the closed mesh, whose solid's centre of mass is used; None: the vertices' mean.
        max_turn: the largest turn taken, degrees.

    Returns:
        ``(verts (V, 3) float64, degrees turned)``: 0.0 when unchanged.
    """
    verts = np.asarray(verts, dtype=np.float64)
    angle, normal = base_turn(verts, faces)
    if not angle <= max_turn or angle < 1e-9:
        return verts, 0.0
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    turn = rotation_between(normal, np.array([0.0, -1.0, 0.0]))
    return (verts - centre) @ turn.T + centre, angle


def rigid_motion(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation and translation that take the points ``before`` onto ``after`` best in the least-squares sense
    (Kabsch's method: exact for points moved rigidly, as :func:`stand_upright` and :func:`settle_on_base` move them).

    Args:
        before, after: (N, 3) float, the same points before and after the motion, N >= 3 not on one line.

    Returns:
        ``(M (3, 3) rotation, t (3,))`` with ``after ≈ before @ M.T + t``.
    """
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    a, b = before.mean(axis=0), after.mean(axis=0)
    u, _, vt = np.linalg.svd((before - a).T @ (after - b))
    flip = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(vt.T @ u.T)) or 1.0)])
    turn = vt.T @ flip @ u.T
    return turn, b - turn @ a


def seen_camera(distance: float, motion: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The picture's camera as the output frame sees it, ``distance`` away on +Z looking toward -Z (+Y up), moved
    with the mesh by ``motion`` (:func:`rigid_motion`'s ``(M, t)``: the mesh stood upright and settled).

    Returns:
        ``(R (3, 3) world-to-camera rotation in the OpenCV convention, C (3,) camera centre)``, the world being the
        output frame: a camera sees ``p`` at ``R @ (p - C)``.
    """
    rotation, centre = VIEW_TO_OUTPUT.copy(), np.array([0.0, 0.0, float(distance)])
    if motion is not None:
        turn, shift = (np.asarray(x, dtype=np.float64) for x in motion)
        rotation, centre = rotation @ turn.T, turn @ centre + shift
    return rotation, centre


def picture_camera(verts: np.ndarray, rotation: np.ndarray, centre: np.ndarray, mask: np.ndarray,
                   above: float = 0.5) -> Camera | None:
    """The pinhole camera through which the mesh ``verts`` covers the picture's object box: the camera at ``centre``
    turned by ``rotation`` (:func:`seen_camera`), its focal length and principal point chosen so that the box of the
    vertices' projections has the mask's box's centre and longer side (the output was fitted to the mask at the same
    perspective, so its silhouette then lies on the picture's object).

    Args:
        verts: (V, 3) float vertices of the mesh, in the frame and units of ``centre``.
        rotation: (3, 3) world-to-camera rotation (OpenCV axes).
        centre: (3,) camera centre.
        mask: (H, W) float object mask of the whole picture, in [0, 1].
        above: mask level of the object.

    Returns:
        A :class:`Camera` with ``T = -R @ C``, the picture's width and height, ``K = [[f, 0, cx], [0, f, cy], [0, 0,
        1]]``; None when the mask is empty, or a vertex is not in front of the camera.
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    cam = (np.asarray(verts, dtype=np.float64) - np.asarray(centre, dtype=np.float64)) @ rotation.T
    inside = np.asarray(mask) > above
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows) == 0 or len(cam) == 0 or not (cam[:, 2] > 0).all():
        return None
    x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
    longer = max(float(np.ptp(x)), float(np.ptp(y)))
    if not longer > 0:
        return None
    side = max(cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0])
    focal = side / longer
    cx = (cols[0] + cols[-1] + 1) / 2.0 - focal * (x.min() + x.max()) / 2.0
    cy = (rows[0] + rows[-1] + 1) / 2.0 - focal * (y.min() + y.max()) / 2.0
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    return Camera(R=rotation, T=-rotation @ np.asarray(centre, dtype=np.float64), K=K, width=int(inside.shape[1]),
                  height=int(inside.shape[0]))


def intrinsics(focal_mm: float, sensor_mm: float, width: int, height: int) -> np.ndarray:
    """(3, 3) intrinsics of a Blender camera with horizontal sensor fit."""
    f = focal_mm / sensor_mm * width
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(
    azimuth_deg: float,
    elevation_deg: float,
    distance: float,
    focal_mm: float = 35.0,
    sensor_mm: float = 32.0,
    width: int = 137,
    height: int = 137,
) -> Camera:
    """A camera on a sphere around the origin, looking at it, world +Y up.

    Azimuth 0, elevation 0 puts the camera on -Z, facing the object's front; positive
    azimuth moves it toward +X, positive elevation up. The camera centre is
    ``distance * (cos(e) sin(a), sin(e), -cos(e) cos(a))``.
    """
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    centre = distance * np.array([math.cos(e) * math.sin(a), math.sin(e), -math.cos(e) * math.cos(a)])
    z_c = -centre / np.linalg.norm(centre)
    up = np.array([0.0, 1.0, 0.0])
    x_c = np.cross(z_c, up)
    if np.linalg.norm(x_c) < 1e-8:  # looking straight up or down: any right vector will do
        x_c = np.array([1.0, 0.0, 0.0])
    x_c /= np.linalg.norm(x_c)
    y_c = np.cross(z_c, x_c)
    R = np.stack([x_c, y_c, z_c])
    T = -R @ centre
    return Camera(R=R, T=T, K=intrinsics(focal_mm, sensor_mm, width, height), width=width, height=height)


def blender_matrix_world(camera: Camera) -> np.ndarray:
    """(4, 4) ``matrix_world`` of the Blender camera object equivalent to ``camera``."""
    rot_gl = (_OPENCV_TO_OPENGL @ camera.R).T  # columns: camera x, -y, -z in world coordinates
    m = np.eye(4)
    m[:3, :3] = SHAPENET_TO_BLENDER @ rot_gl
    m[:3, 3] = SHAPENET_TO_BLENDER @ camera.centre
    return m


def camera_from_blender(
    matrix_world: np.ndarray, lens_mm: float, sensor_width_mm: float, width: int, height: int
) -> Camera:
    """Inverse of :func:`blender_matrix_world` for a camera with horizontal sensor fit."""
    m = np.asarray(matrix_world, dtype=np.float64)
    rot_gl = SHAPENET_TO_BLENDER.T @ m[:3, :3]
    R = _OPENCV_TO_OPENGL @ rot_gl.T
    centre = SHAPENET_TO_BLENDER.T @ m[:3, 3]
    return Camera(R=R, T=-R @ centre, K=intrinsics(lens_mm, sensor_width_mm, width, height), width=width, height=height)


def crop_camera(camera: Camera, box: tuple[float, float, float, float], size: int) -> Camera:
    """The camera of an image cropped to ``box = (u0, v0, u1, v1)`` (pixels) and resized to ``size``².

    Only the intrinsics change: pixels are shifted by ``(u0, v0)`` and scaled by
    ``size / (u1 - u0)`` (the box must be square).
    """
    u0, v0, u1, v1 = box
    scale = size / (u1 - u0)
    S = np.array([[scale, 0.0, -scale * u0], [0.0, scale, -scale * v0], [0.0, 0.0, 1.0]])
    return Camera(R=camera.R, T=camera.T, K=S @ camera.K, width=size, height=size)


def to_pytorch3d(cameras: list[Camera], device="cpu"):
    """A batch of pytorch3d ``PerspectiveCameras`` equal to the given OpenCV cameras.

    pytorch3d's camera looks along +Z with +X left and +Y up; the conversion is
    pytorch3d's own ``cameras_from_opencv_projection``. World points fed to these
    cameras are in the world frame of ``cameras`` (use ``R = I`` cameras for view-frame points).
    """
    import torch
    from pytorch3d.utils import cameras_from_opencv_projection

    R = torch.tensor(np.stack([c.R for c in cameras]), dtype=torch.float32, device=device)
    T = torch.tensor(np.stack([c.T for c in cameras]), dtype=torch.float32, device=device)
    K = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32, device=device)
    size = torch.tensor([[c.height, c.width] for c in cameras], dtype=torch.float32, device=device)
    return cameras_from_opencv_projection(R, T, K, size)


def fit_projection(verts_view: "torch.Tensor", image_size: int, margin: float = CROP_MARGIN) -> "torch.Tensor":
    """Project view-frame vertices into the object crop, orthographically.

    The x/y bounding box of each mesh (measured without gradient) is scaled uniformly
    and centred so that its larger side spans ``[margin, 1 - margin] * image_size``,
    which is where :mod:`recon_core.network.crop` puts the object's 2D box.

    Args:
        verts_view: (B, V, 3) vertices in the view frame.
        image_size: side of the square input image, in pixels.
        margin: free fraction on each side of the object box.

    Returns:
        (B, V, 2) pixel coordinates ``(u, v)``.
    """
    import torch

    xy = verts_view[..., :2]
    with torch.no_grad():
        lo = xy.amin(dim=1, keepdim=True)  # (B, 1, 2)
        hi = xy.amax(dim=1, keepdim=True)
        extent = (hi - lo).amax(dim=2, keepdim=True).clamp_min(1e-6)  # (B, 1, 1)
        scale = (1.0 - 2.0 * margin) * image_size / extent
        centre = (lo + hi) / 2
    return (xy - centre) * scale + image_size / 2.0
