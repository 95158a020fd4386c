"""recon_core must import and work without Blender, and start without packages it does not need."""

import ast
import subprocess
import sys
from pathlib import Path


def test_recon_core_never_imports_bpy():
    code = (
        "import importlib, pkgutil, sys, recon_core\n"
        "names = [m.name for m in pkgutil.walk_packages(recon_core.__path__, 'recon_core.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(n for n in sys.modules if n == 'bpy' or n.startswith(('bpy.', 'bmesh', 'mathutils')))\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 25


PARTS = ("io", "network", "mesh")
"""recon_core's sub-packages, each importing only those after it."""


def _recon_core_imports(path: Path) -> set[str]:
    """The recon_core modules a source file imports (at any depth, typing-only imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("recon_core"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("recon_core"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # ``from recon_core.io import worker``
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add("relative")
    return found


def _wrong_way(part: str, name: str) -> bool:
    """Whether a module of ``recon_core/<part>/`` importing ``name`` breaks the io -> network -> mesh order."""
    pieces = name.split(".")
    if len(pieces) == 1:  # the package itself (its version, its path)
        return False
    return pieces[1] not in PARTS[PARTS.index(part):]


def test_imports_run_one_way_io_network_mesh():
    """io may import network and mesh, network only mesh, mesh neither: the three parts show in the layout."""
    root = Path(__file__).resolve().parent.parent / "recon_core"
    loose = sorted(p.name for p in root.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules outside the three parts: {loose}"
    checked = 0
    for part in PARTS:
        for path in sorted((root / part).glob("*.py")):
            for name in _recon_core_imports(path):
                assert name != "relative", f"{path.name}: relative import"
                assert not _wrong_way(part, name), f"recon_core/{part}/{path.name} imports {name}"
            checked += 1
    assert checked >= 25


def test_layout_check_catches_a_wrong_way_import(tmp_path):
    """The check above finds a mesh module's lazy import of the network, and a relative import."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recon_core.network.model import build_model\n")
    found = _recon_core_imports(bad)
    assert found == {"recon_core.network.model", "recon_core.network.model.build_model"}
    assert all(_wrong_way("mesh", name) for name in found)
    assert not any(_wrong_way("io", name) for name in found)
    assert _wrong_way("network", "recon_core.io.weights") and not _wrong_way("network", "recon_core.mesh.camera")
    assert not _wrong_way("mesh", "recon_core")
    bad.write_text("from . import volume\n")
    assert "relative" in _recon_core_imports(bad)


def _modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    code += "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def test_importing_inference_skips_torchvision_torch_geometric_and_dynamo():
    """torchvision (through torchvision.ops) and torch_geometric each import torch._dynamo (about a second)."""
    loaded = _modules_after("import recon_core.io.inference")
    assert "recon_core.io.inference" in loaded and "torch" in loaded
    for heavy in ("torchvision", "torch_geometric", "torch._dynamo"):
        assert heavy not in loaded, f"import recon_core.io.inference imports {heavy}"


def test_recon_mesh_never_imports_torchvision(tmp_path, tiny_model_path):
    """Nor torch_geometric or torch._dynamo (the refiner's GraphConv is written out): each costs about a second."""
    image = Path(__file__).resolve().parent.parent / "examples" / "chair.png"
    out = tmp_path / "chair.stl"
    loaded = _modules_after(
        "from recon_core.io.cli import main\n"
        f"code = main([{str(image)!r}, '-o', {str(out)!r}, '--model', {str(tiny_model_path)!r}, '--detail', 'low'])\n"
        "assert code in (0, 3), code\n"
    )
    assert out.is_file()
    assert "recon_core.network.encoder" in loaded
    for heavy in ("torchvision", "torch_geometric", "torch._dynamo"):
        assert not any(name == heavy or name.startswith(heavy + ".") for name in loaded), f"recon-mesh imports {heavy}"
