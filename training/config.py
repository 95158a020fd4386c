"""Training configuration: frozen, typed dataclasses, loaded from YAML and overridable from the command line.

``python training/train.py --config training/configs/default.yaml optim.steps=100 model.backbone=resnet18``
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from recon_core.network.config import ModelConfig, apply_overrides, from_dict, load_config_dict

__all__ = ["DataConfig", "LossConfig", "OptimConfig", "RunConfig", "TrainConfig", "load_train_config"]


@dataclass(frozen=True)
class DataConfig:
    shapenet: str = "data/shapenet"
    """Data set root in ShapeNetCore layout, with manifest.json (training/build_dataset.py)."""
    renders: str = "data/renders"
    """Rendered views (training/render.py)."""
    pack: str | None = None
    """A pack of the rendered views (training/pack_views.py), read instead of ``shapenet`` and ``renders`` (a
    machine the renders cannot reach); its background photographs stand in for ``backgrounds`` where that
    folder is missing."""
    num_points: int = 2048
    """Ground-truth surface points per sample."""
    augment: bool = True
    """Random crops (scale, offset, cut by the border), background swap and photometric augmentation."""
    backgrounds: str = "data/backgrounds_finder"
    """Background photographs of augmented views (``training/build_backgrounds.py --sources finder``); missing:
    synthetic backgrounds. Not ``data/backgrounds``: those photographs are the ``background`` check set's
    (``evaluate.py --style background``), which a model must not have seen behind its training views."""
    occupancy_share: bool = False
    """model.coarse=occupancy: the frustum target is each cell's share inside the solid (its 0.5 level on the
    surface) instead of whether any part of it is (up to half a cell outside)."""
    styles: float = 0.0
    """With ``augment``: the share of shaded views redrawn as clip art or pencil (training/styles.py) before
    the crop and the photometric augmentation."""
    cutout: float = 0.0
    """With ``augment``: the share of shaded views over a background then cut out onto white by an imperfect
    mask (``training.augment.cutout_mask``) after the camera's effects, as a photograph reaches the network through
    the object finder."""
    workers: int = 1
    """DataLoader worker processes per training process."""
    category_balance: float = 1.0
    """Sampling weight of an item is count(category) ** -category_balance: 0 = as in the data, 1 = every category equally."""
    synthetic: int = 0
    """Train on this many synthetic ellipsoids instead of the renders (tests and benchmarks); 0: off."""
    category_weights: dict[str, float] | None = None
    """Explicit sampling proportions per category name (overrides category_balance); missing categories get 0."""

    removed_fields: ClassVar[dict[str, Any]] = {"prior": "data/prior/bank", "prior_topk": 3}
    """Fields of the removed retrieval prior and their defaults, dropped from older ``config.yaml`` files
    (:func:`recon_core.network.config.from_dict`)."""


@dataclass(frozen=True)
class LossConfig:
    chamfer: float = 1.0
    normal: float = 0.1
    edge: float = 0.5
    laplacian: float = 0.5
    silhouette: float = 0.2
    depth: float = 0.1
    category: float = 0.1
    """Cross-entropy of the category head."""
    coarse: float = 0.5
    """Weight of the coarse shape's Chamfer loss."""
    render_size: int = 48
    """Side of the differentiable silhouette/depth renders."""
    rasteriser: str = "pytorch3d"
    """Which soft rasteriser renders the silhouette and depth: ``pytorch3d`` or ``torch``
    (:mod:`recon_core.network.soft_raster`: torch alone, for a machine without pytorch3d)."""
    num_samples: int = 2048
    """Points sampled from each predicted mesh for Chamfer and normal losses."""
    refine_faces: int = 2000
    """model.occupancy_refine: triangles of the occupancy meshes the refiner stages train on (decimated to it)."""
    occupancy: float = 1.0
    """model.coarse=occupancy: binary cross-entropy of the frustum cells."""
    dice: float = 1.0
    """model.coarse=occupancy: soft Dice loss of the frustum cells (1 - soft IoU-like overlap)."""
    mask_2d: float = 0.5
    """model.coarse=occupancy: binary cross-entropy of the stride-4 mask."""
    depth_2d: float = 0.5
    """model.coarse=occupancy: L1 of the stride-4 depth on the object (crop units)."""
    normal_2d: float = 0.2
    """model.coarse=occupancy: 1 - cosine of the stride-4 normals on the object."""
    camera: float = 1.0
    """model.coarse=occupancy: L1 of the grid camera (log scale, principal point)."""

    def __post_init__(self) -> None:
        if self.rasteriser not in ("pytorch3d", "torch"):
            raise ValueError(f"loss.rasteriser must be 'pytorch3d' or 'torch', got {self.rasteriser!r}")


@dataclass(frozen=True)
class OptimConfig:
    batch_size: int = 16
    """Global batch size (split across processes)."""
    steps: int = 4000
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 1.0
    freeze_encoder: bool = False
    """Train only the coarse head and the refiner: the image encoder and the category head keep their
    weights and their BatchNorm statistics (fine-tuning a trained model's shape stages on a CPU)."""
    freeze_heads: bool = False
    """coarse="occupancy": keep the occupancy heads' weights too (with ``freeze_encoder``: train the refiner
    stages alone, on the meshes of a trained occupancy network)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (and BatchNorm statistics) kept beside them
    (``torch.optim.swa_utils``); the snapshots hold the average, the checkpoint both (0: no average, the
    snapshots hold the weights). 0.995 averages over the last ~200 steps: the validation F1@0.3 of single
    checkpoints swings by several points from one to the next at a constant learning rate."""
    minutes: float = 0.0
    """A time budget for this run, for a machine lent for a few minutes (0: none). Training ends at
    ``steps`` or after ``minutes`` of training, whichever comes first, with a snapshot; the learning-rate
    schedule follows the larger of the two shares spent, so a run cut by the clock still ends decayed.
    A resumed run gets its minutes afresh."""
    freeze_stages: int = 0
    """The first N parts of the backbone, of (stem, stage 1, ..., stage 4), keep their weights and their
    BatchNorm statistics (Mesh R-CNN's ``FREEZE_AT``: 2 freezes the stem and the first stage, ~20 % less
    encoder time a step on a CPU: no gradients at the largest feature maps). 0: train the whole backbone."""


@dataclass(frozen=True)
class RunConfig:
    out: str = "runs/train"
    seed: int = 0
    amp: bool = True
    """fp16 autocast (with a grad scaler) on CUDA; bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX),
    float32 on other CPUs, where emulated bf16 is slower (training.train.amp_enabled)."""
    checkpoint_every: int = 200
    log_every: int = 10
    snapshots: int = 20
    """How many model snapshots (step_N.safetensors) to keep for the learning curve."""
    threads: int = 0
    """torch intra-op threads per process (0: torch's default)."""
    channels_last: bool = False
    """Keep the image encoder's convolution weights (and so its feature maps) in channels-last memory order:
    ~17 % less time for ResNet-50's forward and backward on a CPU (bench.train_throughput); the same network."""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "TrainConfig":
        sections = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "optim": OptimConfig, "run": RunConfig}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ValueError(f"Unknown config section(s): {', '.join(unknown)}; known: {', '.join(sections)}.")
        for k in sections:
            if not isinstance(data.get(k) or {}, dict):
                raise ValueError(f"Config section {k!r} holds {data[k]!r}: it must hold key: value settings "
                                 f"(e.g. {k}.KEY=VALUE).")
        return TrainConfig(**{k: from_dict(cls, _typed(cls, k, data.get(k) or {})) for k, cls in sections.items()})


def _typed(cls, section: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each value of a field of ``cls`` checked against the field's type: a number written as
    text (YAML reads ``1e-3``, without a dot, as a string) becomes the number, a whole float an int.

    Raises:
        ValueError: a value that is not of its field's type, naming the key.
    """
    hints = typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    return {k: _as_type(f"{section}.{k}", v, hints[k], defaults.get(k)) if k in defaults else v
            for k, v in data.items()}


def _as_type(key: str, value: Any, kind: Any, example: Any = None) -> Any:
    """``value`` as a ``kind`` (bool, int, float, str, ``X | None``, ``dict[str, float]``) for setting ``key``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _as_type(key, value, next(a for a in args if a is not type(None)), example)
    if typing.get_origin(kind) is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}={value!r}: give name: value pairs, e.g. {key}={{chair: 1.0, table: 0.5}}.")
        return {str(k): _as_type(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not true or false; give {key}=true or {key}=false.")
        return value
    if kind in (int, float):
        number = value
        if isinstance(value, str):
            text = value.strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    number = None
        hint = f", e.g. {key}={example}" if isinstance(example, (int, float)) else ""
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError(f"{key}={value!r} is not a number; give a {'whole ' if kind is int else ''}"
                             f"number{hint}.")
        if kind is int:
            if number != int(number):
                raise ValueError(f"{key}={value!r} is not a whole number; give one{hint}.")
            return int(number)
        return float(number)
    if kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            hint = f", e.g. {key}={example}" if isinstance(example, str) else ""
            if value is None or isinstance(value, str):  # `key=` on the command line reads as None
                raise ValueError(f"{key} is empty; give a name or a path{hint}.")
            raise ValueError(f"{key}={value!r} is not text; give a name or a path{hint}.")
    return value


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Load a YAML/JSON config (or the defaults when ``path`` is None) and apply ``section.key=value`` overrides."""
    data = load_config_dict(path) if path else {}
    return TrainConfig.from_dict(apply_overrides(data, list(overrides)))
