"""The numpy thread pool, and how the add-on's worker has torch's threads wait (recon_core.mesh.threads)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recon_core.mesh.threads import thread_map

REPO = Path(__file__).resolve().parent.parent


def test_thread_map_is_the_list_comprehension_in_order_on_several_threads(monkeypatch):
    from recon_core.mesh import threads

    monkeypatch.setattr(threads, "workers", lambda: 3)
    seen = set()
    barrier = threading.Barrier(3, timeout=10)  # three calls at once: only if they run side by side

    def square(x):
        if x < 3:
            barrier.wait()
        seen.add(threading.current_thread().name)
        return x * x

    assert thread_map(square, range(7)) == [x * x for x in range(7)]
    assert len(seen) >= 3 and all(name.startswith("recon-pool") for name in seen)


def test_thread_map_raises_the_first_error_and_runs_nested_calls_serially(monkeypatch):
    from recon_core.mesh import threads

    monkeypatch.setattr(threads, "workers", lambda: 2)

    def fails(x):
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        thread_map(fails, range(4))
    # a call from inside the pool does not wait on the pool it fills
    assert thread_map(lambda x: thread_map(lambda y: x * 10 + y, range(3)), range(4)) == [
        [x * 10 + y for y in range(3)] for x in range(4)]
    assert thread_map(lambda x: x, []) == []


@pytest.mark.parametrize("preset, torch_first, expected", [
    (None, False, "PASSIVE"),  # the worker's default: waiting threads sleep
    ("ACTIVE", False, "ACTIVE"),  # the user's own setting stays
    (None, True, None),  # torch already loaded: too late to matter, nothing set
])
def test_wait_quietly_sets_the_openmp_policy_before_torch_only(preset, torch_first, expected):
    """Spinning OpenMP threads ran the example chair in 2.4-12.7 s on a machine with other work, against 2.2-3.0 s
    with them passive: the worker sets OMP_WAIT_POLICY=PASSIVE before torch is imported."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    code = ("import os\n" + ("import torch\n" if torch_first else "")
            + "from recon_core.mesh.threads import wait_quietly\nwait_quietly()\n"
              "print(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


def test_the_worker_sets_it_before_it_imports_torch():
    """The add-on's worker, beside Blender: the policy is set by the time torch is imported."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import importlib, os, sys\nm = importlib.import_module('recon_core.io.worker')\n"
            "import builtins\nreal = builtins.__import__\nseen = []\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'torch' and not seen:\n"
            "        seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "try:\n    m.main(['--model', '/nonexistent/model'])\n"
            "except SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), seen[:1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    said = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("PASSIVE")]  # the worker's
    assert said and said[-1] in ("PASSIVE []", "PASSIVE ['PASSIVE']"), (out.stdout, out.stderr)  # print is stderr
