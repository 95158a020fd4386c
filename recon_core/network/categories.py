"""The 13 ShapeNet categories the model knows, by synset id and by name.

The order of :data:`CATEGORIES` is the order of the model's category logits and of
its per-category parameters (category-conditional normalisation, templates). Never
reorder it: shipped weights depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Category", "CATEGORIES", "NUM_CATEGORIES", "SYNSET_INDEX", "category_index", "category_by_name"]


@dataclass(frozen=True)
class Category:
    """One ShapeNetCore category."""

    synset: str
    """WordNet synset id, the folder name in the ShapeNetCore layout (e.g. ``"03001627"``)."""
    name: str
    """Short lower-case name used on the command line (e.g. ``"chair"``)."""


CATEGORIES: tuple[Category, ...] = (
    Category("02691156", "airplane"),
    Category("02828884", "bench"),
    Category("02933112", "cabinet"),
    Category("02958343", "car"),
    Category("03001627", "chair"),
    Category("03211117", "display"),
    Category("03636649", "lamp"),
    Category("03691459", "loudspeaker"),
    Category("04090263", "rifle"),
    Category("04256520", "sofa"),
    Category("04379232", "table"),
    Category("04401088", "telephone"),
    Category("04530566", "watercraft"),
)
NUM_CATEGORIES = len(CATEGORIES)

_BY_NAME = {c.name: c for c in CATEGORIES}
SYNSET_INDEX = MappingProxyType({c.synset: i for i, c in enumerate(CATEGORIES)})
"""Each category's index in :data:`CATEGORIES` by its synset id (the data's folders; ``.get`` for the extra pool's)."""


def category_by_name(name: str) -> Category:
    """Look a category up by its name (case-insensitive); raises ``ValueError`` naming the choices."""
    key = name.strip().lower()
    if key not in _BY_NAME:
        choices = ", ".join(c.name for c in CATEGORIES)
        raise ValueError(f"Unknown category {name!r}: choose one of {choices}, or leave it out for automatic.")
    return _BY_NAME[key]


def category_index(name_or_synset: str) -> int:
    """Index of a category (by name or synset id) in :data:`CATEGORIES`."""
    if name_or_synset in SYNSET_INDEX:
        return SYNSET_INDEX[name_or_synset]
    return CATEGORIES.index(category_by_name(name_or_synset))
