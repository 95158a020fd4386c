"""recon_core: one image in, a watertight, manifold, printable mesh out.

Never imports ``bpy``: everything here runs and is tested without Blender.
"""

__version__ = "0.1.0"
