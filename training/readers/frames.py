"""Per-source rotations into the ShapeNetCore v2 frame (+Y up, front facing -Z); see :mod:`recon_core.mesh.camera`.

Each matrix ``R`` maps a source point ``p`` (after the reader's own transforms) to
``R @ p``. How each was checked on the real packages:

* ``ac3d`` (FlightGear): +Y up, nose/bow toward -X. Checked on c172p, A320, 744,
  Spitfire and F-18: the long axis is X and the highest vertices (the fin) lie on +X;
  on the Tanker, the bridge (highest part of a tanker, at its stern) lies on +X.
  Rotation: -X -> -Z, i.e. 90 degrees about +Y.
* ``sh3f`` (Sweet Home 3D, after the catalog's ``modelRotation``): +Y up, front toward
  +Z. Checked on chairs and armchairs of three catalogs: the vertices of the top quarter
  (the backrest) have mean z well below the box centre. Rotation: 180 degrees about +Y.
* ``trigger-rally``: +Z up, front toward +Y (the steering wheels, ``steer > 0`` in the
  ``.vehicle`` file, sit at +Y). Rotation: +Z -> +Y, +Y -> -Z.
* ``shapenet``: already in the frame.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SOURCE_TO_SHAPENET", "to_shapenet_frame"]

SOURCE_TO_SHAPENET: dict[str, np.ndarray] = {
    "ac3d": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    "sh3f": np.diag([-1.0, 1.0, -1.0]),
    "trigger-rally": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "shapenet": np.eye(3),
}
"""(3, 3) proper rotations, by source kind."""


def to_shapenet_frame(vertices: np.ndarray, source: str) -> np.ndarray:
    """Rotate (V, 3) vertices of a source kind into the ShapeNet frame; raises ``ValueError`` for an unknown kind."""
    if source not in SOURCE_TO_SHAPENET:
        raise ValueError(f"Unknown source kind {source!r}: expected one of {sorted(SOURCE_TO_SHAPENET)}")
    return vertices @ SOURCE_TO_SHAPENET[source].T
