"""Three reference reconstructions for the evaluation table: silhouette ellipsoid, category mean shape, retrieval.

Every baseline returns a mesh in the *output* frame (:mod:`recon_core.mesh.camera`), like
:meth:`recon_core.io.inference.Reconstructor.reconstruct`, so that all methods go through the
same metrics unchanged.

* **Silhouette ellipsoid** (:func:`sphere_baseline`): the unit sphere stretched to the mask's
  2D box. View-frame semi-axes ``(a, b, c)`` with ``a : b = box width : box height`` and
  ``c = (a + b) / 2``, scaled so that the ellipsoid's bounding-box diagonal is 1 (the data
  set's normalisation of the world frame), centred at the origin (the view frame is centred
  on the object).
* **Category mean shape** (:func:`medoid`): the category's medoid training model under
  Chamfer-L2 (the training model with the smallest summed Chamfer distance to the others),
  posed with the test view's *true* rotation (an oracle pose).
* **Nearest-view retrieval** (:class:`RetrievalIndex`): every training view is embedded by
  :func:`embed_image` (the object crop the network sees, reduced to a 32x32 silhouette and a
  32x32 darkness map, L2-normalised); the query returns the nearest training view, and the
  baseline is that view's model posed in that view's frame (retrieval in the viewer-centred
  frame).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon_core.io.export import atomic_write_bytes
from recon_core.mesh.camera import VIEW_TO_OUTPUT
from recon_core.network.crop import object_box
from recon_core.network.retrieval import EMBED_SIZE, EMBED_VERSION, embed_image

__all__ = [
    "EMBED_SIZE",
    "EMBED_VERSION",
    "ellipsoid_semi_axes",
    "sphere_baseline",
    "world_to_output",
    "embed_image",
    "chamfer_matrix",
    "medoid",
    "RetrievalIndex",
    "BaselineIndex",
]


SPHERE_SUBDIVISIONS = 3
"""Ico-sphere subdivisions of the ellipsoid baseline (642 vertices)."""


def world_to_output(points: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(N, 3) world-frame points -> (N, 3) output-frame points of the view with rotation ``R`` (3, 3).

    ``p_out = VIEW_TO_OUTPUT @ R @ p_world`` (see :mod:`recon_core.mesh.camera`).
    """
    return np.asarray(points, dtype=np.float64) @ (VIEW_TO_OUTPUT @ np.asarray(R, dtype=np.float64)).T


def ellipsoid_semi_axes(box: Sequence[float]) -> np.ndarray:
    """View-frame semi-axes ``(a, b, c)`` of the ellipsoid fitted to a 2D box ``(u0, v0, u1, v1)``.

    ``a : b`` is the box's width : height, ``c = (a + b) / 2``, and the ellipsoid's
    axis-aligned bounding box has diagonal ``2 |(a, b, c)| = 1``.

    Raises:
        ValueError: for an empty box.
    """
    u0, v0, u1, v1 = (float(x) for x in box)
    w, h = u1 - u0, v1 - v0
    if not (w > 0 and h > 0):
        raise ValueError(f"box must have positive width and height, got {tuple(box)}")
    axes = np.array([w, h, (w + h) / 2.0])
    return axes / (2.0 * np.linalg.norm(axes))


def sphere_baseline(
    rgb: np.ndarray, alpha: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The silhouette ellipsoid of an image (see the module docstring).

    Args:
        rgb: (H, W, 3) uint8.
        alpha: (H, W) uint8 mask or None; the box is :func:`recon_core.network.crop.object_box`'s,
            the one the network's crop is built from.

    Returns:
        ``(verts, faces, box)``: (V, 3) float64 output-frame vertices, (F, 3) int64 faces
        (outward), and the 2D box ``(u0, v0, u1, v1)`` used.
    """
    import trimesh

    box = object_box(rgb, alpha)
    sphere = trimesh.creation.icosphere(subdivisions=SPHERE_SUBDIVISIONS)
    verts_view = np.asarray(sphere.vertices, dtype=np.float64) * ellipsoid_semi_axes(box)
    # VIEW_TO_OUTPUT is a rotation (det +1), so the winding stays outward.
    return verts_view @ VIEW_TO_OUTPUT.T, np.asarray(sphere.faces, dtype=np.int64), box


def chamfer_matrix(points: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer-L2 between every pair of point sets.

    Args:
        points: (M, P, 3) float point sets.

    Returns:
        (M, M) float: ``mean_p min_q |p - q|² + mean_q min_p |q - p|²``, zero on the diagonal.
    """
    from pytorch3d.ops import knn_points

    if points.dim() != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be (M, P, 3), got {tuple(points.shape)}")
    m = points.shape[0]
    one_way = torch.empty(m, m, dtype=points.dtype)
    for i in range(m):
        d = knn_points(points[i : i + 1].expand(m, -1, -1), points, K=1).dists[..., 0]  # (M, P)
        one_way[i] = d.mean(dim=1)  # from set i to each set j
    out = one_way + one_way.T
    out.fill_diagonal_(0.0)
    return out


def medoid(points: torch.Tensor) -> int:
    """Index of the medoid of (M, P, 3) point sets under :func:`chamfer_matrix` (ties: the lowest index)."""
    return int(torch.argmin(chamfer_matrix(points).sum(dim=1)).item())


@dataclass
class RetrievalIndex:
    """Embeddings of the training views, and what each one points to.

    Attributes:
        features: (N, D) float16 embeddings (:func:`embed_image`).
        model_ids: (N,) str model of each view.
        synsets: (N,) str synset of each view's model.
        views: (N,) str view name (the render's file stem).
        rotations: (N, 3, 3) float64 world-to-camera rotation of each view.
    """

    features: np.ndarray
    model_ids: np.ndarray
    synsets: np.ndarray
    views: np.ndarray
    rotations: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def query(self, feature: np.ndarray) -> tuple[int, float]:
        """Nearest training view of a (D,) embedding: ``(row, squared distance)``; ties go to the lowest row."""
        if len(self) == 0:
            raise ValueError("the retrieval index is empty: the train split has no rendered views")
        feature = np.asarray(feature, dtype=np.float32)
        if feature.shape != (self.features.shape[1],):
            raise ValueError(f"feature must have shape ({self.features.shape[1]},), got {feature.shape}")
        d2 = ((self.features.astype(np.float32) - feature) ** 2).sum(axis=1)
        row = int(np.argmin(d2))
        return row, float(d2[row])


@dataclass
class BaselineIndex:
    """What the mean-shape and retrieval baselines need from the train split, cached as one ``.npz``.

    Attributes:
        retrieval: the training views' :class:`RetrievalIndex`.
        medoids: synset -> medoid training model id; key ``"*"``: the medoid of the category medoids
            (used when the predicted category has no training model).
        fingerprint: hash of the train split's listing and the embedding version; a cache with
            another fingerprint is stale.
    """

    retrieval: RetrievalIndex
    medoids: dict[str, str]
    fingerprint: str

    def save(self, path: str | Path) -> Path:
        """Write the index atomically (no pickles: strings are stored as unicode arrays)."""
        buf = io.BytesIO()
        r = self.retrieval
        keys = sorted(self.medoids)
        np.savez(
            buf,
            features=r.features.astype(np.float16),
            model_ids=np.asarray(r.model_ids, dtype=str),
            synsets=np.asarray(r.synsets, dtype=str),
            views=np.asarray(r.views, dtype=str),
            rotations=np.asarray(r.rotations, dtype=np.float64).reshape(-1, 3, 3),
            medoid_keys=np.asarray(keys, dtype=str),
            medoid_ids=np.asarray([self.medoids[k] for k in keys], dtype=str),
            fingerprint=np.asarray(self.fingerprint),
        )
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @staticmethod
    def load(path: str | Path) -> "BaselineIndex":
        """Read an index written by :meth:`save` (raises ``OSError``/``ValueError``/``KeyError`` if unreadable)."""
        with np.load(path, allow_pickle=False) as data:
            retrieval = RetrievalIndex(
                features=data["features"],
                model_ids=data["model_ids"],
                synsets=data["synsets"],
                views=data["views"],
                rotations=data["rotations"],
            )
            medoids = {str(k): str(v) for k, v in zip(data["medoid_keys"], data["medoid_ids"])}
            return BaselineIndex(retrieval, medoids, str(data["fingerprint"]))
