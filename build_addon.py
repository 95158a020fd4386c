"""Build the Blender extension zip: ``python build_addon.py`` -> ``dist/reconstruct_from_image-VERSION.zip``.

The zip holds ``blender_addon/`` (manifest at its root) plus ``defaults.json`` with the
interpreter the add-on should run the worker with (this repository's ``.venv`` if it
exists, else the interpreter running this script, or ``--python``) and the repository
path. Install it in Blender with Edit > Preferences > Get Extensions > Install from Disk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import zipfile
from pathlib import Path

__all__ = ["build", "default_python", "main"]

REPO = Path(__file__).resolve().parent
SOURCE = REPO / "blender_addon"
INCLUDE = ("*.py", "blender_manifest.toml", "README.md")


def default_python(repo: Path = REPO) -> str:
    """The repository's virtual environment interpreter if there is one, else ``sys.executable``."""
    for candidate in (repo / ".venv" / "bin" / "python", repo / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def _manifest_field(name: str) -> str:
    match = re.search(rf'^{name}\s*=\s*"([^"]+)"', (SOURCE / "blender_manifest.toml").read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"blender_manifest.toml has no {name} field")
    return match.group(1)


def build(out_dir: str | os.PathLike = REPO / "dist", python: str | None = None) -> Path:
    """Write the extension zip into ``out_dir``; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_manifest_field('id')}-{_manifest_field('version')}.zip"
    files = sorted({p for pattern in INCLUDE for p in SOURCE.glob(pattern)})
    defaults = {"python": python or default_python(), "repo": str(REPO)}
    tmp = path.with_suffix(".zip.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in files:
                zf.write(file, file.name)
            zf.writestr("defaults.json", json.dumps(defaults, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="output folder (default: dist/)")
    parser.add_argument("--python", help="worker interpreter written as the default (default: .venv/bin/python)")
    args = parser.parse_args(argv)
    if args.python is not None and not (os.path.isfile(args.python) and os.access(args.python, os.X_OK)):
        print(f"build_addon: --python {args.python} is not an executable file; give the interpreter that has "
              "recon_core installed (e.g. .venv/bin/python).", file=sys.stderr)
        return 2
    try:
        path = build(args.out, args.python)
    except OSError as err:
        print(f"build_addon: cannot write into --out {args.out} ({err.strerror or err}); choose a writable folder.",
              file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
