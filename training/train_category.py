"""Fit a model's category branch: its encoder's last block copied, fine-tuned with a head of its own for the category.

    python training/train_category.py --model models/default               # ~20 minutes here; then calibrate.py

The shared category head reads the pooled features of a backbone trained for the mesh, on clean renders, with the
category loss at a small weight; on pictures as designers send them it is right two times in three. The branch
(:class:`recon_core.network.heads.CategoryBranch`) starts as a copy of the backbone's last residual block and the head
and is trained for the category alone, on the train split's views drawn in every style of the check sets
(:data:`STYLES`: as rendered, on photographs, as JPEG, clip art, pencil, small and off centre, on white without
alpha; the photographs behind them from ``data/backgrounds_finder``, never the check set's) and on its sketch views,
each picture cropped as inference crops it (the object finder's mask where a style has no alpha). As the branch reads
what the frozen encoder's last block reads, that input is computed once per picture (in the encoder's inference
precision) and the block and head are trained on it: a few minutes of training after ~15 minutes of pictures.

Written beside the model: ``STEM.category.safetensors`` (fp16, stamped with the encoder it was fitted on), and in
``STEM.json`` ``model.category_branch = true``, ``model.category_bank_weight`` (``--vote-weight``) and
``model.category_temperature`` 1 (the head's temperature and vote temperature and the ``calibration`` record go, as
they do not fit the branch: calibrate.py fits its own); the network's
weights and mesh do not change (the refiner stays conditioned on the shared head). Before and after, it prints the
category right on the validation split, 3 views a model in every style (pictures on the check set's photographs).
Then fit the temperature: ``python training/calibrate.py --model STEM``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F
from training.interrupt import ignore_ctrl_c, one_sentence_on_ctrl_c
from training.styles import STYLES  # each training and validation view is drawn in every style

__all__ = ["STYLES", "collect", "train_branch", "accuracy_by_style", "main"]

log = logging.getLogger("recon-train-category")


def collect(model: str | None, samples: list, styles, backgrounds: str, progress: bool = True
            ) -> dict[str, object]:
    """Each sample in each style as the branch sees it: ``{"feats": (N, C, h, w) float16, "labels": (N,) long,
    "styles": [N names], "head": (N, K) float32}`` (``head``: the shared head's logits, for the before/after).

    ``samples``: (:class:`training.eval_data.Sample`, style or None) pairs; None: every style of ``styles``.
    """
    from tqdm import tqdm

    from recon_core.io.inference import Reconstructor
    from recon_core.io.weights import load_finder
    from recon_core.network.categories import SYNSET_INDEX
    from recon_core.network.crop import prepare_image
    from recon_core.network.finder import finder_alpha
    from training.augment import BackgroundPhotos
    from training.eval_data import load_input

    rec = Reconstructor.from_file(model, finder=False, overrides={"category_branch": False})  # the head's own
    net = rec.model
    finder = load_finder(None)
    photos = BackgroundPhotos(backgrounds)
    index = SYNSET_INDEX
    todo = [(s, st) for s, fixed in samples for st in ([fixed] if fixed else styles)]
    feats, heads, labels, names = [], [], [], []
    for sample, style in tqdm(todo, desc="pictures", unit="picture", disable=not progress, mininterval=10):
        rgb, alpha, _, _ = load_input(sample, style, photos)
        if alpha is None and finder is not None:
            alpha = finder_alpha(finder, rgb)
        images = prepare_image(rgb, alpha, net.config.image_size).image[None]
        with torch.inference_mode():
            _, pooled, tap = net.encoder(images, pyramid=False, tap=True)
            heads.append(net.category_head(pooled)[0].float())
        feats.append(tap[0].to(torch.float16).contiguous())
        labels.append(index[sample.entry.synset])
        names.append(style)
    return {"feats": torch.stack(feats), "labels": torch.tensor(labels, dtype=torch.long), "styles": names,
            "head": torch.stack(heads)}


def _collect_shard(args: tuple) -> str:
    """:func:`collect` of one shard in a worker process; the result saved to a temporary file whose path it returns."""
    model, samples, styles, backgrounds, path = args
    torch.set_num_threads(1)
    torch.save(collect(model, samples, styles, backgrounds, progress=False), path)
    return path


def collect_parallel(model, samples, styles, backgrounds, workers: int, folder: str) -> dict[str, object]:
    """:func:`collect` split over ``workers`` processes (1: in this one), in the samples' order."""
    if workers <= 1:
        return collect(model, samples, styles, backgrounds)
    from multiprocessing import get_context

    size = -(-len(samples) // workers)
    shards = [samples[i:i + size] for i in range(0, len(samples), size)]  # in order, none empty
    jobs = [(model, shard, styles, backgrounds, str(Path(folder) / f"shard_{i}.pt")) for i, shard in enumerate(shards)]
    # a Pool, whose exit ends its workers at once (an executor's waits for their shards, which ignore Ctrl-C)
    with get_context("spawn").Pool(len(shards), initializer=ignore_ctrl_c) as pool:
        paths = pool.map(_collect_shard, jobs)
    parts = [torch.load(p, weights_only=True) for p in paths]  # this run's own files, in its own folder
    for p in paths:
        Path(p).unlink()
    out = {k: torch.cat([d[k] for d in parts]) for k in ("feats", "labels", "head")}
    out["styles"] = [s for d in parts for s in d["styles"]]
    return out


def train_branch(branch: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, epochs: int = 4,
                 lr: float = 1e-4, batch: int = 64, weight_decay: float = 0.05, smoothing: float = 0.1,
                 dropout: float = 0.2, seed: int = 0, log_every: int = 1) -> list[float]:
    """Train ``branch`` ((B, C, h, w) -> (B, K)) in place on ``feats`` (N, C, h, w) and ``labels`` (N,): AdamW,
    one-cycle learning rate, label smoothing, dropout before the head. Returns each epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in branch.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    per_epoch = max(1, len(feats) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch, pct_start=0.1)
    drop = torch.nn.Dropout(dropout)
    branch.train()
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(feats), generator=generator)
        total, start = 0.0, time.perf_counter()
        for i in range(per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            logits = branch.head(drop(branch.pooled(feats[idx].float())))
            loss = F.cross_entropy(logits, labels[idx], label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        losses.append(total / per_epoch)
        if log_every and (epoch + 1) % log_every == 0:
            log.info("epoch %d/%d: loss %.3f (%.0f s)", epoch + 1, epochs, losses[-1], time.perf_counter() - start)
    branch.eval()
    return losses


def predict(branch: torch.nn.Module, feats: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N, K) float32 logits of ``branch`` on ``feats`` (N, C, h, w)."""
    with torch.inference_mode():
        return torch.cat([branch(feats[i:i + batch].float()).float() for i in range(0, len(feats), batch)])


def accuracy_by_style(logits: torch.Tensor, labels: torch.Tensor, styles: list[str]) -> dict[str, float]:
    """The share of pictures whose arg-max is right, for each style in first-seen order and ``"all"``."""
    right = (logits.argmax(1) == labels).float()
    out = {}
    for style in dict.fromkeys(styles):
        mask = torch.tensor([s == style for s in styles])
        out[style] = float(right[mask].mean())
    out["all"] = float(right.mean()) if len(right) else float("nan")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python training/train_category.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model stem whose branch is fitted and written beside it; required "
                                                  "unless --dry-run (models/default, the shipped model, only when "
                                                  "named; with --dry-run the default)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--views-per-model", type=int, default=12, help="training views of each model (default 12)")
    p.add_argument("--sketch-views", type=int, default=2, help="sketch views of each training model (default 2)")
    p.add_argument("--backgrounds", default="data/backgrounds_finder",
                   help="photographs behind the training pictures (never the check set's data/backgrounds)")
    p.add_argument("--check-backgrounds", default="data/backgrounds", help="photographs of the validation pictures")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--vote-weight", type=float, default=0.0,
                   help="model.category_bank_weight written with the branch (default 0: the branch alone)")
    p.add_argument("--workers", type=int, default=2, help="processes drawing the pictures (default 2)")
    p.add_argument("--dry-run", action="store_true", help="train and measure, write nothing")
    return p


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from recon_core.io.export import atomic_write_bytes, os_error_sentence
    from recon_core.io.weights import (WeightsError, check_model_files, default_model_path, load_model,
                                       save_category_branch)
    from recon_core.network.categories import CATEGORIES
    from recon_core.network.heads import CategoryBranch
    from training.eval_data import DataError, Sample, discover, select_samples

    if args.model is None and not args.dry_run:  # a bare run wrote over the shipped model's branch and JSON
        print("error: give --model, the model whose category branch to fit and write, e.g. --model runs/x/model "
              "(--model models/default changes the shipped one), or --dry-run to write nothing.", file=sys.stderr)
        return 2
    stem = args.model or default_model_path()
    try:
        for name in ("views_per_model", "epochs", "workers"):
            if getattr(args, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
        if args.sketch_views < 0:
            raise DataError(f"--sketch-views must be 0 or more, got {args.sketch_views}.")
        if not args.lr > 0:
            raise DataError(f"--lr must be above 0, got {args.lr}.")
        if not args.vote_weight >= 0:
            raise DataError(f"--vote-weight must be 0 or more, got {args.vote_weight}.")
        cfg_path, _, meta = check_model_files(stem, branch=False)  # a branch there is fitted again
        if meta.get("trained") is False:
            raise DataError(f"{stem} is not trained (its JSON says so): fit a branch on a trained network.")
        model, _ = load_model(stem, overrides={"category_branch": False})  # a branch there is fitted again
        try:
            type(model.config)(**{**model.config.to_dict(), "category_branch": True})
        except ValueError as err:
            raise DataError(f"{stem}: {err}.") from None
        if args.vote_weight > 0 and (model.bank is None or not model.config.bank_fit_candidates):
            raise DataError(f"--vote-weight {args.vote_weight}: {stem} has no shape bank with fitted candidates to "
                            "vote; give 0.")
        index = {c.synset for c in CATEGORIES}
        train = [e for e in discover(args.shapenet, args.renders, "train") if e.synset in index]
        val = [e for e in discover(args.shapenet, args.renders, "val") if e.synset in index]
        if not train or not val:
            raise DataError(f"No train or val models with renders under {args.renders}; build and render the data set.")
        from training.eval_data import background_photos

        for name, build in (("backgrounds", "python training/build_backgrounds.py --sources finder"),
                            ("check_backgrounds", "python training/build_backgrounds.py")):
            background_photos(getattr(args, name), f"--{name.replace('_', '-')}", build,
                              need="the category branch is fitted and checked on photographs too")
    except (DataError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # training pictures: their own seeds, apart from the check sets' (a sample's seed draws its style's randomness)
    samples = [(Sample(s.entry, s.view, 1_000_000 + s.seed), None) for s in select_samples(train, args.views_per_model)]
    if args.sketch_views:
        samples += [(Sample(s.entry, s.view, 2_000_000 + s.seed), "clean")
                    for s in select_samples(train, args.sketch_views, sketches=True)]
    checks = [(s, None) for s in select_samples(val, 3)]
    try:
        with tempfile.TemporaryDirectory(prefix="train_category_") as folder:
            start = time.perf_counter()
            data = collect_parallel(str(stem), samples, STYLES, args.backgrounds, args.workers, folder)
            held = collect_parallel(str(stem), checks, STYLES, args.check_backgrounds, args.workers, folder)
    except Exception as err:  # a picture that cannot be drawn, in a worker process: nothing has been written
        print(f"error: drawing the pictures failed ({type(err).__name__}: {err}); nothing was written.",
              file=sys.stderr)
        return 1
    log.info("%d training and %d validation pictures in %.0f s", len(data["labels"]), len(held["labels"]),
             time.perf_counter() - start)
    model.encoder.fold_batchnorm()  # the copy starts as the block inference runs: batch norm in the biases
    branch = CategoryBranch.from_block(model.encoder.stages[-1][-1], model.category_head)
    before = accuracy_by_style(held["head"], held["labels"], held["styles"])
    train_branch(branch, data["feats"], data["labels"], epochs=args.epochs, lr=args.lr)
    after = accuracy_by_style(predict(branch, held["feats"]), held["labels"], held["styles"])
    print(f"category right on {len(held['labels'])} validation pictures (3 views a model x {len(STYLES)} styles), "
          "the shared head -> the branch (neither with the candidates' votes):")
    for style in after:
        print(f"  {style:>15}: {100 * before[style]:5.1f}% -> {100 * after[style]:5.1f}%")
    if args.dry_run:
        return 0
    # the head's temperature does not fit the branch: 1 until calibrate.py fits one (its record goes too)
    own = {k: v for k, v in meta["model"].items() if k != "category_vote_temperature"}
    own.update(category_branch=True, category_bank_weight=args.vote_weight, category_temperature=1.0)
    record = {"train_pictures": int(len(data["labels"])), "views_per_model": args.views_per_model,
              "sketch_views": args.sketch_views, "styles": list(STYLES), "epochs": args.epochs, "lr": args.lr,
              "backgrounds": args.backgrounds, "val_pictures": int(len(held["labels"])),
              "val_accuracy_head": round(before["all"], 4), "val_accuracy_branch": round(after["all"], 4),
              "command": "python training/train_category.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    try:  # the branch first: a JSON that names it without its file would not load
        written = save_category_branch(branch, stem)
        kept = {k: v for k, v in meta.items() if k != "calibration"}
        atomic_write_bytes(cfg_path, (json.dumps({**kept, "model": own, "category_branch": record}, indent=2)
                                      + "\n").encode())
    except OSError as err:
        print(f"error: {os_error_sentence(err)}", file=sys.stderr)
        return 2
    print(f"wrote {written} and model.category_branch into {cfg_path}; now fit the temperature: "
          f"python training/calibrate.py --model {stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
