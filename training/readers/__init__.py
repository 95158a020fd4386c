"""Readers of the source packages (AC3D, OBJ, Sweet Home 3D catalogs, Trigger Rally vehicles) and the rules that label them."""

from training.readers.ac3d import parse_ac3d, read_ac3d
from training.readers.frames import SOURCE_TO_SHAPENET, to_shapenet_frame
from training.readers.mesh import RawMesh, ReaderError
from training.readers.obj import parse_obj, read_obj
from training.readers.rules import EXTRA_SYNSETS, Label, classify_flightgear, classify_sh3f, label_for
from training.readers.sh3f import FurnitureEntry, read_catalog, read_sh3f_model
from training.readers.sources import PACKAGES, Candidate, discover, discover_shapenet, load_candidate

__all__ = [
    "parse_ac3d",
    "read_ac3d",
    "SOURCE_TO_SHAPENET",
    "to_shapenet_frame",
    "RawMesh",
    "ReaderError",
    "parse_obj",
    "read_obj",
    "EXTRA_SYNSETS",
    "Label",
    "classify_flightgear",
    "classify_sh3f",
    "label_for",
    "FurnitureEntry",
    "read_catalog",
    "read_sh3f_model",
    "PACKAGES",
    "Candidate",
    "discover",
    "discover_shapenet",
    "load_candidate",
]
