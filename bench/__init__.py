"""Benchmarks: inference speed, memory and throughput, measured against the hardware floor.

Each module is a script that prints one JSON object on stdout and takes ``--tiny`` (a fast
smoke configuration, run by ``tests/test_bench.py``) and ``--threads`` (default 2):

- ``python -m bench.inference``: end-to-end ``Reconstructor.reconstruct`` + STL encoding,
  p50/p95 per output size, per-stage breakdown, encoder FLOPs over the measured matmul rate;
- ``python -m bench.cold_start``: a fresh ``recon-mesh IMAGE -o out.stl`` process and its peak RSS;
- ``python -m bench.train_throughput``: images/s of a training step (CPU, and CUDA when present);
- ``python -m bench.render_throughput``: views/s of ``training/render.py``;
- ``python -m bench.retrieval``: one query of the nearest-view retrieval baseline;
- ``python -m bench.all``: all of them, each in a fresh process, in one JSON object.

Results and the commands that produced them: ``bench/RESULTS.md``.
"""
