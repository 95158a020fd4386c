"""Reconstruct from Image: one photo in, a watertight printable mesh out, in the 3D Viewport sidebar.

A thin shell around ``recon_core``: the model runs in a worker process
(``python -m recon_core.io.worker``, see :mod:`.worker_client`), never inside Blender.
"""

import bpy

from . import operators, panel, preferences, properties, worker_client

classes = (
    preferences.ReconPreferences,
    properties.ReconCandidateRef,
    properties.ReconSettings,
    operators.RECON_OT_reconstruct,
    operators.RECON_OT_next_candidate,
    operators.RECON_OT_keep_candidate,
    operators.RECON_OT_use_mask,
    operators.RECON_OT_view_picture,
    operators.RECON_OT_export_stl,
    operators.RECON_OT_export_3mf,
    panel.RECON_PT_reconstruct,
    panel.RECON_PT_candidates,
    panel.RECON_PT_check,
    panel.RECON_PT_notes,
    panel.RECON_PT_mask,
)

KEYMAP = ("Object Mode", 'EMPTY', operators.RECON_OT_next_candidate.bl_idname, 'N', dict(shift=True, alt=True))
"""Next Shape's shortcut (:data:`.operators.NEXT_SHAPE_KEYS`): keymap name, its space type, operator, key, modifiers.
Shift+Alt+N is free in Blender's default keymap (a test checks every one of its non-modal keymaps)."""

_keymap_items = []  # (keymap, item) pairs added by register, removed by unregister


def register_keymap() -> None:
    """Add the Next Shape shortcut to the add-on keyconfiguration (none when Blender has no window manager)."""
    keyconfig = bpy.context.window_manager.keyconfigs.addon if bpy.context.window_manager else None
    if keyconfig is None:
        return
    name, space_type, idname, key, modifiers = KEYMAP
    keymap = keyconfig.keymaps.new(name=name, space_type=space_type)
    _keymap_items.append((keymap, keymap.keymap_items.new(idname, key, 'PRESS', **modifiers)))


def unregister_keymap() -> None:
    """Remove the shortcuts that :func:`register_keymap` added."""
    for keymap, item in _keymap_items:
        keymap.keymap_items.remove(item)
    _keymap_items.clear()


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.recon_settings = bpy.props.PointerProperty(type=properties.ReconSettings)
    bpy.types.Collection.recon_candidate_objects = bpy.props.CollectionProperty(type=properties.ReconCandidateRef)
    properties.register_save_handlers()
    if operators.forget_deleted_before_save not in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.append(operators.forget_deleted_before_save)
    register_keymap()


def unregister():
    operators.cancel_running()
    worker_client.shutdown_all()
    unregister_keymap()
    properties.unregister_save_handlers()
    if operators.forget_deleted_before_save in bpy.app.handlers.save_pre:
        bpy.app.handlers.save_pre.remove(operators.forget_deleted_before_save)
    del bpy.types.Scene.recon_settings
    del bpy.types.Collection.recon_candidate_objects
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
