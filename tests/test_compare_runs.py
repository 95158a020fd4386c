"""training/compare_runs.py: the paired comparison of two evaluation runs, against a plain loop."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from training import compare_runs
from training.scoring import summarize

CATEGORIES = ("airplane", "chair", "lamp")


def _run(scores: dict[tuple[str, str], dict[str, float]], categories: dict[str, str]) -> dict:
    """A metrics.json-like run: ``scores[(model, view)] = {metric: value}`` of ours."""
    records = []
    for (model, view), metrics in scores.items():
        records.append({"model_id": model, "view": view, "style": "clean", "category": categories[model],
                        "synset": "0", "metrics": {"ours": dict(metrics)}, "printable": True})
    return {"records": records}


def _random_runs(seed: int = 0, models: int = 9, views: int = 3):
    rng = np.random.default_rng(seed)
    categories = {f"m{i}": CATEGORIES[i % len(CATEGORIES)] for i in range(models)}
    a, b = {}, {}
    for model in categories:
        for v in range(views):
            key = (model, f"{v:03d}")
            a[key] = {"F1@0.3": float(rng.uniform(0.2, 0.8)), "Sil-IoU": float(rng.uniform(0.4, 0.9)),
                      "Chamfer-L2": float(rng.uniform(1, 3))}
            b[key] = {k: float(np.clip(x + rng.normal(0, 0.05), 0, None)) for k, x in a[key].items()}
    return _run(a, categories), _run(b, categories)


def _naive_differences(run_a: dict, run_b: dict, metric: str, resamples: int, seed: int) -> np.ndarray:
    """The bootstrap spelt out: each draw of models lists their pictures again and scores both runs."""
    models = sorted({r["model_id"] for r in run_a["records"]})
    by_model_b = defaultdict(dict)
    for r in run_b["records"]:
        by_model_b[r["model_id"]][r["view"]] = r
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(models), len(models))
        pairs = []  # (category, a, b) for every picture of every drawn model, once per draw
        for i in drawn:
            for r in run_a["records"]:
                if r["model_id"] == models[i]:
                    rb = by_model_b[r["model_id"]][r["view"]]
                    pairs.append((r["category"], r["metrics"]["ours"][metric], rb["metrics"]["ours"][metric]))
        per_cat = defaultdict(list)
        for cat, x, y in pairs:
            per_cat[cat].append(y - x)
        over_categories = np.mean([np.mean(v) for v in per_cat.values()])
        over_images = np.mean([y - x for _, x, y in pairs])
        out.append((over_categories, over_images))
    return np.array(out)


def test_bootstrap_equals_a_plain_loop():
    run_a, run_b = _random_runs()
    paired = compare_runs.pair_runs(run_a, run_b, "ours", "F1@0.3")
    fast = compare_runs.bootstrap_differences(paired, resamples=200, seed=3)
    slow = _naive_differences(run_a, run_b, "F1@0.3", resamples=200, seed=3)
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_means_are_evaluate_summaries():
    run_a, run_b = _random_runs(seed=1)
    result = compare_runs.compare(run_a, run_b, ("F1@0.3", "Chamfer-L2"), resamples=100)
    for run, side in ((run_a, "a"), (run_b, "b")):
        summary = summarize(run["records"], methods=("ours",))
        for metric in ("F1@0.3", "Chamfer-L2"):
            assert result["metrics"][metric]["mean"][side] == pytest.approx(
                summary["mean"]["methods"]["ours"][metric])
            assert result["metrics"][metric]["all"][side] == pytest.approx(
                summary["all"]["methods"]["ours"][metric])


def test_a_constant_gain_has_no_spread_and_is_beyond_noise():
    run_a, _ = _random_runs(seed=2)
    categories = {r["model_id"]: r["category"] for r in run_a["records"]}
    gained = _run({(r["model_id"], r["view"]): {"F1@0.3": r["metrics"]["ours"]["F1@0.3"] + 0.05,
                                                "Sil-IoU": r["metrics"]["ours"]["Sil-IoU"]}
                   for r in run_a["records"]}, categories)
    result = compare_runs.compare(run_a, gained, ("F1@0.3", "Sil-IoU"), resamples=200)
    f1 = result["metrics"]["F1@0.3"]
    for row in ("mean", "all"):
        assert f1[row]["difference"] == pytest.approx(0.05)
        assert f1[row]["interval"] == pytest.approx([0.05, 0.05])
    assert (f1["wins"], f1["losses"]) == (len(run_a["records"]), 0)
    sil = result["metrics"]["Sil-IoU"]
    assert sil["all"]["difference"] == 0 and sil["all"]["interval"] == [0.0, 0.0]
    assert (sil["wins"], sil["losses"]) == (0, 0)
    text = compare_runs.format_comparison(result, "A", "B")
    assert "F1@0.3, over images: B better, beyond that" in text
    assert "Sil-IoU, over images: within what another draw of the models gives" in text


def test_lower_chamfer_counts_as_a_win():
    run_a, _ = _random_runs(seed=4)
    categories = {r["model_id"]: r["category"] for r in run_a["records"]}
    lower = _run({(r["model_id"], r["view"]): {"Chamfer-L2": r["metrics"]["ours"]["Chamfer-L2"] - 0.5}
                  for r in run_a["records"]}, categories)
    result = compare_runs.compare(run_a, lower, ("Chamfer-L2",), resamples=100)
    assert result["metrics"]["Chamfer-L2"]["wins"] == len(run_a["records"])
    assert "B better" in compare_runs.format_comparison(result, "A", "B")


def test_noise_gives_an_interval_around_zero():
    run_a, run_b = _random_runs(seed=5, models=30)
    interval = compare_runs.compare(run_a, run_b, ("F1@0.3",), resamples=500)["metrics"]["F1@0.3"]["all"]["interval"]
    assert interval[0] < 0 < interval[1]


def _write(folder, run) -> str:
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(run))
    return str(folder)


def test_cli_writes_the_table_and_json(tmp_path, capsys):
    run_a, run_b = _random_runs(seed=6)
    out = tmp_path / "new" / "cmp.json"
    args = [_write(tmp_path / "a", run_a), _write(tmp_path / "b", run_b), "--resamples", "100", "--json", str(out)]
    assert compare_runs.main(args + ["--metrics", "F9@0.3"]) == 2  # refused: no folder left behind
    assert not (tmp_path / "new").exists()
    capsys.readouterr()
    code = compare_runs.main(args)
    assert code == 0 and [p.name for p in out.parent.iterdir()] == ["cmp.json"]  # no temporary file left
    printed = capsys.readouterr().out
    assert "| F1@0.3 | over images |" in printed and "| Sil-IoU | mean over categories |" in printed
    saved = json.loads(out.read_text())
    assert saved["pictures"] == len(run_a["records"]) and set(saved["metrics"]) == {"F1@0.3", "Sil-IoU"}


@pytest.mark.parametrize("case", ["other_pictures", "missing", "not_json", "metric", "method"])
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, capsys, case):
    run_a, run_b = _random_runs(seed=7)
    args = [_write(tmp_path / "a", run_a)]
    if case == "other_pictures":
        run_b["records"] = run_b["records"][:-1]
        args.append(_write(tmp_path / "b", run_b))
    elif case == "missing":
        args.append(str(tmp_path / "nowhere"))
    elif case == "not_json":
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "metrics.json").write_text("{truncated")
        args.append(str(tmp_path / "b"))
    else:
        args.append(_write(tmp_path / "b", run_b))
        args += ["--metrics", "F9@0.3"] if case == "metric" else ["--method", "oracle"]
    assert compare_runs.main(args + ["--resamples", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case == "method":  # the names there are, so that the mistyped one can be mended (a metric's are listed already)
        assert "their methods are ours" in err and "F1@0.3" in err, err
    if case == "missing":
        assert f"{tmp_path / 'nowhere'} does not exist" in err
        (tmp_path / "nowhere").mkdir()  # there, but no run in it
        assert compare_runs.main(args + ["--resamples", "100"]) == 2
        assert "is not an evaluation run: no metrics.json there" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["folder", "under_a_file", "cannot_be_made", "a_runs_results"])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_comparison(tmp_path, capsys, monkeypatch, case):
    run_a, run_b = _random_runs(seed=11)
    args = [_write(tmp_path / "a", run_a), _write(tmp_path / "b", run_b), "--resamples", "100"]
    (tmp_path / "file").write_text("x")
    target = {"folder": tmp_path / "a", "under_a_file": tmp_path / "file" / "out.json",
              "cannot_be_made": Path("/proc/no_such_folder/out.json"),
              "a_runs_results": tmp_path / "b" / "metrics.json"}[case]
    before = (tmp_path / "b" / "metrics.json").read_bytes()
    compared = []
    monkeypatch.setattr(compare_runs, "bootstrap_differences",
                        lambda *a, **k: compared.append(1) or np.zeros((100, 2)))
    assert compare_runs.main(args + ["--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert str(target.parent if case not in ("folder", "a_runs_results") else target) in captured.err
    assert captured.out == "" and not compared  # refused before the bootstrap, and no table
    assert (tmp_path / "file").read_text() == "x" and (tmp_path / "a" / "metrics.json").is_file()
    assert (tmp_path / "b" / "metrics.json").read_bytes() == before


def _styled(run: dict, style: str) -> dict:
    return {"records": [dict(r, style=style) for r in run["records"]]}


def test_styles_pool_the_runs_of_every_style(tmp_path, capsys):
    (a1, b1), (a2, b2) = _random_runs(seed=8), _random_runs(seed=9)
    for style, (a, b) in (("jpeg", (a1, b1)), ("pencil", (a2, b2))):
        _write(tmp_path / f"a_{style}", _styled(a, style))
        _write(tmp_path / f"b_{style}", _styled(b, style))
    pooled_a = compare_runs.load_runs(str(tmp_path / "a_{style}"), ["jpeg", "pencil"])
    pooled_b = compare_runs.load_runs(str(tmp_path / "b_{style}"), ["jpeg", "pencil"])
    assert len(pooled_a["records"]) == len(a1["records"]) + len(a2["records"])
    result = compare_runs.compare(pooled_a, pooled_b, ("F1@0.3",), resamples=200)
    entry = result["metrics"]["F1@0.3"]
    # with the same pictures in each style, the pooled mean over categories is the mean of the styles' own
    per_style = [summarize(run["records"])["mean"]["methods"]["ours"]["F1@0.3"] for run in (a1, a2)]
    assert entry["mean"]["a"] == pytest.approx(np.mean(per_style))
    assert entry["all"]["a"] == pytest.approx(np.mean([r["metrics"]["ours"]["F1@0.3"]
                                                       for r in a1["records"] + a2["records"]]))
    # a model's pictures in both styles go together: the same bootstrap as the plain loop on the pooled runs
    diffs = compare_runs.bootstrap_differences(compare_runs.pair_runs(pooled_a, pooled_b, "ours", "F1@0.3"), 50, 3)
    np.testing.assert_allclose(diffs, _naive_differences(_by_picture(pooled_a), _by_picture(pooled_b), "F1@0.3", 50, 3))
    code = compare_runs.main([str(tmp_path / "a_{style}"), str(tmp_path / "b_{style}"), "--styles", "jpeg", "pencil",
                              "--resamples", "100"])
    assert code == 0 and f"{result['pictures']} pictures" in capsys.readouterr().out


def _by_picture(run: dict) -> dict:
    """The pooled run with each picture's view named by its style too (the plain loop pairs by model and view)."""
    return {"records": [dict(r, view=f"{r['style']}/{r['view']}") for r in run["records"]]}


@pytest.mark.parametrize("case", ["no_pattern", "same_run_twice", "missing_style"])
def test_styles_bad_input_is_one_sentence(tmp_path, capsys, case):
    run_a, run_b = _random_runs(seed=10)
    _write(tmp_path / "a_jpeg", _styled(run_a, "jpeg"))
    _write(tmp_path / "b_jpeg", _styled(run_b, "jpeg"))
    if case == "no_pattern":
        args = [str(tmp_path / "a_jpeg"), str(tmp_path / "b_jpeg"), "--styles", "jpeg"]
    elif case == "same_run_twice":
        _write(tmp_path / "a_pencil", _styled(run_a, "jpeg"))  # a jpeg run filed as pencil's
        _write(tmp_path / "b_pencil", _styled(run_b, "jpeg"))
        args = [str(tmp_path / "a_{style}"), str(tmp_path / "b_{style}"), "--styles", "jpeg", "pencil"]
    else:
        args = [str(tmp_path / "a_{style}"), str(tmp_path / "b_{style}"), "--styles", "jpeg", "pencil"]
    assert compare_runs.main(args + ["--resamples", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    expected = {"no_pattern": "{style}", "same_run_twice": "same pictures", "missing_style": "does not exist"}
    assert expected[case] in err
