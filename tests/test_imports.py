"""recon_core must import and work without Blender, and start without packages it does not need."""

import subprocess
import sys
from pathlib import Path


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


def _modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    code += "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def test_importing_inference_skips_torchvision_torch_geometric_and_dynamo():
    """torchvision (through torchvision.ops) and torch_geometric each import torch._dynamo (about a second)."""
    loaded = _modules_after("import recon_core.inference")
    assert "recon_core.inference" in loaded and "torch" in loaded
    for heavy in ("torchvision", "torch_geometric", "torch._dynamo"):
        assert heavy not in loaded, f"import recon_core.inference imports {heavy}"


def test_recon_mesh_never_imports_torchvision(tmp_path, tiny_model_path):
    image = Path(__file__).resolve().parent.parent / "examples" / "chair.png"
    out = tmp_path / "chair.stl"
    loaded = _modules_after(
        "from recon_core.cli import main\n"
        f"code = main([{str(image)!r}, '-o', {str(out)!r}, '--model', {str(tiny_model_path)!r}, '--detail', 'low'])\n"
        "assert code in (0, 3), code\n"
    )
    assert out.is_file()
    assert "recon_core.encoder" in loaded
    assert not any(name == "torchvision" or name.startswith("torchvision.") for name in loaded)
