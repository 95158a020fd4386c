"""The mesh: cameras and frames, grids and solids, meshing, repair and the printable guarantee.

``camera`` (every axis convention), ``occupancy`` (the camera-aligned grid), ``volume``
(solids and marching tetrahedra), ``topology``, ``intersect``, ``repair``, ``printable``,
``thickness`` (walls too thin to print), ``metrics`` and ``detail`` (output sizes). Numpy and torch only: imports neither
:mod:`recon_core.network` nor :mod:`recon_core.io`.
"""
