"""Client side of the worker protocol (:mod:`recon_core.io.worker`): start, feed and watch a worker process.

Plain Python (no ``bpy``, no ``recon_core``, no torch), so it runs inside Blender and in
tests alike. A :class:`WorkerClient` owns one ``PYTHON -m recon_core.io.worker`` process;
its stdout (protocol lines) and stderr (log text, kept for crash messages) are drained
by two daemon threads so the worker never blocks on a full pipe. :meth:`WorkerClient.submit`
returns a :class:`Job` whose :meth:`Job.poll` never blocks, for a modal operator's timer;
:meth:`Job.wait` blocks, for scripts. Every failure is a :class:`WorkerError` whose message
is one sentence for the user.
"""

from __future__ import annotations

import base64
import collections
import errno
import itertools
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PROTOCOL_VERSION", "CATEGORY_NAMES", "DETAIL_VERTICES", "DEFAULT_DETAIL", "DELAY_ENV", "STARTUP_TIMEOUT_S",
    "HELLO_TIMEOUT_S", "TEMP_PREFIX", "WorkerError", "check_model", "sweep_stale_temp", "Candidate", "WorkerResult",
    "Job", "WorkerClient", "get_client", "shutdown_all", "write_print_file",
]

PROTOCOL_VERSION = 1
"""Must equal ``recon_core.io.worker.PROTOCOL_VERSION`` (a test checks)."""

CATEGORY_NAMES = (
    "airplane", "bench", "cabinet", "car", "chair", "display", "lamp",
    "loudspeaker", "rifle", "sofa", "table", "telephone", "watercraft",
)
"""``recon_core.network.categories.CATEGORIES`` names, copied so Blender never imports recon_core (a test checks)."""

DETAIL_VERTICES = {"low": 642, "medium": 2562, "high": 10242}
DEFAULT_DETAIL = "medium"
"""``recon_core.mesh.detail``'s levels (name -> output vertex count) and default, copied like ``CATEGORY_NAMES``."""
MIN_HEIGHT_MM, MAX_HEIGHT_MM = 0.1, 100_000.0
"""The real heights the worker accepts (``recon_core.io.inference``'s ``MIN_HEIGHT_MM`` and ``MAX_HEIGHT_MM``),
copied likewise."""

MAX_PIXELS = 64_000_000
"""The most pixels a picture may have (recon_core.io.image.MAX_PIXELS; a test keeps the two equal): the add-on refuses
a larger Blender image before making its copy for the worker."""

DELAY_ENV = "RECON_WORKER_DELAY_S"
"""Tests only: when set in this process, requests ask the worker to sleep this many seconds first."""
STARTUP_TIMEOUT_S = 300.0
"""The least time a cold worker is given to start and load the model (the time-out when it is longer): a request's
own time-out counts from the model loaded (the worker's ``ready``), so a time-out shorter than a cold start does
not kill every new worker before it can answer."""

HELLO_TIMEOUT_S = 60.0
"""The most time an interpreter is given to greet as the worker (its ``hello``, sent as soon as Python has started,
before the model loads): a program that is not the worker is stopped then, not after :data:`STARTUP_TIMEOUT_S`."""
_STRAY_LIMIT = 20
"""Lines of stdout that are no protocol message before the worker's ``hello`` (the worker sends nothing else there)
after which the program is taken not to be the worker and stopped."""

_PUMP_BATCH = 1000
"""The most messages one poll handles; the rest wait for the next."""
_FLOOD_LIMIT = 100_000
"""A worker with more lines than this waiting to be handled floods its output (the worker sends a handful a second)
and is stopped, before the lines fill the memory."""

_A_BUG = "this is a bug: please report it with this sentence. Click Reconstruct again to retry."
"""How a sentence about a worker that broke the protocol ends."""

_STDERR_LINES = 200
_EOF = object()

TEMP_PREFIX = "reconstruct-from-image-"
"""The name every temporary file and folder of the add-on starts with (its copies of the pictures, the run's mask and
picture, an export's meshes), in the system's temporary folder."""
STALE_TEMP_S = 24 * 3600.0
"""A temporary file or folder of the add-on not written for this long is a killed Blender's (a run or an export
removes its own when it ends, and lasts minutes at most): :func:`sweep_stale_temp` removes it."""
_swept = False


def sweep_stale_temp(folder: str | None = None, now: float | None = None) -> list[str]:
    """Remove the add-on's temporary files and folders (:data:`TEMP_PREFIX`) last written over :data:`STALE_TEMP_S`
    ago in ``folder`` (the temporary folder): a Blender killed mid-run leaves its run's picture and mask there. Never
    fails (a folder it cannot read or an entry it cannot remove is left); returns the names removed."""
    try:
        folder = folder or tempfile.gettempdir()
        names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return []
    now = time.time() if now is None else now
    removed = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            stat = os.lstat(path)
            if now - stat.st_mtime < STALE_TEMP_S:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
        removed.append(name)
    return removed


def sweep_stale_temp_once() -> None:
    """:func:`sweep_stale_temp` the first time a Blender session makes a temporary file of the add-on."""
    global _swept
    if not _swept:
        _swept = True
        sweep_stale_temp()


class WorkerError(RuntimeError):
    """A failed reconstruction; ``str(err)`` is one sentence for the user."""


def temp_folder_sentence(err: OSError) -> str:
    """One sentence for an OSError writing the add-on's temporary files (a full disk, a folder missing or not
    writable), its mend chosen by the error."""
    try:
        folder = os.path.dirname(err.filename) if err.filename else tempfile.gettempdir()
    except OSError:  # no usable temporary folder at all
        folder = "the temporary folder"
    variable = "TEMP" if sys.platform == "win32" else "TMPDIR"
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        mend = "free some disk space there"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        mend = "make it writable"
    else:
        mend = "check that it exists and can be written"
    return (f"Cannot write a temporary file in {folder} ({err.strerror or err}); {mend}, or start Blender with "
            f"{variable} set to another folder, and try again.")


def _check_python(python: str) -> None:
    """Raise :class:`WorkerError` unless ``python`` is set and is a file."""
    if not python:
        raise WorkerError("No Python interpreter is set: choose one that has recon_core installed in the "
                          "add-on preferences (Edit > Preferences > Add-ons > Reconstruct from Image).")
    if os.path.isdir(python):
        inside = [p for p in (os.path.join(python, "bin", "python"), os.path.join(python, "bin", "python3"),
                              os.path.join(python, "Scripts", "python.exe"), os.path.join(python, "python.exe"))
                  if os.path.isfile(p)]
        example = f" ({inside[0]})" if inside else ""
        raise WorkerError(f"The Python interpreter {python} is a folder; choose the Python program inside it{example} "
                          "in the add-on preferences.")
    if not os.path.isfile(python):
        raise WorkerError(f"The Python interpreter {python} does not exist; choose one that has recon_core "
                          "installed in the add-on preferences.")


_MODEL_FIX = ("choose a model saved by training (NAME.safetensors with NAME.json beside it), or clear Model for the "
              "model shipped with recon_core")
"""The advice of every :func:`check_model` sentence."""


def check_model(model: str | None) -> None:
    """Check the add-on preferences' Model (an absolute path: a model's stem, its ``.json`` or its ``.safetensors``)
    as far as it can be without recon_core, so that the user reads about that setting, not about ``--model``.

    The rules are ``recon_core.io.weights``'s (``model_files``, ``check_model_files``): the stem is the path without
    ``.json`` / ``.safetensors``; ``STEM.json`` must be there and hold a ``"model"`` section (the object finder's has
    a ``"finder"`` one); ``STEM.safetensors`` must be beside it unless the JSON says ``"trained": false``; when it is
    there and the JSON's ``"model"`` section enables ``category_branch``, ``STEM.category.safetensors`` must be beside it
    too. A JSON that cannot be read is left to the worker, which says why (tests/test_worker.py checks that this
    refuses exactly what ``check_model_files`` refuses). None or empty: the shipped model, nothing to check.

    Raises:
        WorkerError: one sentence naming the Model setting, what is wrong and what to choose.
    """
    if not model:
        return
    where = f"The Model in the add-on preferences, {model},"
    if os.path.isdir(model):
        raise WorkerError(f"{where} is a folder; choose the model's NAME.safetensors file in it (NAME.json beside it), "
                          "or clear Model for the model shipped with recon_core.")
    root, suffix = os.path.splitext(model)
    stem = root if suffix in (".safetensors", ".json") else model
    config, weights = stem + ".json", stem + ".safetensors"
    if not os.path.isfile(config):
        found = "does not exist" if not os.path.exists(model) else f"has no {os.path.basename(config)} beside it"
        raise WorkerError(f"{where} {found}; {_MODEL_FIX}.")
    try:
        with open(config, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return  # the worker names what is wrong with it
    if not isinstance(meta, dict):
        return
    if "model" not in meta:
        what = "the object finder" if "finder" in meta else "not a reconstruction model"
        raise WorkerError(f"{where} is {what} (its {os.path.basename(config)} has no \"model\" section); {_MODEL_FIX}.")
    if meta.get("trained") is not False and not os.path.isfile(weights):
        raise WorkerError(f"{where} has no {os.path.basename(weights)} beside its {os.path.basename(config)}; restore "
                          f"the file or {_MODEL_FIX}.")
    branch = stem + ".category.safetensors"
    section = meta["model"]
    if (isinstance(section, dict) and section.get("category_branch") and os.path.isfile(weights)
            and not os.path.isfile(branch)):
        raise WorkerError(f"{where} has a category branch (its {os.path.basename(config)} says category_branch) but no "
                          f"{os.path.basename(branch)} beside it; restore the file or {_MODEL_FIX}.")


_CHOOSE_PYTHON = "choose the Python interpreter that has recon_core installed in the add-on preferences"
"""The end of every sentence about a Python setting that is not the worker's."""
_SOURCE_FOLDER = "the seed-recon source folder"
"""Where recon_core's sources are, in messages that cannot name the folder."""


def _recon_core_missing(stderr: str) -> bool:
    """Whether a child's stderr says the recon_core package itself cannot be imported."""
    return "No module named 'recon_core'" in stderr or "No module named recon_core\n" in stderr + "\n"


def _not_installed(python: str, repo: str | None) -> str:
    where = repo or _SOURCE_FOLDER
    return f"recon_core is not installed in {python}; install it with {python} -m pip install -e {where}."


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without Blender's Python settings, for a recon_core child process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **(extra or {}))
    return env


def write_print_file(python: str, objects: list[tuple[str, Any, Any]], path: str, timeout_s: float = 120.0,
                     repo: str | None = None) -> str:
    """Write ``objects`` as one 3MF or STL file (by ``path``'s extension), on the build plate, with ``PYTHON -m
    recon_core.io.export`` (no torch, no model).

    Args:
        python: interpreter with recon_core installed.
        objects: ``(name, verts (V, 3) float millimetres +Z up, faces (F, 3) int)``, one 3MF object each (an STL
            holds them joined).
        path: the ``.3mf`` or ``.stl`` file; written through a temporary file and a rename, so a failure leaves no
            file.
        repo: the recon_core source folder the sentences name (as :func:`get_client`'s); None: "the seed-recon
            source folder".

    Returns:
        The writer's summary ("wrote PATH (N objects)"), then its lines "warning: NAME is not printable as it is:
        ..." and "note: ..." (thin walls, a size larger than most printers) at the size written
        (``python -m recon_core.io.export``'s output).

    Raises:
        WorkerError: one sentence for the user (no interpreter, recon_core missing, a write that failed).
    """
    import numpy as np  # Blender ships numpy; imported here so the worker protocol alone does not need it

    _check_python(python)
    sweep_stale_temp_once()
    try:
        folder = tempfile.mkdtemp(prefix=TEMP_PREFIX + "export-")
    except OSError as err:
        raise WorkerError(temp_folder_sentence(err)) from None
    try:
        meshes = os.path.join(folder, "meshes.npz")
        arrays = {"names": np.array([name for name, _, _ in objects])}
        for i, (_, verts, faces) in enumerate(objects):
            arrays[f"verts_{i}"] = np.asarray(verts, dtype=np.float64)
            arrays[f"faces_{i}"] = np.asarray(faces, dtype=np.int64)
        try:
            np.savez(meshes, **arrays)
        except OSError as err:
            raise WorkerError(temp_folder_sentence(err)) from None
        try:
            proc = subprocess.run([python, "-m", "recon_core.io.export", meshes, os.path.abspath(path)],
                                  capture_output=True, text=True, encoding="utf-8", errors="replace",
                                  cwd=folder, env=_child_env(), timeout=timeout_s,  # its own group, as the worker's
                                  creationflags=(getattr(subprocess, "CREATE_NO_WINDOW", 0)
                                                 | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                                 if sys.platform == "win32" else 0),
                                  start_new_session=sys.platform != "win32")
        except subprocess.TimeoutExpired:
            raise WorkerError(f"Writing {path} took longer than {timeout_s:.0f} s; try fewer or smaller objects.") from None
        except OSError as err:
            raise WorkerError(f"Cannot start {python} ({err.strerror or err}); choose another interpreter "
                              "in the add-on preferences.") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        if _recon_core_missing(proc.stderr):
            raise WorkerError(_not_installed(python, repo))
        if "No module named recon_core.io.export" in proc.stderr:
            raise WorkerError(f"The recon_core in {python} predates 3MF export; update it (git pull, then "
                              f"{python} -m pip install -e {repo or _SOURCE_FOLDER}).")
        if "the extension must be .3mf." in proc.stderr and path.lower().endswith(".stl"):
            raise WorkerError(f"The recon_core in {python} predates writing STL files for the add-on; update it (git "
                              f"pull, then {python} -m pip install -e {repo or _SOURCE_FOLDER}).")
        if lines and lines[-1].startswith("error: "):  # the writer's own sentence
            last = lines[-1].removeprefix("error: ")
            raise WorkerError(last if last.endswith(".") else f"Cannot write {path}: {last}.")
        # not the writer's answer (a program that is not Python, or a Python that failed before the writer ran)
        said = f": {lines[-1].strip()}" if lines else ""
        raise WorkerError(f"{python} did not write {path} ({_exit_description(proc.returncode)}{said}); "
                          f"{_CHOOSE_PYTHON}.")
    written = proc.stdout.strip()
    if not written.startswith("wrote ") or not os.path.isfile(path):  # /bin/true, /bin/echo: exit 0, nothing written
        said = f" (it printed: {written.splitlines()[0][:120]})" if written else " (it printed nothing)"
        raise WorkerError(f"{python} did not write {path}{said}; {_CHOOSE_PYTHON}.")
    return written


@dataclass
class Candidate:
    """One of the plausible shapes of a result (:attr:`WorkerResult.candidates`).

    Attributes:
        verts: (V, 3) float32, output frame; mm when ``height_mm`` was given.
        faces: (F, 3) int32 triangles, outward-facing.
        report: the printable check's fields plus ``ok`` and ``summary``.
        confidence: a share in (0, 1], falling in rank order; None when the model gave no confidence.
        likelihood: the confidence in words against the likeliest candidate ("the likeliest", "about as likely",
            "less likely", "much less likely"); "" without a confidence (or from a worker that predates them).
        category: category used (given or predicted).
        notes: human-readable notes about this shape.
        thin_faces: (K,) int32 indices of the faces whose walls are too thin to print, when a note names them; else
            None (also from a worker that predates them).
        camera: the picture's camera as the shape was fitted to it (:func:`_camera`: ``R``, ``T``, ``K``, ``width``,
            ``height``), or None (a model without a shape bank, or a worker that predates it).
    """

    verts: Any
    faces: Any
    report: dict[str, Any]
    confidence: float | None
    category: str
    notes: list[str] = field(default_factory=list)
    thin_faces: Any = None
    camera: dict[str, Any] | None = None
    likelihood: str = ""


@dataclass
class WorkerResult:
    """One reconstruction as the worker sent it.

    Attributes:
        verts: (V, 3) float32, output frame (+Y up, camera on +Z); mm when ``height_mm`` was given.
        faces: (F, 3) int32 triangles, outward-facing.
        category: category used (given or predicted).
        report: the printable check's fields plus ``ok`` and ``summary``.
        notes: human-readable notes.
        timings: seconds per worker stage.
        seconds: seconds from submitting the request to receiving the result.
        mask_path: the object mask the worker wrote where the request asked (8-bit grey PNG of the
            picture's size, 255 = object), or None when none was asked for or it could not be written.
        mask_unsure: the object finder found that mask and is unsure of it (the user should check it).
        candidates: the plausible shapes, the likeliest first, the first being this result's own mesh;
            never empty: a worker that sent no list (one shape asked for, or a worker that predates
            candidates) gives the one entry of this result, with no confidence.
        thin_faces: as :attr:`Candidate.thin_faces`, of this result's mesh.
        camera: as :attr:`Candidate.camera`, of this result's mesh.
        picture_path: the picture as the worker read it, where the request asked (a JPEG, upright, at most 2,048
            pixels along its longer side), or None when none was asked for, it could not be written, or the worker
            predates it.
    """

    verts: Any
    faces: Any
    category: str
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    mask_path: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    mask_unsure: bool = False
    thin_faces: Any = None
    camera: dict[str, Any] | None = None
    picture_path: str | None = None


def _decode(packed: dict[str, Any]):
    import numpy as np

    return np.frombuffer(base64.b64decode(packed["data"]), dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])


def _decode_mesh(message: dict[str, Any]):
    """``(verts, faces)`` of a message holding ``verts`` and ``faces`` arrays.

    Raises:
        KeyError, ValueError, TypeError: a field is missing or the arrays are not (V, 3) and (F, 3).
    """
    verts, faces = _decode(message["verts"]), _decode(message["faces"])
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"shapes {verts.shape} and {faces.shape}")
    return verts, faces


def _thin_faces(message: dict[str, Any], faces):
    """The (K,) int32 ``thin_faces`` of a message whose mesh has ``faces`` (F, 3), or None when it has none.

    Raises:
        ValueError: not a list of face indices of that mesh.
    """
    packed = message.get("thin_faces")
    if packed is None:
        return None
    thin = _decode(packed)
    if thin.ndim != 1 or thin.dtype.kind not in "iu":
        raise ValueError(f"thin faces of shape {thin.shape} and type {thin.dtype}, not a list of face indices")
    if len(thin) and (thin.min() < 0 or thin.max() >= len(faces)):
        raise ValueError(f"thin faces outside the mesh's {len(faces)} faces")
    return thin


MAX_PICTURE_SIDE = 1 << 20
"""The largest picture side, in pixels, a camera may claim (far beyond what the worker reads)."""


def _camera(message: dict[str, Any]) -> dict[str, Any] | None:
    """The ``camera`` of a message as arrays (``R`` (3, 3), ``T`` (3,), ``K`` (3, 3) float64; ``width``, ``height``
    ints), or None when it has none.

    Raises:
        ValueError, TypeError, KeyError: not a camera: shapes, numbers that are not finite, a rotation that is not one,
            a focal length that is not positive, or a picture size that is not a positive whole number.
    """
    import numpy as np

    packed = message.get("camera")
    if packed is None:
        return None
    R, T, K = (np.array(packed[key], dtype=np.float64) for key in ("R", "T", "K"))
    if R.shape != (3, 3) or T.shape != (3,) or K.shape != (3, 3):
        raise ValueError(f"a camera of shapes {R.shape}, {T.shape} and {K.shape}")
    if not (np.isfinite(R).all() and np.isfinite(T).all() and np.isfinite(K).all()):
        raise ValueError("a camera with numbers that are not finite")
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
        raise ValueError("a camera whose R is not a rotation")
    if not K[0, 0] > 0 or abs(K[1, 1] - K[0, 0]) > 1e-6 * K[0, 0] or np.abs(K[2] - [0.0, 0.0, 1.0]).max() > 0:
        raise ValueError("a camera whose K is not a pinhole's with square pixels")
    width, height = packed["width"], packed["height"]
    if not all(type(side) is int and 0 < side <= MAX_PICTURE_SIDE for side in (width, height)):
        raise ValueError(f"a camera of {width!r} x {height!r} pixels")
    return {"R": R, "T": T, "K": K, "width": width, "height": height}


def _candidates(message: dict[str, Any], verts, faces) -> list[Candidate]:
    """The candidates of a ``result`` message; the result's own mesh alone when it has no ``candidates`` list.

    Raises:
        KeyError, ValueError, TypeError: a malformed entry.
    """
    entries = message.get("candidates")
    if entries is None:
        return [Candidate(verts, faces, dict(message.get("report") or {}), None, str(message.get("category", "")),
                          list(message.get("notes") or []), _thin_faces(message, faces), _camera(message))]
    if not isinstance(entries, list) or not entries:
        raise ValueError("an empty or malformed candidates list")
    out = []
    for entry in entries:
        c_verts, c_faces = _decode_mesh(entry)
        confidence = entry.get("confidence")
        out.append(Candidate(c_verts, c_faces, dict(entry.get("report") or {}),
                             None if confidence is None else float(confidence), str(entry.get("category", "")),
                             list(entry.get("notes") or []), _thin_faces(entry, c_faces), _camera(entry),
                             str(entry.get("likelihood") or "")))
    return out


_STOP_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, name)}
"""Signals another program (a terminal, kill -INT) stops a worker with, unlike the kernel's SIGKILL when memory runs
out, or SIGTERM, which a low-memory daemon (earlyoom) sends first."""


_WINDOWS_CTRL_C = 0xC000013A
"""STATUS_CONTROL_C_EXIT: a Windows process ended by Ctrl+C or Ctrl+Break sent to it, as SIGINT ends one elsewhere."""
_WINDOWS_STATUS = {0xC0000005: "an access violation", 0xC00000FD: "a stack overflow", 0xC0000017: "out of memory",
                   0xC000012D: "out of memory (the page file is full)", 0xC0000409: "a crash",
                   _WINDOWS_CTRL_C: "Ctrl+C"}
"""What the Windows status codes a process most often ends with mean (an NTSTATUS, 0xC0000000 and up)."""


def _exit_description(code: int | None) -> str:
    """How a worker ended, for a sentence: "killed by SIGKILL", "exit code 1", or on Windows, where a crash is an
    exit code of 0xC0000000 and up, that code in hexadecimal, as Windows' documents give it, and what it means."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    if code >= 0xC0000000:
        meaning = _WINDOWS_STATUS.get(code)
        return f"exit code 0x{code:08X}" + (f", {meaning}" if meaning else "")
    return f"exit code {code}"


class Job:
    """One reconstruction request in flight. Poll it from a timer, or wait for it."""

    def __init__(self, client: "WorkerClient", request_id: str, timeout_s: float, object_mask: str | None = None):
        self.client = client
        self.id = request_id
        self.timeout_s = timeout_s
        self.object_mask = object_mask  # the user's mask this request sends: the result must say it was used
        self.started = time.perf_counter()
        self.clock_from = self.started if client.ready is not None else None  # the time-out's start: the model loaded
        self.stage = "loading the model" if client.ready is None else "queued"
        self.fraction = 0.0
        self.result: WorkerResult | None = None
        self.error: WorkerError | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def poll(self, wait_s: float = 0.0) -> bool:
        """Process what the worker sent so far; True once finished.

        Args:
            wait_s: with nothing received yet, wait this long at most for the worker's next message (0: never
                block, as a timer's callback must not); it returns as soon as one arrives.

        Raises:
            WorkerError: the worker reported an error, died, or the time-out passed (the worker is then killed): the
                time-out counts from the model loaded; a cold worker has :data:`STARTUP_TIMEOUT_S` at least to start
                and load the model, and the message then names that stage.
        """
        if not self.done:
            self.client._pump(wait_s)
        if not self.done and self.timeout_s:
            if self.clock_from is None:
                limit = max(self.timeout_s, STARTUP_TIMEOUT_S)
                overdue = HELLO_TIMEOUT_S < limit and self.client._greeting_overdue()  # then this job failed
                if not overdue and self.elapsed > limit:
                    self.client.kill()
                    self._fail(f"Starting the worker and loading the model took longer than {limit:g} s and was "
                               "stopped; check the Python and Model settings in the add-on preferences, or raise the "
                               "time-out there if the computer is busy.")
            elif time.perf_counter() - self.clock_from > self.timeout_s:
                self.client.kill()
                self._fail(f"The reconstruction took longer than {self.timeout_s:g} s (after the model was loaded) "
                           "and was stopped; raise the time-out in the add-on preferences or choose a lower detail "
                           "level or fewer candidates.")
        if self.error is not None:
            raise self.error
        return self.result is not None

    def wait(self, poll_s: float = 0.1) -> WorkerResult:
        """Block until the result arrives (woken by each message, checking the time-out at least every ``poll_s``);
        raises :class:`WorkerError` like :meth:`poll`."""
        while not self.poll(poll_s):
            pass
        return self.result

    def cancel(self) -> None:
        """Stop the request by killing the worker (torch cannot be interrupted); the next request restarts it."""
        if not self.done:
            self.client.kill()
            self._fail("The reconstruction was cancelled.")

    def _fail(self, message: str) -> None:
        if not self.done:
            self.error = WorkerError(message)
        if self.client.job is self:
            self.client.job = None

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "progress":
            self.stage = str(message.get("stage", self.stage))
            fraction = message.get("fraction", self.fraction)
            if isinstance(fraction, (int, float)) and math.isfinite(fraction):  # a broken worker's null or "half": kept
                self.fraction = min(max(float(fraction), 0.0), 1.0)
        elif kind == "error":
            self._fail(str(message.get("message") or "The worker reported an unknown error."))
        elif kind == "result":
            try:
                verts, faces = _decode_mesh(message)
                candidates = _candidates(message, verts, faces)
                thin_faces = _thin_faces(message, faces)
                camera = _camera(message)
            except (KeyError, ValueError, TypeError, AttributeError) as err:
                self._fail(f"The worker sent a malformed mesh ({err}); update recon_core and the add-on together.")
                return
            if self.object_mask is not None and message.get("object_mask") != self.object_mask:
                self._fail("The reconstruction worker did not use the object mask (its recon_core predates masks); "
                           "update recon_core and the add-on together.")
                return
            self.result = WorkerResult(
                verts=verts, faces=faces, category=str(message.get("category", "")),
                report=dict(message.get("report") or {}), notes=list(message.get("notes") or []),
                timings=dict(message.get("timings") or {}), seconds=self.elapsed,
                mask_path=str(message["mask_path"]) if message.get("mask_path") else None, candidates=candidates,
                mask_unsure=bool(message.get("mask_unsure", False)), thin_faces=thin_faces, camera=camera,
                picture_path=str(message["picture_path"]) if message.get("picture_path") else None,
            )
            self.stage, self.fraction = "done", 1.0
            self.client.job = None


class WorkerClient:
    """One worker process: ``python -m recon_core.io.worker [--model MODEL]``.

    Args:
        python: interpreter with recon_core installed.
        model: model stem or file for ``--model``; empty or None for the shipped default.
        repo: source folder of recon_core, only used in the "not installed" message.
        env: extra environment variables for the worker.
    """

    def __init__(self, python: str, model: str | None = None, repo: str | None = None,
                 env: dict[str, str] | None = None):
        self.python = python
        self.model = model or None
        self.repo = repo or None
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.hello: dict[str, Any] | None = None
        self.ready: dict[str, Any] | None = None
        self.started: float | None = None  # time.perf_counter() at the process's start
        self.stray: list[str] = []  # stdout lines before the hello that were no protocol message
        self.job: Job | None = None
        self.failure: str | None = None
        self._messages: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._ids = itertools.count(1)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.python, self.model)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.failure is None

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done

    def start(self) -> None:
        """Start the process (returns at once; the model loads in the background).

        Raises:
            WorkerError: no interpreter set, not found, or not startable.
        """
        _check_python(self.python)
        command = [self.python, "-m", "recon_core.io.worker"] + (["--model", self.model] if self.model else [])
        env = _child_env(self.extra_env)
        try:
            # its own process group: a Ctrl-C in the terminal Blender runs in (background Blender takes the first as a
            # break) killed the worker mid-run; it still ends when Blender does, at the end of its input
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=tempfile.gettempdir(), env=env, text=True, encoding="utf-8", errors="replace", bufsize=1,
                creationflags=(getattr(subprocess, "CREATE_NO_WINDOW", 0)
                               | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if sys.platform == "win32" else 0),
                start_new_session=sys.platform != "win32",
            )
        except OSError as err:
            raise WorkerError(f"Cannot start {self.python} ({err.strerror or err}); choose another interpreter "
                              "in the add-on preferences.") from None
        self.started = time.perf_counter()
        threading.Thread(target=self._read_stdout, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.process.stderr,), daemon=True).start()

    def submit(self, image: str, *, category: str | None = None, detail: str | None = None,
               height_mm: float | None = None, smooth: bool = True, timeout_s: float = 300.0,
               mask_path: str | None = None, candidates: int = 1, object_mask: str | None = None,
               solid: bool = False, upright: bool = True, picture_path: str | None = None) -> Job:
        """Send one reconstruction request (starting the worker if needed); returns its :class:`Job`.

        ``detail``: "low", "medium" or "high" (:data:`DETAIL_VERTICES`), None for the model's default.
        ``mask_path``: where the worker writes the object mask it used (a PNG; the caller removes it).
        ``object_mask``: the user's mask of the object (a PNG of the picture's size or shape, white on the object), used
        instead of finding the object; None: the worker finds it.
        ``candidates``: how many plausible shapes to ask for (:attr:`WorkerResult.candidates`; fewer may come).
        ``solid``: fill the sealed hollow pockets inside the mesh (``recon-mesh --solid``; sent only when asked, so a
        request without it is what it was).
        ``upright``: stand the mesh on its base (``recon-mesh``'s default, and the worker's for a request without the
        field); False keeps it turned as the picture's camera saw it (``recon-mesh --as-seen``; sent only then).
        ``picture_path``: where the worker writes the picture as it read it, to be shown behind the mesh (a JPEG; the
        caller removes it; sent only when given).

        Raises:
            WorkerError: the worker cannot be started, or a request is already running.
        """
        if self.busy:
            raise WorkerError("A reconstruction is already running; wait for it to finish or press Esc to cancel it.")
        if self.process is None:
            self.start()
        elif not self.alive:
            raise WorkerError(self.failure or "The reconstruction worker has stopped; start a new one.")
        object_mask = os.path.abspath(object_mask) if object_mask else None
        job = Job(self, f"r{next(self._ids)}", timeout_s, object_mask)
        self.job = job
        request = {"type": "reconstruct", "version": PROTOCOL_VERSION, "id": job.id,
                   "image": os.path.abspath(image), "category": category or None, "detail": detail or None,
                   "height_mm": height_mm or None, "smooth": smooth,
                   "mask_path": os.path.abspath(mask_path) if mask_path else None, "candidates": int(candidates),
                   "object_mask": object_mask}
        if solid:
            request["solid"] = True
        if not upright:
            request["upright"] = False
        if picture_path:
            request["picture_path"] = os.path.abspath(picture_path)
        delay = float(os.environ.get(DELAY_ENV) or 0)
        if delay > 0:
            request["test_delay_s"] = delay
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # the worker is gone; _pump reads its end of output and says why
        return job

    def kill(self) -> None:
        """Kill the worker now (cancel, time-out); pending output is discarded."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.failure = self.failure or "The reconstruction worker was stopped."

    def close(self, timeout: float = 3.0) -> None:
        """Ask the worker to exit (close its stdin), kill it if it does not within ``timeout`` seconds."""
        if self.process is None:
            return
        if self.job is not None:
            self.job._fail("The reconstruction worker was shut down.")
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.failure = self.failure or "The reconstruction worker was shut down."

    def stderr_tail(self, lines: int = 3) -> str:
        """The last non-empty stderr lines, joined, for messages."""
        tail = [line.strip() for line in list(self._stderr) if line.strip()][-lines:]
        return " | ".join(tail)[-400:]

    # -- internals ---------------------------------------------------------------------------------

    def _read_stdout(self, stream) -> None:
        try:
            for line in stream:
                self._messages.put(line)
        except (OSError, ValueError):
            pass
        self._messages.put(_EOF)

    def _read_stderr(self, stream) -> None:
        try:
            for line in stream:
                self._stderr.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def _pump(self, wait_s: float = 0.0) -> None:
        """Handle the messages received so far, :data:`_PUMP_BATCH` at most (a call from Blender's timer returns even
        while a broken worker floods its output); with none yet, wait at most ``wait_s`` for the first."""
        waiting = self._messages.qsize()
        if waiting > _FLOOD_LIMIT and self.failure is None and self.hello is not None:
            self._give_up(f"The reconstruction worker flooded its output ({waiting:,} lines waiting) and was stopped; "
                          f"{_A_BUG}")
            return
        self._handle_batch(wait_s)
        waiting = self._messages.qsize()
        if waiting > _FLOOD_LIMIT and self.failure is None and self.hello is None:
            # before the greeting its first lines are read first, so a program printing text is named by what it
            # printed (the stray limit); only blank lines, which that limit does not count, get here
            self._give_up(self._not_the_worker(f"it floods its output: {waiting:,} lines waiting"))

    def _handle_batch(self, wait_s: float) -> None:
        """:meth:`_pump`'s handling of :data:`_PUMP_BATCH` messages at most."""
        for _ in range(_PUMP_BATCH):
            try:
                line = self._messages.get(timeout=wait_s) if wait_s > 0 else self._messages.get_nowait()
            except queue.Empty:
                return
            wait_s = 0.0  # then only what has already arrived
            if line is _EOF:
                self._on_exit()
                return
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if self.hello is None and not (isinstance(message, dict) and message.get("type") == "hello"):
                if line.strip():  # the worker greets first: anything before is another program's output
                    self._stderr.append(line.rstrip("\n"))
                    self.stray.append(line.strip())
                    if len(self.stray) >= _STRAY_LIMIT:
                        self._give_up(self._not_the_worker(f"it printed {self.stray[0][:60]!r} and more"))
                        return
                continue
            if message is None:
                self._stderr.append(line.rstrip("\n"))  # stray output: keep it for crash messages
                continue
            if not isinstance(message, dict):
                continue
            if message.get("version") != PROTOCOL_VERSION:
                self._give_up(f"The worker speaks protocol version {message.get('version')}, this add-on version "
                              f"{PROTOCOL_VERSION}; install matching versions of the add-on and recon_core.")
                return
            kind = message.get("type")
            if kind == "hello":
                self.hello = message
                if self.job is not None and not self.job.done:
                    self.job.stage = "loading the model"
            elif kind == "ready":
                self.ready = message
                if self.job is not None and not self.job.done and self.job.clock_from is None:
                    self.job.clock_from = time.perf_counter()  # the time-out counts from here
            elif kind == "error" and message.get("fatal"):
                self._give_up(str(message.get("message")))
            elif self.job is not None and message.get("id") == self.job.id:
                try:
                    self.job._handle(message)
                except Exception as err:  # noqa: BLE001 - a message this add-on cannot read: end the run, say why
                    self._give_up(f"The worker's message could not be read ({type(err).__name__}: {err}); {_A_BUG}")
                    return

    def _greeting_overdue(self) -> bool:
        """Give up on a process that has not greeted as the worker within :data:`HELLO_TIMEOUT_S` of its start, saying
        what it printed (or its last stderr line); whether it did."""
        if self.hello is not None or self.started is None or time.perf_counter() - self.started <= HELLO_TIMEOUT_S:
            return False
        printed = f", printing {self.stray[0][:60]!r}" if self.stray else ""
        tail = self.stderr_tail()
        self._give_up(f"{self.python} did not greet as the reconstruction worker within {HELLO_TIMEOUT_S:g} s{printed} "
                      "and was stopped" + (f" (its last output: {tail})" if tail and not printed else "")
                      + f"; {_CHOOSE_PYTHON}, or try again if the computer was busy.")
        return True

    def _not_the_worker(self, what: str) -> str:
        return f"{self.python} does not answer as the reconstruction worker ({what}); {_CHOOSE_PYTHON}."

    def _give_up(self, message: str) -> None:
        if self.failure is None:  # the first reason stays the one said
            self.failure = message
        message = self.failure
        if self.job is not None:
            self.job._fail(message)
        self.kill()

    def _on_exit(self) -> None:
        """The worker closed its stdout: it exited or was killed. Say why in one sentence."""
        code = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        time.sleep(0.05)  # let the stderr thread catch the last lines
        if self.failure is None:
            tail = self.stderr_tail()
            if self.hello is None:
                if _recon_core_missing("\n".join(self._stderr)):
                    message = _not_installed(self.python, self.repo)
                else:
                    # a program that is not the worker (/bin/true, a shell) ends before greeting: say what to choose
                    message = (f"The worker could not start with {self.python} ({_exit_description(code)}"
                               + (f": {tail}" if tail else "") + f"); {_CHOOSE_PYTHON}.")
            elif code is not None and (-code in _STOP_SIGNALS or code == _WINDOWS_CTRL_C):  # another program stopped it
                message = (f"The reconstruction worker was stopped by another program ({_exit_description(code)}). "
                           "Click Reconstruct again to start a new one.")
            else:
                message = (f"The reconstruction worker stopped unexpectedly ({_exit_description(code)})"
                           + (f"; last output: {tail}" if tail else "")
                           + ". Click Reconstruct again to start a new one; if it stops again, the computer may be "
                             "short of memory: close other programs, or choose a lower detail or fewer candidates.")
            self.failure = message
        if self.job is not None:
            self.job._fail(self.failure)


_CLIENTS: dict[tuple[str, str | None], WorkerClient] = {}
_LOCK = threading.Lock()


def get_client(python: str, model: str | None = None, repo: str | None = None,
               env: dict[str, str] | None = None) -> WorkerClient:
    """The warm worker for ``(python, model)``, or a new one (not yet started) if there is none alive.

    Workers for other settings are closed, so at most one model stays in memory.
    """
    key = (python, model or None)
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is not None and (client.alive or client.process is None):
            client.repo, client.extra_env = repo or None, dict(env or {})
            return client
        for other in _CLIENTS.values():
            other.close(timeout=1.0)
        _CLIENTS.clear()
        client = WorkerClient(python, model, repo, env)
        _CLIENTS[key] = client
        return client


def shutdown_all(timeout: float = 2.0) -> None:
    """Close every worker (add-on unregister, tests)."""
    with _LOCK:
        for client in list(_CLIENTS.values()):
            client.close(timeout=timeout)
        _CLIENTS.clear()
