#!/usr/bin/env bash
# Create .venv with the project and its pinned dependencies (idempotent; 3-4 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import recon_core, torch, pytorch3d, bpy, pytest, fast_simplification, lxml, lib3mf, cv2, pillow_heif" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
fi
