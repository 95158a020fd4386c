"""Geometry-only meshes read from source files: a plain vertex array and a triangle array."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RawMesh", "ReaderError", "fan_triangulate", "concatenate"]


class ReaderError(ValueError):
    """A source file could not be read into a mesh (the message says why)."""


@dataclass
class RawMesh:
    """A triangle soup, in the source's own frame and units."""

    vertices: np.ndarray
    """(V, 3) float64 positions."""
    faces: np.ndarray
    """(F, 3) int64 vertex indices."""


def fan_triangulate(polygon: list[int]) -> list[tuple[int, int, int]]:
    """Split a convex-ish polygon (vertex indices, in order) into a triangle fan around its first vertex."""
    return [(polygon[0], polygon[i], polygon[i + 1]) for i in range(1, len(polygon) - 1)]


def concatenate(meshes: list[RawMesh]) -> RawMesh:
    """Join meshes into one, offsetting face indices."""
    verts, faces, offset = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + offset)
        offset += m.vertices.shape[0]
    if not verts:
        return RawMesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64))
    return RawMesh(np.concatenate(verts).astype(np.float64), np.concatenate(faces).astype(np.int64))
