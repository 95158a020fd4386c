"""Wavefront OBJ geometry reader: ``v`` and ``f`` records only (materials, normals, UVs ignored)."""

from __future__ import annotations

import numpy as np

from training.readers.mesh import RawMesh, ReaderError, fan_triangulate

__all__ = ["parse_obj", "read_obj"]


def parse_obj(text: str) -> RawMesh:
    """Parse OBJ text into a triangle mesh; polygons are fan-triangulated, lines and points skipped.

    Face indices may be ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn``, 1-based or negative (relative).
    """
    verts: list[tuple[float, float, float]] = []
    tris: list[tuple[int, int, int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("v "):
            parts = line.split()
            if len(parts) < 4:
                raise ReaderError(f"line {lineno}: vertex with fewer than 3 coordinates")
            verts.append((float(parts[1]), float(parts[2]), float(parts[3])))
        elif line.startswith("f ") or line.startswith("f\t"):
            idx = []
            for tok in line.split()[1:]:
                i = int(tok.split("/", 1)[0])
                idx.append(i - 1 if i > 0 else len(verts) + i)
            if len(idx) >= 3:
                tris.extend(fan_triangulate(idx))
    vertices = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ReaderError("face index out of range")
    return RawMesh(vertices, faces)


def read_obj(path: str) -> RawMesh:
    """Read an OBJ file from disk."""
    with open(path, encoding="latin-1") as f:
        return parse_obj(f.read())
