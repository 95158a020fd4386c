"""Refit a model's category head on pictures as designers take them (the encoder stays as it is).

    python training/fit_category_head.py --model models/default --out runs/cathead/model

The category head is one linear layer on the encoder's global feature
(:attr:`recon_core.model.ReconstructionNet.category_head`). It was trained on clean renders and
line drawings only, and names most photos on backgrounds and pencil sketches wrongly. This
refits it, multinomial logistic regression with L2 weight decay, on the frozen encoder's
features of train-split views shown in every picture style (:data:`STYLES`), each prepared
exactly as inference prepares it: the object found by the object finder when the picture has
no alpha (:mod:`recon_core.finder`), cropped, composited on white. Backgrounds are the finder's
(``data/backgrounds_finder``), not the check set's.

The weight decay is chosen on the validation split (the same styles, 3 views per model), and
the head is only kept when its validation accuracy over all styles beats the current head's:
the script prints both, per style. Writes ``OUT.safetensors`` + ``OUT.json`` (the model with
the new head, a ``category_head`` record of what was measured); the temperature should then be
refitted (training/calibrate.py). Categories are weighted by their inverse frequency, so the
rare ones count as much as chairs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

__all__ = ["STYLES", "DECAYS", "features", "fit_head", "main"]

log = logging.getLogger("fit_category_head")

STYLES = ("clean", "background", "jpeg", "clipart", "pencil", "small_offcentre", "no_alpha")
"""Picture styles of the features (:data:`training.styles.STYLES`); the renders' own sketch views are
added as they are (named ``sketch``), so the head keeps naming line drawings."""
DECAYS = (1e-4, 1e-3, 1e-2, 3e-2)
"""Weight decays tried; the validation split picks one."""


def features(model, finder, samples, styles, backgrounds, progress: bool = True
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Global features (N, G) of every sample in every style, their labels (N,) and styles.

    A picture without alpha gets the finder's mask as its alpha (as :class:`recon_core.inference.Reconstructor`
    does); samples of synsets outside the 13 categories are skipped.
    """
    from tqdm import tqdm

    from recon_core.categories import CATEGORIES
    from recon_core.finder import finder_alpha
    from recon_core.image import prepare_image
    from training.evaluate import load_input

    index = {c.synset: i for i, c in enumerate(CATEGORIES)}
    todo = [(s, st) for s in samples if s.entry.synset in index for st in styles]
    feats, labels, names = [], [], []
    with torch.inference_mode():
        for sample, style in tqdm(todo, desc="features", unit="picture", disable=not progress):
            rgb, alpha, _, _ = load_input(sample, style, backgrounds)
            if alpha is None and finder is not None:
                alpha = finder_alpha(finder, rgb)
            prepared = prepare_image(rgb, alpha, model.config.image_size)
            _, global_feature = model.encoder(prepared.image[None])
            feats.append(global_feature[0].float().numpy())
            labels.append(index[sample.entry.synset])
            names.append(style)
    return np.stack(feats), np.array(labels), names


def fit_head(x: np.ndarray, y: np.ndarray, classes: int, decay: float, init: tuple[torch.Tensor, torch.Tensor],
             steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted multinomial logistic regression by L-BFGS from ``init`` (weight (K, G), bias (K,)).

    Each class's pictures weigh in inverse proportion to their count; ``decay`` is the L2 penalty
    on the weight. Returns the new (weight, bias).
    """
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).long()
    counts = torch.bincount(yt, minlength=classes).double()
    sample_weight = (1.0 / counts.clamp_min(1))[yt]
    sample_weight = sample_weight / sample_weight.sum()
    w = init[0].detach().double().clone().requires_grad_(True)
    b = init[1].detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(xt @ w.T + b, yt, reduction="none")
        loss = (nll * sample_weight).sum() + decay * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


def _accuracy(x: np.ndarray, y: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N,) bool: the arg-max of ``x @ w.T + b`` is the label."""
    return ((torch.from_numpy(x).float() @ w.T + b).argmax(1).numpy() == y)


def _by_style(hits: np.ndarray, names: list[str]) -> dict[str, float]:
    names_arr = np.array(names)
    return {st: float(hits[names_arr == st].mean()) for st in (*STYLES, "sketch") if (names_arr == st).any()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fit-category-head", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model stem (default: models/default)")
    p.add_argument("--out", type=Path, required=True, help="output model stem (the model with the new head)")
    p.add_argument("--finder", default=None, help="object finder (default: models/finder)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--backgrounds", default="data/backgrounds_finder",
                   help="photographs of the background style (default: the finder's, not the check set's)")
    p.add_argument("--train-views", type=int, default=6, help="views per train model (default: 6)")
    p.add_argument("--val-views", type=int, default=3, help="views per val model (default: 3)")
    p.add_argument("--cache", type=Path, default=Path("runs/cache"), help="feature cache folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from recon_core.categories import CATEGORIES
    from recon_core.finder import load_finder
    from recon_core.weights import WeightsError, load_model, save_model
    from training.evaluate import DataError, discover, select_samples

    try:
        model, meta = load_model(args.model)
        model.eval()
        finder = load_finder(args.finder)
        if finder is None:
            raise DataError("no object finder (models/finder): train it first, python training/train_finder.py")
        sets = {}
        for split, views in (("train", args.train_views), ("val", args.val_views)):
            entries = discover(args.shapenet, args.renders, split)
            if not entries:
                raise DataError(f"No {split} models with renders under {args.renders}; build and render the data set.")
            samples = select_samples(entries, views)
            sketches = select_samples(entries, max(1, views // 3), sketches=True)
            key = f"catfeat_{Path(args.model or 'models/default').name}_{split}_{views}_{len(samples)}_{len(sketches)}.npz"
            path = args.cache / key
            if path.is_file():
                with np.load(path) as d:
                    sets[split] = (d["x"], d["y"], [str(s) for s in d["styles"]])
            else:
                x, y, names = features(model, finder, samples, STYLES, args.backgrounds)
                xs, ys, _ = features(model, finder, sketches, ("clean",), args.backgrounds)
                sets[split] = (np.concatenate([x, xs]), np.concatenate([y, ys]), names + ["sketch"] * len(ys))
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, x=sets[split][0], y=sets[split][1], styles=np.array(sets[split][2]))
    except (DataError, WeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (xt, yt, _), (xv, yv, sv) = sets["train"], sets["val"]
    init = (model.category_head.weight.detach().float(), model.category_head.bias.detach().float())
    before = _accuracy(xv, yv, *init)
    best = None
    for decay in DECAYS:
        w, b = fit_head(xt, yt, len(CATEGORIES), decay, init)
        acc = _accuracy(xv, yv, w, b)
        print(f"decay {decay:g}: val accuracy {100 * acc.mean():.1f}% (train {100 * _accuracy(xt, yt, w, b).mean():.1f}%)")
        if best is None or acc.mean() > best[0].mean():
            best = (acc, decay, w, b)
    acc, decay, w, b = best
    print(f"val accuracy over {len(yv)} pictures: current head {100 * before.mean():.1f}%, refitted "
          f"{100 * acc.mean():.1f}% (decay {decay:g})")
    old_style, new_style = _by_style(before, sv), _by_style(acc, sv)
    for st in old_style:
        print(f"  {st:>16}: {100 * old_style[st]:5.1f}% -> {100 * new_style[st]:5.1f}%")
    if acc.mean() <= before.mean():
        print("the refitted head is not better on val: nothing written")
        return 1
    with torch.no_grad():
        model.category_head.weight.copy_(w)
        model.category_head.bias.copy_(b)
    record = {"decay": decay, "train_pictures": int(len(yt)), "val_pictures": int(len(yv)), "styles": list(STYLES),
              "backgrounds": args.backgrounds, "val_accuracy_before": round(float(before.mean()), 4),
              "val_accuracy_after": round(float(acc.mean()), 4),
              "val_accuracy_by_style": {st: [round(old_style[st], 4), round(new_style[st], 4)] for st in old_style}}
    extra = {k: v for k, v in meta.items() if k not in ("model", "trained")}
    save_model(model, args.out, {**extra, "category_head": record})
    print(f"wrote {args.out}.safetensors / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
