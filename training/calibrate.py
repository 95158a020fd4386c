"""Fit the category probabilities' temperature on the validation split, so the probabilities printed mean something.

    python training/calibrate.py --model models/default --split val --views-per-model 3

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar
``T`` divides the category scores (the head's logits, or its branch's with ``model.category_branch``; with
``model.category_bank_weight`` > 0, their log-probabilities plus the shape bank's candidates' weighted log-votes,
:func:`recon_core.io.inference.fuse_category_scores`), chosen to minimise the negative log-likelihood of the
true categories over the validation pictures, each shown as rendered and redrawn in the styles designers send
(:data:`CALIBRATION_STYLES`, :mod:`training.styles`). ``T`` is written into the model's JSON
(``model.category_temperature`` for the head's logits and, when the candidates vote,
``model.category_vote_temperature`` for the voted scores, each fitted on its own scores; with a ``calibration``
record of what was measured); inference then reports ``softmax(scores / T)``. The arg-max, hence the category used
and the mesh, does not change. With the votes each picture runs the network and the candidates' fits (~0.2 s; ~3
minutes for the 738 validation pictures here). Decisions are taken on the validation split only; the test split
stays for reporting (``--split test`` fits and writes nothing)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from training.interrupt import one_sentence_on_ctrl_c

__all__ = ["CALIBRATION_STYLES", "fit_temperature", "nll", "by_style", "collect_scores", "main"]


CALIBRATION_STYLES = ("clean", "background", "jpeg", "clipart", "pencil", "no_alpha")
"""The picture styles each validation view is shown in (:data:`training.styles.STYLES` but the resized one)."""

TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(10.0), 400))
"""The temperatures tried (log-spaced)."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (N,) under ``softmax(logits / T)``, logits (N, K)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature of :data:`TEMPERATURES` with the lowest :func:`nll` (N, K) logits, (N,) labels."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or len(logits) == 0 or labels.shape != (len(logits),):
        raise ValueError(f"logits must be (N, K) with N >= 1 and labels (N,), got {logits.shape}, {labels.shape}")
    losses = [nll(logits, labels, t) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def by_style(before: np.ndarray, after: np.ndarray, labels: np.ndarray, styles: list[str]) -> dict[str, dict]:
    """Each style's accuracy and expected calibration error before and after the temperature.

    Args:
        before, after: (N, K) probabilities without and with the temperature.
        labels: (N,) true category indices.
        styles: N style names, one a picture.

    Returns:
        ``{style: {"pictures": n, "accuracy": a, "ece": [before, after]}}`` in :data:`CALIBRATION_STYLES`
        order (styles without a picture left out), then any other style met, in order of first appearance.
    """
    from training.scoring import expected_calibration_error

    styles, labels = np.asarray(styles), np.asarray(labels)
    if len(styles) != len(labels):
        raise ValueError(f"one style a picture: {len(styles)} styles for {len(labels)} labels")
    seen = list(dict.fromkeys(styles.tolist()))  # each style once, in order of first appearance
    order = [st for st in CALIBRATION_STYLES if st in seen] + [st for st in seen if st not in CALIBRATION_STYLES]
    out = {}
    for st in order:
        m = styles == st
        out[st] = {"pictures": int(m.sum()), "accuracy": float((before[m].argmax(1) == labels[m]).mean()),
                   "ece": [expected_calibration_error(before[m], labels[m]),
                           expected_calibration_error(after[m], labels[m])]}
    return out


def _rounded(value, digits: int = 4):
    """``value`` with every float in it, however deep in dicts and lists, rounded to ``digits`` places."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def collect_scores(model_path: str | None, samples, styles=CALIBRATION_STYLES, backgrounds=None,
                   progress: bool = True, finder=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(scores, head, labels, styles)``: the category scores (N, K) of every sample in every style, the category
    head's own log-probabilities (N, K), the true labels (N,) and the styles (N).

    The scores are those whose softmax over the temperature inference reports
    (:meth:`recon_core.io.inference.Reconstructor.category_scores`: the head's log-probabilities, plus the shape
    bank's candidates' votes when ``model.category_bank_weight`` > 0). A picture without alpha gets the object
    ``finder``'s mask as its alpha, as inference gives it; None: the border-colour rule. Samples of synsets
    outside :data:`recon_core.network.categories.CATEGORIES` are skipped.
    """
    from tqdm import tqdm

    from recon_core.io.inference import Reconstructor
    from recon_core.network.categories import CATEGORIES, SYNSET_INDEX
    from recon_core.network.finder import finder_alpha
    from training.eval_data import load_input

    rec = Reconstructor.from_file(model_path, finder=False)
    scores, heads, labels, names = [], [], [], []
    todo = [(s, st) for s in samples if s.entry.synset in SYNSET_INDEX for st in styles]
    for sample, style in tqdm(todo, desc="calibrate", unit="picture", disable=not progress):
        rgb, alpha, _, _ = load_input(sample, style, backgrounds)
        if alpha is None and finder is not None:
            alpha = finder_alpha(finder, rgb)
        fused, head = rec.category_scores(rgb, alpha)
        scores.append(fused)
        heads.append(head)
        labels.append(SYNSET_INDEX[sample.entry.synset])
        names.append(style)
    k = len(CATEGORIES)
    return np.array(scores).reshape(-1, k), np.array(heads).reshape(-1, k), np.array(labels, dtype=np.int64), names


def _parser() -> argparse.ArgumentParser:
    from training.styles import STYLES

    p = argparse.ArgumentParser(prog="python training/calibrate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model stem whose JSON takes the temperature; required to write it "
                                                  "(models/default, the shipped model, only when named); with "
                                                  "--dry-run or --split test, the model measured (default: "
                                                  "models/default)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--split", default="val", choices=("val", "test"),
                   help="val: fit the temperature (only the validation split tunes anything); test: report the "
                        "model's own temperature's accuracy and calibration, fitting and writing nothing")
    p.add_argument("--views-per-model", type=int, default=3)
    p.add_argument("--styles", nargs="+", default=list(CALIBRATION_STYLES), choices=STYLES, metavar="STYLE",
                   help=f"picture styles (default: {' '.join(CALIBRATION_STYLES)}; of {', '.join(STYLES)})")
    p.add_argument("--backgrounds", default="data/backgrounds",
                   help="photographs of the background style (training/build_backgrounds.py; none: synthetic "
                        "backgrounds; default: data/backgrounds)")
    p.add_argument("--finder", default=None, metavar="PATH|none",
                   help="object finder for pictures without alpha, as inference uses it (default: models/finder)")
    p.add_argument("--dry-run", action="store_true", help="measure and print, do not write the model's JSON")
    return p


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from recon_core.io.export import atomic_write_bytes
    from recon_core.io.weights import WeightsError, check_model_files, default_model_path, model_files
    from training.eval_data import DataError, background_photos, discover, select_samples
    from training.evaluate import finder_choice
    from training.scoring import expected_calibration_error

    path = model_files(args.model or default_model_path())[0]  # the JSON load_model reads, which this writes
    if args.model is None and args.split == "val" and not args.dry_run:  # a bare run wrote into the shipped JSON
        print("error: give --model, the model whose temperature to write, e.g. --model runs/x/model (--model "
              "models/default changes the shipped one), or --dry-run to measure only.", file=sys.stderr)
        return 2
    try:
        if args.views_per_model < 1:
            raise DataError(f"--views-per-model must be at least 1, got {args.views_per_model}.")
        choice = finder_choice(args.finder)
        backgrounds = background_photos(args.backgrounds) if "background" in args.styles else None
        check_model_files(args.model or None)  # before the pictures are read: a JSON without weights
        entries = discover(args.shapenet, args.renders, args.split)
        if not entries:
            raise DataError(f"No {args.split} models with renders under {args.renders}; build and render the data set.")
        samples = select_samples(entries, args.views_per_model)
        from recon_core.io.weights import load_finder

        finder = None if choice is False else load_finder(None if choice is True else choice)
        logits, head, labels, styles = collect_scores(args.model, samples, tuple(args.styles),
                                                      backgrounds=backgrounds, finder=finder)
        meta = json.loads(path.read_text())
    except (DataError, WeightsError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(labels) == 0:
        print(f"error: no {args.split} picture of the model's categories", file=sys.stderr)
        return 2
    fitting = args.split == "val"
    voted = not np.array_equal(logits, head)  # the shape bank's candidates vote (model.category_bank_weight)
    own = meta["model"]
    t_head = fit_temperature(head, labels) if fitting else float(own.get("category_temperature", 1.0))
    t = t_head
    if voted:
        t = fit_temperature(logits, labels) if fitting else float(own.get("category_vote_temperature", 1.0))
    before, after = softmax(logits), softmax(logits, t)
    record = {
        "split": args.split, "pictures": int(len(labels)), "styles": list(args.styles),
        "temperature": round(t, 4), "accuracy": float((before.argmax(1) == labels).mean()),
        "nll_before": nll(logits, labels), "nll_after": nll(logits, labels, t),
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
    }
    styled = by_style(before, after, labels, styles)
    record["accuracy_by_style"] = {st: v["accuracy"] for st, v in styled.items()}
    record["ece_by_style"] = {st: v["ece"] for st, v in styled.items()}
    if voted:
        record["head_temperature"] = round(t_head, 4)
        record["accuracy_head"] = float((head.argmax(1) == labels).mean())
        record["accuracy_head_by_style"] = {st: v["accuracy"] for st, v in
                                            by_style(softmax(head), softmax(head), labels, styles).items()}
    notes = ([] if fitting else ["the model’s own"]) + ([f"the head alone's {t_head:.3f}"] if voted else [])
    print(f"{len(labels)} {args.split} pictures ({len(samples)} views x {len(args.styles)} styles): "
          f"temperature {t:.3f}{' (%s)' % '; '.join(notes) if notes else ''}; accuracy {100 * record['accuracy']:.1f}%"
          + (f" (the category head alone {100 * record['accuracy_head']:.1f}%)" if voted else "")
          + f"; NLL {record['nll_before']:.3f} -> {record['nll_after']:.3f}; ECE {100 * record['ece_before']:.1f} -> "
          f"{100 * record['ece_after']:.1f} (x100, 10 bins)")
    for st, v in styled.items():
        print(f"  {st:>15}: accuracy {100 * v['accuracy']:5.1f}% of {v['pictures']}"
              + (f" (head alone {100 * record['accuracy_head_by_style'][st]:5.1f}%)" if voted else "")
              + f"; ECE {100 * v['ece'][0]:5.1f} -> {100 * v['ece'][1]:5.1f}")
    if args.dry_run or not fitting:
        return 0
    own["category_temperature"] = round(t_head, 4)
    wrote = f"model.category_temperature = {t_head:.4f}"
    if voted:
        own["category_vote_temperature"] = round(t, 4)
        wrote += f" and model.category_vote_temperature = {t:.4f}"
    meta["calibration"] = _rounded(record)
    atomic_write_bytes(path, (json.dumps(meta, indent=2) + "\n").encode())
    print(f"wrote {wrote} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
