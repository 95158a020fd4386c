"""Trigger Rally vehicles: ``vehicles/<name>/<name>.vehicle`` (XML) inside ``data.zip``.

A vehicle's ``part`` names a body OBJ and its ``scale``; ``genparams`` names the wheel
OBJ and ``wheelscale``; each ``wheel`` has a ``pos`` in the part frame. The body alone
has no wheels, so the reader assembles body and wheels into one mesh in the part frame
(metres, +Z up, front toward +Y: the steering wheels sit at +Y).
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
import zipfile

import numpy as np

from training.readers.mesh import RawMesh, ReaderError, concatenate
from training.readers.obj import parse_obj

__all__ = ["list_vehicles", "read_vehicle"]


def _vec(text: str) -> np.ndarray:
    return np.array([float(x) for x in text.split(",")])


def list_vehicles(zip_path: str) -> list[str]:
    """Paths (inside the zip) of all ``.vehicle`` files of type ``car``."""
    out = []
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("vehicles/") and name.endswith(".vehicle"):
                root = ET.fromstring(zf.read(name))
                if root.get("type", "car") == "car":
                    out.append(name)
    return out


def read_vehicle(zip_path: str, vehicle: str) -> RawMesh:
    """Assemble a vehicle's body and wheels into one mesh (Trigger Rally's frame)."""
    folder = posixpath.dirname(vehicle)
    with zipfile.ZipFile(zip_path) as zf:
        root = ET.fromstring(zf.read(vehicle))
        gen = root.find("genparams")
        part = root.find("part")
        if part is None or part.get("model") is None:
            raise ReaderError("vehicle has no part with a model")
        body = parse_obj(zf.read(posixpath.join(folder, part.get("model"))).decode("latin-1"))
        pieces = [RawMesh(body.vertices * float(part.get("scale", 1.0)), body.faces)]
        wheel_model = gen.get("wheelmodel") if gen is not None else None
        if wheel_model:
            wheel = parse_obj(zf.read(posixpath.join(folder, wheel_model)).decode("latin-1"))
            wheel_scale = float(gen.get("wheelscale", 1.0))  # times each wheel's radius, as the game draws it
            for w in part.findall("wheel"):
                scale = wheel_scale * float(w.get("radius", 1.0))
                pieces.append(RawMesh(wheel.vertices * scale + _vec(w.get("pos")), wheel.faces))
    return concatenate(pieces)
