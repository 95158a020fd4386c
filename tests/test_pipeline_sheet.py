"""training/pipeline_sheet.py: the README's step-by-step picture shows the shipped model's own steps."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from recon_core.io.image import load_picture
from recon_core.io.inference import VIEW_TO_OUTPUT, Reconstructor
from recon_core.mesh.silhouette import mask_grid, silhouette_grids
from training.pipeline_sheet import COLUMNS, HEADER, main, pipeline_sheet, pipeline_steps


@pytest.fixture(scope="module")
def shipped():
    return Reconstructor.from_file()


@pytest.fixture(scope="module")
def chair_steps(shipped):
    rgb, alpha, _ = load_picture("examples/chair.png")
    return rgb, alpha, pipeline_steps(shipped, rgb, alpha)


def _view_iou(mesh, mask) -> float:
    """The IoU of an output-frame mesh's vertices' silhouette with the mask, on the fit's grid."""
    view = np.asarray(mesh[0]) @ VIEW_TO_OUTPUT  # output -> view frame (VIEW_TO_OUTPUT is a rotation)
    grid, target = silhouette_grids(view[None])[0], mask_grid(mask)
    return float((grid & target).sum() / (grid | target).sum())


def test_the_fitted_step_covers_the_mask_as_its_iou_says(chair_steps):
    """The fitted solid is posed in the picture's view: its silhouette covers the mask about as its printed IoU says,
    better than the first-ranked model in its view's rotation does (what the fit is for)."""
    _, _, steps = chair_steps
    fitted = _view_iou(steps["fitted"], steps["mask"])
    assert abs(fitted - steps["iou"]) < 0.08
    assert fitted > _view_iou(steps["first"], steps["mask"])


def test_the_warped_step_is_the_output_before_decimation(chair_steps, shipped):
    rgb, alpha, steps = chair_steps
    result = shipped.reconstruct(rgb, alpha)
    np.testing.assert_array_equal(steps["output"][0], result.verts)
    warped, output = steps["warped"][0], steps["output"][0]
    np.testing.assert_allclose(warped.min(0), output.min(0), atol=0.02)  # the same solid: the same box
    np.testing.assert_allclose(warped.max(0), output.max(0), atol=0.02)
    assert len(steps["warped"][1]) > len(steps["output"][1])  # decimated


@pytest.mark.parametrize("finder", ["models/finder", False])
def test_a_picture_without_alpha_is_shown_with_the_mask_the_model_took(tmp_path, finder):
    """The sketch over white, no alpha: the steps use the object finder's mask, or without a finder the border
    colour's, as reconstruct does."""
    rgba = Image.open("examples/chair_sketch.png").convert("RGBA")
    white = Image.new("RGB", rgba.size, "white")
    white.paste(rgba, mask=rgba.split()[-1])
    white.save(tmp_path / "sketch.png")
    rgb, alpha, _ = load_picture(tmp_path / "sketch.png")
    assert alpha is None
    rec = Reconstructor.from_file(finder=finder)
    steps = pipeline_steps(rec, rgb, alpha)
    result = rec.reconstruct(rgb, alpha)
    assert any("object finder" in n for n in result.notes) == bool(finder)
    assert np.array_equal(steps["mask"] > 0.5, result.mask > 0.5)
    np.testing.assert_array_equal(steps["output"][0], result.verts)
    assert abs(_view_iou(steps["fitted"], steps["mask"]) - steps["iou"]) < 0.08


def test_the_sheet_has_a_tile_for_every_step(chair_steps, tmp_path):
    rgb, _, steps = chair_steps
    path = pipeline_sheet([(rgb, steps), (rgb, steps)], tmp_path / "sheet.png", tile=64)
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (HEADER + 2 * 64, len(COLUMNS) * 64)
    for j in range(len(COLUMNS)):  # every tile of the second row drew something on its white
        tile = img[HEADER + 64 : HEADER + 128, j * 64 : (j + 1) * 64]
        assert (tile < 200).mean() > 0.01, COLUMNS[j]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_a_model_without_a_shape_bank_is_refused(tiny_model_path):
    rec = Reconstructor.from_file(tiny_model_path)
    rgb, alpha, _ = load_picture("examples/chair.png")
    with pytest.raises(ValueError, match="shape bank"):
        pipeline_steps(rec, rgb, alpha)


def test_a_missing_picture_is_one_sentence_and_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.png"), "--out", str(tmp_path / "sheet.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeline_sheet: ") and err.count("\n") == 1
    assert not (tmp_path / "sheet.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--tile", "0"], "argument --tile: must be at least 32 pixels, got 0"),
    (["--out", "{tmp}"], "--out {tmp} is a folder; name the PNG file to write."),
    (["--out", "{tmp}/none/sheet.png"], "the folder of --out {tmp}/none/sheet.png does not exist (or is not a folder); "
                                         "create it first."),
])
def test_bad_options_are_refused_before_the_model_runs(tmp_path, capsys, monkeypatch, args, message):
    """A bad ``--tile`` or ``--out`` is one sentence and exit code 2 before any picture is reconstructed."""
    import recon_core.io.inference as inference

    def no_model(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(inference.Reconstructor, "from_file", no_model)
    argv = ["examples/chair.png", "--out", str(tmp_path / "sheet.png")] + [a.format(tmp=tmp_path) for a in args]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
