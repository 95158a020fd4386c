"""training/build_solids.py's bad input: one sentence, exit code 2, before any work (it exited 0 having built
nothing for a mistyped --renders, and failed model by model for --resolution 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import build_solids


def _data_set(root: Path) -> Path:
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps([{"model_id": "m0000", "synset": "03001627", "split": "train"}]))
    return root


@pytest.mark.parametrize("case,named", [
    ("resolution", "--resolution must be at least 2"),
    ("workers", "--workers must be at least 1"),
    ("no shapenet", "--shapenet"),
    ("no renders", "--renders"),
    ("renders of other models", "holds the views of none of the 1 models"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(tmp_path, capsys, case, named):
    shapenet, renders = _data_set(tmp_path / "shapenet"), tmp_path / "renders"
    (renders / "03001627" / "other").mkdir(parents=True)
    argv = ["--shapenet", str(shapenet), "--renders", str(renders)]
    if case == "resolution":
        argv += ["--resolution", "0"]
    elif case == "workers":
        argv += ["--workers", "0"]
    elif case == "no shapenet":
        argv[1] = str(tmp_path / "missing")
    elif case == "no renders":
        argv[3] = str(tmp_path / "missing")
    assert build_solids.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1, err
    assert not any(renders.rglob("*.npz"))
