"""The size head: its ridge fit against a plain least-squares reference, its file, and the scale it gives outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recon_core.io.weights import SIZE_SUFFIX, WeightsError, load_model, save_size_head
from recon_core.mesh.camera import VIEW_TO_OUTPUT, look_at
from recon_core.mesh.printable import check_printable
from recon_core.mesh.silhouette import toward_size
from training.fit_size import choose_lambda, collect, fit_ridge, main, view_extent

from tests.test_shape_bank import _rgba, _with_config, banked_model, fake, shape_bank  # noqa: F401  (fixtures)


def _reference_ridge(X, y, lam):
    """The same ridge by plain least squares on the augmented system [Xs; sqrt(lam) I] w = [y - mean; 0]."""
    mu, sd = X.mean(0), X.std(0)
    Xs = (X - mu) / sd
    A = np.vstack([Xs, np.sqrt(lam) * np.eye(X.shape[1])])
    rhs = np.concatenate([y - y.mean(), np.zeros(X.shape[1])])
    ws, *_ = np.linalg.lstsq(A, rhs, rcond=None)
    return lambda Z: ((Z - mu) / sd) @ ws + y.mean()


@pytest.mark.parametrize("lam", [0.1, 10.0, 1000.0])
def test_fit_ridge_equals_least_squares_on_the_augmented_system(lam):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 8)) * rng.uniform(0.1, 5, 8) + rng.normal(size=8)
    y = X @ rng.normal(size=8) + rng.normal(scale=0.1, size=60)
    w, b = fit_ridge(X, y, lam)
    Z = rng.normal(size=(5, 8))
    np.testing.assert_allclose(Z @ w + b, _reference_ridge(X, y, lam)(Z), atol=1e-9)


def test_a_constant_feature_gets_no_weight():
    rng = np.random.default_rng(2)
    X = np.c_[rng.normal(size=(30, 3)), np.full(30, 4.0)]
    w, b = fit_ridge(X, X[:, 0] * 2 + 1, 1e-6)
    assert w[3] == 0 and np.isfinite(b)
    np.testing.assert_allclose(X @ w + b, X[:, 0] * 2 + 1, atol=1e-4)


def test_choose_lambda_keeps_a_models_views_together():
    """Each model's views are copies of one row: were a model in both folds, the weakest ridge would predict its
    own copies perfectly; over models, the strongest (a constant) is better, as the target is noise."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(40, 30))
    X, y = np.repeat(rows, 5, axis=0), np.repeat(rng.normal(size=40), 5)
    groups = np.repeat([f"m{i}" for i in range(40)], 5)
    lam, errors = choose_lambda(X, y, groups, lambdas=(1e-6, 1e6))
    assert set(errors) == {1e-6, 1e6} and lam == 1e6 and errors[1e6] < errors[1e-6]


def test_view_extent_is_the_longer_side_across_the_view():
    box = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.3, 0.3) for z in (-0.5, 0.5)])  # 0.2 x 0.6 x 1.0
    front, side = look_at(0.0, 0.0, 2.0), look_at(90.0, 0.0, 2.0)
    assert np.isclose(view_extent(box, front.R), np.log(0.6))  # width 0.2, height 0.6 across the view
    assert np.isclose(view_extent(box, side.R), np.log(1.0))  # from the side the depth is across the view


def test_toward_size_moves_the_longer_side_by_the_weights_share():
    import trimesh

    mesh = trimesh.creation.box(extents=(0.4, 0.8, 0.3))
    verts = np.asarray(mesh.vertices)
    for weight in (0.0, 0.5, 1.0):
        out = toward_size(verts, np.log(1.2), weight)
        side = np.ptp(out[:, :2], axis=0).max()
        assert np.isclose(side, 0.8 ** (1 - weight) * 1.2 ** weight)
        np.testing.assert_allclose(out, verts * (side / 0.8), atol=1e-12)  # an even scale about the origin
        assert check_printable(out, np.asarray(mesh.faces)).ok
    assert np.array_equal(toward_size(verts, float("nan"), 1.0), verts)


def test_fit_size_writes_a_head_that_loads_and_scales_each_output(fake, banked_model, tmp_path, capsys):  # noqa: F811
    from recon_core.io.inference import Reconstructor
    from training.evaluate import training_models

    shapenet, renders = fake
    out = tmp_path / "sized"
    args = ["--model", str(banked_model), "--shapenet", str(shapenet), "--renders", str(renders), "--no-progress"]
    assert main(args + ["--out", str(out), "--weight", "1"]) == 0
    assert "ridge strength" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"]["size_weight"] == 1 and meta["size_head"]["views"] == 12
    model, meta = load_model(out)
    # the head is the ridge fit of the training views' features, as fit_size collects them
    plain, _ = load_model(banked_model)
    rec_plain = Reconstructor(plain, {"trained": True})
    features, extents, groups = collect(rec_plain.model, training_models(shapenet, renders), progress=False)
    w, b = fit_ridge(features, extents, meta["size_head"]["ridge"])
    np.testing.assert_allclose(model.size_head.weight.detach().numpy()[0], w, rtol=1e-4, atol=1e-6)
    assert np.isclose(float(model.size_head.bias.detach()), b, rtol=1e-5)

    # the head reads the picture's pooled features
    from recon_core.network.crop import prepare_image

    rgb, alpha = _rgba(renders, "chair_val", 0)
    mask = alpha / 255.0
    image = prepare_image(rgb, alpha, model.config.image_size).image[None]
    with torch.inference_mode():
        res = model(image)
        _, pooled = model.encoder(image, pyramid=False)
    extent = float(res.log_extent[0])
    assert np.isclose(extent, float(pooled.double().numpy()[0] @ w + b), rtol=1e-4)

    # each candidate's solid is scaled (before it is placed) to the head's reading, the faces unchanged
    rec = Reconstructor(_with_config(model, bank_fit_candidates=2, bank_place=False), meta)
    rec_plain = Reconstructor(_with_config(plain, bank_fit_candidates=2, bank_place=False), {"trained": True})
    for row, pose, _ in rec._fitted(rec._ranked(rgb, alpha, res.verts[0], None, 2), mask, 2):
        got, faces = rec._snap(row, pose, mask, extent)
        before, before_faces = rec_plain._snap(row, pose, mask)
        side = np.ptp((got @ VIEW_TO_OUTPUT)[:, :2], axis=0).max()
        assert np.isclose(side, np.exp(extent), rtol=1e-9)
        np.testing.assert_allclose(got, before * (side / np.ptp(before[:, :2], axis=0).max()), atol=1e-12)
        np.testing.assert_array_equal(faces, before_faces)
    sized, sized_meta = load_model(out)
    assert Reconstructor(sized, sized_meta).reconstruct(rgb, alpha).report.ok


def test_a_size_head_of_other_weights_or_none_is_refused(fake, banked_model, tmp_path):  # noqa: F811
    shapenet, renders = fake
    out = tmp_path / "sized"
    assert main(["--model", str(banked_model), "--shapenet", str(shapenet), "--renders", str(renders),
                 "--no-progress", "--out", str(out)]) == 0
    head = out.with_name(out.name + SIZE_SUFFIX)
    save_size_head(torch.zeros(512), 0.0, out, "0123456789abcdef")
    with pytest.raises(WeightsError, match="fitted on other weights"):
        load_model(out)
    head.unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_model(out)
    head.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(out)


def test_fit_size_refuses_a_bad_weight_and_missing_data(banked_model, tmp_path, capsys):  # noqa: F811
    assert main(["--model", str(banked_model), "--weight", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--weight" in capsys.readouterr().err
    assert main(["--model", str(banked_model), "--renders", str(tmp_path / "none"), "--shapenet",
                 str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    assert "error" in capsys.readouterr().err
    assert not list(tmp_path.glob("a*")) and not list(tmp_path.glob("b*"))
