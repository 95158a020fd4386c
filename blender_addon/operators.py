"""Operators: Reconstruct from Image (modal, runs the worker), Next Shape, Keep This One, Look Through Picture,
Export STL and Export 3MF.

From the UI the reconstruct operator is modal: a window-manager timer polls the worker
(:mod:`.worker_client`), so Blender stays responsive, and Esc cancels. From scripts and
in background mode (where Blender has no event loop, so ``INVOKE_DEFAULT`` falls back
to ``execute``) it runs the same worker and waits. The object is only created once the
result is in, in one step, so a failure or a cancel leaves the scene as it was.

The worker also writes the object mask it used to a temporary PNG; it becomes an image
datablock, "PICTURE mask", packed into the .blend (its file ``//PICTURE_mask.png``, where Unpack
Resources writes it), that the object points to (:data:`MASK_KEY`) and the panel shows. A later run
for the same picture replaces that image rather than adding one.

Candidates: with the panel's Candidates above 1, the worker sends several plausible shapes, the most
confident first. Each becomes an object ("PICTURE 1", "PICTURE 2", ...: its printable check in
:data:`CHECK_KEY`, its rank and confidence in :data:`CANDIDATE_KEY`), all of them at the cursor in one new
collection, "PICTURE candidates" (:data:`CANDIDATES_KEY`), under the active collection. Only the first is
shown: the others are hidden with the eye (``hide_set``, the view layer's per-object flag that H and Alt+H
toggle and the outliner's eye shows) and from renders (``hide_render``). Both flags are saved in the .blend
and restored by undo (the tests check both); the eye is chosen over ``hide_viewport`` ("Disable in
Viewports", hidden in the outliner by default) so that the user sees in the outliner which candidate is
shown and can look at another one by hand. Next Shape (:class:`RECON_OT_next_candidate`) shows the next
candidate in rank order, Keep This One (:class:`RECON_OT_keep_candidate`) deletes the others, moves the
shown one to the collection's parent (where a single reconstruction would have put it) and removes the
collection once empty. A worker that sends one shape (a model without a shape bank, or Candidates at 1)
gives one object and no collection, as before.

The picture's camera: the worker sends, with each shape-bank mesh, the camera through which it lies on the picture's
object; the object keeps it, turned into its own frame (:data:`VIEW_KEY`, :func:`.mesh_data.picture_view`), and the
picture as the worker read it, packed as the image "PICTURE picture" (:data:`PICTURE_IMAGE_KEY`). Look Through Picture
(:class:`RECON_OT_view_picture`) makes of them a camera, "PICTURE picture camera", parented to the mesh so that it
follows it, with the picture behind the mesh (an image empty drawn behind everything, that shows only when looked at
along its axis, so from the camera alone), and looks through it in the 3D Viewport (the view's own camera: the scene's
camera and its render settings stay as they were). One such camera serves a set of candidates; Next Shape and Keep This
One move it to the candidate they show.
"""

import contextlib
import filecmp
import hashlib
import os
import re
import shutil
import tempfile
import time

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper
from mathutils import Matrix

from . import mesh_data, worker_client
from .preferences import DEFAULTS, get_preferences
from .properties import PATH_OPTIONS

__all__ = ["RECON_OT_reconstruct", "RECON_OT_next_candidate", "RECON_OT_keep_candidate", "RECON_OT_export_stl",
           "RECON_OT_export_3mf", "RECON_OT_use_mask", "RECON_OT_view_picture", "picture_camera", "picture_image",
           "running", "cancel_running", "mm_per_unit", "mask_image",
           "fill_mesh", "candidate_collection", "candidate_target", "stranded_collection", "candidates_of",
           "is_candidate", "candidate_info", "candidate_likelihood", "shown_candidate", "notes_of",
           "size_mm", "volume_text"]

TIMER_S = 0.1
"""Seconds between two polls of the worker in the modal operator."""
CORNER_VERT = ".corner_vert"
"""The attribute that holds each face corner's vertex (what ``MeshLoop.vertex_index`` reads) in Blender 5.0 (a test checks it);
``fill_mesh`` sets it as one array (~0.2 ms for 250k corners against ~50 ms through ``mesh.loops``), and falls back
to ``mesh.loops`` where a Blender version lacks it."""
CHECK_KEY = "recon_check"
"""Custom property of a reconstructed object holding its printable check."""
MASK_KEY = "recon_mask"
"""Custom property of a reconstructed object pointing to the image of the object mask that was used."""
PICTURE_KEY = "recon_picture"
"""Custom property of a mask image: the picture it is the mask of (its file, or a Blender image's name)."""
WARNED_KEY = "recon_kept_painted"
"""Custom property of a painted mask image a run kept (:func:`_replace_masks`): its warning was given."""
MADE_KEY = "recon_made"
"""Custom property of a mask image: a digest of its PNG as the worker wrote it (:func:`_painted`)."""
UNSURE_KEY = "recon_unsure"
"""Custom property of a mask image: True when the object finder found it and was unsure of it (the panel says so)."""
CANDIDATE_KEY = "recon_candidate"
"""Custom property of a candidate object: ``{"rank": 1 for the likeliest, "confidence": a share in (0, 1],
or -1.0 when the model gave none, "likelihood": it in words against the likeliest ("" when none), "name": as made}``."""
CANDIDATES_KEY = "recon_candidates"
"""Custom property of a candidate collection: the picture its candidates were made from."""
CANDIDATE_OBJECTS = "recon_candidate_objects"
"""The record on a candidate collection (a ``CollectionProperty`` of :class:`.properties.ReconCandidateRef`, registered
with the add-on): pointers to the objects the reconstruction made in it. Only those are candidates
(:func:`is_candidate`): a pointer follows its object through rename, undo, reload and append, and a copy of one (Shift+D)
carries :data:`CANDIDATE_KEY` along but is not pointed at, so it is the user's, never hidden or deleted by Next Shape
and Keep This One."""
CANDIDATE_NAMES_KEY = "recon_candidate_names"
"""Custom property of a candidate collection made by an earlier version of the add-on: the names of its candidates,
read only when the collection has no :data:`CANDIDATE_OBJECTS` record (:func:`is_candidate`)."""
VIEW_KEY = "recon_view"
"""Custom property of a reconstructed object: the picture's camera in the object's frame
(:func:`.mesh_data.picture_view`), absent when the worker sent none (a model without a shape bank)."""
PICTURE_IMAGE_KEY = "recon_picture_image"
"""Custom property of a reconstructed object: the picture as the worker read it (upright, a cut-out's transparency
white), packed into the .blend as the image "PICTURE picture", which Look Through Picture shows."""
SHOWN_KEY = "recon_shown_picture"
"""Custom property of such a picture image: the picture it shows (its file, or a Blender image's name); a later run of
the same picture replaces it (:func:`_replace_shown`)."""
PICTURE_CAMERA_KEY = "recon_picture_camera"
"""Custom property of a reconstructed object, or of a candidate collection: the camera object Look Through Picture
made."""
NOTES_KEY = "recon_notes"
"""Custom property of a reconstructed object: what the reconstruction noted of it (the worker's notes, then its thin
walls' mark), one note a line; the panel's Notes lists them, since the status bar shows only the last message."""
PLANE_KEY = "recon_picture_plane"
"""Custom property of a picture camera: the image empty that shows the picture."""
PICTURE_OPACITY = 0.8
"""How opaque the picture is behind the mesh, looked through its camera (the grid and the floor show through a little,
so that it reads as a reference, not as part of the scene)."""
EMPTY_SIZE_MAX = 1000.0
"""The largest display size Blender takes for an empty (``Object.empty_display_size``): larger values are clamped."""
NEXT_SHAPE_KEYS = "Shift+Alt+N"
"""The Next Shape shortcut (3D Viewport, Object Mode), as the panel and messages spell it (see ``__init__``)."""

_RUNNING = None  # the _Reconstruction in flight, at most one


class InputError(ValueError):
    """Missing or unusable input in the panel; the message says what to do."""


def mm_per_unit(scene) -> float:
    """Millimetres per Blender unit in ``scene`` (1 BU = ``scale_length`` metres)."""
    return 1000.0 * (scene.unit_settings.scale_length or 1.0)


def mask_image(obj):
    """The mask image of a reconstructed object, or None (no mask kept, or its image was deleted)."""
    image = obj.get(MASK_KEY) if obj is not None else None
    return image if isinstance(image, bpy.types.Image) else None


THIN_ATTRIBUTE = "thin_wall"
"""The boolean face attribute that marks the faces whose walls are too thin to print (the worker's ``thin_faces``)."""
THIN_HINT = f"its thin walls are marked: in Edit Mode, Select > By Attribute selects them (the attribute {THIN_ATTRIBUTE})"
"""What the result's message says of a shape whose thin walls are marked."""


def mark_thin_faces(mesh, thin) -> None:
    """Mark the faces ``thin`` ((K,) int indices) of the ``mesh`` in a boolean face attribute :data:`THIN_ATTRIBUTE`,
    made the active attribute, so that Edit Mode's Select > By Attribute selects them."""
    values = np.zeros(len(mesh.polygons), dtype=bool)
    values[np.asarray(thin, dtype=np.int64)] = True
    attribute = mesh.attributes.new(THIN_ATTRIBUTE, 'BOOLEAN', 'FACE')
    attribute.data.foreach_set("value", values)
    mesh.attributes.active = attribute


def fill_mesh(mesh, verts, faces) -> None:
    """Give the empty ``mesh`` these vertices and triangles, smooth-shaded, with edges derived from the faces.

    The mesh is the one ``mesh.from_pydata(verts, [], faces, shade_flat=False)`` makes, without its
    Python lists: ``foreach_set`` copies whole arrays.

    Args:
        mesh: a new, empty ``bpy.types.Mesh``.
        verts: (V, 3) float, Blender coordinates.
        faces: (F, 3) int triangles, indices into ``verts``.

    Raises:
        ValueError: ``mesh`` is not empty, or the arrays are not a triangle mesh (:func:`.mesh_data.mesh_buffers`).
    """
    if len(mesh.vertices) or len(mesh.loops) or len(mesh.polygons):
        raise ValueError(f"the mesh {mesh.name} already has geometry")
    co, loop_verts, loop_starts = mesh_data.mesh_buffers(verts, faces)
    mesh.vertices.add(len(co) // 3)
    mesh.vertices.foreach_set("co", co)
    mesh.loops.add(len(loop_verts))
    corner_vert = mesh.attributes.get(CORNER_VERT)
    if corner_vert is not None and corner_vert.data_type == 'INT' and corner_vert.domain == 'CORNER':
        corner_vert.data.foreach_set("value", loop_verts)  # one copy; MeshLoop.vertex_index sets one corner at a time
    else:
        mesh.loops.foreach_set("vertex_index", loop_verts)
    mesh.polygons.add(len(loop_starts))
    mesh.polygons.foreach_set("loop_start", loop_starts)  # loop_total is read-only: the next start minus this one
    mesh.update(calc_edges=True)


def running():
    """The reconstruction in flight (``stage``, ``fraction``, ``elapsed``, ``name``), or None."""
    return _RUNNING


def cancel_running() -> None:
    """Stop the reconstruction in flight, if any, and end what its operator shows: the timer, the progress and the
    status text (add-on unregister and Reload Scripts, where Blender frees the modal operator without its cancel)."""
    global _RUNNING
    if _RUNNING is not None:
        _RUNNING.cancel()
        _RUNNING = None


_IMAGE_SUFFIX = {'PNG': ".png", 'JPEG': ".jpg", 'BMP': ".bmp", 'TIFF': ".tif", 'TARGA': ".tga",
                 'TARGA_RAW': ".tga", 'WEBP': ".webp"}
"""The file formats (``Image.file_format``) that the worker reads (Pillow), with the suffix of a copy in that format.
An image in any other format (OpenEXR, Radiance HDR, ...) is handed over as an 8-bit RGBA PNG (:func:`_png_copy`)."""
_BLENDER_READS = (".exr", ".hdr", ".pic", ".dpx", ".cin")
"""Suffixes of image files that Blender reads and the worker (Pillow) does not: a File source with one is loaded into
Blender for the moment and handed over as an 8-bit RGBA PNG copy (:func:`_file_png_copy`)."""
_PNG_RGBA_8 = {"media_type": 'IMAGE', "file_format": 'PNG', "color_mode": 'RGBA', "color_depth": '8'}
"""The output format a Render Result is saved in for the worker (:func:`_save_render_png`), in the order it is set."""
_RENDERS = {'RENDER_RESULT', 'COMPOSITING'}
"""The image types whose pixels Python cannot read (a Render Result, the compositor's Viewer)."""
_DUPLICATE_SUFFIX = re.compile(r"\.\d{3,}$")
"""The ".001" that Blender appends to a datablock's name when the name is taken."""


def _absolute_path(path: str, what: str) -> str:
    """``path`` as typed in the panel or the preferences (``//`` is the .blend file's folder), absolute and normalised,
    so that the same file is always the same string (the mask's :data:`PICTURE_KEY`).

    Raises:
        InputError: ``path`` is relative to the .blend file, which is not saved yet (Blender would take the working
            folder instead, silently).
    """
    path = _pasted(path)
    if path.startswith("//") and not bpy.data.filepath:
        raise InputError(f"The {what} {path} is relative to the .blend file, which is not saved yet; save the .blend "
                         "file first, or give an absolute path.")
    return os.path.abspath(bpy.path.abspath(path))  # abspath normalises


def _pasted(path: str) -> str:
    """A path as people paste it, as the file system names it: without the spaces or the quotes around it (a file
    manager's "Copy as path"), a ``file:`` URL of this computer as its path (its %XX escapes decoded), and ``~`` as the
    home folder."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    path = path.strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1].strip()
    if path.lower().startswith("file:"):
        url = urlparse(path)
        if url.netloc.lower() in ("", "localhost"):  # a file on another host stays as typed: its sentence says so
            path = url2pathname(url.path)
    return os.path.expanduser(path)


def _interpreter(python: str) -> str:
    """The preferences' Python as a path (:func:`_absolute_path`); a bare program name with no folder (``python3``)
    is found on the PATH, as a shell finds it."""
    bare = _pasted(python)
    if bare and os.sep not in bare and (os.altsep is None or os.altsep not in bare) and not os.path.isfile(bare):
        found = shutil.which(bare)
        if not found:
            raise InputError(f"The Python interpreter {bare} is not a program on the PATH; give its full path in the "
                             "add-on preferences.")
        return os.path.abspath(found)
    return _absolute_path(python, "Python interpreter")


def _object_name(image_name: str) -> str:
    """The objects' name for a picture: its file or image name without the extension and without Blender's
    duplicate suffix ("chair.png.001" gives "chair")."""
    return os.path.splitext(_DUPLICATE_SUFFIX.sub("", image_name))[0] or "Reconstruction"


def _image_input(settings, scene) -> tuple[str, str, str | None, str]:
    """``(path, object name, temporary file or None, picture)`` of the image chosen in the panel; ``picture`` is what
    the image is to the user: its file's absolute path (:data:`PICTURE_KEY`), or "Blender image NAME" for a Blender
    image the worker reads through a temporary copy."""
    if settings.source == 'FILE':
        image_path = settings.image_path.strip()  # a pasted path's stray spaces
        if not image_path:
            raise InputError("Choose an image file in the Reconstruct panel first.")
        path = _absolute_path(image_path, "image file")
        if os.path.isdir(path):  # said here at once: the worker says the same, after its start on a first click
            raise InputError(f"{path} is a folder, not an image file; choose a picture in it (PNG, JPEG, HEIC, ...).")
        if not os.path.exists(path):
            raise InputError(f"Image file not found: {path}. Check the path and try again.")
        name = _object_name(os.path.basename(path))
        if path.lower().endswith(_BLENDER_READS) and os.path.isfile(path):
            temp = _file_png_copy(path, scene)
            return temp, name, temp, path
        return path, name, None, path
    image = settings.image
    if image is None:
        raise InputError("Choose an image in the Reconstruct panel first.")
    path, temp = _image_file(image, scene)
    return path, _object_name(image.name), temp, path if temp is None else f"Blender image {image.name}"


def _picture_name(picture: str) -> str:
    """A picture as a sentence names it: its file's name, or "Blender image NAME" as it is (:func:`_image_input`).
    A path recorded on Windows ("C:\\Users\\...\\chair.png") gives its name on any system."""
    return picture if picture.startswith("Blender image ") else re.split(r"[\\/]", picture)[-1]


def _same_picture(made_for: str, picture: str, gone_is_same: bool = True) -> bool:
    """Whether a mask made for the picture ``made_for`` (as :func:`_image_input` names it) is this ``picture``'s: the
    same file or Blender image; or a file of the same name elsewhere that holds the same bytes, or whose recorded file
    is gone (a project moved or opened on another machine keeps its mask). Two files of one name that differ (product
    photos in folders of their own, each ``front.jpg``) are not. Without ``gone_is_same``, a recorded file that is
    gone or unreadable is not this picture (what it says replaces another's mask: a renamed or moved project's first
    run keeps its old mask beside the new one, rather than give another product's objects this one's)."""
    if made_for == picture:
        return True
    if made_for.startswith("Blender image ") or _picture_name(made_for).casefold() != _picture_name(picture).casefold():
        return False  # names told apart regardless of case: one file on Windows' and macOS's disks
    if not os.path.isfile(made_for):
        return gone_is_same
    try:
        return filecmp.cmp(made_for, picture, shallow=False)
    except OSError:  # one of them unreadable: the worker says so of this picture; the mask's record cannot tell
        return gone_is_same


def _image_file(image, scene, role: str = "picture") -> tuple[str, str | None]:
    """``(path, temporary file or None)``: a file holding the pixels of the Blender ``image`` that the worker reads.

    Its own file when it is one, in a format the worker reads (:data:`_IMAGE_SUFFIX`), unpacked and unchanged; else a
    temporary copy: a packed file's own bytes (so a photo's EXIF orientation is read as from its file); Blender's save
    in its own format when the worker reads it (generated or painted); else an 8-bit RGBA PNG (OpenEXR, HDR and other
    formats, a Render Result or a Viewer image: :func:`_png_copy`).

    Raises:
        InputError: the image cannot be copied; messages name it by its ``role`` ("picture", "mask image"), and one
            that holds no pixels says why and what to do (:func:`_no_pixels`); a tiled (UDIM) texture, an image
            sequence or a movie is not one picture (:func:`_not_one_picture`).
    """
    _not_one_picture(image, role)
    readable = image.type not in _RENDERS and image.file_format in _IMAGE_SUFFIX
    relative_to_unsaved = image.filepath_raw.startswith("//") and not bpy.data.filepath and image.library is None
    path = bpy.path.abspath(image.filepath_raw, library=image.library) if image.filepath_raw else ""
    if (readable and image.source == 'FILE' and image.packed_file is None and not image.is_dirty
            and not relative_to_unsaved and os.path.isfile(path)):
        return os.path.abspath(path), None
    what, fix = f"The {role} {image.name}", "save it to a file and choose that."
    no_pixels = lambda: _no_pixels(image, role, path)  # noqa: E731 - asked only once a copy failed
    if readable and image.source == 'FILE' and image.packed_file is not None and not image.is_dirty:
        # the packed file's own bytes: a photo's EXIF orientation stays, so it is read upright as from its file
        temp = _temp_copy(lambda p: _write_packed(image.packed_file, p), _IMAGE_SUFFIX[image.file_format], what, fix,
                          no_pixels)
    elif readable:  # generated, painted or edited: in memory already, so its size is known without a load
        _refuse_too_large(image)
        temp = _temp_copy(lambda p: image.save(filepath=p, save_copy=True), _IMAGE_SUFFIX[image.file_format], what,
                          fix, no_pixels)
    else:
        if image.type not in _RENDERS:  # a Render Result's size is the render's, checked by the worker
            _refuse_too_large(image)
        temp = _temp_copy(lambda p: _png_copy(image, scene, p), ".png", what, fix, no_pixels)
    return temp, temp


def _not_one_picture(image, role: str) -> None:
    """Refuse a Blender ``image`` that holds more than one picture: a tiled (UDIM) texture, an image sequence or a
    movie, naming the file of one tile or frame to choose instead where it can.

    Raises:
        InputError: ``image`` is one of those.
    """
    name = f"The {role} {image.name}"
    if image.source == 'TILED':
        path = image.filepath_raw and bpy.path.abspath(image.filepath_raw, library=image.library)
        tiles = sorted(tile.number for tile in image.tiles)
        first = path.replace("<UDIM>", str(tiles[0])) if path and "<UDIM>" in path and tiles else ""
        example = f" (e.g. {first})" if first and os.path.isfile(first) else ""
        raise InputError(f"{name} is a tiled (UDIM) texture of {len(tiles)} tile{'s' * (len(tiles) != 1)}, not one "
                         f"picture; choose the image file of one tile{example}, or another image.")
    if image.source in {'SEQUENCE', 'MOVIE'}:
        kind = "an image sequence" if image.source == 'SEQUENCE' else "a movie"
        raise InputError(f"{name} is {kind}, not one picture; save the frame you want as an image (Image Editor: "
                         "Image > Save As) and choose that.")


def _write_packed(packed_file, path: str) -> None:
    """Write a packed file's bytes, exactly as they were packed, to ``path``.

    Raises:
        OSError: they cannot be written.
    """
    with open(path, "wb") as out:  # an OSError here is the temporary folder's (full, gone): _temp_copy says so
        out.write(packed_file.data)


def _no_pixels(image, role: str, path: str) -> str | None:
    """One sentence for a Blender ``image`` (the ``role`` it has: "picture", "mask image") that holds no pixels, with
    what to do: a Render Result or Viewer not rendered yet, or an image whose file (``path``) is missing; None when it
    holds pixels (it failed for another reason)."""
    if image.has_data:
        return None
    name = f"The {role} {image.name}"
    if image.type in _RENDERS:
        return f"{name} holds no render yet; render first, or choose another image."
    if image.source in {'FILE', 'SEQUENCE', 'MOVIE'} and image.packed_file is None and not os.path.isfile(path):
        return (f"{name} has no pixels because its file {path or image.filepath_raw or '(none)'} is missing; point it "
                "at the file again (Image Editor: Image > Replace), or choose another image.")
    return f"{name} holds no pixels; choose another image."


def _file_png_copy(path: str, scene) -> str:
    """A temporary 8-bit RGBA PNG of the image file at ``path`` (OpenEXR, Radiance HDR, ...: :data:`_BLENDER_READS`) as
    Blender shows it: the file is loaded into Blender, copied by :func:`_png_copy` and removed again, so the .blend
    file keeps nothing of it.

    Raises:
        InputError: Blender cannot read the file.
    """
    what, fix = f"The image file {path}", "check that it is an image, or save it as PNG and choose that."
    try:
        image = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as err:
        raise InputError(f"{what} cannot be read ({_blender_error(err)}); {fix}") from None
    try:
        return _temp_copy(lambda p: _png_copy(image, scene, p), ".png", what, fix)
    finally:
        bpy.data.images.remove(image)


def _temp_copy(write, suffix: str, what: str, fix: str, no_pixels=None) -> str:
    """A new temporary file (absolute path) that ``write(path)`` fills; removed again when ``write`` fails, Blender's
    RuntimeError (it cannot read or write the image) becoming the InputError "WHAT cannot be read (why); FIX", or the
    sentence ``no_pixels()`` gives when it gives one (the image holds no pixels)."""
    try:
        fd, temp = tempfile.mkstemp(prefix=worker_client.TEMP_PREFIX, suffix=suffix)
        os.close(fd)
    except OSError as err:
        raise InputError(worker_client.temp_folder_sentence(err)) from None
    try:
        write(temp)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(err, RuntimeError):
            sentence = no_pixels() if no_pixels is not None else None
            raise InputError(sentence or f"{what} cannot be read ({_blender_error(err)}); {fix}") from None
        if isinstance(err, OSError):
            raise InputError(worker_client.temp_folder_sentence(err)) from None
        raise
    return temp


def _blender_error(err: BaseException) -> str:
    """Blender's RuntimeError as a clause: without its "Error: " and its line break."""
    return " ".join(str(err).split()).removeprefix("Error: ").rstrip(".")


def _refuse_too_large(image) -> None:
    """Refuse a Blender ``image`` with more pixels than the worker reads, before any copy of it (a copy of a 9000x9000
    float image froze Blender for seconds, only for the worker to refuse it).

    Raises:
        InputError: it has more than :data:`worker_client.MAX_PIXELS` pixels.
    """
    width, height = image.size
    if width * height > worker_client.MAX_PIXELS:
        most = worker_client.MAX_PIXELS
        raise InputError(f"The image {image.name} is {width}x{height} pixels, more than the {most / 1e6:g} million "
                         f"pixels the reconstruction reads (e.g. {int(most ** 0.5)}x{int(most ** 0.5)}); scale it down "
                         "(Image Editor: Image > Resize) and try again.")


def _png_copy(image, scene, path: str) -> None:
    """Write ``image`` to ``path`` as an 8-bit RGBA PNG, as the worker (Pillow) reads none of Blender's float formats.

    A Render Result or a Viewer image (whose pixels Python cannot read) is saved as Blender's Save As saves it, with
    the scene's view transform (:func:`_save_render_png`); any other image from its pixels (:func:`_display_pixels`),
    through a temporary byte image that Blender encodes and that is removed at once.

    Raises:
        RuntimeError: Blender cannot read or write the image.
    """
    if image.type in _RENDERS:
        _save_render_png(image, scene, path)
        return
    width, height = image.size
    if not width or not height:
        raise RuntimeError("it holds no pixels (is its file missing?)")
    copy = bpy.data.images.new(f"{image.name} PNG copy", width, height, alpha=True)
    try:
        copy.pixels.foreach_set(_display_pixels(image).ravel())
        copy.filepath_raw, copy.file_format = path, 'PNG'
        copy.save()
    finally:
        bpy.data.images.remove(copy)


def _display_pixels(image) -> np.ndarray:
    """(H, W, 4) float32 in [0, 1], rows bottom first: ``image``'s pixels as an 8-bit PNG holds them.

    A float image holds linear values (scene linear), premultiplied by alpha: they are divided by it and encoded with
    the sRGB transfer, as Blender shows the image (Non-Color data is left linear); a byte image's values are taken as
    they are. An image whose alpha mode is None is opaque.
    """
    width, height = image.size
    pixels = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(pixels)
    np.nan_to_num(pixels, copy=False, nan=0.0, posinf=1.0, neginf=0.0)  # an EXR's NaN: black, not undefined bytes
    rgba = pixels.reshape(height, width, 4)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if image.alpha_mode == 'NONE':
        alpha = np.ones_like(alpha)
    elif image.is_float and image.alpha_mode != 'CHANNEL_PACKED':
        rgb = np.divide(rgb, alpha, out=rgb.copy(), where=alpha > 0)
    if image.is_float and not image.colorspace_settings.is_data:
        rgb = np.clip(rgb, 0.0, 1.0)
        rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1.0 / 2.4) - 0.055)
    return np.clip(np.concatenate([rgb, alpha], axis=2), 0.0, 1.0).astype(np.float32)


def _save_render_png(image, scene, path: str) -> None:
    """Save a Render Result or a Viewer image to ``path`` as an 8-bit RGBA PNG (``Image.save_render``, which writes the
    scene's output format): the scene's output format is PNG, RGBA, 8 bits for the moment, then every setting of it
    is as before (:func:`_format_state`, :func:`_restore_format`).

    Raises:
        RuntimeError: Blender cannot save the image (e.g. nothing was rendered yet).
        InputError: the scene's output format could not be set back.
    """
    settings = scene.render.image_settings
    state = _format_state(settings)
    error = None
    try:
        for name, value in _PNG_RGBA_8.items():
            if name in settings.bl_rna.properties:  # media_type: Blender 5.0 on
                setattr(settings, name, value)
        image.save_render(filepath=path, scene=scene)
    except (AttributeError, TypeError, ValueError) as err:  # a linked, read-only scene; an older Blender's values
        error = err
    finally:
        failed = _restore_format(settings, state)
        if failed:
            cause = f" (after: {error})" if error is not None else ""
            raise InputError(f"The scene's output format could not be set back ({', '.join(failed)}){cause}; check it "
                             "in Output Properties > Output.")
    if error is not None:
        raise RuntimeError(f"its scene's output format cannot be set to PNG ({error})")


def _format_state(settings) -> list:
    """Every editable value of ``ImageFormatSettings`` (nested settings as lists), in RNA order (media type, then file
    format, then the settings that depend on it), arrays as tuples."""
    state = []
    for prop in settings.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.type == 'COLLECTION':
            continue
        value = getattr(settings, prop.identifier)
        if prop.type == 'POINTER':
            if value is not None and prop.identifier != "curve_mapping":  # the curve: points, never changed here
                state.append((prop.identifier, _format_state(value)))
        elif not prop.is_readonly and not (prop.type == 'ENUM' and value == ""):  # "": none (a PNG's linear space)
            state.append((prop.identifier, tuple(value) if getattr(prop, "is_array", False) else value))
    return state


def _restore_format(settings, state: list) -> list[str]:
    """Set back the values of :func:`_format_state` that differ now (only those: a derived value such as the white
    point, written back, would move the values it derives from); returns the names that could not be set."""
    failed = []
    for name, value in state:
        if isinstance(value, list):
            failed += _restore_format(getattr(settings, name), value)
            continue
        current = getattr(settings, name)
        if (tuple(current) if isinstance(value, tuple) else current) == value:
            continue
        try:
            setattr(settings, name, value)
        except (TypeError, ValueError, AttributeError):
            failed.append(name)
    return failed


_CLI_WORDS = (
    # "(recon-mesh --save-mask, the add-on's Object Mask)", "recon-mesh --mask MASK.png; the add-on's Object: Mask
    # Image", "recon-mesh --save-mask or the add-on's Object Mask", "(--height-mm, the add-on's Height)", "(--mask, Use
    # This Mask)", "--mask or Use This Mask": the command line's half goes
    (re.compile(r"(?:recon-mesh )?--[a-z][a-z-]*(?: [A-Z][A-Za-z.]*)?(?:, |; | or )(?=the add-on's |Use This Mask)"), ""),
    # "--solid (the add-on's Fill Hollow Pockets) fills them", "--category NAME (the add-on's Category) names it"
    (re.compile(r"--[a-z][a-z-]*(?: [A-Za-z]+)? \(the add-on's ([^)]+)\)"), r"\1"),
    (re.compile(r"the add-on's "), ""),
    # "thicken them here", the next note saying how they are marked (it said "marked" twice in a row)
    (re.compile(r" in your modeller \(the add-on marks them\)"), " here"),
)
"""How the worker's sentences, written for both front ends, read in Blender: the command line's options named beside
the add-on's controls are left out, and the add-on's controls named plainly."""


def _user_text(text: str, names: dict[str, str]) -> str:
    """``text`` (a worker's message or note) with the add-on's temporary files named as the user knows them, and the
    command line's options named beside the add-on's controls left out (:data:`_CLI_WORDS`).

    Args:
        names: temporary file path -> what it holds, e.g. "Blender image chair" or "mask image chair mask".

    "/tmp/reconstruct-from-image-x.png is one uniform colour" becomes "The Blender image chair is one uniform
    colour", "The mask /tmp/reconstruct-from-image-y.png is ..." "The mask image chair mask is ...", "the object is the
    mask /tmp/reconstruct-from-image-y.png" "the object is the mask image chair mask": the worker's own word for the
    file ("the mask", "the picture") gives way.
    """
    for path, name in names.items():
        if path not in text:
            continue
        text = re.sub(rf"\b([Tt]he) (?:mask|picture|image) {re.escape(path)}", lambda m: f"{m.group(1)} {name}", text)
        text = re.sub(rf"^{re.escape(path)}", lambda m: f"The {name}", text)
        text = text.replace(path, f"the {name}")
    for pattern, replacement in _CLI_WORDS:
        text = pattern.sub(replacement, text)
    return text


class _Reconstruction:
    """One click: the inputs read at the click, the worker job, and the object made from its result."""

    def __init__(self, context):
        settings = context.scene.recon_settings
        prefs = get_preferences(context)
        self.window_manager = self.timer = self.workspace = None  # what the operator shows meanwhile: end_ui
        self.temp_file = self.mask_dir = self.object_mask = self.mask_temp = None
        # the user's mask image this run takes, by name (an undo meanwhile invalidates a reference)
        self.used_mask = settings.mask_image.name if settings.object_source == 'MASK' and settings.mask_image else None
        self.names: dict[str, str] = {}  # temporary file -> how messages name it (_user_text)
        self.warnings: list[str] = []
        python_path, model_path = prefs.python_path.strip(), prefs.model_path.strip()  # pasted with spaces
        python = _interpreter(python_path) if python_path else ""
        model = _absolute_path(model_path, "model file") if model_path else None
        worker_client.check_model(model)  # about the preferences' Model, before a worker starts
        self.height_mm = settings.height_mm if settings.height_mm > 0 else None
        least = worker_client.MIN_HEIGHT_MM
        if self.height_mm is not None and self.height_mm < least:
            raise InputError(f"Height (mm) must be 0 (the model's size) or at least {least:g} mm, got "
                             f"{self.height_mm:g}.")
        # the inputs checked, the temporary copies made last: cleanup() removes them from here on (and a killed
        # Blender's, the first time)
        worker_client.sweep_stale_temp_once()
        self.image, self.name, self.temp_file, self.picture = _image_input(settings, context.scene)
        if self.temp_file is not None:  # a PNG copy of an OpenEXR or HDR file, or of a Blender image
            self.names[self.temp_file] = (f"image file {self.picture}" if settings.source == 'FILE'
                                          else self.picture)
        self.count = settings.candidates
        # where the result goes: the scene clicked in, its active collection, view layer and cursor (place)
        self.scene, self.scene_name = context.scene, context.scene.name
        collection = context.collection
        self.collection = None if collection is None or collection == context.scene.collection else collection
        self.collection_name = self.collection.name if self.collection is not None else None
        self.view_layer_name = context.view_layer.name if context.view_layer is not None else None
        self.location = context.scene.cursor.location.copy()
        self.started = time.perf_counter()
        try:
            if settings.object_source == 'MASK':
                if settings.mask_image is None:
                    raise InputError("Choose the object's mask image in the Reconstruct panel, or click Find It.")
                made_for = settings.mask_image.get(PICTURE_KEY)
                if isinstance(made_for, str) and not _same_picture(made_for, self.picture):
                    # a mask the add-on made (Use This Mask) is another picture's: taken, it silently cut this
                    # picture to that object's outline; a mask the user made has no record and is taken as given
                    theirs, ours = _picture_name(made_for), _picture_name(self.picture)
                    if theirs == ours:  # two files of one name: the folders tell them apart
                        theirs, ours = made_for, self.picture
                    raise InputError(f"The mask image {settings.mask_image.name} is the object of {theirs}, not of "
                                     f"{ours}; click Find It, or choose this picture's mask.")
                self.object_mask, self.mask_temp = _image_file(settings.mask_image, context.scene, "mask image")
                if self.mask_temp is not None:
                    self.names[self.mask_temp] = f"mask image {settings.mask_image.name}"
            try:
                self.mask_dir = tempfile.mkdtemp(prefix=worker_client.TEMP_PREFIX)
            except OSError as err:
                raise InputError(worker_client.temp_folder_sentence(err)) from None
            client = worker_client.get_client(python, model, repo=DEFAULTS["repo"])
            self.job = client.submit(
                self.image, category=None if settings.category == 'AUTO' else settings.category,
                detail=settings.detail.lower(), height_mm=self.height_mm, timeout_s=prefs.timeout_s,
                mask_path=os.path.join(self.mask_dir, "mask.png"), candidates=self.count,
                picture_path=os.path.join(self.mask_dir, "picture.jpg"),
                object_mask=self.object_mask, solid=settings.solid, upright=settings.upright,
            )
        except BaseException:
            self.cleanup()
            raise

    stage = property(lambda self: self.job.stage)
    fraction = property(lambda self: self.job.fraction)
    elapsed = property(lambda self: time.perf_counter() - self.started)

    def poll(self, wait_s: float = 0.0) -> bool:
        """True once the result is in, waiting at most ``wait_s`` for the worker's next message; raises
        ``WorkerError``, which names the user's images, not the add-on's temporary copies (:meth:`user_text`)."""
        try:
            return self.job.poll(wait_s)
        except worker_client.WorkerError as err:
            raise worker_client.WorkerError(self.user_text(str(err))) from None

    def user_text(self, text: str) -> str:
        """A worker's message or note with the temporary copies named as the user knows them (:func:`_user_text`)."""
        return _user_text(text, self.names)

    def cancel(self) -> None:
        """Stop the worker, remove the temporary files and end what the operator shows (:meth:`end_ui`)."""
        self.job.cancel()
        self.cleanup()
        self.end_ui()

    def end_ui(self) -> None:
        """Remove the modal operator's timer, end the progress and clear the status text, once.

        Kept here rather than on the operator: when the add-on is disabled or the scripts reloaded during a run,
        Blender frees the modal operator without calling its ``cancel``, and :func:`cancel_running` is all that runs.
        """
        wm, self.window_manager = self.window_manager, None
        if wm is None:
            return
        if self.timer is not None:
            wm.event_timer_remove(self.timer)
            self.timer = None
        wm.progress_end()
        if self.workspace is not None:
            self.workspace.status_text_set(None)
            self.workspace = None

    def cleanup(self) -> None:
        """Remove the run's temporary files; never fails (Windows refuses to remove a file another program still holds
        open, e.g. a worker being stopped or a virus scanner: it is left for :func:`worker_client.sweep_stale_temp`),
        so that what the operator shows always ends after it."""
        for temp in (self.temp_file, self.mask_temp):
            if temp:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        self.temp_file = self.mask_temp = None
        if self.mask_dir:
            shutil.rmtree(self.mask_dir, ignore_errors=True)
        self.mask_dir = None

    def build(self, context) -> list:
        """Create the object(s) and the mask image from the result; returns the objects, the shown one first.

        One shape (Candidates at 1, or the worker sent one) makes one object, as it always has; several make
        one object each, in a new collection, the first shown and the others hidden. They go where Reconstruct was
        clicked (:meth:`place`: that scene, in the units it has now, its active collection, at its cursor), whichever
        scene is shown when the result comes in; smooth-shaded; the shown one is selected and active. When the 3D
        Viewport is in Local View, they are in it, as Blender's Add menu puts a new object there.

        All or nothing: should anything fail, what was made so far is removed and an earlier mask
        of the picture is left as it was; only then is that earlier mask replaced.
        """
        result = self.job.result
        scene, parent, view_layer, location = self.place(context)
        here = scene == context.scene and view_layer == context.view_layer  # the window shows that view layer
        mm = mm_per_unit(scene)
        scale = 1.0 / mm if self.height_mm else 1.0  # worker units -> Blender units
        shapes = result.candidates[:self.count] if self.count > 1 and len(result.candidates) > 1 else [result]
        objects, meshes = [], []
        collection = mask = self.shown = None
        try:
            mask = self._load_mask(result.mask_path, result.mask_unsure)
            if any(getattr(shape, "camera", None) is not None for shape in shapes):  # else nothing would show it
                self.shown = self._load_shown(getattr(result, "picture_path", None))
            # the run's own notes (fewer candidates than asked, a mask not written) are in the result's, not in any
            # candidate's: every object keeps them beside its own
            first = result.candidates[0].notes if getattr(result, "candidates", None) else result.notes
            shared = [note for note in result.notes if note not in first]
            for rank, shape in enumerate(shapes, 1):
                name = self.name if len(shapes) == 1 else f"{self.name} {rank}"
                obj = self._new_object(name, shape, scale, 1.0 if self.height_mm else mm, mask, objects, meshes,
                                       location, shared)
                if len(shapes) > 1:
                    obj[CANDIDATE_KEY] = _candidate_property(rank, shape.confidence, name, shape.likelihood)
            if here and context.object is not None and context.object.mode != 'OBJECT':
                bpy.ops.object.mode_set(mode='OBJECT')
            if len(shapes) > 1:
                collection = bpy.data.collections.new(f"{self.name} candidates")
                collection[CANDIDATES_KEY] = self.picture
                record = getattr(collection, CANDIDATE_OBJECTS)
                for obj in objects:
                    record.add().obj = obj
                parent.children.link(collection)
            for obj in objects:
                (collection or parent).objects.link(obj)
            _show_only(objects[0], objects, view_layer)
            space = getattr(context, "space_data", None) if here else None
            if space is not None and space.type == 'VIEW_3D' and space.local_view is not None:
                for obj in objects:
                    obj.local_view_set(space, True)
        except BaseException:
            for obj in objects:
                bpy.data.objects.remove(obj)
            for mesh in meshes:
                bpy.data.meshes.remove(mesh)
            if collection is not None:
                bpy.data.collections.remove(collection)
            if mask is not None:
                bpy.data.images.remove(mask)
            if self.shown is not None:
                bpy.data.images.remove(self.shown)
            raise
        if mask is not None:
            for painted in _replace_masks(mask, self.picture, f"{self.name} mask", self.used_mask):
                why = f"this run took {self.used_mask}" if self.used_mask else "Object is Find It"
                self.warnings.append(f"The mask image {painted} was painted but not used ({why}): it is kept as "
                                     "painted; to reconstruct with it, select one of its objects, press Use This "
                                     "Mask, then Reconstruct.")
        if self.shown is not None:
            _replace_shown(self.shown, self.picture, f"{self.name} picture")
        return objects

    def place(self, context) -> tuple:
        """``(scene, collection, view_layer, location)`` where the result goes: the scene Reconstruct was clicked in,
        with its active collection, view layer and cursor of that moment, whichever scene is shown now.

        What was deleted (or renamed and undone) meanwhile gives way: the scene to the current one (a warning says so),
        the collection to the scene's own, the view layer to the one shown (or the scene's first). References that an
        undo invalidated are found again by name.
        """
        scene = _alive(self.scene) or bpy.data.scenes.get(self.scene_name)
        location = self.location
        if scene is None:
            scene = context.scene
            location = scene.cursor.location.copy()
            self.warnings.append(f"The scene {self.scene_name} was deleted while the reconstruction ran; the result "
                                 f"is in the scene {scene.name}, at its cursor.")
        collection = None
        if self.collection_name is not None:
            collection = _alive(self.collection) or bpy.data.collections.get(self.collection_name)
            if collection is not None and collection not in scene.collection.children_recursive:
                collection = None  # deleted, or taken out of the scene: the scene's own collection
            elif collection is not None and (collection.library is not None or collection.override_library is not None
                                             or not collection.is_editable):
                self.warnings.append(f"The active collection {collection.name} is linked or overridden from another "
                                     "file and cannot take objects; the result is in the scene's own collection.")
                collection = None
        view_layer = scene.view_layers.get(self.view_layer_name or "")
        if view_layer is None:
            view_layer = context.view_layer if scene == context.scene else scene.view_layers[0]
        path = _layer_path(view_layer.layer_collection, collection) if collection is not None else []
        layer = path[-1] if path else None
        if any(above.exclude for above in path):  # its objects are not in the view layer: none could be selected
            self.warnings.append(f"The active collection {collection.name} is excluded from the view layer; the result "
                                 "is in the scene's own collection.")
            collection = None
        elif layer is not None and not layer.visible_get():
            self.warnings.append(f"The active collection {collection.name} is hidden, and the result with it: show the "
                                 "collection, and those it is in, in the Outliner to see it.")
        return scene, collection or scene.collection, view_layer, location

    def _new_object(self, name: str, shape, scale: float, mm_per_worker_unit: float, mask, objects: list,
                    meshes: list, location, shared: list[str] = ()):
        """A new object, not yet linked, holding ``shape``'s mesh (a result or a candidate) at ``location`` (the
        cursor), with its printable check, the mask and its notes (its own, then the run's ``shared`` ones);
        appended with its mesh to ``objects`` and ``meshes`` as they are made."""
        mesh = bpy.data.meshes.new(name)
        meshes.append(mesh)
        fill_mesh(mesh, mesh_data.to_blender(shape.verts, scale), shape.faces)
        mesh.shade_smooth()
        thin = getattr(shape, "thin_faces", None)
        if thin is not None and len(thin):
            mark_thin_faces(mesh, thin)
        mesh.update()
        obj = bpy.data.objects.new(name, mesh)
        objects.append(obj)
        obj.location = location
        obj[CHECK_KEY] = _check_property(shape, mm_per_worker_unit, mm_per_worker_unit / scale)
        obj[PICTURE_KEY] = self.picture
        if self.shown is not None:
            obj[PICTURE_IMAGE_KEY] = self.shown
        camera = getattr(shape, "camera", None)
        if camera is not None:
            try:
                obj[VIEW_KEY] = mesh_data.picture_view(camera, shape.verts, scale)
            except ValueError:  # a mesh partly behind its camera: no view through it (never seen; the mesh is kept)
                pass
        if mask is not None:
            obj[MASK_KEY] = mask
        notes = [_sentence(self.user_text(note)) for note in [*(getattr(shape, "notes", None) or []), *shared]]
        if thin is not None and len(thin):
            notes.append(_sentence(THIN_HINT))
        if notes:
            obj[NOTES_KEY] = "\n".join(notes)
        return obj

    def _load_shown(self, path: str | None):
        """A new image datablock of the picture the worker wrote as it read it (``picture_path``), packed (the file is
        temporary), or None (none sent, or a worker that predates it). One that cannot be read is a warning: the mesh
        is made, and Look Through Picture shows its camera alone."""
        return self._packed_image(path, {SHOWN_KEY: self.picture}, data=False,
                                  failed="The picture could not be loaded to be shown ({}); Look Through Picture will "
                                         "show the camera alone.")

    def _load_mask(self, path: str | None, unsure: bool = False):
        """A new image datablock of the mask PNG the worker wrote, packed (the file is temporary), or None; ``unsure``
        (the finder was unsure of it) is kept on it (:data:`UNSURE_KEY`).

        A mask that cannot be read is a warning, not a failure: the mesh is made without it.
        """
        image = self._packed_image(path, {PICTURE_KEY: self.picture, UNSURE_KEY: bool(unsure)}, data=True,
                                   failed="The object mask could not be loaded ({}); the mesh was made without it.")
        if image is not None and image.packed_file is not None:
            image[MADE_KEY] = hashlib.sha1(image.packed_file.data).hexdigest()
        return image

    def _packed_image(self, path: str | None, properties: dict, data: bool, failed: str):
        """A new image datablock of the file ``path`` the worker wrote, packed (the file is temporary), with the custom
        ``properties``, its pixels read as data (not colour) when ``data``; None for no path. A file Blender cannot
        read is the warning ``failed`` (its ``{}`` the error), and None."""
        if path is None:
            return None
        image = None
        try:
            image = bpy.data.images.load(path, check_existing=False)
            if not all(image.size):  # loading is lazy: a file Blender cannot decode shows here
                raise RuntimeError(f"{path} is not an image Blender can read")
            if data:
                image.colorspace_settings.name = 'Non-Color'  # a mask's pixels are its values
            image.pack()
            for key, value in properties.items():
                image[key] = value
        except BaseException as err:
            if image is not None:
                bpy.data.images.remove(image)
            if not isinstance(err, RuntimeError):
                raise
            self.warnings.append(failed.format(err))
            return None
        return image


def _alive(data):
    """``data`` (an ID such as a scene or a collection), or None when it was deleted or an undo invalidated its Python
    reference (Blender then raises ReferenceError)."""
    if data is None:
        return None
    try:
        data.name
    except ReferenceError:
        return None
    return data


def _replace_masks(image, picture: str, name: str, used: str | None = None) -> list[str]:
    """Make ``image`` the one mask image of ``picture``, named ``name``: earlier ones of the same picture file (its
    path, or a copy of it that holds the same bytes: a project copied elsewhere records the old path) hand it their
    users (objects made from it, image editors showing them) and are removed. A mask whose recorded file is gone
    stays (it may be another product's picture of the same name: its objects keep their own mask), and so does one
    painted (:func:`_painted`: saved or not) that this run did not use (``used``: the name of the user's mask image it
    took): the painting was lost when Object was Find It. Returns the names of the painted ones kept that were not
    said yet (:data:`WARNED_KEY`)."""
    painted = []
    for old in [i for i in bpy.data.images if i != image and i.library is None
                and isinstance(i.get(PICTURE_KEY), str) and _same_picture(i[PICTURE_KEY], picture, False)]:
        if old.name != used and _painted(old):
            if not old.get(WARNED_KEY):  # said once: it stays through every later run of the picture
                painted.append(old.name)
                old[WARNED_KEY] = True
            continue
        old.user_remap(image)
        bpy.data.images.remove(old)
    image.name = name
    _set_mask_file(image)
    return painted


def _replace_shown(image, picture: str, name: str) -> None:
    """Make ``image`` the one shown picture of ``picture`` (:data:`SHOWN_KEY`), named ``name``, its packed file
    ``//NAME.jpg``: earlier ones that hold the same picture (the same packed bytes: the worker writes the same file
    for the same pixels) hand it their users (objects made from it, the image empties of their cameras) and are
    removed; one of another picture at that path (the file changed since) stays with its objects, whose cameras were
    fitted to it."""
    data = _image_bytes(image)
    for old in [i for i in bpy.data.images if i != image and i.library is None and isinstance(i.get(SHOWN_KEY), str)
                and _same_picture(i[SHOWN_KEY], picture, False) and data is not None and _image_bytes(i) == data]:
        old.user_remap(image)
        bpy.data.images.remove(old)
    image.name = name
    path = f"//{file_stem(image.name)}.jpg"
    image.filepath_raw = path
    for packed in image.packed_files:
        packed.filepath = path


def _image_bytes(image) -> bytes | None:
    """The bytes of an image's file: its packed file's, or, once unpacked, its file's on disk; None when neither."""
    if image.packed_file is not None:
        return image.packed_file.data
    try:
        with open(bpy.path.abspath(image.filepath_raw), "rb") as f:
            return f.read()
    except OSError:
        return None


def _painted(image) -> bool:
    """Whether the mask ``image`` was painted since the worker made it: not saved yet (``is_dirty``), or saved since
    (Image > Save repacks a packed image, Pack too, and both clear ``is_dirty``: such a painting was replaced without a
    word): its packed PNG, or for a mask unpacked to a file, that file, differs from the worker's PNG
    (:data:`MADE_KEY`; the bytes, not the pixels: a photo's mask is a picture's size). A packed mask's path is not
    read: a file of that name there may be the user's own. A mask made before the digest was kept counts by
    ``is_dirty`` alone."""
    if image.is_dirty:
        return True
    made = image.get(MADE_KEY)
    if not isinstance(made, str):
        return False
    if image.packed_file is not None:
        return hashlib.sha1(image.packed_file.data).hexdigest() != made
    try:
        with open(bpy.path.abspath(image.filepath_raw), "rb") as file:
            return hashlib.sha1(file.read()).hexdigest() != made
    except OSError:  # its file gone: nothing saved to compare
        return False


def _set_mask_file(image) -> None:
    """Give the packed mask ``image`` the file ``//NAME.png`` (its name cleaned for a file name), where Unpack
    Resources writes it (next to the .blend, or in its ``textures`` folder): the image and its packed file otherwise
    keep the worker's temporary file, removed after the run, and every mask would unpack as ``mask.png``."""
    path = f"//{file_stem(image.name)}.png"
    image.filepath_raw = path  # not ``filepath``, whose update reloads the image from the file
    for packed in image.packed_files:
        packed.filepath = path


def _candidate_property(rank: int, confidence: float | None, name: str, likelihood: str = "") -> dict:
    """A candidate's rank, confidence, how likely it is in words against the likeliest when they were made
    (``likelihood``, the worker's: the words stay when that one is deleted) and the ``name`` it was given ("chair 2")
    as an ID property (:data:`CANDIDATE_KEY`); -1.0 for a confidence the model did not give."""
    return {"rank": int(rank), "confidence": -1.0 if confidence is None else float(confidence),
            "likelihood": likelihood, "name": name}


def candidate_info(obj) -> tuple[int, float | None]:
    """``(rank, confidence or None)`` of a candidate object; ``(0, None)`` when its property is missing or damaged."""
    info = obj.get(CANDIDATE_KEY) if obj is not None else None
    try:
        rank, confidence = int(info["rank"]), float(info["confidence"])
    except (TypeError, KeyError, ValueError):
        return 0, None
    return rank, confidence if confidence >= 0 else None


def is_candidate(obj, collection) -> bool:
    """Whether ``obj`` is one of the candidates the reconstruction made in the candidate ``collection``: it holds
    :data:`CANDIDATE_KEY` and the collection's record points at it (:data:`CANDIDATE_OBJECTS`). A collection saved
    before the record existed: its recorded names (:data:`CANDIDATE_NAMES_KEY`), or, before those, every object with
    the property."""
    if obj is None or CANDIDATE_KEY not in obj:
        return False
    record = getattr(collection, CANDIDATE_OBJECTS, None)
    if record:
        return any(entry.obj == obj for entry in record)
    names = collection.get(CANDIDATE_NAMES_KEY)
    return names is None or obj.name in names


def candidate_collection(obj):
    """The candidate collection (:data:`CANDIDATES_KEY`) that the candidate ``obj`` is in, or None."""
    if obj is None or CANDIDATE_KEY not in obj:
        return None
    return next((c for c in obj.users_collection if CANDIDATES_KEY in c and is_candidate(obj, c)), None)


def candidates_of(collection, view_layer) -> list:
    """The candidate objects of ``collection`` (:func:`is_candidate`) that are in ``view_layer``, by rank."""
    objects = [o for o in collection.objects if is_candidate(o, collection) and view_layer.objects.get(o.name) == o]
    return sorted(objects, key=lambda o: (candidate_info(o)[0], o.name))


def shown_candidate(candidates: list, view_layer, active):
    """The candidate on show: ``active`` when it is a visible one, else the first visible one, else ``active``
    (or the first, when ``active`` is none of them)."""
    visible = [o for o in candidates if not o.hide_get(view_layer=view_layer)]
    if active in candidates and (active in visible or not visible):
        return active
    return visible[0] if visible else candidates[0]


def _layer_path(layer, collection) -> list:
    """The layer collections from ``layer`` (a view layer's root) down to the one of ``collection``; [] when none."""
    if layer.collection == collection:
        return [layer]
    for child in layer.children:
        found = _layer_path(child, collection)
        if found:
            return [layer, *found]
    return []


def _show_only(shown, objects: list, view_layer) -> None:
    """Show ``shown`` and hide the other ``objects`` (in the viewport, with the eye, and in renders); select only
    ``shown`` and make it active."""
    for obj in objects:
        obj.hide_set(obj != shown, view_layer=view_layer)
        obj.hide_render = obj != shown
    for other in view_layer.objects:
        other.select_set(False, view_layer=view_layer)
    shown.select_set(True, view_layer=view_layer)  # also in a view layer that is not shown (another scene's)
    view_layer.objects.active = shown


def _sentence(text: str) -> str:
    """``text`` as a sentence: its first letter upper-case, a full stop at its end."""
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}" + ("" if text.endswith((".", "!", "?")) else ".")


def notes_of(obj) -> list[str]:
    """The notes of a reconstructed object (:data:`NOTES_KEY`), one sentence each; [] for any other object."""
    notes = obj.get(NOTES_KEY) if obj is not None else None
    return [line for line in notes.split("\n") if line] if isinstance(notes, str) else []


AGAINST_THE_LIKELIEST = {"about as likely": " as the likeliest", "less likely": " than the likeliest",
                         "much less likely": " than the likeliest"}
"""A copy of :data:`recon_core.io.notes.AGAINST_THE_LIKELIEST` (Blender's Python has no recon_core): what Next
Shape says a candidate's words against."""


def candidate_likelihood(obj) -> str:
    """How likely candidate ``obj`` is in words against the likeliest when they were made, as the worker said it
    (:func:`recon_core.io.notes.likelihood_text`: "the likeliest", "about as likely", ...); "" when not said."""
    info = obj.get(CANDIDATE_KEY) if obj is not None else None
    try:
        words = info["likelihood"]
    except (TypeError, KeyError):
        return ""
    return words if isinstance(words, str) else ""


def _check_property(result, mm_per_worker_unit: float, mm_per_blender_unit: float) -> dict:
    """The printable check as an ID property (only bools, numbers and strings), with what the panel scales the volume
    by (:func:`volume_now`): the scene's millimetres per unit and the mesh's box (``size_mm``) as made."""
    report = result.report
    volume = report.get("volume")
    return {
        "ok": bool(report.get("ok", False)),
        "watertight": bool(report.get("watertight", False)),
        "manifold": bool(report.get("edge_manifold", False) and report.get("vertex_manifold", False)),
        "volume_mm3": float(volume) * mm_per_worker_unit ** 3 if volume is not None else -1.0,
        "summary": str(report.get("summary", "")),
        "category": result.category,
        "faces": int(len(result.faces)),  # the panel tells an edited mesh by its count (RECON_PT_check)
        # its box in Blender's axes (x, y, z: the output frame's x, z, y): an edit that moves it shows (volume_now)
        "size_mm": [float(s) * mm_per_worker_unit for s in np.ptp(np.asarray(result.verts), axis=0)[[0, 2, 1]]],
        "mm_per_unit": float(mm_per_blender_unit),
    }


def mesh_edited(obj, check) -> bool:
    """Whether ``obj``'s mesh is not the reconstruction its ``check`` (:data:`CHECK_KEY`) was made for: other faces, a
    modifier, or its box moved (vertices moved out, Apply Scale); vertices moved inside the box do not show."""
    faces = check.get("faces")
    if (faces is not None and len(obj.data.polygons) != faces) or len(obj.modifiers):
        return True
    made, mm = check.get("size_mm"), check.get("mm_per_unit")
    if made is None or mm is None or len(made) != 3:  # made before the box was kept: the faces alone tell
        return False
    corners = np.array([tuple(c) for c in obj.bound_box], dtype=np.float64)  # local, before the object's transform
    box = np.ptp(corners, axis=0) * float(mm)
    return not np.allclose(box, np.asarray(made, dtype=np.float64), rtol=1e-4, atol=1e-6)


SIZE_VERTICES_MAX = 200_000
"""Above this many vertices the panel's size is that of the object's bounding box turned into the world (a little
larger than the mesh's when it is turned by other than right angles), so that drawing the panel stays quick."""


def size_mm(context, obj) -> np.ndarray:
    """(3,) ``obj``'s size in millimetres along the world's X, Y and Z (width, depth, height), as the exports write it:
    the extent of its mesh as the scene shows it (modifiers applied, turned, scaled), in the scene's unit. With
    modifiers, shape keys or in Edit Mode, read from the view layer's evaluated data as it stands (drawing a panel must
    not evaluate the scene); a mesh of more than :data:`SIZE_VERTICES_MAX` vertices, or an object that is not a mesh,
    gives its bounding box's extent instead."""
    evaluated = obj
    shaped = getattr(getattr(obj, "data", None), "shape_keys", None) is not None
    if (any(m.show_viewport for m in getattr(obj, "modifiers", ())) or shaped or obj.mode == 'EDIT') \
            and context.view_layer is not None:  # the mesh as shown differs from its data: the evaluated one
        evaluated = obj.evaluated_get(context.view_layer.depsgraph)
    data = evaluated.data
    if isinstance(data, bpy.types.Mesh) and 0 < len(data.vertices) <= SIZE_VERTICES_MAX:
        coords = np.empty(len(data.vertices) * 3, dtype=np.float64)
        data.vertices.foreach_get("co", coords)
        coords = coords.reshape(-1, 3)
    else:
        coords = np.array([tuple(corner) for corner in evaluated.bound_box], dtype=np.float64)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    world = coords @ matrix[:3, :3].T + matrix[:3, 3]
    return (world.max(0) - world.min(0)) * mm_per_unit(context.scene)


def volume_text(volume_mm3: float) -> str:
    """A volume as the panel writes it: "26.79 cm³" from 1 cm³ up, "28.4 mm³" below (a 10 mm part was "0.03 cm³")."""
    if volume_mm3 >= 999.5:  # 999.7 mm³ is "1.00 cm³", not "1e+03 mm³"
        return f"{volume_mm3 / 1000.0:,.2f} cm³"
    return f"{volume_mm3:.3g} mm³" if volume_mm3 >= 0.01 else "under 0.01 mm³"


def volume_now(obj, check, mm_per_scene_unit: float) -> float | None:
    """The volume in mm³ of ``obj`` as the scene has it now (its transform's scale, the scene's unit) when that differs
    from the volume as made; None otherwise, and in Edit Mode (its faces are stale there). The caller has made sure
    that the mesh is the reconstruction's (:func:`mesh_edited`)."""
    volume, mm = check.get("volume_mm3", -1.0), check.get("mm_per_unit")
    if volume < 0 or mm is None or obj.mode == 'EDIT':
        return None
    factor = abs(np.linalg.det(np.array(obj.matrix_world.to_3x3(), dtype=np.float64))) * (mm_per_scene_unit / mm) ** 3
    return None if abs(factor - 1.0) <= 1e-3 else volume * factor


def _tag_redraw(context) -> None:
    if context.screen is not None:
        for area in context.screen.areas:
            if area.type == 'VIEW_3D':
                area.tag_redraw()


STATUS_SHOWN_S = 10.0
"""How long a sentence that no report can carry stays in the status bar (:func:`_show_in_status_bar`)."""
_STATUS_CLEAR = None  # the timer that clears the last such sentence, at most one


def _invoke_soon(window, area, region) -> None:
    """Start Reconstruct from Image's modal run (as a click does) in ``window`` once Blender's event loop runs again;
    nothing when that window is gone or a run is already going by then. Its sentence when it cannot start (no image
    chosen, ...) goes to the status bar: an operator called from a timer cannot report to the window."""

    def start():
        if window not in bpy.context.window_manager.windows[:]:
            return None
        screen_areas = window.screen.areas[:] if window.screen is not None else []
        inside = {"area": area, "region": region} if area in screen_areas and region in area.regions[:] else {}
        with bpy.context.temp_override(window=window, **inside):
            if not bpy.ops.recon.reconstruct_image.poll():  # a run already going
                return None
            try:
                bpy.ops.recon.reconstruct_image('INVOKE_DEFAULT')
            except RuntimeError as err:  # its own sentence, which Blender raises here instead of reporting it
                _show_in_status_bar(window, f"Reconstruct from Image: {_operator_error(err)}.")
        return None  # once

    bpy.app.timers.register(start, first_interval=0.0)


def _operator_error(err: RuntimeError) -> str:
    """The clause an operator's RuntimeError carries: its report ("Error: ..." less its prefix and final stop), or, for
    an exception Blender turned into one (its traceback, then "Location: ..."), the exception's own last line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("Location:")]
    if any("Traceback (most recent call last)" in line for line in lines):
        return f"failed unexpectedly ({lines[-1].rstrip('.')})"
    return _blender_error(err)


def _show_in_status_bar(window, text: str) -> None:
    """``text`` in the status bar of ``window``'s workspace for :data:`STATUS_SHOWN_S` seconds, then cleared (unless a
    run shows its progress there by then); a later sentence replaces it and is shown its own full time. Blender sets
    the status text of the context's workspace, so both happen with ``window`` as the context."""
    global _STATUS_CLEAR
    workspace = window.workspace
    _set_status(window, text)
    if _STATUS_CLEAR is not None and bpy.app.timers.is_registered(_STATUS_CLEAR):
        bpy.app.timers.unregister(_STATUS_CLEAR)

    def clear():
        global _STATUS_CLEAR
        if _RUNNING is None and workspace in bpy.data.workspaces[:]:  # else a run's progress, or nothing, is there
            showing = [w for w in bpy.context.window_manager.windows if w.workspace == workspace]
            if not showing:
                return 1.0  # the user moved to another workspace: cleared once a window shows it again
            _set_status(showing[0], None)
        _STATUS_CLEAR = None
        return None

    _STATUS_CLEAR = clear
    bpy.app.timers.register(clear, first_interval=STATUS_SHOWN_S)


def _set_status(window, text: str | None) -> None:
    """Set (None: clear) the status text of the workspace ``window`` shows: Blender sets the context's."""
    with bpy.context.temp_override(window=window):
        window.workspace.status_text_set(text)


class RECON_OT_reconstruct(bpy.types.Operator):
    """Reconstruct a watertight mesh of the object in the chosen image (runs in a separate process)"""

    bl_idname = "recon.reconstruct_image"
    bl_label = "Reconstruct from Image"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        if _RUNNING is not None:
            cls.poll_message_set("A reconstruction is already running (Esc cancels it)")
            return False
        return context.scene is not None

    def invoke(self, context, event):
        failed = self._begin(context)
        if failed:
            return failed
        wm = context.window_manager
        self._timer = self._run.timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        return {'RUNNING_MODAL'}

    def modal(self, context, event):
        if event.type == 'ESC' and event.value == 'PRESS':  # not the release of an Esc that a menu or G/R/S took
            return self._cancel(context)
        if event.type == 'TIMER':
            return self._advance(context)
        return {'PASS_THROUGH'}

    def execute(self, context):
        """Scripts and background mode: the same worker, waited for. Repeat Last (Shift+R) and Repeat History call
        this too; in a window they start the modal run instead (:func:`_invoke_soon`), as waiting here would freeze
        Blender until the mesh is in."""
        if (self.options.is_repeat or self.options.is_repeat_last) and context.window is not None:
            _invoke_soon(context.window, context.area, context.region)
            return {'CANCELLED'}  # nothing changed yet: no undo step; the modal run makes its own
        self._timer = None
        status = self._begin(context)
        while not status:
            status = self._advance(context, wait_s=TIMER_S) - {'PASS_THROUGH'}
        return status

    def cancel(self, context):
        """Blender ends the modal operator (file load, quit): stop the worker too."""
        if getattr(self, "_run", None) is not None:
            self._run.cancel()
            self._end(context)

    # -- steps shared by the modal and the blocking paths --------------------------------------------

    def _begin(self, context):
        """Start the request; returns None when running, else the operator's final status."""
        global _RUNNING
        self._run = None
        try:
            run = _Reconstruction(context)
        except (InputError, worker_client.WorkerError) as err:
            return self._fail(context, str(err))
        except OSError as err:  # the last line of defence: one sentence naming the file, not a traceback
            where = f" ({err.filename})" if err.filename else ""
            return self._fail(context, f"Could not start the reconstruction: {err.strerror or err}{where}.")
        self._run = _RUNNING = run
        context.window_manager.progress_begin(0, 100)
        run.window_manager, run.workspace = context.window_manager, context.workspace  # for run.end_ui
        self._show_progress(context)
        return None

    def _advance(self, context, wait_s: float = 0.0):
        """Poll the worker once, waiting at most ``wait_s`` for its next message (the modal path never waits); build
        the object when the result is in."""
        run = self._run
        try:
            done = run.poll(wait_s)
        except worker_client.WorkerError as err:
            return self._fail(context, str(err))
        if not done:
            self._show_progress(context)
            return {'PASS_THROUGH'}
        try:
            objects = run.build(context)
        except Exception as err:  # noqa: BLE001 - one sentence, the scene unchanged
            return self._fail(context, f"Could not create the mesh in Blender ({type(err).__name__}: {err}).")
        result = run.job.result
        obj = objects[0]
        if obj.name not in context.scene.objects:  # the result is in the scene clicked in, not the one shown now
            self.report({'INFO'}, f"{obj.name} is in the scene {obj.users_scene[0].name}, where Reconstruct was "
                                  "clicked.")
        check = "printable" if result.report.get("ok") else "NOT printable: see Printable Check"
        landed = obj.users_scene[0] if obj.users_scene else context.scene  # the scene clicked in (its unit)
        unit = mm_per_unit(landed)
        tall = obj.dimensions.z * unit
        # the notes and warnings first, the result's own message last: the status bar shows the last message alone
        if landed.unit_settings.system == 'NONE':  # no unit shown, its greyed-out Unit Scale still counts
            self.report({'WARNING'}, f"Note: the scene \"{landed.name}\" has Unit System None: its Unit Scale still "
                                     f"counts here and in the exports (1 unit = {unit:,g} mm); set Unit System to "
                                     "Metric to see the sizes in millimetres.")
        if run.height_mm is None:  # the model's own size, about 1 unit: its millimetres hang on the scene's unit
            def unsized(height_mm: float) -> str:
                return (f"Height (mm) is 0, so the model chose the size: {height_mm:.1f} mm tall in the scene "
                        f"\"{landed.name}\" (1 unit = {unit:,g} mm). Set Height (mm) to the object's real height "
                        "before you print or export it.")

            self.report({'WARNING'}, f"Note: {unsized(tall)}")
            for made in objects:  # kept on each, first: the reminder outlives the message
                made[NOTES_KEY] = "\n".join([unsized(made.dimensions.z * unit), *notes_of(made)])
        for note in result.notes:
            self.report({'WARNING'}, f"Note: {run.user_text(note)}.")
        if obj.type == 'MESH' and obj.data.attributes.get(THIN_ATTRIBUTE) is not None:
            self.report({'INFO'}, f"{obj.name}: {THIN_HINT}.")
        for warning in run.warnings:
            self.report({'WARNING'}, warning)
        noted = len(notes_of(obj))
        see = f" {noted} note{'s' if noted != 1 else ''} on it: see Notes in the sidebar." if noted else ""
        if len(objects) == 1:
            self.report({'INFO'}, f"Reconstructed {obj.name} ({tall:.1f} mm tall, {len(result.faces):,} faces, "
                                  f"{result.category}, {check}) in {run.elapsed:.1f} s.{see}")
        else:
            likeliest = "the likeliest, " if candidate_likelihood(obj) == "the likeliest" else ""
            self.report({'INFO'}, f"Reconstructed {len(objects)} candidate shapes (collection "
                                  f"\"{candidate_collection(obj).name}\") in {run.elapsed:.1f} s; showing {obj.name} "
                                  f"({likeliest}"
                                  f"{tall:.1f} mm tall, {len(result.faces):,} faces, {result.category}, {check}); "
                                  f"Next Shape ({NEXT_SHAPE_KEYS}) shows the others.{see}")
        self._end(context)
        return {'FINISHED'}

    def _cancel(self, context):
        self._run.cancel()
        self.report({'INFO'}, "Reconstruction cancelled; the scene is unchanged.")
        self._end(context)
        return {'CANCELLED'}

    def _fail(self, context, message: str):
        self.report({'ERROR'}, message)
        self._end(context)
        return {'CANCELLED'}

    def _show_progress(self, context) -> None:
        run = self._run
        context.window_manager.progress_update(int(100 * run.fraction))
        if context.workspace is not None:
            context.workspace.status_text_set(
                f"Reconstructing {run.name}: {run.stage}, {run.elapsed:.0f} s (Esc to cancel)")
        _tag_redraw(context)

    def _end(self, context) -> None:
        global _RUNNING
        self._timer = None
        if getattr(self, "_run", None) is not None:
            self._run.cleanup()
            self._run.end_ui()  # the timer, the progress and the status text
            if _RUNNING is self._run:
                _RUNNING = None
            self._run = None
        _tag_redraw(context)


def candidate_target(context) -> tuple:
    """``(collection, stranded)``: the candidate collection that the candidate operators and the Candidates sub-panel
    work on, or ``(None, False)``.

    The active object's (:func:`candidate_collection`); else, when no object is active, a stranded one
    (:func:`stranded_collection`, ``stranded`` True): the user deleted the candidate on show, which leaves nothing
    active and the others hidden, and Next Shape then shows one of them. With another object active, none: the user
    may have hidden a collection's candidates on purpose, and Next Shape then shows none of them.
    """
    active = context.active_object
    if active is not None:
        return candidate_collection(active), False
    collection = stranded_collection(context.scene, context.view_layer)
    return collection, collection is not None


def stranded_collection(scene, view_layer):
    """The candidate collection of ``scene`` whose candidates in ``view_layer`` are all hidden (the shown one was
    deleted), the last of them in the outliner (the most recent under one parent) when there are several; or None."""
    found = None
    for collection in scene.collection.children_recursive:
        if CANDIDATES_KEY in collection:
            candidates = candidates_of(collection, view_layer)
            if candidates and all(o.hide_get(view_layer=view_layer) for o in candidates):
                found = collection
    return found


def _candidates_unavailable(context, least: int, stranded_ok: bool) -> str | None:
    """Why the candidate operators cannot run now (a sentence for ``poll_message_set``), or None when they can:
    Object Mode, and an active object that is one of at least ``least`` candidates; or, with ``stranded_ok``, a
    stranded collection (:func:`candidate_target`) that holds one at least."""
    if context.mode != 'OBJECT':
        return "Switch to Object Mode first"
    collection, stranded = candidate_target(context)
    if collection is None:
        return "The active object is not a candidate shape (made by Reconstruct from Image with Candidates above 1)"
    if stranded and not stranded_ok:
        return f"No candidate shape of {collection.name} is shown; Next Shape ({NEXT_SHAPE_KEYS}) shows one"
    count = len(candidates_of(collection, context.view_layer))
    if count < (1 if stranded else least):
        return (f"{collection.name} has no other candidate shape to show" if count else
                f"{collection.name} has no candidate shape in this view layer")
    return None


class _CandidateOperator:
    """What the candidate operators share: they run in Object Mode on an active candidate of a collection
    that holds at least ``least`` of them (or, with ``stranded_ok``, on a stranded collection:
    :func:`candidate_target`), and say why not otherwise (:func:`_candidates_unavailable`)."""

    bl_options = {'REGISTER', 'UNDO'}
    least = 1
    stranded_ok = False

    @classmethod
    def poll(cls, context):
        message = _candidates_unavailable(context, cls.least, cls.stranded_ok)
        if message is not None:
            cls.poll_message_set(message)
        return message is None


class RECON_OT_next_candidate(_CandidateOperator, bpy.types.Operator):
    """Hide the shown candidate shape and show the next one of its collection (after the last, the first)"""

    bl_idname = "recon.next_candidate"
    bl_label = "Next Shape"
    least = 2
    stranded_ok = True

    def execute(self, context):
        view_layer = context.view_layer
        collection, stranded = candidate_target(context)
        _forget_deleted(collection)
        candidates = candidates_of(collection, view_layer)
        if stranded:
            index = 0
        else:
            current = shown_candidate(candidates, view_layer, context.active_object)
            index = (candidates.index(current) + 1) % len(candidates)
        shown = candidates[index]
        _show_only(shown, candidates, view_layer)
        moved = _move_picture_camera(collection, shown)
        rank, _ = candidate_info(shown)
        likely = candidate_likelihood(shown)  # said against what: "less likely than the likeliest"
        likely += AGAINST_THE_LIKELIEST.get(likely, "")
        position = index + 1  # the rank, unless candidates were deleted
        check = "printable" if (shown.get(CHECK_KEY) or {}).get("ok") else "NOT printable"
        ranked = f" (ranked {rank} when made)" if rank and rank != position else ""
        said = f"Showing {shown.name}: candidate {position} of {len(candidates)}{ranked}, " \
               f"{likely + ', ' if likely else ''}{check}"
        if moved:
            self.report({'WARNING'}, f"{said}; its picture camera: {moved}.")
        else:
            self.report({'INFO'}, f"{said}.")
        return {'FINISHED'}


class RECON_OT_keep_candidate(_CandidateOperator, bpy.types.Operator):
    """Keep the shown candidate shape: delete the other candidates and move it out of their collection"""

    bl_idname = "recon.keep_candidate"
    bl_label = "Keep This One"

    def execute(self, context):
        view_layer = context.view_layer
        collection = candidate_collection(context.active_object)
        _forget_deleted(collection)
        kept = shown_candidate(candidates_of(collection, view_layer), view_layer, context.active_object)
        others = [o for o in collection.objects if is_candidate(o, collection) and o != kept]  # never the user's
        parents = _parent_collections(collection, context.scene)
        _move_picture_camera(collection, kept)  # before the others go: it may be parented to one of them
        for key in (PICTURE_CAMERA_KEY, PLANE_KEY):  # the collection goes: the kept object holds them now
            held = _alive(collection.get(key))
            if isinstance(held, bpy.types.Object):
                kept[key] = held
        for obj in others:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            if mesh is not None and mesh.users == 0:
                bpy.data.meshes.remove(mesh)
        for parent in parents:
            if parent.objects.get(kept.name) != kept:
                parent.objects.link(kept)
        collection.objects.unlink(kept)
        record = getattr(collection, CANDIDATE_OBJECTS)
        for index in reversed(range(len(record))):  # no longer a candidate; the record's other pointers stay
            if record[index].obj == kept:
                record.remove(index)
        name = collection.name
        if not collection.objects and not collection.children:
            bpy.data.collections.remove(collection)
        _show_only(kept, [kept], view_layer)
        shown_as = kept.name
        _name_as_kept(kept)
        others_said = "the other candidate" if len(others) == 1 else f"the {len(others)} other candidates"
        kept_as = f"Kept {shown_as}" if kept.name == shown_as else f"Kept {shown_as} as {kept.name}"  # not "X as X"
        self.report({'INFO'}, f"{kept_as} and deleted {others_said} of {name}.")
        return {'FINISHED'}


def _name_as_kept(kept) -> None:
    """Name a kept candidate (and its mesh) as one reconstruction of its picture is named: "chair 2" becomes "chair"
    (Blender adds ".001" where that is taken). A candidate kept under its number held it, so the next candidates of
    the picture came out as "chair 1", "chair 2.001", "chair 3". One Blender numbered as made, "chair 2.001" (the
    picture's earlier candidates still there), is named so too. A name the user gave it stays ("table 2" too)."""
    rank, _ = candidate_info(kept)
    made = kept.get(CANDIDATE_KEY, {}).get("name")  # absent from a file saved before it was kept: left as it is
    suffix = f" {rank}"

    def as_made(name: str) -> bool:  # "chair 2", or "chair 2.001" as Blender numbered it
        return isinstance(made, str) and re.fullmatch(re.escape(made) + r"(\.\d{3})?", name) is not None

    if rank and as_made(kept.name) and made.endswith(suffix):
        base = made[: -len(suffix)]
        if isinstance(kept.data, bpy.types.Mesh) and as_made(kept.data.name) and kept.data.users == 1:
            kept.data.name = base
        kept.name = base


def _forget_deleted(collection) -> None:
    """Remove the candidates of ``collection`` that the user deleted (X, Delete): Blender keeps an object that something
    still points at, here the collection's record (:data:`CANDIDATE_OBJECTS`) alone, in no collection; it goes now, with
    its mesh when nothing else uses it, as it went when the user deleted it."""
    for entry in getattr(collection, CANDIDATE_OBJECTS, ()):
        obj = entry.obj
        if obj is not None and not obj.users_collection and obj.users == 1:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            if isinstance(mesh, bpy.types.Mesh) and mesh.users == 0:
                bpy.data.meshes.remove(mesh)


@bpy.app.handlers.persistent
def forget_deleted_before_save(*_):
    """``save_pre``: every candidates collection forgets the candidates the user deleted (:func:`_forget_deleted`),
    so that a file saved without Next Shape or Keep This One pressed since does not carry them (its record's pointer
    keeps such an object and its mesh alive, past File > Clean Up > Purge); and the pictures of picture cameras the
    user deleted go (:func:`_forget_stranded_pictures`)."""
    for collection in bpy.data.collections:
        if collection.library is None and len(getattr(collection, CANDIDATE_OBJECTS, ())):
            _forget_deleted(collection)
    _forget_stranded_pictures()


def _forget_stranded_pictures() -> None:
    """Remove what a deleted picture camera left: the camera itself when only its holder's pointer keeps it (deleted
    with X, in no collection: past Purge, and in the file), with its picture; and a picture's image empty whose camera
    is gone (unparented, or in no collection: not saved). Such an empty can be neither seen (it shows only along its
    axis) nor selected (:func:`picture_camera` makes it so): the designer could not remove it. A camera whose mesh was
    deleted stays: it is in the scene, and the user may keep it to model over the picture."""
    held = [(holder, _alive(holder.get(PICTURE_CAMERA_KEY))) for holder in (*bpy.data.objects, *bpy.data.collections)
            if holder.library is None]
    for holder, camera in held:  # found first: removing a camera removes its picture, another holder's perhaps
        if isinstance(camera, bpy.types.Object) and not camera.users_collection:
            del holder[PICTURE_CAMERA_KEY]
            _remove_picture_camera(camera)
    for obj in list(bpy.data.objects):
        if (obj.library is None and obj.type == 'EMPTY' and (obj.parent is None or not obj.parent.users_collection)
                and obj.hide_select and isinstance(obj.data, bpy.types.Image) and obj.data.get(SHOWN_KEY) is not None):
            bpy.data.objects.remove(obj)


def _parent_collections(collection, scene) -> list:
    """The collections that hold ``collection`` as a child, every scene's own collection among them (a scene that
    links the candidates lost the kept one); ``scene``'s own collection when none does."""
    scenes = [scene.collection, *(s.collection for s in bpy.data.scenes if s != scene and s.library is None)]
    parents = [c for c in (*scenes, *bpy.data.collections) if c.children.get(collection.name) == collection]
    return parents or [scene.collection]


def _world_mesh_mm(context, obj) -> tuple[np.ndarray, np.ndarray]:
    """``obj``'s evaluated mesh (modifiers applied) in world space and millimetres, Blender's +Z up, outward
    faces (also when the object is mirrored by a negative scale).

    Returns:
        (V, 3) float64 vertices in millimetres and (F, 3) int64 triangles (faces split as Blender splits them).
    """
    depsgraph = context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.transform(obj.matrix_world)
        mesh.calc_loop_triangles()
        coords = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", coords)
        tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", tris)
    finally:
        evaluated.to_mesh_clear()
    tris = tris.reshape(-1, 3)
    if obj.matrix_world.is_negative:  # a mirroring transform turns the faces inside out: turn them back
        tris = tris[:, ::-1]
    return coords.reshape(-1, 3) * mm_per_unit(context.scene), tris


_DEVICE_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{kind}{n}" for kind in ("COM", "LPT") for n in range(10))})
"""Names Windows keeps for its devices, whatever the extension (Microsoft's "Naming Files"): a file "CON.stl" is the
console, and what is written there is lost."""


def file_stem(name: str) -> str:
    """``name`` (an object's, an image's) as a file's name without its extension: Blender's clean name, with "_" after
    a name Windows keeps for a device (:data:`_DEVICE_NAMES`; "Con" becomes "Con_")."""
    stem = bpy.path.clean_name(name)
    return stem + "_" if stem.upper() in _DEVICE_NAMES else stem


def export_path(context, ext: str) -> str:
    """The file an export dialog offers: named after the active object (else the .blend file, else "Untitled"), in the
    .blend file's folder, with ``ext`` (ExportHelper alone offered "Untitled.stl" for every object)."""
    obj = context.active_object
    stem = file_stem(obj.name) if obj is not None else ""
    blend = context.blend_data.filepath
    if not stem:
        stem = os.path.splitext(os.path.basename(blend))[0] if blend else "Untitled"
    return os.path.join(os.path.dirname(blend), stem + ext) if blend else stem + ext


class _Export(ExportHelper):
    """ExportHelper offering the active object's name (:func:`export_path`), and the file's path checked before
    anything is written (:meth:`target_problem`)."""

    # ExportHelper's, saying that a "//" path may come (target_problem reads it): a script's filepath="//x.stl" made
    # Blender warn 'does not support blend relative "//" prefix'
    filepath: bpy.props.StringProperty(name="File Path", description="Filepath used for exporting the file",
                                       maxlen=1024, subtype='FILE_PATH', options=set(PATH_OPTIONS))

    def invoke(self, context, event):
        if not self.filepath:
            self.filepath = export_path(context, self.filename_ext)
        return super().invoke(context, event)

    def target_problem(self) -> str | None:
        """One sentence on what keeps the file from being written as this format, the same for both exports (a folder
        given for the file, another extension, a folder that does not exist); None when it can be, with
        ``self.filepath`` made absolute (a ``//`` path is the .blend file's folder's) and the format's extension added
        to a path given without one (a script's ``filepath="part"`` wrote a file named "part")."""
        ext = self.filename_ext
        given = _pasted(self.filepath)  # quotes, a file: URL, ~, as the panel's paths are read
        if not given:
            return f"No file to write: give the {ext[1:].upper()} file's path."
        try:  # // the .blend file's folder, else the working one
            path = _absolute_path(self.filepath, f"{ext[1:].upper()} file")
        except InputError as err:
            return str(err)
        if given.endswith(("/", os.sep)) or os.path.isdir(path):  # "…/exports/" wrote a hidden file "…/exports/.stl"
            return (f"{path} is a folder, not a file; give a file name in it, e.g. "
                    f"{os.path.join(path, 'part' + ext)}.")
        name = os.path.basename(path)
        if name.startswith(".") and "." not in name[1:]:  # ".stl" or ".obj" alone: no name ("…/.stl.stl" was written)
            return (f"{path} has no file name before its extension; give one, e.g. "
                    f"{os.path.join(os.path.dirname(path), 'part' + ext)}.")
        if not os.path.splitext(path)[1]:
            path += ext
        if os.path.splitext(path)[1].lower() != ext:  # Export STL wrote an STL named part.obj
            return f"Cannot write {os.path.basename(path)} as {ext[1:].upper()}: the extension must be {ext}."
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            return f"Cannot write {path}: the folder {folder} does not exist; create it first."
        self.filepath = path
        return None


_MEND = "mend it before printing (Edit Mode: Mesh > Clean Up)."
"""The end of an export's warning that what it wrote would not print (edited since its check, or not ours)."""
_MEND_OUTWARD = "mend it before printing (Edit Mode: select all, Mesh > Normals > Recalculate Outside)."
"""The same for a mesh whose only problem is faces turned inward: Clean Up does not turn them."""
_MEND_CROSSING = ("mend it before printing (Clean Up does not undo faces that cross: a Remesh modifier in Voxel mode, "
                  "applied, makes it one closed solid).")
"""The same for a mesh whose faces cross (self-intersections, alone or with holes)."""
_MEND_HOLES = "mend it before printing (Edit Mode: select all, Mesh > Clean Up > Fill Holes)."
"""The same for a mesh whose only problem is holes."""
_MEND_MODIFIERS = ("Its modifiers made part of what is written, which Edit Mode does not show: change their settings, "
                   "or apply them first.")
"""Said after the way to mend a mesh with modifiers (a Solidify's shell that crosses itself)."""


def _mend(problems: str, modified: bool = False) -> str:
    """The way to mend what ``problems`` (an export's warning) names: faces turned inward alone are turned by
    Recalculate Outside; faces that cross, which Clean Up does not undo, by a Voxel Remesh; holes alone by Clean Up's
    Fill Holes; anything else starts with Clean Up. ``modified``: an object written has modifiers on, whose part Edit
    Mode does not show."""
    turned = ("inside out" in problems or "opposite ways" in problems)
    holes = "watertight" in problems
    worse = any(word in problems for word in ("more than two faces", "self-intersecting", "degenerate", "separate",
                                              "not finite"))
    way = (_MEND_CROSSING if "self-intersecting" in problems else _MEND_OUTWARD if turned and not (holes or worse)
           else _MEND_HOLES if holes and not (turned or worse) else _MEND)
    return f"{way} {_MEND_MODIFIERS}" if modified else way


def _export_objects(context) -> list:
    """The selected mesh objects, or the active one when no mesh is selected (sorted by name)."""
    chosen = [o for o in context.selected_objects if o.type == 'MESH']
    if not chosen and context.active_object is not None and context.active_object.type == 'MESH':
        chosen = [context.active_object]
    return sorted(chosen, key=lambda o: o.name)


class _PrintExport(_Export):
    """What Export STL and Export 3MF share: the objects' meshes (modifiers applied, as they stand to each other in
    the scene, in millimetres) written by ``python -m recon_core.io.export`` in the add-on's interpreter (no torch,
    no model; Blender waits for it), on the build plate, with recon_core's whole printable check and its thin walls
    at the size written: one check for both formats (Export STL checked only the faces in Blender, and said nothing
    of self-intersections or thin walls)."""

    def objects(self, context) -> list:
        """The mesh objects to write (:meth:`execute` refuses an empty list's file)."""
        raise NotImplementedError

    def left_out(self, context) -> str:
        """A sentence on the selected meshes this export does not write; "" when none."""
        return ""

    def execute(self, context):
        problem = self.target_problem()
        if problem:
            self.report({'ERROR'}, problem)
            return {'CANCELLED'}
        objects = []
        for obj in self.objects(context):
            coords, tris = _world_mesh_mm(context, obj)
            if len(tris) == 0:
                self.report({'ERROR'}, f"{obj.name} has no faces to export; deselect it or give it faces.")
                return {'CANCELLED'}
            objects.append((obj.name, coords, tris))
        try:
            python = get_preferences(context).python_path
            written = worker_client.write_print_file(_interpreter(python) if python else "", objects,
                                                     self.filepath, repo=DEFAULTS["repo"])
        except (InputError, worker_client.WorkerError) as err:
            self.report({'ERROR'}, str(err))
            return {'CANCELLED'}
        size = (np.max([c.max(0) for _, c, _ in objects], axis=0) - np.min([c.min(0) for _, c, _ in objects], axis=0))
        summary, *lines = written.splitlines()
        faces = sum(len(t) for _, _, t in objects)
        wrote = (f"{summary[0].upper()}{summary[1:]}, {faces:,} triangles, {size[0]:.1f} x {size[1]:.1f} x "
                 f"{size[2]:.1f} mm (width x depth x height), on the build plate.")
        # each object that would not print as it is (edited since its check: the panel's figures are the
        # reconstruction's), as slicers would say; then what would print weak, or not fit a printer
        warnings = [w.removeprefix("warning: ") for w in lines if w.startswith("warning: ")]
        notes = [n.removeprefix("note: ") for n in lines if n.startswith("note: ")]
        said = [wrote]
        if warnings:
            written = self.objects(context)  # the objects the warnings name; an STL's joined mesh: all of them
            named = [o for o in written if any(w.startswith(f"{o.name} is not printable") for w in warnings)]
            modified = any(m.show_viewport for obj in (named or written) for m in obj.modifiers)
            said.append(f"{'; '.join(warnings)}; {_mend('; '.join(warnings), modified)}")
        # "chair: its walls …" (an object's name as named), "at 300 x 40 x 20 mm …" (a sentence of its own here)
        said += [f"{note[0].upper()}{note[1:]}." if note.startswith("at ") else f"{note}." for note in notes]
        left = self.left_out(context)
        self.report({'WARNING'} if warnings or notes or left else {'INFO'}, " ".join(said + ([left] if left else [])))
        return {'FINISHED'}


class RECON_OT_export_stl(bpy.types.Operator, _PrintExport):
    """Write the active mesh, modifiers applied, as a binary STL in millimetres, resting on the build plate"""

    bl_idname = "recon.export_stl"
    bl_label = "Export STL"
    bl_options = {'REGISTER'}

    filename_ext = ".stl"
    filter_glob: bpy.props.StringProperty(default="*.stl", options={'HIDDEN'})

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def objects(self, context) -> list:
        return [context.active_object]

    def left_out(self, context) -> str:
        """Export 3MF beside it writes every selected mesh: two selected wrote one STL "(1 object)", without a word."""
        chosen = _export_objects(context)
        if context.active_object not in chosen or len(chosen) < 2:  # 3MF would not write the active one: nothing to say
            return ""
        return (f"Only the active object, {context.active_object.name}, is written; Export 3MF writes all "
                f"{len(chosen)} selected meshes, one object each.")


class RECON_OT_export_3mf(bpy.types.Operator, _PrintExport):
    """Write the selected meshes, modifiers applied, as one 3MF file in millimetres for a slicer, on the build plate"""

    bl_idname = "recon.export_3mf"
    bl_label = "Export 3MF"
    bl_options = {'REGISTER'}

    filename_ext = ".3mf"
    filter_glob: bpy.props.StringProperty(default="*.3mf", options={'HIDDEN'})

    @classmethod
    def poll(cls, context):
        return bool(_export_objects(context))

    def objects(self, context) -> list:
        return _export_objects(context)


class RECON_OT_use_mask(bpy.types.Operator):
    """Reconstruct with this object mask from now on; paint it in the Image Editor first to correct the object"""

    bl_idname = "recon.use_mask"
    bl_label = "Use This Mask"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return mask_image(context.active_object) is not None

    def execute(self, context):
        settings = context.scene.recon_settings
        image = mask_image(context.active_object)
        settings.object_source, settings.mask_image = 'MASK', image
        image[UNSURE_KEY] = False  # the user's mask now: the finder's doubt no longer applies
        self.report({'INFO'}, f"Reconstruct now uses {image.name} as the object; paint it white on the object and "
                              "black elsewhere in the Image Editor (Texture Paint) to correct it.")
        return {'FINISHED'}


def picture_image(obj):
    """The picture ``obj`` was reconstructed from, as the worker read it (:data:`PICTURE_IMAGE_KEY`), or None (made
    before the add-on kept it, or the image was deleted)."""
    image = obj.get(PICTURE_IMAGE_KEY)
    return image if isinstance(image, bpy.types.Image) else None


def _picture_base(obj) -> str:
    """The name the picture camera of ``obj`` takes after: its candidate collection's ("chair", also of "chair
    candidates.001", a second set of the picture's), else its own."""
    collection = candidate_collection(obj)
    return re.sub(r" candidates(\.\d{3})?$", "", collection.name) if collection is not None else obj.name


def _holder(obj):
    """What keeps the picture camera of ``obj``: its candidate collection (one camera for the set), else ``obj``."""
    return candidate_collection(obj) or obj


def _camera_of(obj):
    """The picture camera already made for ``obj`` (its holder's, :func:`_holder`), when it is still in the scene and
    is ``obj``'s: parented to it, or, for a candidate, to one of its collection's candidates (a copy of an object,
    Shift+D, carries the property but not the camera), or to nothing (its object was removed: a deleted candidate that
    Next Shape forgot); None otherwise. A camera the user deleted (kept in no collection, alive only through the
    property) goes now, with its picture."""
    holder = _holder(obj)
    camera = _alive(holder.get(PICTURE_CAMERA_KEY))
    if not isinstance(camera, bpy.types.Object) or camera.type != 'CAMERA':
        plane = _alive(holder.get(PLANE_KEY))  # a camera removed outright (a script's objects.remove) left it alone
        if isinstance(plane, bpy.types.Object) and plane.parent is None:
            bpy.data.objects.remove(plane)
        return None
    if not camera.users_collection:
        _remove_picture_camera(camera)
        return None
    collection = candidate_collection(obj)
    if camera.parent is None or camera.parent == obj or (collection is not None and is_candidate(camera.parent,
                                                                                                 collection)):
        return camera
    return None


def _remove_picture_camera(camera) -> None:
    """Delete a picture camera, its picture's image empty and its camera data."""
    plane = _alive(camera.get(PLANE_KEY))
    if isinstance(plane, bpy.types.Object):
        bpy.data.objects.remove(plane)
    data = camera.data
    bpy.data.objects.remove(camera)
    if data is not None and data.users == 0:
        bpy.data.cameras.remove(data)


def _mesh_co(obj) -> np.ndarray:
    """(V, 3) float64 the vertices of ``obj``'s mesh, in its own frame."""
    mesh = obj.data
    co = np.empty(3 * len(mesh.vertices), np.float64)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def picture_camera(obj, context=None) -> tuple[object, bool, str | None]:
    """Make or update the picture camera of the reconstructed ``obj`` (:data:`VIEW_KEY`): a camera parented to ``obj``
    at the place and lens of the picture's, and the picture as an image empty behind the mesh, parented to the camera;
    returns ``(camera, whether it was made now, warning or None)``. A new camera goes into the collections that hold
    ``obj`` (those that hold its candidate collection, for a candidate, so that Keep This One can remove the
    collection), and into the 3D Viewport's Local View when ``context``'s is in one. It follows a transform applied to
    the mesh since it was made (Apply Scale or Rotation, Set Origin: :func:`.mesh_data.mesh_motion`), its clipping the
    object's scale; a mesh edited since keeps the camera of the mesh as made, with a warning, and so does an object
    stretched unevenly, which no camera can follow."""
    view = obj[VIEW_KEY].to_dict()
    camera = _camera_of(obj)
    made = camera is None
    if made:
        base = _picture_base(obj)
        name = f"{base} picture camera"
        data = bpy.data.cameras.get(name)  # ours, left by a camera removed outright: taken again, the names plain
        if data is None or data.users or data.library is not None or not data.get(PICTURE_CAMERA_KEY):
            data = bpy.data.cameras.new(name)
            data[PICTURE_CAMERA_KEY] = True
        camera = bpy.data.objects.new(name, data)
        collection = candidate_collection(obj)
        scene = context.scene if context is not None else bpy.context.scene
        for target in (_parent_collections(collection, scene) if collection is not None else obj.users_collection):
            target.objects.link(camera)
        _holder(obj)[PICTURE_CAMERA_KEY] = camera
    data = camera.data
    data.type = 'PERSP'
    data.sensor_fit = view["sensor_fit"]
    data.sensor_width = data.sensor_height = mesh_data.SENSOR_MM
    data.lens = view["lens"]
    data.shift_x, data.shift_y = view["shift_x"], view["shift_y"]
    warnings = []
    motion = mesh_data.mesh_motion(view, _mesh_co(obj))
    if motion is None:
        warnings.append(f"{obj.name}'s mesh was edited since it was made, so the camera is where the picture's was "
                        "for the mesh as made")
        motion = np.eye(4)
    # the camera sees the mesh at the object's scale and that of a transform applied since
    stretch = np.linalg.svd(motion[:3, :3], compute_uv=False)
    scale = [abs(s) for s in obj.matrix_world.to_scale()]
    if stretch.max() > 1.001 * stretch.min() or max(scale) > 1.001 * min(scale):
        # a camera's view is a turn and a move: Blender takes the scale out of its matrix, so it cannot follow
        warnings.append(f"{obj.name} is stretched unevenly (its scale, applied or not, differs between its axes), "
                        "which a camera cannot follow: the picture does not line up with it")
    data.clip_start = view["clip_start"] * max(min(scale) * float(stretch.min()), 1e-6)
    data.clip_end = view["clip_end"] * max(max(scale) * float(stretch.max()), 1e-6)
    camera.parent = obj
    camera.matrix_parent_inverse = Matrix.Identity(4)
    camera.matrix_basis = Matrix((motion @ np.asarray(view["matrix"], dtype=np.float64)).tolist())
    image = picture_image(obj)
    plane = _alive(camera.get(PLANE_KEY))
    if isinstance(plane, bpy.types.Object) and not plane.users_collection:  # deleted by the user: gone, name and all
        bpy.data.objects.remove(plane)
    plane = plane if isinstance(_alive(plane), bpy.types.Object) else None
    if image is None:
        warnings.append("the picture's image is gone (deleted, or made before the add-on kept it), so only the camera "
                        "is made")
        if plane is not None:
            bpy.data.objects.remove(plane)
        if PLANE_KEY in camera:
            del camera[PLANE_KEY]
    else:
        if plane is None:
            plane = bpy.data.objects.new(image.name, None)
            for target in camera.users_collection:
                target.objects.link(plane)
            camera[PLANE_KEY] = plane
        _holder(obj)[PLANE_KEY] = plane  # so that a camera removed outright does not strand it (_camera_of)
        plane.empty_display_type = 'IMAGE'
        plane.data = image
        # Blender keeps an empty's display size at most EMPTY_SIZE_MAX (a 900 mm object in a millimetre scene needs
        # ~3,000: its picture filled a third of the frame); beyond it the empty's scale makes up the rest
        grown = max(1.0, view["plane_size"] / EMPTY_SIZE_MAX)
        plane.empty_display_size = view["plane_size"] / grown
        plane.empty_image_offset = (-0.5, -0.5)
        plane.empty_image_depth = 'BACK'  # behind the mesh, as a reference picture is
        plane.empty_image_side = 'FRONT'
        plane.show_empty_image_only_axis_aligned = True  # seen along its axis only: through the camera
        plane.use_empty_image_alpha = True
        plane.color[3] = PICTURE_OPACITY
        plane.hide_select = True  # a click through the camera picks the mesh
        plane.parent = camera
        plane.matrix_parent_inverse = Matrix.Identity(4)
        plane.matrix_basis = Matrix.Translation(view["plane_location"]) @ Matrix.Scale(grown, 4)
    space = getattr(context, "space_data", None) if context is not None else None
    if space is not None and space.type == 'VIEW_3D' and space.local_view is not None:
        for shown in (camera, plane):
            if shown is not None:
                shown.local_view_set(space, True)
    return camera, made, "; ".join(warnings) or None


def _move_picture_camera(collection, shown) -> str | None:
    """Put the candidate ``collection``'s picture camera, if it has one, on its ``shown`` candidate; that camera goes
    when ``shown`` has no view to give it. Returns :func:`picture_camera`'s warning."""
    camera = _alive(collection.get(PICTURE_CAMERA_KEY))
    if not isinstance(camera, bpy.types.Object) or not camera.users_collection:
        return None
    if VIEW_KEY not in shown:
        _remove_picture_camera(camera)
        del collection[PICTURE_CAMERA_KEY]
        return None
    return picture_camera(shown)[2]


class RECON_OT_view_picture(bpy.types.Operator):
    """Look at the mesh through the picture's camera, with the picture behind it, to see where they differ"""

    bl_idname = "recon.view_picture"
    bl_label = "Look Through Picture"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or VIEW_KEY not in obj:
            cls.poll_message_set("The active object has no picture camera (made by Reconstruct from Image with a "
                                 "model that has a shape bank, like the shipped one)")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        camera, made, warning = picture_camera(obj, context)
        space = getattr(context, "space_data", None)
        looking = space is not None and space.type == 'VIEW_3D'
        if looking:
            space.use_local_camera = True  # this view's own camera: the scene's stays
            space.camera = camera
            space.region_3d.view_perspective = 'CAMERA'
        view = obj[VIEW_KEY]
        where = ("Looking through " if looking else "Made " if made else "Placed ") + camera.name
        back = (" (this view's own camera: untick View > Local Camera in the sidebar to look through the scene's "
                "again)") if looking else " (press Look Through Picture in a 3D Viewport to look through it)"
        if warning is not None:
            self.report({'WARNING'}, f"{where}{back}; {warning}.")
            return {'FINISHED'}
        said = f"{where}{back}. The picture is behind {obj.name}: Alt+Z (X-ray) shows it through the mesh."
        render = context.scene.render
        scene_aspect = (render.resolution_x * render.pixel_aspect_x) / (render.resolution_y * render.pixel_aspect_y)
        if abs(scene_aspect * view['height'] / view['width'] - 1.0) > 0.01:  # the frame cuts the picture
            said += (f" The camera's frame is the picture at a render resolution of its proportions "
                     f"({view['width']} x {view['height']}); this scene's is {render.resolution_x} x "
                     f"{render.resolution_y}.")
        self.report({'INFO'}, said)
        return {'FINISHED'}
