"""recon_core: one image in, a watertight, manifold, printable mesh out.

Three parts, imported one way (io → network → mesh):

* :mod:`recon_core.io`: reading pictures, model files, the ``Reconstructor`` pipeline, the CLI, the worker;
* :mod:`recon_core.network`: the encoder, heads, refiner stages, losses, shape bank and object finder;
* :mod:`recon_core.mesh`: cameras, grids, meshing, repair, the self-intersection test and the printable check.

Never imports ``bpy``: everything here runs and is tested without Blender.
"""

__version__ = "0.1.0"
