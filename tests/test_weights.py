import json
import re
from pathlib import Path

import pytest
import torch

from recon_core.io.weights import WeightsError, load_model, save_model
from recon_core.network.model import build_model


def test_save_load_round_trip(tmp_path, tiny_config):
    torch.manual_seed(1)
    model = build_model(tiny_config)
    stem = save_model(model, tmp_path / "m", {"steps": 5}, half=False)
    loaded, meta = load_model(stem)
    assert meta["trained"] is True and meta["steps"] == 5
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left


def test_loading_skips_the_random_initialisation_and_equals_a_fully_initialised_load(tmp_path, tiny_config,
                                                                                   monkeypatch):
    """load_model builds with torch.nn.init switched off (the file replaces every value): the loaded model,
    its outputs included, equals one built with the initialisation and then loaded; the functions come back."""
    import recon_core.io.weights as weights

    torch.manual_seed(1)
    model = build_model(tiny_config).eval()
    stem = save_model(model, tmp_path / "m", half=False)
    calls = []
    real = torch.nn.init.kaiming_uniform_
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: calls.append(1) or real(t, *a, **k))
    fast, _ = load_model(stem)
    assert not calls  # the Linear and Conv layers' reset_parameters drew nothing
    monkeypatch.setattr(weights, "_INIT_FUNCTIONS", ())  # the slow, obvious way: initialise, then overwrite
    slow, _ = load_model(stem)
    assert calls
    assert torch.nn.init.kaiming_uniform_ is not real and torch.nn.init.normal_.__name__ == "normal_"
    for (k, a), b in zip(slow.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(slow.named_buffers(), fast.buffers()):  # the non-persistent buffers too
        assert torch.equal(a, b), k
    image = torch.rand(1, 3, tiny_config.image_size, tiny_config.image_size)
    with torch.inference_mode():
        assert torch.equal(slow(image).verts, fast(image).verts)
    assert all(p.requires_grad for p in fast.parameters())  # still trainable (--init-from)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's memory maps (Linux)")
def test_a_loaded_model_keeps_no_map_of_its_file(tmp_path, tiny_config):
    """safetensors maps the file into memory, and tensors of the model's own dtype were views of that map: the file
    stayed mapped while the model lived, which on Windows refuses replacing it (a model saved over it, a git pull)."""
    import gc

    stem = save_model(build_model(tiny_config), tmp_path / "m", {}, half=False)  # every dtype the model's own
    loaded, _ = load_model(stem)
    gc.collect()
    maps = Path("/proc/self/maps").read_text()
    assert str(stem) + ".safetensors" not in maps
    assert loaded.training is False


def test_missing_weights_gives_untrained_model(tiny_model_path):
    model, meta = load_model(tiny_model_path)
    assert meta["trained"] is False


@pytest.mark.parametrize("trained", ["true", None])
def test_a_model_json_without_its_weights_is_refused(tmp_path, tiny_config, trained):
    """A JSON that does not say ``"trained": false`` (a shipped or trained model's) without its ``.safetensors``
    is a missing file, named, not a random network in its place (which failed later on its empty shape bank)."""
    from recon_core.io.weights import check_model_files

    stem = tmp_path / "m"
    meta = {"model": tiny_config.to_dict(), **({} if trained is None else {"trained": True})}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    message = f"Model weights not found: there is no {stem}.safetensors beside m.json"
    for check in (load_model, check_model_files):
        with pytest.raises(WeightsError, match=re.escape(message)):
            check(stem)


def test_truncated_weights_message(tmp_path, tiny_config):
    stem = save_model(build_model(tiny_config), tmp_path / "m")
    data = stem.with_suffix(".safetensors").read_bytes()
    stem.with_suffix(".safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(stem)


def test_wrong_shape_message(tmp_path, tiny_config):
    stem = save_model(build_model(tiny_config), tmp_path / "m")
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["model"]["hidden_dim"] = 32
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="do not match the architecture"):
        load_model(stem)


def test_missing_config_message(tmp_path, monkeypatch):
    """A model that is not there; "models/default" given outside the source folder also says where the shipped
    model is (it said only that models/default.json was not found, though --help names it as the default)."""
    from recon_core.io.weights import default_model_path

    monkeypatch.delenv("RECON_MODEL", raising=False)
    with pytest.raises(WeightsError, match="Model config not found") as err:
        load_model(tmp_path / "nothing")
    shipped = default_model_path()
    assert f"The shipped model is {shipped}; leave the model out to use it." in str(err.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match=r"Model config not found: models/default\.json\. .* The shipped model is"):
        load_model("models/default")


def test_atomic_write_gives_usual_permissions(tmp_path):
    import os

    from recon_core.io.export import atomic_write_bytes

    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"abc")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.bin").read_bytes() == b"abc"
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


REMOVED_PRIOR_FIELDS = {"prior_templates": 0, "prior_views": 0, "prior_dim": 128, "prior_level": 4}
"""The retrieval prior's ModelConfig fields at their defaults, as model files saved before its removal hold them."""


def test_config_saved_before_the_prior_was_removed_loads(tmp_path, tiny_config):
    torch.manual_seed(2)
    model = build_model(tiny_config)
    stem = save_model(model, tmp_path / "m", half=False)
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert not set(REMOVED_PRIOR_FIELDS) & set(meta["model"])  # no longer written
    meta["model"].update(REMOVED_PRIOR_FIELDS)
    stem.with_suffix(".json").write_text(json.dumps(meta))
    loaded, _ = load_model(stem)
    assert loaded.config == tiny_config
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("field, value", [("prior_templates", 306), ("prior_level", 3)])
def test_config_using_the_removed_prior_is_refused(tmp_path, tiny_config, field, value):
    stem = save_model(build_model(tiny_config), tmp_path / "m")
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["model"].update({**REMOVED_PRIOR_FIELDS, field: value})
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match=f"{field}={value}.*removed code path"):
        load_model(stem)
    meta["model"] = {**meta["model"], **REMOVED_PRIOR_FIELDS, "coarse": "retrieval"}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="coarse must be"):
        load_model(stem)


def test_shipped_model_config_loads():
    """models/default.json (saved before the prior was removed) still describes a buildable model."""
    from recon_core.io.weights import default_model_path
    from recon_core.network.config import ModelConfig, from_dict

    meta = json.loads(default_model_path().with_suffix(".json").read_text())
    config = from_dict(ModelConfig, meta["model"])
    assert config.coarse == "ico_sphere" and config.shape_bank


def test_a_stem_with_a_dot_keeps_it(tmp_path, tiny_config):
    """``runs/net.v2`` is saved, loaded and checked as ``runs/net.v2.json`` and ``.safetensors`` (not
    ``runs/net.json``, which with_suffix would make of it)."""
    from recon_core.io.weights import model_files

    stem = save_model(build_model(tiny_config), tmp_path / "net.v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.v2.json", "net.v2.safetensors"]
    assert model_files(tmp_path / "net.v2.json") == model_files(stem) == (tmp_path / "net.v2.json",
                                                                           tmp_path / "net.v2.safetensors")
    _, meta = load_model(tmp_path / "net.v2")
    assert meta["trained"] is True


def test_the_object_finder_given_as_the_model_is_named_so(tmp_path):
    """`recon-mesh --model models/finder` said the finder's config "is not valid ('model'); restore it from the
    repository", as if the file were damaged: it is whole, but the object finder's, not a reconstruction model's."""
    from recon_core.io.weights import check_model_files

    finder = Path(__file__).resolve().parent.parent / "models" / "finder"
    for check in (load_model, check_model_files):
        with pytest.raises(WeightsError) as err:
            check(finder)
        message = str(err.value)
        assert message.startswith(f"{finder}.json is the object finder's config") and "restore" not in message
        assert "the reconstruction model is models/default" in message
    other = tmp_path / "other"
    other.with_suffix(".json").write_text(json.dumps({"trained": True, "steps": 3}))
    with pytest.raises(WeightsError, match=re.escape(f'{other}.json is not a reconstruction model\'s config (it has '
                                                     'no "model" section); the reconstruction model is models/default')):
        load_model(other)
