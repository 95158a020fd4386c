"""training/fit_ranker.py: the listwise fit against known answers, and the whole tool on the shape bank's fake data."""

from __future__ import annotations

import json

import numpy as np

from recon_core.io.weights import load_model
from recon_core.network.retrieval import RANK_FEATURES
from training.fit_ranker import cross_validate, fit_weights, main, picked

from tests.test_shape_bank import banked_model, fake, shape_bank  # noqa: F401 (fixtures)


def _synthetic(seed: int, n: int = 120, k: int = 6, f: int = 4):
    """Pictures whose best candidate is the one with the highest feature 1 (plus noise in the others)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k, f))
    labels = 1.0 / (1.0 + np.exp(-3.0 * x[:, :, 1]))
    valid = np.ones((n, k), dtype=bool)
    valid[:, -1] = rng.random(n) < 0.5  # some pictures have fewer candidates
    return x, labels, valid


def test_picked_is_each_rows_best_valid_by_the_weights():
    x, labels, valid = _synthetic(0)
    w = np.array([0.3, -1.0, 2.0, 0.1])
    got = picked(x, labels, valid, w)
    for i in range(len(x)):
        scores = [x[i, j] @ w if valid[i, j] else -np.inf for j in range(x.shape[1])]
        assert got[i] == labels[i, int(np.argmax(scores))]


def test_fit_weights_learns_which_feature_ranks():
    """The label follows feature 1 only: the fitted weights pick the best candidate of nearly every picture of
    pictures it was not fitted on, and weigh feature 1 most; a feature's scale does not change the picks."""
    x, labels, valid = _synthetic(1)
    w = fit_weights(x, labels, valid, penalty=1e-3, temperature=0.05)
    assert int(np.argmax(np.abs(w))) == 1 and w[1] > 0
    xt, lt, vt = _synthetic(2)
    oracle = np.where(vt, lt, -np.inf).max(axis=1)
    assert picked(xt, lt, vt, w).mean() > oracle.mean() - 0.01
    assert picked(xt, lt, vt, np.array([1.0, 0, 0, 0])).mean() < oracle.mean() - 0.05  # a wrong feature does not
    scaled = x.copy()
    scaled[:, :, 1] *= 1000.0
    w2 = fit_weights(scaled, labels, valid, penalty=1e-3, temperature=0.05)
    xs = xt.copy()
    xs[:, :, 1] *= 1000.0
    np.testing.assert_array_equal(picked(xs, lt, vt, w2), picked(xt, lt, vt, w))


def test_cross_validation_picks_nearly_the_best_on_held_out_models():
    """Fitted on the other folds' models only, the picks of each fold are nearly the best there are; the
    silhouette IoU is read at the same picks."""
    x, labels, valid = _synthetic(3, n=200)
    model = np.arange(200) % 10
    data = {"features": x, "f1": labels, "sil": 1.0 - labels, "valid": valid, "model": model}
    cv = cross_validate(data, 1e-3, 0.05)
    best = np.where(valid, labels, -np.inf).max(axis=1).mean()
    assert best - 0.02 < cv["f1"] <= best
    assert abs(cv["sil"] - (1.0 - cv["f1"])) < 1e-12  # the same picks, scored by the other label


def test_the_tool_collects_fits_and_writes_a_model(fake, banked_model, tmp_path, capsys):  # noqa: F811
    """On the fake data set: two shards and their merge give the same pictures as one run; the written model
    carries one weight per feature and loads; bad arguments exit 2."""
    shapenet, renders = fake
    common = ["--model", str(banked_model), "--shapenet", str(shapenet), "--renders", str(renders),
              "--num-samples", "500"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    whole = np.load(tmp_path / "one" / "features.npz")
    assert whole["features"].shape[2] == len(RANK_FEATURES)
    assert whole["valid"].any(axis=1).all()
    assert ((whole["f1"] >= 0) & (whole["f1"] <= 1)).all()
    for i in range(2):
        assert main([*common, "--out", str(tmp_path / "two"), "--shard", f"{i}/2"]) == 0
    parts = [np.load(tmp_path / "two" / f"features_{i}_of_2.npz") for i in range(2)]
    merged = np.concatenate([p["f1"] for p in parts])
    np.testing.assert_allclose(np.sort(merged.ravel()), np.sort(whole["f1"].ravel()), atol=1e-6)
    # the picture's own model never comes back: at most (bank models - 1) valid candidates
    assert whole["valid"].sum(axis=1).max() <= 3
    out = tmp_path / "ranked"
    assert main([*common, "--out", str(tmp_path / "two"), "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training pictures" in printed and "wrote" in printed
    meta = json.loads(out.with_suffix(".json").read_text())
    assert len(meta["model"]["bank_rank_weights"]) == len(RANK_FEATURES)
    model, _ = load_model(out)
    assert model.config.bank_rank_weights == tuple(meta["model"]["bank_rank_weights"])
    assert main([*common, "--out", str(tmp_path / "bad"), "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_a_larger_penalty_gives_smaller_weights():
    x, labels, valid = _synthetic(4)
    small, large = (fit_weights(x, labels, valid, penalty=p, temperature=0.05) for p in (1e-3, 1.0))
    assert np.isfinite(small).all() and np.isfinite(large).all()
    assert np.abs(large).max() < np.abs(small).max()
