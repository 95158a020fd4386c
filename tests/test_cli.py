"""recon-mesh: one clear sentence and no output file on bad input; a printable mesh on good input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon_core.io.cli import main
from recon_core.io.image import load_image
from recon_core.io.weights import save_model
from recon_core.network.model import build_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def good_image(tmp_path):
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[20:80, 30:70] = (150, 90, 40, 255)
    p = tmp_path / "obj.png"
    Image.fromarray(rgba, "RGBA").save(p)
    return p


def _object_rgb(size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8: a brown block on white, an object the image loader finds."""
    rgb = np.full((size, size, 3), 255, np.uint8)
    rgb[size // 5 : size * 4 // 5, size // 3 : size * 2 // 3] = (150, 90, 40)
    return rgb


def _bad_inputs(tmp_path: Path, tiny_config) -> dict[str, tuple[list[str], str]]:
    """name -> (extra argv, expected message fragment)."""
    text = tmp_path / "text.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:2000])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(clear)
    huge = tmp_path / "huge.png"
    from tests.test_image import _png_with_size

    _png_with_size(huge, 20000, 20000)
    good = tmp_path / "good.png"
    Image.fromarray(_object_rgb(), "RGB").save(good)
    white = tmp_path / "white.png"
    Image.new("RGB", (300, 300), "white").save(white)
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8), "RGB").save(noise)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("a file, not a folder")
    given_wide = tmp_path / "given_wide.png"  # a mask of another shape than the (square) picture's
    Image.new("L", (64, 32), 255).save(given_wide)
    given_black = tmp_path / "given_black.png"
    Image.new("L", (64, 64), 0).save(given_black)
    given_white = tmp_path / "given_white.png"
    Image.new("L", (64, 64), 255).save(given_white)
    folder = tmp_path / "folder.stl"
    folder.mkdir()
    mask_link = tmp_path / "link_to_given_white.png"  # another name of the --mask file
    mask_link.symlink_to(given_white)
    broken = tmp_path / "broken_link.png"  # ls lists it: "not found" alone read as a wrong path
    broken.symlink_to(tmp_path / "moved_away.png")
    mask_folder = tmp_path / "folder_m.png"
    mask_folder.mkdir()
    # a model whose weights do not fit its config, and a truncated one
    wrong = save_model(build_model(tiny_config), tmp_path / "wrong")
    meta = json.loads(wrong.with_suffix(".json").read_text())
    meta["model"]["hidden_dim"] = 32
    wrong.with_suffix(".json").write_text(json.dumps(meta))
    cut = save_model(build_model(tiny_config), tmp_path / "cut")
    data = cut.with_suffix(".safetensors").read_bytes()
    cut.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    return {
        "missing file": ([str(tmp_path / "nope.png")], "not found"),
        "not an image": ([str(text)], "not an image"),
        "truncated png": ([str(trunc)], "truncated or corrupt"),
        "1x1 image": ([str(tiny)], "too small"),
        "20000x20000 image": ([str(huge)], "too large"),
        "fully transparent": ([str(clear)], "fully transparent"),
        "wrong-shape weights": ([str(good), "--model", str(wrong)], "do not match the architecture"),
        "truncated safetensors": ([str(good), "--model", str(cut)], "truncated or corrupt"),
        "bad extension": ([str(good), "-o", str(tmp_path / "out.xyz")], "extension must be one of"),
        "bad height": ([str(good), "--height-mm", "-5"], "--height-mm must be a number of millimetres"),
        "3mf without a height": ([str(good), "-o", str(tmp_path / "out.3mf")], "give the object's real height"),
        "uniform white picture": ([str(white), "--save-mask", str(tmp_path / "white_mask.png")], "one uniform colour"),
        "noise picture": ([str(noise)], "random noise"),
        "mask not png": ([str(good), "--save-mask", str(tmp_path / "mask.jpg")], "the extension must be .png"),
        "mask folder missing": ([str(good), "--save-mask", str(tmp_path / "nope" / "mask.png")], "no folder"),
        "mask folder is a file": ([str(good), "--save-mask", str(not_a_folder / "mask.png")],
                                  "is a file, not a folder"),
        "mask name empty": ([str(good), "--save-mask", " "], "The --save-mask file's name is empty"),
        "preview name empty": ([str(good), "--preview", ""], "The --preview file's name is empty"),
        "preview folder is a file": ([str(good), "--preview", str(not_a_folder / "p.png")], "is a file, not a folder"),
        "given mask missing": ([str(good), "--mask", str(tmp_path / "given_nope.png")], "Mask file not found"),
        "picture a broken link": ([str(broken)], f"Image file not found: {broken} (a link to "
                                                 f"{tmp_path / 'moved_away.png'}, which does not exist)."),
        "given mask a broken link": ([str(good), "--mask", str(broken)], f"Mask file not found: {broken} (a link to "),
        "given mask of another shape": ([str(good), "--mask", str(given_wide)], "must have the picture's size"),
        "given mask marks nothing": ([str(good), "--mask", str(given_black)], "marks no object"),
        "height beyond any printer": ([str(good), "--height-mm", "1e39"], "--height-mm must be a number of millimetres"),
        "height below any printer": ([str(good), "--height-mm", "1e-44"], "from 0.1 to 100,000, got 1e-44."),
        "height zero": ([str(good), "--height-mm", "0"],  # as typed, not "0.0"; the add-on's Height 0 is no flag
                        "from 0.1 to 100,000, got 0; to keep the model's own size, leave --height-mm out."),
        "height past the largest": ([str(good), "--height-mm", "100001"], "from 0.1 to 100,000, got 100001."),
        "infinite height": ([str(good), "--height-mm", "inf"], "--height-mm must be a number of millimetres"),
        "mask over the picture": ([str(good), "--save-mask", str(good)], "it is the input picture"),
        "mask over the given mask": ([str(good), "--mask", str(given_white), "--save-mask", str(mask_link)],
                                     "it is the --mask file"),
        "mask over a missing picture": ([str(tmp_path / "gone.png"), "--save-mask", str(tmp_path / "gone.png")],
                                        "Image file not found"),
        "mask is a folder": ([str(good), "--save-mask", str(mask_folder)], "it is a folder"),
        "preview not png": ([str(good), "--preview", str(tmp_path / "preview.jpg")], "the extension must be .png"),
        "preview folder missing": ([str(good), "--preview", str(tmp_path / "nope" / "preview.png")], "no folder"),
        "preview over the picture": ([str(good), "--preview", str(good)], "it is the input picture"),
        "preview is the mask": ([str(good), "--preview", str(tmp_path / "both.png"), "--save-mask",
                                 str(tmp_path / "both.png")], "it is the --save-mask file too"),
        "preview is a folder": ([str(good), "--preview", str(mask_folder)], "it is a folder"),
        "output is a folder": ([str(good), "-o", str(folder)], "it is a folder"),
        "output inside a file": ([str(good), "-o", str(not_a_folder / "out.stl")], "is a file, not a folder"),
        "given mask is a folder": ([str(good), "--mask", str(tmp_path)], "is a folder, not a mask image"),
    }


def test_each_bad_input_gets_one_sentence_and_no_file(tmp_path, tiny_config, capsys):
    for name, (argv, fragment) in _bad_inputs(tmp_path, tiny_config).items():
        out = tmp_path / f"{name.replace(' ', '_')}.stl"
        if "-o" not in argv:
            argv = [*argv, "-o", str(out)]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (name, err)
        assert err.startswith("error: ") and fragment in err, (name, err)
        assert "Traceback" not in err and err.count("\n") == 1, (name, err)
        assert not out.exists(), name
    assert not list(tmp_path.glob("*mask*")), "no mask written on bad input"
    assert not list(tmp_path.glob("*preview*")) and not (tmp_path / "both.png").exists(), "nor a preview"
    with Image.open(tmp_path / "good.png") as img:  # not overwritten by the mask
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), _object_rgb())
    assert not list(tmp_path.glob("*.3mf"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.mark.parametrize("platform", ["darwin", "win32", "linux"])
def test_a_preview_and_a_mask_named_apart_by_case_alone(tmp_path, tiny_model_path, capsys, monkeypatch, platform):
    """On Windows' and macOS's disks (by default) Both.png and both.PNG are one file: the preview overwrote the mask,
    and both were said written. There they are refused before the run; on Linux they are two files."""
    good = tmp_path / "good.png"
    Image.fromarray(_object_rgb(), "RGB").save(good)
    monkeypatch.setattr(sys, "platform", platform)
    code = main([str(good), "-o", str(tmp_path / "m.stl"), "--model", str(tiny_model_path), "--detail", "low",
                 "--preview", str(tmp_path / "Both.png"), "--save-mask", str(tmp_path / "both.PNG")])
    err = capsys.readouterr().err
    if platform == "linux":
        assert code == 0 and (tmp_path / "Both.png").is_file() and (tmp_path / "both.PNG").is_file()
    else:
        assert code == 2 and "names differing only in case are one file" in err and err.count("\n") == 1, err
        assert not (tmp_path / "both.PNG").exists() and not (tmp_path / "Both.png").exists()


def test_sixteen_bit_and_cmyk_are_converted_with_a_note(tmp_path, tiny_model_path, capsys):
    g16 = tmp_path / "g16.png"
    arr = np.full((64, 64), 65535, np.uint16)
    arr[16:48, 20:44] = 9000
    Image.fromarray(arr).save(g16)
    cmyk = tmp_path / "c.jpg"
    Image.fromarray(_object_rgb(), "RGB").convert("CMYK").save(cmyk)
    for image, note in ((g16, "16-bit"), (cmyk, "CMYK")):
        out = tmp_path / f"{image.stem}.obj"
        code = main([str(image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert note in captured.err and out.is_file()


@pytest.mark.parametrize("ext", [".stl", ".obj", ".ply", ".glb"])
def test_writes_every_format(tmp_path, tiny_model_path, good_image, capsys, ext):
    import trimesh

    out = tmp_path / f"mesh{ext}"
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--height-mm", "80",
                 "--detail", "low"])
    printed = capsys.readouterr().out
    assert code == 0 and "✓ printable" in printed
    mesh = trimesh.load(out, force="mesh")
    assert mesh.is_watertight and mesh.volume > 0
    height = 0.080 if ext == ".glb" else 80.0  # glTF's unit is the metre: 80 mm is 0.08
    up = 2 if ext in (".stl", ".ply") else 1  # STL and PLY stand +Z up on the plate, OBJ and GLB +Y up
    assert np.ptp(mesh.vertices[:, up]) == pytest.approx(height, rel=1e-4)
    if up == 2:
        assert mesh.bounds[0, 2] == pytest.approx(0.0, abs=1e-4)


def test_entry_point_runs_the_default_model(tmp_path):
    out = tmp_path / "chair.stl"
    proc = subprocess.run([sys.executable, "-m", "recon_core.io.cli", str(REPO / "examples" / "chair.png"), "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "✓ printable" in proc.stdout


def test_three_candidates_of_the_example_are_three_different_printable_meshes(tmp_path, capsys):
    """The shipped model, `recon-mesh examples/chair.png -o chair.stl --candidates 3`: three files, each printable,
    no two alike (different training shapes: their volumes differ), each said in words against the likeliest (a
    share among the ten fitted read "25%" for the likeliest of three close ones), the likeliest first."""
    import re

    import trimesh

    code = main([str(REPO / "examples" / "chair.png"), "-o", str(tmp_path / "chair.stl"), "--candidates", "3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    paths = [tmp_path / f"chair_{k}.stl" for k in (1, 2, 3)]
    assert sorted(tmp_path.iterdir()) == paths and printed.count("✓ printable") == 3
    meshes = [trimesh.load(p) for p in paths]
    assert all(m.is_watertight and m.volume > 0 for m in meshes)
    volumes = [m.volume for m in meshes]
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(volumes[i] - volumes[j]) > 0.01 * max(volumes[i], volumes[j]), volumes
    said = re.findall(r"\ncandidate \S+: \d+ vertices, \d+ faces, (.*)\n", printed)
    assert said[0] == "the likeliest" and len(said) == 3, printed
    order = ["the likeliest", "about as likely as the likeliest", "less likely than the likeliest",
             "much less likely than the likeliest"]
    assert all(s in order for s in said) and [order.index(s) for s in said] == sorted(order.index(s) for s in said)
    assert "%" not in printed and "wrote 3 candidates in " in printed and " s, the likeliest first" in printed


def test_a_candidates_likelihood_is_said_in_words_against_the_likeliest():
    """The confidences are shares among the ten fitted shapes: the likeliest of three close ones showed "25%
    confidence", read as a poor result. recon-mesh and the add-on say it in words, against the likeliest."""
    from recon_core.io.notes import likelihood_text as words

    assert words(0.25, 0.25) == "the likeliest"
    assert words(0.22, 0.25) == "about as likely" and words(0.20, 0.25) == "about as likely"  # 0.8 of it
    assert words(0.19, 0.25) == "less likely" and words(0.10, 0.25) == "less likely"  # down to 0.4 of it
    assert words(0.09, 0.25) == "much less likely" and words(0.001, 0.9) == "much less likely"
    assert words(None, 0.25) == "" and words(0.2, None) == ""


def test_entry_point_reports_bad_input_with_its_exit_code(tmp_path):
    """The console script ends the process itself (``run``: no interpreter teardown); the exit code
    and the one-sentence error still come out."""
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not a PNG")
    proc = subprocess.run([sys.executable, "-m", "recon_core.io.cli", str(bad), "-o", str(tmp_path / "x.stl")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.stl").exists()


def _run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run recon-mesh with stdout a pipe whose reader has already gone (``| head -1`` that exits at once).

    Without PYTHONUNBUFFERED, as a user's shell runs it: stdout is block-buffered, so the broken
    pipe shows at a flush, or unhandled, at the interpreter's exit ("Exception ignored", exit 120).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["OMP_NUM_THREADS"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "recon_core.io.cli", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=env, timeout=300)
    finally:
        os.close(write_end)


def _assert_complete_stl(path: Path) -> None:
    import trimesh

    data = path.read_bytes()  # binary STL: 80-byte header, face count, 50 bytes a face
    faces = int.from_bytes(data[80:84], "little")
    assert faces > 0 and len(data) == 84 + 50 * faces
    assert trimesh.load(path, force="mesh").is_watertight
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_closed_stdout_ends_quietly_after_the_mesh_is_written(tmp_path, tiny_model_path, good_image):
    out = tmp_path / "mesh.stl"
    proc = _run_into_closed_pipe([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low"])
    assert proc.returncode == 0, proc.stderr  # the mesh's exit code, as if the report had been read
    assert [line for line in proc.stderr.splitlines() if not line.startswith("note: ")] == [], proc.stderr
    _assert_complete_stl(out)


def test_a_second_ctrl_c_in_a_forced_hold_on_windows_exits_130(monkeypatch):
    """A second Ctrl-C while the model loads ends the process at once; on Windows os.kill does that by exiting with
    the signal's number, 2, which recon-mesh's exit codes call bad input."""
    from recon_core.io import cli

    ended, stop = [], cli._Stop()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(cli.os, "_exit", lambda code: ended.append(code))
    monkeypatch.setattr(cli.os, "kill", lambda *args: pytest.fail("os.kill on Windows"))
    with stop.holding(force=True):
        stop(signal.SIGINT, None)  # the first: recorded
        stop(signal.SIGINT, None)  # the second: ends the process
        assert ended == [130]
        stop.signum = None  # as if the process had ended: no KeyboardInterrupt at the block's end


def test_a_pipe_closed_on_windows_is_a_reader_gone(monkeypatch):
    """Windows often says a pipe whose reader has gone (``| more`` quit) by EINVAL, not EPIPE: the report ended in
    "could not be printed", exit 1, where a closed pipe ends quietly. Elsewhere EINVAL is a failure."""
    import errno

    from recon_core.io.cli import _stream_closed

    invalid = OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(sys, "platform", "win32")
    assert _stream_closed(invalid, None)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not _stream_closed(invalid, None) and _stream_closed(BrokenPipeError(errno.EPIPE, "Broken pipe"), None)


def test_closed_unbuffered_stdout_ends_quietly(tmp_path, tiny_model_path, good_image, monkeypatch):
    """With PYTHONUNBUFFERED (or ``python -u``) the broken pipe shows at the first print instead."""
    import io

    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True)  # what -u makes of stdout
    monkeypatch.setattr(sys, "stdout", stdout)
    out = tmp_path / "mesh.stl"
    try:
        code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low"])
        stdout.write("more\n")
        stdout.flush()  # stdout now points at os.devnull: later writes and the exit flush succeed
    finally:
        stdout.close()
    assert code == 0
    _assert_complete_stl(out)


def test_help_into_a_closed_pipe_ends_quietly():
    proc = _run_into_closed_pipe(["--help"])
    assert proc.returncode == 0 and proc.stderr == ""


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    for code in "0123":
        assert f"\n  {code}  " in printed


def test_preview_draws_the_mesh_and_the_mask_s_outline_on_the_picture(tmp_path, tiny_model_path, capsys):
    """--preview: a PNG, two tiles wide, a legend, then a row with its caption per candidate; a model without a picture
    camera (the tiny one) draws the object mask's outline on the picture, dashed, around the object only, the tile
    showing the object with MARGIN of its side around it; a cut-out's transparency is a light checkerboard."""
    from recon_core.io.preview import CAPTION, CHECKER, LINE, MARGIN, MASK_DASHES, TILE

    rgba = np.zeros((90, 120, 4), np.uint8)  # black under its transparency, as many cut-outs store it
    rgba[20:70, 40:75] = (150, 90, 40, 255)
    picture = tmp_path / "obj.png"
    Image.fromarray(rgba, "RGBA").save(picture)
    out, preview = tmp_path / "mesh.stl", tmp_path / "preview.png"
    code = main([str(picture), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low", "--height-mm", "50",
                 "--preview", str(preview)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and f"wrote {preview} (the preview)" in printed
    with Image.open(preview) as img:
        assert img.format == "PNG" and img.size == (2 * TILE, LINE + TILE + CAPTION)
        sheet = np.asarray(img.convert("RGB"))
    assert (sheet[:LINE] < 128).any(), "a legend"
    sheet = sheet[LINE:]
    outline = np.zeros((TILE, TILE), bool)
    for colour in MASK_DASHES:
        outline |= (sheet[:TILE, :TILE] == colour).all(axis=2)
    rows, cols = np.flatnonzero(outline.any(axis=1)), np.flatnonzero(outline.any(axis=0))
    side = 50 * (1 + 2 * MARGIN)  # the object: columns 40..74, rows 20..69, its longer side 50
    scale, x0, y0 = TILE / side, (40 + 75 - side) / 2, (20 + 70 - side) / 2
    assert abs(cols[0] - scale * (40 - x0)) <= 1 and abs(cols[-1] + 1 - scale * (75 - x0)) <= 1
    assert abs(rows[0] - scale * (20 - y0)) <= 1 and abs(rows[-1] + 1 - scale * (70 - y0)) <= 1
    mesh_tile = sheet[:TILE, TILE:]
    assert (mesh_tile != 255).any(axis=2).mean() > 0.05  # the mesh is drawn
    assert (sheet[TILE:, :] < 128).any(), "a caption"
    corner = sheet[2:40, 2:40].reshape(-1, 3).astype(int)  # the checkerboard's squares, blended at their edges
    assert (corner == corner[:, :1]).all() and corner.min() <= CHECKER[1] + 2 and corner.max() >= CHECKER[0] - 2
    assert ((corner >= CHECKER[1]) & (corner <= CHECKER[0])).all(), "the transparency a checkerboard"
    # the object given as a mask: the picture's own transparency is still white (not the mask's cut, not black)
    given = np.zeros((90, 120), np.uint8)
    given[5:85, 25:90] = 255  # more than the object: the tile's corner is in it, on the cut-out's transparency
    Image.fromarray(given).save(tmp_path / "given.png")
    assert main([str(picture), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low", "--mask",
                 str(tmp_path / "given.png"), "--preview", str(preview)]) == 0
    side = 80 * (1 + 2 * MARGIN)  # the tile frames the given mask now: columns 25..89, rows 5..84
    scale, x0, y0 = TILE / side, (25 + 90 - side) / 2, (5 + 85 - side) / 2
    with Image.open(preview) as img:  # picture pixel (30, 10): in the given mask, on the cut-out's transparency
        shown = np.asarray(img.convert("RGB"))[LINE + round(scale * (10.5 - y0)), round(scale * (30.5 - x0))]
        assert shown[0] == shown[1] == shown[2] and CHECKER[1] <= shown[0] <= CHECKER[0]


def test_save_mask_writes_the_alpha_of_an_rgba_picture(tmp_path, tiny_model_path, capsys):
    """--save-mask: an 8-bit PNG of the picture's size whose object is the picture's alpha."""
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[20:70, 40:75] = (150, 90, 40, 255)
    rgba[30:40, 50:60, 3] = 0  # a hole: the mask follows the alpha, not a box
    rgba[60:70, 40:45, 3] = 128  # soft edge
    picture = tmp_path / "obj.png"
    Image.fromarray(rgba, "RGBA").save(picture)
    out, mask_path = tmp_path / "mesh.stl", tmp_path / "mask.png"
    code = main([str(picture), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                 "--save-mask", str(mask_path)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and f"wrote {mask_path}" in printed
    with Image.open(mask_path) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (120, 90)
        mask = np.asarray(img)
    assert np.array_equal(mask, rgba[..., 3])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_save_mask_without_alpha_is_the_object_against_the_border_colour(tmp_path, tiny_model_path, capsys):
    """A model without a mask head and an RGB picture: the pixels that differ from the border colour."""
    rgb = _object_rgb(96)
    picture = tmp_path / "obj.jpg"
    Image.fromarray(rgb, "RGB").save(picture, quality=95)
    mask_path = tmp_path / "mask.PNG"  # the extension in any case
    code = main([str(picture), "-o", str(tmp_path / "mesh.obj"), "--model", str(tiny_model_path), "--detail", "low",
                 "--save-mask", str(mask_path)])
    assert code == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(mask_path))
    assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
    assert ((mask > 127) != (rgb[..., 1] < 128)).mean() < 0.01  # JPEG blurs the block's edge by a pixel


def test_the_given_mask_is_the_object(tmp_path, tiny_model_path, capsys):
    """--mask: the user's mask is used as the object, not the one the model would find (--save-mask shows which);
    on a cut-out it replaces the alpha, with a note."""
    rgb = _object_rgb(96)
    picture = tmp_path / "obj.png"
    Image.fromarray(rgb, "RGB").save(picture)
    given = np.zeros((96, 96), np.uint8)
    given[10:50, 20:90] = 255  # not the brown block the border colour finds
    Image.fromarray(given, "L").save(tmp_path / "given.png")
    saved = tmp_path / "used.png"
    code = main([str(picture), "-o", str(tmp_path / "mesh.stl"), "--model", str(tiny_model_path), "--detail", "low",
                 "--mask", str(tmp_path / "given.png"), "--save-mask", str(saved)])
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(saved)), given)
    without = tmp_path / "found.png"
    assert main([str(picture), "-o", str(tmp_path / "mesh2.stl"), "--model", str(tiny_model_path), "--detail", "low",
                 "--save-mask", str(without)]) == 0
    assert not np.array_equal(np.asarray(Image.open(without)), given), "without --mask the model finds the block"

    rgba = np.concatenate([rgb, np.full((96, 96, 1), 255, np.uint8)], axis=2)
    rgba[:, :30, 3] = 0  # a cut-out: a third of it transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    capsys.readouterr()
    code = main([str(tmp_path / "cut.png"), "-o", str(tmp_path / "mesh3.stl"), "--model", str(tiny_model_path),
                 "--detail", "low", "--mask", str(tmp_path / "given.png"), "--save-mask", str(saved)])
    assert code == 0 and "instead of the picture's own transparency" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(saved)), given)


def test_a_failed_mask_write_leaves_no_file(tmp_path, tiny_model_path, good_image, capsys, monkeypatch):
    """Should the mask's write fail after the checks (a full disk), the mesh written just before is removed."""
    import recon_core.io.image

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recon_core.io.image, "atomic_write_bytes", full_disk)
    out = tmp_path / "mesh.stl"
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                 "--save-mask", str(tmp_path / "mask.png")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "mask.png").exists()


def test_a_failed_mask_write_leaves_an_out_file_candidates_did_not_write(tmp_path, tiny_model_path, good_image,
                                                                          capsys, monkeypatch):
    """With --candidates K, OUT.EXT itself is not written: a failed mask write removed the user's own OUT.EXT; the
    candidates written before it go, and OUT.EXT stays as it was."""
    import recon_core.io.image
    from recon_core.io import inference

    real = inference.Reconstructor.reconstruct_candidates

    def two(self, rgb, alpha, count, **kwargs):  # the tiny model gives one shape: twice, as two candidates
        [one] = real(self, rgb, alpha, 1, **kwargs)
        return [one, one]

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inference.Reconstructor, "reconstruct_candidates", two)
    monkeypatch.setattr(recon_core.io.image, "atomic_write_bytes", full_disk)
    out = tmp_path / "mesh.stl"
    out.write_bytes(b"the user's own file")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                 "--candidates", "2", "--save-mask", str(tmp_path / "mask.png")])
    assert code == 2 and "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "no candidate left, no mask"


# -- --detail, and the deprecated --vertices it replaced ---------------------------------------------------


def _faces_written(printed: str) -> int:
    """The face count of the report's first line: "wrote OUT (V vertices, F faces) in T s"."""
    return int(printed.split(" vertices, ")[1].split(" faces")[0])


def test_detail_low_gives_fewer_faces_than_high(tmp_path, tiny_model_path, good_image, capsys):
    """An ico-sphere model outputs the level's vertex count: 2V - 4 triangles."""
    import trimesh

    from recon_core.mesh.detail import DETAIL_VERTICES

    faces = {}
    for level in ("low", "high"):
        out = tmp_path / f"{level}.stl"
        code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", level])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        faces[level] = len(trimesh.load(out, force="mesh").faces)
        assert faces[level] == _faces_written(captured.out) == 2 * DETAIL_VERTICES[level] - 4
        assert "deprecated" not in captured.err
    assert faces["low"] < faces["high"]


def test_a_mesh_without_a_unit_or_a_height_gets_a_note(tmp_path, tiny_model_path, good_image, capsys):
    """A slicer reads an STL, OBJ or PLY as millimetres: written without --height-mm, the note says how tall a slicer
    takes the mesh (its height in the file) and how to give the real one; with --height-mm, or as GLB (whose note
    says metres), no such note."""
    import trimesh

    for ext, height, noted in ((".stl", None, True), (".obj", None, True), (".ply", None, True),
                               (".glb", None, False), (".stl", "80", False)):
        out = tmp_path / f"m{height or ''}{ext}"
        code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                     *(["--height-mm", height] if height else [])])
        err = capsys.readouterr().err
        assert code == 0, err
        assert ("a slicer reads it as" in err) == noted, (ext, height, err)
        if noted:
            tall = float(err.split("a slicer reads it as ")[1].split(" mm")[0])
            bounds = trimesh.load(out, force="mesh").bounds
            up = 1 if ext == ".obj" else 2  # an STL and a PLY stand +Z up, an OBJ keeps the output frame's +Y up
            assert tall == pytest.approx(bounds[1, up] - bounds[0, up], abs=0.006)
            assert "--height-mm 90" in err


@pytest.mark.parametrize("ext, noted", [(".obj", True), (".stl", False), (".glb", False)])
def test_an_obj_in_millimetres_says_how_blender_reads_it(tmp_path, capsys, ext, noted):
    """An OBJ has no unit: written --height-mm 90 it holds millimetres, which Blender's OBJ import took as metres (a
    90 m chair) with no word; the note says so, and how to import it. An STL (slicers' millimetres) and a GLB (written
    in metres) get none."""
    from recon_core.io.cli import _parser, _report

    args = _parser().parse_args(["in.png", "-o", str(tmp_path / f"c{ext}"), "--height-mm", "90"])
    result = _sized_candidate(60, 90, 50)
    assert _report(args, result, [result], [tmp_path / f"c{ext}"], tmp_path / f"c{ext}", None, 1.0) == 0
    notes = capsys.readouterr().err.splitlines()
    assert any("Blender's OBJ import takes one unit as a metre" in n and "Scale to 0.001" in n for n in notes) == noted
    # +Y up, which a slicer would lay on its back: the note sent slicers to it
    assert any("+Y up" in n and "for a slicer, which takes +Z as up, write STL or 3MF" in n for n in notes) == noted


def test_the_unit_note_of_several_candidates_gives_their_heights(tmp_path, capsys):
    from types import SimpleNamespace

    from recon_core.io.cli import _parser, _report

    def candidate(height):
        verts = np.array([[0, 0, 0], [1, height, 0], [0, 0, 1], [1, 0, 1]], np.float64)
        report = SimpleNamespace(ok=True, summary=lambda: "✓ printable")
        return SimpleNamespace(notes=[], verts=verts, faces=np.zeros((4, 3)), report=report, confidence=0.5, likelihood="the likeliest",
                               category="chair", category_probs=np.array([0.9, 0.1]))

    results = [candidate(0.76), candidate(0.7), candidate(0.81)]
    args = _parser().parse_args(["in.png", "-o", str(tmp_path / "c.obj"), "--candidates", "3"])
    paths = [tmp_path / f"c_{k}.obj" for k in (1, 2, 3)]
    assert _report(args, results[0], results, paths, tmp_path / "c.obj", None, 1.0) == 0
    assert capsys.readouterr().err.splitlines() == [
        "note: without --height-mm the candidates are in the data's units (0.70 to 0.81 tall); OBJ has no unit and a "
        "slicer reads it as 0.70 to 0.81 mm: give the object's real height, e.g. --height-mm 90"]


def _sized_candidate(width, height, depth):
    """A stand-in result whose box is ``width x height x depth`` in the output frame (x, y, z)."""
    from types import SimpleNamespace

    verts = np.array([[0, 0, 0], [width, height, depth], [0, 0, depth], [width, 0, 0]], np.float64)
    report = SimpleNamespace(ok=True, summary=lambda: "✓ printable")
    return SimpleNamespace(notes=[], verts=verts, faces=np.zeros((4, 3)), report=report, confidence=0.5, likelihood="the likeliest",
                           category="chair", category_probs=np.array([0.9, 0.1]))


@pytest.mark.parametrize("ext, unit", [(".glb", "glTF's unit is the metre, so Blender and glTF viewers show it 0.78 m"),
                                       (".ply", "PLY has no unit and a slicer reads it as 0.78 mm"),
                                       (".3mf", None)])
def test_a_glb_or_ply_without_a_height_is_said_to_be_in_the_data_s_units(tmp_path, capsys, ext, unit):
    from recon_core.io.cli import _parser, _report

    args = _parser().parse_args(["in.png", "-o", str(tmp_path / f"c{ext}")])
    result = _sized_candidate(0.6, 0.78, 0.5)
    assert _report(args, result, [result], [tmp_path / f"c{ext}"], tmp_path / f"c{ext}", None, 1.0) == 0
    notes = capsys.readouterr().err.splitlines()
    if unit is None:
        assert notes == []
    else:
        assert len(notes) == 1 and unit in notes[0] and "--height-mm 90" in notes[0]


@pytest.mark.parametrize("sizes, said", [
    ([(200, 90, 250)], None),  # inside a 256 mm cube
    ([(409, 120, 334)], "at 409 x 334 x 120 mm (width x depth x height) it is larger than the build "
                        "volume"),
    ([(100, 300, 80)], "at 100 x 80 x 300 mm (width x depth x height) it is larger"),
    ([(100, 90, 80), (300, 90, 120)], "at 300 x 120 x 90 mm (width x depth x height) some are larger"),
])
def test_a_mesh_larger_than_a_large_printer_gets_a_note(tmp_path, capsys, sizes, said):
    from recon_core.io.cli import _parser, _report

    results = [_sized_candidate(*s) for s in sizes]
    args = _parser().parse_args(["in.png", "-o", str(tmp_path / "c.stl"), "--height-mm", "90",
                                 "--candidates", str(len(results))])
    paths = [tmp_path / f"c_{k}.stl" for k in range(1, len(results) + 1)]
    assert _report(args, results[0], results, paths, tmp_path / "c.stl", None, 1.0) == 0
    notes = [n for n in capsys.readouterr().err.splitlines() if "build volume" in n]
    assert notes == [] if said is None else (len(notes) == 1 and said in notes[0]
                                              and "give a smaller --height-mm" in notes[0])


def test_detail_is_taken_in_any_case(good_image):
    """As --category is: "High" is high."""
    from recon_core.io.cli import _parser

    for given, level in (("High", "high"), ("LOW", "low"), (" medium", "medium")):
        assert _parser().parse_args([str(good_image), "-o", "x.stl", "--detail", given]).detail == level


def test_unknown_detail_is_a_usage_error_and_writes_nothing(tmp_path, tiny_model_path, good_image, capsys):
    out = tmp_path / "mesh.stl"
    for value in ("ultra", "642", "lowest"):
        with pytest.raises(SystemExit) as exc:
            main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", value])
        err = capsys.readouterr().err
        assert exc.value.code == 2, value
        assert f"--detail: invalid choice: '{value}'" in err and "low" in err and "high" in err, err
        assert not out.exists()


def test_detail_with_vertices_is_one_sentence_and_writes_nothing(tmp_path, tiny_model_path, good_image, capsys):
    out = tmp_path / "mesh.stl"
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                 "--vertices", "642"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "--detail and --vertices cannot be given together" in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_deprecated_vertices_still_works_with_a_note(tmp_path, tiny_model_path, good_image, capsys):
    out = tmp_path / "mesh.stl"
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--vertices", "642"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.splitlines()[0] == "note: --vertices is deprecated; use --detail low|medium|high"
    assert _faces_written(captured.out) == 2 * 642 - 4  # the same mesh as --detail low
    with pytest.raises(SystemExit) as exc:  # still only the three counts
        main([str(good_image), "-o", str(tmp_path / "other.stl"), "--vertices", "1000"])
    assert exc.value.code == 2 and not (tmp_path / "other.stl").exists()


def test_help_offers_detail_levels_not_vertex_counts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    assert "--detail {low,medium,high}" in printed
    assert "low ~1,300, medium ~5,100, high ~20,500" in " ".join(printed.split())
    assert "--vertices" not in printed.split("exit codes:")[0], "hidden from the usage and the options"


def test_ctrl_c_is_one_sentence_exit_130_and_no_file(tmp_path, tiny_model_path, good_image, capsys, monkeypatch):
    """Interrupted while the model runs (or a candidate is written): no traceback, exit 130, no file left."""
    from recon_core.io import inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out.stl"
    with monkeypatch.context() as m:
        m.setattr(inference.Reconstructor, "reconstruct_candidates", interrupted)
        assert main([str(good_image), "-o", str(out), "--model", str(tiny_model_path)]) == 130
    err = capsys.readouterr().err
    assert err == "error: interrupted; no file written.\n"
    from recon_core.io import cli

    def mask_interrupted(*args, **kwargs):  # after the mesh is written, before it is renamed into place
        assert (not out.exists() or out.read_bytes() == b"earlier out.stl") and list(tmp_path.glob(".out.stl.*.tmp"))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_save_mask", mask_interrupted)
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--save-mask",
                 str(tmp_path / "mask.png")])
    assert code == 130 and not out.exists() and not (tmp_path / "mask.png").exists()
    assert capsys.readouterr().err == "error: interrupted; no file written.\n"
    # the files of an earlier run at those paths stay as they were (they were replaced, and then removed)
    earlier = {name: f"earlier {name}".encode() for name in ("out.stl", "mask.png", "preview.png")}
    for name, data in earlier.items():
        (tmp_path / name).write_bytes(data)
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--save-mask",
                 str(tmp_path / "mask.png")])
    assert code == 130 and capsys.readouterr().err == "error: interrupted; no file written.\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in earlier or p.suffix == ".tmp"} == earlier
    monkeypatch.undo()
    from recon_core.io.export import ExportError

    def full_disk(rgb, alpha, results, paths, path, millimetres):  # the preview, written last, fails: nothing stays
        assert not out.exists() or out.read_bytes() == earlier["out.stl"]  # the new one waits, temporary
        assert len(list(tmp_path.glob(".*.tmp"))) == 2
        raise ExportError(f"Cannot write the preview to {path}: No space left on device. Choose a writable "
                              "location.")

    monkeypatch.setattr(cli, "_save_preview", full_disk)
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--save-mask",
                 str(tmp_path / "mask.png"), "--preview", str(tmp_path / "preview.png")])
    assert code == 2 and "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in earlier or p.suffix == ".tmp"} == earlier
    for name in earlier:
        (tmp_path / name).unlink()
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--save-mask",
                 str(tmp_path / "mask.png"), "--preview", str(tmp_path / "preview.png")])
    assert code == 2 and not out.exists() and not (tmp_path / "mask.png").exists()
    assert not (tmp_path / "preview.png").exists()
    assert capsys.readouterr().err == (f"error: Cannot write the preview to {tmp_path / 'preview.png'}: No space left "
                                       "on device. Choose a writable location.\n")


def test_a_failing_stdout_is_one_sentence_after_the_files(tmp_path, tiny_model_path, good_image, capsys, monkeypatch):
    """stdout that fails with another error than a closed pipe (a full disk): the mesh stays, exit 1, one sentence."""
    import errno

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    out = tmp_path / "out.stl"
    monkeypatch.setattr(sys, "stdout", Full())
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path)])
    err = capsys.readouterr().err
    assert code == 1 and out.exists()
    assert "the files were written, but the report could not be printed" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, keyword, without, with_flag", [
    ("--solid", "solid", False, True),  # the sealed pockets filled (tests/test_shape_bank.py checks the filling)
    ("--as-seen", "upright", True, False),  # stood on its base unless asked (test_shape_bank.py checks the standing)
])
def test_a_flag_reaches_the_reconstruction(tmp_path, tiny_model_path, good_image, monkeypatch, flag, keyword, without,
                                           with_flag):
    """--solid asks for the sealed pockets to be filled; the mesh is stood on its base by default (so --height-mm is
    the object's own height), and --as-seen keeps it as the picture's camera saw it."""
    from recon_core.io import inference

    seen = []
    real = inference.Reconstructor.reconstruct_candidates

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get(keyword))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(inference.Reconstructor, "reconstruct_candidates", spy)
    for extra in ([], [flag]):
        assert main([str(good_image), "-o", str(tmp_path / "out.stl"), "--model", str(tiny_model_path), *extra]) == 0
    assert seen == [without, with_flag]


# -- output names ------------------------------------------------------------------------------------------


def _name_max(folder: Path) -> int:
    """The longest file name in bytes that ``folder``'s file system allows (255 on the usual ones)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def test_a_long_output_name_is_written(tmp_path, tiny_model_path, good_image, capsys):
    """Names of 250 bytes, within the file system's 255: written, with the mask, and no temporary file left (the
    temporary file's name was the name plus 14 characters, and the write failed with "File name too long")."""
    if _name_max(tmp_path) < 250:
        pytest.skip("this file system allows shorter names")
    out, mask = tmp_path / ("c" * 246 + ".stl"), tmp_path / ("m" * 246 + ".png")
    code = main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low",
                 "--save-mask", str(mask)])
    assert code == 0, capsys.readouterr().err
    _assert_complete_stl(out)
    assert mask.is_file() and sorted(tmp_path.glob("*.tmp")) == []


def test_a_name_longer_than_the_file_system_allows_is_refused_before_the_model_loads(tmp_path, good_image, capsys,
                                                                                    monkeypatch):
    """Over the file system's limit, the mesh's, a candidate's or the mask's name is bad input, said at once (it
    was an unexpected failure, exit code 1)."""
    from recon_core.io import inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(inference.Reconstructor, "from_file", no_model)
    limit = _name_max(tmp_path)
    long_name = "c" * (limit + 41) + ".stl"  # 300 bytes where the limit is 255
    wide_name = "é" * (limit // 2 + 2) + ".stl"  # fewer characters than the limit, more bytes (é is 2 in UTF-8)
    at_limit = "c" * (limit - 4) + ".stl"  # fits, but its candidates' names (OUT_1.stl, ...) do not
    cases = [
        ([str(good_image), "-o", str(tmp_path / long_name)], f"its name is {limit + 45} bytes long"),
        ([str(good_image), "-o", str(tmp_path / wide_name)], f"its name is {2 * (limit // 2 + 2) + 4} bytes long"),
        ([str(good_image), "-o", str(tmp_path / at_limit), "--candidates", "2"], f"its name is {limit + 2} bytes"),
        ([str(good_image), "-o", str(tmp_path / "out.stl"), "--save-mask", str(tmp_path / (long_name[:-4] + ".png"))],
         f"Cannot write the mask to {tmp_path}/cccccccccccccccccccccccc…cccccccc.png: its name is {limit + 45}"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
        assert f"the file system allows at most {limit}; choose a shorter name." in err, err
    assert list(tmp_path.iterdir()) == [good_image]


# -- closed standard streams -------------------------------------------------------------------------------


def _run_with_closed(fd: int, argv: list[str]) -> subprocess.CompletedProcess:
    """Run recon-mesh as its console script runs, with descriptor ``fd`` closed (1: ``>&-``, 2: ``2>&-``): Python
    then starts with ``sys.stdout`` or ``sys.stderr`` None. The other stream is a pipe, read back."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "recon_core.io.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300, preexec_fn=lambda: os.close(fd))


@pytest.mark.parametrize("closed", [1, 2], ids=["stdout", "stderr"])
def test_a_closed_standard_stream_leaves_the_exit_code_the_mesh_s(tmp_path, tiny_model_path, good_image, closed):
    """``recon-mesh ... >&-`` ended in a traceback (AttributeError: 'NoneType' object has no attribute 'flush') and
    exit code 1 after the mesh was written, ``2>&-`` in exit code 1: now the mesh's, 0."""
    out = tmp_path / "mesh.stl"
    proc = _run_with_closed(closed, [str(good_image), "-o", str(out), "--model", str(tiny_model_path),
                                     "--detail", "low"])
    assert proc.returncode == 0, proc.stderr
    _assert_complete_stl(out)
    if closed == 1:
        assert [line for line in proc.stderr.splitlines() if not line.startswith("note: ")] == [], proc.stderr
    else:
        assert proc.stdout.startswith(f"wrote {out} (") and proc.stdout.endswith("✓ printable\n"), proc.stdout


def test_an_ascii_terminal_gets_the_report_escaped_not_a_traceback(tmp_path, tiny_model_path, good_image):
    """Standard streams in ASCII (``PYTHONIOENCODING=ascii``, or ``LANG=C``): the report's "✓" and a path's accents
    ended in a UnicodeEncodeError traceback and exit code 1 after the mesh was written, and an error sentence naming
    such a path was lost; now they are escaped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "ascii"}
    out = tmp_path / "chaise_é.stl"
    proc = subprocess.run([sys.executable, "-m", "recon_core.io.cli", str(good_image), "-o", str(out), "--model",
                           str(tiny_model_path), "--detail", "low"], capture_output=True, cwd=REPO, env=env, timeout=300)
    stdout, stderr = proc.stdout.decode("ascii"), proc.stderr.decode("ascii")
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "\\u2713 printable" in stdout and "chaise_\\xe9.stl" in stdout, stdout
    _assert_complete_stl(out)
    missing = tmp_path / "photo_é.png"
    proc = subprocess.run([sys.executable, "-m", "recon_core.io.cli", str(missing), "-o", str(out)],
                          capture_output=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 2 and "photo_\\xe9.png" in proc.stderr.decode("ascii"), proc.stderr


def test_bad_input_with_stderr_closed_is_still_exit_code_2(tmp_path):
    """A picture with no object, refused before the model loads, with ``2>&-``: exit code 2 (it was 1), and the
    sentence goes nowhere (it went to stdout), as the shell asked."""
    white = tmp_path / "white.png"
    Image.new("RGB", (300, 300), "white").save(white)
    out = tmp_path / "out.stl"
    proc = _run_with_closed(2, [str(white), "-o", str(out)])
    assert proc.returncode == 2 and proc.stdout == "" and not out.exists(), proc.stdout


def test_no_stdout_or_stderr_at_all_in_process(tmp_path, tiny_model_path, good_image, monkeypatch):
    """main() where sys.stdout and sys.stderr are None (a process started without them): the run's exit codes."""
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    out = tmp_path / "mesh.stl"
    assert main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--detail", "low"]) == 0
    _assert_complete_stl(out)
    assert main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "other.stl")]) == 2
    assert not (tmp_path / "other.stl").exists()


# -- option errors, and --category ---------------------------------------------------------------------------


@pytest.mark.parametrize("extra, fragment", [
    (["--candidates", "abc"], "--candidates must be a whole number of shapes, e.g. 3, got 'abc'"),
    (["--candidates", "200"], "--candidates must be from 1 to 10, got 200"),
    (["--height-mm", "90mm"], "--height-mm must be a number of millimetres without a unit, e.g. 90, got '90mm'"),
    (["--height-mm", "90,5"], "--height-mm must be a number of millimetres with a decimal point, e.g. 90.5, got '90,5'"),
    (["--height-mm", "1,500"], "without a thousands separator and with a decimal point, e.g. 1500 (or 1.500 if the "
                               "comma is a decimal one), got '1,500'"),
    (["--category", "Chiar"], "--category 'Chiar' is not a category the model knows (did you mean chair?); the "
                              "categories are airplane, bench, cabinet, car, chair, display, lamp, loudspeaker, rifle, "
                              "sofa, table, telephone, watercraft"),
    (["--category", "aeroplane"], "--category 'aeroplane' is not a category the model knows (did you mean airplane?)"),
    (["--category", "guitar"], "--category 'guitar' is not a category the model knows; the categories are airplane,"),
    (["--detail", "ultra"], "--detail: invalid choice: 'ultra'"),
    (None, "the following arguments are required: -o/--output"),
], ids=["candidates", "candidates 200", "height", "decimal comma", "thousands comma", "category misspelt",
         "category otherwise spelt", "category unknown", "detail", "no output"])
def test_an_option_error_is_one_sentence_without_the_usage(tmp_path, good_image, capsys, extra, fragment):
    """argparse printed six lines of usage, then "recon-mesh: error: ..."; now one sentence and where to look."""
    out = tmp_path / "out.stl"
    argv = [str(good_image)] if extra is None else [str(good_image), "-o", str(out), *extra]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and fragment in err, err
    assert err.endswith("; see recon-mesh --help.\n") and err.count("\n") == 1 and "usage" not in err, err
    assert list(tmp_path.iterdir()) == [good_image]


def test_category_is_taken_in_any_case(tmp_path, tiny_model_path, good_image, capsys):
    from recon_core.io.cli import _parser

    for given in ("Chair", "CHAIR", " chair"):
        assert _parser().parse_args([str(good_image), "-o", "x.stl", "--category", given]).category == "chair"
    code = main([str(good_image), "-o", str(tmp_path / "out.stl"), "--model", str(tiny_model_path), "--detail", "low",
                 "--category", "Table"])
    assert code == 0 and "\ncategory: table\n" in capsys.readouterr().out


def test_the_output_may_not_overwrite_the_input_picture_or_the_mask(tmp_path, capsys, monkeypatch):
    """`recon-mesh pic.stl -o pic.stl` replaced the picture by the mesh (exit code 0): now refused before anything
    runs, as --save-mask is, for OUT, each OUT_i of --candidates, and the --mask file, by any name of them."""
    from recon_core.io import inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(inference.Reconstructor, "from_file", no_model)
    picture, numbered, mask = tmp_path / "pic.stl", tmp_path / "pic_2.obj", tmp_path / "mask.ply"
    Image.fromarray(_object_rgb(), "RGB").save(picture, format="PNG")
    numbered.write_bytes(picture.read_bytes())
    Image.new("L", (64, 64), 255).save(mask, format="PNG")
    (tmp_path / "link.stl").symlink_to(picture)
    before = {p: p.read_bytes() for p in (picture, numbered, mask)}
    monkeypatch.chdir(tmp_path)
    cases = [
        ([str(picture), "-o", str(picture)], f"Cannot write {picture}: it is the input picture"),
        ([str(picture), "-o", "pic.stl"], "Cannot write pic.stl: it is the input picture"),  # another spelling
        ([str(picture), "-o", str(tmp_path / "link.stl")], "link.stl: it is the input picture"),  # a link to it
        ([str(numbered), "-o", str(tmp_path / "pic.obj"), "--candidates", "3"],
         f"Cannot write candidate {numbered}: it is the input picture"),
        ([str(picture), "-o", str(mask), "--mask", str(mask)], f"Cannot write {mask}: it is the --mask file"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
        assert err.endswith("which would be overwritten; choose another file name.\n"), err
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.stl", "mask.ply", "pic.stl", "pic_2.obj"]


def test_each_candidates_own_notes_are_said_with_its_name(tmp_path, capsys):
    """With several candidates the picture's notes, which all share, are said once, and each candidate's own (its
    pockets filled, its decimation) with its file's name: before, only the first candidate's notes were said, so
    `--candidates 3 --solid` counted the pockets of the first alone."""
    from types import SimpleNamespace

    from recon_core.io.cli import _parser, _report

    def candidate(own):
        report = SimpleNamespace(ok=True, summary=lambda: "✓ printable")
        return SimpleNamespace(notes=["object found by the object finder (no transparency)", *own], verts=np.zeros((4, 3)),
                               faces=np.zeros((4, 3)), report=report, confidence=0.5, likelihood="the likeliest", category="chair",
                               category_probs=np.array([0.9, 0.1]))

    results = [candidate(["filled 4 sealed hollow pockets"]), candidate([]), candidate(["filled 5 sealed hollow pockets"])]
    args = _parser().parse_args(["in.png", "-o", str(tmp_path / "c.stl"), "--candidates", "3", "--height-mm", "90"])
    paths = [tmp_path / f"c_{k}.stl" for k in (1, 2, 3)]
    assert _report(args, results[0], results, paths, tmp_path / "c.stl", None, 1.0) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: object found by the object finder (no transparency)",
                   f"note ({tmp_path / 'c_1.stl'}): filled 4 sealed hollow pockets",
                   f"note ({tmp_path / 'c_3.stl'}): filled 5 sealed hollow pockets"]


_SIGNALLING = """
import os, signal, sys
from recon_core.io import cli, export, inference

when, name = sys.argv[1], sys.argv[2]
number = getattr(signal, name)
if when.startswith("written"):  # the signal arrives once the first file is on disk ("written-twice": twice)
    real_export = export.export_mesh

    def export_then_signal(*args, **kwargs):
        real_export(*args, **kwargs)
        for _ in range(2 if when == "written-twice" else 1):
            os.kill(os.getpid(), number)

    export.export_mesh = export_then_signal
else:  # while the model loads, in code that swallows it ("loading") or turns it into another error ("garbled"),
    # as torch's C++ code did with the KeyboardInterrupt raised inside it
    import time

    real_load = inference.Reconstructor.from_file.__func__

    def load_with_signal(cls, *args, **kwargs):
        try:
            os.kill(os.getpid(), number)
            for _ in range(50):
                time.sleep(0.002)
        except KeyboardInterrupt:
            pass
        if when == "garbled":
            from recon_core.io.weights import WeightsError
            raise WeightsError("Model weights are truncated or corrupt (a stand-in)")
        return real_load(cls, *args, **kwargs)

    inference.Reconstructor.from_file = classmethod(load_with_signal)
sys.argv = ["recon-mesh", *sys.argv[3:]]
cli.run()
"""


def _signalled(tmp_path, tiny_model_path, good_image, when, name, ignore=None) -> tuple:
    """``recon-mesh`` (its console script's ``run``) writing a mesh and its mask into an empty folder, sent ``name`` to
    itself ``when``: its exit code, last stderr line and the folder's files (hidden ones too)."""
    import signal

    out = tmp_path / "out"
    out.mkdir(parents=True)
    def preexec():  # the child starts with each signal's default, whatever this test run ignores (nohup, a job in
        # the background), and with ``ignore`` ignored, as nohup starts it
        for each in ("SIGINT", "SIGTERM", "SIGHUP"):
            signal.signal(getattr(signal, each), signal.SIG_IGN if each == ignore else signal.SIG_DFL)

    proc = subprocess.run([sys.executable, "-c", _SIGNALLING, when, name, str(good_image), "-o", str(out / "m.stl"),
                           "--save-mask", str(out / "mask.png"), "--model", str(tiny_model_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, preexec_fn=preexec)
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1], sorted(p.name for p in out.iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("name,code,says", [("SIGTERM", 143, "error: stopped by SIGTERM; no file written."),
                                            ("SIGHUP", 129, "error: stopped by SIGHUP; no file written."),
                                            ("SIGINT", 130, "error: interrupted; no file written.")])
def test_a_stop_signal_after_a_file_was_written_removes_it(tmp_path, tiny_model_path, good_image, name, code, says):
    """kill or timeout (SIGTERM) and a closed terminal (SIGHUP) stop a run as Ctrl-C does: the mesh already on disk is
    removed, no temporary file is left, one sentence, exit 128 + the signal (SIGTERM and SIGHUP killed the process,
    leaving the files written so far and a temporary file behind)."""
    assert _signalled(tmp_path, tiny_model_path, good_image, "written", name) == (code, says, [])
    if name == "SIGTERM":  # a second signal (an impatient user, a supervisor's second try) changes nothing
        assert _signalled(tmp_path / "twice", tiny_model_path, good_image, "written-twice", name) == (code, says, [])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_the_run_was_started_ignoring_stays_ignored(tmp_path, tiny_model_path, good_image):
    """Started under nohup (SIGHUP ignored), a closed terminal does not stop the run: the mesh and mask are written."""
    code, _, files = _signalled(tmp_path, tiny_model_path, good_image, "written", "SIGHUP", ignore="SIGHUP")
    assert code == 0 and files == ["m.stl", "mask.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("when", ["loading", "garbled"])
def test_ctrl_c_while_the_model_loads_is_said_as_an_interruption(tmp_path, tiny_model_path, good_image, when):
    """Ctrl-C while the model loads is held until the load ends, then stops the run (torch's C++ code swallowed it,
    and the run went on to write its files, or turned it into a false "corrupt weights" error); where the loading
    fails anyway, the run says it was interrupted, not that error."""
    assert _signalled(tmp_path, tiny_model_path, good_image, when, "SIGINT") == (
        130, "error: interrupted; no file written.", [])


def test_stop_holds_a_signal_until_its_block_ends():
    """Outside a hold the handler raises at once; inside, it records the first signal and raises it at the end."""
    import signal

    from recon_core.io.cli import _Stop

    stop = _Stop()
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGTERM, None)
    assert stop.signum == signal.SIGTERM
    stop = _Stop()
    with pytest.raises(KeyboardInterrupt):
        with stop.holding():
            stop(signal.SIGHUP, None)
            stop(signal.SIGINT, None)  # the first is kept
            held = True
    assert held and stop.signum == signal.SIGHUP and not stop.held
    quiet = _Stop()
    with quiet.holding():
        pass
    assert quiet.signum is None
    stop = _Stop()  # after the first signal raised, later ones are only recorded: they cannot break into the cleanup
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGTERM, None)
    stop(signal.SIGTERM, None)
    stop(signal.SIGINT, None)
    assert stop.signum == signal.SIGTERM
    nested = _Stop()  # an inner hold's end does not raise while an outer one holds
    with pytest.raises(KeyboardInterrupt):
        with nested.holding():
            with nested.holding():
                nested(signal.SIGINT, None)
            inner_done = True
    assert inner_done and not nested.held


@pytest.mark.parametrize("option,name,says", [("-o", ".obj", "mesh.obj"), ("--save-mask", ".PNG", "mask.png")])
def test_an_output_named_only_by_its_extension_is_said_so(tmp_path, good_image, capsys, option, name, says):
    """``-o out/.obj`` is a hidden file without an extension: the sentence says the name is missing (it said the
    extension must be one of .obj, ...)."""
    argv = [str(good_image), "-o", str(tmp_path / "x.obj")]
    argv = [str(good_image), "-o", str(tmp_path / name)] if option == "-o" else [*argv, option, str(tmp_path / name)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{name} is an extension without a name" in err and str(tmp_path / says) in err
    assert list(tmp_path.iterdir()) == [good_image]


def test_debug_prints_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    """--debug adds the traceback; bad input is still exit 2 with its sentence (it was exit 1, the traceback alone)."""
    assert main([str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.stl"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: Image file not found")


def test_an_object_too_small_to_take_is_said_so(tmp_path, tiny_model_path, capsys, monkeypatch):
    """A 5 x 7-pixel speck on a plain 1,500-pixel picture, which the shipped object finder does not take either: too
    few pixels to be taken for an object, and the sentence says so and how to mend it (it said to give a plainer
    background, which it had)."""
    monkeypatch.delenv("RECON_FINDER")  # the shipped finder
    rgb = np.full((1500, 1500, 3), 255, np.uint8)
    rgb[700:707, 800:805] = (120, 60, 30)
    picture = tmp_path / "speck.png"
    Image.fromarray(rgb).save(picture)
    assert main([str(picture), "-o", str(tmp_path / "x.stl"), "--model", str(tiny_model_path)]) == 2
    err = capsys.readouterr().err
    assert "only 35 of its pixels (as read, 1500 x 1500) differ from its plain background" in err
    assert "crop the picture closer around it" in err and "plainer background" not in err
    assert "give its outline as a mask (recon-mesh --mask MASK.png)." in err and "add-on" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speck.png", "tiny.json"]


def test_two_stray_pixels_of_a_small_picture_are_not_an_object(tmp_path, tiny_model_path, capsys, monkeypatch):
    """In a 137-pixel picture 0.01 % of the pixels is two: two stray pixels of a dark chair on a dark background were
    taken for the object, and a 1.27 m airplane came out with exit 0. Fewer than BORDER_FLOOR_PIXELS never are."""
    from recon_core.network.crop import BORDER_FLOOR_PIXELS

    monkeypatch.delenv("RECON_FINDER")  # the shipped finder, which sees no object here
    rgb = np.full((137, 137, 3), 25, np.uint8)
    rgb[70, 60:62] = (60, 50, 40)
    picture = tmp_path / "dark.png"
    Image.fromarray(rgb).save(picture)
    assert 2 / rgb[..., 0].size > 1e-4 and 2 < BORDER_FLOOR_PIXELS
    assert main([str(picture), "-o", str(tmp_path / "x.stl"), "--model", str(tiny_model_path)]) == 2
    err = capsys.readouterr().err
    assert "only 2 of its pixels (as read, 137 x 137) differ from its plain background" in err
    assert "hardly differs from the background (dark on dark, white on white), give its outline as a mask" in err
    assert not (tmp_path / "x.stl").exists()


def test_an_unsure_category_is_said_with_its_two_likeliest_names(tmp_path, tiny_model_path, good_image, monkeypatch):
    """Below UNSURE_CATEGORY the notes say the model is unsure what the object is, naming its two likeliest
    categories; not when the category is sure, nor when it was given (--category)."""
    from recon_core.io import inference
    from recon_core.network.categories import CATEGORIES

    rec = inference.Reconstructor.from_file(tiny_model_path)
    rgb, alpha, _ = load_image(good_image)
    probs = np.full(len(CATEGORIES), 0.5 / (len(CATEGORIES) - 2))
    probs[[3, 7]] = 0.3, 0.2  # cabinet 30 %, lamp 20 % (the rest 50 % evenly)
    monkeypatch.setattr(inference.Reconstructor, "_category_probs", lambda self, logits, votes=None: probs)
    unsure = [n for n in rec.reconstruct(rgb, alpha).notes if n.startswith("the model is unsure")]
    assert unsure == [f"the model is unsure what the object is ({CATEGORIES[3].name} 30%, {CATEGORIES[7].name} 20%): it "
                      "knows 13 categories, and its shape is the nearest it has of them; if the object is one of them, "
                      "--category NAME (the add-on's Category) names it"]
    assert not any(n.startswith("the model is unsure") for n in rec.reconstruct(rgb, alpha, category="chair").notes)
    sure = probs.copy()
    sure[3] = inference.UNSURE_CATEGORY  # at the threshold: sure enough
    monkeypatch.setattr(inference.Reconstructor, "_category_probs", lambda self, logits, votes=None: sure)
    assert not any(n.startswith("the model is unsure") for n in rec.reconstruct(rgb, alpha).notes)


def test_a_broken_installation_is_one_sentence(tmp_path, good_image, capsys, monkeypatch):
    """A library that fails to import (here our inference module; a probe's was torch itself) gave a raw traceback
    and exit 1: now one sentence naming it and the mend; --debug still raises it."""
    import sys

    monkeypatch.setitem(sys.modules, "recon_core.io.inference", None)  # its import now raises ImportError
    assert main([str(good_image), "-o", str(tmp_path / "x.stl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: recon-mesh's libraries could not be loaded (ModuleNotFoundError: ") and "Traceback" not in err
    assert err.rstrip().endswith("run bash scripts/setup.sh again (or reinstall with pip install -e .), or rerun with "
                                 "--debug.")
    assert not (tmp_path / "x.stl").exists()
    with pytest.raises(ImportError):
        main([str(good_image), "-o", str(tmp_path / "x.stl"), "--debug"])


def test_a_broken_numpy_is_one_sentence_and_help_still_shows(tmp_path, good_image):
    """recon-mesh says its errors through recon_core.io.notes and sets up its streams before anything loads: neither
    may need numpy, or a broken numpy (or --help) ends in a traceback before the sentence can be said."""
    start = ("import sys; sys.modules['numpy'] = None; from recon_core.io.cli import run; "
             "sys.argv = ['recon-mesh', *sys.argv[1:]]; run()")
    broken = subprocess.run([sys.executable, "-c", start, str(good_image), "-o", str(tmp_path / "x.stl")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert broken.returncode == 1 and broken.stderr.startswith("error: recon-mesh's libraries could not be loaded")
    assert "Traceback" not in broken.stderr and not (tmp_path / "x.stl").exists()
    shown = subprocess.run([sys.executable, "-c", start, "--help"], capture_output=True, text=True, cwd=REPO,
                           timeout=120)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: recon-mesh") and not shown.stderr


def test_a_path_beside_words_of_the_add_on_is_said_whole(tmp_path, capsys):
    """recon-mesh leaves out the add-on's controls named beside its options, and nothing else: a picture named
    "Chairs, Height.png" was said as "Chairs.png", another file."""
    picture = tmp_path / "Chairs, Height.png"
    assert main([str(picture), "-o", str(tmp_path / "x; Category.stl")]) == 2
    assert f"Image file not found: {picture}" in capsys.readouterr().err


def test_outputs_and_inputs_that_are_no_file_say_so_with_their_folder(tmp_path, good_image, capsys, monkeypatch):
    """An output given as a folder, an empty name, or standard input as the picture: said as such (a folder was told
    its extension was wrong, "-" was "not found"); a wrong extension names the path as given, folder and all."""
    from recon_core.io import inference

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(inference.Reconstructor, "from_file", no_model)
    folder = tmp_path / "meshes"
    folder.mkdir()
    cases = [
        (["-o", str(folder)], f"error: Cannot write {folder}: it is a folder; give a file name, e.g. {folder}/mesh.stl."),
        (["-o", str(tmp_path / "x.stl"), "--save-mask", str(folder)],
         f"error: Cannot write the mask to {folder}: it is a folder; give a file name, e.g. {folder}/mask.png."),
        (["-o", ""], "error: The output file's name is empty; give one, e.g. -o chair.stl."),
        (["-o", str(folder / "in.png")], f"error: Cannot write {folder}/in.png: the extension must be one of .obj, "
                                         ".stl, .ply, .glb, .3mf."),
    ]
    for argv, said in cases:
        assert main([str(good_image), *argv]) == 2, argv
        assert capsys.readouterr().err.strip() == said
    assert main(["-", "-o", str(tmp_path / "x.stl")]) == 2
    assert capsys.readouterr().err.strip() == ("error: Reading the picture from standard input (-) is not supported; "
                                                "give its file's path.")
    assert main([str(good_image), "-o", "-"]) == 2  # said as its own, not "the extension must be one of"
    assert capsys.readouterr().err.strip() == ("error: Writing the mesh to standard output (-) is not supported; give "
                                                "a file's path, e.g. -o chair.stl.")
    assert main([str(good_image), "-o", str(folder / "x.3MF")]) == 2  # the path as given, as every other error
    assert capsys.readouterr().err.startswith(f"error: Cannot write {folder}/x.3MF without a size: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes", "obj.png"] and not any(folder.iterdir())


def test_the_notes_shares_never_read_in_scientific_notation_nor_100_for_less():
    from recon_core.io.notes import share as _share

    assert [_share(f) for f in (1e-6, 0.00018, 0.012, 0.0996, 0.54, 0.994, 0.998, 1.0)] == [
        "under 0.001%", "0.018%", "1.2%", "10%", "54%", "99%", "over 99%", "100%"]


def test_thin_walls_are_said_whatever_made_the_mesh(tmp_path, good_image, tiny_model_path, capsys):
    """The check runs for every mesh made at a height (it ran in the shape bank's path only): a model without a bank,
    its network's own mesh at half a millimetre tall, is all thin walls."""
    out = tmp_path / "x.stl"
    assert main([str(good_image), "-o", str(out), "--model", str(tiny_model_path), "--height-mm", "0.5",
                 "--detail", "low"]) == 0
    err = capsys.readouterr().err
    assert "walls thinner than 0.8 mm cover" in err and "(100% of the surface" in err, err


def test_the_library_refuses_arrays_it_cannot_take_in_one_sentence(tiny_model_path, good_image):
    """A library user's arrays: a PIL image, a float or 0/1 mask, a mask of another size went on to fail inside
    Pillow or numpy, and an all-zero alpha gave a made-up shape marked printable; a category or height of the wrong
    type failed with an AttributeError or a TypeError."""
    from PIL import Image

    from recon_core.io.image import ImageError, load_picture
    from recon_core.io.inference import Reconstructor

    rec = Reconstructor.from_file(tiny_model_path)
    rgb, _, _ = load_picture(good_image)
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[10:-10, 10:-10] = 255
    for kwargs, kind, said in (
        (dict(rgb=Image.open(good_image)), ValueError, "rgb must be a numpy array (H, W, 3) uint8, got a "),
        (dict(alpha=alpha / 255.0), ValueError, "alpha must be None or a "),
        (dict(alpha=alpha[:-1]), ValueError, "alpha must be None or a "),
        (dict(alpha=alpha[..., None]), ValueError, "alpha must be None or a "),
        (dict(alpha=alpha // 255), ImageError, "holds only 0 and 1 (a 0/1 mask): give it as 0 and 255"),
        (dict(alpha=np.zeros_like(alpha)), ImageError, "is fully transparent: there is no object to reconstruct"),
        (dict(category=4), ValueError, "category must be a category's name, e.g. 'chair', or None, got 4."),
        (dict(height_mm="90"), ValueError, "height_mm must be a number of millimetres or None, got '90'."),
    ):
        call = {"rgb": rgb, "alpha": alpha, **kwargs}
        with pytest.raises(kind) as err:
            rec.reconstruct(call.pop("rgb"), call.pop("alpha"), **call)
        assert said in str(err.value) and "\n" not in str(err.value), (kwargs.keys(), err.value)
    assert rec.reconstruct(rgb, alpha, height_mm=90).report.ok  # the same arrays, well formed
    assert rec.reconstruct(rgb, alpha, height_mm=np.float32(90)).report.ok  # numpy's numbers are numbers
    assert rec.reconstruct(rgb, alpha // 16).report.ok  # a faint alpha (15 at most), as a reduced hairline's


def test_a_picture_named_like_an_option_is_said_so(tmp_path, good_image, capsys, monkeypatch):
    """``recon-mesh -chair.png -o out.stl`` said "the following arguments are required: image" to a user who gave it;
    the sentence now says why, and how to give it (./-chair.png, which works)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-chair.png").write_bytes(good_image.read_bytes())
    with pytest.raises(SystemExit) as exc:
        main(["-chair.png", "-o", "out.stl"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err == (
        "error: the following arguments are required: image; -chair.png is read as an option because its name starts "
        "with -: give it as ./-chair.png; see recon-mesh --help.\n"), err
    with pytest.raises(SystemExit):  # an option that is no file gets no such hint
        main([str(good_image), "-o", "out.stl", "--colour", "red"])
    assert "read as an option" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor a picture given after "--", which is read as the picture
        main(["-o", "out.stl", "--candidates", "20", "--", "-chair.png"])
    assert "read as an option" not in capsys.readouterr().err


def test_an_output_that_is_a_loop_of_links_is_replaced_as_a_link_is(tmp_path, tiny_model_path, good_image, capsys):
    """``-o l1.stl`` where l1.stl and l2.stl point at each other failed as "unexpected failure (RuntimeError: Symlink
    loop ...)", exit 1: the check against the input picture resolved the links. The link is replaced by the mesh, as
    any link at OUT is."""
    (tmp_path / "l1.stl").symlink_to(tmp_path / "l2.stl")
    (tmp_path / "l2.stl").symlink_to(tmp_path / "l1.stl")
    assert main([str(good_image), "-o", str(tmp_path / "l1.stl"), "--model", str(tiny_model_path)]) == 0, (
        capsys.readouterr().err)
    assert not (tmp_path / "l1.stl").is_symlink() and (tmp_path / "l1.stl").stat().st_size > 84


def test_recon_mesh_names_its_own_options_not_the_add_ons_controls(tmp_path, capsys):
    """The notes both front ends share name the add-on's control beside each option ("--solid (the add-on's Fill
    Hollow Pockets) fills them"); recon-mesh says the options alone, as the add-on says its controls alone. Every
    control a sentence of recon_core names is one the rewriting knows, so none is left half-said."""
    import ast
    import re as re_

    from recon_core.io.notes import ADDON_CONTROLS, for_command_line

    named = set()
    for path in (REPO / "recon_core").rglob("*.py"):
        if path.name == "notes.py":  # the rewriting's own patterns
            continue
        tree = ast.parse(path.read_text())
        documents = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
        parts = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
        for node in ast.walk(tree):  # the strings a user may read, an f-string's values as NAME
            if isinstance(node, ast.JoinedStr):
                text = "".join(p.value if isinstance(p, ast.Constant) else "NAME" for p in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in documents | parts:
                text = node.value
            else:
                continue
            named |= {n.strip() for n in re_.findall(r"the add-on's ((?:[A-Z]\w*:? ?)+)", text)}
            if path.name != "worker.py":  # the worker's are the add-on's alone
                said = for_command_line(text)
                assert "add-on's" not in said and "Use This Mask" not in said, (path.name, said)
    assert named and named <= set(ADDON_CONTROLS), named - set(ADDON_CONTROLS)
    for control in ADDON_CONTROLS:
        for shared, alone in ((f"--x (the add-on's {control}) does it", "--x does it"),
                              (f"(--x, the add-on's {control})", "(--x)"), (f"with --x or the add-on's {control}.",
                                                                              "with --x."),
                              (f"(recon-mesh --x; the add-on's {control})", "(recon-mesh --x)")):
            assert for_command_line(shared) == alone, (control, shared)
    assert for_command_line("a corrected one (--mask, Use This Mask)") == "a corrected one (--mask)"
    assert for_command_line("thicken them in your modeller (the add-on marks them)") == "thicken them in your modeller"
