"""The reviewed rules that map source models to ShapeNet categories, in one table per source.

A rule is a regular expression searched in a lower-cased key (the furniture name for
Sweet Home 3D, the path inside the package for FlightGear); the first matching rule
wins. Its label is one of the 13 categories of :mod:`recon_core.network.categories`, an
``EXTRA_SYNSETS`` label (kept in a separate pool, outside the 13), or ``None`` to leave
the model out. A model no rule matches is left out: nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recon_core.network.categories import CATEGORIES

__all__ = ["Label", "Rule", "EXTRA_SYNSETS", "SH3F_RULES", "FLIGHTGEAR_RULES", "label_for", "classify_sh3f", "classify_flightgear"]

EXTRA_SYNSETS: dict[str, str] = {
    "bed": "02818832",
    "bookshelf": "02871439",
    "bottle": "02876657",
    "bowl": "02880940",
    "bus": "02924116",
    "jar": "03593526",
    "laptop": "03642806",
    "motorcycle": "03790512",
    "mug": "03797390",
    "piano": "03928116",
    "stove": "04330267",
    "washer": "04554684",
    "microwave": "03761084",
    "clock": "03046257",
    "bathtub": "02808440",
    "faucet": "03325088",
    "mailbox": "03710193",
    "train": "04468005",
    "guitar": "03467517",
    "helmet": "03513137",
    "skateboard": "04225987",
    "camera": "02942699",
    "ashcan": "02747177",
    "printer": "04004475",
}
"""ShapeNetCore synsets of the extra pool (useful objects outside the 13 categories)."""

_CORE_SYNSETS = {c.name: c.synset for c in CATEGORIES}


@dataclass(frozen=True)
class Label:
    """Where a model goes: a category name, its synset id, and its pool (``"core"`` or ``"extra"``)."""

    name: str
    synset: str
    pool: str


def label_for(name: str) -> Label:
    """The :class:`Label` of a core category or extra-pool name; raises ``ValueError`` for others."""
    if name in _CORE_SYNSETS:
        return Label(name, _CORE_SYNSETS[name], "core")
    if name in EXTRA_SYNSETS:
        return Label(name, EXTRA_SYNSETS[name], "extra")
    raise ValueError(f"{name!r} is neither one of the 13 categories nor an extra-pool label")


@dataclass(frozen=True)
class Rule:
    """``pattern`` (regex, searched in the lower-cased key) -> ``label`` (``None``: leave out)."""

    pattern: str
    label: str | None
    sh3f_categories: tuple[str, ...] = ()
    """If not empty, the rule applies only to Sweet Home 3D pieces of these catalog categories."""


SH3F_RULES: tuple[Rule, ...] = (
    # Leave-outs first: names that contain a category word but are something else.
    Rule(r"wheelchair|high chair|chair lift|table tennis|table fan|football table|pool table|"
         r"tv remote|remote control|headphone|tablet|screen door|intercom|car model|toy|cup cake|"
         r"lamp artwork|candle|flashlight|fluorescent strip|abdominal bench|workbench", None),
    Rule(r"\bimac\b", "display"),
    Rule(r"iphone", "telephone"),
    Rule(r"ibook", "laptop"),
    Rule(r"\blamp|lamppost|lantern|chandelier|\blight\b|\blights\b|spotlight", "lamp", ("Lights",)),
    Rule(r"\blamp\b|lamppost", "lamp"),
    Rule(r"television cabinet|tv cabinet|tv stand|tv unit|tv table", "cabinet"),
    Rule(r"bedside table|night ?stand|nightstand", "cabinet"),
    Rule(r"\bsofa|\bcouch|\bsettee|loveseat|chesterfield", "sofa"),
    Rule(r"armchair|\bchair\b|chairs\b|rocking chair|deck ?chair|recliner|pool lounge", "chair"),
    Rule(r"\bbench\b", "bench"),
    Rule(r"\btable\b|\bdesk\b|coffee table|dining table|side table", "table"),
    Rule(r"cabinet|wardrobe|cupboard|dresser|sideboard|chest of drawers|drawers|commode|buffet|locker|armoire|vanity", "cabinet"),
    Rule(r"\btv\b|television|monitor|computer screen|\bscreen\b", "display"),
    Rule(r"speaker|loudspeaker|subwoofer", "loudspeaker"),
    Rule(r"\bphone\b|telephone|smartphone|cell ?phone", "telephone"),
    Rule(r"\bsedan\b|\bsuv\b|smart car|beetle|ford focus|seat leon|renault|peugeot|chevrolet|\bcar\b", "car", ("Vehicles",)),
    Rule(r"biplane|airplane|aeroplane", "airplane"),
    Rule(r"rowboat|\bboat\b|canoe|kayak|\byacht|\bship\b", "watercraft"),
    # Extra pool.
    Rule(r"\bcrib\b|\bbed\b|\bbunk|mezzanine bed|child bed|iron bed|hospital bed", "bed"),
    Rule(r"bookcase|bookshelf|shelves$", "bookshelf"),
    Rule(r"bottle", "bottle"),
    Rule(r"\bbowl\b", "bowl"),
    Rule(r"\bvase\b|\bjar\b", "jar"),
    Rule(r"laptop", "laptop"),
    Rule(r"piano", "piano"),
    Rule(r"\bstove\b|cooker", "stove"),
    Rule(r"washing machine", "washer"),
    Rule(r"microwave", "microwave"),
    Rule(r"\bclock\b", "clock"),
    Rule(r"bath ?tub|island bath|^bath$", "bathtub"),
    Rule(r"guitar", "guitar"),
    Rule(r"helmet", "helmet"),
    Rule(r"skateboard", "skateboard"),
    Rule(r"\bcamera\b", "camera"),
    Rule(r"dustbin|trash ?can|recycling bin", "ashcan"),
    Rule(r"printer", "printer"),
    Rule(r"faucet", "faucet"),
    Rule(r"mailbox|letters box", "mailbox"),
    Rule(r"\bmug\b|coffee cup|\bcup\b", "mug"),
    Rule(r"\bbus\b", "bus", ("Vehicles",)),
    Rule(r"motorbike|motorcycle|scooter|yamaha", "motorcycle", ("Vehicles",)),
)
"""Sweet Home 3D: key = furniture name."""

FLIGHTGEAR_RULES: tuple[Rule, ...] = (
    # Parts and effects shipped beside the aircraft, not whole models.
    Rule(r"/lights?/|(flash|flare|beacon|strobe|navlight|nav[lr]|navback|toggle-white|light-cone|lightcone"
         r"|whitelight\d*|greenlight|redlight|landinglights|taxi|lights|exhaust|droptank|tank|wheels|probe"
         r"|refueling|banner|bomb-\d+|ssme|omspods)\.ac$", None),
    Rule(r"^ai/aircraft/(balloon|spaceshuttle|ccx)/", None),  # balloons, the Shuttle, a bomb
    Rule(r"^ai/aircraft/ferry/", "watercraft"),
    Rule(r"^ai/aircraft/", "airplane"),
    Rule(r"^models/maritime/(civilian|military)/", "watercraft"),
    Rule(r"^models/geometry/(kc135|kc-130|a4-f|ka6-d)/|^models/geometry/glider\.ac$", "airplane"),
    Rule(r"^models/geometry/(sailboat1|ferry|sanantonio)/|^models/geometry/(container_carrier|saratoga)\.ac$"
         r"|^models/geometry/nimitz/(nimitz|truman|vinson)\.ac$", "watercraft"),
    Rule(r"^models/military/humvee", "car"),
    Rule(r"^models/transport/(ice3|class_66|diesel|locomotive|lner|wagon|tender)", "train"),
    Rule(r"^models/transport/110bus", "bus"),
    # Models/Aircraft holds helicopters (H-60, dauphin), a strobe and a pilot: left out by default.
)
"""FlightGear: key = path below ``usr/share/games/flightgear/``."""


def _apply(rules: tuple[Rule, ...], key: str, sh3f_category: str = "") -> Label | None:
    key = key.lower()
    for rule in rules:
        if rule.sh3f_categories and sh3f_category not in rule.sh3f_categories:
            continue
        if re.search(rule.pattern, key):
            return None if rule.label is None else label_for(rule.label)
    return None


def classify_sh3f(name: str, category: str) -> Label | None:
    """Label of a Sweet Home 3D piece from its name and catalog category, or ``None`` (left out)."""
    return _apply(SH3F_RULES, name, category)


def classify_flightgear(rel_path: str) -> Label | None:
    """Label of a FlightGear ``.ac`` file from its path below the FlightGear data root, or ``None``."""
    return _apply(FLIGHTGEAR_RULES, rel_path)
