"""Mesh connectivity for the refiner: the ico-sphere family, and any triangle mesh.

All meshes of a batch share one topology, so a batch of meshes is simply
``verts (B, V, 3)`` with one ``faces (F, 3)`` tensor. Two kinds of topology exist, and the
refiner (:class:`recon_core.network.refiner.RefinerStage`) takes either through the :class:`Topology`
interface (``edges(level)``, ``batched_edge_index(level, batch)``):

* :class:`IcoTopology`, the fixed ico-sphere levels of the shipped models.
  :meth:`IcoTopology.meshes` builds the pytorch3d ``Meshes`` view of a batch when a loss or
  a renderer needs one. Level ``L`` has ``10 * 4**L + 2`` vertices (2: 162, 3: 642,
  4: 2,562, 5: 10,242). Subdividing level ``L`` appends one vertex per edge (the edge's
  midpoint) after the existing vertices, in the order of :meth:`IcoTopology.edges`; that is
  exactly how pytorch3d builds ``ico_sphere(L + 1)``, so the faces of the subdivided mesh
  equal those of ``ico_sphere(L + 1)``.
* :class:`MeshGraph`, the graph of one mesh of any topology (any genus, any number of
  components, any vertex count), such as the marching-tetrahedra meshes of
  ``coarse="occupancy"`` models (:func:`recon_core.mesh.occupancy.mesh_occupancy`). It has no
  levels: the ``level`` arguments of its methods are ignored.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "Topology",
    "IcoTopology",
    "MeshGraph",
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
        from pytorch3d.ops import SubdivideMeshes
        from pytorch3d.utils import ico_sphere

        from pytorch3d.structures import Meshes

        self.min_level, self.max_level = min_level, max_level
        mesh = ico_sphere(min_level)
        for level in range(min_level, max_level + 1):
            if level > min_level:  # ico_sphere(level)'s own step, without recomputing the levels below
                finer = SubdivideMeshes()(mesh)
                verts = finer.verts_list()[0]
                verts /= verts.norm(p=2, dim=1, keepdim=True)
                mesh = Meshes(verts=[verts], faces=[finer.faces_list()[0]])
            self.register_buffer(f"faces_{level}", mesh.faces_packed().clone(), persistent=False)
            self.register_buffer(f"edges_{level}", mesh.edges_packed().clone(), persistent=False)
            self.register_buffer(f"sphere_{level}", mesh.verts_packed().clone(), persistent=False)

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

    def meshes(self, verts: torch.Tensor, level: int):
        """pytorch3d ``Meshes`` of ``verts`` (B, V_L, 3) with this level's faces."""
        from pytorch3d.structures import Meshes

        faces = self.faces(level)
        return Meshes(verts=list(verts), faces=[faces] * verts.shape[0])


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
        pairs = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).sort(dim=1).values  # (3F, 2), low index first
        self._faces = faces  # (F, 3)
        keys = torch.unique(pairs[:, 0] * self.num_verts + pairs[:, 1])  # sorted: rows in lexicographic order
        self._edges = torch.stack([keys // self.num_verts, keys % self.num_verts], dim=1)  # (E, 2)

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
