"""Shared set-up of the benchmarks: machine facts, the example image, the tiny model, targets, JSON output.

Every benchmark prints exactly one JSON object on stdout; logging goes to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
THREADS = 2
"""torch intra-op threads of every CPU measurement: the target machine has 2 cores."""

TINY_MODEL = dict(backbone="resnet18", image_size=64, fpn_channels=16, coarse_hidden=32, hidden_dim=16,
                  attention_heads=2, gconv_layers=1)
"""The --tiny model (as tests/conftest.py's TINY): seconds, not minutes, on 2 cores."""


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (``--tiny``, ``--threads``)."""
    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="fast smoke configuration (tiny model, few runs)")
    p.add_argument("--threads", type=positive_int, default=THREADS, help=f"torch intra-op threads (default {THREADS})")
    return p


def _parsed(kind: type, text: str, noun: str):
    """``text`` as a ``kind`` (int or float) for an argparse type; ``noun`` names what it must be."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = _parsed(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    if not _parsed(float, text, "a number") > 0:  # nan too
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return float(text)


def check_model(p: argparse.ArgumentParser, model: str | None, flag: str = "--model") -> None:
    """Exit 2 through ``p.error`` when ``model`` (a saved model's stem, or None: the shipped one) is not one that
    :func:`recon_core.io.weights.load_model` loads (:func:`recon_core.io.weights.check_model_files`)."""
    if model is None:
        return
    from recon_core.io.weights import WeightsError, check_model_files

    try:
        check_model_files(model)
    except WeightsError as err:
        p.error(f"{flag} {model}: {err}")


def check_file(p: argparse.ArgumentParser, flag: str, path: str | os.PathLike | None) -> None:
    """Exit 2 through ``p.error`` when ``path`` (None: not given) is not a file."""
    if path is not None and not Path(path).is_file():
        p.error(f"{flag} {path}: no such file")


def machine(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    from recon_core.network.encoder import cpu_has_native_bf16

    info = {
        "cpu_cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads() if threads is None else threads,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_native_bf16": cpu_has_native_bf16(),  # then inference runs the encoder in bfloat16
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # > 0 when other work shares the cores
    except (AttributeError, OSError):  # none on Windows
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stats_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, min and mean of a list of durations, in milliseconds."""
    ms = sorted(1000.0 * s for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return {"p50": round(statistics.median(ms), 3), "p95": round(p95, 3), "min": round(ms[0], 3),
            "mean": round(statistics.fmean(ms), 3), "runs": len(ms)}


def target(value: float, limit: float, unit: str) -> dict[str, Any]:
    """A target ``value <= limit`` and whether it is met."""
    return {"value": round(float(value), 3), "limit": limit, "unit": unit, "pass": bool(value <= limit)}


def example_image(size: int = 256) -> tuple[np.ndarray, np.ndarray, str]:
    """The benchmark input, decoded: ``(rgb (H, W, 3) uint8, alpha (H, W) uint8, source)``.

    The first ``examples/*.png`` when there is one, else a synthetic shaded ellipse on white.
    """
    pngs = sorted(EXAMPLES.glob("*.png"))
    if pngs:
        from recon_core.io.image import load_image

        rgb, alpha, _ = load_image(pngs[0])
        if alpha is None:
            alpha = np.full(rgb.shape[:2], 255, np.uint8)
        return rgb, alpha, str(pngs[0].relative_to(REPO))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r2 = ((xx - 0.5 * size) / (0.28 * size)) ** 2 + ((yy - 0.5 * size) / (0.40 * size)) ** 2
    alpha = np.where(r2 < 1.0, 255, 0).astype(np.uint8)
    shade = np.clip(1.0 - 0.6 * r2, 0.2, 1.0)[..., None] * np.array([200.0, 80.0, 50.0])
    rgb = np.where(alpha[..., None] > 0, shade, 255.0).astype(np.uint8)
    return rgb, alpha, f"synthetic {size}x{size} ellipse"


def write_example_png(path: Path) -> str:
    """Write :func:`example_image` as an RGBA PNG; returns its source description."""
    from PIL import Image

    rgb, alpha, source = example_image()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return source


def tiny_model_stem(folder: str | os.PathLike | None = None) -> Path:
    """A model stem with only a ``.json`` (random weights) of the :data:`TINY_MODEL` configuration; in a temporary
    folder removed when the process exits unless ``folder`` is given (every ``--tiny`` run left one behind)."""
    from recon_core.network.config import ModelConfig

    if folder is None:
        folder = tempfile.mkdtemp(prefix="bench_model_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    folder = Path(folder)
    stem = folder / "tiny"
    meta = {"model": ModelConfig(**TINY_MODEL).to_dict(), "trained": False, "note": "benchmark smoke model"}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return stem


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print ``result`` as one JSON object on stdout; returns it."""
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
    return result
