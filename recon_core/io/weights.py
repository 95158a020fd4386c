"""Saving and loading model weights safely: safetensors + a JSON sidecar with the config.

A model lives in two files side by side: ``NAME.safetensors`` (tensors, fp16 or fp32)
and ``NAME.json`` (``{"model": ModelConfig fields, "trained": bool, ...metadata}``); a model with a category branch
(``model.category_branch``) has a third, ``NAME.category.safetensors``, stamped with the encoder it was fitted on.
Nothing is ever unpickled. Files are written to a temporary name and renamed, so a
crash never leaves a half-written model. The object finder (:mod:`recon_core.network.finder`)
is saved and loaded the same way (:func:`save_finder`, :func:`load_finder`).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from recon_core.io.export import atomic_write_bytes
from recon_core.network.config import ModelConfig, from_dict
from recon_core.network.finder import FinderConfig, ObjectFinder
from recon_core.network.model import ReconstructionNet, build_model

__all__ = [
    "WeightsError", "model_stem", "model_files", "branch_file", "save_model", "save_category_branch",
    "check_model_files", "load_model", "default_model_path",
    "save_finder", "load_finder",
    "default_finder_path",
]

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A model file that cannot be used; the message names the problem and the fix."""


def default_model_path() -> Path:
    """``models/default`` of this repository (or ``$RECON_MODEL`` when set), without extension."""
    env = os.environ.get("RECON_MODEL")
    if env:
        return model_stem(env)
    return Path(__file__).resolve().parents[2] / "models" / "default"


def model_stem(path: str | os.PathLike) -> Path:
    """A saved model's or finder's path without ``.json`` / ``.safetensors`` (a stem holding a dot keeps it)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def model_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.json, NAME.safetensors)`` of a model or finder named by its stem or either file; a stem holding a
    dot (``runs/net.v2``) keeps it (``runs/net.v2.json``)."""
    stem = model_stem(path)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


BRANCH_PREFIX = "category_branch."
"""The state-dict prefix of a model's :class:`recon_core.network.heads.CategoryBranch`, kept in :func:`branch_file`."""
FINGERPRINT_TENSOR = "encoder.stages.3.1.conv3.weight"
"""The tensor whose bytes name the encoder a category branch was fitted on (the branch reads its block's output)."""


def branch_file(path: str | os.PathLike) -> Path:
    """``NAME.category.safetensors``: the category branch of the model named by its stem or either file."""
    stem = model_stem(path)
    return stem.with_name(stem.name + ".category.safetensors")


def _missing_branch(weights_path: Path) -> WeightsError:
    """The error of a model whose JSON names a category branch that is not beside ``weights_path``."""
    return WeightsError(f"Category branch weights not found: {branch_file(weights_path)} (the model's JSON says "
                        f"category_branch); restore the file (git checkout models/) or {_refit(weights_path)}.")


def _refit(weights_path: Path) -> str:
    """The advice for a category branch that cannot be used: fit one again for the model at ``weights_path``."""
    return f"run python training/train_category.py --model {model_stem(weights_path)}"


def encoder_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of the SHA-256 of :data:`FINGERPRINT_TENSOR` in fp16: the encoder a category branch belongs to."""
    import hashlib

    data = state[FINGERPRINT_TENSOR].detach().cpu().half().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def save_model(model: ReconstructionNet, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
               half: bool = True) -> Path:
    """Save ``model`` as ``path.safetensors`` + ``path.json`` (and its category branch, if any, as
    ``path.category.safetensors``, :func:`branch_file`); returns the stem path.

    Args:
        half: store floating tensors as fp16 (halves the file; loading casts back to fp32).
    """
    meta = {"model": model.config.to_dict(), "trained": True, **(metadata or {})}
    return _save(model, path, meta, half)


def _save(module: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any], half: bool) -> Path:
    """``module``'s tensors (floating ones as fp16 with ``half``) to ``STEM.safetensors`` (a model's category branch
    to :func:`branch_file`) and ``meta`` to ``STEM.json``, each written atomically; returns the stem."""
    from safetensors.torch import save

    stem = model_stem(path)
    state, branch = {}, {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu().contiguous()
        v = v.half() if half and v.is_floating_point() else v
        if k.startswith(BRANCH_PREFIX):
            branch[k[len(BRANCH_PREFIX):]] = v
        else:
            state[k] = v
    cfg_path, weights_path = model_files(stem)
    if branch:
        atomic_write_bytes(branch_file(stem), save(branch, metadata={"encoder": encoder_fingerprint(state)}))
    atomic_write_bytes(weights_path, save(state))
    atomic_write_bytes(cfg_path, json.dumps(meta, indent=2).encode())
    return stem


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
"""The ``torch.nn.init`` functions that :func:`_initialisation_skipped` makes no-ops."""


@contextmanager
def _initialisation_skipped():
    """Modules built inside keep their parameters' memory as allocated (``torch.nn.init`` does nothing).

    For a model whose every parameter and buffer is then loaded (:func:`load_model` checks that
    the file names all of them, and loads strictly): drawing ResNet-50's 25 M random weights only
    to overwrite them took 0.6 s of every start. After ``transformers``' ``no_init_weights``.
    """
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


def check_model_files(path: str | os.PathLike | None = None, branch: bool = True) -> tuple[Path, Path, dict[str, Any]]:
    """``(config path, weights path, metadata)`` of the model at ``path`` (None: the default), its files checked as
    :func:`load_model` needs them, without building the network: the ``.json`` is there and readable, the
    ``.safetensors`` beside it too unless the JSON says ``"trained": false``, and with ``branch`` the category branch's
    file (:func:`branch_file`) when the JSON names one (False: for a load that leaves the branch out).

    Raises:
        WeightsError: naming the file that is missing or not valid.
    """
    cfg_path, weights_path = model_files(path if path is not None else default_model_path())
    if not cfg_path.is_file():
        shipped = model_files(default_model_path())[0]
        # "--model models/default" given outside the source folder: where the model it means is
        hint = (f" The shipped model is {shipped.with_suffix('')}; leave the model out to use it."
                if path is not None and shipped.is_file() and cfg_path.resolve() != shipped.resolve() else "")
        raise WeightsError(
            f"Model config not found: {cfg_path}. Pass the path of a model saved by training "
            f"(NAME.safetensors with NAME.json beside it).{hint}"
        )
    try:
        meta = json.loads(cfg_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"it holds a {type(meta).__name__}, not the model's settings")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise WeightsError(f"Model config {cfg_path} is not valid ({err}); restore it from the repository.") from None
    if "model" not in meta:  # whole, but another kind of file: "not valid, restore it" would mislead
        what = ("the object finder's config (a \"finder\" section, no \"model\" one), not a reconstruction model's"
                if "finder" in meta else "not a reconstruction model's config (it has no \"model\" section)")
        raise WeightsError(f"{cfg_path} is {what}; the reconstruction model is models/default (recon-mesh's "
                           "default, without --model), or give another saved by training (NAME.json with "
                           "NAME.safetensors beside it).")
    if not weights_path.is_file() and meta.get("trained") is not False:
        raise WeightsError(f"Model weights not found: there is no {weights_path} beside {cfg_path.name}; restore the "
                           "file (git checkout models/) or point to a model saved by training (NAME.safetensors "
                           "with NAME.json beside it).")
    model = meta.get("model")
    if (branch and isinstance(model, dict) and model.get("category_branch") and weights_path.is_file()
            and not branch_file(weights_path).is_file()):
        raise _missing_branch(weights_path)
    return cfg_path, weights_path, meta


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               overrides: dict[str, Any] | None = None) -> tuple[ReconstructionNet, dict[str, Any]]:
    """Load a model saved by :func:`save_model`.

    When the ``.json`` says ``"trained": false`` and the ``.safetensors`` is not there, returns a randomly
    initialised model (seed 0) with ``metadata["trained"] = False`` (tests and benchmarks of the pipeline).

    Raises:
        WeightsError: missing, truncated or corrupt files (the ``.safetensors`` of a JSON that does not say it is
            untrained included), or tensors that do not fit the config.
    """
    # a load whose overrides leave the branch out needs no branch file (_load_branch checks it for the others)
    keeps_branch = bool((overrides or {}).get("category_branch", True))
    cfg_path, weights_path, meta = check_model_files(path, branch=keeps_branch)
    try:
        model_cfg = dict(meta["model"])
        model_cfg.update(overrides or {})
        config = from_dict(ModelConfig, model_cfg)
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsError(f"Model config {cfg_path} is not valid ({err}); restore it from the repository.") from None
    torch.manual_seed(0)
    try:
        # Weights to load: skip the random initialisation they replace (0.6 s of every start for ResNet-50).
        with _initialisation_skipped() if weights_path.is_file() else nullcontext():
            model = build_model(config)
    except ValueError as err:
        raise WeightsError(f"Model config {cfg_path} does not describe a buildable model ({err}).") from None
    if not weights_path.is_file():
        meta = {**meta, "trained": False}
        log.warning("no weights at %s: using a randomly initialised model", weights_path)
        return model.to(device).eval(), meta
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(
            f"Model weights {weights_path} are truncated or corrupt ({err}); restore the file "
            "(git checkout models/) or point to another model."
        ) from None
    if config.category_branch:
        state.update(_load_branch(weights_path, state))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    off = [k for k in missing + unexpected if k.startswith(BRANCH_PREFIX)]
    off += [k for k in set(state) & set(expected)
            if k.startswith(BRANCH_PREFIX) and state[k].shape != expected[k].shape]
    if off:
        raise WeightsError(f"Category branch {branch_file(weights_path)} does not fit this network (e.g. {off[0]}); "
                           f"{_refit(weights_path)}.")
    if missing or unexpected:
        names = (missing or unexpected)[:3]
        raise WeightsError(
            f"Model weights {weights_path} do not match the architecture in {cfg_path.name} "
            f"({len(missing)} tensors missing, {len(unexpected)} unexpected, e.g. {', '.join(names)}); "
            "use the .json saved with these weights."
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise WeightsError(
                f"Model weights {weights_path} do not match the architecture: tensor {k} has shape "
                f"{tuple(v.shape)}, the config expects {tuple(expected[k].shape)}; use the .json saved with these weights."
            )
    # assign: the module takes the loaded tensors (converted to its dtypes) instead of copying them into its own; each
    # a copy, never a view of the file's memory map, which would hold the file mapped while the model lives: Windows
    # then refuses to replace it (a retrained model saved over it, the worker's reload of changed files, git pull)
    model.load_state_dict({k: v.to(expected[k].dtype, copy=True) for k, v in state.items()}, assign=True)
    if getattr(model, "bank", None) is not None:
        try:
            model.bank.check()
        except ValueError as err:
            raise WeightsError(f"Model weights {weights_path}: {err}; rebuild it with training/build_shape_bank.py.") from None
    return model.to(device).eval(), meta


def save_category_branch(branch: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write ``branch`` (a :class:`recon_core.network.heads.CategoryBranch`) as the category branch of the saved
    model at ``path`` (fp16, atomically, stamped with that model's encoder), leaving its other files as they are;
    returns the branch's file. The model's JSON must then say ``category_branch`` (training/train_category.py)."""
    from safetensors import safe_open
    from safetensors.torch import save

    _, weights_path = model_files(path)
    with safe_open(str(weights_path), framework="pt") as f:
        stamp = encoder_fingerprint({FINGERPRINT_TENSOR: f.get_tensor(FINGERPRINT_TENSOR)})
    state = {k: v.detach().cpu().half().contiguous() for k, v in branch.state_dict().items()}
    out = branch_file(path)
    atomic_write_bytes(out, save(state, metadata={"encoder": stamp}))
    return out


def _load_branch(weights_path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The category branch's tensors beside ``weights_path`` (:func:`branch_file`), prefixed for the model's state,
    checked to belong to the encoder in ``state``."""
    from safetensors import SafetensorError, safe_open

    path, retrain = branch_file(weights_path), _refit(weights_path)
    if not path.is_file():
        raise _missing_branch(weights_path)
    try:
        with safe_open(str(path), framework="pt") as f:
            stamp = (f.metadata() or {}).get("encoder")
            branch = {BRANCH_PREFIX + k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"Category branch weights {path} are truncated or corrupt ({err}); restore the file "
                           f"(git checkout models/) or {retrain}.") from None
    if stamp is None:
        raise WeightsError(f"Category branch {path} has no stamp of the encoder it was fitted on; {retrain}.")
    if FINGERPRINT_TENSOR in state and stamp != encoder_fingerprint(state):  # else: the key check names what is missing
        raise WeightsError(f"Category branch {path} was fitted on another network's encoder (stamp {stamp}, this "
                           f"network's {encoder_fingerprint(state)}); {retrain}.")
    return branch


# ------------------------------------------------------------------ the object finder


FINDER_ENV = "RECON_FINDER"
"""The environment variable that picks another object finder (a path, without or with its extension), or none: the
value ``none`` finds the object by the border colour."""


def default_finder_path() -> Path | None:
    """``models/finder`` of this repository (or ``$RECON_FINDER`` when set), without extension; None when
    ``$RECON_FINDER`` is ``none``."""
    env = os.environ.get(FINDER_ENV, "").strip()
    if env.lower() == "none":
        return None
    if env:
        return model_stem(env)
    return Path(__file__).resolve().parents[2] / "models" / "finder"


def save_finder(net: ObjectFinder, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Save as ``path.safetensors`` (fp16) + ``path.json`` (``{"finder": config, ...metadata}``); returns the stem."""
    return _save(net, path, {"finder": net.config.to_dict(), **(metadata or {})}, half=True)


def load_finder(path: str | os.PathLike | None = None) -> ObjectFinder | None:
    """Load a finder saved by :func:`save_finder` (``None``: :func:`default_finder_path`), in eval mode.

    Returns None when its files are not there (the border-colour rule is used instead), or ``$RECON_FINDER`` is
    ``none``.

    Raises:
        WeightsError: files that are there but cannot be used.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = default_finder_path() if path is None else model_stem(path)
    if stem is None:  # RECON_FINDER=none
        return None
    cfg_path, weights_path = model_files(stem)
    if not (cfg_path.is_file() and weights_path.is_file()):
        if path is None and os.environ.get(FINDER_ENV, "").strip():  # a mistyped path would go unnoticed
            raise WeightsError(f"{FINDER_ENV} names no object finder: {cfg_path} and {weights_path} are not both "
                               f"there. Fix the path, unset {FINDER_ENV} for the shipped finder, or set it to none "
                               "to find the object by the border colour.")
        return None
    try:
        config = FinderConfig.from_dict(json.loads(cfg_path.read_text())["finder"])
        net = ObjectFinder(config)
        state = load_file(str(weights_path))
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, SafetensorError, OSError, RuntimeError) as err:
        raise WeightsError(f"The object finder {weights_path} cannot be loaded ({err}); restore it (git checkout "
                           "models/) or retrain it: python training/train_finder.py --out models/finder") from None
    return net.eval()
