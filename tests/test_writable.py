"""Outputs that cannot be written are refused before a script's work starts (recon_core.io.export.unwritable_reason).

``os.access`` says yes to everything for root, ``/proc`` included, so the check creates a temporary file. ``/proc``
takes no new file even from root: a folder there is unwritable whoever runs the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from recon_core.io.export import unwritable_reason

UNWRITABLE = Path("/proc/no_such_folder")
"""A path whose nearest existing folder (``/proc``) takes no new file, for root as well."""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def _one_sentence(err: str, *named: str) -> None:
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and ".partial" not in err and "[Errno" not in err, err
    for word in named:
        assert word in err, err


def test_a_folder_that_takes_no_file_is_unwritable_and_nothing_is_left(tmp_path):
    assert "the folder /proc cannot be written to" in unwritable_reason(UNWRITABLE / "x", folder=True)
    assert "the folder /proc cannot be written to" in unwritable_reason(UNWRITABLE / "f", folder=False)
    assert unwritable_reason(tmp_path / "a" / "b", folder=True) is None
    assert unwritable_reason(tmp_path / "f.txt", folder=False) is None
    assert list(tmp_path.iterdir()) == []  # the probe is removed, no folder made
    (tmp_path / "d").mkdir()
    assert unwritable_reason(tmp_path / "d", folder=False) == "it is a folder"


def _never(what: str):
    """A stand-in for work that must not start: it fails the test with ``what``."""
    def never(*args, **kwargs):
        raise AssertionError(what)

    return never


def test_train_finder_refuses_an_unwritable_out_before_drawing(tmp_path, capsys, monkeypatch):
    import training.train_finder as module

    never = _never("pictures drawn before --out was checked")
    monkeypatch.setattr(module, "draw_set", never)
    (tmp_path / "bg").mkdir()
    (tmp_path / "bg" / "sources.json").write_text("{}")
    argv = ["--cache", str(tmp_path / "cache"), "--backgrounds", str(tmp_path / "bg"), "--out", str(UNWRITABLE / "f")]
    assert module.main(argv) == 2
    _one_sentence(capsys.readouterr().err, "--out", "/proc")


def test_build_shape_bank_refuses_an_unwritable_out_before_building(capsys, monkeypatch):
    import training.build_shape_bank as module

    never = _never("work done before --out was checked")
    monkeypatch.setattr(module, "trained_model", never)
    monkeypatch.setattr(module, "build_shape_bank", never)
    assert module.main(["--out", str(UNWRITABLE / "m"), "--limit", "1"]) == 2
    _one_sentence(capsys.readouterr().err, "--out", "/proc")


def test_train_refuses_an_unwritable_run_out_before_reading_the_data(capsys, monkeypatch):
    import training.train as module

    never = _never("the data set was read before run.out was checked")
    monkeypatch.setattr(module, "training_views", never)
    monkeypatch.setattr(module, "build_model", never)
    assert module.main([f"run.out={UNWRITABLE}", "model.backbone=resnet18"]) == 2
    _one_sentence(capsys.readouterr().err, "run.out", "/proc")


def test_build_backgrounds_names_the_folder_not_its_temporary_one(tmp_path, capsys, monkeypatch):
    import training.build_backgrounds as module

    never = _never("packages fetched before --out was checked")
    monkeypatch.setattr(module, "_fetch", never)
    assert module.main(["--crops", "2", "--out", str(UNWRITABLE), "--cache", str(tmp_path / "cache")]) == 2
    _one_sentence(capsys.readouterr().err, "--out", "/proc")


def test_pack_views_names_the_folder_not_its_temporary_one(tmp_path, capsys):
    from training.pack_views import main

    (tmp_path / "sn").mkdir()
    (tmp_path / "r").mkdir()
    assert main(["--out", str(UNWRITABLE), "--shapenet", str(tmp_path / "sn"), "--renders", str(tmp_path / "r")]) == 2
    _one_sentence(capsys.readouterr().err, "--out", "/proc")
    assert sorted(os.listdir(tmp_path)) == ["r", "sn"]
