"""Temperature scaling of the category probabilities (training/calibrate.py, ModelConfig.category_temperature)."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from recon_core.io.inference import Reconstructor
from recon_core.network.config import ModelConfig
from training.calibrate import fit_temperature, nll, softmax


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
