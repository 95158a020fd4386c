"""End-to-end inference time of the shipped model, per stage, against the hardware floor.

    python -m bench.inference [--model models/default] [--runs 30] [--vertices 642 2562 10242] [--profile] [--height-mm H] [--tiny]

Times :meth:`recon_core.io.inference.Reconstructor.reconstruct` (stood upright, as ``recon-mesh`` and the add-on
make it since 2026-12-07) on an already decoded
image (``examples/*.png`` or a synthetic one), plus the encoding of the result as STL
bytes, at 642, 2,562 and 10,242 output vertices: p50/p95 over ``--runs`` runs after
warm-up, with torch on ``--threads`` intra-op threads (2 by default, the target
machine's cores). The per-stage breakdown comes from forward hooks on the network's
modules (encoder, coarse head, each refiner stage), ``Reconstruction.timings``
(finder, preprocess, repair, check) and the export. The same picture is also timed as a
photo without alpha (``no_alpha_2562``), where the object finder finds the object first.

The *floor* is the encoder's FLOPs (counted with ``torch.utils.flop_counter``, one
image at the configured size) divided by this machine's dense matmul rate in the
encoder's dtype (2048 x 2048 matmuls, best of several, measured in the same run; bfloat16
where the CPU computes it in hardware and inference runs the encoder in it, float32
otherwise): no implementation of this encoder on these cores can be much faster than that.

Each run also records the CPU time of the whole process (``time.process_time``: every thread's) over the same span
(``cpu_ms``; ``cores_busy_p50``, the median of CPU time over wall time). ``cpu_p50_over_threads_ms`` is that CPU time
shared out evenly over the ``--threads`` cores: the end-to-end time it would take with every one of them busy
throughout. A rough floor for this implementation at the load it was measured under: it includes threads waiting
busily, grows with contention, and numpy's own threads are not held to ``--threads``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

from bench._common import (check_model, emit, example_image, machine, parser, positive_float, positive_int, stats_ms,
                           target, tiny_model_stem)

TARGET_P50_MS = 150.0
"""End-to-end p50 at 2,562 vertices on 2 CPU cores."""
TARGET_FLOOR_RATIO = 4.0
"""End-to-end p50 at 2,562 vertices over the encoder floor."""
MAIN_VERTICES = 2562
STAGES = ("finder", "preprocess", "encoder", "category_head", "category_branch", "coarse_head", "refiner_0",
          "refiner_1", "refiner_2", "network_other", "retrieval", "postprocess", "repair", "check", "export_stl")


def matmul_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best dense ``size x size`` matmul rate in ``dtype`` of this process's torch threads, in GFLOP/s."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def count_flops(module: torch.nn.Module, *args, **kwargs) -> int:
    """FLOPs of one forward (matmuls and convolutions, as ``torch.utils.flop_counter`` counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return int(counter.get_total_flops())


class StageTimer:
    """Wall time of the network's parts, through forward pre-hooks and hooks on its modules."""

    def __init__(self, model):
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self._handles = []
        parts = {"encoder": model.encoder, "category_head": model.category_head, "coarse_head": model.coarse_head}
        parts.update({f"refiner_{i}": stage for i, stage in enumerate(model.stages)})
        if getattr(model, "category_branch", None) is not None:
            parts["category_branch"] = model.category_branch
        for name, module in parts.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        self._handles.append(model.register_forward_pre_hook(self._pre("network")))
        self._handles.append(model.register_forward_hook(self._post("network")))

    def _pre(self, name):
        def hook(module, args):
            self._start[name] = time.perf_counter()
        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.seconds[name] += time.perf_counter() - self._start.pop(name)
        return hook

    def take(self) -> dict[str, float]:
        """The times since the last call, with ``network_other`` = network minus its timed parts."""
        out = dict(self.seconds)
        self.seconds.clear()
        parts = sum(v for k, v in out.items() if k != "network")
        out["network_other"] = max(0.0, out.get("network", 0.0) - parts)
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def encode_stl(verts: np.ndarray, faces: np.ndarray) -> bytes:
    """The result as binary STL bytes, as :func:`recon_core.io.export.export_mesh` encodes them (turned +Z up on the
    plate, :func:`recon_core.io.export.stl_bytes`), without the file."""
    from recon_core.io.export import OUTPUT_TO_Z_UP, on_plate, stl_bytes

    return stl_bytes(on_plate(np.asarray(verts, dtype=np.float64) @ OUTPUT_TO_Z_UP.T), np.asarray(faces))


def run_once(rec, rgb, alpha, vertices: int, timer: StageTimer, height_mm: float | None = None
             ) -> tuple[float, dict[str, float], object, float]:
    """One end-to-end reconstruction (at ``height_mm`` when given) + STL encoding: (seconds, per-stage seconds, result,
    CPU seconds of the whole process over the same span, every thread's)."""
    cpu = time.process_time()
    start = time.perf_counter()
    result = rec.reconstruct(rgb, alpha, vertices=vertices, height_mm=height_mm, upright=True)  # as recon-mesh
    t_export = time.perf_counter()
    data = encode_stl(result.verts, result.faces)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    assert len(data) == 84 + 50 * len(result.faces)
    stages = timer.take()
    stages.update({k: v for k, v in result.timings.items() if k != "network"})
    stages["export_stl"] = end - t_export
    accounted = sum(v for k, v in stages.items() if k != "network")
    stages["postprocess"] = max(0.0, (end - start) - accounted)  # tensor -> numpy, report, Python glue
    return end - start, stages, result, cpu


def bench_vertices(rec, rgb, alpha, vertices: int, runs: int, warmup: int, height_mm: float | None = None) -> dict:
    timer = StageTimer(rec.model)
    try:
        for _ in range(warmup):
            run_once(rec, rgb, alpha, vertices, timer, height_mm)
        totals, cpus, per_stage = [], [], defaultdict(list)
        result = None
        for _ in range(runs):
            total, stages, result, cpu = run_once(rec, rgb, alpha, vertices, timer, height_mm)
            totals.append(total)
            cpus.append(cpu)
            for k in STAGES:
                per_stage[k].append(stages.get(k, 0.0))
    finally:
        timer.remove()
    return {
        "vertices": vertices,
        "output_vertices": len(result.verts),
        "output_faces": len(result.faces),
        "repair_path": result.repair.path,
        "printable": bool(result.report.ok),
        "end_to_end_ms": stats_ms(totals),
        "cpu_ms": stats_ms(cpus),
        "cores_busy_p50": round(float(np.median(np.array(cpus) / np.maximum(totals, 1e-9))), 3),
        "stages_p50_ms": {k: round(1000.0 * float(np.median(v)), 3) for k, v in per_stage.items()},
    }


def on_background(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8: the picture composited over a fixed smooth colour field with grain (no plain border)."""
    if alpha is None:
        return rgb
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([140 + 60 * np.sin(u / 23.0), 120 + 50 * np.cos(v / 17.0), 100 + 40 * np.sin((u + v) / 31.0)], 2)
    field += rng.normal(0.0, 10.0, field.shape).astype(np.float32)
    a = alpha[..., None].astype(np.float32) / 255.0
    return np.clip(rgb * a + field * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def profile_top_ops(rec, rgb, alpha, vertices: int, top: int = 10) -> list[dict]:
    """The ``top`` torch ops by self CPU time over one reconstruction."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rec.reconstruct(rgb, alpha, vertices=vertices, upright=True)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000.0, 3), "calls": e.count} for e in events]


@contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    from recon_core.io.inference import Reconstructor

    stem = tiny_model_stem() if args.tiny and args.model is None else args.model
    with _quiet("recon_core.io.weights"):
        rec = Reconstructor.from_file(stem)
    cfg = rec.model.config
    rgb, alpha, source = example_image()
    runs = args.runs if args.runs is not None else (3 if args.tiny else 30)
    warmup = 1 if args.tiny else 3
    vertex_counts = args.vertices or ([MAIN_VERTICES] if args.tiny else [642, MAIN_VERTICES, 10242])
    if MAIN_VERTICES not in vertex_counts:
        vertex_counts = [*vertex_counts, MAIN_VERTICES]  # the targets are stated at 2,562

    encoder_dtype = next(rec.model.encoder.parameters()).dtype
    gflops = matmul_gflops(512 if args.tiny else 2048, dtype=encoder_dtype)
    size = cfg.image_size
    image = torch.rand(1, 3, size, size)
    encoder_flops = count_flops(rec.model.encoder, image)
    network_flops = count_flops(rec.model, image, vertices=MAIN_VERTICES)
    floor_ms = 1000.0 * encoder_flops / (gflops * 1e9)

    height = args.height_mm
    results = {str(v): bench_vertices(rec, rgb, alpha, v, runs, warmup, height) for v in vertex_counts}
    main = results[str(MAIN_VERTICES)]
    # The same picture as a photo without alpha (over a smooth, grainy background): the object finder
    # (when there is one) finds the object first; its time is the "finder" stage.
    no_alpha = bench_vertices(rec, on_background(rgb, alpha), None, MAIN_VERTICES, runs, warmup, height)
    no_alpha["finder"] = "none" if rec.finder is None else "models/finder"
    p50 = main["end_to_end_ms"]["p50"]
    out = {
        "benchmark": "inference",
        "machine": machine(args.threads),
        "model": {"path": str(stem or "models/default"), "trained": rec.trained, "backbone": cfg.backbone,
                  "image_size": size, "hidden_dim": cfg.hidden_dim},
        "image": source,
        "height_mm": height,
        "runs": runs,
        "warmup": warmup,
        "by_vertices": results,
        "no_alpha_2562": no_alpha,
        "floor": {
            "matmul_gflops": round(gflops, 2),
            "matmul_dtype": str(encoder_dtype).removeprefix("torch."),
            "encoder_gflop": round(encoder_flops / 1e9, 4),
            "network_gflop": round(network_flops / 1e9, 4),
            "encoder_floor_ms": round(floor_ms, 3),
            "network_floor_ms": round(1000.0 * network_flops / (gflops * 1e9), 3),
            "encoder_p50_over_floor": round(main["stages_p50_ms"]["encoder"] / floor_ms, 3),
            "p50_over_floor": round(p50 / floor_ms, 3),
            "cpu_p50_ms": main["cpu_ms"]["p50"],
            "cpu_p50_over_threads_ms": round(main["cpu_ms"]["p50"] / args.threads, 3),
        },
        "targets": {
            "p50_ms_2562": target(p50, TARGET_P50_MS, "ms"),
            "p50_over_floor_2562": target(p50 / floor_ms, TARGET_FLOOR_RATIO, "x"),
        },
    }
    if args.profile:
        out["top_ops_2562"] = profile_top_ops(rec, rgb, alpha, MAIN_VERTICES)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--model", help="model stem (default: models/default; --tiny: a random tiny model)")
    p.add_argument("--runs", type=positive_int, help="timed runs per vertex count (default 30; --tiny 3)")
    p.add_argument("--vertices", type=int, nargs="+", choices=[642, 2562, 10242],
                   help="output vertex counts (default: 642 2562 10242; --tiny: 2562)")
    p.add_argument("--profile", action="store_true", help="add the top-10 torch ops of one run")
    p.add_argument("--height-mm", type=positive_float,
                   help="reconstruct at this height in millimetres, as recon-mesh --height-mm")
    args = p.parse_args(argv)
    check_model(p, args.model)
    return emit(run(args))


if __name__ == "__main__":
    main()
