"""build_addon.py's command line: bad input is one sentence and exit code 2, and no zip is left half-written."""

from __future__ import annotations

import zipfile

import pytest

import build_addon


def test_builds_the_zip_with_the_interpreter_given(tmp_path, capsys):
    python = build_addon.default_python()
    assert build_addon.main(["--out", str(tmp_path), "--python", python]) == 0
    (zip_path,) = tmp_path.iterdir()
    with zipfile.ZipFile(zip_path) as zf:
        assert '"python": "%s"' % python in zf.read("defaults.json").decode()
    assert capsys.readouterr().out == f"wrote {zip_path}\n"


@pytest.mark.parametrize("case", ["python missing", "python a folder", "out under a file", "out unwritable"])
def test_bad_options_are_one_sentence_and_exit_code_2(tmp_path, capsys, monkeypatch, case):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    args = {"python missing": ["--python", str(tmp_path / "none" / "python"), "--out", str(tmp_path / "dist")],
            "python a folder": ["--python", str(tmp_path), "--out", str(tmp_path / "dist")],
            "out under a file": ["--out", str(afile / "dist")],
            "out unwritable": ["--out", str(tmp_path / "dist")]}[case]
    if case == "out unwritable":  # the zip cannot be written: the temporary file goes too
        def failing(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(build_addon.zipfile.ZipFile, "writestr", failing)
    assert build_addon.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("build_addon: ") and err.count("\n") == 1 and "Traceback" not in err
    if case.startswith("python"):
        assert "is not an executable file" in err and not (tmp_path / "dist").exists()
    else:
        assert "choose a writable folder." in err
    if case == "out unwritable":
        assert list((tmp_path / "dist").iterdir()) == [], "no zip and no temporary file left"
