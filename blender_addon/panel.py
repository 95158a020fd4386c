"""The "Reconstruct" tab of the 3D Viewport sidebar: inputs, the button, and the printable check."""

import bpy

from .operators import CHECK_KEY, RECON_OT_export_stl, RECON_OT_reconstruct, mm_per_unit, running

__all__ = ["RECON_PT_reconstruct", "RECON_PT_check"]


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
        col = layout.column(align=True)
        col.prop(settings, "category")
        col.prop(settings, "detail")
        col.prop(settings, "height_mm")
        run = running()
        if run is None:
            layout.operator(RECON_OT_reconstruct.bl_idname, icon='MESH_ICOSPHERE')
        else:
            box = layout.box()
            box.label(text=f"{run.name}: {run.stage}", icon='TIME')
            box.label(text=f"{run.elapsed:.0f} s, Esc to cancel")


class RECON_PT_check(bpy.types.Panel):
    bl_label = "Printable Check"
    bl_idname = "RECON_PT_check"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Reconstruct"
    bl_parent_id = "RECON_PT_reconstruct"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        check = obj.get(CHECK_KEY)
        col = layout.column(align=True)
        if check is not None:
            col.label(text=f"{obj.name} ({check.get('category', '?')}), at reconstruction:")
            for key, text in (("watertight", "Watertight"), ("manifold", "Manifold"), ("ok", "Printable")):
                good = bool(check.get(key))
                col.label(text=f"{text}: {'yes' if good else 'no'}", icon='CHECKMARK' if good else 'ERROR')
            volume = check.get("volume_mm3", -1.0)
            if volume >= 0:
                col.label(text=f"Volume: {volume / 1000.0:.2f} cm³")
        else:
            col.label(text=f"{obj.name}: not made by Reconstruct", icon='INFO')
        size = [d * mm_per_unit(context.scene) for d in obj.dimensions]
        col.label(text=f"Size: {size[0]:.1f} x {size[1]:.1f} x {size[2]:.1f} mm")
        layout.operator(RECON_OT_export_stl.bl_idname, icon='EXPORT')
