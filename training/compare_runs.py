"""Is B better than A? Two evaluation runs of the same pictures, compared picture by picture.

    python training/compare_runs.py runs/A runs/B                       # F1@0.3 and Sil-IoU of ours
    python training/compare_runs.py runs/A runs/B --metrics F1@0.3 Chamfer-L2 --method retrieval --json out.json
    python training/compare_runs.py "runs/A_{style}" "runs/B_{style}" --styles no_alpha jpeg clipart pencil background

``runs/A`` and ``runs/B`` are folders written by ``training/evaluate.py --out`` (their ``metrics.json``), or
those files themselves. They must hold the same pictures (model, view, style); otherwise the comparison is
refused with one sentence (exit code 2). With ``--styles``, ``runs/A`` and ``runs/B`` are patterns holding
``{style}``: each style's run (``evaluate.py --style NAME``) is read and all of them pooled as one run of A and one
of B (:func:`load_runs`), so that one decision can be taken over several styles' pictures: the mean over categories
is then over each category's pictures in every style (with the same pictures in each style, the mean of the
styles' own means over categories), and a model's pictures in every style go together in the bootstrap.

For each metric it prints A's and B's score as ``evaluate.py`` prints it, the mean over categories
(``mean``) and over images (``all``), their difference B − A, and a **95 % interval of that difference** from
a paired bootstrap over the models: the models are drawn with replacement (a model's views go together, since
the views of one model are not independent pictures), both runs are scored again on each draw, and the
interval is the 2.5th to 97.5th percentile of the differences (:func:`bootstrap_differences`). An interval
that holds 0 says that another draw of test models could have reversed the comparison. It also counts the
pictures on which B scores more than one point (×100) above A and more than one below.

Exit codes: 0 compared, 2 bad input (a missing or unreadable run, different pictures, an unknown metric
or method, a ``--json`` that cannot be written: checked before the comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: the project root on the path, as ``python training/...`` expects
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.eval_data import DataError  # noqa: E402
from training.evaluate import output_folder  # noqa: E402
from training.scoring import LOWER_IS_BETTER, METRICS, format_value  # noqa: E402

__all__ = ["Paired", "load_run", "load_runs", "pair_runs", "bootstrap_differences", "compare", "format_comparison",
           "main"]

RESAMPLES = 10_000
"""Bootstrap draws of the models (the interval's ends move by ~0.05 points from seed to seed at this count)."""
LEVEL = 0.95
"""Coverage of the interval."""
WIN_MARGIN = 0.01
"""A picture counts as a win (loss) of B when B's score is above (below) A's by more than this (one point ×100)."""


class CompareError(ValueError):
    """The runs cannot be compared: one sentence for the user."""


@dataclass(frozen=True)
class Paired:
    """One metric of one method in two runs, picture by picture.

    Attributes:
        a, b: (N,) float scores of the N shared pictures (NaN where a run has no value there).
        category: (N,) int category index of each picture.
        model: (N,) int model index of each picture (the bootstrap's unit).
        categories: names of the category indices.
    """

    a: np.ndarray
    b: np.ndarray
    category: np.ndarray
    model: np.ndarray
    categories: tuple[str, ...]


def load_run(path: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of an evaluation run (its folder or the file itself).

    Raises:
        CompareError: the file is missing, not JSON, or holds no per-picture records.
    """
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path} does not exist: give a folder written by training/evaluate.py --out, or its "
                           "metrics.json")
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise CompareError(f"{path} is not an evaluation run: no {file.name} there (training/evaluate.py --out writes it)")
    try:
        run = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CompareError(f"{file} could not be read as JSON ({err}); run training/evaluate.py --out again") from None
    if not isinstance(run, dict) or not isinstance(run.get("records"), list) or not run["records"]:
        raise CompareError(f"{file} holds no per-picture records; it must be written by training/evaluate.py --out")
    return run


def load_runs(pattern: str, styles: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """:func:`load_run` of ``pattern``, or with ``styles`` the runs of ``pattern`` with ``{style}`` replaced by each
    style, their records pooled as one run's.

    Raises:
        CompareError: a run is missing or unreadable, the pattern holds no ``{style}``, or two styles' runs hold the
            same pictures.
    """
    if not styles:
        return load_run(pattern)
    if "{style}" not in pattern:
        raise CompareError(f"with --styles each run is a pattern holding {{style}} (e.g. runs/ship_{{style}}), "
                           f"got {pattern}")
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], str] = {}
    for style in styles:
        path = pattern.replace("{style}", style)
        for record in load_run(path)["records"]:
            key = _key(record)
            if key in seen:
                raise CompareError(f"{path} and {seen[key]} hold the same pictures: give each style its own run "
                                   "(training/evaluate.py --style NAME)")
            seen[key] = path
            records.append(record)
    return {"records": records}


def _key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["model_id"], str(record["view"]), record.get("style", "clean")


def _score(record: dict[str, Any], method: str, metric: str) -> float:
    value = record.get("metrics", {}).get(method, {}).get(metric)
    return float(value) if value is not None and math.isfinite(value) else float("nan")


def pair_runs(run_a: dict[str, Any], run_b: dict[str, Any], method: str, metric: str) -> Paired:
    """The two runs' scores of ``method``'s ``metric`` on their shared pictures, in A's order.

    Raises:
        CompareError: the runs hold different pictures, or neither has the method's metric.
    """
    recs_a, recs_b = run_a["records"], run_b["records"]
    by_key_b = {_key(r): r for r in recs_b}
    keys_a = [_key(r) for r in recs_a]
    if len(set(keys_a)) != len(keys_a) or set(keys_a) != set(by_key_b):
        only_a, only_b = len(set(keys_a) - set(by_key_b)), len(set(by_key_b) - set(keys_a))
        raise CompareError(f"the runs hold different pictures ({only_a} only in A, {only_b} only in B): compare runs "
                           "of the same split, views per model, style and limit")
    a = np.array([_score(r, method, metric) for r in recs_a])
    b = np.array([_score(by_key_b[k], method, metric) for r, k in zip(recs_a, keys_a)])
    if np.isnan(a).all() and np.isnan(b).all():
        scored = [r.get("metrics") for r in (*recs_a, *recs_b) if isinstance(r.get("metrics"), dict)]
        methods = sorted({m for s in scored for m in s})
        metrics = sorted({k for s in scored for v in s.values() if isinstance(v, dict) for k in v})
        raise CompareError(f"neither run has {metric!r} of {method!r}: their methods are "
                           f"{', '.join(methods) or 'none'}, their metrics {', '.join(metrics) or 'none'}")
    categories = tuple(sorted({r["category"] for r in recs_a}))
    models = sorted({r["model_id"] for r in recs_a})
    return Paired(a=a, b=b, category=np.array([categories.index(r["category"]) for r in recs_a]),
                  model=np.array([models.index(r["model_id"]) for r in recs_a]), categories=categories)


def _means(values: np.ndarray, category: np.ndarray, weight: np.ndarray, count: int) -> tuple[float, float]:
    """(mean over categories, mean over images) of (N,) ``values`` where each picture counts ``weight`` times
    ((N,) int, 0 = left out); NaN values are left out, as ``training.scoring.summarize`` leaves them."""
    ok = ~np.isnan(values) & (weight > 0)
    w = np.where(ok, weight, 0).astype(np.float64)
    v = np.where(ok, values, 0.0)
    total = w.sum()
    over_images = float((w * v).sum() / total) if total > 0 else float("nan")
    per_w = np.bincount(category, weights=w, minlength=count)
    per_v = np.bincount(category, weights=w * v, minlength=count)
    present = per_w > 0
    over_categories = float((per_v[present] / per_w[present]).mean()) if present.any() else float("nan")
    return over_categories, over_images


def bootstrap_differences(paired: Paired, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, 2) differences B − A of (mean over categories, mean over images), each on a draw of the
    models with replacement (a model drawn k times counts its pictures k times; a category none of whose
    models is drawn leaves the mean over categories)."""
    rng = np.random.default_rng(seed)
    models = int(paired.model.max()) + 1
    count = len(paired.categories)
    out = np.empty((resamples, 2))
    for i in range(resamples):
        times = np.bincount(rng.integers(0, models, models), minlength=models)  # (models,) draws of each
        weight = times[paired.model]
        ma, mb = _means(paired.a, paired.category, weight, count), _means(paired.b, paired.category, weight, count)
        out[i] = (mb[0] - ma[0], mb[1] - ma[1])
    return out


def compare(run_a: dict[str, Any], run_b: dict[str, Any], metrics: tuple[str, ...] = ("F1@0.3", "Sil-IoU"),
            method: str = "ours", resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The comparison of every metric: ``{"pictures", "models", "method", "metrics": {metric: {...}}}``, each
    metric with ``a``, ``b``, ``difference`` and ``interval`` (``[low, high]``) for ``mean`` (over categories)
    and ``all`` (over images), and ``wins``/``losses`` of B (pictures, :data:`WIN_MARGIN`; for a metric where
    lower is better, a win is lower)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CompareError(f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)}")
    if resamples < 100:
        raise CompareError(f"--resamples must be at least 100, got {resamples}")
    out: dict[str, Any] = {"method": method, "metrics": {}}
    tail = (1.0 - LEVEL) / 2.0
    for metric in metrics:
        paired = pair_runs(run_a, run_b, method, metric)
        ones = np.ones(len(paired.a), dtype=np.int64)
        ma = _means(paired.a, paired.category, ones, len(paired.categories))
        mb = _means(paired.b, paired.category, ones, len(paired.categories))
        diffs = bootstrap_differences(paired, resamples, seed)
        delta = paired.b - paired.a
        if metric in LOWER_IS_BETTER:
            delta = -delta
        entry = {}
        for j, row in enumerate(("mean", "all")):
            low, high = np.nanquantile(diffs[:, j], [tail, 1.0 - tail])
            entry[row] = {"a": ma[j], "b": mb[j], "difference": mb[j] - ma[j], "interval": [float(low), float(high)]}
        entry["wins"] = int((delta > WIN_MARGIN).sum())
        entry["losses"] = int((delta < -WIN_MARGIN).sum())
        out["metrics"][metric] = entry
        out["pictures"], out["models"] = len(paired.a), int(paired.model.max()) + 1
    return out


def _signed(metric: str, value: float) -> str:
    text = format_value(metric, abs(value))
    return ("−" if value < 0 else "+") + text


def _verdict(metric: str, interval: list[float]) -> str:
    low, high = interval
    if low <= 0.0 <= high:
        return "within what another draw of the models gives"
    better = (low > 0) != (metric in LOWER_IS_BETTER)
    return "B better, beyond that" if better else "B worse, beyond that"


def format_comparison(result: dict[str, Any], name_a: str, name_b: str) -> str:
    """A markdown table of :func:`compare`'s result and a line per metric saying whether B − A is within noise."""
    lines = [f"A = {name_a}, B = {name_b}: {result['method']}, {result['pictures']} pictures of {result['models']} "
             f"models, {int(LEVEL * 100)} % intervals of B − A by a paired bootstrap over the models", "",
             "| metric | row | A | B | B − A | 95 % interval | pictures B better / worse |",
             "|---|---|--:|--:|--:|--:|--:|"]
    verdicts = []
    for metric, entry in result["metrics"].items():
        for row, label in (("mean", "mean over categories"), ("all", "over images")):
            e = entry[row]
            counts = f"{entry['wins']} / {entry['losses']}" if row == "all" else ""
            lines.append(f"| {metric} | {label} | {format_value(metric, e['a'])} | {format_value(metric, e['b'])} | "
                         f"{_signed(metric, e['difference'])} | {_signed(metric, e['interval'][0])} … "
                         f"{_signed(metric, e['interval'][1])} | {counts} |")
            verdicts.append(f"{metric}, {label}: {_verdict(metric, e['interval'])}")
    return "\n".join(lines + [""] + verdicts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Compare two evaluation runs of the same pictures, with bootstrap "
                                            "intervals of the difference (training/evaluate.py --out folders).")
    p.add_argument("run_a", help="the reference run (A): a folder of evaluate.py --out, or its metrics.json "
                                 "(with --styles: a pattern holding {style})")
    p.add_argument("run_b", help="the run compared with it (B)")
    p.add_argument("--styles", nargs="+", default=None,
                   help="pool the runs of these styles: run_a and run_b are patterns holding {style}")
    p.add_argument("--metrics", nargs="+", default=["F1@0.3", "Sil-IoU"], help=f"any of {', '.join(METRICS)}")
    p.add_argument("--method", default="ours", help="ours (default), sphere, mean_shape or retrieval")
    p.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap draws (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the comparison to this JSON file")
    return p


def _json_target(path: str | None, runs: list[str], styles: list[str] | tuple[str, ...] | None) -> Path | None:
    """``--json``: a file name, not a folder (its folder is made by :func:`training.evaluate.output_folder`), and
    not the ``metrics.json`` of one of the ``runs`` compared (their folders, ``{style}`` patterns with ``styles``)."""
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise CompareError(f"--json {target} is a folder: give a file name, e.g. {target / 'comparison.json'}")
    folders = [run.replace("{style}", style) for run in runs for style in (styles or ["{style}"])]
    if any(target.resolve() == (Path(folder) / "metrics.json").resolve() for folder in folders):
        raise CompareError(f"--json {target} is a compared run's own results: give another file name, e.g. "
                           f"{target.with_name('comparison.json')}")
    return target


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        target = _json_target(args.json, [args.run_a, args.run_b], args.styles)
        run_a, run_b = load_runs(args.run_a, args.styles), load_runs(args.run_b, args.styles)
        if target is None:
            result = compare(run_a, run_b, tuple(args.metrics), args.method, args.resamples, args.seed)
        else:
            with output_folder(target.parent, "the folder of --json"):
                result = compare(run_a, run_b, tuple(args.metrics), args.method, args.resamples, args.seed)
                _write_json(target, result)
    except (CompareError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_comparison(result, args.run_a, args.run_b))
    return 0


def _write_json(path: Path, result: dict[str, Any]) -> None:
    """Write the comparison atomically (a temporary file beside it, then a rename)."""
    from recon_core.io.export import atomic_write_bytes

    try:
        atomic_write_bytes(path, (json.dumps(result, indent=1) + "\n").encode())
    except OSError as err:
        raise CompareError(f"--json {path} cannot be written ({err.strerror or err}); give a file in a folder that "
                           "can be written") from None


if __name__ == "__main__":
    sys.exit(main())
