"""AC3D (``.ac``) geometry reader, used by FlightGear models.

Follows the AC3D file format spec: an ``OBJECT`` has optional ``rot`` (9 numbers, a
row-major 3x3 matrix) and ``loc`` (3 numbers); its vertices are mapped by
``p_parent = rot @ p + loc``, and the ``kids`` that follow inherit the whole chain of
their ancestors' transforms. Surfaces are ``SURF`` flags whose low 4 bits give the type:
0 polygon (kept, fan-triangulated), 1 closed line and 2 line (skipped, no area).
"""

from __future__ import annotations

import numpy as np

from training.readers.mesh import RawMesh, ReaderError, concatenate, fan_triangulate

__all__ = ["parse_ac3d", "read_ac3d", "SURF_POLYGON"]

SURF_POLYGON = 0
"""Surface type (``SURF`` flags & 0xF) of a filled polygon; the other types are lines."""


class _Lines:
    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.i = 0

    def next(self) -> str | None:
        while self.i < len(self.lines):
            line = self.lines[self.i].strip()
            self.i += 1
            if line:
                return line
        return None

    def skip_chars(self, n: int) -> None:
        """Skip ``n`` characters of a ``data`` block (which may span several lines)."""
        consumed = 0
        while consumed < n and self.i < len(self.lines):
            consumed += len(self.lines[self.i]) + 1
            self.i += 1


def _parse_object(lines: _Lines, rot: np.ndarray, loc: np.ndarray, out: list[RawMesh]) -> None:
    """Parse one OBJECT (its header line already read) and its kids, appending world-space meshes."""
    R = np.eye(3)
    t = np.zeros(3)
    verts = np.zeros((0, 3))
    tris: list[tuple[int, int, int]] = []
    while True:
        line = lines.next()
        if line is None:
            raise ReaderError("unexpected end of file inside OBJECT")
        key, _, rest = line.partition(" ")
        if key == "rot":
            R = np.array([float(x) for x in rest.split()[:9]]).reshape(3, 3)
        elif key == "loc":
            t = np.array([float(x) for x in rest.split()[:3]])
        elif key == "data":
            lines.skip_chars(int(rest.split()[0]))
        elif key == "numvert":
            n = int(rest.split()[0])
            rows = []
            for _ in range(n):
                parts = lines.next().split()
                rows.append((float(parts[0]), float(parts[1]), float(parts[2])))
            verts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        elif key == "numsurf":
            for _ in range(int(rest.split()[0])):
                _parse_surface(lines, len(verts), tris)
        elif key == "kids":
            world_R = rot @ R
            world_t = rot @ t + loc
            if tris:
                faces = np.asarray(tris, dtype=np.int64)
                out.append(RawMesh(verts @ world_R.T + world_t, faces))
            for _ in range(int(rest.split()[0])):
                header = lines.next()
                if header is None:
                    return  # some exporters declare more kids than they write; keep what was read
                if not header.startswith("OBJECT"):
                    raise ReaderError(f"expected OBJECT, got {header!r}")
                _parse_object(lines, world_R, world_t, out)
            return
        # name, texture, texrep, texoff, url, crease, subdiv, hidden, locked, folded: not geometry


def _parse_surface(lines: _Lines, num_verts: int, tris: list[tuple[int, int, int]]) -> None:
    line = lines.next()
    if line is None or not line.startswith("SURF"):
        raise ReaderError(f"expected SURF, got {line!r}")
    surf_type = int(line.split()[1], 0) & 0xF
    refs: list[int] = []
    while True:
        line = lines.next()
        if line is None:
            raise ReaderError("unexpected end of file inside SURF")
        if line.startswith("mat"):
            continue
        if line.startswith("refs"):
            for _ in range(int(line.split()[1])):
                refs.append(int(lines.next().split()[0]))
            break
        raise ReaderError(f"unexpected line in SURF: {line!r}")
    if surf_type != SURF_POLYGON or len(refs) < 3:
        return
    if max(refs) >= num_verts or min(refs) < 0:
        raise ReaderError("surface refers to a vertex out of range")
    tris.extend(fan_triangulate(refs))


def parse_ac3d(text: str) -> RawMesh:
    """Parse AC3D text into one triangle mesh in the file's (root) frame."""
    lines = _Lines(text)
    header = lines.next()
    if header is None or not header.startswith("AC3D"):
        raise ReaderError("not an AC3D file (no AC3D header)")
    out: list[RawMesh] = []
    while (line := lines.next()) is not None:
        if line.startswith("MATERIAL"):
            continue
        if line.startswith("OBJECT"):
            _parse_object(lines, np.eye(3), np.zeros(3), out)
        else:
            raise ReaderError(f"unexpected top-level line {line!r}")
    return concatenate(out)


def read_ac3d(path: str) -> RawMesh:
    """Read an ``.ac`` file from disk."""
    with open(path, encoding="latin-1") as f:
        return parse_ac3d(f.read())
