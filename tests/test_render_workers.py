"""Exit codes of training/render.py's parallel driver, with stand-in workers (no Blender needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def test_worker_command_does_not_import_bpy(monkeypatch):
    """The parent names its workers' executable without loading bpy (bpy loaded off the main thread crashes exit)."""
    monkeypatch.delitem(sys.modules, "bpy", raising=False)
    script = str(Path(render.__file__).resolve())
    assert render._worker_command(["--views", "1"]) == [sys.executable, script, "--views", "1"]
    assert "bpy" not in sys.modules
