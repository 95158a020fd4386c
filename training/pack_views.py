"""The rendered views in one small file, for a training machine the renders cannot reach.

    python training/pack_views.py --out data/pack                        # train split, 12 views a model (~25 MB)
    python training/train.py --config training/configs/gpu.yaml data.pack=data/pack
    python training/pack_views.py --out data/pack --init models/default  # and the network to start from (~27 MB)
    python training/pack_views.py --unpack-init data/pack --out runs/init/model   # there: back to a model file

The renders (training/render.py) are ~750 MB of PNG and float16 depth maps; a machine that gets the working tree
and 64 MiB besides (an accelerator lent for a few minutes) needs them much smaller. The pack holds, per view, the
colour as JPEG, the alpha and the mask as PNG, and the depth as a 16-bit PNG over the object's own depth range
(background 0), with the camera as numbers; per model, its target surface points and normals in float16; and
beside it a few background photographs (``backgrounds/``, from ``data.backgrounds``). ``data.pack``
makes :class:`training.dataset.RenderedViews` read it instead of the folders: the same items, but for the
JPEG's loss on the colour and float16 on the points (tests compare them).

Layout: ``OUT/views.npz`` (``numpy.savez``; plain arrays, no pickled objects), ``OUT/backgrounds/*.jpg``.
Arrays of ``views.npz``:

- ``synsets``, ``model_ids``, ``splits``: (M,) str, one per model;
- ``points``, ``normals``: (M, P, 3) float16 world-frame surface points and unit normals;
- ``view_model`` (N,) int32, ``view_id`` (N,) int32, ``view_sketch`` (N,) bool;
- ``view_camera`` (N, 21) float64: R (row-major), T, K (row-major); ``view_size`` (N, 2) int32 (width, height);
- ``depth_range`` (N, 2) float32: the depth PNG's 1 and 65535;
- ``blob`` (B,) uint8 and ``offsets`` (4 N + 1,) int64: view ``i``'s colour JPEG, alpha PNG, mask PNG and depth
  PNG are ``blob[offsets[4 i + k]:offsets[4 i + k + 1]]``, k = 0..3.

With ``--init MODEL`` the pack also carries a saved network to start from (``init.safetensors`` +
``init.json``): 55 MB as the shipped fp16 file, too much beside the views, so each large weight matrix travels as
int8 with one float32 scale per output channel (symmetric, ``scale = max |w| / 127``: an error of at most half a
step, ~0.4 % of the row's largest weight), the rest as fp16, the shape bank left out (a trained network gets a
new one from ``training/build_shape_bank.py``). ``--unpack-init`` turns it back into a model file there, for
``train.py --init-from``.

Exit codes: 0 written, 2 bad input (no renders, a split with no complete view, no such model, a count below its
least). The pack is written to a temporary folder beside ``--out`` and moved in only once it is whole.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon_core.io.export import atomic_write_bytes, unwritable_reason  # noqa: E402
from recon_core.io.weights import model_files, model_stem  # noqa: E402
from recon_core.mesh.camera import Camera  # noqa: E402
from training.interrupt import one_sentence_on_ctrl_c
from training.npz import NPZ_ERRORS

__all__ = ["PackedViews", "pack_views", "pack_init", "unpack_init", "main"]

log = logging.getLogger("pack_views")

FILE = "views.npz"
BACKGROUNDS = "backgrounds"
JPEG_QUALITY = 92
"""Quality of the colour JPEGs: ~2-6 KB a 137² view, a mean error of ~1 level of 255 inside the object."""
DEPTH_LEVELS = 65534
"""Depth steps over a view's object (1 .. 65535; 0 is the background)."""


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG", optimize=True)
    return out.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _depth_png(depth: np.ndarray) -> tuple[bytes, float, float]:
    """A (H, W) depth map (0 off the object) as a 16-bit PNG over its own range, and that range."""
    on = depth > 0
    if not on.any():
        return _png(np.zeros(depth.shape, np.uint16)), 0.0, 0.0
    lo, hi = float(depth[on].min()), float(depth[on].max())
    q = np.zeros(depth.shape, np.uint16)
    q[on] = 1 + np.round((depth[on] - lo) / max(hi - lo, 1e-12) * DEPTH_LEVELS).astype(np.uint16)
    return _png(q), lo, hi


def pack_views(shapenet: str | os.PathLike, renders: str | os.PathLike, out: str | os.PathLike,
               splits: tuple[str, ...] = ("train",), views_per_model: int = 12, points: int = 2048,
               backgrounds: str | os.PathLike | None = "data/backgrounds_finder", background_count: int = 300,
               background_size: int = 160) -> Path:
    """Write the pack of ``splits`` (``views_per_model`` views a model, spread over its views; 0: all) to ``out``.

    Returns ``out``. Raises ``ValueError`` when no model of the splits has a complete view.
    """
    from training.dataset import RenderedViews, read_points

    out = Path(out)
    models: list[tuple[str, str, str]] = []
    pts, nrm, vm, vid, sketch, cams, sizes, ranges, files = [], [], [], [], [], [], [], [], []
    for split in splits:
        views = RenderedViews(shapenet, renders, split)
        by_model: dict[int, list[int]] = {}
        for m, v in views._items:
            by_model.setdefault(m, []).append(v)
        for m, all_views in by_model.items():
            chosen = all_views
            if views_per_model and len(all_views) > views_per_model:
                chosen = [all_views[i] for i in np.linspace(0, len(all_views) - 1, views_per_model).round().astype(int)]
            folder = views._folders[m]
            index = len(models)
            models.append((folder.parent.name, views._model_ids[m], split))
            model_points, model_normals = read_points(folder / "points.npz")
            take = np.linspace(0, len(model_points) - 1, points).round().astype(int)
            pts.append(model_points[take].astype(np.float16))
            nrm.append(model_normals[take].astype(np.float16))
            for v in chosen:
                stem = f"{v:03d}"
                meta = json.loads((folder / f"{stem}.json").read_text())
                cam = Camera.from_json(meta)
                rgba = np.asarray(Image.open(folder / f"{stem}.png").convert("RGBA"))
                mask = np.asarray(Image.open(folder / f"{stem}_mask.png").convert("L"))
                depth_png, lo, hi = _depth_png(np.load(folder / f"{stem}_depth.npy").astype(np.float32))
                files += [_jpeg(np.ascontiguousarray(rgba[..., :3])), _png(np.ascontiguousarray(rgba[..., 3])),
                          _png(mask), depth_png]
                vm.append(index)
                vid.append(v)
                sketch.append(bool(meta.get("sketch", False)))
                cams.append(np.concatenate([cam.R.ravel(), cam.T.ravel(), cam.K.ravel()]))
                sizes.append((cam.width, cam.height))
                ranges.append((lo, hi))
    if not vm:
        raise ValueError(f"no complete rendered view of the {', '.join(splits)} split in {renders}: render them first "
                         "(training/render.py)")
    offsets = np.zeros(len(files) + 1, np.int64)
    offsets[1:] = np.cumsum([len(f) for f in files])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{FILE}.tmp.npz"
    np.savez(tmp, synsets=np.array([m[0] for m in models]), model_ids=np.array([m[1] for m in models]),
             splits=np.array([m[2] for m in models]), points=np.stack(pts), normals=np.stack(nrm),
             view_model=np.array(vm, np.int32), view_id=np.array(vid, np.int32), view_sketch=np.array(sketch),
             view_camera=np.array(cams, np.float64), view_size=np.array(sizes, np.int32),
             depth_range=np.array(ranges, np.float32), blob=np.frombuffer(b"".join(files), np.uint8),
             offsets=offsets)
    os.replace(tmp, out / FILE)
    written = _pack_backgrounds(backgrounds, out / BACKGROUNDS, background_count, background_size)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("wrote %s: %d views of %d models, %d background photographs, %.1f MB", out, len(vm), len(models),
             written, size / 1e6)
    return out


def _pack_backgrounds(source: str | os.PathLike | None, out: Path, count: int, size: int) -> int:
    """Up to ``count`` of ``source``'s photographs (spread over them), each resized to ``size``² JPEG."""
    if source is None or not Path(source).is_dir() or count <= 0:
        return 0
    files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    chosen = [files[i] for i in np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int))]
    for i, path in enumerate(chosen):
        with Image.open(path) as img:
            img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(out / f"{i:04d}.jpg", quality=88)
    return len(chosen)


INIT = "init"
QUANTISE_MIN = 4096
"""Floating tensors of at least this many elements and two dimensions travel as int8 (the rest as fp16)."""


def quantise_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, ...) float ``w`` as int8 and a (C,) float32 scale per output channel: ``w ≈ q * scale[:, None, ...]``."""
    flat = w.reshape(len(w), -1).astype(np.float32)
    scale = np.abs(flat).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale.astype(np.float32)


def pack_init(model: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``model``'s network (a saved model's stem: ``.json`` + ``.safetensors``), without its shape bank and
    with its large weights as int8, to ``out/init.safetensors`` + ``out/init.json``. Returns the ``.safetensors``.

    Raises ``ValueError`` when the model's files are missing.
    """
    from safetensors.numpy import save

    stem = model_stem(model)
    cfg, weights, meta = _init_model_files(model)
    meta["model"]["shape_bank"] = False
    meta["model"]["category_branch"] = False  # its own file does not travel: train_category.py fits one again
    meta = {k: v for k, v in meta.items() if k in ("model", "trained", "steps", "run_step", "init_steps", "note")}
    meta["packed_from"] = str(stem)
    packed: dict[str, np.ndarray] = {}
    for name, t in _read_safetensors(weights, "Model weights", "restore the file (git checkout models/) or point to "
                                     "another model").items():
        if name.startswith("bank."):
            continue
        if t.dtype.kind == "f" and t.ndim >= 2 and t.size >= QUANTISE_MIN:
            packed[f"q8:{name}"], packed[f"scale:{name}"] = quantise_rows(t)
        elif t.dtype.kind == "f":
            packed[f"f16:{name}"] = t.astype(np.float16)
        else:
            packed[f"raw:{name}"] = t
    out = Path(out)
    atomic_write_bytes(out / f"{INIT}.safetensors", save(packed))
    atomic_write_bytes(out / f"{INIT}.json", json.dumps(meta, indent=2).encode())
    return out / f"{INIT}.safetensors"


def _init_model_files(model: str | os.PathLike) -> tuple[Path, Path, dict]:
    """``(config, weights, metadata)`` of ``--init``'s saved model, checked as evaluate.py's ``--model`` is
    (:func:`recon_core.io.weights.check_model_files`: an object finder or another file is named for what it is).

    Raises:
        ValueError: no saved reconstruction model there.
    """
    from recon_core.io.weights import check_model_files

    cfg, weights = model_files(model_stem(model))
    if not (cfg.is_file() and weights.is_file()):
        raise ValueError(f"--init {model}: no saved model there ({cfg.name} and {weights.name} are needed)")
    cfg, weights, meta = check_model_files(model, branch=False)  # the branch does not travel
    if not isinstance(meta.get("model"), dict):
        raise ValueError(f"Model config {cfg} is not valid (its \"model\" section is not a mapping); restore it "
                         "from the repository.")
    return cfg, weights, meta


def _read_safetensors(path: Path, what: str, fix: str) -> dict[str, np.ndarray]:
    """The arrays of the safetensors file ``path``; a file that does not read (truncated, corrupt) is a
    ``ValueError`` in evaluate.py's words: ``"{what} {path} are truncated or corrupt (why); {fix}."``"""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{what} {path} are truncated or corrupt ({err}); {fix}.") from None


def unpack_init(pack: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The network of ``pack``'s ``init.safetensors`` (:func:`pack_init`) as a model file ``out.safetensors`` +
    ``out.json`` (fp16, as ``save_model`` writes them), for ``train.py --init-from out``. Returns ``out``'s stem.

    Raises ``ValueError`` when the pack carries no network.
    """
    from safetensors.numpy import save

    pack = Path(pack)
    if not (pack / f"{INIT}.safetensors").is_file():
        raise ValueError(f"{pack} carries no network: write it with python training/pack_views.py --init MODEL")
    fix = "write the pack again with python training/pack_views.py --init MODEL"
    packed = _read_safetensors(pack / f"{INIT}.safetensors", "The carried network's weights", fix)
    config = pack / f"{INIT}.json"
    try:
        meta = json.loads(config.read_text())
        if not isinstance(meta, dict) or "model" not in meta:
            raise ValueError("no \"model\" section")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"The carried network's config {config} is missing or not valid ({err}); {fix}.") from None
    state: dict[str, np.ndarray] = {}
    try:
        for key, t in packed.items():
            kind, name = key.split(":", 1)
            if kind == "q8":
                scale = packed[f"scale:{name}"].reshape((-1,) + (1,) * (t.ndim - 1))
                state[name] = (t.astype(np.float32) * scale).astype(np.float16)
            elif kind in ("f16", "raw"):
                state[name] = t
    except (KeyError, ValueError) as err:
        raise ValueError(f"The carried network's weights {pack / f'{INIT}.safetensors'} are not a packed network "
                         f"({err}); {fix}.") from None
    cfg, weights = model_files(out)
    atomic_write_bytes(weights, save(state))
    atomic_write_bytes(cfg, config.read_bytes())
    return model_stem(out)


class PackedViews:
    """A pack read back (:func:`pack_views`): the models and views, decoded one view at a time.

    Args:
        folder: the pack's folder (or its ``views.npz``).

    Raises:
        ValueError: the folder holds no pack.
    """

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        file = folder / FILE if folder.is_dir() else folder
        if not file.is_file():
            raise ValueError(f"{folder} holds no {FILE}: write it with python training/pack_views.py --out {folder}")

        try:
            with np.load(file, allow_pickle=False) as data:
                self.arrays = {k: data[k] for k in data.files}
            a = self.arrays
            self.synsets, self.model_ids, self.splits = (a["synsets"].tolist(), a["model_ids"].tolist(),
                                                         a["splits"].tolist())
        except NPZ_ERRORS as err:
            raise ValueError(f"The pack's views {file} are truncated or corrupt ({err}); write the pack again: "
                             f"python training/pack_views.py --out {file.parent}") from None
        self.folder = file.parent

    @property
    def backgrounds(self) -> Path:
        """The pack's background photographs (may be missing: synthetic backgrounds then)."""
        return self.folder / BACKGROUNDS

    def views_of(self, model: int) -> list[tuple[int, int]]:
        """``[(row, view id), ...]`` of a model's views."""
        rows = np.flatnonzero(self.arrays["view_model"] == model)
        return [(int(r), int(self.arrays["view_id"][r])) for r in rows]

    def _file(self, row: int, k: int) -> Image.Image:
        o = self.arrays["offsets"]
        return Image.open(io.BytesIO(self.arrays["blob"][o[4 * row + k]:o[4 * row + k + 1]].tobytes()))

    def view(self, row: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
        """``(meta, rgba (H, W, 4) uint8, mask (H, W) uint8, depth (H, W) float32)`` of a view, as the render
        folders give them (``meta`` holds the camera's ``R``, ``T``, ``K``, ``width``, ``height`` and ``sketch``)."""
        a = self.arrays
        cam = a["view_camera"][row]
        width, height = (int(x) for x in a["view_size"][row])
        meta = {"R": cam[:9].reshape(3, 3).tolist(), "T": cam[9:12].tolist(), "K": cam[12:].reshape(3, 3).tolist(),
                "width": width, "height": height, "sketch": bool(a["view_sketch"][row])}
        rgb = np.asarray(self._file(row, 0).convert("RGB"))
        alpha = np.asarray(self._file(row, 1).convert("L"))
        mask = np.asarray(self._file(row, 2).convert("L"))
        q = np.asarray(self._file(row, 3)).astype(np.float32)
        lo, hi = (float(x) for x in a["depth_range"][row])
        depth = np.where(q > 0, lo + (q - 1) * ((hi - lo) / DEPTH_LEVELS), 0.0).astype(np.float32)
        return meta, np.dstack([rgb, alpha]), mask, depth

    def points(self, model: int) -> tuple[np.ndarray, np.ndarray]:
        """(P, 3) float32 world-frame surface points of a model and their unit normals."""
        return (self.arrays["points"][model].astype(np.float32), self.arrays["normals"][model].astype(np.float32))


def _out_error(out: Path, folder: bool) -> str | None:
    """Why ``--out`` (a folder, or without ``folder`` a model stem) cannot be written, as one sentence; None if it can."""
    reason = unwritable_reason(out if folder else out.parent, folder=True)  # a stem: only its folder matters
    return None if reason is None else f"--out {out}: {reason}; give another path"


_PACK_ENTRIES = (FILE, BACKGROUNDS, f"{INIT}.safetensors", f"{INIT}.json")
"""What a pack holds: the views, the background photographs and the network carried (:func:`pack_init`)."""


def _move_into(built: Path, out: Path) -> None:
    """Move every entry of the finished pack ``built`` into ``out`` (an entry already there is replaced), and take
    away the pack entries of an earlier pack that this one does not hold (its carried network above all, which
    ``scripts/device_train.sh`` would otherwise start from); anything else in ``out`` stays."""
    out.mkdir(parents=True, exist_ok=True)
    names = {entry.name for entry in built.iterdir()}
    for entry in sorted(built.iterdir()):
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    for name in set(_PACK_ENTRIES) - names:
        stale = out / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pack the rendered views into one small file (data.pack of train.py).")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--out", default="data/pack")
    p.add_argument("--splits", nargs="+", default=["train"])
    p.add_argument("--views-per-model", type=int, default=12, help="views a model, spread over its views (0: all)")
    p.add_argument("--points", type=int, default=2048, help="target surface points a model")
    p.add_argument("--backgrounds", default="data/backgrounds_finder",
                   help="photographs behind augmented views (a few are packed; none: synthetic backgrounds only)")
    p.add_argument("--background-count", type=int, default=300, help="background photographs packed (0: none)")
    p.add_argument("--init", metavar="MODEL", help="also carry this saved network to start from (int8, no bank)")
    p.add_argument("--unpack-init", metavar="PACK",
                   help="only turn PACK's carried network back into the model file --out (for train.py --init-from)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    try:
        error = _out_error(out, folder=not args.unpack_init)
        if error is not None:
            raise ValueError(error)
        if args.unpack_init:
            log.info("wrote %s", model_files(unpack_init(args.unpack_init, out))[1])
            return 0
        from training.build_dataset import SPLITS  # here: the GPU machine's --unpack-init needs none of its imports

        unknown = [split for split in args.splits if split not in SPLITS]
        if unknown:
            raise ValueError(f"--splits {' '.join(unknown)}: no such split; the splits are {', '.join(SPLITS)}")
        for flag, least in (("views_per_model", 0), ("points", 1), ("background_count", 0)):
            if getattr(args, flag) < least:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least {least}, got {getattr(args, flag)}")
        for flag in ("shapenet", "renders"):
            if not Path(getattr(args, flag)).is_dir():
                raise ValueError(f"--{flag} {getattr(args, flag)} is not a folder: build the data set first "
                                 "(training/build_dataset.py, training/render.py)")
        if args.init:
            _init_model_files(args.init)
        if args.background_count and str(args.backgrounds).strip().lower() != "none":
            from training.eval_data import background_photos

            # a mistyped folder packed none, and the run trained without photos; training's, never the check set's
            background_photos(args.backgrounds, build="python training/build_backgrounds.py --sources finder")
        else:
            args.backgrounds = None
        near = next(f for f in (out.absolute().parent, *out.absolute().parents) if f.is_dir())  # nothing made yet
        built = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=near))
        try:
            if args.init:
                written = pack_init(args.init, built)
                log.info("packed %s: %.1f MB", args.init, written.stat().st_size / 1e6)
            pack_views(args.shapenet, args.renders, built, tuple(args.splits), args.views_per_model, args.points,
                       args.backgrounds, args.background_count)
            _move_into(built, out)
        finally:
            shutil.rmtree(built, ignore_errors=True)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("moved the pack into %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
