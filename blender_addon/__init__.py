"""Reconstruct from Image: one photo in, a watertight printable mesh out, in the 3D Viewport sidebar.

A thin shell around ``recon_core``: the model runs in a worker process
(``python -m recon_core.io.worker``, see :mod:`.worker_client`), never inside Blender.
"""

import bpy

from . import operators, panel, preferences, properties, worker_client

classes = (
    preferences.ReconPreferences,
    properties.ReconSettings,
    operators.RECON_OT_reconstruct,
    operators.RECON_OT_export_stl,
    operators.RECON_OT_export_3mf,
    panel.RECON_PT_reconstruct,
    panel.RECON_PT_check,
    panel.RECON_PT_mask,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.recon_settings = bpy.props.PointerProperty(type=properties.ReconSettings)


def unregister():
    operators.cancel_running()
    worker_client.shutdown_all()
    del bpy.types.Scene.recon_settings
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
