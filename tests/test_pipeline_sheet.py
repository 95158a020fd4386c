"""training/pipeline_sheet.py: the README's step-by-step picture shows the shipped model's own steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recon_core.io.image import load_picture
from recon_core.io.inference import Reconstructor
from recon_core.network.crop import prepare_image
from training.pipeline_sheet import COLUMNS, HEADER, main, pipeline_sheet, pipeline_steps


@pytest.fixture(scope="module")
def chair_steps():
    rec = Reconstructor.from_file()
    rgb, alpha, _ = load_picture("examples/chair.png")
    return rec, rgb, alpha, pipeline_steps(rec, rgb, alpha)


def test_the_steps_end_in_the_mesh_recon_mesh_writes(chair_steps):
    rec, rgb, alpha, steps = chair_steps
    result = rec.reconstruct(rgb, alpha)
    np.testing.assert_array_equal(steps["output"][0], result.verts)
    np.testing.assert_array_equal(steps["output"][1], result.faces)
    assert steps["category"] == result.category


def test_the_fitted_step_is_the_candidate_that_became_the_output(chair_steps):
    rec, rgb, alpha, steps = chair_steps
    cfg = rec.model.config
    with torch.inference_mode():  # the ten fitted candidates again: the sheet shows the one that covers the mask best
        out = rec.model(prepare_image(rgb, alpha, cfg.image_size).image[None])
        fitted = rec._fitted(rec._ranked(rgb, alpha, out.verts[0], None, cfg.bank_fit_candidates), steps["mask"])
    assert len(fitted) == cfg.bank_fit_candidates
    assert steps["iou"] == max(pose.iou for _, pose, _ in fitted)
    # the warped and carved solid is the output before decimation: the same box, to a fraction of a cell
    warped, output = steps["warped"][0], steps["output"][0]
    np.testing.assert_allclose(warped.min(0), output.min(0), atol=0.02)
    np.testing.assert_allclose(warped.max(0), output.max(0), atol=0.02)
    assert len(steps["warped"][1]) > len(steps["output"][1])  # decimated


def test_the_sheet_has_a_tile_for_every_step(chair_steps, tmp_path):
    _, rgb, _, steps = chair_steps
    path = pipeline_sheet([(rgb, steps), (rgb, steps)], tmp_path / "sheet.png", tile=64)
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (HEADER + 2 * 64, len(COLUMNS) * 64)
    for j in range(len(COLUMNS)):  # every tile of the second row drew something on its white
        tile = img[HEADER + 64 : HEADER + 128, j * 64 : (j + 1) * 64]
        assert (tile < 200).mean() > 0.01, COLUMNS[j]


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
