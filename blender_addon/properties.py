"""What the Reconstruct panel edits: the image, how the object is found in it, category, detail level, real height and
candidate count (per scene)."""

import bpy

from .worker_client import CATEGORY_NAMES, DEFAULT_DETAIL, DETAIL_VERTICES, MAX_HEIGHT_MM

__all__ = ["ReconSettings", "PATH_OPTIONS"]

_SUPPORTS_BLEND_RELATIVE = "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties
PATH_OPTIONS = {'PATH_SUPPORTS_BLEND_RELATIVE'} if _SUPPORTS_BLEND_RELATIVE else set()
"""The options of a file path property: it may be relative to the .blend file ("//"), which Blender 5.0 wants said
(else it warns at registration); a Blender that predates the option has none."""

_CATEGORY_ITEMS = [('AUTO', "Automatic", "Predict the category from the image")] + [
    (name, name.capitalize(), f"Reconstruct as a {name}") for name in CATEGORY_NAMES
]
# Identifiers are the worker's level names in capitals. The order keeps the values stored in .blend
# files (0, 1, 2) of the earlier 642 / 2562 / 10242 vertex items, so saved scenes keep their level.
_DETAIL_ITEMS = [
    (name.upper(), name.capitalize(),
     f"About {round(2 * n, -2):,} faces")
    for name, n in DETAIL_VERTICES.items()
]


class ReconSettings(bpy.types.PropertyGroup):
    source: bpy.props.EnumProperty(
        name="Source",
        items=[('FILE', "File", "An image file on disk"),
               ('IMAGE', "Blender Image", "An image already loaded in Blender (packed and generated ones too)")],
        default='FILE',
    )
    image_path: bpy.props.StringProperty(
        name="Image", description="Photo or drawing of one object (PNG or JPEG; alpha is used as the mask)",
        subtype='FILE_PATH', options=PATH_OPTIONS,
    )
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image,
                                     description="Image datablock to reconstruct")
    object_source: bpy.props.EnumProperty(
        name="Object",
        items=[('FIND', "Find It", "The model finds the object (the image's alpha when it has one)"),
               ('MASK', "Mask Image", "An image of the picture's size (or shape), white on the object and black elsewhere, is the "
                                      "object: e.g. the Object Mask of an earlier run, painted in the Image Editor")],
        default='FIND',
    )
    mask_image: bpy.props.PointerProperty(name="Mask", type=bpy.types.Image,
                                          description="The object's mask: white on the object, the picture's size (or shape)")
    category: bpy.props.EnumProperty(name="Category", items=_CATEGORY_ITEMS, default='AUTO')
    detail: bpy.props.EnumProperty(name="Detail", items=_DETAIL_ITEMS, default=DEFAULT_DETAIL.upper())
    height_mm: bpy.props.FloatProperty(
        name="Height (mm)",
        description="Real height of the object in millimetres; 0 keeps the model's size (about 1 unit across)",
        default=0.0, min=0.0, max=MAX_HEIGHT_MM, soft_max=2000.0, precision=1,
    )
    solid: bpy.props.BoolProperty(
        name="Fill Hollow Pockets",
        description="Fill the sealed hollow pockets a closed part keeps inside (the shape bank stores walls): for "
                    "resin and powder printers, which trap material in them. Off: the mesh as the model scores best",
        default=False,
    )
    candidates: bpy.props.IntProperty(
        name="Candidates",
        description="How many plausible shapes to make, the most confident shown first (Next Shape shows the "
                    "others); 1 makes one object, as before. Needs a model with a shape bank for more than 1",
        default=3, min=1, max=5,
    )
