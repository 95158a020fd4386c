"""Build background photographs: square crops of free Debian wallpapers and sample pictures.

Two sets: :data:`SOURCES` (``data/backgrounds``), the photographs of the ``background`` check set
(``evaluate.py --style background``, training/styles.py); :data:`FINDER_SOURCES`
(``data/backgrounds_finder``), other packages' pictures, behind every training picture (the object
finder's, training/train_finder.py, and the reconstruction's ``data.backgrounds``), so that the check
set's photographs are never seen in training. Fetches the packages without installing them (``apt-get download`` +
``dpkg -x``, cached in ``data/cache``, as training/build_dataset.py does), cuts random square
crops of their photographs, resized to ``--size`` pixels, and writes::

    <out>/NNNN.jpg          the crops
    <out>/sources.json      settings, and each crop's picture, package, copyright and licence

Idempotent: a folder whose ``sources.json`` has the same settings is left as it is; otherwise
it is rebuilt next to it and swapped in. An existing ``--out`` that is not such a folder (other
files in it, or no ``sources.json``) is refused, never replaced. :class:`training.dataset.RenderedViews`
(through ``data.backgrounds``) composites augmented shaded views onto them.

    python training/build_backgrounds.py            # data/backgrounds, 320 crops of 256 px: the check set's
    python training/build_backgrounds.py --sources finder   # data/backgrounds_finder, 1,100 crops: training's
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from recon_core.io.export import current_umask, unwritable_reason
from training.interrupt import one_sentence_on_ctrl_c

__all__ = ["SOURCES", "FINDER_SOURCES", "FINDER_CROPS", "MIN_PICTURE_SIDE", "read_gimp_pattern", "RESERVED", "check_not_reserved", "read_licences", "build_backgrounds", "main"]

log = logging.getLogger("build_backgrounds")

SOURCES: dict[str, str] = {
    "lomiri-wallpapers-16.04": "usr/share/backgrounds/*.jpg",
    "mate-backgrounds": "usr/share/backgrounds/mate/nature/*.jpg",
}
"""Package -> glob of its photographs. lomiri-wallpapers-16.04: 15 photographs (rooms, a table,
a dog at a door, landscapes, plants), CC-BY-4.0, CC-BY-SA-4.0 or CC0-1.0; mate-backgrounds,
``nature/`` only: 12 photographs (leaves, flowers, grass, a dune, a storm, wood), GPL-2+.
Each crop's licence is read from the package's ``debian/copyright`` into ``sources.json``."""

FINDER_SOURCES: dict[str, str] = {
    "plasma-workspace-wallpapers": "usr/share/wallpapers/*/contents/images/1920x1080.*",
    "lomiri-wallpapers-20.04": "usr/share/backgrounds/*.jpg",
    "ukui-wallpapers": "usr/share/backgrounds/*.*",
    "python3-skimage": "usr/lib/python3/dist-packages/skimage/data/*.[pj][np]g",
    "gimp-data": "usr/share/gimp/2.0/patterns/*/*.pat",
    "opencv-doc": "usr/share/doc/opencv-doc/examples/data/*[!0-9].jpg",
    "tuxpaint-data": "usr/share/tuxpaint/templates/*.jpg",
}
"""The backgrounds of training pictures (the object finder's, training/train_finder.py, and the
reconstruction's ``data.backgrounds``): other packages than :data:`SOURCES`, so the ``background``
check set (``evaluate.py --style background``, built from :data:`SOURCES`) shows rooms, tables and
landscapes never seen in training.
plasma-workspace-wallpapers: 13 pictures (photographs of leaves, water, hills, a path, and a few
drawings); lomiri-wallpapers-20.04: 4 (a bird on a tree, abstract art); ukui-wallpapers: 12
(mostly abstract art and illustrations); python3-skimage: its sample pictures (a coffee cup, a cat, an
astronaut, a rocket, gravel, grass, bricks, text, ...); gimp-data: GIMP's patterns (wood, stone,
marble, fabric, paper, water), tiled; opencv-doc: the photographs of OpenCV's examples (a room, a
desk of things, fruit, a building, a street, a plant; the numbered calibration series left out), so
that indoor scenes with things in them are among the finder's backgrounds; tuxpaint-data: Tux Paint's 19
photographic templates (a corn maze, a lighthouse, sheep, a wool mill's machine, rocks, bark, trees, waves; since
2026-12-03, seventh session). Its sibling packages tuxpaint-stamps-* are reserved; this one is not. Pictures with
a side under :data:`MIN_PICTURE_SIDE` after tiling are left out."""

FINDER_CROPS = 1100
"""Crops of :data:`FINDER_SOURCES` that ``--sources finder`` writes by default (about 7 a picture)."""

MIN_PICTURE_SIDE = 128
"""Pictures (after tiling patterns) with a shorter side under this many pixels are not used."""
PATTERN_SIDE = 384
"""GIMP patterns (``*.pat``, small tiles) are repeated to at least this side."""

RESERVED = ("crrcsim-data", "gl-117-data", "torcs-data", "0ad-data", "openarena-data", "nexuiz-data",
            "openclipart-*", "tuxpaint-stamps-*")
"""Packages kept for other uses (evaluation material): never a source of backgrounds."""

MIN_CROP, MAX_CROP = 0.25, 0.9
"""Side of a crop as a fraction of its picture's shorter side."""

_MANIFEST = "sources.json"
_CROP_NAME = re.compile(r"\d{4,}\.jpg")


def check_not_reserved(packages) -> None:
    """Raise ``ValueError`` if any package matches :data:`RESERVED`."""
    bad = [p for p in packages if any(fnmatch.fnmatchcase(p, r) for r in RESERVED)]
    if bad:
        raise ValueError(f"{', '.join(bad)} is reserved and must not be used for backgrounds; "
                         f"reserved: {', '.join(RESERVED)}")


def read_licences(copyright_file: Path) -> list[tuple[list[str], str, str]]:
    """``[(file patterns, copyright, licence), ...]`` of a machine-readable ``debian/copyright`` (DEP-5)."""
    stanzas: list[tuple[list[str], str, str]] = []
    for block in copyright_file.read_text(errors="replace").split("\n\n"):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = [value.strip()]
        if "Files" in fields and "License" in fields:
            patterns = " ".join(fields["Files"]).split()
            stanzas.append((patterns, " ".join(fields.get("Copyright", [])).strip(), fields["License"][0]))
    return stanzas


def _matches(path: str, pattern: str) -> bool:
    """Whether an installed file's path fits a ``Files:`` pattern of the source tree.

    The source tree's folders need not survive installation (``16.04/x.jpg`` is installed as
    ``usr/share/backgrounds/x.jpg``), so a pattern matches the path's end or, when its file
    name has no wildcard, the file name; ``debian/`` patterns never match installed files.
    """
    if pattern == "*":
        return True
    if pattern.startswith("debian/"):
        return False
    name = pattern.rsplit("/", 1)[-1]
    if fnmatch.fnmatchcase(path, "*/" + pattern) or fnmatch.fnmatchcase(path, pattern):
        return True
    return not any(c in name for c in "*?[") and path.rsplit("/", 1)[-1] == name


def _licence_of(path: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """(copyright, licence) of the last stanza with a pattern that fits ``path`` (DEP-5: the last match wins)."""
    found = ("", "unknown")
    for patterns, holder, licence in stanzas:
        if any(_matches(path, p) for p in patterns):
            found = (holder, licence)
    return found


def _is_own_output(folder: Path) -> bool:
    """Whether ``folder`` holds only what :func:`build_backgrounds` writes: a readable ``sources.json`` and crops."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if not (isinstance(manifest, dict) and "settings" in manifest and isinstance(manifest.get("crops"), list)):
        return False
    return all(f.is_file() and not f.is_symlink() and (f.name == _MANIFEST or _CROP_NAME.fullmatch(f.name))
               for f in folder.iterdir())


def _check_out(out: Path) -> None:
    """Raise ``ValueError`` unless ``out`` can be written: new, empty, or an earlier output of this script."""
    reason = unwritable_reason(out.parent, folder=True)  # out itself is checked below, links included
    if reason:
        raise ValueError(f"cannot write {out}: {reason}; choose another --out")
    if out.is_symlink():
        raise ValueError(f"{out} is a link; give the folder it points to, or another --out")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} is a file, not a folder of backgrounds; choose another --out")
        if any(out.iterdir()) and not _is_own_output(out):
            raise ValueError(f"{out} already holds files that this script did not write (it would replace them); "
                             f"choose a new or empty folder for --out, or remove that folder first")


def _fetch(cache: Path, packages: list[str]) -> Path:
    """Folder of the extracted packages (downloaded first if missing); clear errors without apt-get."""
    extracted = cache.resolve() / "extracted"
    missing = [p for p in packages if not ((extracted / p).is_dir() and any((extracted / p).iterdir()))]
    if missing:
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                raise RuntimeError(
                    f"{tool} is not available, so {', '.join(missing)} cannot be fetched: run this on a "
                    f"Debian or Ubuntu machine, or put the extracted packages in {extracted}/<package>/.")
        from training.build_dataset import ensure_packages

        ensure_packages(cache, tuple(missing))
    return extracted


def read_gimp_pattern(path: Path) -> Image.Image:
    """A GIMP pattern file (``*.pat``: a big-endian header ``header_size, version, width, height, bytes``,
    the magic ``GPAT``, a name, then the pixels, 1-4 bytes each) as an RGB picture.

    Raises:
        ValueError: not a GIMP pattern.
    """
    import struct

    data = path.read_bytes()
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise ValueError(f"{path} is not a GIMP pattern (no GPAT magic)")
    header, _, width, height, depth = struct.unpack(">5I", data[:20])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(depth)
    if mode is None or len(data) < header + width * height * depth:
        raise ValueError(f"{path}: a GIMP pattern of {depth} bytes per pixel or truncated")
    return Image.frombytes(mode, (width, height), data[header:header + width * height * depth]).convert("RGB")


def _open_picture(path: Path) -> Image.Image:
    """An RGB picture of ``path``; a GIMP pattern tiled to at least :data:`PATTERN_SIDE`."""
    if path.suffix.lower() == ".pat":
        tile = read_gimp_pattern(path)
        nx, ny = -(-PATTERN_SIDE // tile.width), -(-PATTERN_SIDE // tile.height)
        picture = Image.new("RGB", (tile.width * nx, tile.height * ny))
        for i in range(nx):
            for j in range(ny):
                picture.paste(tile, (i * tile.width, j * tile.height))
        return picture
    with Image.open(path) as img:
        return img.convert("RGB")


def _usable(path: Path) -> bool:
    """The picture opens and its shorter side is at least :data:`MIN_PICTURE_SIDE` (else a warning or nothing)."""
    try:
        return min(_open_picture(path).size) >= MIN_PICTURE_SIDE
    except (OSError, ValueError) as err:
        log.warning("left out %s: %s", path.name, err)
        return False


def build_backgrounds(out: Path, cache: Path, crops: int = 320, size: int = 256, seed: int = 0,
                      sources: dict[str, str] | None = None) -> Path:
    """Write ``crops`` square ``size``-pixel JPEG crops of the ``sources`` pictures (package -> glob;
    None: :data:`SOURCES`) to ``out``.

    Returns ``out``. Raises ``RuntimeError`` when the packages cannot be fetched and
    ``ValueError`` for bad settings, packages without photographs, or an ``out`` that is a file or
    a folder holding anything else than an earlier output of this function.
    """
    if crops < 1 or size < 16:
        raise ValueError(f"need crops >= 1 and size >= 16, got crops={crops}, size={size}")
    sources = SOURCES if sources is None else sources
    packages = list(sources)
    check_not_reserved(packages)
    settings = {"packages": sources, "crops": crops, "size": size, "seed": seed}
    manifest = out / _MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("settings") == settings:
                log.info("%s is up to date (%d crops)", out, crops)
                return out
        except (OSError, ValueError, AttributeError):  # not JSON, not text, not a dict: not up to date
            pass
    _check_out(out)
    extracted = _fetch(cache, packages)
    pictures: list[tuple[str, Path, tuple[str, str]]] = []
    for pkg in packages:
        root = extracted / pkg
        copyright_files = sorted(root.glob("usr/share/doc/*/copyright"))
        stanzas = read_licences(copyright_files[0]) if copyright_files else []
        found = sorted(root.glob(sources[pkg]))
        if not found:
            raise ValueError(f"{pkg} has no pictures matching {sources[pkg]} in {root}")
        pictures += [(pkg, f, _licence_of(f.relative_to(root).as_posix(), stanzas)) for f in found if _usable(f)]

    if not pictures:
        raise ValueError(f"none of the pictures of {', '.join(packages)} could be used "
                         f"(each must open and be at least {MIN_PICTURE_SIDE} pixels on its shorter side)")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        records: list[dict] = [{}] * crops
        for i, (pkg, path, (holder, licence)) in enumerate(pictures):
            photo = _open_picture(path)
            w, h = photo.size
            for n in range(i, crops, len(pictures)):  # crop n comes from picture n % len(pictures)
                rng = np.random.default_rng((seed, n))
                side = min(w, h) * float(rng.uniform(MIN_CROP, MAX_CROP))
                u0, v0 = float(rng.uniform(0, w - side)), float(rng.uniform(0, h - side))
                crop = photo.resize((size, size), Image.Resampling.LANCZOS, box=(u0, v0, u0 + side, v0 + side))
                name = f"{n:04d}.jpg"
                crop.save(tmp / name, quality=92)
                records[n] = {"file": name, "package": pkg, "picture": path.name, "copyright": holder,
                              "license": licence, "box": [round(u0), round(v0), round(u0 + side), round(v0 + side)]}
        (tmp / _MANIFEST).write_text(json.dumps({"settings": settings, "crops": records}, indent=1))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        _check_out(out)  # nothing else may have appeared there meanwhile
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    licences = sorted({r["license"] for r in records})
    log.info("wrote %d crops of %d pictures from %s to %s (licences: %s)", crops, len(pictures),
             ", ".join(packages), out, ", ".join(licences))
    return out


def _swap_in(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; an earlier ``out`` is moved aside, and removed once ``new`` is in place."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    out.replace(old)  # onto an empty folder: a rename
    try:
        new.rename(out)
    except BaseException:
        old.replace(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python training/build_backgrounds.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", choices=("reconstruction", "finder"), default="reconstruction",
                   help="reconstruction: SOURCES, the background check set's photographs (evaluate.py --style "
                        "background; never trained on); finder: FINDER_SOURCES, the photographs behind every training "
                        "picture, the object finder's and the reconstruction's data.backgrounds (default: "
                        "reconstruction)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: data/backgrounds, or data/backgrounds_finder with --sources finder)")
    p.add_argument("--cache", type=Path, default=Path("data/cache"), help="package cache (default: data/cache)")
    p.add_argument("--crops", type=int, default=None,
                   help=f"number of crops (default: 320, or {FINDER_CROPS} with --sources finder)")
    p.add_argument("--size", type=int, default=256, help="side of a crop in pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops (default: 0)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = args.out or Path("data/backgrounds" if args.sources == "reconstruction" else "data/backgrounds_finder")
        crops = args.crops if args.crops is not None else (320 if args.sources == "reconstruction" else FINDER_CROPS)
        build_backgrounds(out, args.cache, crops, args.size, args.seed,
                          None if args.sources == "reconstruction" else FINDER_SOURCES)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        from recon_core.io.export import os_error_sentence

        print(f"error: {os_error_sentence(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
