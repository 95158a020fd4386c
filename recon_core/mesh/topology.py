"""Mesh connectivity for the refiner: the ico-sphere family, and any triangle mesh.

All meshes of a batch share one topology, so a batch of meshes is simply
``verts (B, V, 3)`` with one ``faces (F, 3)`` tensor. Two kinds of topology exist, and the
refiner (:class:`recon_core.network.refiner.RefinerStage`) takes either through the :class:`Topology`
interface (``edges(level)``, ``batched_edge_index(level, batch)``):

* :class:`IcoTopology`, the fixed ico-sphere levels of the shipped models.
  :meth:`IcoTopology.meshes` gives a batch as the losses take it. Level ``L`` has ``10 * 4**L + 2`` vertices (2: 162, 3: 642,
  4: 2,562, 5: 10,242). Subdividing level ``L`` appends one vertex per edge (the edge's
  midpoint) after the existing vertices, in the order of :meth:`IcoTopology.edges`; that is
  exactly how pytorch3d builds ``ico_sphere(L + 1)``. :func:`ico_sphere` builds the levels in
  torch alone, the same vertices, faces and edges as pytorch3d's (a test compares them), so
  a model is built, and trained, where pytorch3d is not installed.
* :class:`MeshGraph`, the graph of one mesh of any topology (any genus, any number of
  components, any vertex count), such as the marching-tetrahedra meshes of
  ``coarse="occupancy"`` models (:func:`recon_core.mesh.occupancy.mesh_occupancy`). It has no
  levels: the ``level`` arguments of its methods are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "Topology",
    "BatchMeshes",
    "IcoTopology",
    "MeshGraph",
    "ico_sphere",
    "vertex_count",
    "level_for_vertices",
    "neighbour_mean",
    "mean_edge_length",
]


class Topology(Protocol):
    """What a refiner stage needs of a batch's shared connectivity (:class:`IcoTopology`, :class:`MeshGraph`)."""

    def edges(self, level: int | None) -> torch.Tensor:
        """(E, 2) long unique undirected edges, ``edges[:, 0] < edges[:, 1]``."""

    def batched_edge_index(self, level: int | None, batch: int) -> torch.Tensor:
        """(2, 2 * E * batch) long directed edge index of ``batch`` copies, for torch_geometric."""


def vertex_count(level: int) -> int:
    """Number of vertices of an ico-sphere of the given level."""
    return 10 * 4**level + 2


def level_for_vertices(count: int) -> int:
    """Inverse of :func:`vertex_count`; raises ``ValueError`` for other counts."""
    for level in range(8):
        if vertex_count(level) == count:
            return level
    raise ValueError(f"{count} is not an ico-sphere vertex count (162, 642, 2562, 10242, ...).")


class IcoTopology(nn.Module):
    """Faces and edges of ico-sphere levels ``min_level .. max_level`` as non-persistent buffers.

    Buffers (per level ``L``): ``faces_L`` (F_L, 3) long, ``edges_L`` (E_L, 2) long
    (unique, ``edges[:, 0] < edges[:, 1]``), and ``sphere_L`` (V_L, 3) float unit-sphere vertices.
    """

    def __init__(self, min_level: int, max_level: int):
        super().__init__()
        self.min_level, self.max_level = min_level, max_level
        verts, faces = ico_sphere(min_level)
        for level in range(min_level, max_level + 1):
            if level > min_level:  # ico_sphere(level)'s own step, without recomputing the levels below
                verts, faces = _subdivide(verts, faces)
            self.register_buffer(f"faces_{level}", faces.clone(), persistent=False)
            self.register_buffer(f"edges_{level}", _edges_and_face_edges(faces, len(verts))[0], persistent=False)
            self.register_buffer(f"sphere_{level}", verts.clone(), persistent=False)

    def faces(self, level: int) -> torch.Tensor:
        return getattr(self, f"faces_{level}")

    def edges(self, level: int) -> torch.Tensor:
        return getattr(self, f"edges_{level}")

    def sphere(self, level: int) -> torch.Tensor:
        return getattr(self, f"sphere_{level}")

    def subdivide(self, level: int, *per_vertex: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Midpoint-subdivide per-vertex tensors of level ``level``.

        Args:
            per_vertex: tensors (B, V_L, C) (positions, features, ...).

        Returns:
            The same tensors at level ``level + 1``, (B, V_{L+1}, C).
        """
        e = self.edges(level)
        return tuple(torch.cat([x, (x[:, e[:, 0]] + x[:, e[:, 1]]) / 2], dim=1) for x in per_vertex)

    def batched_edge_index(self, level: int, batch: int) -> torch.Tensor:
        """(2, 2 * E_L * batch) directed edge index of ``batch`` copies of level ``level``, for torch_geometric."""
        return _batched_edge_index(self.edges(level), vertex_count(level), batch)

    def meshes(self, verts: torch.Tensor, level: int) -> "BatchMeshes":
        """The :class:`BatchMeshes` of ``verts`` (B, V_L, 3) with this level's faces."""
        return BatchMeshes(verts, self.faces(level), self.edges(level))


_ICO_VERTS0 = (
    (-0.5257, 0.8507, 0.0), (0.5257, 0.8507, 0.0), (-0.5257, -0.8507, 0.0), (0.5257, -0.8507, 0.0),
    (0.0, -0.5257, 0.8507), (0.0, 0.5257, 0.8507), (0.0, -0.5257, -0.8507), (0.0, 0.5257, -0.8507),
    (0.8507, 0.0, -0.5257), (0.8507, 0.0, 0.5257), (-0.8507, 0.0, -0.5257), (-0.8507, 0.0, 0.5257),
)
"""The 12 vertices of the level-0 ico-sphere, as pytorch3d's ``ico_sphere(0)`` has them (not renormalised)."""
_ICO_FACES0 = (
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
    (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
    (8, 6, 7), (9, 8, 1),
)
"""Its 20 faces, outward (counter-clockwise seen from outside), as pytorch3d's."""


def ico_sphere(level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit ico-sphere of ``level``: ``(verts (V, 3) float32, faces (F, 3) long)``, outward.

    The same vertices (in the same order), faces and edges as pytorch3d's ``ico_sphere(level)``:
    level 0 is its 12 vertices and 20 faces, and each level splits every face of the one below
    into four (:func:`_subdivide`), the vertices then put back on the unit sphere.
    """
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    verts = torch.tensor(_ICO_VERTS0, dtype=torch.float32)
    faces = torch.tensor(_ICO_FACES0, dtype=torch.long)
    for _ in range(level):
        verts, faces = _subdivide(verts, faces)
    return verts, faces


def _edges_and_face_edges(faces: torch.Tensor, num_verts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edges (E, 2), face_edges (F, 3))``: the unique edges, low index first and sorted (pytorch3d's
    ``edges_packed``), and each face's edges opposite its three vertices (``faces_packed_to_edges_packed``)."""
    v0, v1, v2 = faces.unbind(1)
    pairs = torch.cat([torch.stack([v1, v2], 1), torch.stack([v2, v0], 1), torch.stack([v0, v1], 1)]).sort(1).values
    keys, inverse = torch.unique(pairs[:, 0] * num_verts + pairs[:, 1], return_inverse=True)
    return torch.stack([keys // num_verts, keys % num_verts], 1), inverse.reshape(3, -1).t()


def _subdivide(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level finer: each edge's midpoint appended (edge order), each face split into four as pytorch3d's
    ``SubdivideMeshes`` splits it, and every vertex put back on the unit sphere.

    Args:
        verts: (V, 3) float; faces: (F, 3) long.

    Returns:
        ``(verts (V + E, 3), faces (4 F, 3))``.
    """
    edges, face_edges = _edges_and_face_edges(faces, len(verts))
    verts = torch.cat([verts, verts[edges].mean(dim=1)])
    mid = face_edges + (len(verts) - len(edges))  # (F, 3) the new vertex on the edge opposite each corner
    faces = torch.cat([torch.stack([faces[:, 0], mid[:, 2], mid[:, 1]], 1),
                       torch.stack([faces[:, 1], mid[:, 0], mid[:, 2]], 1),
                       torch.stack([faces[:, 2], mid[:, 1], mid[:, 0]], 1), mid])
    return verts / verts.norm(p=2, dim=1, keepdim=True), faces


@dataclass(frozen=True)
class BatchMeshes:
    """B triangle meshes of one topology: what the losses take (:mod:`recon_core.network.losses`).

    Attributes:
        verts: (B, V, 3) float vertices.
        faces: (F, 3) long faces, shared by the B meshes.
        known_edges: the faces' (E, 2) edges when the topology already holds them (:meth:`IcoTopology.meshes`);
            None: found from ``faces`` when asked.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    known_edges: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.verts.shape[0]

    @property
    def edges(self) -> torch.Tensor:
        """(E, 2) long unique undirected edges of ``faces``, low index first, sorted (pytorch3d's order)."""
        if self.known_edges is not None:
            return self.known_edges
        return _edges_and_face_edges(self.faces, self.verts.shape[1])[0]

    def to_pytorch3d(self):
        """The pytorch3d ``Meshes`` of the batch (for its rasteriser)."""
        from pytorch3d.structures import Meshes

        return Meshes(verts=list(self.verts), faces=[self.faces] * len(self))


class MeshGraph:
    """The graph of one triangle mesh of any topology, shared by a batch ``verts (B, V, 3)``.

    Plain data, not a module: it belongs to one input mesh, so nothing of it enters a
    model's ``state_dict``. Its methods take the ``level`` argument of :class:`IcoTopology`'s
    and ignore it, so it stands wherever an ico level does (:class:`Topology`).

    Args:
        faces: (F, 3) integer vertex indices, a tensor or an array; the graph's tensors live
            on its device (an array's: the CPU). Each face has three distinct vertices.
        num_verts: V; ``faces.max() + 1`` by default. A vertex in no face is isolated.

    Attributes:
        num_verts: V.

    Raises:
        ValueError: if ``faces`` is not a non-empty (F, 3) integer array of distinct indices
            in ``[0, num_verts)``.
    """

    def __init__(self, faces: torch.Tensor | np.ndarray, num_verts: int | None = None):
        faces = _validate_faces(faces, num_verts)
        self.num_verts = int(faces.max()) + 1 if num_verts is None else int(num_verts)
        self._faces = faces  # (F, 3)
        self._edges = _edges_and_face_edges(faces, self.num_verts)[0]  # (E, 2)

    def faces(self, level: int | None = None) -> torch.Tensor:
        """(F, 3) long faces; ``level`` is ignored."""
        return self._faces

    def edges(self, level: int | None = None) -> torch.Tensor:
        """(E, 2) long unique undirected edges, ``edges[:, 0] < edges[:, 1]``; ``level`` is ignored."""
        return self._edges

    def batched_edge_index(self, level: int | None, batch: int) -> torch.Tensor:
        """(2, 2 * E * batch) directed edge index of ``batch`` copies of the mesh; ``level`` is ignored."""
        return _batched_edge_index(self._edges, self.num_verts, batch)


def _validate_faces(faces: torch.Tensor | np.ndarray, num_verts: int | None) -> torch.Tensor:
    """A copy of ``faces`` as an (F, 3) long tensor, or ``ValueError`` naming what is wrong."""
    faces = torch.as_tensor(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        raise ValueError(f"faces must be a non-empty (F, 3) array, got shape {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"faces must hold integer vertex indices, got {faces.dtype}")
    faces = faces.to(torch.long, copy=True)  # the caller's array may change later; the graph must not
    if bool((faces < 0).any()):
        raise ValueError(f"face indices must be >= 0, got {int(faces.min())}")
    if num_verts is not None and bool((faces >= num_verts).any()):
        raise ValueError(f"face indices must be < num_verts = {num_verts}, got {int(faces.max())}")
    if bool(((faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])).any()):
        raise ValueError("every face must have three distinct vertices (remove degenerate faces first)")
    return faces


def _batched_edge_index(edges: torch.Tensor, num_verts: int, batch: int) -> torch.Tensor:
    """(2, 2 * E * batch) directed edge index of ``batch`` copies of a graph of ``num_verts`` vertices.

    Args:
        edges: (E, 2) long undirected edges.
    """
    both = torch.cat([edges, edges.flip(1)], dim=0).t()  # (2, 2E)
    offsets = torch.arange(batch, device=edges.device).repeat_interleave(both.shape[1]) * num_verts
    return both.repeat(1, batch) + offsets


def neighbour_mean(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean of each vertex's neighbours.

    Args:
        x: (B, V, C) per-vertex values.
        edges: (E, 2) undirected edges.

    Returns:
        (B, V, C).
    """
    total = torch.zeros_like(x)
    total.index_add_(1, edges[:, 0], x[:, edges[:, 1]])
    total.index_add_(1, edges[:, 1], x[:, edges[:, 0]])
    return total / _degree(edges, x.shape[1], x)


def mean_edge_length(verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean length of the edges incident to each vertex.

    Args:
        verts: (B, V, 3).
        edges: (E, 2).

    Returns:
        (B, V, 1).
    """
    b, v, _ = verts.shape
    length = (verts[:, edges[:, 0]] - verts[:, edges[:, 1]]).norm(dim=-1, keepdim=True)  # (B, E, 1)
    total = torch.zeros(b, v, 1, device=verts.device, dtype=verts.dtype)
    total.index_add_(1, edges[:, 0], length).index_add_(1, edges[:, 1], length)
    return total / _degree(edges, v, verts)


def _degree(edges: torch.Tensor, num_verts: int, like: torch.Tensor) -> torch.Tensor:
    """(1, V, 1) number of edges at each vertex (at least 1), in ``like``'s dtype and device."""
    degree = torch.bincount(edges.reshape(-1), minlength=num_verts).to(like.dtype).clamp_min(1)
    return degree.view(1, num_verts, 1)
