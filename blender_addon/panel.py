"""The "Reconstruct" tab of the 3D Viewport sidebar: inputs, the button, the candidates, the printable check, the
notes and the object mask."""

import textwrap

import bpy

from .operators import (CHECK_KEY, MASK_KEY, NEXT_SHAPE_KEYS, UNSURE_KEY, VIEW_KEY, RECON_OT_export_3mf,
                        RECON_OT_export_stl, RECON_OT_keep_candidate, RECON_OT_next_candidate, RECON_OT_reconstruct,
                        RECON_OT_use_mask, RECON_OT_view_picture, candidate_info, candidate_likelihood,
                        candidate_target, candidates_of, mask_image, mesh_edited, mm_per_unit, notes_of, running,
                        size_mm, volume_now, volume_text)

__all__ = ["RECON_PT_reconstruct", "RECON_PT_candidates", "RECON_PT_check", "RECON_PT_notes", "RECON_PT_mask"]

MASK_PREVIEW_SCALE = 8.0
"""Side of the mask's preview in the sidebar, in UI units (about half the sidebar's default width)."""


class RECON_PT_reconstruct(bpy.types.Panel):
    bl_label = "Reconstruct from Image"
    bl_idname = "RECON_PT_reconstruct"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Reconstruct"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.recon_settings
        layout.row().prop(settings, "source", expand=True)
        if settings.source == 'FILE':
            layout.prop(settings, "image_path", text="")
        else:
            layout.template_ID(settings, "image", open="image.open")
        layout.row().prop(settings, "object_source", expand=True)
        if settings.object_source == 'MASK':
            layout.template_ID(settings, "mask_image", open="image.open")
        col = layout.column(align=True)
        col.prop(settings, "category")
        col.prop(settings, "detail")
        col.prop(settings, "height_mm")
        col.prop(settings, "candidates")
        col.prop(settings, "solid")
        col.prop(settings, "upright")
        run = running()
        if run is None:
            layout.operator(RECON_OT_reconstruct.bl_idname, icon='MESH_ICOSPHERE')
        else:
            box = layout.box()
            wrapped_label(box, context, f"{run.name}: {run.stage}", 'TIME')
            box.progress(factor=run.fraction, type='BAR', text=f"{100 * run.fraction:.0f} %, {run.elapsed:.0f} s")
            box.label(text="Esc to cancel")


class _SubPanel:
    """Where the sub-panels live: under "Reconstruct from Image" in the sidebar's Reconstruct tab."""

    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Reconstruct"
    bl_parent_id = "RECON_PT_reconstruct"


class RECON_PT_candidates(_SubPanel, bpy.types.Panel):
    """The candidate shapes of the active object's collection (or of the collection whose shown candidate was deleted:
    :func:`.operators.candidate_target`): rank, how likely against the likeliest, printable, which is shown."""

    bl_label = "Candidates"
    bl_idname = "RECON_PT_candidates"

    @classmethod
    def poll(cls, context):
        return candidate_target(context)[0] is not None

    def draw(self, context):
        layout = self.layout
        collection, stranded = candidate_target(context)
        view_layer = context.view_layer
        layout.label(text=collection.name, icon='OUTLINER_COLLECTION')
        col = layout.column(align=True)
        candidates = candidates_of(collection, view_layer)
        for obj in candidates:  # short enough for the sidebar's default width: the eye says which is shown
            rank, _ = candidate_info(obj)
            printable = (obj.get(CHECK_KEY) or {}).get("ok")
            shown = not obj.hide_get(view_layer=view_layer)
            said = ", ".join(s for s in (candidate_likelihood(obj), "" if printable else "NOT printable") if s)
            col.label(text=f"{rank}. {obj.name}{': ' + said if said else ''}", icon='HIDE_OFF' if shown else 'HIDE_ON')
        if stranded:
            layout.label(text="None shown: press Next Shape", icon='INFO')
        col = layout.column(align=True)  # a row halves each button: "Keep This One" was cut
        col.operator(RECON_OT_next_candidate.bl_idname, icon='FORWARD')
        col.operator(RECON_OT_keep_candidate.bl_idname, icon='CHECKMARK')
        layout.label(text=f"Next Shape: {NEXT_SHAPE_KEYS}", icon='EVENT_N')


class RECON_PT_check(_SubPanel, bpy.types.Panel):
    bl_label = "Printable Check"
    bl_idname = "RECON_PT_check"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        check = obj.get(CHECK_KEY)
        col = layout.column(align=True)
        now = None  # the volume at the size now, for an unedited reconstruction scaled since
        if check is not None:
            col.label(text=f"{obj.name} ({check.get('category', '?')}), as made:")
            for key, text in (("watertight", "Watertight"), ("manifold", "Manifold"), ("ok", "Printable")):
                good = bool(check.get(key))
                col.label(text=f"{text}: {'yes' if good else 'no'}", icon='CHECKMARK' if good else 'ERROR')
            volume = check.get("volume_mm3", -1.0)
            if volume >= 0:
                col.label(text=f"Volume: {volume_text(volume)}")
            if mesh_edited(obj, check):
                col.label(text="Edited: the exports check it again", icon='INFO')
            else:
                now = volume_now(obj, check, mm_per_unit(context.scene))
        else:
            col.label(text=f"{obj.name}: not made by Reconstruct", icon='INFO')
        size = size_mm(context, obj)  # as the exports write it: along the world's axes, the last the height
        col.label(text="Size, W x D x H (mm):")
        col.label(text=f"{size[0]:.1f} x {size[1]:.1f} x {size[2]:.1f}")
        if now is not None:  # scaled since (the object, or the scene's unit): the volume as the size is now
            col.label(text=f"Volume at this size: {volume_text(now)}")
        row = layout.row(align=True)
        row.operator(RECON_OT_export_stl.bl_idname, icon='EXPORT')
        row.operator(RECON_OT_export_3mf.bl_idname, icon='EXPORT')


def wrapped(text: str, width_px: float, ui_scale: float = 1.0) -> list[str]:
    """``text`` in lines that fit a sidebar ``width_px`` wide (a label does not wrap): about 7 pixels a character at
    ``ui_scale`` 1, and at least 20 characters a line (a width or scale of 0, as in background mode: 40)."""
    chars = int(width_px / (7.0 * ui_scale)) - 2 if width_px > 0 and ui_scale > 0 else 40
    return textwrap.wrap(text, width=max(20, chars)) or [""]


def wrapped_label(layout, context, text: str, icon: str = 'INFO') -> None:
    """``text`` as labels in ``layout``, wrapped to the sidebar's width (:func:`wrapped`), the icon on the first."""
    width = context.region.width if context.region is not None else 300
    scale = context.preferences.system.ui_scale if context.preferences is not None else 1.0
    col = layout.column(align=True)
    for i, line in enumerate(wrapped(text, width, scale)):
        col.label(text=line, icon=icon if i == 0 else 'BLANK1')


class RECON_PT_notes(_SubPanel, bpy.types.Panel):
    """What the reconstruction noted of the active object (sealed pockets, the object finder's doubt, thin walls, the
    category it was unsure of, ...), each note in full: the status bar shows only the last message."""

    bl_label = "Notes"
    bl_idname = "RECON_PT_notes"

    @classmethod
    def poll(cls, context):
        return bool(notes_of(context.active_object))

    def draw(self, context):
        for note in notes_of(context.active_object):
            wrapped_label(self.layout, context, note)


class RECON_PT_mask(_SubPanel, bpy.types.Panel):
    """The object mask the active reconstruction was made with: what was taken as the object; and Look Through
    Picture, to see the mesh on the picture."""

    bl_label = "Object Mask"
    bl_idname = "RECON_PT_mask"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and CHECK_KEY in obj  # made by Reconstruct

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        if VIEW_KEY in obj:
            layout.operator(RECON_OT_view_picture.bl_idname, icon='CAMERA_DATA')
        image = mask_image(obj)
        if image is None:
            text = "Its mask image was deleted" if MASK_KEY in obj else "No object mask was kept"
            layout.label(text=text, icon='INFO')
            return
        layout.label(text=f"Mask used: {image.name}", icon='IMAGE_ALPHA')
        if image.get(UNSURE_KEY):
            layout.label(text="Unsure of the object: check it", icon='ERROR')
        preview = image.preview_ensure()
        if preview is not None and preview.icon_id:  # 0 in background mode, where no previews are made
            layout.template_icon(icon_value=preview.icon_id, scale=MASK_PREVIEW_SCALE)
        layout.operator(RECON_OT_use_mask.bl_idname, icon='BRUSH_DATA')
        wrapped_label(layout, context, "Wrong? Use This Mask, paint it in the Image Editor, then Reconstruct")
