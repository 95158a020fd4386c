"""Train the object finder (:mod:`recon_core.network.finder`): which pixels of a picture without alpha are the object.

    python training/build_backgrounds.py --sources finder      # its backgrounds (once)
    python training/train_finder.py --out models/finder        # ~25 min on 2 CPU cores

Training pictures (:func:`finder_sample`): a rendered view of the train split (held-out
categories left out) is moved to a random place and size on a canvas of random shape
(:func:`place`: from a small object off the centre to one cut by the border), then redrawn
by :func:`training.styles.stylize` in a random style (a photograph behind it, a synthetic
background, white, JPEG, clip art, pencil on paper), then the camera's photometric changes
(:func:`training.augment.photometric`). The target is the view's mask moved the same way.
A few pictures hold no object (a background alone): their target is empty. The
backgrounds are ``data/backgrounds_finder`` (other packages than the background check set's,
training/build_backgrounds.py). Pictures are drawn once into a cache (``--cache``) and
reused every epoch: drawing costs more than a training step. A cache file is named by its split, count, size,
seed, backgrounds and data set (a hash of the resolved ``--shapenet`` and ``--renders`` and the manifest), so
another data set draws its own; one that cannot be read is drawn again, with a warning naming it.

Loss: binary cross-entropy plus soft Dice, over the letterboxed picture's own pixels (not
its padding). The val split's pictures, drawn the same way, give the IoU logged and saved in
the finder's JSON. Writes ``OUT.safetensors`` + ``OUT.json`` (:func:`recon_core.io.weights.save_finder`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from multiprocessing import get_context
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from recon_core.io.export import unwritable_reason
from recon_core.io.weights import save_finder
from recon_core.network.finder import FINDER_SIZE, FinderConfig, ObjectFinder, letterbox
from training.interrupt import ignore_ctrl_c, one_sentence_on_ctrl_c
from training.npz import NPZ_ERRORS

__all__ = ["STYLE_SHARES", "FILL", "EMPTY_SHARE", "place", "finder_sample", "draw_set", "train", "main"]

log = logging.getLogger("train_finder")

STYLE_SHARES = {"background": 0.35, "synthetic": 0.1, "no_alpha": 0.1, "jpeg": 0.1, "clipart": 0.15, "pencil": 0.2}
"""Share of each picture style (``synthetic``: the ``background`` style over a synthetic background)."""
FILL = (0.12, 1.3)
"""Range (log-uniform) of the object's box's longer side over the canvas's shorter side (> 1: cut by the border)."""
CANVAS = (96, 176)
"""Range of the canvas's longer side, pixels."""
EMPTY_SHARE = 0.04
"""Share of pictures with no object."""


def place(rgba: np.ndarray, mask: np.ndarray, depth: np.ndarray, K: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move a view's object to a random size and place on a canvas of random shape.

    A similarity ``x' = s x + t`` of the pixels (the camera becomes ``S @ K``); the object's
    centre stays on the canvas, its box's longer side is :data:`FILL` of the canvas's shorter side.

    Args:
        rgba: (H, W, 4) uint8; mask: (H, W) bool; depth: (H, W) float32; K: (3, 3).

    Returns:
        ``(rgba, mask, depth, K)`` on the (H', W') canvas (transparent, 0 and 0 outside the view).
    """
    long = int(rng.integers(CANVAS[0], CANVAS[1] + 1))
    aspect = float(np.exp(rng.uniform(math.log(0.6), math.log(1 / 0.6))))
    ch, cw = (long, max(32, round(long / aspect))) if aspect > 1 else (max(32, round(long * aspect)), long)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    v0, v1, u0, u1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    fill = float(np.exp(rng.uniform(math.log(FILL[0]), math.log(FILL[1]))))
    s = fill * min(ch, cw) / max(u1 - u0, v1 - v0)
    cu, cv = rng.uniform(0.0, cw), rng.uniform(0.0, ch)  # where the box's centre goes
    tu, tv = cu - s * (u0 + u1) / 2.0, cv - s * (v0 + v1) / 2.0
    inverse = (1.0 / s, 0.0, -tu / s, 0.0, 1.0 / s, -tv / s)  # canvas pixel -> view pixel (Pillow's AFFINE)

    def warp(arr: np.ndarray, mode: str, resample) -> np.ndarray:
        return np.asarray(Image.fromarray(arr, mode).transform((cw, ch), Image.Transform.AFFINE, inverse,
                                                               resample=resample, fillcolor=0))

    out_rgba = warp(rgba, "RGBA", Image.Resampling.BILINEAR).copy()
    out_mask = warp(mask.astype(np.uint8) * np.uint8(255), "L", Image.Resampling.BILINEAR) > 127
    out_depth = warp(depth.astype(np.float32), "F", Image.Resampling.NEAREST).astype(np.float32)
    out_depth = np.where(out_mask, out_depth, 0.0).astype(np.float32)
    S = np.array([[s, 0.0, tu], [0.0, s, tv], [0.0, 0.0, 1.0]])
    return out_rgba, out_mask, out_depth, S @ np.asarray(K, np.float64)


def _empty_picture(rng: np.random.Generator, photos, shape: tuple[int, int]) -> np.ndarray:
    from training.augment import paper, synthetic_background

    h, w = shape
    kind = int(rng.integers(3))
    if kind == 0 and photos is not None and photos.available:
        back = photos.sample(rng, max(h, w))[:h, :w]
    elif kind == 1:
        back = np.broadcast_to(paper(rng), (h, w, 3)) + rng.normal(0.0, 2.0, (h, w, 1))
    else:
        back = synthetic_background(rng, (h, w))
    return np.clip(back + 0.5, 0, 255).astype(np.uint8)


def finder_sample(folder: Path, view: int, seed: int, photos) -> tuple[np.ndarray, np.ndarray]:
    """One training picture of the finder and its target, a pure function of its arguments.

    Args:
        folder: a rendered model's folder (training/render.py); view: its view number.
        seed: seeds every random choice.
        photos: :class:`training.augment.BackgroundPhotos` (or None: synthetic backgrounds only).

    Returns:
        ``(rgb, mask)``: (H, W, 3) uint8 picture, (H, W) bool object mask.
    """
    from recon_core.mesh.camera import Camera
    from training.augment import photometric
    from training.styles import stylize

    rng = np.random.default_rng(seed)
    stem = f"{view:03d}"
    meta = json.loads((folder / f"{stem}.json").read_text())
    K = Camera.from_json(meta).K
    with Image.open(folder / f"{stem}.png") as im:
        rgba = np.asarray(im.convert("RGBA")).copy()
    with Image.open(folder / f"{stem}_mask.png") as im:
        mask = np.asarray(im.convert("L")) > 127
    depth = np.load(folder / f"{stem}_depth.npy").astype(np.float32)
    sketch = bool(meta.get("sketch", False))
    if rgba[..., 3].min() == 255:  # an opaque render (a sketch on white): its mask is the alpha to move
        rgba[..., 3] = np.where(mask, 255, 0).astype(np.uint8) if not sketch else 255
    rgba, mask, depth, K = place(rgba, mask, depth, K, rng)
    if rng.random() < EMPTY_SHARE or not mask.any():
        return _empty_picture(rng, photos, mask.shape), np.zeros(mask.shape, bool)
    names = list(STYLE_SHARES)
    style = "no_alpha" if sketch else names[int(rng.choice(len(names), p=np.array(list(STYLE_SHARES.values()))))]
    seed2 = int(rng.integers(2**31))
    if style == "synthetic":
        rgb, _ = stylize(rgba, mask, depth, K, "background", seed2, None)
    else:
        rgb, _ = stylize(rgba, mask, depth, K, style, seed2, photos)
    if sketch:  # outside the moved render: white, as around it
        rgb = np.where(rgba[..., 3:] > 0, rgb, np.uint8(255))
    if rng.random() < 0.6:
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
        image = photometric(image, rng, colour=style not in ("clipart", "pencil") and not sketch)
        rgb = (image * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(rgb), mask


_PHOTOS: dict = {}
"""Each drawing process's :class:`training.augment.BackgroundPhotos`, by folder."""


def _draw_one(args) -> tuple[np.ndarray, np.ndarray]:
    folder, view, seed, backgrounds, size = args
    from training.augment import BackgroundPhotos

    if backgrounds not in _PHOTOS:  # once a process: listing the folder for every picture would cost more
        _PHOTOS[backgrounds] = BackgroundPhotos(backgrounds)
    photos = _PHOTOS[backgrounds]
    rgb, mask = finder_sample(Path(folder), view, seed, photos)
    image, _, (h, w) = letterbox(rgb, size)
    target = np.full((size, size), 255, np.uint8)  # 255: padding, not scored
    small = Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).resize((w, h), Image.Resampling.BILINEAR)
    target[:h, :w] = (np.asarray(small) > 127).astype(np.uint8)
    return (image * 255.0 + 0.5).to(torch.uint8).numpy(), target



def draw_set(shapenet: Path, renders: Path, split: str, count: int, seed: int, backgrounds: Path | None,
             size: int = FINDER_SIZE, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``count`` letterboxed pictures of ``split``: (count, 3, S, S) uint8 and targets (count, S, S) uint8
    (1 object, 0 background, 255 padding)."""
    from training.dataset import RenderedViews

    views = RenderedViews(shapenet, renders, split)
    if len(views) == 0:
        raise ValueError(f"no rendered views of the {split} split in {renders}; render them: python training/render.py")
    rng = np.random.default_rng((seed, 7))
    picks = rng.integers(0, len(views), count)
    jobs = [(str(views.view_folder(int(i))[0]), views.view_folder(int(i))[1], int(rng.integers(2**62)),
             None if backgrounds is None else str(backgrounds), size) for i in picks]
    if workers > 1:  # spawned, not forked: a parent that has run torch ops would leave forked workers hung
        with get_context("spawn").Pool(workers, initializer=ignore_ctrl_c) as pool:
            drawn = pool.map(_draw_one, jobs, chunksize=16)
    else:
        drawn = [_draw_one(j) for j in jobs]
    return np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over the scored pixels; logits (B, 1, S, S), target (B, S, S) uint8."""
    valid = (target != 255).float()
    t = (target == 1).float()
    x = logits[:, 0]
    bce = (F.binary_cross_entropy_with_logits(x, t, reduction="none") * valid).sum() / valid.sum().clamp_min(1)
    p = torch.sigmoid(x) * valid
    dice = 1 - (2 * (p * t).sum((1, 2)) + 1) / (p.sum((1, 2)) + t.sum((1, 2)) + 1)
    return bce + dice.mean()


def iou(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean IoU at 0.5 over pictures with an object (scored pixels only); logits (B, 1, S, S), target (B, S, S)."""
    valid = target != 255
    pred, t = (logits[:, 0] > 0) & valid, (target == 1)
    inter, union = (pred & t).sum((1, 2)).float(), (pred | t).sum((1, 2)).float()
    has = t.sum((1, 2)) > 0
    return float((inter[has] / union[has].clamp_min(1)).mean()) if has.any() else float("nan")


def train(images: np.ndarray, targets: np.ndarray, val_images: np.ndarray, val_targets: np.ndarray,
          steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0, config: FinderConfig | None = None,
          init: ObjectFinder | None = None) -> tuple[ObjectFinder, float]:
    """Train a finder on the drawn pictures (from ``init``'s weights when given); returns it (eval mode)
    and its val IoU."""
    torch.manual_seed(seed)
    net = ObjectFinder(config or FinderConfig()) if init is None else init.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = np.random.default_rng(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(targets)
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(images), batch))
        x, y = x_all[idx].float() / 255.0, y_all[idx]
        if rng.random() < 0.5:  # mirrored: the letterbox padding then sits left, as it never does at inference,
            x, y = x.flip(-1), y.flip(-1)  # but the padding is not scored and the object is what is learnt
        loss = _loss(net(x), y)
        if not torch.isfinite(loss):
            raise ValueError(f"the training loss became {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps:
            log.info("step %d/%d loss %.4f (%.2f s/step)", step, steps, loss.item(), (time.time() - start) / step)
    net.eval()
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(val_images[i:i + 64]).float() / 255.0)
                            for i in range(0, len(val_images), 64)])
    return net, iou(logits, torch.from_numpy(val_targets))


def check_masks(finder, shapenet: str, renders: str, split: str, views: int, backgrounds,
                styles=None, progress: bool = True, sheet: list | None = None, sheet_count: int = 4
                ) -> dict[str, dict[str, float]]:
    """Mask IoU against the true mask, per picture style, of the finder, of the alpha inference takes from it (its
    unsure parts dropped, :func:`recon_core.network.finder.found_alpha`, and fitted to the object's edges in the
    picture, :func:`recon_core.network.finder.fit_to_picture`) and of the border-colour rule.

    The pictures are the check sets' (``evaluate.py --style``: :func:`training.eval_data.load_input`
    with each sample's seed). A picture where a method finds nothing scores 0 for it.

    Returns:
        ``{style: {"finder": mean IoU, "as used": mean IoU, "border colour": mean IoU, "pictures": n}}``; when
        ``sheet`` is a list, the first ``sheet_count`` pictures of each style are appended to it as
        ``(style, rgb, mask as used or None, border mask or None, true mask)``.
    """
    from tqdm import tqdm

    from recon_core.network.crop import object_pixels
    from recon_core.network.finder import find_object, fit_to_picture, found_alpha
    from training.eval_data import discover, load_input, select_samples
    from training.styles import STYLES

    styles = [st for st in (styles or STYLES) if st != "clean"]  # clean has its alpha
    samples = select_samples(discover(shapenet, renders, split), views)
    if not samples:
        raise ValueError(f"no photo view of the {split} split's models in {renders}: give a split that has them "
                         "(train, val or test) or render them (training/render.py)")
    out: dict[str, dict[str, float]] = {}
    for style in styles:
        scores = {"finder": [], "as used": [], "border colour": []}
        for sample in tqdm(samples, desc=style, unit="picture", disable=not progress):
            rgb, _, cam, mask = load_input(sample, style, backgrounds)
            truth = _picture_mask(mask, rgb.shape[:2], style, sample, backgrounds)
            found = find_object(finder, rgb)
            border = object_pixels(rgb, None)
            used = None if found is None else fit_to_picture(found_alpha(found), rgb) > 127  # as inference takes it
            for name, pred in (("finder", None if found is None else found > 0.5), ("as used", used),
                               ("border colour", border)):
                scores[name].append(0.0 if pred is None else float((pred & truth).sum() / max((pred | truth).sum(), 1)))
            if sheet is not None and len(scores["finder"]) <= sheet_count:
                sheet.append((style, rgb, used, border, truth))
        out[style] = {k: float(np.mean(v)) for k, v in scores.items()} | {"pictures": len(samples)}
    return out


def mask_sheet(rows: list, path: Path, tile: int = 112) -> None:
    """A contact sheet of :func:`check_masks`'s ``sheet``: one row per style, each picture followed by
    the object finder's mask as inference takes it and the border-colour rule's over it (object kept, the rest greyed
    out).
    Written through a temporary file and a rename."""
    from PIL import ImageDraw

    from recon_core.io.export import atomic_write_bytes

    styles = list(dict.fromkeys(r[0] for r in rows))
    per_row = max(sum(r[0] == st for r in rows) for st in styles)
    label = 18
    sheet = Image.new("RGB", (120 + per_row * 3 * tile, label + len(styles) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(("picture", "finder, as used", "border colour") * per_row):
        draw.text((120 + c * tile + 4, 3), name, fill=(0, 0, 0))

    def fit(rgb: np.ndarray) -> Image.Image:
        img = Image.fromarray(rgb)
        img.thumbnail((tile, tile))
        out = Image.new("RGB", (tile, tile), "white")
        out.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
        return out

    for r, style in enumerate(styles):
        draw.text((4, label + r * tile + tile // 2 - 6), style, fill=(0, 0, 0))
        for k, (_, rgb, found, border, _) in enumerate([x for x in rows if x[0] == style]):
            x0 = 120 + 3 * k * tile
            sheet.paste(fit(rgb), (x0, label + r * tile))
            for j, mask in enumerate((found, border)):
                kept = np.full_like(rgb, 200) if mask is None else np.where(mask[..., None], rgb, np.uint8(200))
                sheet.paste(fit(kept), (x0 + (j + 1) * tile, label + r * tile))
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _picture_mask(mask: np.ndarray, shape: tuple[int, int], style: str, sample, backgrounds) -> np.ndarray:
    """The true mask in the styled picture's pixels: the render's, or for ``small_offcentre`` the object
    redrawn white on black by the same style and seed (the style moves every pixel the same way)."""
    if shape == mask.shape:
        return mask
    from training.eval_data import load_depth, load_view
    from training.styles import stylize

    _, _, cam, _ = load_view(sample.entry, sample.view)
    depth = load_depth(sample.entry, sample.view, cam)
    white = np.zeros((*mask.shape, 4), np.uint8)
    white[..., :3] = 0  # a black object: on the style's white canvas it is the dark pixels
    white[..., 3] = mask * np.uint8(255)
    picture, _ = stylize(white, mask, depth, cam.K, style, sample.seed, backgrounds)
    return picture.mean(axis=2) < 128


def _digest(*parts: bytes) -> str:
    """A short hash of ``parts`` for the picture cache's file names (10 hex digits)."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()[:10]


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached pictures and targets at ``path``; None when there are none, or when the file cannot be read (then
    a warning names it, and the pictures are drawn again and written over it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            images, targets = data["images"], data["targets"]
    except NPZ_ERRORS as err:
        log.warning("the picture cache %s cannot be read (%s): drawing its pictures again", path, err)
        return None
    if images.ndim != 4 or targets.ndim != 3 or len(images) != len(targets):
        log.warning("the picture cache %s holds arrays of unexpected shapes: drawing its pictures again", path)
        return None
    return images, targets


def _init_finder(path: Path) -> tuple[ObjectFinder | None, str | None]:
    """``--init``'s finder, or None and one sentence saying why it cannot be started from: no files there, another
    kind of model (the reconstruction network's JSON has ``model``, a finder's ``finder``), or files that do not
    load (truncated, corrupt)."""
    from recon_core.io.weights import WeightsError, load_finder, model_files

    cfg_path, weights_path = model_files(path)
    if not (cfg_path.is_file() and weights_path.is_file()):
        return None, (f"--init {path}: no object finder there ({cfg_path} and {weights_path} are not both there); "
                      "give a finder saved by this script, e.g. models/finder")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    if isinstance(meta, dict) and "finder" not in meta and "model" in meta:
        return None, (f"--init {path} is a reconstruction model, not an object finder; give a finder saved by this "
                      "script, e.g. models/finder")
    try:
        return load_finder(path), None
    except WeightsError as err:
        import re

        found = re.search(r"cannot be loaded \((.*)\); ", str(err))  # load_finder's reason, its advice left out
        detail = f" ({found.group(1)})" if found else ""
        return None, (f"--init {path}: the object finder {weights_path} is corrupt or truncated{detail}; give "
                      "another finder, or start without --init")


def _path_error(flag: str, path: Path, folder: bool = False) -> str | None:
    """Why ``path`` (a file or model stem to write, or with ``folder`` a folder to fill) cannot be written, as one
    sentence naming ``flag``; None when it can."""
    reason = unwritable_reason(path if folder else path.parent, folder=True)  # a stem: only its folder matters
    return None if reason is None else f"{flag} {path}: {reason}; give another path"


def _argument_error(args: argparse.Namespace) -> str | None:
    """The first option that cannot be used, as one sentence naming it; None when all can."""
    counts = ("check_views",) if args.check else ("pictures", "val_pictures", "steps", "batch")
    for name in counts:
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
    if args.check:
        return None if args.sheet is None else _path_error("--sheet", args.sheet)
    if args.workers < 0:
        return f"--workers must be 0 (draw in this process) or more, got {args.workers}"
    if not args.lr > 0:
        return f"--lr must be above 0, got {args.lr:g}"
    return _path_error("--out", args.out) or _path_error("--cache", args.cache, folder=True)


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/train_finder.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapenet", type=Path, default=Path("data/shapenet"))
    p.add_argument("--renders", type=Path, default=Path("data/renders"))
    p.add_argument("--backgrounds", type=Path, default=Path("data/backgrounds_finder"),
                   help="photographs behind the objects (training/build_backgrounds.py --sources finder)")
    p.add_argument("--out", type=Path, default=None,
                   help="output stem, e.g. runs/finder/finder; required to train (models/finder, the shipped finder, "
                        "only when named); with --check, the finder checked (default: models/finder)")
    p.add_argument("--cache", type=Path, default=Path("data/finder_cache"), help="drawn pictures (reused)")
    p.add_argument("--pictures", type=int, default=12000, help="training pictures to draw (default: 12000)")
    p.add_argument("--val-pictures", type=int, default=600, help="validation pictures to draw (default: 600)")
    p.add_argument("--steps", type=int, default=1500, help="training steps (default: 1500)")
    p.add_argument("--batch", type=int, default=32, help="pictures a step (default: 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 0.002)")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the pictures (0 or 1: this one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="start from this finder's weights (fine-tuning)")
    p.add_argument("--check", action="store_true",
                   help="train nothing: print the mask IoU of the finder (--out) and of the border-colour rule on "
                        "the check sets' pictures of --check-split (evaluate.py --style), per style")
    p.add_argument("--check-split", default="val")
    p.add_argument("--sheet", type=Path, default=None, help="with --check: a contact sheet of the masks (PNG)")
    p.add_argument("--check-views", type=int, default=1, help="views per model of the check (default: 1)")
    p.add_argument("--check-backgrounds", default="data/backgrounds",
                   help="photographs of the check's background style (default: the check sets', data/backgrounds; "
                        "none: synthetic backgrounds)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.out is None and not args.check:  # a bare run wrote over the shipped finder
        print("error: give --out, the finder to write, e.g. --out runs/finder/finder (--out models/finder replaces "
              "the shipped one).", file=sys.stderr)
        return 2
    args.out = Path("models/finder") if args.out is None else args.out
    error = _argument_error(args)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        from recon_core.io.weights import load_finder

        from training.eval_data import background_photos

        try:
            # a mistyped folder fell back to synthetic backgrounds silently, and scored the photographs far too high
            photos = background_photos(args.check_backgrounds, "--check-backgrounds")
            finder = load_finder(args.out)
            if finder is None:
                raise ValueError(f"no finder at {args.out}.safetensors; train one: python training/train_finder.py")
            rows: list = []
            table = check_masks(finder, str(args.shapenet), str(args.renders), args.check_split, args.check_views,
                                photos, sheet=rows if args.sheet else None)
            if args.sheet:
                mask_sheet(rows, args.sheet)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.sheet:
            print(f"wrote {args.sheet}")
        print(f"mask IoU x100 on the {args.check_split} check pictures ({args.check_views} view(s) per model)")
        print("| style | pictures | object finder | as used (unsure parts dropped, fitted to the picture) | border colour |\n|---|--:|--:|--:|--:|")
        for style, row in table.items():
            print(f"| {style} | {row['pictures']} | {100 * row['finder']:.1f} | {100 * row['as used']:.1f} "
                  f"| {100 * row['border colour']:.1f} |")
        return 0
    if not (args.backgrounds / "sources.json").is_file():
        print(f"error: no backgrounds in {args.backgrounds}; build them: "
              "python training/build_backgrounds.py --sources finder", file=sys.stderr)
        return 2
    from training.dataset import data_folder_error

    error = data_folder_error(args.shapenet, args.renders, "--shapenet", "--renders")
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    backgrounds_id = _digest((args.backgrounds / "sources.json").read_bytes())
    data_id = _digest(str(args.shapenet.resolve()).encode(), str(args.renders.resolve()).encode(),
                      (args.shapenet / "manifest.json").read_bytes())
    init = None
    if args.init is not None:
        init, error = _init_finder(args.init)
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        sets = {}
        for split, count in (("train", args.pictures), ("val", args.val_pictures)):
            path = args.cache / f"{split}_{count}_{FINDER_SIZE}_{args.seed}_{backgrounds_id}_{data_id}.npz"
            cached = _read_cache(path)
            if cached is not None:
                sets[split] = cached
            else:
                t = time.time()
                sets[split] = draw_set(args.shapenet, args.renders, split, count, args.seed + (split == "val"),
                                       args.backgrounds, workers=args.workers)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.stem + ".partial.npz")
                np.savez(tmp, images=sets[split][0], targets=sets[split][1])
                tmp.replace(path)
                log.info("drew %d %s pictures in %.0f s -> %s", count, split, time.time() - t, path)
        net, val_iou = train(*sets["train"], *sets["val"], steps=args.steps, batch=args.batch, lr=args.lr,
                             seed=args.seed, init=init)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.info("val IoU %.3f over %d pictures", val_iou, args.val_pictures)
    save_finder(net, args.out, {"trained": True, "steps": args.steps, "init": None if args.init is None else str(args.init),
                                "pictures": args.pictures,
                                "val_iou": round(val_iou, 4), "val_pictures": args.val_pictures,
                                "backgrounds": str(args.backgrounds), "style_shares": STYLE_SHARES})
    print(f"wrote {args.out}.safetensors (val IoU {val_iou:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
