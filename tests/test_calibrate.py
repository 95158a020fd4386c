"""Temperature scaling of the category probabilities (training/calibrate.py, ModelConfig.category_temperature)."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_core.io.inference import Reconstructor
from recon_core.network.config import ModelConfig
from training.calibrate import by_style, fit_temperature, nll, softmax


def _nll_naive(logits, labels, t):
    total = 0.0
    for row, y in zip(logits, labels):
        z = [v / t for v in row]
        total -= z[y] - math.log(sum(math.exp(v) for v in z))
    return total / len(labels)


def test_nll_equals_a_row_by_row_reference():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 3, (50, 13)), rng.integers(0, 13, 50)
    for t in (0.5, 1.0, 2.7):
        assert nll(logits, labels, t) == pytest.approx(_nll_naive(logits, labels, t), rel=1e-10)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(true_t):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6000, 13))
    p = softmax(logits, true_t)
    labels = np.array([rng.choice(13, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)


def test_by_style_equals_a_picture_by_picture_count():
    from training.scoring import expected_calibration_error

    rng = np.random.default_rng(2)
    logits, labels = rng.normal(0, 2, (90, 13)), rng.integers(0, 13, 90)
    styles = [("pencil", "clean", "custom")[i % 3] for i in range(90)]
    before, after = softmax(logits), softmax(logits, 1.7)
    got = by_style(before, after, labels, styles)
    assert list(got) == ["clean", "pencil", "custom"]  # calibration styles in their order, then the others
    for st in got:
        rows = [i for i, s in enumerate(styles) if s == st]
        right = sum(1 for i in rows if int(np.argmax(before[i])) == labels[i])
        assert got[st]["pictures"] == len(rows) == 30
        assert got[st]["accuracy"] == right / len(rows)
        assert got[st]["ece"] == [expected_calibration_error(before[rows], labels[rows]),
                                  expected_calibration_error(after[rows], labels[rows])]
    labels_right = before.argmax(1)  # every picture right: accuracy 1 in every style
    assert all(v["accuracy"] == 1.0 for v in by_style(before, after, labels_right, styles).values())
    with pytest.raises(ValueError, match="one style a picture"):
        by_style(before, after, labels, styles[:-1])


def test_fit_temperature_refuses_bad_shapes():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 13)), np.zeros(2, int))


def test_inference_reports_tempered_probabilities_and_keeps_the_arg_max():
    rec = Reconstructor.__new__(Reconstructor)
    rec.model = types.SimpleNamespace(config=ModelConfig(category_temperature=2.0))
    logits = torch.tensor([[3.0, 1.0, -2.0] + [0.0] * 10])
    probs = rec._category_probs(logits)
    np.testing.assert_allclose(probs, softmax(logits.numpy(), 2.0)[0], rtol=1e-6)
    assert probs.argmax() == 0 and probs.max() < softmax(logits.numpy())[0].max()
    with pytest.raises(ValueError, match="category_temperature"):
        ModelConfig(category_temperature=0.0)


def test_main_writes_the_temperature_and_each_styles_record_rounded(tmp_path, monkeypatch, capsys):
    import json

    import recon_core.io.weights as weights
    import training.calibrate as cal
    import training.eval_data as ev

    rng = np.random.default_rng(3)
    styles = [("clean", "pencil")[i % 2] for i in range(60)]
    logits, labels = rng.normal(0, 2, (60, 13)), rng.integers(0, 13, 60)
    monkeypatch.setattr(ev, "discover", lambda *a, **k: ["entry"])
    monkeypatch.setattr(ev, "select_samples", lambda entries, views: ["sample"] * 30)
    monkeypatch.setattr(weights, "load_finder", lambda path: None)
    monkeypatch.setattr(cal, "collect_scores", lambda *a, **k: (logits, logits, labels, styles))
    stem = tmp_path / "model"
    stem.with_suffix(".json").write_text(json.dumps({"model": {"category_temperature": 1.0}, "trained": True}))
    stem.with_suffix(".safetensors").write_bytes(b"")  # weights beside it (collect_scores is stubbed)
    assert cal.main(["--model", str(stem), "--backgrounds", "none"]) == 0
    meta = json.loads(stem.with_suffix(".json").read_text())
    record = meta["calibration"]
    t = fit_temperature(logits, labels)
    assert meta["model"]["category_temperature"] == round(t, 4) and meta["trained"] is True
    assert list(record["accuracy_by_style"]) == list(record["ece_by_style"]) == ["clean", "pencil"]
    for i, st in enumerate(("clean", "pencil")):
        rows = slice(i, None, 2)
        right = float((softmax(logits[rows]).argmax(1) == labels[rows]).mean())
        assert record["accuracy_by_style"][st] == round(right, 4)
        assert all(v == round(v, 4) for v in record["ece_by_style"][st])  # every float rounded, nested ones too
    assert "pencil: accuracy" in capsys.readouterr().out
    assert "accuracy_head" not in record and "category_vote_temperature" not in meta["model"]  # the head alone


def test_main_on_test_reports_the_models_own_temperature_and_the_head_beside_the_votes(tmp_path, monkeypatch,
                                                                                      capsys):
    """--split test fits and writes nothing: it scores the model's own temperature; when the bank's candidates
    vote (scores differ from the head's), the head's own accuracy is printed beside each style's."""
    import json

    import recon_core.io.weights as weights
    import training.calibrate as cal
    import training.eval_data as ev

    rng = np.random.default_rng(5)
    styles = [("clean", "small_offcentre")[i % 2] for i in range(40)]
    labels = rng.integers(0, 13, 40)
    head = rng.normal(0, 2, (40, 13))
    scores = head.copy()
    scores[np.arange(40), labels] += 3.0  # the votes: right more often than the head
    seen = {}

    def collect(model, samples, styles_asked, **kwargs):
        seen["styles"] = styles_asked
        return scores, head, labels, styles

    monkeypatch.setattr(ev, "discover", lambda *a, **k: ["entry"])
    monkeypatch.setattr(ev, "select_samples", lambda entries, views: ["sample"] * 20)
    monkeypatch.setattr(weights, "load_finder", lambda path: None)
    monkeypatch.setattr(cal, "collect_scores", collect)
    stem = tmp_path / "model"
    text = json.dumps({"model": {"category_temperature": 1.1, "category_vote_temperature": 1.3}, "trained": True})
    stem.with_suffix(".json").write_text(text)
    stem.with_suffix(".safetensors").write_bytes(b"")  # weights beside it (collect_scores is stubbed)
    assert cal.main(["--model", str(stem), "--split", "test", "--styles", "clean", "small_offcentre"]) == 0
    assert stem.with_suffix(".json").read_text() == text  # nothing written
    assert seen["styles"] == ("clean", "small_offcentre")
    out = capsys.readouterr().out
    right = 100 * float((scores.argmax(1) == labels).mean())
    alone = 100 * float((head.argmax(1) == labels).mean())
    assert (f"temperature 1.300 (the model’s own; the head alone's 1.100); accuracy {right:.1f}% "
            f"(the category head alone {alone:.1f}%)") in out
    rows = slice(1, None, 2)
    assert f"small_offcentre: accuracy {100 * float((scores[rows].argmax(1) == labels[rows]).mean()):5.1f}% of 20" in out


def test_fused_category_scores_equal_the_formula_and_can_overrule_the_head():
    """fuse_category_scores: log softmax(logits) + w log(floor + votes); w = 0 or no votes: the head's
    log-probabilities (whose tempered softmax is the logits'); unanimous votes overrule a head that is unsure."""
    from recon_core.io.inference import CATEGORY_VOTE_FLOOR, fuse_category_scores

    rng = np.random.default_rng(4)
    logits, votes = rng.normal(0, 2, 13), rng.dirichlet(np.ones(13))
    log_probs = [v - math.log(sum(math.exp(u) for u in logits)) for v in logits]
    expected = [lp + 2.5 * math.log(CATEGORY_VOTE_FLOOR + v) for lp, v in zip(log_probs, votes)]
    np.testing.assert_allclose(fuse_category_scores(logits, votes, 2.5), expected, rtol=1e-12)
    np.testing.assert_allclose(fuse_category_scores(logits, votes, 0.0), log_probs, rtol=1e-12)
    np.testing.assert_allclose(softmax(fuse_category_scores(logits, None, 1.0)[None], 1.7),
                               softmax(logits[None], 1.7), rtol=1e-12)
    unsure = np.array([1.0, 0.8] + [0.0] * 11)  # the head: category 0, barely
    unanimous = np.eye(13)[1]
    assert fuse_category_scores(unsure, unanimous, 1.0).argmax() == 1
    assert fuse_category_scores(np.array([6.0, 0.0] + [0.0] * 11), unanimous, 1.0).argmax() == 0  # a sure head stays


def test_main_fits_each_temperature_on_its_own_scores_when_the_candidates_vote(tmp_path, monkeypatch, capsys):
    import json

    import recon_core.io.weights as weights
    import training.calibrate as cal
    import training.eval_data as ev

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 13, 60)
    head = rng.normal(0, 2, (60, 13))
    scores = 0.3 * head
    scores[np.arange(60), labels] += 1.0
    monkeypatch.setattr(ev, "discover", lambda *a, **k: ["entry"])
    monkeypatch.setattr(ev, "select_samples", lambda entries, views: ["sample"] * 60)
    monkeypatch.setattr(weights, "load_finder", lambda path: None)
    monkeypatch.setattr(cal, "collect_scores", lambda *a, **k: (scores, head, labels, ["clean"] * 60))
    stem = tmp_path / "model"
    stem.with_suffix(".json").write_text(json.dumps({"model": {"category_temperature": 1.0}}))
    stem.with_suffix(".safetensors").write_bytes(b"")  # weights beside it (collect_scores is stubbed)
    assert cal.main(["--model", str(stem), "--backgrounds", "none"]) == 0
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["model"]["category_temperature"] == round(fit_temperature(head, labels), 4)
    assert meta["model"]["category_vote_temperature"] == round(fit_temperature(scores, labels), 4)
    assert meta["calibration"]["temperature"] == meta["model"]["category_vote_temperature"]
    assert meta["calibration"]["head_temperature"] == meta["model"]["category_temperature"]
    assert meta["model"]["category_temperature"] != meta["model"]["category_vote_temperature"]
    assert "and model.category_vote_temperature" in capsys.readouterr().out


def _stub_calibration(monkeypatch, tmp_path, calls: dict | None = None):
    """calibrate.main on stubbed data and scores; returns the model's stem (a trained model's JSON and weights)."""
    import json

    import recon_core.io.weights as weights
    import training.calibrate as cal
    import training.eval_data as ev

    rng = np.random.default_rng(7)
    logits, labels = rng.normal(0, 2, (20, 13)), rng.integers(0, 13, 20)
    calls = {} if calls is None else calls

    def collect(*args, **kwargs):
        calls["finder"] = kwargs.get("finder")
        return logits, logits, labels, ["clean"] * 20

    def load_finder(path):
        calls["loaded"] = path
        return "a finder"

    monkeypatch.setattr(ev, "discover", lambda *a, **k: ["entry"])
    monkeypatch.setattr(ev, "select_samples", lambda entries, views: ["sample"] * 20)
    monkeypatch.setattr(weights, "load_finder", load_finder)
    monkeypatch.setattr(cal, "collect_scores", collect)
    stem = tmp_path / "model"
    stem.with_suffix(".json").write_text(json.dumps({"model": {"category_temperature": 1.0}, "trained": True}))
    stem.with_suffix(".safetensors").write_bytes(b"")
    return stem


@pytest.mark.parametrize("case", ["missing_finder", "views_0", "views_-1", "missing_weights", "backgrounds_missing"])
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    import training.calibrate as cal

    calls = {}
    stem = _stub_calibration(monkeypatch, tmp_path, calls)
    args = {"missing_finder": ["--finder", str(tmp_path / "nowhere")], "views_0": ["--views-per-model", "0"],
            "views_-1": ["--views-per-model", "-1"], "missing_weights": [],
            "backgrounds_missing": ["--backgrounds", str(tmp_path / "nope")]}[case]  # was: synthetic, silently
    if case == "missing_weights":
        stem.with_suffix(".safetensors").unlink()
    before = stem.with_suffix(".json").read_text()
    assert cal.main(["--model", str(stem), "--backgrounds", "none", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    expected = {"missing_finder": "names no object finder", "views_0": "--views-per-model must be at least 1",
                "views_-1": "--views-per-model must be at least 1", "missing_weights": "Model weights not found",
                "backgrounds_missing": f"--backgrounds {tmp_path / 'nope'} does not exist"}
    assert expected[case] in err
    assert stem.with_suffix(".json").read_text() == before and not calls  # nothing measured, nothing written


def test_finder_none_in_any_case_the_shipped_one_or_a_path(tmp_path, monkeypatch, capsys):
    import training.calibrate as cal

    finder = tmp_path / "finder"
    for ext in (".json", ".safetensors"):
        finder.with_suffix(ext).write_bytes(b"")
    for args, loaded in (([], None), (["--finder", str(finder)], str(finder)), (["--finder", "none"], "no finder"),
                         (["--finder", "NONE"], "no finder")):
        calls = {}
        stem = _stub_calibration(monkeypatch, tmp_path, calls)
        assert cal.main(["--model", str(stem), "--backgrounds", "none", "--dry-run", *args]) == 0
        if loaded == "no finder":
            assert "loaded" not in calls and calls["finder"] is None, args
        else:
            assert calls["loaded"] == loaded and calls["finder"] == "a finder", args


def test_a_bare_run_does_not_write_into_the_shipped_model(capsys):
    """``calibrate.py`` without --model wrote its temperature into models/default.json, a tracked file that changes
    only when a better model is shipped: it now asks for the model by name (or --dry-run), and writes nothing."""
    from training import calibrate as cal

    shipped = Path(__file__).resolve().parents[1] / "models" / "default.json"
    before = shipped.read_bytes()
    assert cal.main(["--backgrounds", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give --model, the model whose temperature to write") and "--dry-run" in err, err
    assert shipped.read_bytes() == before
