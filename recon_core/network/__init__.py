"""The network: picture in, coarse shape and refined mesh out (tensors).

``backbone``/``encoder`` (ResNet + feature pyramid), ``heads`` (coarse shape, 2.5D maps, category),
``refiner`` (graph-convolution stages), ``model`` (the whole network), ``config``, ``losses``,
``retrieval`` (the shape bank), ``finder`` (the object finder), ``crop`` (the network's input
crop) and ``categories``. Imports :mod:`recon_core.mesh`, never :mod:`recon_core.io`.
"""
