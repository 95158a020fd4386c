"""What the Reconstruct panel edits: the image, how the object is found in it, category, detail level, real height and
candidate count (per scene)."""

import os

import bpy
from bpy.app.handlers import persistent

from .worker_client import CATEGORY_NAMES, DEFAULT_DETAIL, DETAIL_VERTICES, MAX_HEIGHT_MM, MIN_HEIGHT_MM

__all__ = ["ReconSettings", "ReconCandidateRef", "PATH_OPTIONS", "SAVE_HANDLERS", "register_save_handlers", "unregister_save_handlers"]

_SUPPORTS_BLEND_RELATIVE = "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties
PATH_OPTIONS = {'PATH_SUPPORTS_BLEND_RELATIVE'} if _SUPPORTS_BLEND_RELATIVE else set()
"""The options of a file path property: it may be relative to the .blend file ("//"), which Blender 5.0 wants said
(else it warns at registration); a Blender that predates the option has none."""

_CATEGORY_ITEMS = [('AUTO', "Automatic", "Predict the category from the image")] + [
    (name, name.capitalize(), f"Reconstruct it as {'an' if name[0] in 'aeiou' else 'a'} {name}")
    for name in CATEGORY_NAMES
]
# Identifiers are the worker's level names in capitals. The order keeps the values stored in .blend
# files (0, 1, 2) of the earlier 642 / 2562 / 10242 vertex items, so saved scenes keep their level.
_DETAIL_ITEMS = [
    (name.upper(), name.capitalize(),
     f"About {round(2 * n, -2):,} faces")
    for name, n in DETAIL_VERTICES.items()
]


class ReconCandidateRef(bpy.types.PropertyGroup):
    """One entry of a candidate collection's record (``Collection.recon_candidate_objects``): an object the
    reconstruction made in it. A pointer follows its object through rename, undo, save and reload, and append into
    another file (which renames it, "chair 1.001"); a copy of the object (Shift+D) is not in the record."""

    obj: bpy.props.PointerProperty(name="Object", type=bpy.types.Object)


def _at_least_the_smallest_height(settings, _context) -> None:
    """Height (mm) between 0 and the smallest height the worker takes becomes that height, as a slider's minimum
    would: 0.01 showed as "0.0" (one decimal) and was then refused as "got 0.01"."""
    if 0.0 < settings.height_mm < MIN_HEIGHT_MM:
        settings.height_mm = MIN_HEIGHT_MM


class ReconSettings(bpy.types.PropertyGroup):
    source: bpy.props.EnumProperty(
        name="Source",
        items=[('FILE', "File", "An image file on disk"),
               ('IMAGE', "Blender Image", "An image already loaded in Blender (packed and generated ones too)")],
        default='FILE',
    )
    image_path: bpy.props.StringProperty(
        name="Image", description="Photo or drawing of one object (PNG, JPEG, a phone's HEIC, ...; alpha is used as the mask)",
        subtype='FILE_PATH', options=PATH_OPTIONS,
    )
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image,
                                     description="Image datablock to reconstruct")
    object_source: bpy.props.EnumProperty(
        name="Object",
        items=[('FIND', "Find It", "The model finds the object (the image's alpha when it has one)"),
               ('MASK', "Mask Image", "An image white on the object and black elsewhere, of the picture's size or "
                                      "proportions: e.g. the Object Mask of an earlier run, painted in the Image "
                                      "Editor")],
        default='FIND',
    )
    mask_image: bpy.props.PointerProperty(
        name="Mask", type=bpy.types.Image,
        description="The object's mask: white on the object, of the picture's size or proportions")
    category: bpy.props.EnumProperty(name="Category", items=_CATEGORY_ITEMS, default='AUTO')
    detail: bpy.props.EnumProperty(name="Detail", items=_DETAIL_ITEMS, default=DEFAULT_DETAIL.upper())
    height_mm: bpy.props.FloatProperty(
        name="Height (mm)",
        description="Real height of the object in millimetres. 0: the model chooses the size (about 1 unit)",
        default=0.0, min=0.0, max=MAX_HEIGHT_MM, soft_max=2000.0, precision=1, update=_at_least_the_smallest_height,
    )
    solid: bpy.props.BoolProperty(
        name="Fill Hollow Pockets",
        description="Fill the closed empty spaces inside the object, for resin and powder printers (they trap material "
                    "in them)",
        default=False,
    )
    upright: bpy.props.BoolProperty(
        name="Stand Upright",
        description="Stand the shape on its base, so that Height (mm) is its own height. Off: it leans as the "
                    "picture's camera saw it, from above or below",
        default=True,
    )
    candidates: bpy.props.IntProperty(
        name="Candidates",
        description="How many different shapes to make, the likeliest shown first (Next Shape shows the others)",
        default=3, min=1, max=5,
    )


# -- the panel's "//" paths follow a Save As into another folder ------------------------------------------------------
#
# Blender remaps its own datablocks' relative paths when a Save As moves the .blend to another folder (Remap
# Relative), not an add-on's string properties: the panel's Image file, "//photos/chair.png", would then point next to
# the new file. The save handlers keep it pointing at the same file.

_remapped: list = []  # (settings, the path as it was) while a save is under way


def _relative_to(path: str, folder: str) -> str:
    """``path`` (absolute) as Blender writes it relative to ``folder`` ("//..."), or absolute when it cannot be (another
    drive on Windows)."""
    try:
        return bpy.path.relpath(path, start=folder)
    except ValueError:
        return path


@persistent
def remap_before_save(filepath, *_):
    """``save_pre`` (Blender passes the file being written): each scene's ``//`` image path made relative to that
    file's folder when it is another folder than the current .blend file's, so the saved file points at the same
    picture. An unsaved .blend's ``//`` has no folder yet and is left alone."""
    _remapped.clear()
    old = bpy.data.filepath
    if not old or not filepath:
        return
    folder = os.path.dirname(os.path.abspath(filepath))
    if os.path.normcase(folder) == os.path.normcase(os.path.dirname(os.path.abspath(old))):
        return
    for scene in bpy.data.scenes:
        settings = getattr(scene, "recon_settings", None) if scene.library is None else None
        if settings is None or not settings.image_path.startswith("//"):
            continue
        path = settings.image_path
        settings.image_path = _relative_to(os.path.abspath(bpy.path.abspath(path)), folder)
        _remapped.append((settings, path))


@persistent
def remap_after_save(filepath, *_):
    """``save_post``: after a Save As the remapped paths stay (the .blend is the new file now); after a Save Copy, whose
    .blend stays where it was, they are set back."""
    if _remapped and os.path.normcase(os.path.abspath(bpy.data.filepath or "")) != os.path.normcase(
            os.path.abspath(filepath or "")):
        restore_after_failed_save(filepath)
    _remapped.clear()


@persistent
def restore_after_failed_save(filepath, *_):
    """``save_post_fail``: the paths as they were (the .blend stays where it was)."""
    for settings, path in _remapped:
        settings.image_path = path
    _remapped.clear()


SAVE_HANDLERS = (("save_pre", remap_before_save), ("save_post", remap_after_save),
                 ("save_post_fail", restore_after_failed_save))
"""``bpy.app.handlers`` list name and handler, added by :func:`register_save_handlers`."""


def register_save_handlers() -> None:
    for name, handler in SAVE_HANDLERS:
        handlers = getattr(bpy.app.handlers, name, None)  # save_post_fail: Blender 4.2 on
        if handlers is not None and handler not in handlers:
            handlers.append(handler)


def unregister_save_handlers() -> None:
    for name, handler in SAVE_HANDLERS:
        handlers = getattr(bpy.app.handlers, name, None)
        if handlers is not None and handler in handlers:
            handlers.remove(handler)
    _remapped.clear()
