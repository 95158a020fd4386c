"""A long-lived reconstruction process that a front end (the Blender add-on) talks to over stdin/stdout.

Run as ``python -m recon_core.io.worker [--model PATH]``. The worker loads the model once
and answers reconstruction requests until its stdin reaches end of file (or it gets a
``shutdown`` message), so the second request skips model loading. Torch only ever
runs here, never in the front end's process: a crash or out-of-memory kills the worker,
not Blender.

Protocol, version 1
-------------------
Every message is one line of UTF-8 JSON: an object with ``"type"`` and ``"version": 1``.
The worker writes messages to stdout only (anything else a library prints goes to
stderr, which is free-form log text for humans and crash reports).

Worker to client::

    {"type": "hello", "version": 1, "pid": 123, "python": "3.11.7", "recon_core": "/path/recon_core"}
        sent at once, before torch is imported: the interpreter and recon_core work.
    {"type": "ready", "version": 1, "model": "/path/models/default", "trained": false, "load_s": 2.1}
        the model is loaded; requests are served from now on (earlier ones wait in the pipe).
    {"type": "progress", "version": 1, "id": "r1", "stage": "fitting known shapes to the outline", "fraction": 0.25}
    {"type": "result", "version": 1, "id": "r1", "verts": ARRAY, "faces": ARRAY, "category": "chair",
     "category_probs": [13 floats], "report": {...}, "notes": ["..."], "timings": {"network": 0.4, ...},
     "mask_path": "/tmp/reconstruct-from-image-x/mask.png" or null, "mask_unsure": false,
     "object_mask": "/path/photo_mask.png" or null, "picture_path": "/tmp/reconstruct-from-image-x/picture.jpg" or null,
     "thin_faces": ARRAY, "camera": {"R": [[3 floats] x 3], "T": [3 floats], "K": [[3 floats] x 3], "width": 640,
     "height": 480},
     "candidates": [{"verts": ARRAY, "faces": ARRAY, "report": {...}, "confidence": 0.62, "category": "chair",
                     "notes": ["..."], "thin_faces": ARRAY, "camera": {...}}, ...]}
        ``candidates`` only when the request asked for several (below); ``thin_faces`` (the (K,) int32 indices of
        the faces whose walls are too thin to print, :attr:`recon_core.io.inference.Reconstruction.thin_faces`) only
        for a mesh whose thin walls a note names (since the forty-first session: optional, the version stays 1);
        ``camera`` (the picture's camera as the mesh was fitted to it, :attr:`recon_core.io.inference.Reconstruction.camera`:
        ``R``, ``T`` and ``K`` of :class:`recon_core.mesh.camera.Camera`, OpenCV axes, the world being the mesh's frame
        and units as sent, ``K`` in the decoded picture's pixels of ``width`` x ``height``) only for a mesh that has
        one (a shape-bank model's; since the forty-second session: optional, the version stays 1).
    {"type": "error", "version": 1, "id": "r1" or null, "kind": "ImageError", "message": "...", "fatal": false}
        ``message`` is one sentence for the user; ``fatal`` means the worker exits right after.

Client to worker::

    {"type": "reconstruct", "version": 1, "id": "r1", "image": "/path/photo.png",
     "category": null, "detail": "medium", "height_mm": 120.0, "smooth": true, "solid": false, "upright": true,
     "mask_path": "/tmp/reconstruct-from-image-x/mask.png",
     "picture_path": "/tmp/reconstruct-from-image-x/picture.jpg", "candidates": 3,
     "object_mask": "/path/photo_mask.png"}
        ``category``, ``detail`` and ``height_mm`` may be null (automatic, the model's default, unscaled);
        ``height_mm`` is a number of millimetres from 0.1 to 100,000 (:mod:`recon_core.io.inference`'s bounds),
        ``smooth`` true or false (absent: true), ``solid`` true or false (absent: false; fill the sealed hollow
        pockets inside the mesh, ``recon-mesh --solid``), ``upright`` true or false (absent: true, the mesh stood
        on its base as ``recon-mesh`` stands it, since 2026-12-07; before, every mesh came as seen; false keeps it
        turned as the picture's camera saw it, ``recon-mesh --as-seen``); a field of another type is answered with a
        ``ProtocolError``, a value out of range with a ``ValueError``, before any work;
        ``detail`` is "low", "medium" or "high" (:mod:`recon_core.mesh.detail`); ``mask_path`` may be null
        or absent (no mask is written); ``candidates`` may be null or absent (one shape); ``object_mask`` may be
        null or absent (the model finds the object), else it names the user's mask of the object, read as
        ``recon-mesh --mask`` reads it (:func:`recon_core.io.image.load_mask`: the picture's size or shape, white on the
        object, or a cut-out's transparency), which takes the place of the picture's alpha. The result's
        ``object_mask`` repeats it: a client that sent one and gets no such field back is talking to a worker that
        predates masks, which would have found the object itself (the add-on's client then fails the job).
    {"type": "shutdown", "version": 1}          (or simply close stdin)

``ARRAY`` is ``{"dtype": "<f4" | "<i4", "shape": [n, 3], "data": BASE64}``: the array's
little-endian float32 (vertices) or int32 (faces) bytes, base64-encoded. ``verts`` are in
the output frame (+Y up, camera on +Z; :mod:`recon_core.mesh.camera`), in millimetres when
``height_mm`` was given, else in model units (bounding-box diagonal about 1). ``report``
holds the fields of :class:`recon_core.mesh.printable.PrintableReport` plus ``"ok"`` and
``"summary"``.

The object mask: when the request names a ``mask_path``, the worker writes the mask it used
there before it sends the result (:func:`recon_core.io.image.save_mask`, the same file as
``recon-mesh --save-mask``: an 8-bit grey PNG of the picture file's size, 255 = object,
through a temporary file and a rename), and the result's ``mask_path`` repeats the path. It
is null when no mask was asked for or the write failed; a note then says why, and the mesh
is sent all the same. The file belongs to the client, which removes it. ``mask_unsure`` is true when the object
finder found that mask and is unsure of it (:attr:`recon_core.io.inference.Reconstruction.mask_unsure`): the
front end should ask the user to check it. Both fields are
optional, so the version stays 1: a worker that predates them answers without a mask.

The picture as read: when the request names a ``picture_path`` (since the forty-second session; optional, the
version stays 1), the worker writes there, before it sends the result, the picture as it read it, for the front end
to show behind the mesh through the result's ``camera`` (:func:`recon_core.io.image.shown_picture`: upright by its EXIF orientation, in
any format the worker reads, a cut-out's transparent pixels white, at most ``SHOWN_SIDE`` pixels along its longer
side, in the decoded picture's proportions), a JPEG through a temporary file and a rename; the result's
``picture_path`` repeats the path, or is null (with a note) when it could not be written. The file belongs to the
client.

Candidates: a request with ``"candidates": K`` (a whole number, at least 1) asks for up to K plausible
shapes, the likeliest first (:meth:`recon_core.io.inference.Reconstructor.reconstruct_candidates`). The
answer is still one ``result``: its own fields are the first candidate's, exactly as without the field (so a
client that ignores ``candidates`` gets the likeliest shape), and, when K > 1, its ``candidates`` list
holds every candidate, the first included, each with its mesh, printable ``report`` (as above), ``confidence``
(a share in (0, 1], falling in rank order; null for a model without a shape bank), ``category`` and ``notes``.
The list may be shorter than K (the shape bank holds fewer models; the result's notes then say so). A model
without a shape bank gives one shape per picture: it answers a request for K > 1 with that one shape, a
one-entry list and a note saying why, not with an error, so a front end whose setting asks for several by
default still works with such a model (``recon-mesh --candidates K`` refuses instead: there the user typed
the option). K = 1, null or absent gives no list. A K that is not a whole number of at least 1 is answered
with a ``ValueError`` error. The field is optional, so the version stays 1; a worker that predates it
ignores it and answers with one shape and no list.

Detail levels: ``detail`` replaced a raw ``"vertices": 642 | 2562 | 10242``. The worker still reads
``vertices`` when ``detail`` is null or absent, so an add-on that predates the levels keeps working;
a request with both is answered with a ``ValueError`` error, as is an unknown level. The field is
new but optional, so the version stays 1; a worker that predates it ignores ``detail`` and gives
the model's default level.

A model whose files change while the worker is warm (a new ``models/default``, a retrained model saved over the old
one) is loaded again before the next request, with a progress message saying so; files that cannot be loaded then
answer that request with an error, and the next request tries again.

Cancelling: a running reconstruction cannot be interrupted inside torch, so a client
that wants to cancel kills the worker and starts a new one for the next request.

A request may carry ``"test_delay_s"``: the worker sleeps that many seconds before
reconstructing, so tests can observe a slow request. Clients set it only from the
``RECON_WORKER_DELAY_S`` environment variable (:data:`DELAY_ENV`), for tests.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import time
from typing import IO, Any

__all__ = ["PROTOCOL_VERSION", "DELAY_ENV", "encode_array", "decode_array", "serve", "main"]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
"""Version of the message format; both sides refuse messages of another version."""
DELAY_ENV = "RECON_WORKER_DELAY_S"
"""Environment variable of the *client's* process (tests only): seconds the worker sleeps before each reconstruction."""


def encode_array(array, dtype: str) -> dict[str, Any]:
    """Pack an array as ``{"dtype", "shape", "data"}`` with ``data`` the base64 of its ``dtype`` bytes."""
    import numpy as np

    arr = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    return {"dtype": dtype, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(packed: dict[str, Any]):
    """Inverse of :func:`encode_array`; returns a numpy array."""
    import numpy as np

    return np.frombuffer(base64.b64decode(packed["data"]), dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready Python values (numpy scalars and arrays, tuples, dataclasses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _report_dict(report: Any) -> dict[str, Any]:
    out = _plain(report)
    if not isinstance(out, dict):
        out = {"value": out}
    out["ok"] = bool(report.ok)
    out["summary"] = str(report.summary())
    return out


class _Channel:
    """Writes protocol messages, one JSON line each, to the real stdout."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def send(self, type_: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"type": type_, "version": PROTOCOL_VERSION, **fields}) + "\n")
        self.stream.flush()

    def error(self, request_id: str | None, kind: str, message: str, fatal: bool = False) -> None:
        self.send("error", id=request_id, kind=kind, message=message, fatal=fatal)


def _handle_request(channel: _Channel, reconstructor, request: dict[str, Any]) -> None:
    from recon_core.io.image import ImageError
    from recon_core.io.inference import MAX_HEIGHT_MM, MIN_HEIGHT_MM

    rid = request.get("id")
    started = time.perf_counter()
    try:
        delay = _field(request, "test_delay_s", (int, float), "a number of seconds") or 0
        if not delay < 3600:  # infinite or NaN: a test's sleep would overflow or never end
            raise _BadRequest(f"The request's test_delay_s must be under an hour, got {delay!r}.")
        if delay > 0:
            channel.send("progress", id=rid, stage="waiting (test delay)", fraction=0.0)
            time.sleep(delay)
        image = request.get("image")
        if image is None:
            raise _BadRequest("The request lacks the field 'image' (the picture file's path).")
        if not isinstance(image, str) or not image:
            raise _BadRequest(f"The request's image must be the picture file's path, got {image!r}.")
        height = _field(request, "height_mm", (int, float), "a number of millimetres")
        if height is not None and not MIN_HEIGHT_MM <= height <= MAX_HEIGHT_MM:  # NaN fails too
            raise ValueError(f"height_mm must be a number of millimetres from {MIN_HEIGHT_MM:g} to "
                             f"{MAX_HEIGHT_MM:,.0f} (or null: unscaled), got {height!r}.")
        smooth = _field(request, "smooth", bool, "true or false")
        kwargs = dict(category=_field(request, "category", str, "a category name") or None,
                      vertices=_requested_vertices(request), height_mm=None if height is None else float(height),
                      smooth=True if smooth is None else smooth,
                      solid=bool(_field(request, "solid", bool, "true or false")),
                      upright=_field(request, "upright", bool, "true or false") is not False)
        mask_path = _field(request, "mask_path", str, "a file path") or None
        picture_path = _field(request, "picture_path", str, "a file path") or None
        object_mask = _field(request, "object_mask", str, "a file path") or None
        count = _requested_candidates(request)
        channel.send("progress", id=rid, stage="opening the picture", fraction=0.05)

        def progress(stage: str, fraction: float) -> None:
            channel.send("progress", id=rid, stage=stage, fraction=round(fraction, 3))

        results, picture = _reconstruct(reconstructor, image, count, kwargs, object_mask, progress)
    except _BadRequest as err:
        channel.error(rid, "ProtocolError", str(err))
        return
    except ImageError as err:
        channel.error(rid, "ImageError", str(err))
        return
    except ValueError as err:
        channel.error(rid, "ValueError", str(err))
        return
    except Exception as err:  # noqa: BLE001 - the worker must answer, not die
        log.exception("reconstruction failed")
        channel.error(rid, "InternalError", f"The reconstruction failed unexpectedly ({type(err).__name__}: {err}).")
        return
    result = results[0]
    notes = list(result.notes) + _count_notes(reconstructor, count, len(results))
    if mask_path is not None:
        mask_path = _write_mask(result.mask, image, str(mask_path), notes)
    if picture_path is not None:
        picture_path = _write_picture(picture, str(picture_path), notes)
    channel.send("progress", id=rid, stage="sending the mesh", fraction=0.95)
    timings = {k: round(v, 4) for k, v in result.timings.items()}
    timings["worker_total"] = round(time.perf_counter() - started, 4)
    extra = {} if count == 1 else {"candidates": [_candidate_dict(r) for r in results]}
    extra.update(_extras(result))
    channel.send(
        "result", id=rid,
        verts=encode_array(result.verts, "<f4"), faces=encode_array(result.faces, "<i4"),
        category=result.category, category_probs=_plain(result.category_probs),
        report=_report_dict(result.report), notes=notes, timings=timings, mask_path=mask_path,
        mask_unsure=bool(result.mask_unsure), object_mask=object_mask,
        **({"picture_path": picture_path} if "picture_path" in request else {}), **extra,
    )


class _BadRequest(Exception):
    """A request field of the wrong type: answered as a ``ProtocolError`` (the client's fault, not the user's)."""


def _field(request: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    """The request's ``name``, None when null or absent.

    Raises:
        _BadRequest: present and not of ``kind`` (``what`` names it for the message; true and false are not numbers).
    """
    value = request.get(name)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _BadRequest(f"The request's {name} must be {what} or null, got {value!r}.")
    return value


def _requested_candidates(request: dict[str, Any]) -> int:
    """How many candidate shapes a request asks for: its ``candidates``, 1 when null or absent.

    Raises:
        ValueError: not a whole number of at least 1.
    """
    count = request.get("candidates")
    if count is None:
        return 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"The request's candidates must be a whole number of at least 1, got {count!r}.")
    return count


def _reconstruct(reconstructor, image: str, count: int, kwargs: dict[str, Any], object_mask: str | None = None,
                 progress=None) -> tuple[list, tuple]:
    """The reconstructions of the picture file ``image`` (with the user's ``object_mask`` file in place of its alpha,
    when given): ``count`` candidates at most, the likeliest first (one when ``count`` is 1 or the model has
    no shape bank); the loader's notes come first in each one's notes, and a shape made ``height_mm`` tall that is
    larger than most printers gets a note (:func:`recon_core.io.notes.plate_note`; the add-on said it only at the
    export, while recon-mesh says it at once). ``progress(stage, fraction)`` is told of each stage
    (:meth:`recon_core.io.inference.Reconstructor.reconstruct_candidates`). Also returns the picture as it was read and
    its own alpha, ``(rgb, alpha)``, to be shown (:func:`_write_picture`)."""
    from recon_core.io.image import load_picture
    from recon_core.io.notes import output_size, plate_note

    rgb, alpha, notes, own = load_picture(image, object_mask, return_own_alpha=True)
    results = reconstructor.reconstruct_candidates(rgb, alpha, count if reconstructor.banked else 1,
                                                   source=str(image), progress=progress, **kwargs)
    for result in results:
        result.notes[:0] = notes
        if kwargs.get("height_mm") is not None and len(result.verts):
            note = plate_note(output_size(result.verts), "give a smaller --height-mm (the add-on's Height)")
            if note:
                result.notes.append(note)
    return results, (rgb, own)


def _write_picture(picture: tuple, path: str, notes: list[str]) -> str | None:
    """Write the picture ``(rgb, its own alpha or None)`` as it is shown (:func:`recon_core.io.image.shown_picture`)
    to ``path`` as a JPEG (quality 90), through a temporary file and a rename; returns ``path``, or None and a note
    when it cannot be written (the mesh is still sent)."""
    import io as _io

    from PIL import Image

    from recon_core.io.export import atomic_write_bytes
    from recon_core.io.image import shown_picture

    try:
        data = _io.BytesIO()
        Image.fromarray(shown_picture(*picture)).save(data, format="JPEG", quality=90)
        atomic_write_bytes(path, data.getvalue())
    except (OSError, ValueError, MemoryError) as err:
        log.warning("cannot write the picture to %s: %s", path, err)
        why = getattr(err, "strerror", None) or err
        notes.append(f"the picture could not be written to {path} for the add-on to show ({why})")
        return None
    return path


def _count_notes(reconstructor, asked: int, made: int) -> list[str]:
    """Notes for a result with fewer candidates than asked for: why there are fewer (nothing when as many)."""
    if made >= asked:
        return []
    if not reconstructor.banked:
        return [(f"this model gives one shape per picture, so you get 1 candidate, not {asked} (several need a "
                 "model with a shape bank)")]
    return [f"the model found {made} candidate shape{'s' if made != 1 else ''} for this picture, not {asked}"]


def _candidate_dict(result) -> dict[str, Any]:
    """One entry of a result's ``candidates``: the mesh, its printable report, confidence (and it in words against the
    likeliest, ``likelihood``), category and notes."""
    confidence = None if result.confidence is None else float(result.confidence)
    return {"verts": encode_array(result.verts, "<f4"), "faces": encode_array(result.faces, "<i4"),
            "report": _report_dict(result.report), "confidence": confidence, "likelihood": result.likelihood,
            "category": result.category, "notes": list(result.notes), **_extras(result)}


def _extras(result) -> dict[str, Any]:
    """A result's optional fields: ``thin_faces`` (ARRAY of its (K,) int32 face indices) when its walls were noted
    thin, ``camera`` (its picture's camera, :attr:`recon_core.io.inference.Reconstruction.camera`) when it has one."""
    import numpy as np

    extra: dict[str, Any] = {}
    faces = getattr(result, "thin_faces", None)
    if faces is not None:
        extra["thin_faces"] = encode_array(faces, "<i4")
    camera = getattr(result, "camera", None)
    if camera is not None:
        extra["camera"] = {"R": np.asarray(camera.R, dtype=float).tolist(),
                           "T": np.asarray(camera.T, dtype=float).tolist(),
                           "K": np.asarray(camera.K, dtype=float).tolist(),
                           "width": int(camera.width), "height": int(camera.height)}
    return extra


def _requested_vertices(request: dict[str, Any]) -> int | None:
    """The output vertex count a request asks for: its ``detail`` level's, else its legacy ``vertices``, else None.

    Raises:
        ValueError: an unknown level, or both fields given.
    """
    from recon_core.mesh.detail import vertices_for_detail

    detail, vertices = request.get("detail") or None, request.get("vertices") or None
    if detail is None:
        return vertices
    if vertices is not None:
        raise ValueError("The request gives both detail and the older vertices; send detail alone.")
    return vertices_for_detail(detail)


def _write_mask(mask, image: str, path: str, notes: list[str]) -> str | None:
    """Write the object mask to ``path`` (:func:`recon_core.io.image.save_mask`); returns ``path``, or None and a
    note when it cannot be written (the mesh is still sent)."""
    from recon_core.io.image import save_mask

    if mask is None:
        notes.append("no object mask was made for this picture")
        return None
    try:
        save_mask(mask, image, path)
    except Exception as err:  # noqa: BLE001 - Pillow's DecompressionBombError is no OSError: a note, never the end
        log.warning("cannot write the mask to %s: %s", path, err)
        why = getattr(err, "strerror", None) or err
        notes.append(f"the object mask could not be written to {path} ({why})")
        return None
    return path


def _model_stamp(model: str | None) -> tuple:
    """What the model's files are now (path, inode, change and modification times and size of each, None where
    absent; a file renamed over another, as a save does, is another inode): its settings,
    weights and category branch, and the object finder's, as :meth:`Reconstructor.from_file` reads them."""
    from recon_core.io.weights import branch_file, default_finder_path, default_model_path, model_files

    path = model or default_model_path()
    finder = default_finder_path()
    paths = [*model_files(path), branch_file(path), *(model_files(finder) if finder is not None else ())]
    stamp = []
    for file in paths:
        try:
            stat = os.stat(file)
        except OSError:
            stamp.append((str(file), None))
        else:
            stamp.append((str(file), stat.st_ino, stat.st_ctime_ns, stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


def serve(channel: _Channel, requests: IO[str], model: str | None) -> int:
    """Greet, load the model, then answer requests until EOF or ``shutdown``; returns the exit code."""
    import recon_core

    channel.send("hello", pid=os.getpid(), python=sys.version.split()[0], recon_core=list(recon_core.__path__)[0])
    started = time.perf_counter()
    try:
        from recon_core.io.inference import Reconstructor
        from recon_core.io.weights import WeightsError
    except ImportError as err:
        channel.error(None, "ImportError", f"recon_core's dependencies are missing in {sys.executable} ({err}).",
                      fatal=True)
        return 3
    # a photograph's mask is cut with OpenCV: missing, say so now, not at the first photograph (found, not imported:
    # its import, ~0.2 s, waits for the first photograph)
    if importlib.util.find_spec("cv2") is None:
        from recon_core.network.finder import OPENCV_MISSING

        channel.error(None, "ImportError", f"{OPENCV_MISSING} (in {sys.executable})", fatal=True)
        return 3
    try:
        stamp = _model_stamp(model)
        reconstructor = Reconstructor.from_file(model)
    except WeightsError as err:
        channel.error(None, "WeightsError", str(err), fatal=True)
        return 2
    except Exception as err:  # noqa: BLE001
        log.exception("model loading failed")
        channel.error(None, "InternalError", f"The model could not be loaded ({type(err).__name__}: {err}).",
                      fatal=True)
        return 1
    from recon_core.io.weights import default_model_path

    channel.send("ready", model=str(model or default_model_path()), trained=reconstructor.trained,
                 load_s=round(time.perf_counter() - started, 4))
    for line in requests:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            channel.error(None, "ProtocolError", "The worker received a line that is not a JSON object.")
            continue
        if message.get("version") != PROTOCOL_VERSION:
            channel.error(message.get("id"), "ProtocolError",
                          f"The worker speaks protocol version {PROTOCOL_VERSION}, the request "
                          f"version {message.get('version')}; update the add-on or recon_core so they match.")
            continue
        kind = message.get("type")
        if kind == "shutdown":
            break
        if kind == "reconstruct":
            stamp_now = _model_stamp(model)
            if stamp_now != stamp:  # replaced since it was loaded (the warm worker answered with the old)
                rid = message.get("id")
                channel.send("progress", id=rid, stage="loading the model again (its files changed)", fraction=0.0)
                try:
                    reconstructor, stamp = Reconstructor.from_file(model), stamp_now
                except Exception as err:  # noqa: BLE001 - half copied, say so; the next request tries again
                    log.exception("model reloading failed")
                    said = (str(err) if isinstance(err, WeightsError) else
                            f"{type(err).__name__}: {err}; finish copying them, or choose another model.")
                    channel.error(rid, "WeightsError", "The model's files changed since the worker loaded them, and "
                                  f"loading them again failed: {said}")
                    continue
            _handle_request(channel, reconstructor, message)
        else:
            channel.error(message.get("id"), "ProtocolError", f"Unknown message type {kind!r}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    from recon_core.mesh.threads import wait_quietly

    wait_quietly()  # beside Blender, which may render on every core: before the model's torch is imported
    parser = argparse.ArgumentParser(prog="python -m recon_core.io.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model stem (NAME.json [+ NAME.safetensors]); default: the shipped model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # Keep the protocol stream clean: messages go to a private copy of stdout, and
    # file descriptor 1 (print, C libraries) is pointed at stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", newline="\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    requests = open(sys.stdin.fileno(), encoding="utf-8", closefd=False)
    return serve(_Channel(protocol), requests, args.model)


if __name__ == "__main__":
    sys.exit(main())
