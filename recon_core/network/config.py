"""Typed, frozen configuration of the network, loadable from YAML/JSON and overridable from the command line.

Every field is read by :func:`recon_core.network.model.build_model` or the code it calls.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["ModelConfig", "VERTEX_SCHEDULES", "load_config_dict", "apply_overrides", "from_dict"]

# Output vertex count -> number of midpoint subdivisions before each refiner stage,
# starting from an ico-sphere of level 2 (162 vertices).
VERTEX_SCHEDULES: dict[int, tuple[int, ...]] = {
    162: (0, 0, 0),
    642: (0, 1, 0),
    2562: (0, 1, 1),
    10242: (0, 1, 2),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the reconstruction network."""

    backbone: str = "resnet50"
    """ResNet name (recon_core.network.backbone, parameter names as torchvision's): resnet18, resnet34 or resnet50."""
    backbone_weights: str | None = None
    """Optional local file of ImageNet weights for the backbone (.safetensors, or a torchvision .pth read with weights_only)."""
    backbone_norm: str = "batch"
    """Backbone normalisation: "batch" (BatchNorm), "group" (GroupNorm, 32 groups: batch-size independent,
    so multi-process training matches single-process) or "frozen" (FrozenBatchNorm)."""
    image_size: int = 137
    """Side of the square network input, in pixels (137 or 224)."""
    fpn_channels: int = 128
    """Channels of every feature-pyramid level."""
    coarse: str = "ico_sphere"
    """Coarse shape: "ico_sphere" (deformed sphere), "template" (plus a learned per-category template) or
    "occupancy" (a camera-aligned occupancy grid with 2.5D heads, meshed: recon_core.mesh.occupancy)."""
    occupancy_resolution: int = 32
    """coarse="occupancy": cells of the frustum grid along each side of the crop."""
    occupancy_depth_bins: int = 48
    """coarse="occupancy": depth bins of the frustum grid."""
    occupancy_depth_range: float = 0.75
    """coarse="occupancy": half of the grid's depth range, in crop units (the crop's side is 1)."""
    occupancy_refine: bool = False
    """coarse="occupancy": the refiner stages move the vertices of the occupancy's mesh (a model trained
    with them, training/configs/occupancy_refine.yaml); False: the occupancy's mesh is the output."""
    ico_level: int = 2
    """Level of the coarse ico-sphere (2: 162 vertices)."""
    sphere_radius: float = 0.3
    """Radius of the initial sphere (bounding-box diagonal of the data is 1)."""
    coarse_hidden: int = 512
    """Width of the coarse head's hidden layer."""
    vertices: int = 2562
    """Default output vertex count; one of VERTEX_SCHEDULES' keys."""
    hidden_dim: int = 64
    """Vertex feature width in the refiner."""
    gconv_layers: int = 2
    """Graph convolutions per refiner stage."""
    attention_heads: int = 4
    """Heads of the graph-image cross-attention."""
    attention_window: int = 2
    """Each vertex attends to a window x window patch of cells around its projection, on every pyramid level."""
    max_displacement: float = 2.0
    """Bound of a stage's displacement, in units of the vertex's mean incident edge length."""
    category_norm: bool = True
    """Category-conditional normalisation (per-category scale and shift) in the refiner."""
    num_categories: int = 13
    """Number of categories (recon_core.network.categories.CATEGORIES)."""
    category_branch: bool = False
    """Report the category of a :class:`recon_core.network.heads.CategoryBranch` (its weights in
    ``STEM.category.safetensors``, written by training/train_category.py) instead of the category head's; the
    refiner stages stay conditioned on the head's probabilities, with which they were trained. ResNet-50 with
    batch (or frozen) norm, ``coarse`` "ico_sphere" or "template"."""
    category_temperature: float = 1.0
    """The category head's (or branch's, :attr:`category_branch`) probabilities are reported as
    ``softmax(logits / T)`` (temperature scaling, fitted on the validation split by training/calibrate.py); the
    arg-max, hence the category used, does not change. When the shape bank's candidates vote
    (:attr:`category_bank_weight`), :attr:`category_vote_temperature` is used instead."""
    category_vote_temperature: float = 1.0
    """With the candidates' votes (:attr:`category_bank_weight` > 0 and a category not given), the probabilities
    reported are ``softmax(scores / T)`` of :func:`recon_core.io.inference.fuse_category_scores` (fitted on the
    validation split by training/calibrate.py, on those scores)."""
    shape_bank: bool = False
    """Carry a bank of training shapes (recon_core.network.retrieval.ShapeBank, in the model file). coarse="ico_sphere"
    or "template": the output is snapped to the nearest one, chosen by the picture and the network's
    reconstruction, meshed as a printable solid. coarse="occupancy": the nearest one is a prior blended
    into the network's occupancy before meshing (``bank_weight``); the picture's mask still carves it."""
    bank_shapes: int = 0
    """shape_bank: number of training models in the bank."""
    bank_views: int = 0
    """shape_bank: number of indexed training views."""
    bank_dim: int = 128
    """shape_bank: principal components of the picture embedding kept."""
    bank_points: int = 256
    """shape_bank: surface points per training model (the shape distance)."""
    bank_grid_bytes: int = 0
    """shape_bank: total size of the packed solids."""
    bank_resolution: int = 64
    """shape_bank: cells per side of each solid's grid."""
    bank_shape_weight: float = 1.0
    """shape_bank: weight of the reconstruction's distance against the picture's (both standardised)."""
    bank_smoothing: float = 0.6
    """shape_bank: Gaussian blur of the solid before meshing, in cells (0: the cells' staircase)."""
    bank_level: float = 0.4
    """shape_bank: iso-level of the blurred solid (below 0.5: thin slabs survive the blur)."""
    bank_weight: float = 0.5
    """shape_bank with coarse="occupancy": each frustum cell's occupancy is ``(1 - w) p_network + w p_bank``,
    ``p_bank`` the share of the cell inside the nearest training shape posed in the picture's predicted camera."""
    bank_fit_candidates: int = 10
    """shape_bank on an ico-sphere or template network: this many of the bank's best-ranked training models are
    each posed to the picture's silhouette (turned near their view's rotation and stretched in width and depth,
    :func:`recon_core.mesh.silhouette.fit_pose`) and ranked by how well it covers the mask; 0: the bank's own
    first choice, as it is, in its view's rotation."""
    bank_warp: int = 60
    """shape_bank with fitted candidates: demons iterations of the picture-plane warp that draws each posed solid's
    outline onto the picture's mask (:func:`recon_core.mesh.silhouette.fit_warp`, whose default,
    ``WARP_ITERATIONS``, is the same; this module stays free of numpy); 0: no warp."""
    category_bank_weight: float = 0.0
    """shape_bank on an ico-sphere or template network with fitted candidates (:attr:`bank_fit_candidates` > 0):
    the ``bank_fit_candidates`` fitted candidates also vote for the category reported when none is given: the
    scores are ``log softmax(logits) + w * log(CATEGORY_VOTE_FLOOR + votes)`` (``votes``: each category's share of
    the candidates' confidences, :meth:`recon_core.network.retrieval.ShapeBank.category_votes`), reported as
    ``softmax(scores / category_vote_temperature)`` (:func:`recon_core.io.inference.fuse_category_scores`). The mesh
    does not change: the network has already run on the head's own probabilities. 0: the category head alone."""
    bank_carve: bool = True
    """shape_bank with the warp: the solid's cells whose warped projection lies outside the picture's mask are
    carved away before meshing (:func:`recon_core.mesh.silhouette.carve_to_mask`): parts the picture does not
    have, holes it shows."""
    bank_place: bool = True
    """shape_bank with fitted candidates: each output is moved across the view so that its silhouette sits beside
    the picture's centre as the object's does (:func:`recon_core.mesh.silhouette.place_in_picture`), when the
    picture frames the object."""
    bank_unit_diagonal: bool = False
    """shape_bank: each output is scaled about its bounding box's centre by ``1 / d``, ``d`` the bounding-box
    diagonal of its training solid as meshed (before any stretch, warp or cut), so that the output is in the data's
    frame (every object's diagonal 1): meshed at the bank's blur and level a solid comes out ~3 % larger than its
    model (:func:`recon_core.mesh.silhouette.to_diagonal`). False: the solid's own size."""

    removed_fields: ClassVar[dict[str, Any]] = {"prior_templates": 0, "prior_views": 0, "prior_dim": 128,
                                                "prior_level": 4}
    """Fields of the removed retrieval prior (``coarse="retrieval"``) and the defaults that model files saved before
    its removal still hold (a user's own model of then; the shipped ``models/default.json`` lost them in effef52):
    :func:`from_dict` drops them."""

    def __post_init__(self) -> None:
        if self.backbone not in ("resnet18", "resnet34", "resnet50"):
            raise ValueError(f"backbone must be resnet18, resnet34 or resnet50, got {self.backbone!r}")
        if self.backbone_norm not in ("batch", "group", "frozen"):
            raise ValueError(f"backbone_norm must be batch, group or frozen, got {self.backbone_norm!r}")
        if self.coarse not in ("ico_sphere", "template", "occupancy"):
            raise ValueError(f"coarse must be 'ico_sphere', 'template' or 'occupancy', got {self.coarse!r}")
        if self.bank_smoothing < 0 or not 0 < self.bank_level < 1:
            raise ValueError(f"bank_smoothing must be >= 0 and bank_level in (0, 1), got {self.bank_smoothing}, "
                             f"{self.bank_level}")
        if not 0 <= self.bank_weight <= 1:
            raise ValueError(f"bank_weight must be in [0, 1], got {self.bank_weight}")
        if self.bank_warp < 0:
            raise ValueError(f"bank_warp must be >= 0, got {self.bank_warp}")
        if self.bank_fit_candidates < 0:
            raise ValueError(f"bank_fit_candidates must be >= 0, got {self.bank_fit_candidates}")
        if self.category_branch and (self.backbone != "resnet50" or self.backbone_norm == "group"
                                     or self.coarse == "occupancy"):
            raise ValueError("category_branch needs the resnet50 backbone with batch (or frozen) norm and a mesh "
                             f"coarse shape, got {self.backbone!r}, {self.backbone_norm!r} norm, {self.coarse!r}")
        if not self.category_bank_weight >= 0:
            raise ValueError(f"category_bank_weight must be >= 0, got {self.category_bank_weight}")
        if self.bank_shape_weight < 0:
            raise ValueError(f"bank_shape_weight must be >= 0, got {self.bank_shape_weight}")
        if self.vertices not in VERTEX_SCHEDULES:
            raise ValueError(f"vertices must be one of {sorted(VERTEX_SCHEDULES)}, got {self.vertices}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if not self.category_temperature > 0:
            raise ValueError(f"category_temperature must be > 0, got {self.category_temperature}")
        if not self.category_vote_temperature > 0:
            raise ValueError(f"category_vote_temperature must be > 0, got {self.category_vote_temperature}")
        if self.hidden_dim % self.attention_heads:
            raise ValueError("hidden_dim must be divisible by attention_heads")

    @property
    def grid_spec(self):
        """The :class:`recon_core.mesh.occupancy.GridSpec` of a ``coarse="occupancy"`` model's frustum grid."""
        from recon_core.mesh.occupancy import GridSpec

        return GridSpec(self.occupancy_resolution, self.occupancy_depth_bins, self.occupancy_depth_range)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls, data: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, refusing unknown keys (a typo is an error, not a silent default).

    Keys of ``cls.removed_fields`` (a dict, when the class has one) holding their old default are
    dropped, so files written before a code path was removed still load; another value is refused.
    """
    removed = getattr(cls, "removed_fields", {})
    changed = sorted(k for k in set(data) & set(removed) if data[k] != removed[k])
    if changed:
        got = ", ".join(f"{k}={data[k]!r}" for k in changed)
        raise ValueError(f"{cls.__name__} {got}: these fields belong to a removed code path; only their old "
                         "defaults are accepted, so use the version of the code this file was written for.")
    data = {k: v for k, v in data.items() if k not in removed}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}. Known: {', '.join(sorted(names))}.")
    return cls(**data)


def load_config_dict(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is a folder or unreadable, not valid YAML/JSON, or holds no ``key: value`` mapping.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Config file not found: {path}; give the path of a YAML or JSON config file.")
    if path.is_dir():
        raise ValueError(f"Config {path} is a folder; give the path of a YAML or JSON config file in it.")
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                raise ValueError(f"Config {path} is not valid YAML{where} ({getattr(err, 'problem', None) or err}); "
                                 "fix the file.") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"Config {path} is not valid JSON at line {err.lineno}, column {err.colno} "
                                 f"({err.msg}); fix the file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"Config {path} cannot be read as text ({getattr(err, 'strerror', None) or err}); "
                         "give a YAML or JSON config file.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"Config {path} holds a {type(data).__name__}, not key: value settings; write its "
                         "sections as a mapping (e.g. 'optim:' with 'lr: 0.0003' under it).")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a nested dict, returning a new dict."""
    import copy

    import yaml

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key=value (e.g. model.hidden_dim=64).")
        key, value = item.split("=", 1)
        node = out
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {'.'.join(parts[:i + 1])} is a setting, not a section; "
                                 "give section.key=value (e.g. model.hidden_dim=64).")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value  # not YAML (e.g. an unclosed bracket): the text itself
    return out

