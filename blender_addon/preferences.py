"""Add-on preferences: the worker's Python interpreter, the model file and the time-out."""

import json
import os

import bpy

from .properties import PATH_OPTIONS

__all__ = ["ReconPreferences", "get_preferences", "DEFAULTS"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_defaults() -> dict:
    """``defaults.json`` written by ``build_addon.py`` ({"python", "repo"}); from a source checkout, guess them."""
    try:
        with open(os.path.join(_HERE, "defaults.json"), encoding="utf-8") as f:
            data = json.load(f)
        return {"python": str(data.get("python") or ""), "repo": str(data.get("repo") or "")}
    except (OSError, ValueError):
        pass
    repo = os.path.dirname(_HERE)
    if not os.path.isdir(os.path.join(repo, "recon_core")):
        return {"python": "", "repo": ""}
    venv = os.path.join(repo, ".venv", "Scripts" if os.name == "nt" else "bin", "python.exe" if os.name == "nt" else "python")
    return {"python": venv if os.path.isfile(venv) else "", "repo": repo}


DEFAULTS = _load_defaults()
"""Default interpreter and source folder of recon_core, fixed when the add-on was built."""


class ReconPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: bpy.props.StringProperty(
        name="Python",
        description="Python interpreter (usually a virtual environment) in which recon_core is installed",
        subtype='FILE_PATH', options=PATH_OPTIONS,
        default=DEFAULTS["python"],
    )
    model_path: bpy.props.StringProperty(
        name="Model",
        description="Model file, NAME.safetensors, with the files a training run saved beside it (NAME.json, and "
                    "NAME.category.safetensors when it made one); empty for the shipped model",
        subtype='FILE_PATH', options=PATH_OPTIONS,
        default="",
    )
    timeout_s: bpy.props.FloatProperty(
        name="Time-out (s)",
        description="Give up on a reconstruction (and stop the worker) after this many seconds; loading the model "
                    "first has 300 s, or this if longer",
        default=300.0,
        min=1.0,
        soft_max=3600.0,
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "python_path")
        layout.prop(self, "model_path")
        layout.prop(self, "timeout_s")
        if DEFAULTS["repo"]:
            layout.label(text=f"recon_core source: {DEFAULTS['repo']}", icon='INFO')


def get_preferences(context) -> ReconPreferences:
    return context.preferences.addons[__package__].preferences
