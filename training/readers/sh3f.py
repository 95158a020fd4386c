"""Sweet Home 3D furniture catalogs (``.sh3f``): a zip of models plus ``PluginFurnitureCatalog.properties``.

Each entry ``key#N=value`` of the properties file describes piece ``N``: ``name``,
``category``, ``model`` (a path inside the zip), ``width``/``depth``/``height`` (cm),
``creator``, optional ``modelRotation`` (9 numbers, row-major 3x3, applied to the
model's vertices to bring it into Sweet Home 3D's frame) and optional ``license``;
the catalog-wide ``license`` applies when a piece has none.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass

import numpy as np

from training.readers.mesh import RawMesh, ReaderError
from training.readers.obj import parse_obj

__all__ = ["FurnitureEntry", "read_catalog", "read_sh3f_model"]

_KEY = re.compile(r"^([A-Za-z]+)#(\d+)$")


@dataclass(frozen=True)
class FurnitureEntry:
    """One piece of furniture of a catalog."""

    index: int
    name: str
    category: str
    model: str
    """Path of the model inside the zip, without the leading slash."""
    size_cm: tuple[float, float, float]
    """(width, depth, height) in centimetres."""
    creator: str
    licence: str
    model_rotation: tuple[float, ...] | None
    """Row-major 3x3 rotation, or ``None`` for the identity."""


def _parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` subset: ``key=value`` lines, ``#``/``!`` comments, backslash line continuation."""
    props: dict[str, str] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.lstrip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def read_catalog(path: str) -> list[FurnitureEntry]:
    """List the pieces of a ``.sh3f`` catalog (nothing is loaded yet)."""
    with zipfile.ZipFile(path) as zf:
        try:
            text = zf.read("PluginFurnitureCatalog.properties").decode("latin-1")
        except KeyError as exc:
            raise ReaderError(f"{path}: no PluginFurnitureCatalog.properties") from exc
    props = _parse_properties(text)
    catalog_licence = props.get("license", "")
    fields: dict[int, dict[str, str]] = {}
    for key, value in props.items():
        m = _KEY.match(key)
        if m:
            fields.setdefault(int(m.group(2)), {})[m.group(1)] = value
    entries = []
    for index in sorted(fields):
        f = fields[index]
        if "model" not in f:
            continue
        rotation = None
        if f.get("modelRotation"):
            rotation = tuple(float(x) for x in f["modelRotation"].split())
            if len(rotation) != 9:
                rotation = None
        entries.append(
            FurnitureEntry(
                index=index,
                name=f.get("name", ""),
                category=f.get("category", ""),
                model=f["model"].lstrip("/"),
                size_cm=(float(f.get("width", 0)), float(f.get("depth", 0)), float(f.get("height", 0))),
                creator=f.get("creator", ""),
                licence=f.get("license", catalog_licence),
                model_rotation=rotation,
            )
        )
    return entries


def read_sh3f_model(path: str, inner: str, model_rotation: tuple[float, ...] | None = None) -> RawMesh:
    """Load one model of a catalog (OBJ only) and apply its ``modelRotation``."""
    if not inner.lower().endswith(".obj"):
        raise ReaderError(f"unsupported model format {inner!r} (only OBJ is read)")
    with zipfile.ZipFile(path) as zf:
        try:
            text = zf.read(inner).decode("latin-1")
        except KeyError as exc:
            raise ReaderError(f"{inner!r} is not in the catalog") from exc
    mesh = parse_obj(text)
    if model_rotation is not None:
        R = np.asarray(model_rotation, dtype=np.float64).reshape(3, 3)
        mesh = RawMesh(mesh.vertices @ R.T, mesh.faces)
    return mesh
