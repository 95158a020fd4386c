"""The category branch: the encoder's tap, the branch as a copy of the last block and head, its file beside the
model's (stamped with the encoder), the mesh it leaves alone, and its training (training/train_category.py)."""

from __future__ import annotations

import json

import pytest
import torch

from recon_core.io.weights import (
    WeightsError,
    branch_file,
    load_model,
    model_files,
    save_category_branch,
    save_model,
)
from recon_core.network.config import ModelConfig
from recon_core.network.heads import CategoryBranch
from recon_core.network.model import build_model
from tests.conftest import TINY

SMALL50 = {**TINY, "backbone": "resnet50"}


def _model(branch: bool, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**SMALL50, "category_branch": branch})).eval()


def _copied_branch(model) -> CategoryBranch:
    """A branch copied from ``model``'s folded last block and its head (``model`` is folded in place)."""
    model.encoder.fold_batchnorm()
    return CategoryBranch.from_block(model.encoder.stages[-1][-1], model.category_head).eval()


def test_the_tap_is_the_last_blocks_input_and_forward_is_unchanged():
    model = _model(False)
    images = torch.rand(2, 3, 64, 64)
    enc = model.encoder
    with torch.no_grad():
        maps, pooled, tap = enc(images, tap=True)
        maps2, pooled2 = enc(images)
        x = enc.stem((images - enc.mean) / enc.std)  # the reference: every block but the last, one by one
        for stage in enc.stages[:-1]:
            x = stage(x)
        for block in enc.stages[-1][:-1]:
            x = block(x)
    assert tap.shape == (2, 2048, 2, 2)
    torch.testing.assert_close(tap, x)
    torch.testing.assert_close(pooled, pooled2)
    for a, b in zip(maps, maps2):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(pooled, enc.stages[-1][-1](tap).mean(dim=(2, 3)))


def test_a_branch_copied_from_the_last_block_and_head_gives_the_heads_logits():
    model = _model(False)
    branch = _copied_branch(model)
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        _, pooled, tap = model.encoder(images, tap=True)
        torch.testing.assert_close(branch(tap), model.category_head(pooled), atol=1e-4, rtol=1e-4)
        # and it is not the identity of anything: other weights give other logits
        branch.conv2.weight.mul_(-1.0)
        assert not torch.allclose(branch(tap), model.category_head(pooled), atol=1e-3)


def test_the_branch_reports_the_category_and_the_mesh_stays_the_same():
    plain, with_branch = _model(False), _model(True)
    with_branch.load_state_dict({**plain.state_dict(),
                                 **{f"category_branch.{k}": v for k, v in _model(True, seed=5).category_branch
                                    .state_dict().items()}})
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(images), with_branch(images)
        _, _, tap = with_branch.encoder(images, tap=True)
        expected = with_branch.category_branch(tap)
        classified = with_branch.classify(images)
    for va, vb in zip(a.stage_verts, b.stage_verts):
        assert torch.equal(va, vb)  # the refiner is conditioned on the shared head either way
    torch.testing.assert_close(b.category_logits, expected)
    torch.testing.assert_close(classified, expected)
    assert not torch.allclose(a.category_logits, b.category_logits)


@pytest.mark.parametrize("change", [{"backbone": "resnet18"}, {"backbone_norm": "group"}, {"coarse": "occupancy"}])
def test_the_branch_needs_a_folded_resnet50_and_a_mesh_model(change):
    with pytest.raises(ValueError, match="category_branch needs"):
        ModelConfig(**{**SMALL50, **change, "category_branch": True})
    ModelConfig(**{**SMALL50, **change})  # fine without a branch


def test_from_block_needs_the_norms_folded():
    model = _model(False)
    with pytest.raises(ValueError, match="folded"):
        CategoryBranch.from_block(model.encoder.stages[-1][-1], model.category_head)


def test_the_branch_runs_where_inference_prepares_the_encoder(tmp_path, monkeypatch):
    """Folded, channels-last and (where the CPU computes it) bfloat16: the branch reads the tap and reports within
    bfloat16's rounding of the plain model's logits."""
    from recon_core.io import inference
    from recon_core.io.inference import Reconstructor

    stem = save_model(_model(True), tmp_path / "m")
    plain, _ = load_model(stem)
    images = torch.rand(2, 3, 64, 64)
    for bf16 in (False, True):
        monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: bf16)
        rec = Reconstructor.from_file(stem, finder=False)
        with torch.inference_mode():
            fast, ref = rec.model.classify(images), plain.classify(images)
        assert fast.dtype == torch.float32
        assert float((fast - ref).norm() / ref.norm()) < (0.03 if bf16 else 1e-4)


def test_save_and_load_keep_the_branch_in_its_own_stamped_file(tmp_path):
    model = _model(True)
    stem = save_model(model, tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(model_files(stem)[1]), framework="pt") as f:
        assert not any(k.startswith("category_branch.") for k in f.keys())
    with safe_open(str(branch_file(stem)), framework="pt") as f:
        assert set(f.keys()) == set(model.category_branch.state_dict())
        assert len(f.metadata()["encoder"]) == 16
    loaded, _ = load_model(stem)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.classify(images), model.classify(images), atol=2e-2, rtol=2e-2)


def test_a_missing_or_foreign_branch_is_one_sentence(tmp_path):
    stem = save_model(_model(True), tmp_path / "m")
    other = save_model(_model(True, seed=3), tmp_path / "other")
    branch_file(other).replace(branch_file(stem))  # fitted on another network's encoder
    with pytest.raises(WeightsError, match="another network's encoder.*train_category.py"):
        load_model(stem)
    branch_file(stem).unlink()
    with pytest.raises(WeightsError, match="Category branch weights not found"):
        load_model(stem)
    from recon_core.io.weights import check_model_files

    with pytest.raises(WeightsError, match="Category branch weights not found"):
        check_model_files(stem)  # what the scripts and benchmarks check before their work
    check_model_files(stem, branch=False)  # what train_category.py checks: it fits the branch again
    branch_file(stem).write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(stem)
    from safetensors.torch import save

    branch_file(stem).write_bytes(save({"head.weight": torch.zeros(13, 2048)}))  # no stamp
    with pytest.raises(WeightsError, match="has no stamp"):
        load_model(stem)
    # a load that leaves the branch out (train.py --init-from, train_category.py itself) needs no branch file
    model, _ = load_model(stem, overrides={"category_branch": False})
    assert model.category_branch is None
    branch_file(stem).unlink()  # not even when there is none at all
    model, _ = load_model(stem, overrides={"category_branch": False})
    assert model.category_branch is None


def test_a_branch_that_does_not_fit_names_its_file(tmp_path):
    stem = save_model(_model(True), tmp_path / "m")
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(branch_file(stem)), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    state["head.weight"] = torch.zeros(5, 2048)
    branch_file(stem).write_bytes(save(state, metadata=meta))
    with pytest.raises(WeightsError, match=r"m\.category\.safetensors does not fit this network"):
        load_model(stem)


def test_save_category_branch_leaves_the_network_file_as_it_was(tmp_path):
    model = _model(False)
    stem = save_model(model, tmp_path / "m")
    weights = model_files(stem)[1].read_bytes()
    branch = _copied_branch(_model(False))
    save_category_branch(branch, stem)
    assert model_files(stem)[1].read_bytes() == weights
    cfg = model_files(stem)[0]
    meta = json.loads(cfg.read_text())
    meta["model"]["category_branch"] = True
    cfg.write_text(json.dumps(meta))
    loaded, _ = load_model(stem)  # the stamp is the saved network's: it loads
    with torch.no_grad():
        torch.testing.assert_close(loaded.category_branch.conv2.weight, branch.conv2.weight.half().float())


def test_train_from_a_model_with_a_branch_leaves_the_branch_out(tmp_path):
    from training.config import TrainConfig
    from training.train import _check_config, _load_init_weights

    init, fresh = _model(True, seed=1), _model(False, seed=2)
    _load_init_weights(fresh, init)
    torch.testing.assert_close(fresh.category_head.weight, init.category_head.weight)
    import dataclasses

    cfg = dataclasses.replace(TrainConfig(), model=ModelConfig(**{**SMALL50, "category_branch": True}))
    with pytest.raises(ValueError, match="model.category_branch=True: give false"):
        _check_config(cfg)


def test_train_branch_learns_a_separable_problem_and_accuracy_by_style_counts():
    from training.train_category import accuracy_by_style, predict, train_branch

    torch.manual_seed(0)
    branch = CategoryBranch(32, 8, 3)
    labels = torch.arange(300) % 3
    feats = torch.randn(300, 32, 2, 2) * 0.3
    feats[torch.arange(300), labels * 5] += 2.0  # the category shows in one channel
    before = (predict(branch, feats).argmax(1) == labels).float().mean()
    losses = train_branch(branch, feats, labels, epochs=8, lr=1e-2, batch=32, log_every=0)
    logits = predict(branch, feats)
    assert losses[-1] < losses[0]
    assert (logits.argmax(1) == labels).float().mean() > max(0.9, float(before))
    styles = ["a", "b"] * 150
    acc = accuracy_by_style(logits, labels, styles)
    right = (logits.argmax(1) == labels).tolist()
    assert acc["a"] == pytest.approx(sum(r for r, s in zip(right, styles) if s == "a") / 150)
    assert acc["all"] == pytest.approx(sum(right) / 300)
    assert list(acc) == ["a", "b", "all"]


def test_a_bare_run_does_not_write_over_the_shipped_model(capsys):
    """``train_category.py`` without --model fitted the shipped model's branch and wrote it over
    models/default.category.safetensors and its JSON: it now asks for the model by name (or --dry-run)."""
    from pathlib import Path

    from training.train_category import main

    models = Path(__file__).resolve().parents[1] / "models"
    before = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give --model, the model whose category branch to fit") and "--dry-run" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == before
