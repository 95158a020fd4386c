"""Render the training views of the data set with Cycles on the CPU: images, masks, depth, cameras, sketches.

Runs in real Blender or with the ``bpy`` module::

    blender -b -P training/render.py -- --views 24 --workers 2
    python training/render.py --views 24 --workers 2 [--split train] [--limit 10] [--models ID ...]

For every model of ``<shapenet>/manifest.json`` (ShapeNetCore v2 layout, world frame
+Y up, front -Z, bounding-box diagonal 1) it writes, in ``<out>/<synset>/<model_id>/``:

- ``NNN.png``: RGBA, 8 bit, straight alpha (transparent background by default).
- ``NNN_depth.npy``: float16 (H, W) camera-frame z (OpenCV z-depth, not the distance
  to the camera centre), 0 on the background.
- ``NNN_mask.png``: L, 0/255.
- ``NNN.json``: :meth:`recon_core.mesh.camera.Camera.to_json` plus the view's parameters.
- ``points.npz``: ``points`` and ``normals``, (P, 3) float32 surface samples in the
  world (ShapeNet) frame, written once per model.

Views: azimuth uniform in [0, 360), elevation, distance and focal length uniform in
their ranges; the distance is raised where needed so that the bounding sphere (radius
0.5) stays inside the frame. One to three lights (sun or area) with random direction,
energy and tint, a dim tinted world light, and a random principled material.

Sketch views (``--sketch-share``) are line drawings: black lines on white, alpha = the
object's mask. They are computed in numpy from the depth and normal passes of a
1-sample render (silhouette, depth discontinuities, creases above ``--crease-deg``).
Freestyle also works headless with Cycles, but measured here it added ~0.1-0.3 s a
view on a 2k-face sphere and grows with the face count, while the numpy edges cost
~2 ms and need only one sample.

Every view is a deterministic function of ``(seed, model_id, view)``. A view whose four
files exist is skipped, and every file is written to a temporary name and renamed,
so a killed run resumes where it stopped. With ``--workers N`` the models are split
into N shards, each rendered by a subprocess running this script (one Blender per
process); a worker that crashes is restarted without the model it was rendering. A
model that fails is logged, listed in ``<out>/failed.txt`` and skipped. The exit code is 0
when every shard ran to its end (failed models included), 1 when a worker could not, 2 for bad
input (a value out of range, no model selected, an --out that cannot be a folder), reported in one
sentence before anything is created.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

try:
    from recon_core.mesh.camera import SHAPENET_TO_BLENDER, Camera, blender_matrix_world, look_at
except ImportError:  # Blender's own Python has no torch (imported by recon_core.mesh.camera): use the project's venv
    _venv = _REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not _venv.is_dir():
        raise ImportError(
            "recon_core.mesh.camera needs numpy and torch; run `python training/render.py` from the project's venv, "
            "or give Blender a PYTHONPATH with them for its Python version"
        ) from None
    sys.path.append(str(_venv))
    from recon_core.mesh.camera import SHAPENET_TO_BLENDER, Camera, blender_matrix_world, look_at

log = logging.getLogger("render")

PROGRESS_MARK = "@@render"
"""Prefix of the lines a worker prints on stdout for its parent (``view``, ``model ID``, ``failed ID``)."""
_NO_HIT = 1e9
"""Cycles writes 1e10 in the depth pass where a pixel's ray hits nothing."""


@dataclass(frozen=True)
class RenderConfig:
    """What a view looks like; every field is read by the renderer."""

    size: int = 137
    """Image side in pixels."""
    samples: int = 8
    """Cycles samples of a shaded view (a sketch view takes one)."""
    elevation_deg: tuple[float, float] = (-10.0, 40.0)
    """Camera elevation range, degrees above the object's horizontal plane."""
    distance: tuple[float, float] = (1.6, 2.2)
    """Camera distance range from the bounding-box centre (the diagonal is 1)."""
    focal_mm: tuple[float, float] = (35.0, 50.0)
    """Focal length range, millimetres."""
    sensor_mm: float = 32.0
    """Sensor width, millimetres (horizontal sensor fit)."""
    frame_margin: float = 1.05
    """The bounding sphere's radius times this must fit in the half field of view."""
    sketch_share: float = 0.2
    """Probability that a view is a line drawing."""
    crease_deg: float = 40.0
    """Normal change between neighbouring pixels drawn as a line in sketches."""
    background: str = "transparent"
    """Behind the object: "transparent", "color" (random plain colour) or "noise"."""
    points: int = 10000
    """Surface samples written per model in points.npz."""

    def __post_init__(self) -> None:
        if self.background not in ("transparent", "color", "noise"):
            raise ValueError(f"background must be transparent, color or noise, got {self.background!r}")
        for name in ("elevation_deg", "distance", "focal_mm"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} range must be (low, high), got {(lo, hi)}")
        if not 0.0 <= self.sketch_share <= 1.0:
            raise ValueError(f"sketch_share must be in [0, 1], got {self.sketch_share}")


# ----------------------------------------------------------------------------- data set


@dataclass(frozen=True)
class ModelEntry:
    """One model to render."""

    synset: str
    model_id: str
    obj_path: Path
    split: str


def list_models(shapenet_root: Path, split: str = "all", models: list[str] | None = None) -> list[ModelEntry]:
    """Models of the manifest (``list`` of records or ``{"models": [...]}``), filtered, sorted by (synset, id).

    Without a manifest, every ``<synset>/<model_id>/models/model_normalized.obj`` under the root (split "train").
    """
    manifest = shapenet_root / "manifest.json"
    records: list[dict]
    if manifest.exists():
        data = json.loads(manifest.read_text())
        records = data["models"] if isinstance(data, dict) else data
    else:
        records = [
            {"synset": p.parts[-4], "model_id": p.parts[-3], "split": "train"}
            for p in sorted(shapenet_root.glob("*/*/models/model_normalized.obj"))
        ]
    wanted = set(models) if models else None
    out = []
    for rec in records:
        synset, model_id, rec_split = rec["synset"], rec["model_id"], rec.get("split", "train")
        if split != "all" and rec_split != split:
            continue
        if wanted is not None and model_id not in wanted and f"{synset}/{model_id}" not in wanted:
            continue
        out.append(ModelEntry(synset, model_id, model_path(shapenet_root, rec), rec_split))
    return sorted(out, key=lambda m: (m.synset, m.model_id))


def model_path(shapenet_root: Path, record: dict) -> Path:
    """Path of a manifest record's OBJ: ``<root>/<synset>/<id>/...``, or under ``<root>/<pool>/`` when it is there."""
    rel = Path(record["synset"]) / record["model_id"] / "models" / "model_normalized.obj"
    for base in (shapenet_root, shapenet_root / str(record.get("pool", "")), shapenet_root / "extra"):
        if (base / rel).exists():
            return base / rel
    return shapenet_root / rel


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an OBJ file (polygons fanned, materials and texture coordinates ignored).

    Returns:
        verts: (V, 3) float64.
        faces: (F, 3) int64, 0-based.
    """
    vs: list[str] = []
    tris: list[tuple[int, int, int]] = []
    with open(path, "r", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                vs.append(line[2:])
            elif line.startswith("f "):
                nv = len(vs)
                idx = [int(tok.split("/", 1)[0]) for tok in line[2:].split()]
                idx = [i - 1 if i > 0 else nv + i for i in idx]
                for k in range(1, len(idx) - 1):
                    tris.append((idx[0], idx[k], idx[k + 1]))
    verts = np.array(" ".join(vs).split(), dtype=np.float64).reshape(-1, 3)
    faces = np.array(tris, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise ValueError(f"{path} has no faces")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise ValueError(f"{path} has face indices outside its {len(verts)} vertices")
    return verts, faces


def sample_surface(
    verts: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted uniform surface samples and their face normals, (count, 3) float32 each."""
    tri = verts[faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    face = rng.choice(len(faces), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)[:, :, None]  # (count, 3, 1)
    points = (tri[face] * w).sum(axis=1)
    normals = cross[face] / np.maximum(area[face], 1e-12)[:, None]
    return points.astype(np.float32), normals.astype(np.float32)


# ----------------------------------------------------------------------------- view parameters


def derive_seed(seed: int, model_id: str, view: int) -> int:
    """A 63-bit seed from ``(seed, model_id, view)``, the same on every machine and Python."""
    digest = hashlib.sha256(f"{seed}/{model_id}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def min_distance(focal_mm: float, sensor_mm: float, margin: float, radius: float = 0.5) -> float:
    """Smallest camera distance at which a sphere of ``radius * margin`` fits the (square) frame."""
    half_fov = math.atan(sensor_mm / 2.0 / focal_mm)
    return radius * margin / math.sin(half_fov)


@dataclass(frozen=True)
class ViewParams:
    """Everything random about one view."""

    azimuth: float
    elevation: float
    distance: float
    focal_mm: float
    sketch: bool
    seed: int
    lights: list[dict]
    material: dict
    world: dict
    background: dict
    line_width: int


def sample_view(config: RenderConfig, seed: int, model_id: str, view: int) -> ViewParams:
    """The random parameters of one view (deterministic)."""
    vseed = derive_seed(seed, model_id, view)
    rng = np.random.default_rng(vseed)
    azimuth = float(rng.uniform(0.0, 360.0))
    elevation = float(rng.uniform(*config.elevation_deg))
    focal = float(rng.uniform(*config.focal_mm))
    distance = float(rng.uniform(*config.distance))
    distance = max(distance, min_distance(focal, config.sensor_mm, config.frame_margin))
    sketch = bool(rng.random() < config.sketch_share)

    def tint(sat: float) -> list[float]:
        return list(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, sat), 1.0))

    lights = []
    for i in range(int(rng.integers(1, 4))):
        kind = "SUN" if rng.random() < 0.6 else "AREA"
        # The key light comes from the camera's side; the others from anywhere above the horizon.
        light_az = azimuth + rng.uniform(-90.0, 90.0) if i == 0 else rng.uniform(0.0, 360.0)
        light_el = rng.uniform(15.0, 75.0) if i == 0 else rng.uniform(-10.0, 80.0)
        scale = 1.0 if i == 0 else 0.5
        energy = rng.uniform(2.0, 5.0) * scale if kind == "SUN" else rng.uniform(300.0, 900.0) * scale
        lights.append(
            {
                "type": kind,
                "azimuth": float(light_az),
                "elevation": float(light_el),
                "energy": float(energy),
                "color": tint(0.25),
                "size": float(rng.uniform(0.5, 2.0)),
            }
        )
    metallic = float(rng.uniform(0.6, 1.0)) if rng.random() < 0.2 else 0.0
    material = {
        "base_color": list(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.95))),
        "roughness": float(rng.uniform(0.15, 0.9)),
        "metallic": metallic,
    }
    world = {"color": tint(0.3), "strength": float(rng.uniform(0.15, 0.6))}
    background = {"color": [int(c) for c in rng.integers(0, 256, 3)], "noise_seed": int(rng.integers(0, 2**31))}
    return ViewParams(
        azimuth, elevation, distance, focal, sketch, vseed, lights, material, world, background,
        line_width=int(rng.integers(1, 3)),
    )


def view_camera(config: RenderConfig, params: ViewParams) -> Camera:
    return look_at(
        params.azimuth, params.elevation, params.distance, params.focal_mm, config.sensor_mm, config.size, config.size
    )


# ----------------------------------------------------------------------------- image processing (no bpy)


_EXR_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


def read_exr(path: Path) -> dict[str, np.ndarray]:
    """Channels of an uncompressed scanline OpenEXR file (single- or multi-part), (H, W) each, row 0 at the top."""
    b = Path(path).read_bytes()
    if b[:4] != b"v/1\x01":
        raise ValueError(f"{path} is not an OpenEXR file")
    multipart = bool(struct.unpack("<I", b[4:8])[0] & 0x1000)
    pos, headers = 8, []
    while True:
        header: dict = {}
        while True:
            end = b.index(b"\0", pos)
            name = b[pos:end].decode()
            pos = end + 1
            if not name:
                break
            end = b.index(b"\0", pos)
            kind = b[pos:end].decode()
            size = struct.unpack("<i", b[end + 1 : end + 5])[0]
            value = b[end + 5 : end + 5 + size]
            pos = end + 5 + size
            if kind == "chlist":
                chans, q = [], 0
                while value[q] != 0:
                    e = value.index(b"\0", q)
                    chans.append((value[q:e].decode(), struct.unpack("<i", value[e + 1 : e + 5])[0]))
                    q = e + 17
                header[name] = chans
            elif kind == "box2i":
                header[name] = struct.unpack("<4i", value)
            elif kind == "compression":
                header[name] = value[0]
            elif kind == "int":
                header[name] = struct.unpack("<i", value)[0]
        headers.append(header)
        if not multipart:
            break
        if b[pos] == 0:
            pos += 1
            break
    tables = []
    for header in headers:
        if header.get("compression", 0) != 0:
            raise ValueError(f"{path}: only uncompressed EXR files are read (exr_codec NONE)")
        x0, y0, x1, y1 = header["dataWindow"]
        n = header.get("chunkCount", y1 - y0 + 1)
        tables.append(np.frombuffer(b, "<u8", n, pos))
        pos += 8 * n
    out: dict[str, np.ndarray] = {}
    for header, offsets in zip(headers, tables):
        x0, y0, x1, y1 = header["dataWindow"]
        width, height = x1 - x0 + 1, y1 - y0 + 1
        arrays = {c: np.empty((height, width), _EXR_TYPES[t]) for c, t in header["channels"]}
        for off in offsets:
            off = int(off) + (4 if multipart else 0)
            y = struct.unpack("<i", b[off : off + 4])[0]
            off += 8
            for c, t in header["channels"]:
                arrays[c][y - y0] = np.frombuffer(b, _EXR_TYPES[t], width, off)
                off += width * _EXR_TYPES[t].itemsize
        out.update(arrays)
    return out


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def to_rgba8(rgba_linear: np.ndarray) -> np.ndarray:
    """(H, W, 4) premultiplied linear float -> (H, W, 4) uint8 straight-alpha sRGB."""
    a = np.clip(rgba_linear[..., 3:4], 0.0, 1.0)
    rgb = np.where(a > 1e-6, rgba_linear[..., :3] / np.maximum(a, 1e-6), 0.0)
    out = np.concatenate([linear_to_srgb(rgb), a], axis=2)
    return (out * 255.0 + 0.5).astype(np.uint8)


def background_image(kind: str, params: dict, size: int) -> np.ndarray:
    """(size, size, 3) uint8 background: a plain colour or smooth-ish colour noise."""
    if kind == "color":
        return np.broadcast_to(np.asarray(params["color"], np.uint8), (size, size, 3)).copy()
    rng = np.random.default_rng(params["noise_seed"])
    cells = int(rng.integers(4, 16))
    coarse = rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8)
    from PIL import Image

    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.float32)
    img += rng.normal(0.0, 12.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 over (H, W, 3) uint8 -> opaque (H, W, 4) uint8."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3] * a + background * (1.0 - a)
    return np.concatenate([np.clip(rgb + 0.5, 0, 255).astype(np.uint8), np.full_like(rgba[..., 3:4], 255)], axis=2)


def sketch_lines(
    depth: np.ndarray, normals_cam: np.ndarray, K: np.ndarray, crease_deg: float, rel_jump: float = 0.02
) -> np.ndarray:
    """Line pixels of a drawing of the object: silhouette, depth discontinuities and creases.

    Args:
        depth: (H, W) camera-frame z, 0 where no surface.
        normals_cam: (H, W, 3) unit surface normals in the camera frame (any sign).
        K: (3, 3) intrinsics.
        crease_deg: neighbouring pixels whose normals differ by more than this make a line.
        rel_jump: a neighbour farther than this fraction of the depth from the plane of
            the pixel (and vice versa) is on another surface.

    Returns:
        (H, W) bool.
    """
    h, w = depth.shape
    hit = depth > 0
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=2)  # z = 1
    pts = rays * depth[..., None]
    offset = (normals_cam * pts).sum(axis=2)  # plane n . p = offset
    lines = hit & ~_eroded(hit)
    cos_crease = math.cos(math.radians(crease_deg))
    for axis in (0, 1):
        a = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        b = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        both = hit[a] & hit[b]
        crease = np.abs((normals_cam[a] * normals_cam[b]).sum(axis=2)) < cos_crease

        def predicted(src, dst):  # depth at dst's ray on src's plane
            denom = (normals_cam[src] * rays[dst]).sum(axis=2)
            with np.errstate(divide="ignore", invalid="ignore"):
                return offset[src] / denom

        za, zb = depth[a], depth[b]
        off_a = ~(np.abs(predicted(a, b) - zb) <= rel_jump * zb)
        off_b = ~(np.abs(predicted(b, a) - za) <= rel_jump * za)
        jump = off_a & off_b
        edge = both & (crease | jump)
        near_a = za <= zb  # draw a depth jump on the nearer surface
        lines[a] |= edge & (crease | near_a)
        lines[b] |= edge & jump & ~near_a
    return lines


def _eroded(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _dilated(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    return p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]


# ----------------------------------------------------------------------------- files


VIEW_SUFFIXES = (".png", "_depth.npy", "_mask.png", ".json")
"""Files of a view ``NNN``; the JSON is written last."""


def view_done(folder: Path, view: int) -> bool:
    return all((folder / f"{view:03d}{s}").exists() for s in VIEW_SUFFIXES)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yields a temporary path next to ``path``; renamed onto ``path`` when the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_png(path: Path, array: np.ndarray, mode: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array, mode).save(tmp, format="PNG", compress_level=1)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def write_points(folder: Path, verts: np.ndarray, faces: np.ndarray, count: int, seed: int, model_id: str) -> None:
    path = folder / "points.npz"
    if path.exists():
        return
    rng = np.random.default_rng(derive_seed(seed, model_id, -1))
    points, normals = sample_surface(verts, faces, count, rng)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, points=points, normals=normals)


# ----------------------------------------------------------------------------- Blender


@contextlib.contextmanager
def _quiet_stdout():
    """Silence Blender's per-render prints on file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class BlenderRenderer:
    """One Blender scene (camera, lights, world, one material) reused for every model and view."""

    MAX_LIGHTS = 3

    def __init__(self, config: RenderConfig, threads: int, scratch: Path):
        import bpy

        self.bpy = bpy
        self.config = config
        self.exr = scratch / "view.exr"
        with _quiet_stdout():
            bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        self.scene = scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = config.samples
        scene.cycles.use_adaptive_sampling = False
        scene.cycles.use_denoising = False
        scene.cycles.max_bounces = 4
        scene.cycles.tile_size = 64
        scene.render.use_persistent_data = True
        scene.render.resolution_x = scene.render.resolution_y = config.size
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True
        scene.render.threads_mode = "FIXED" if threads > 0 else "AUTO"
        if threads > 0:
            scene.render.threads = threads
        scene.view_settings.view_transform = "Standard"
        settings = scene.render.image_settings
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.exr_codec = "NONE"
        settings.color_depth = "32"
        scene.render.filepath = str(self.exr)
        layer = scene.view_layers[0]
        layer.use_pass_z = True
        layer.use_pass_normal = True

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.sensor_width = config.sensor_mm
        cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera

        self.lights = {}
        for kind in ("SUN", "AREA"):
            for i in range(self.MAX_LIGHTS):
                obj = bpy.data.objects.new(f"{kind}{i}", bpy.data.lights.new(f"{kind}{i}", kind))
                scene.collection.objects.link(obj)
                obj.hide_render = True
                self.lights[kind, i] = obj

        world = bpy.data.worlds.new("world")  # node trees are on by default since Blender 5.0
        if world.node_tree is None:
            world.use_nodes = True
        scene.world = world
        self.world_bg = world.node_tree.nodes["Background"]

        self.material = bpy.data.materials.new("material")
        if self.material.node_tree is None:
            self.material.use_nodes = True
        self.bsdf = self.material.node_tree.nodes["Principled BSDF"]
        self.mesh_obj = None

    def load_mesh(self, verts_world: np.ndarray, faces: np.ndarray) -> None:
        """Replace the object with this mesh, given in the ShapeNet frame."""
        bpy = self.bpy
        if self.mesh_obj is not None:
            mesh = self.mesh_obj.data
            bpy.data.objects.remove(self.mesh_obj)
            bpy.data.meshes.remove(mesh)
        verts = verts_world @ SHAPENET_TO_BLENDER.T
        mesh = bpy.data.meshes.new("model")
        mesh.vertices.add(len(verts))
        mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        mesh.validate(verbose=False)
        mesh.materials.append(self.material)
        self.mesh_obj = bpy.data.objects.new("model", mesh)
        self.scene.collection.objects.link(self.mesh_obj)

    def render(self, camera: Camera, params: ViewParams) -> dict[str, np.ndarray]:
        """Render one view; returns the EXR channels (rows top to bottom)."""
        from mathutils import Matrix, Vector

        scene = self.scene
        self.camera.matrix_world = Matrix(blender_matrix_world(camera).tolist())
        self.camera.data.lens = params.focal_mm
        scene.cycles.seed = params.seed % (2**31)
        if params.sketch:  # geometry passes only: one sample at the pixel centres
            scene.cycles.samples = 1
            scene.cycles.filter_width = 0.01
        else:
            scene.cycles.samples = self.config.samples
            scene.cycles.filter_width = 1.5
        for obj in self.lights.values():
            obj.hide_render = True
        for i, light in enumerate(params.lights):
            obj = self.lights[light["type"], i]
            obj.hide_render = False
            az, el = math.radians(light["azimuth"]), math.radians(light["elevation"])
            direction_world = np.array([math.cos(el) * math.sin(az), math.sin(el), -math.cos(el) * math.cos(az)])
            position = Vector((SHAPENET_TO_BLENDER @ direction_world * 3.0).tolist())
            obj.location = position
            obj.rotation_euler = (-position).to_track_quat("-Z", "Y").to_euler()
            obj.data.energy = light["energy"]
            obj.data.color = light["color"]
            if light["type"] == "AREA":
                obj.data.size = light["size"]
        self.world_bg.inputs["Color"].default_value = (*params.world["color"], 1.0)
        self.world_bg.inputs["Strength"].default_value = params.world["strength"]
        self.bsdf.inputs["Base Color"].default_value = (*_srgb_to_linear(params.material["base_color"]), 1.0)
        self.bsdf.inputs["Roughness"].default_value = params.material["roughness"]
        self.bsdf.inputs["Metallic"].default_value = params.material["metallic"]
        with _quiet_stdout():
            self.bpy.ops.render.render(write_still=True)
        channels = read_exr(self.exr)
        return {name.split(".", 1)[1]: value for name, value in channels.items()}


def _srgb_to_linear(c: list[float]) -> list[float]:
    return [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]


def view_outputs(
    channels: dict[str, np.ndarray], camera: Camera, params: ViewParams, config: RenderConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EXR channels -> (RGBA uint8 image, float16 depth, uint8 mask)."""
    z = channels["Depth.Z"]
    hit = z < _NO_HIT
    if params.sketch:
        mask = hit
        depth = np.where(hit, z, 0.0)
        n_blender = np.stack([channels[f"Normal.{c}"] for c in "XYZ"], axis=2)
        n_cam = n_blender @ SHAPENET_TO_BLENDER @ camera.R.T  # Blender world -> ShapeNet world -> camera
        lines = sketch_lines(depth, n_cam, camera.K, config.crease_deg)
        if params.line_width > 1:
            lines = _dilated(lines)
        rgba = np.full(z.shape + (4,), 255, np.uint8)
        rgba[lines, :3] = 0
        rgba[..., 3] = np.where(mask | lines, 255, 0)
        if config.background != "transparent":
            rgba = composite(rgba, np.full(z.shape + (3,), 255, np.uint8))
    else:
        rgba = to_rgba8(np.stack([channels[f"Combined.{c}"] for c in "RGBA"], axis=2))
        mask = rgba[..., 3] > 127
        depth = np.where(mask & hit, z, 0.0)
        if config.background != "transparent":
            rgba = composite(rgba, background_image(config.background, params.background, config.size))
    return rgba, depth.astype(np.float16), np.where(mask, 255, 0).astype(np.uint8)


def render_model(
    renderer: BlenderRenderer, entry: ModelEntry, out_root: Path, views: int, seed: int, report
) -> int:
    """Render the missing views of one model; returns how many were rendered."""
    config = renderer.config
    folder = out_root / entry.synset / entry.model_id
    todo = [v for v in range(views) if not view_done(folder, v)]
    if not todo and (folder / "points.npz").exists():
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    verts, faces = read_obj(entry.obj_path)
    write_points(folder, verts, faces, config.points, seed, entry.model_id)
    if not todo:
        return 0
    renderer.load_mesh(verts, faces)
    for view in todo:
        params = sample_view(config, seed, entry.model_id, view)
        camera = view_camera(config, params)
        rgba, depth, mask = view_outputs(renderer.render(camera, params), camera, params, config)
        stem = f"{view:03d}"
        save_png(folder / f"{stem}.png", rgba, "RGBA")
        save_npy(folder / f"{stem}_depth.npy", depth)
        save_png(folder / f"{stem}_mask.png", mask, "L")
        meta = camera.to_json()
        meta.update(
            synset=entry.synset,
            model_id=entry.model_id,
            view=view,
            azimuth=params.azimuth,
            elevation=params.elevation,
            distance=params.distance,
            focal_mm=params.focal_mm,
            sensor_mm=config.sensor_mm,
            sketch=params.sketch,
            seed=params.seed,
            background=config.background,
            samples=1 if params.sketch else config.samples,
            lights=params.lights,
            material=params.material,
            world=params.world,
        )
        save_json(folder / f"{stem}.json", meta)
        report("view")
    return len(todo)


# ----------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    d = RenderConfig()
    p = argparse.ArgumentParser(prog="render.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapenet", type=Path, default=_REPO / "data" / "shapenet",
                   help="data set root (manifest.json; default: data/shapenet)")
    p.add_argument("--out", type=Path, default=_REPO / "data" / "renders", help="renders root (default: data/renders)")
    p.add_argument("--views", type=int, default=24, help="views per model (default: 24)")
    p.add_argument("--split", default="all", help="train, val, test or all (default: all)")
    p.add_argument("--models", nargs="*", help="only these model ids (or synset/model_id)")
    p.add_argument("--limit", type=int, help="only the first N models (after the other filters)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="parallel Blender processes (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="render threads per process (default: cores / workers)")
    p.add_argument("--size", type=int, default=d.size, help=f"image side in pixels (default: {d.size})")
    p.add_argument("--samples", type=int, default=d.samples,
                   help=f"Cycles samples of a shaded view (default: {d.samples}; a sketch view takes one)")
    p.add_argument("--elevation", type=float, nargs=2, default=d.elevation_deg, metavar=("LO", "HI"),
                   help="camera elevation range, degrees above the horizontal (default: {:g} {:g})".format(
                       *d.elevation_deg))
    p.add_argument("--distance", type=float, nargs=2, default=d.distance, metavar=("LO", "HI"),
                   help="camera distance range from the centre, bounding-box diagonals (default: {:g} {:g})".format(
                       *d.distance))
    p.add_argument("--focal", type=float, nargs=2, default=d.focal_mm, metavar=("LO", "HI"), help="millimetres")
    p.add_argument("--sensor", type=float, default=d.sensor_mm, help="sensor width, millimetres")
    p.add_argument("--sketch-share", type=float, default=d.sketch_share,
                   help=f"share of views drawn as line sketches, 0 to 1 (default: {d.sketch_share})")
    p.add_argument("--crease-deg", type=float, default=d.crease_deg,
                   help=f"normal change in degrees drawn as a line in sketches (default: {d.crease_deg:g})")
    p.add_argument("--background", default=d.background, choices=("transparent", "color", "noise"))
    p.add_argument("--points", type=int, default=d.points, help="surface samples per model")
    p.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/n", set by the parent
    p.add_argument("--exclude", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RenderConfig:
    return RenderConfig(
        size=args.size,
        samples=args.samples,
        elevation_deg=tuple(args.elevation),
        distance=tuple(args.distance),
        focal_mm=tuple(args.focal),
        sensor_mm=args.sensor,
        sketch_share=args.sketch_share,
        crease_deg=args.crease_deg,
        background=args.background,
        points=args.points,
    )


def selected_models(args: argparse.Namespace) -> list[ModelEntry]:
    models = list_models(args.shapenet, args.split, args.models)
    if args.limit is not None:
        models = models[: args.limit]
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        models = models[i::n]
    excluded = set(args.exclude)
    return [m for m in models if m.model_id not in excluded]


def argument_error(args: argparse.Namespace) -> str | None:
    """The first value of the command line that cannot be rendered, as one sentence naming its option; None if none."""
    for name in ("views", "limit", "workers", "size", "samples", "points"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name} must be at least 1, got {value}"
    if args.threads is not None and args.threads < 0:
        return f"--threads must be at least 0 (0: Blender's own choice), got {args.threads}"
    for flag, (lo, hi) in (("--elevation", args.elevation), ("--distance", args.distance), ("--focal", args.focal)):
        if lo > hi:
            return f"{flag} takes LO HI with LO <= HI, got {lo:g} {hi:g}: swap them"
    if not -90.0 <= args.elevation[0] <= args.elevation[1] <= 90.0:
        return f"--elevation must lie within -90 .. 90 degrees, got {args.elevation[0]:g} {args.elevation[1]:g}"
    for flag, value in (("--distance", args.distance[0]), ("--focal", args.focal[0]), ("--sensor", args.sensor)):
        if not value > 0:
            return f"{flag} must be above 0, got {value:g}"
    if not 0.0 <= args.sketch_share <= 1.0:
        return f"--sketch-share is a share of the views, from 0 to 1, got {args.sketch_share:g}"
    if not 0.0 < args.crease_deg <= 180.0:
        return f"--crease-deg must be above 0 and at most 180 degrees, got {args.crease_deg:g}"
    return None


def no_models_error(args: argparse.Namespace) -> str:
    """Why :func:`selected_models` chose no model, as one sentence saying what to give instead."""
    root = args.shapenet
    if not root.is_dir():
        return f"--shapenet {root} is not a folder: give the data set's root (training/build_dataset.py writes it)"
    every = list_models(root)
    if not every:
        return f"--shapenet {root} holds no models (no manifest.json, no */*/models/model_normalized.obj)"
    splits = sorted({m.split for m in every})
    if args.split != "all" and args.split not in splits:
        return f"--split {args.split}: no model of {root} is in it; give one of {', '.join(splits)} or all"
    where = f"{root}" if args.split == "all" else f"the {args.split} split of {root}"
    return (f"none of --models {' '.join(args.models or [])} is in {where}: give model ids (or synset/model_id) "
            "of its manifest.json")


def run_worker(args: argparse.Namespace, models: list[ModelEntry], report) -> tuple[int, list[str]]:
    """Render ``models`` in this process; returns (views rendered, failed model ids)."""
    config = config_from_args(args)
    threads = args.threads if args.threads is not None else 0
    rendered, failed = 0, []
    with tempfile.TemporaryDirectory(prefix="render-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        renderer = BlenderRenderer(config, threads, Path(tmp))
        for entry in models:
            report("model", entry.model_id)
            try:
                rendered += render_model(renderer, entry, args.out, args.views, args.seed, report)
            except Exception as err:  # a bad model is skipped, never the run
                log.exception("model %s/%s failed: %s", entry.synset, entry.model_id, err)
                failed.append(entry.model_id)
                report("failed", entry.model_id)
    return rendered, failed


def _progress_bar(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # Blender's own Python has no tqdm
        return None
    return tqdm(total=total, initial=initial, unit="view", smoothing=0.05, dynamic_ncols=True)


def _worker_command(args_list: list[str]) -> list[str]:
    """The command line of a worker: this script, run by the Blender executable we run in, else by this Python.

    Never imports ``bpy``: inside a Blender executable it is already loaded, and a plain Python parent must not
    load it at all. The parent calls this from its shard threads, and ``bpy`` first imported on a thread other
    than the main one makes the interpreter's exit crash in Blender's teardown (``main_python_exit`` ->
    ``WM_exit_ex`` -> ``ED_screen_exit``: SIGSEGV, exit 139) after every view was written.
    """
    script = str(Path(__file__).resolve())
    bpy = sys.modules.get("bpy")
    if bpy is not None and bpy.app.binary_path and "python" not in Path(bpy.app.binary_path).name:
        return [bpy.app.binary_path, "-b", "--factory-startup", "-P", script, "--", *args_list]
    return [sys.executable, script, *args_list]


def run_parallel(
    args: argparse.Namespace, argv: list[str], models: list[ModelEntry], bar
) -> tuple[int, list[str], list[int]]:
    """Render with ``args.workers`` subprocesses, one shard each; restart a crashed worker without its model.

    Returns (views rendered, failed model ids, shards left unfinished: a worker that failed before it
    started a model, or crashed 20 times).
    """
    n = args.workers
    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 1) // n)
    base = list(argv)
    lock = threading.Lock()
    counts = {"views": 0}
    failed: list[str] = []
    unfinished: list[int] = []

    def run_shard(i: int) -> None:
        excluded: list[str] = []
        for _attempt in range(20):
            cmd = _worker_command(
                [*base, "--workers", "1", "--threads", str(threads), "--shard", f"{i}/{n}", "--exclude", *excluded]
            )
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
            current = None
            for line in proc.stdout:
                if not line.startswith(PROGRESS_MARK):
                    continue
                kind, _, rest = line[len(PROGRESS_MARK) :].strip().partition(" ")
                with lock:
                    if kind == "view":
                        counts["views"] += 1
                        if bar is not None:
                            bar.update(1)
                    elif kind == "model":
                        current = rest
                    elif kind == "failed":
                        failed.append(rest)
            if proc.wait() == 0:
                return
            if current is None:
                log.error("worker %d/%d exited with %d before it started a model", i, n, proc.returncode)
                break
            log.error("worker %d/%d exited with %d while rendering %s; restarting without it", i, n, proc.returncode, current)
            with lock:
                failed.append(current)
            excluded.append(current)
        with lock:
            unfinished.append(i)

    shards = [threading.Thread(target=run_shard, args=(i,)) for i in range(n)]
    for t in shards:
        t.start()
    for t in shards:
        t.join()
    return counts["views"], failed, sorted(unfinished)


def _strip_parallel_args(argv: list[str]) -> list[str]:
    """argv without --workers/--threads (the parent sets them for its workers)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--workers", "--threads"):
            skip = True
            continue
        if a.startswith(("--workers=", "--threads=")):
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    error = argument_error(args)  # validate before starting anything
    if error is None and args.models is not None and not args.models:  # `--models $IDS` with $IDS empty
        error = "--models names no model: give model ids (or synset/model_id), or leave --models out for every model"
    if error is None:
        try:
            config_from_args(args)
        except ValueError as err:
            error = str(err)
    if error is None:
        try:
            models = selected_models(args)
        except (ValueError, KeyError, TypeError, OSError) as err:  # a manifest that cannot be read
            error = f"--shapenet {args.shapenet}: its manifest.json cannot be read ({err!s})"
    if error is None and not models and args.shard is None:  # a worker's shard may be empty; a run may not
        error = no_models_error(args)
    if error is None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            error = f"--out {args.out} cannot be made a folder ({err.strerror}): give a folder path"
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.shard is not None:  # a worker: report to the parent on stdout
        def report(kind: str, value: str = "") -> None:
            sys.stdout.write(f"{PROGRESS_MARK} {kind} {value}\n")
            sys.stdout.flush()

        run_worker(args, models, report)
        return 0

    total = len(models) * args.views
    done = sum(view_done(args.out / m.synset / m.model_id, v) for m in models for v in range(args.views))
    log.info("%d models, %d views, %d already rendered, %d workers", len(models), total, done, args.workers)
    bar = _progress_bar(total, done)
    start = time.perf_counter()
    unfinished: list[int] = []
    if args.workers > 1 and len(models) > 1:
        rendered, failed, unfinished = run_parallel(args, _strip_parallel_args(argv), models, bar)
    else:
        def report(kind: str, value: str = "") -> None:
            if kind == "view" and bar is not None:
                bar.update(1)

        rendered, failed = run_worker(args, models, report)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start
    rate = rendered / elapsed if elapsed > 0 else 0.0
    log.info("rendered %d views in %.1f s (%.2f views/s); %d models failed", rendered, elapsed, rate, len(failed))
    if failed:
        log.warning("failed models: %s", " ".join(sorted(set(failed))))
        with open(args.out / "failed.txt", "a") as f:
            f.write("".join(f"{m}\n" for m in sorted(set(failed))))
    if unfinished:
        shards = " ".join(f"{i}/{args.workers}" for i in unfinished)
        log.error("shards %s did not finish; see the worker errors above", shards)
        return 1
    if failed and rendered + done == 0:  # not one view to show for the run: a failure, not a data set
        log.error("no view was rendered: every model failed (see the errors above and %s)", args.out / "failed.txt")
        return 1
    return 0


def _exit(code: int) -> None:
    """Exit with ``code``; a process that loaded ``bpy`` skips the interpreter's teardown.

    Unloading ``bpy`` runs Blender's whole window-manager exit (``WM_exit_ex``), which can crash (see
    :func:`_worker_command`) after the work is done. Every output is on disk by now (written to temporary
    names and renamed), so the streams are flushed and the process ends with ``os._exit``: its exit code
    is the run's, never Blender's teardown's. The teardown would also remove Blender's folder of this session's
    temporary files (``bpy.app.tempdir``, ``blender_XXXXXX`` in the system's temporary folder); it is removed
    here, else every worker of every run leaves one behind.
    """
    bpy = sys.modules.get("bpy")
    if bpy is None:
        sys.exit(code)
    session_temp = Path(bpy.app.tempdir)
    if session_temp.name.startswith("blender_"):  # the session's own folder, never the temporary folder itself
        shutil.rmtree(session_temp, ignore_errors=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
