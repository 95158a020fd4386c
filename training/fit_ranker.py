"""Learn how the shape bank's fitted candidates are ranked, from training pictures with their own model left out.

A shape-bank model poses its ``bank_fit_candidates`` best training models to the picture's silhouette and,
by default, outputs the one whose silhouette covers the mask best. Here that choice is learned: for each
training picture the bank is searched **without the picture's own model** (as for a picture of a new
object), every candidate is fitted, described by :func:`recon_core.network.retrieval.candidate_features`
and scored against the picture's true shape (F1@0.3, the evaluation's protocol). A linear score
``features @ w`` is then fitted so that its softmax over a picture's candidates follows the softmax of
their F1 over ``--label-temperature`` (a listwise loss, ListNet), with an L2 penalty chosen by
cross-validation over models. ``--write OUT`` saves the model with those weights
(``model.bank_rank_weights``; :meth:`recon_core.io.inference.Reconstructor._fitted` uses them).

    python training/fit_ranker.py --out runs/ranker                                # features, fit, report
    python training/fit_ranker.py --out runs/ranker --write runs/var/ranked         # and a model with the weights

The features are cached in ``OUT/features.npz`` (delete it, or pass ``--rebuild``, after changing the model).
``--shard I/N`` collects every N-th picture only, into ``OUT/features_I_of_N.npz``, and stops: run the N shards
side by side, then once without ``--shard`` to fit on all of them.
Exit status: 0 done, 2 bad arguments or data.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("fit-ranker")

LABEL_METRIC = "F1@0.3"
"""The metric a candidate is labelled with."""
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)
"""L2 penalties tried (on standardised features); the best by cross-validation is kept."""
FOLDS = 5
"""Cross-validation folds, split by model."""


def collect(model: str | None, shapenet: str, renders: str, views_per_model: int, limit: int | None,
            num_samples: int, shard: tuple[int, int] = (0, 1)) -> dict[str, np.ndarray]:
    """Features and labels of every training picture's fitted candidates, its own model left out of the bank
    (``shard`` ``(i, n)``: only every n-th picture from the i-th).

    Returns arrays: ``features`` (N, K, F), ``f1`` (N, K), ``sil`` (N, K) (silhouette IoU in the true camera),
    ``valid`` (N, K) bool, ``model`` (N,) bank index of the picture's model.
    """
    from tqdm import tqdm

    from recon_core.io.inference import Reconstructor
    from recon_core.network.categories import CATEGORIES
    from recon_core.network.crop import object_mask, prepare_image
    from recon_core.network.retrieval import RANK_FEATURES
    from training.evaluate import (DataError, Prediction, discover, load_input, load_world_mesh, score_meshes,
                                   select_samples, silhouette_iou, world_to_output)

    rec = Reconstructor.from_file(model, finder=False)
    if not rec.banked or not rec.model.config.bank_fit_candidates:
        raise DataError(f"{model or 'models/default'} has no shape bank with fitted candidates: nothing to rank.")
    bank = rec.model.bank
    entries = discover(shapenet, renders, "train")
    synsets = [c.synset for c in CATEGORIES]
    bank_categories = bank.shape_category.tolist()
    if len(entries) != len(bank_categories) or [synsets.index(e.synset) for e in entries] != bank_categories:
        raise DataError(f"The train split here ({len(entries)} models) is not the one the model's shape bank was "
                        f"built from ({len(bank_categories)}): rebuild the data set or the bank.")
    index = {e.model_id: i for i, e in enumerate(entries)}
    samples = select_samples(entries, views_per_model, limit)[shard[0] :: shard[1]]
    k, f = rec.model.config.bank_fit_candidates, len(RANK_FEATURES)
    n = len(samples)
    out = {"features": np.zeros((n, k, f)), "f1": np.zeros((n, k)), "sil": np.zeros((n, k)),
           "valid": np.zeros((n, k), dtype=bool), "model": np.zeros(n, dtype=np.int64)}
    for i, s in enumerate(tqdm(samples, desc="candidates", unit="picture")):
        rgb, alpha, cam, mask = load_input(s)
        gt_v, gt_f = load_world_mesh(s.entry.mesh_path)
        gt = Prediction(world_to_output(gt_v, cam.R), gt_f)
        own = index[s.entry.model_id]
        out["model"][i] = own
        with torch.no_grad():
            prepared = prepare_image(rgb, alpha, rec.model.config.image_size)
            net = rec.model(prepared.image[None])
        probs = rec._category_probs(net.category_logits)
        ranked = rec._ranked(rgb, alpha, net.verts[0], None, k, exclude=own)
        fitted = rec._fit_all(ranked, object_mask(rgb, alpha))
        if fitted is None:
            continue
        kept = [(choice, pose) for choice, (_, pose) in zip(ranked, fitted) if pose is not None]
        meshes = [rec._snap(choice.row, pose) for choice, pose in kept]
        kept = [(c, m) for c, m in zip(kept, meshes) if m is not None]
        if not kept:
            continue
        features = rec._rank_features([c for c, _ in kept], rec._query_points(net.verts[0]), probs)
        preds = [Prediction(v, fa) for _, (v, fa) in kept]
        scores = score_meshes(preds, gt, num_samples=num_samples, seed=s.seed)
        m = len(kept)
        out["features"][i, :m] = features
        out["f1"][i, :m] = [sc[LABEL_METRIC] for sc in scores]
        out["sil"][i, :m] = [silhouette_iou(p.verts, p.faces, cam, mask) for p in preds]
        out["valid"][i, :m] = True
    return out


def _loss(w: torch.Tensor, x: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, penalty: float) -> torch.Tensor:
    """Listwise cross-entropy of ``softmax(x @ w)`` against ``target`` over each picture's valid candidates, + L2."""
    logits = (x @ w).masked_fill(~valid, -1e9)
    return -(target * logits.log_softmax(dim=1)).sum(dim=1).mean() + penalty * (w * w).sum()


def fit_weights(features: np.ndarray, labels: np.ndarray, valid: np.ndarray, penalty: float,
                temperature: float) -> np.ndarray:
    """(F,) weights on the raw features (standardisation folded in) minimising :func:`_loss`.

    Args:
        features: (N, K, F); labels: (N, K) the candidates' F1; valid: (N, K) bool.
    """
    flat = features[valid]
    mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-9
    x = torch.tensor((features - mean) / std, dtype=torch.float64)
    v = torch.tensor(valid)
    target = (torch.tensor(labels, dtype=torch.float64) / temperature).masked_fill(~v, -1e9).softmax(dim=1)
    w = torch.zeros(features.shape[2], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _loss(w, x, target, v, penalty)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy() / std


def picked(features: np.ndarray, labels: np.ndarray, valid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N,) the label of each picture's candidate with the highest ``features @ weights`` (ties: the first)."""
    score = np.where(valid, features @ weights, -np.inf)
    return labels[np.arange(len(labels)), score.argmax(axis=1)]


def cross_validate(data: dict[str, np.ndarray], penalty: float, temperature: float, folds: int = FOLDS
                   ) -> dict[str, float]:
    """Mean F1 (``f1``) and silhouette IoU (``sil``) of the picked candidates over ``folds`` folds split by model,
    each fold ranked by weights fitted on the others."""
    models = np.unique(data["model"])
    fold_of = {m: i % folds for i, m in enumerate(np.random.default_rng(0).permutation(models))}
    fold = np.array([fold_of[m] for m in data["model"]])
    got = {"f1": np.zeros(len(fold)), "sil": np.zeros(len(fold))}
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any() or not train.any():
            continue
        w = fit_weights(data["features"][train], data["f1"][train], data["valid"][train], penalty, temperature)
        for key in got:
            got[key][test] = picked(data["features"][test], data[key][test], data["valid"][test], w)
    return {key: float(v.mean()) for key, v in got.items()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model stem (default: the shipped model)")
    p.add_argument("--shapenet", default="data/shapenet")
    p.add_argument("--renders", default="data/renders")
    p.add_argument("--out", required=True, help="folder for features.npz and ranker.json")
    p.add_argument("--views-per-model", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="only the first N pictures (a quick try)")
    p.add_argument("--num-samples", type=int, default=5000, help="points sampled per surface for the labels")
    p.add_argument("--label-temperature", type=float, default=0.05,
                   help="the target is softmax(F1 / this) over a picture's candidates")
    p.add_argument("--rebuild", action="store_true", help="collect the features again even if cached")
    p.add_argument("--shard", metavar="I/N", help="collect only every N-th picture from the I-th (0-based) and stop")
    p.add_argument("--write", metavar="STEM", help="save the model with the fitted weights as STEM.json + "
                   "STEM.safetensors (the weights file is copied unless STEM is the model itself)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from recon_core.io.weights import WeightsError, default_model_path
    from recon_core.network.retrieval import RANK_FEATURES
    from training.evaluate import DataError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "features.npz"
    start = time.perf_counter()
    shard = (0, 1)
    if args.shard:
        try:
            shard = tuple(int(x) for x in args.shard.split("/"))
            assert len(shard) == 2 and 0 <= shard[0] < shard[1]
        except (ValueError, AssertionError):
            print(f"error: --shard takes I/N with 0 <= I < N, got {args.shard!r}", file=sys.stderr)
            return 2
        cache = out / f"features_{shard[0]}_of_{shard[1]}.npz"
    parts = sorted(out.glob("features_*_of_*.npz"))
    try:
        if not args.shard and not cache.is_file() and parts and not args.rebuild:
            data = {}
            for part in parts:
                with np.load(part) as z:
                    for key in z.files:
                        data.setdefault(key, []).append(z[key])
            data = {key: np.concatenate(v) for key, v in data.items()}
            log.info("features of %d pictures from %d shards", len(data["model"]), len(parts))
        elif cache.is_file() and not args.rebuild:
            with np.load(cache) as z:
                data = {key: z[key] for key in z.files}
            log.info("features of %d pictures from %s", len(data["model"]), cache)
        else:
            data = collect(args.model, args.shapenet, args.renders, args.views_per_model, args.limit,
                           args.num_samples, shard)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **data)
            tmp.replace(cache)
    except (DataError, WeightsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.shard:
        print(f"collected {len(data['model'])} pictures into {cache}")
        return 0
    keep = data["valid"].any(axis=1)
    data = {key: v[keep] for key, v in data.items()}
    if not len(data["model"]):
        print("error: no training picture gave fitted candidates.", file=sys.stderr)
        return 2
    f1, valid = data["f1"], data["valid"]
    iou_col = RANK_FEATURES.index("iou")
    rank_col = RANK_FEATURES.index("rank")
    one_hot = np.eye(len(RANK_FEATURES))
    report = {
        "pictures": int(len(f1)), "models": int(len(np.unique(data["model"]))),
        "first_by_iou": {k: float(picked(data["features"], data[k], valid, one_hot[iou_col]).mean())
                         for k in ("f1", "sil")},
        "first_of_bank": {k: float(picked(data["features"], data[k], valid, -one_hot[rank_col]).mean())
                          for k in ("f1", "sil")},
        "oracle": float(np.where(valid, f1, -np.inf).max(axis=1).mean()),
        "cross_validated": {},
    }
    for penalty in PENALTIES:
        report["cross_validated"][str(penalty)] = cross_validate(data, penalty, args.label_temperature)
    best = max(PENALTIES, key=lambda p: report["cross_validated"][str(p)]["f1"])
    weights = fit_weights(data["features"], f1, valid, best, args.label_temperature)
    report.update(penalty=best, label_temperature=args.label_temperature,
                  weights=dict(zip(RANK_FEATURES, weights.tolist())), seconds=time.perf_counter() - start)
    cv = report["cross_validated"][str(best)]
    print(f"{report['pictures']} training pictures ({report['models']} models, each left out of the bank), mean "
          f"{LABEL_METRIC} / silhouette IoU of the candidate picked: by the fitted IoU "
          f"{100 * report['first_by_iou']['f1']:.1f} / {100 * report['first_by_iou']['sil']:.1f}, the bank's first "
          f"{100 * report['first_of_bank']['f1']:.1f} / {100 * report['first_of_bank']['sil']:.1f}, learned "
          f"(cross-validated over models, penalty {best:g}) {100 * cv['f1']:.1f} / {100 * cv['sil']:.1f}; best of "
          f"the candidates {100 * report['oracle']:.1f} {LABEL_METRIC}")
    print("weights: " + ", ".join(f"{k} {w:+.3f}" for k, w in report["weights"].items()))
    (out / "ranker.json").write_text(json.dumps(report, indent=2))
    if args.write:
        source = Path(args.model) if args.model else default_model_path()
        meta = json.loads(source.with_suffix(".json").read_text())
        meta["model"]["bank_rank_weights"] = [float(w) for w in weights]
        meta["bank_ranking"] = {k: report[k] for k in ("pictures", "models", "penalty", "label_temperature",
                                                       "first_by_iou", "cross_validated", "oracle")}
        meta["bank_ranking"]["command"] = "training/fit_ranker.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stem = Path(args.write)
        stem.parent.mkdir(parents=True, exist_ok=True)
        if stem.with_suffix(".safetensors").resolve() != source.with_suffix(".safetensors").resolve():
            shutil.copyfile(source.with_suffix(".safetensors"), stem.with_suffix(".safetensors.tmp"))
            stem.with_suffix(".safetensors.tmp").replace(stem.with_suffix(".safetensors"))
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(stem.with_suffix(".json"))
        print(f"wrote {stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
