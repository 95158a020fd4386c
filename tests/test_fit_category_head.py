"""Refitting the category head on frozen features (training/fit_category_head.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.fit_category_head import _accuracy, _by_style, fit_head


def _blobs(counts, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (len(counts), dim))
    x = np.concatenate([centres[k] + rng.normal(0, 1, (n, dim)) for k, n in enumerate(counts)])
    y = np.concatenate([np.full(n, k) for k, n in enumerate(counts)])
    return x.astype(np.float32), y


def test_fit_head_separates_blobs_from_a_useless_start():
    x, y = _blobs([60, 60, 60])
    init = (torch.zeros(3, x.shape[1]), torch.zeros(3))
    assert _accuracy(x, y, *init).mean() == pytest.approx(1 / 3)  # all say class 0
    w, b = fit_head(x, y, 3, 1e-4, init)
    assert _accuracy(x, y, w, b).mean() > 0.95


def test_fit_head_minimises_the_weighted_loss():
    """The result is a minimum: small moves of the weights do not lower the objective."""
    x, y = _blobs([80, 10, 40], seed=1)
    decay = 1e-2
    w, b = fit_head(x, y, 3, decay, (torch.zeros(3, 6), torch.zeros(3)))
    counts = np.bincount(y)
    sw = (1.0 / counts)[y]
    sw = sw / sw.sum()

    def objective(w, b):  # the plain formula, in numpy
        z = x.astype(np.float64) @ w.T + b
        z = z - z.max(1, keepdims=True)
        nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))
        return float((nll * sw).sum() + decay * (w**2).sum())

    base = objective(w.double().numpy(), b.double().numpy())
    rng = np.random.default_rng(0)
    for _ in range(20):
        dw, db = rng.normal(0, 1e-2, w.shape), rng.normal(0, 1e-2, b.shape)
        assert objective(w.double().numpy() + dw, b.double().numpy() + db) >= base - 1e-9


def test_accuracy_by_style():
    hits = np.array([True, False, True, True])
    assert _by_style(hits, ["clean", "clean", "pencil", "pencil"]) == {"clean": 0.5, "pencil": 1.0}
