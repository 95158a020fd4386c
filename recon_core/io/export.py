"""Writing meshes: OBJ, STL, PLY, GLB and 3MF, always through a temporary file and a rename.

3MF is what slicers (PrusaSlicer, Bambu Studio, Cura) prefer: it carries its unit. Ours are millimetres, +Z up
(3MF's build platform is the XY plane). :func:`export_mesh` puts a reconstruction on the plate (resting on z = 0,
centred on the Z axis, as the Blender add-on places a new one), in STL and PLY, the formats slicers and Blender's
importers read +Z up; in a 3MF, whose origin is the build plate's front-left corner, it rests on z = 0 centred
:data:`PLATE_CENTRE_MM` from that corner (:func:`on_3mf_plate`). OBJ and GLB keep the output frame's axes, +Y
up, as glTF and Blender's OBJ importer read them (for modelling tools, not slicers), resting on y = 0 centred on the Y
axis. :func:`write_3mf` and :func:`write_stl` (what the add-on's Export 3MF and Export STL use) place their objects
on the plate together, as they stand to each other; a 3MF names its title and application. trimesh writes a 3MF,
tidied so that lib3mf's strict reading takes it; tests read it back with the 3MF Consortium's lib3mf.

This module imports neither torch nor the network, so ``python -m recon_core.io.export`` (what
the Blender add-on runs to write a file to print) starts in a fraction of a second::

    python -m recon_core.io.export MESHES.npz OUT.3mf    (or OUT.stl)

``MESHES.npz`` holds ``verts_0``, ``faces_0``, ``verts_1``, ... (Z up, millimetres) and ``names``.
Exit codes: 0 written, 2 bad input or unwritable output (one sentence on stderr, no file written), 130 stopped by
Ctrl-C (before the write: nothing written; after it: the file is whole, and said so). After the line
``wrote ...``, :func:`print_notes`' lines say, at the size written, each object that would not print as it is (edited
since its reconstruction: ``warning: NAME is not printable as it is: ...``), the thin walls of the others (``note:
NAME: its walls thinner than ...``) and a size larger than most printers (``note: at ...``); the file is still written.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EXPORT_FORMATS", "ExportError", "OUTPUT_TO_Z_UP", "GLB_METRES_PER_MM", "atomic_write_bytes",
           "staged_writes", "current_umask", "unwritable_reason", "name_too_long", "os_error_sentence", "export_mesh",
           "write_3mf", "write_stl", "refuse_a_bare_extension", "on_plate", "on_3mf_plate", "PLATE_CENTRE_MM",
           "stl_bytes", "print_notes", "main"]

EXPORT_FORMATS = (".obj", ".stl", ".ply", ".glb", ".3mf")
_Z_UP_FORMATS = (".stl", ".ply", ".3mf")
"""The formats :func:`export_mesh` writes +Z up on the build plate (slicers' and Blender's importers' convention)."""

OUTPUT_TO_Z_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
"""Rotation from the output frame (+Y up, camera on +Z; :mod:`recon_core.mesh.camera`) to +Z up:
``(x, y, z) -> (x, -z, y)``, the add-on's rotation into Blender. A rotation (determinant 1), so
outward faces stay outward."""


GLB_METRES_PER_MM = 0.001
"""A GLB's vertices in millimetres are written times this: glTF's unit is the metre (glTF 2.0, "Coordinate System
and Units"), so Blender's importer and glTF viewers read a 90-unit mesh as 90 m tall."""


PLATE_CENTRE_MM = 100.0
"""Where a 3MF's objects stand, in millimetres from its origin along X and Y (:func:`on_3mf_plate`). 3MF's origin is
the build plate's front-left corner: Cura's reader puts it there, so that an object centred on the origin landed three
quarters off the plate. 100 mm is inside the plate of every common printer (180 x 180 mm on the smallest, a Prusa
MINI); PrusaSlicer and Bambu Studio show the objects where the file puts them too."""
APPLICATION = "seed-recon (recon-mesh)"
"""The application a 3MF file names in its metadata."""


class ExportError(ValueError):
    """A mesh that cannot be written where asked."""


TEMPORARY_NAME_START = 40
"""How many characters of the file's name start its temporary file's (``.NAME_START.xxxxxxxx.tmp``): few enough that
the temporary name is shorter than any file system's limit (255 bytes) whatever the name's length, so that every
name that can be written can be written through a temporary file."""


REPLACE_RETRY_S = (0.05, 0.1, 0.2, 0.4, 0.8)
"""On Windows, the waits before each new try of a rename refused with PermissionError: Windows refuses to replace a
file that another program holds open, which a viewer, a slicer's preview, a virus scanner or a cloud folder's sync
does for a moment after the file changes."""


def _replace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """``os.replace(tmp, path)``, tried again on Windows after each of :data:`REPLACE_RETRY_S` while refused."""
    waits = REPLACE_RETRY_S if sys.platform == "win32" else ()
    for wait in waits:
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            time.sleep(wait)
    os.replace(tmp, path)


def _held_open_hint(err: OSError) -> str:
    """What to do about a rename refused on Windows, where a file open in another program cannot be replaced."""
    return (" Close it in any program that has it open (a slicer, a viewer), or choose a writable location."
            if sys.platform == "win32" and isinstance(err, PermissionError) else " Choose a writable location.")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The temporary file is ``.`` + the name's first :data:`TEMPORARY_NAME_START` characters + 8 random ones +
    ``.tmp``, made with the usual permissions (0666 less the umask, which the kernel applies: unlike reading the
    umask, which sets it for a moment, that is safe beside other threads); it is removed should the write or the
    rename fail.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for attempt in range(100):  # another name when one is taken, as mkstemp draws
        tmp = path.parent / f".{path.name[:TEMPORARY_NAME_START]}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            if attempt == 99:
                raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        staged = _STAGED.get()
        if staged is not None:  # renamed with the others at the end of staged_writes
            staged.append((Path(tmp), path))
        else:
            _replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_STAGED: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("staged", default=None)
"""The temporary files written inside :func:`staged_writes`, each with the path it is renamed to at the end."""


@contextlib.contextmanager
def staged_writes() -> Iterator[Callable[[], None]]:
    """Write several files as one: inside the block :func:`atomic_write_bytes` (every writer of this package) leaves
    each file in its temporary file, and they are renamed into place together when the block ends, or earlier by the
    callable it yields (a caller that must not be interrupted between the renames calls it with its signals held). A
    failure or an interruption before then removes the temporary files alone, so the files a user had at those paths
    stay as they were: ``recon-mesh -o chair.stl --preview p.png`` stopped while the preview was drawn had replaced
    the earlier chair.stl and then removed it. Should a rename fail, the files not yet renamed are removed, and
    ``ExportError`` names the file and those already renamed."""
    staged: list[tuple[Path, Path]] = []
    token = _STAGED.set(staged)

    def commit() -> None:
        done: list[Path] = []
        while staged:
            tmp, path = staged[0]
            try:
                _replace(tmp, path)
            except BaseException as err:
                for left, _ in staged:
                    left.unlink(missing_ok=True)
                staged.clear()
                if not isinstance(err, OSError):
                    raise
                written = (f" ({', '.join(map(str, done))} {'was' if len(done) == 1 else 'were'} written)"
                           if done else "")
                raise ExportError(f"Cannot write {path}: {err.strerror or err}{written}.{_held_open_hint(err)}"
                                  ) from None
            done.append(path)
            staged.pop(0)

    try:
        yield commit
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        staged.clear()
        raise
    finally:
        _STAGED.reset(token)
    commit()


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def unwritable_reason(path: str | os.PathLike, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written, as a clause for the caller's sentence; None when it can.

    ``path`` is a file to write, its missing folders made on the way (as :func:`atomic_write_bytes` does), or with
    ``folder`` a folder to make or write into. Nothing is left made or changed. The clauses:

    - ``"it is a folder"``: a file to write is an existing folder;
    - ``"/a/b is a file, not a folder"``: the nearest existing path on the way (``path`` itself with ``folder``,
      else its folder or one above it) is a file;
    - ``"the folder /a cannot be written to"``: that nearest existing folder is not writable.

    Paths in the clauses are absolute. An existing file at ``path`` is no obstacle: writes replace it. The nearest
    existing folder is tried with a temporary file, made and removed at once (``os.access`` alone says yes to
    everything for root, ``/proc`` included, so such a run found an unwritable output only once its work was done).
    """
    path = Path(path)
    try:
        if not folder and path.is_dir():
            return "it is a folder"
        start = (path if folder else path.parent).absolute()
        existing = next(p for p in (start, *start.parents) if p.exists())
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
    except PermissionError as err:  # a folder on the way that cannot be searched
        return f"the folder {Path(err.filename).parent if err.filename else path} cannot be opened"
    if not os.access(existing, os.W_OK | os.X_OK):  # entries are made in it: both are needed
        return f"the folder {existing} cannot be written to"
    # os.access says yes to everything for root (/proc included): a temporary file made and removed at once is what
    # the write itself will do
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=existing)
    except OSError as err:
        why = "" if err.errno == errno.ENOENT else f" ({err.strerror or err})"  # ENOENT: /proc's answer, no help
        return f"the folder {existing} cannot be written to{why}"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


NAME_MAX_FALLBACK = 255
"""The longest file name in bytes where the file system does not say (``os.pathconf`` is missing or fails): the
limit of ext4, XFS, Btrfs, APFS and NTFS."""


def name_too_long(path: str | os.PathLike) -> tuple[int, int, str] | None:
    """``(the name's length, the limit, their unit)`` when the last part of ``path`` is longer than its folder's file
    system allows (``os.pathconf(folder, "PC_NAME_MAX")`` bytes, else :data:`NAME_MAX_FALLBACK`); None when it fits.
    On Windows (no ``pathconf``) the limit is 255 UTF-16 code units, "characters" (a Chinese name's each 3 UTF-8 bytes
    are one), elsewhere bytes.

    Checked before a run, as the error a write would give (``File name too long``) comes only once the work is done.
    The folder is the nearest existing one on the way to ``path``.
    """
    path = Path(path)
    if sys.platform == "win32":
        size = len(path.name.encode("utf-16-le", "surrogatepass")) // 2
        return (size, NAME_MAX_FALLBACK, "characters") if size > NAME_MAX_FALLBACK else None
    size = len(os.fsencode(path.name))
    limit = NAME_MAX_FALLBACK
    try:
        folder = next(p for p in (path.parent.absolute(), *path.parent.absolute().parents) if p.is_dir())
        limit = int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError, StopIteration):  # no pathconf (Windows), or no answer
        pass
    if limit <= 0:  # -1: no limit given
        limit = NAME_MAX_FALLBACK
    return (size, limit, "bytes") if size > limit else None


def os_error_sentence(err: OSError) -> str:
    """``err`` as one sentence for a script's ``error:`` line: the path it names (if any), why, and what to check."""
    where = f" {err.filename}" if err.filename else ""
    return f"cannot use{where}: {err.strerror or err}; check the path and its permissions"


def refuse_a_bare_extension(path: Path, extensions: Sequence[str], what: str, example: str) -> None:
    """Raise :class:`ExportError` when ``path``'s name is one of ``extensions`` alone (``out/.obj``: a hidden file's
    name, without an extension), saying that it needs a name, ``example`` + the extension for instance; ``what``
    goes before the path ("the mask to ")."""
    if path.name.lower() in extensions:
        raise ExportError(f"Cannot write {what}{path}: {path.name} is an extension without a name; give the file a "
                          f"name, e.g. {path.with_name(example + path.name.lower())}.")


def _check_target(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in EXPORT_FORMATS:
        raise ExportError(f"Cannot write {path.name}: the extension must be one of {', '.join(EXPORT_FORMATS)}.")
    if not path.parent.exists():
        raise ExportError(f"Cannot write {path}: the folder {path.parent} does not exist; create it first.")
    return ext


def _write(path: Path, data: bytes | str) -> Path:
    try:
        atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
    except OSError as err:
        raise ExportError(f"Cannot write {path}: {err.strerror or err}.{_held_open_hint(err)}") from None
    return path


def _checked_mesh(verts, faces, what: str) -> tuple[np.ndarray, np.ndarray]:
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ExportError(f"Cannot write {what}: vertices must be (V, 3) and faces (F, 3), "
                          f"got {verts.shape} and {faces.shape}.")
    if len(faces) == 0:
        raise ExportError(f"Cannot write {what}: it has no faces.")
    if not np.isfinite(verts).all():
        raise ExportError(f"Cannot write {what}: some vertex coordinates are not finite.")
    if not np.issubdtype(faces.dtype, np.integer):  # "must index its 8 vertices" was said of 0.0, 1.0, 2.0
        raise ExportError(f"Cannot write {what}: its faces must be whole numbers (vertex indices), got "
                          f"{faces.dtype} values.")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise ExportError(f"Cannot write {what}: its faces must index its {len(verts)} vertices.")
    return verts, faces.astype(np.int64)


def on_plate(verts: np.ndarray) -> np.ndarray:
    """``(V, 3)`` +Z-up vertices moved to rest on z = 0 with their bounding box centred on the Z axis."""
    lo, hi = verts.min(0), verts.max(0)
    return verts - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])


def on_3mf_plate(objects: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``(V_i, 3)`` +Z-up vertices of objects moved together, as they stand to each other, so that they rest on z = 0
    with their common bounding box centred :data:`PLATE_CENTRE_MM` from 3MF's origin along X and Y, or further where
    the box is wider than twice that, so that no coordinate is negative."""
    lo = np.min([v.min(0) for v in objects], axis=0)
    hi = np.max([v.max(0) for v in objects], axis=0)
    centre = np.maximum(PLATE_CENTRE_MM, (hi[:2] - lo[:2]) / 2)
    shift = np.array([centre[0] - (lo[0] + hi[0]) / 2, centre[1] - (lo[1] + hi[1]) / 2, -lo[2]])
    return [v + shift for v in objects]


def write_3mf(objects: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike) -> Path:
    """Write one 3MF file with one object per ``(name, verts, faces)``, in millimetres, placed on its build plate
    together (:func:`on_3mf_plate`), titled after the file.

    Args:
        objects: ``name``, ``verts`` (V, 3) float in millimetres, +Z up (moved together onto the plate, as they stand
            to each other), and ``faces`` (F, 3) int, outward (counter-clockwise seen from
            outside, as 3MF requires).
        path: the ``.3mf`` file.

    Raises:
        ExportError: no objects, a malformed mesh, a wrong extension, or an unwritable place.
    """
    path = Path(path)
    return _write_3mf(_checked_objects(objects, path, ".3mf"), path)


def _checked_objects(objects: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, ext: str
                     ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """:func:`write_3mf`'s and :func:`write_stl`'s ``objects`` checked for a file ``path`` of the extension ``ext``:
    non-empty names, float64 (V, 3) vertices, int64 (F, 3) faces.

    Raises:
        ExportError: no objects, a malformed mesh, another extension, or an unwritable place.
    """
    if path.suffix.lower() != ext:
        raise ExportError(f"Cannot write {path.name} as {ext[1:].upper()}: the extension must be {ext}.")
    _check_target(path)
    if not objects:
        raise ExportError(f"Cannot write {path.name}: there is no mesh to write.")
    checked = []
    for i, (name, verts, faces) in enumerate(objects):
        name = _xml_text(str(name)) or f"object_{i + 1}"
        checked.append((name, *_checked_mesh(verts, faces, f"{path.name} (object {name!r})")))
    return checked


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""The characters XML 1.0 cannot hold (control characters but tab and line breaks, lone surrogates)."""


def _xml_text(text: str) -> str:
    """``text`` with each character XML cannot hold as "_": a 3MF's title and names (a control character in a file's
    or an object's name made lxml raise)."""
    return _NOT_XML.sub("_", text)


def _write_3mf(objects: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path) -> Path:
    """:func:`write_3mf` once its arguments are checked: non-empty names, float64 (V, 3), int64 (F, 3)."""
    placed = on_3mf_plate([verts for _, verts, _ in objects])
    objects = [(name, verts, faces) for (name, _, faces), verts in zip(objects, placed)]
    try:
        import lxml.etree  # noqa: F401 - trimesh's 3MF writer needs both; without them it fails obscurely
        import networkx  # noqa: F401
    except ImportError as err:
        raise ExportError(f"Writing 3MF needs the Python package {err.name}: install it with "
                          "pip install lxml networkx (scripts/setup.sh does).") from None
    import trimesh
    from trimesh.exchange.threemf import export_3MF

    scene = trimesh.Scene()
    taken: set[str] = set()
    for i, (name, verts, faces) in enumerate(objects):
        while name in taken:  # 3MF objects need distinct names here: the scene is keyed by them
            name += "_"
        taken.add(name)
        # The object keeps its name; the scene node gets a neutral one: trimesh leaves every node whose
        # name starts with "camera" off the build plate (a reconstruction of camera.png would be).
        scene.add_geometry(trimesh.Trimesh(vertices=verts, faces=faces, process=False), geom_name=name,
                           node_name=f"part_{i + 1}")
    return _write(path, _tidy_3mf(export_3MF(scene), _xml_text(path.stem)))


_CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
_PRODUCTION_NS = "http://schemas.microsoft.com/3dmanufacturing/production/2015/06"


def _tidy_3mf(data: bytes, title: str) -> bytes:
    """trimesh's 3MF ``data`` with its model part tidied: each build item's repeated namespace declarations gone
    (lib3mf's strict reading refused them as invalid attributes) and the metadata that slicers show (the title, the
    application, the creation date) added; every other part as it was."""
    import datetime
    import io
    import zipfile

    from lxml import etree

    source = zipfile.ZipFile(io.BytesIO(data))
    model = etree.fromstring(source.read("3D/3dmodel.model"))
    etree.cleanup_namespaces(model, top_nsmap={None: _CORE_NS, "p": _PRODUCTION_NS})
    for position, (name, value) in enumerate((("Title", title), ("Application", APPLICATION),
                                              ("CreationDate", datetime.date.today().isoformat()))):
        entry = etree.Element(f"{{{_CORE_NS}}}metadata", name=name)
        entry.text = value
        model.insert(position, entry)  # metadata come before the resources
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=5) as target:
        for info in source.infolist():
            part = source.read(info.filename)
            if info.filename == "3D/3dmodel.model":
                part = etree.tostring(model, xml_declaration=True, encoding="utf-8")
            target.writestr(info, part)
    return out.getvalue()


def write_stl(objects: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike) -> Path:
    """Write one binary STL file of the ``(name, verts, faces)`` objects, joined, in millimetres, resting on the build
    plate together (:func:`on_plate`: on z = 0, centred on the Z axis), as they stand to each other.

    Args:
        objects: as :func:`write_3mf`'s.
        path: the ``.stl`` file.

    Raises:
        ExportError: no objects, a malformed mesh, a wrong extension, or an unwritable place.
    """
    path = Path(path)
    verts, faces = _one_mesh(_checked_objects(objects, path, ".stl"))
    return _write(path, stl_bytes(on_plate(verts), faces))


def _one_mesh(objects: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The ``(name, verts, faces)`` objects as one mesh, as an STL holds them: (V, 3) float64 vertices and (F, 3)
    int64 faces, each object's indices shifted past the vertices before it."""
    starts = np.cumsum([0] + [len(verts) for _, verts, _ in objects[:-1]])
    verts = np.concatenate([np.asarray(verts, dtype=np.float64) for _, verts, _ in objects])
    faces = np.concatenate([np.asarray(f, dtype=np.int64) + s for (_, _, f), s in zip(objects, starts)])
    return verts, faces


_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("verts", "<f4", (3, 3)), ("attributes", "<u2")])
"""One triangle of a binary STL file: 50 bytes, little-endian."""


def stl_bytes(verts: np.ndarray, faces: np.ndarray) -> bytes:
    """A binary STL file of a triangle mesh: an 80-byte header, the triangle count, then per triangle its unit
    normal (right-handed from the vertex order; zero for a degenerate face), its three corners and 0.

    Written with numpy rather than trimesh, whose import (about half a second) would be most of the cost of
    writing the default output format; tests/test_export.py reads the bytes back with trimesh.

    Args:
        verts: (V, 3) float; faces: (F, 3) int.
    """
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    records = np.zeros(len(tri), dtype=_STL_RECORD)
    records["normal"], records["verts"] = normal, tri
    header = b"binary STL of a reconstruction".ljust(80, b" ")
    return header + np.uint32(len(tri)).tobytes() + records.tobytes()


def export_mesh(verts: np.ndarray, faces: np.ndarray, path: str | os.PathLike, name: str | None = None, *,
                millimetres: bool = False) -> Path:
    """Write one mesh in the output frame as OBJ, STL, PLY, GLB or 3MF (by extension), atomically.

    OBJ and GLB keep the output frame's axes (+Y up: glTF's convention, and what Blender's OBJ importer expects),
    resting on y = 0 with their bounding box centred on the Y axis, as an STL stands on its plate and the add-on puts
    a new object on the 3D cursor (since the forty-fifth session; before, they kept the output frame's coordinates and
    half the mesh lay below the ground in Blender and a glTF viewer). A GLB of vertices in ``millimetres`` is written
    in metres (times :data:`GLB_METRES_PER_MM`), glTF's unit, so that it imports at its size; else as they are.
    STL, PLY and 3MF are turned +Z up (:data:`OUTPUT_TO_Z_UP`: slicers, and Blender's STL and PLY importers, take
    +Z as up; before 2026-12-07 an STL came +Y up and lay on its back in a slicer), the mesh resting on the build
    plate (:func:`on_plate`; a 3MF's :func:`on_3mf_plate`), in the vertices' own unit (STL and PLY have none;
    slicers take millimetres); a 3MF declares millimetres: pass vertices in millimetres
    (``Reconstructor.reconstruct(..., height_mm=...)``).

    Args:
        verts: (V, 3) float, output frame.
        faces: (F, 3) int.
        path: the file to write.
        name: the object's name inside a 3MF, OBJ or GLB file (None: the file's name without its extension).
        millimetres: ``verts`` are in millimetres (``height_mm`` was given); False: the data's unitless frame,
            which a 3MF cannot hold (ExportError).
    """
    path = Path(path)
    ext = _check_target(path)
    verts, faces = _checked_mesh(verts, faces, path.name)
    if ext == ".glb" and millimetres:
        verts = verts * GLB_METRES_PER_MM
    if ext == ".3mf":  # on its plate, by _write_3mf
        if not millimetres:  # as recon-mesh refuses it: a 0.8 mm chair in a file that declares millimetres
            raise ExportError(f"Cannot write {path.name} without a size: a 3MF declares millimetres; give the vertices "
                              "in millimetres (reconstruct(..., height_mm=...)) and millimetres=True.")
        return _write_3mf([(_xml_text(name or path.stem) or "reconstruction", verts @ OUTPUT_TO_Z_UP.T, faces)], path)
    verts = on_plate(verts @ OUTPUT_TO_Z_UP.T)
    if ext not in _Z_UP_FORMATS:  # OBJ, GLB: placed so, turned back +Y up
        verts = verts @ OUTPUT_TO_Z_UP
    if ext == ".stl":
        return _write(path, stl_bytes(verts, faces))
    import trimesh

    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if ext in (".obj", ".glb"):  # named as a 3MF's object is ("o chair", the glTF mesh and node; was "geometry_0")
        named = name or path.stem or "reconstruction"
        scene = trimesh.Scene()
        scene.add_geometry(mesh, geom_name=named, node_name=named)
        return _write(path, scene.export(file_type=ext[1:]))
    return _write(path, mesh.export(file_type=ext[1:]))


USAGE = "usage: python -m recon_core.io.export MESHES.npz OUT.{3mf,stl}"


def main(argv: list[str] | None = None) -> int:
    """``python -m recon_core.io.export MESHES.npz OUT.3mf`` (or ``OUT.stl``): the add-on's writer of files to print
    (see the module docstring)."""
    from recon_core.io.notes import escape_what_streams_cannot_show

    args = sys.argv[1:] if argv is None else argv
    escape_what_streams_cannot_show()
    if args in (["-h"], ["--help"]):
        print(f"{USAGE}\n\nWrite the meshes of MESHES.npz (verts_0, faces_0, ..., names; +Z up, millimetres) as one 3MF "
              "or STL file, on its build plate, and say what would not print well.")
        return 0
    try:
        return _main(args)
    except KeyboardInterrupt:  # Ctrl-C: the writers' temporary files are gone (they remove them on any exception)
        print("error: Interrupted; nothing was written.", file=sys.stderr)
        return 130


def _main(args: list[str]) -> int:
    """:func:`main` on its arguments, Ctrl-C left to it."""
    def refuse(sentence: str) -> int:
        print(f"error: {sentence}", file=sys.stderr)
        return 2

    if len(args) != 2:
        return refuse(f"Give the meshes' file and the file to write, e.g. meshes.npz part.3mf.\n{USAGE}")
    source, target = args
    out = Path(target)
    try:  # Path(".3mf").suffix is "": a name that is only an extension
        refuse_a_bare_extension(out, (".3mf", ".stl"), "", "part")
    except ExportError as err:
        return refuse(str(err))
    if out.is_dir():
        return refuse(f"Cannot write {target}: it is a folder; give a file name, e.g. {out / 'part.3mf'}.")
    writer = {".3mf": write_3mf, ".stl": write_stl}.get(out.suffix.lower())
    if writer is None:
        return refuse(f"Cannot write {target}: the extension must be .3mf or .stl.")
    if not Path(source).is_file():  # a missing folder for the file is the writer's to say (_check_target)
        return refuse(f"Cannot read the meshes in {source}: there is no such file.")
    try:
        with np.load(source, allow_pickle=False) as data:
            names = [str(n) for n in data["names"]] if "names" in data else []
            count = sum(1 for key in data.files if key.startswith("verts_"))
            objects = [(names[i] if i < len(names) else f"object_{i + 1}", data[f"verts_{i}"], data[f"faces_{i}"])
                       for i in range(count)]
    except Exception as err:  # noqa: BLE001 - an empty, truncated or foreign file: one sentence
        # a text file reads as "pickled data" to numpy: not what the user has, so the error is not quoted for it
        why = "" if "pickled" in str(err) else f" ({type(err).__name__}: {err})"
        return refuse(f"Cannot read the meshes in {source}: it is not a .npz file of meshes{why}; write them with "
                      "numpy.savez as verts_0, faces_0, ... and names.")
    try:
        path = writer(objects, target)
    except ExportError as err:
        return refuse(str(err))
    print(f"wrote {path} ({len(objects)} object{'s' if len(objects) != 1 else ''})")
    try:
        if path.suffix.lower() == ".stl":  # one mesh of triangles, as slicers read it: vertices at one place are one
            objects = [(objects[0][0] if len(objects) == 1 else path.stem, *_joined(*_one_mesh(objects)))]
        for line in print_notes(objects):
            print(line)
    except KeyboardInterrupt:  # the file is whole; only what is said of it was cut short
        print(f"error: Interrupted: {path} was written, but its check was not finished.", file=sys.stderr)
        return 130
    return 0


def _joined(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(verts, faces)`` as slicers read an STL file of them: the vertices at exactly one place made one (an Edge
    Split modifier's split vertices are not holes), and the faces left with a corner twice by that dropped (a file's
    zero-area triangles, which slicers drop)."""
    verts, inverse = np.unique(np.asarray(verts, dtype=np.float64), axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[np.asarray(faces, dtype=np.int64)]
    kept = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    return verts, faces[kept]


def print_notes(objects: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[str]:
    """What keeps the ``(name, verts (V, 3) millimetres, faces)`` objects, as they are now (edited in Blender, maybe),
    from printing well, as :func:`main` prints it: ``warning: NAME is not printable as it is: ...``
    (:meth:`recon_core.mesh.printable.PrintableReport.problems`), else ``note: NAME: its walls thinner than ...``
    where its thin walls are worth a note (:func:`recon_core.mesh.thickness.worth_noting`, at the size written); then
    ``note: at ... mm ...`` when they are larger than :data:`recon_core.io.notes.PLATE_MM` along a side together. An
    STL's objects come as one mesh, as slicers read it (:func:`main`)."""
    from recon_core.io.notes import plate_note, thin_wall_figures
    from recon_core.mesh.printable import check_printable
    from recon_core.mesh.thickness import THIN_WALL_MM, thin_walls, worth_noting

    lines = []
    for name, verts, faces in objects:
        verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
        problems = check_printable(verts, faces).problems()
        if problems:
            lines.append(f"warning: {name} is not printable as it is: {', '.join(problems)}")
            continue
        thin = thin_walls(verts, faces, THIN_WALL_MM)
        if worth_noting(thin):
            lines.append(f"note: {name}: its {thin_wall_figures(THIN_WALL_MM, thin.area, thin.surface, thin.median)}): "
                         "they print weak and break easily; scale it up, or thicken them")
    size = np.ptp(np.concatenate([np.asarray(verts, dtype=np.float64) for _, verts, _ in objects]), axis=0)
    note = plate_note(size, "scale it down")  # +Z up: width, depth, height
    return lines + ([f"note: {note}"] if note else [])


if __name__ == "__main__":
    sys.exit(main())
