"""Input and output: pictures, model files, the pipeline users call, the command line and the worker.

``image`` (reading pictures safely), ``weights`` (safetensors model and finder files), ``notes`` (how the notes
write numbers, and the sentences the front ends share),
``inference`` (:class:`~recon_core.io.inference.Reconstructor`), ``export`` (OBJ, STL, PLY, GLB and
3MF, written atomically), ``cli``
(``recon-mesh``) and ``worker`` (the add-on's process). Imports run one way:
io → :mod:`recon_core.network` → :mod:`recon_core.mesh`.
"""
