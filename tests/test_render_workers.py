"""Exit codes of training/render.py's parallel driver, with stand-in workers (no Blender needed)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from training import render


def _manifest(root: Path, count: int) -> Path:
    records = [{"model_id": f"m{i:04d}", "synset": "03001627", "split": "train"} for i in range(count)]
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(records))
    return root


def _argv(shapenet: Path, out: Path) -> list[str]:
    return ["--shapenet", str(shapenet), "--out", str(out), "--views", "1", "--workers", "2", "--threads", "1"]


def test_worker_that_cannot_start_fails_the_run(tmp_path, monkeypatch):
    """A worker that exits non-zero before it starts a model leaves its shard unrendered: exit 1, not 0."""
    monkeypatch.setattr(render, "_worker_command", lambda args: [sys.executable, "-c", "raise SystemExit(3)"])
    assert render.main(_argv(_manifest(tmp_path / "shapenet", 2), tmp_path / "out")) == 1


def test_workers_that_finish_give_exit_zero(tmp_path, monkeypatch):
    """Workers that report their views and exit 0: the run exits 0."""
    script = f"print({render.PROGRESS_MARK!r} + ' model x', flush=True); print({render.PROGRESS_MARK!r} + ' view')"
    monkeypatch.setattr(render, "_worker_command", lambda args: [sys.executable, "-c", script])
    assert render.main(_argv(_manifest(tmp_path / "shapenet", 2), tmp_path / "out")) == 0


def test_a_run_in_which_every_model_failed_exits_one(tmp_path, monkeypatch):
    """Workers that finish but report every model failed: not one view rendered, so the run failed (exit 1; it was
    0); one that renders a view of another model while one fails still exits 0, the failure listed."""
    mark = render.PROGRESS_MARK
    failing = f"print({mark!r} + ' model x', flush=True); print({mark!r} + ' failed x', flush=True)"
    monkeypatch.setattr(render, "_worker_command", lambda args: [sys.executable, "-c", failing])
    assert render.main(_argv(_manifest(tmp_path / "shapenet", 2), tmp_path / "out")) == 1
    assert (tmp_path / "out" / "failed.txt").read_text().strip() == "x"
    some = failing + f"; print({mark!r} + ' model y', flush=True); print({mark!r} + ' view', flush=True)"
    monkeypatch.setattr(render, "_worker_command", lambda args: [sys.executable, "-c", some])
    assert render.main(_argv(_manifest(tmp_path / "shapenet2", 2), tmp_path / "out2")) == 0


def test_worker_command_does_not_import_bpy(monkeypatch):
    """The parent names its workers' executable without loading bpy (bpy loaded off the main thread crashes exit)."""
    monkeypatch.delitem(sys.modules, "bpy", raising=False)
    script = str(Path(render.__file__).resolve())
    assert render._worker_command(["--views", "1"]) == [sys.executable, script, "--views", "1"]
    assert "bpy" not in sys.modules


@pytest.mark.parametrize("extra,named", [
    (["--split", "bogus"], "--split bogus"),
    (["--models", "nosuchid"], "--models nosuchid"),
    (["--limit", "-1"], "--limit"),
    (["--limit", "0"], "--limit"),
    (["--sketch-share", "2"], "--sketch-share"),
    (["--elevation", "50", "10"], "--elevation"),
    (["--views", "0"], "--views"),
    (["--models"], "--models names no model"),  # `--models $IDS` with $IDS empty: it rendered every model
])
def test_bad_input_is_one_sentence_and_creates_nothing(tmp_path, capsys, extra, named):
    """Values out of range and selections of no model: exit 2, one sentence naming the option, no --out folder."""
    out = tmp_path / "out"
    argv = ["--shapenet", str(_manifest(tmp_path / "shapenet", 2)), "--out", str(out), *extra]
    assert render.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_missing_data_set_or_an_out_under_a_file_is_one_sentence(tmp_path, capsys):
    assert render.main(["--shapenet", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "--shapenet" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    argv = ["--shapenet", str(_manifest(tmp_path / "shapenet", 1)), "--out", str(tmp_path / "file" / "x")]
    assert render.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and len(err.strip().splitlines()) == 1


def test_every_option_is_described_in_the_help(capsys):
    with pytest.raises(SystemExit):
        render.parse_args(["--help"])
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)  # one entry per option, its description included
    for flag in ("--seed SEED", "--size SIZE", "--samples SAMPLES", "--elevation LO HI", "--distance LO HI",
                 "--sketch-share SKETCH_SHARE", "--crease-deg CREASE_DEG", "-v, --verbose"):
        entry = next(e for e in entries if e.strip().startswith(flag))
        assert entry.strip()[len(flag):].split(), f"{flag} has no description"
