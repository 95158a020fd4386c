"""scripts/setup.sh and scripts/test.sh, the README's two commands, on a Windows layout (Git Bash): the Python launcher
``py -3.11`` when there is no python3.11, and the environment's programs in .venv/Scripts, not .venv/bin."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash")

FAKE_PY = """#!{bash}
# Windows' launcher: "py -3.11 -m venv .venv" makes the environment with its Python in Scripts
echo "py $*" >> "{log}"
{mkdir} -p .venv/Scripts
{cp} "{fake_python}" .venv/Scripts/python.exe
"""
FAKE_PYTHON = """#!{bash}
echo "python.exe $*" >> "{log}"
[ "$1" = "-c" ] && [ ! -e "{installed}" ] && exit 1   # the packages are not there yet
[ "$3" = "install" ] && [ "$5" = "-e" ] && echo > "{installed}"
exit 0
"""


@pytest.fixture
def windows_like(tmp_path):
    """A copy of the scripts, a PATH with the launcher ``py`` and no python3.11, and the log of what was run."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "test.sh"):
        shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "bash"):
        (tools / tool).symlink_to(shutil.which(tool))
    log, installed = tmp_path / "log.txt", tmp_path / "installed"
    fake_python = tmp_path / "python.exe"
    fake_python.write_text(FAKE_PYTHON.format(bash=BASH, log=log, installed=installed))
    fake_python.chmod(0o755)
    launcher = tools / "py"
    launcher.write_text(FAKE_PY.format(bash=BASH, log=log, mkdir=shutil.which("mkdir"), cp=shutil.which("cp"),
                                       fake_python=fake_python))
    launcher.chmod(0o755)
    return repo, {"PATH": str(tools), "HOME": str(tmp_path)}, log


def test_setup_takes_the_launcher_and_the_scripts_folder(windows_like):
    repo, env, log = windows_like
    done = subprocess.run([BASH, "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "py -3.11 -m venv .venv",
        "python.exe -c import recon_core, torch, pytorch3d, bpy, pytest, fast_simplification, lxml, lib3mf, cv2, "
        "pillow_heif",
        "python.exe -m pip install -q --upgrade pip",
        "python.exe -m pip install -q -e .[dev]",
    ]
    assert not (repo / ".venv" / "bin").exists()
    log.unlink()
    tests = subprocess.run([BASH, "scripts/test.sh", "-x"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=60)
    assert tests.returncode == 0, tests.stderr
    assert log.read_text().splitlines()[-1] == "python.exe -m pytest -q -x"  # set up already: no install


def test_setup_without_any_python_3_11_says_so(windows_like):
    repo, env, log = windows_like
    (Path(env["PATH"]) / "py").unlink()
    done = subprocess.run([BASH, "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("error: no Python 3.11 found (python3.11, or py -3.11 on Windows); install it, or set "
                           "PYTHON to its path.\n")


def test_the_shell_scripts_keep_lf_endings_on_any_checkout():
    """Git for Windows checks text out with CRLF unless told: bash then stops at "set -euo pipefail\\r"."""
    rules = (REPO / ".gitattributes").read_text().splitlines()
    assert "*.sh text eol=lf" in rules and ".ci/run text eol=lf" in rules
