"""Shared fixtures: a tiny model configuration so tests stay fast on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon_core.network.config import ModelConfig

TINY = dict(backbone="resnet18", image_size=64, fpn_channels=16, coarse_hidden=32, hidden_dim=16,
            attention_heads=2, gconv_layers=1)


@pytest.fixture(autouse=True)
def _no_shipped_finder(monkeypatch):
    """Tests see no object finder unless they give one (``Reconstructor(..., finder=...)``, ``RECON_FINDER``):
    what a tiny model does with a picture without alpha is then the test's own business."""
    monkeypatch.setenv("RECON_FINDER", "none")


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig(**TINY)


@pytest.fixture
def tiny_model_path(tmp_path: Path) -> Path:
    """A model stem (``.json`` only, so weights are random) with the tiny configuration."""
    stem = tmp_path / "tiny"
    stem.with_suffix(".json").write_text(json.dumps({"model": ModelConfig(**TINY).to_dict(), "trained": False}))
    return stem
