#!/usr/bin/env bash
# Create .venv with the project and its pinned dependencies (idempotent; 3-4 minutes the first time).
# Linux and macOS; on Windows in Git Bash, where the environment's programs are in .venv/Scripts, not .venv/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
  PY=("$PYTHON")
elif command -v python3.11 >/dev/null 2>&1; then
  PY=(python3.11)
elif command -v py >/dev/null 2>&1; then
  PY=(py -3.11)  # Windows' Python launcher
else
  echo "error: no Python 3.11 found (python3.11, or py -3.11 on Windows); install it, or set PYTHON to its path." >&2
  exit 1
fi
venv_python() {
  if [ -f .venv/Scripts/python.exe ]; then echo .venv/Scripts/python.exe; else echo .venv/bin/python; fi
}
if [ ! -x "$(venv_python)" ]; then
  "${PY[@]}" -m venv .venv
fi
VPY=$(venv_python)
MODULES="recon_core, torch, pytorch3d, bpy, pytest, fast_simplification, lxml, lib3mf, cv2, pillow_heif"
if ! "$VPY" -c "import $MODULES" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q -e ".[dev]"
fi
