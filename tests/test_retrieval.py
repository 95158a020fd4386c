"""The picture embedding (recon_core.network.retrieval.embed_image), the principal components the shape bank
keeps of it (training/build_shape_bank.py), and copying a model's weights into another (train.py --init-from).

The shape bank itself is tested in tests/test_shape_bank.py. Everything here is synthetic (a drawn
disc, random matrices): no data/ folder is read. Each check compares against a short, obvious
reference written here (numpy).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_core.network.config import ModelConfig
from recon_core.network.model import build_model
from recon_core.network.retrieval import EMBED_DIM, embed_image
from tests.conftest import TINY
from training.build_shape_bank import principal_components
from training.train import _load_init_weights


def _disc_image(size: int = 96, radius: int = 30, shade: int = 60) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[inside] = shade
    return rgb, (inside * 255).astype(np.uint8)


# ------------------------------------------------------------------ the embedding and its principal components


def test_embed_image_is_re_exported_by_baselines():
    from training import baselines

    assert baselines.embed_image is embed_image
    rgb, alpha = _disc_image()
    e = embed_image(rgb, alpha)
    assert e.shape == (EMBED_DIM,) and e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1) < 1e-5


def test_principal_components_orthonormal_and_ordered():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20)) * np.linspace(3, 0.1, 20)  # decreasing variance per axis
    mean, basis = principal_components(x, 5)
    assert mean.shape == (20,) and basis.shape == (20, 5)
    assert mean.dtype == np.float32 and basis.dtype == np.float32
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)
    # reference: eigen-decomposition of the covariance; same variances along the directions
    evals = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    var = ((x - mean) @ basis).var(axis=0)
    np.testing.assert_allclose(var, evals[:5], rtol=1e-4)
    # more components asked than the data has: all it has
    assert principal_components(x[:8], 50)[1].shape == (20, 8)


def test_principal_components_recover_a_3d_subspace():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(40, 3)))  # orthonormal (40, 3)
    offset = rng.normal(size=40)
    x = offset + rng.normal(size=(100, 3)) * [2.0, 1.0, 0.5] @ q.T
    mean, basis = principal_components(x, 3)
    recon = (x - mean) @ basis @ basis.T + mean
    np.testing.assert_allclose(recon, x, atol=1e-4)
    # the basis spans the same subspace as q
    np.testing.assert_allclose(basis @ basis.T, q @ q.T, atol=1e-5)
    # two components are not enough (the test can fail)
    mean2, basis2 = principal_components(x, 2)
    assert np.abs((x - mean2) @ basis2 @ basis2.T + mean2 - x).max() > 0.1


# ------------------------------------------------------------------ train.py --init-from


def _perturb_zero_layers(model, scale=0.05):
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, scale)


def _sphere_model(**kw):
    torch.manual_seed(7)
    model = build_model(ModelConfig(**{**TINY, **kw}))
    _perturb_zero_layers(model)  # coarse head and offsets non-zero, like a trained model
    return model


def test_load_init_weights_copies_every_tensor_and_leaves_the_source_alone():
    source = _sphere_model()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    torch.manual_seed(8)
    target = build_model(ModelConfig(**TINY))
    _load_init_weights(target, source)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in source.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_load_init_weights_rejects_other_architectures():
    target = build_model(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="does not fit"):
        _load_init_weights(target, _sphere_model(coarse="template"))  # an extra tensor


def test_load_init_weights_size_mismatch_raises_value_error():
    target = build_model(ModelConfig(**TINY))
    with pytest.raises(ValueError, match="does not fit"):
        _load_init_weights(target, _sphere_model(hidden_dim=8))


@pytest.mark.parametrize("background", [255, 230, 200])
def test_embed_image_without_alpha_takes_the_object_the_crop_takes(background):
    """Without alpha the silhouette is the object the border-colour rule finds (the crop's own), on white or not:
    the same embedding as with the object's true mask (before: every non-white pixel, so on a grey page the whole
    crop, cosine 0.78 at 230)."""
    rgb, alpha = _disc_image()
    rgb[alpha == 0] = background
    with_mask, without = embed_image(rgb, alpha), embed_image(rgb, None)
    assert float(with_mask @ without) > 0.999
