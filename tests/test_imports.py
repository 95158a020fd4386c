"""recon_core must import and work without Blender."""

import subprocess
import sys


def test_recon_core_never_imports_bpy():
    code = (
        "import importlib, pkgutil, sys, recon_core\n"
        "for m in pkgutil.iter_modules(recon_core.__path__):\n"
        "    importlib.import_module('recon_core.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'bpy' or n.startswith(('bpy.', 'bmesh', 'mathutils')))\n"
        "assert not bad, bad\n"
        "print(len([m for m in pkgutil.iter_modules(recon_core.__path__)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 15
