"""Finds the models of each source package and loads one of them: the build's only link to file layouts.

:func:`discover` lists :class:`Candidate` records (already labelled by :mod:`.rules`,
nothing loaded yet); :func:`load_candidate` reads one into a :class:`RawMesh` in the
ShapeNet frame (see :mod:`.frames`), not yet normalised.
"""

from __future__ import annotations


import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon_core.network.categories import CATEGORIES
from training.readers.ac3d import read_ac3d
from training.readers.frames import to_shapenet_frame
from training.readers.mesh import RawMesh, ReaderError
from training.readers.obj import read_obj
from training.readers.rules import Label, classify_flightgear, classify_sh3f, label_for
from training.readers.sh3f import read_catalog, read_sh3f_model
from training.readers.trigger_rally import list_vehicles, read_vehicle

__all__ = ["Candidate", "PACKAGES", "discover", "discover_shapenet", "load_candidate"]

log = logging.getLogger(__name__)

PACKAGES = ("sweethome3d-furniture", "flightgear-data-models", "flightgear-data-ai", "trigger-rally-data")
"""The Debian packages the data set is built from."""

_SH3F_DIR = "usr/share/sweethome3d/furniture"
_FG_DIR = "usr/share/games/flightgear"
_TRIGGER_ZIP = "usr/share/games/trigger-rally/data.zip"
_FG_LICENCE = "GPL-2+ (FlightGear data, see usr/share/doc/{pkg}/copyright)"
_TRIGGER_LICENCE = "GPL-2+ / CC (Trigger Rally data, see usr/share/doc/trigger-rally-data/copyright)"

@dataclass(frozen=True)
class Candidate:
    """A model found in a source, labelled but not loaded."""

    kind: str
    """Reader and frame: ``"sh3f"``, ``"ac3d"``, ``"trigger-rally"`` or ``"shapenet"``."""
    package: str
    path: str
    """File on disk (for ``sh3f`` and ``trigger-rally``: the zip)."""
    inner: str
    """Path inside the zip, or ``""``."""
    original_path: str
    """Human-readable origin recorded in the manifest."""
    name: str
    label: Label
    licence: str
    creator: str
    group: str
    """Models with the same group never straddle splits (variants, liveries, recolours)."""
    model_rotation: tuple[float, ...] | None = None
    size_cm: tuple[float, float, float] | None = None
    model_id: str = ""
    """Fixed id (ShapeNet input keeps its own); empty: derived from the origin."""


def _sh3f_candidates(root: Path) -> list[Candidate]:
    out = []
    for catalog in sorted((root / _SH3F_DIR).glob("*.sh3f")):
        try:
            entries = read_catalog(str(catalog))
        except (ReaderError, OSError, ValueError) as exc:
            log.warning("skipping catalog %s: %s", catalog, exc)
            continue
        for e in entries:
            label = classify_sh3f(e.name, e.category)
            if label is None:
                continue
            # Pieces sharing one model file are recolours; otherwise one group per model folder.
            group = f"sh3f:{catalog.stem}:{os.path.dirname(e.model) or e.model}"
            out.append(
                Candidate(
                    kind="sh3f",
                    package="sweethome3d-furniture",
                    path=str(catalog),
                    inner=e.model,
                    original_path=f"{_SH3F_DIR}/{catalog.name}!/{e.model}",
                    name=e.name,
                    label=label,
                    licence=e.licence,
                    creator=e.creator,
                    group=group,
                    model_rotation=e.model_rotation,
                    size_cm=e.size_cm,
                )
            )
    return out


def _flightgear_group(rel: str) -> str:
    parts = rel.split("/")
    if rel.lower().startswith("ai/aircraft/"):
        return "fg:ai/aircraft/" + parts[2].lower()  # one aircraft folder: its liveries and variants
    stem = re.sub(r"[^a-z]", "", Path(rel).stem.lower().replace("high-detail", ""))
    return "fg:" + stem  # e.g. CG-57-high-detail/CG-57.ac and CG-57/CG57.ac -> "cg"


def _flightgear_candidates(root: Path, package: str) -> list[Candidate]:
    base = root / _FG_DIR
    out = []
    for path in sorted(base.rglob("*.ac")):
        rel = path.relative_to(base).as_posix()
        label = classify_flightgear(rel)
        if label is None:
            continue
        out.append(
            Candidate(
                kind="ac3d",
                package=package,
                path=str(path),
                inner="",
                original_path=f"{_FG_DIR}/{rel}",
                name=Path(rel).stem,
                label=label,
                licence=_FG_LICENCE.format(pkg=package),
                creator="FlightGear contributors",
                group=_flightgear_group(rel),
            )
        )
    return out


def _trigger_candidates(root: Path) -> list[Candidate]:
    zip_path = root / _TRIGGER_ZIP
    if not zip_path.exists():
        return []
    out = []
    for vehicle in list_vehicles(str(zip_path)):
        stem = Path(vehicle).stem  # e.g. fox_wrc: body "fox" in class "wrc"
        out.append(
            Candidate(
                kind="trigger-rally",
                package="trigger-rally-data",
                path=str(zip_path),
                inner=vehicle,
                original_path=f"{_TRIGGER_ZIP}!/{vehicle}",
                name=stem,
                label=label_for("car"),
                licence=_TRIGGER_LICENCE,
                creator="Trigger Rally contributors",
                group="trigger:" + stem.split("_")[0],
            )
        )
    return out


def discover(extracted: Path) -> list[Candidate]:
    """All labelled models of the extracted packages under ``extracted/<package>/``."""
    out: list[Candidate] = []
    if (extracted / "sweethome3d-furniture").is_dir():
        out += _sh3f_candidates(extracted / "sweethome3d-furniture")
    for pkg in ("flightgear-data-models", "flightgear-data-ai"):
        if (extracted / pkg).is_dir():
            out += _flightgear_candidates(extracted / pkg, pkg)
    if (extracted / "trigger-rally-data").is_dir():
        out += _trigger_candidates(extracted / "trigger-rally-data")
    return out


def discover_shapenet(root: Path) -> list[Candidate]:
    """Models of a ShapeNetCore v1 (``<synset>/<id>/model.obj``) or v2 (``.../models/model_normalized.obj``) folder.

    Only the 13 categories are taken; their ids are kept.
    """
    names = {c.synset: c.name for c in CATEGORIES}
    out = []
    for synset_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in names):
        for model_dir in sorted(p for p in synset_dir.iterdir() if p.is_dir()):
            for rel in ("models/model_normalized.obj", "model.obj"):
                if (model_dir / rel).exists():
                    out.append(
                        Candidate(
                            kind="shapenet",
                            package="shapenet",
                            path=str(model_dir / rel),
                            inner="",
                            original_path=f"{synset_dir.name}/{model_dir.name}/{rel}",
                            name=model_dir.name,
                            label=label_for(names[synset_dir.name]),
                            licence="ShapeNet terms of use",
                            creator="ShapeNet",
                            group="shapenet:" + model_dir.name,
                            model_id=model_dir.name,
                        )
                    )
                    break
    return out


def load_candidate(c: Candidate) -> RawMesh:
    """Read a candidate and rotate it into the ShapeNet frame (raises :class:`ReaderError` and ``OSError``)."""
    if c.kind == "sh3f":
        mesh = read_sh3f_model(c.path, c.inner, c.model_rotation)
        if c.size_cm and min(c.size_cm) > 0 and mesh.vertices.size:
            # Sweet Home 3D stretches each model to the catalog's width (x), height (y), depth (z).
            ext = np.ptp(mesh.vertices, axis=0)
            target = np.array([c.size_cm[0], c.size_cm[2], c.size_cm[1]])
            if np.all(ext > 0):
                mesh = RawMesh(mesh.vertices * (target / ext), mesh.faces)
    elif c.kind == "ac3d":
        mesh = read_ac3d(c.path)
    elif c.kind == "trigger-rally":
        mesh = read_vehicle(c.path, c.inner)
    elif c.kind == "shapenet":
        mesh = read_obj(c.path)
    else:
        raise ReaderError(f"unknown source kind {c.kind!r}")
    return RawMesh(to_shapenet_frame(mesh.vertices, c.kind), mesh.faces)


