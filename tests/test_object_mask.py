"""The object mask a reconstruction used: on the result, written by ``recon-mesh --save-mask``, and a
``coarse="occupancy"`` model whose mask finds no object refusing the picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recon_core.io.cli import main
from recon_core.io.image import ImageError, load_image
from recon_core.io.inference import MIN_MASK_SHARE, Reconstructor
from recon_core.io.weights import save_model
from recon_core.mesh.printable import check_printable
from recon_core.network.config import ModelConfig
from recon_core.network.crop import prepare_image
from recon_core.network.model import build_model

OCCUPANCY = dict(backbone="resnet18", image_size=64, fpn_channels=32, hidden_dim=32, coarse="occupancy",
                 occupancy_resolution=6, occupancy_depth_bins=8)


def _occupancy_model(mask_logit: float):
    """A tiny random-weight occupancy model whose mask head says ``mask_logit`` everywhere (> 0: object)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**OCCUPANCY)).eval()
    with torch.no_grad():
        model.heads.maps.weight[0].zero_()  # channel 0 of the 2.5D maps is the mask logit
        model.heads.maps.bias[0] = mask_logit
        model.heads.occupancy[-1].bias.fill_(3.0)  # something to mesh
    return model


def _picture(size=(120, 90)) -> np.ndarray:
    rgb = np.full((size[1], size[0], 3), 255, np.uint8)
    rgb[20:80, 40:70] = (150, 90, 40)
    return rgb


def test_a_mask_that_finds_nothing_is_refused():
    rec = Reconstructor(_occupancy_model(-20.0), {"trained": False})
    with pytest.raises(ImageError, match=r"^No object found in the picture: .* 0\.0% .*transparency\.$"):
        rec.reconstruct(_picture())


def test_the_share_is_measured_against_min_mask_share():
    """Object logits on just under / just over MIN_MASK_SHARE of the stride-4 mask: refused / kept."""
    model = _occupancy_model(-20.0)
    rec = Reconstructor(model, {"trained": False})
    forward = model.forward

    def with_mask(cells):
        def patched(*args, **kwargs):
            out = forward(*args, **kwargs)
            mask = torch.full_like(out.mask_logits, -20.0)
            mask.view(-1)[:cells] = 20.0
            out.mask_logits = mask
            return out
        return patched

    cells = model.config.image_size // 4 * (model.config.image_size // 4)  # 16 x 16
    need = int(np.ceil(MIN_MASK_SHARE * cells))
    model.forward = with_mask(need - 1)
    with pytest.raises(ImageError, match="No object found"):
        rec.reconstruct(_picture())
    model.forward = with_mask(need)
    assert rec.reconstruct(_picture()).report.ok


def test_the_alpha_is_used_even_when_the_model_finds_nothing():
    rec = Reconstructor(_occupancy_model(-20.0), {"trained": False})
    rgb = _picture()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[20:80, 40:70] = 255
    result = rec.reconstruct(rgb, alpha)
    assert check_printable(result.verts, result.faces).ok
    assert np.array_equal(result.mask, alpha / np.float32(255))


def test_the_predicted_mask_is_on_the_result_in_the_pictures_pixels():
    """An "object everywhere" mask comes back as ones over the crop box and zeros elsewhere."""
    rec = Reconstructor(_occupancy_model(20.0), {"trained": False})
    rgb = np.full((90, 300, 3), 255, np.uint8)
    rgb[20:70, 2:52] = (150, 90, 40)  # the crop box leaves the picture on the left
    result = rec.reconstruct(rgb)
    u0, v0, u1, v1 = prepare_image(rgb, None, 64).box
    assert u0 < 0 and result.mask.shape == (90, 300) and result.mask.dtype == np.float32
    rows, cols = np.mgrid[0:90, 0:300] + 0.5
    inside = (cols >= u0) & (cols < u1) & (rows >= v0) & (rows < v1)
    assert inside.any() and not inside.all()
    assert np.allclose(result.mask[inside], 1.0) and np.allclose(result.mask[~inside], 0.0, atol=1e-6)


def test_a_model_without_a_mask_head_gives_the_alpha_or_the_border_colour_object(tiny_config):
    rec = Reconstructor(build_model(tiny_config), {"trained": False})
    rgb = _picture()
    result = rec.reconstruct(rgb, vertices=642)
    assert np.array_equal(result.mask, (rgb[..., 1] < 128).astype(np.float32))
    alpha = np.full(rgb.shape[:2], 0, np.uint8)
    alpha[10:50, 10:30] = 90
    assert np.array_equal(rec.reconstruct(rgb, alpha, vertices=642).mask, alpha / np.float32(255))


def test_recon_mesh_names_the_picture_and_writes_nothing(tmp_path, capsys):
    stem = save_model(_occupancy_model(-20.0), tmp_path / "blind")
    picture = tmp_path / "photo.png"
    Image.fromarray(_picture(), "RGB").save(picture)
    out, mask = tmp_path / "mesh.stl", tmp_path / "mask.png"
    code = main([str(picture), "-o", str(out), "--model", str(stem), "--save-mask", str(mask)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: No object found in {picture}: ") and err.count("\n") == 1
    assert not out.exists() and not mask.exists()


def test_recon_mesh_saves_the_predicted_mask(tmp_path, capsys):
    stem = save_model(_occupancy_model(20.0), tmp_path / "seeing")
    picture = tmp_path / "photo.png"
    Image.fromarray(_picture(), "RGB").save(picture)
    mask = tmp_path / "mask.png"
    code = main([str(picture), "-o", str(tmp_path / "mesh.stl"), "--model", str(stem), "--save-mask", str(mask)])
    assert code == 0, capsys.readouterr().err
    saved = np.asarray(Image.open(mask))
    assert saved.shape == (90, 120) and saved.dtype == np.uint8
    rgb, _, _ = load_image(picture)
    box = prepare_image(rgb, None, 64).box
    assert saved[45, 55] == 255 and (saved[int(box[1]) + 2, :] == 255).any()


def test_an_alpha_with_nothing_opaque_takes_the_whole_image():
    """object_box never fails on an empty alpha (it indexed an empty array): the whole picture is the box."""
    from recon_core.network.crop import object_box, object_pixels

    rgb = np.full((30, 40, 3), 200, np.uint8)
    alpha = np.zeros((30, 40), np.uint8)
    assert object_pixels(rgb, alpha) is None and object_box(rgb, alpha) == (0, 0, 40, 30)
    alpha[3, 5] = 1  # the faintest pixel still counts
    assert object_box(rgb, alpha) == (5, 3, 6, 4)
