"""Build a ShapeNetCore-v2-style data set from Debian packages (and optionally a real ShapeNet folder).

Steps: fetch the packages without installing them (``apt-get download`` + ``dpkg -x``,
skipped when already cached), list and label their models (:mod:`training.readers`),
load each (two worker processes), drop junk, normalise into the ShapeNet frame (+Y up,
front -Z, bounding-box centre at the origin, bounding-box diagonal 1), drop exact
geometric duplicates, split by group, and write::

    <out>/<synset>/<model_id>/models/model_normalized.obj     13 categories
    <out>/extra/<synset>/<model_id>/models/model_normalized.obj   extra pool
    <out>/taxonomy.json   <out>/manifest.json   <out>/summary.md

Each file is written through a temporary file and a rename; a run that keeps no model is an
error and leaves ``<out>`` as it was. Run ``python training/build_dataset.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from recon_core.io.export import atomic_write_bytes, os_error_sentence, unwritable_reason
from recon_core.network.categories import CATEGORIES
from training.readers import PACKAGES, Candidate, ReaderError, discover, discover_shapenet, load_candidate
from training.readers.rules import EXTRA_SYNSETS
from training.interrupt import ignore_ctrl_c, one_sentence_on_ctrl_c

__all__ = [
    "FilterConfig",
    "SPLITS",
    "ensure_packages",
    "clean_mesh",
    "normalise_vertices",
    "geometry_hash",
    "split_groups",
    "build",
    "main",
]

log = logging.getLogger("build_dataset")

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
HASH_DECIMALS = 4
"""Vertices are rounded to this many decimals (of a unit-diagonal box) before hashing."""


@dataclass(frozen=True)
class FilterConfig:
    """Which loaded meshes are kept."""

    min_faces: int = 50
    max_faces: int = 100_000
    """Above this the model is skipped (no decimation): keeps rendering 24 views a model fast."""
    min_thickness: float = 1e-3
    """The second-largest box extent must be at least this fraction of the diagonal (no lines, no points)."""


# --------------------------------------------------------------------------- packages


def ensure_packages(cache: Path, packages: tuple[str, ...] = PACKAGES) -> Path:
    """Download (``apt-get download``) and extract (``dpkg -x``) each package unless already there.

    Returns ``cache/extracted``, holding one folder per package. Raises ``RuntimeError``
    naming the command that failed.
    """
    cache = cache.resolve()  # the commands below run inside debs/: relative paths would break
    debs, extracted = cache / "debs", cache / "extracted"
    debs.mkdir(parents=True, exist_ok=True)
    extracted.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        target = extracted / pkg
        if target.is_dir() and any(target.iterdir()):
            continue
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            log.info("downloading %s", pkg)
            _run(["apt-get", "download", pkg], cwd=debs)
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if not found:
                raise RuntimeError(f"apt-get download {pkg} left no {pkg}_*.deb in {debs}")
        log.info("extracting %s", found[-1].name)
        tmp = extracted / f".{pkg}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg", "-x", str(found[-1]), str(tmp)], cwd=debs)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return extracted


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


# --------------------------------------------------------------------------- geometry


def clean_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop faces with a repeated vertex and vertices no face uses.

    Args:
        vertices: (V, 3) float.
        faces: (F, 3) int.
    Returns:
        (V', 3) float64 vertices and (F', 3) int64 faces.
    """
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    used, inverse = np.unique(faces.ravel(), return_inverse=True)
    return np.asarray(vertices, dtype=np.float64)[used], inverse.reshape(-1, 3)


def normalise_vertices(vertices: np.ndarray) -> np.ndarray:
    """Centre (V, 3) vertices on their bounding-box centre and scale the box diagonal to 1.

    Raises ``ValueError`` for an empty or zero-size box.
    """
    if vertices.shape[0] == 0:
        raise ValueError("cannot normalise an empty mesh")
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    if not np.isfinite(diag) or diag <= 0:
        raise ValueError(f"degenerate bounding box (diagonal {diag})")
    return (vertices - (lo + hi) / 2) / diag


def geometry_hash(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Hash of a normalised mesh's rounded vertex set and face count (vertex order does not matter)."""
    rounded = np.round(vertices, HASH_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    rows = np.unique(rounded, axis=0)
    h = hashlib.sha1(rows.tobytes())
    h.update(str(len(faces)).encode())
    return h.hexdigest()


def _process(args: tuple[Candidate, FilterConfig]) -> tuple[Candidate, dict | None, str]:
    """Worker: load, filter and normalise one candidate. Returns (candidate, result or None, reason)."""
    cand, cfg = args
    try:
        mesh = load_candidate(cand)
        vertices, faces = clean_mesh(mesh.vertices, mesh.faces)
    except (ReaderError, OSError, ValueError, KeyError, IndexError) as exc:
        return cand, None, f"load failed: {exc}"
    if len(faces) < cfg.min_faces:
        return cand, None, f"too few faces ({len(faces)} < {cfg.min_faces})"
    if len(faces) > cfg.max_faces:
        return cand, None, f"too many faces ({len(faces)} > {cfg.max_faces})"
    if not np.all(np.isfinite(vertices)):
        return cand, None, "non-finite vertices"
    try:
        vertices = normalise_vertices(vertices)
    except ValueError as exc:
        return cand, None, str(exc)
    if np.sort(np.ptp(vertices, axis=0))[1] < cfg.min_thickness:
        return cand, None, "degenerate extents (a line or a point)"
    result = {
        "vertices": vertices.astype(np.float32),
        "faces": faces.astype(np.int32),
        "hash": geometry_hash(vertices, faces),
    }
    return cand, result, ""


# --------------------------------------------------------------------------- split


def split_groups(
    items: list[tuple[str, str]], seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> dict[str, str]:
    """Assign each group a split, stratified by category, deterministically from ``seed``.

    Args:
        items: ``(category, group)`` for every model (a group's models share one category
            in practice; a group seen under several categories is assigned once, under the first).
        seed: random seed.
        fractions: target (train, val, test) fractions of models.
    Returns:
        ``{group: split}``. Within a category with at least three groups, val and test get
        at least one group each; the rest go greedily to the split furthest below its target.
    """
    sizes: dict[str, Counter] = defaultdict(Counter)
    owner: dict[str, str] = {}
    for category, group in items:
        owner.setdefault(group, category)
        sizes[owner[group]][group] += 1
    assignment: dict[str, str] = {}
    for category in sorted(sizes):
        groups = sorted(sizes[category])
        random.Random(f"{seed}:{category}").shuffle(groups)
        total = sum(sizes[category].values())
        counts = dict.fromkeys(SPLITS, 0)
        if len(groups) >= 3:
            for split, group in zip(("val", "test"), sorted(groups[:2], key=lambda g: sizes[category][g])):
                assignment[group] = split
                counts[split] += sizes[category][group]
            groups = groups[2:]
        for group in groups:
            deficits = [frac * total - counts[s] for s, frac in zip(SPLITS, fractions)]
            split = SPLITS[int(np.argmax(deficits))]
            assignment[group] = split
            counts[split] += sizes[category][group]
    return assignment


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# --------------------------------------------------------------------------- build


def _model_id(cand: Candidate) -> str:
    return cand.model_id or hashlib.sha1(f"{cand.package}:{cand.original_path}".encode()).hexdigest()[:32]


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def _model_dir(out: Path, record: dict) -> Path:
    base = out if record["pool"] == "core" else out / "extra"
    return base / record["synset"] / record["model_id"]


def _check_out(out: Path) -> None:
    """Raise ``ValueError`` unless ``out`` is a folder, or can be made one, that can be written."""
    reason = unwritable_reason(out, folder=True)
    if reason:
        raise ValueError(f"cannot write the data set to {out}: {reason}; choose another --out")


def _previous_models(out: Path) -> set[Path]:
    """The model folders listed in a previous build's manifest (none without one).

    Raises ``ValueError`` for a manifest this script cannot read.
    """
    manifest = out / "manifest.json"
    if not manifest.exists():
        return set()
    try:
        return {_model_dir(out, record) for record in json.loads(manifest.read_text())["models"]}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{manifest} is not a readable manifest of an earlier build ({exc}); "
                         f"move it away or choose another --out") from None


def summary_table(records: list[dict]) -> str:
    """Markdown table of models per category and split (core categories first, then the extra pool)."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in records:
        counts[(r["pool"], r["category"])][r["split"]] += 1
    order = [("core", c.name) for c in CATEGORIES] + sorted(k for k in counts if k[0] == "extra")
    lines = ["| pool | category | train | val | test | total |", "|---|---|---:|---:|---:|---:|"]
    totals: dict[str, Counter] = defaultdict(Counter)
    for key in order:
        c = counts.get(key, Counter())
        lines.append(f"| {key[0]} | {key[1]} | {c['train']} | {c['val']} | {c['test']} | {sum(c.values())} |")
        totals[key[0]].update(c)
    for pool in ("core", "extra"):
        c = totals[pool]
        lines.append(f"| {pool} | **all** | {c['train']} | {c['val']} | {c['test']} | {sum(c.values())} |")
    return "\n".join(lines)


def build(
    candidates: list[Candidate], out: Path, seed: int, cfg: FilterConfig = FilterConfig(), workers: int = 2
) -> list[dict]:
    """Load, filter, normalise, dedupe, split and write the candidates; returns the manifest records.

    The model folders of an earlier build in ``out`` that this one does not write are removed once
    its manifest is written. Raises ``ValueError`` (and writes nothing) when no model is kept, or
    for an ``out`` that is a file or holds an unreadable manifest.
    """
    _check_out(out)
    previous = _previous_models(out)
    # Largest files first so the two workers finish together.
    order = sorted(candidates, key=lambda c: (-Path(c.path).stat().st_size if not c.inner else 0, c.original_path))
    jobs = [(c, cfg) for c in order]
    results: list[tuple[Candidate, dict]] = []
    skipped: Counter = Counter()
    with Pool(workers, initializer=ignore_ctrl_c) if workers > 1 else _NoPool() as pool:
        for cand, result, reason in tqdm(pool.imap_unordered(_process, jobs), total=len(jobs), desc="reading"):
            if result is None:
                level = logging.WARNING if reason.startswith("load failed") else logging.INFO
                log.log(level, "skipping %s (%s): %s", cand.original_path, cand.package, reason)
                skipped[reason.split(":")[0].split(" (")[0]] += 1
            else:
                results.append((cand, result))
    results.sort(key=lambda cr: (cr[0].label.pool, cr[0].label.name, cr[0].original_path))

    # Exact duplicates: keep the first, merge its group with the duplicates' groups.
    groups = _UnionFind()
    kept: dict[str, tuple[Candidate, dict]] = {}
    for cand, result in results:
        groups.find(cand.group)
        if result["hash"] in kept:
            groups.union(kept[result["hash"]][0].group, cand.group)
            log.info("duplicate geometry: %s == %s", cand.original_path, kept[result["hash"]][0].original_path)
            skipped["duplicate geometry"] += 1
            continue
        kept[result["hash"]] = (cand, result)

    final = list(kept.values())
    if not final:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items())) or "none read"
        advice = ("raise --max-faces or give other models" if skipped.get("too many faces") else "give other models")
        raise ValueError(f"no model was kept: all {len(candidates)} were skipped ({reasons}), so {out} was left "
                         f"as it was; {advice}")
    splits = split_groups([(c.label.name, groups.find(c.group)) for c, _ in final], seed)
    written: set[Path] = set()
    created: set[Path] = set()
    try:
        records = _write_models(final, groups, splits, out, written, created)
        _write_metadata(out, records, seed, cfg, skipped)
    except BaseException:
        for folder in created:  # the earlier manifest, still in place, lists none of them
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for folder in previous - written:
        shutil.rmtree(folder, ignore_errors=True)
    return records


def _write_models(final: list[tuple[Candidate, dict]], groups: _UnionFind, splits: dict[str, str], out: Path,
                  written: set[Path], created: set[Path]) -> list[dict]:
    """Write each kept model's OBJ, adding its folder to ``written`` (and to ``created`` when new).

    Returns the manifest records.
    """
    records = []
    for cand, result in tqdm(final, desc="writing"):
        group = groups.find(cand.group)
        record = {
            "model_id": _model_id(cand),
            "synset": cand.label.synset,
            "category": cand.label.name,
            "pool": cand.label.pool,
            "source_package": cand.package,
            "original_path": cand.original_path,
            "name": cand.name,
            "licence": cand.licence,
            "creator": cand.creator,
            "group": group,
            "split": splits[group],
            "num_vertices": int(len(result["vertices"])),
            "num_faces": int(len(result["faces"])),
            "geometry_sha1": result["hash"],
        }
        folder = _model_dir(out, record)
        written.add(folder)
        if not folder.exists():
            created.add(folder)
        _write_obj(folder / "models" / "model_normalized.obj", result["vertices"], result["faces"])
        records.append(record)
    return records


class _NoPool:
    """In-process stand-in for ``multiprocessing.Pool`` (``workers=1``)."""

    def __enter__(self) -> "_NoPool":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn, items):  # noqa: ANN001, ANN201
        return map(fn, items)


def _write_metadata(out: Path, records: list[dict], seed: int, cfg: FilterConfig, skipped: Counter) -> None:
    out.mkdir(parents=True, exist_ok=True)
    per_synset = Counter(r["synset"] for r in records if r["pool"] == "core")
    taxonomy = [{"synsetId": c.synset, "name": c.name, "children": [], "numInstances": per_synset[c.synset]} for c in CATEGORIES]
    atomic_write_bytes(out / "taxonomy.json", (json.dumps(taxonomy, indent=1) + "\n").encode())
    extra = Counter(r["category"] for r in records if r["pool"] == "extra")
    manifest = {
        "seed": seed,
        "splits": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "frame": "+Y up, front -Z, bounding-box centre at the origin, bounding-box diagonal 1",
        "filters": cfg.__dict__,
        "extra_taxonomy": [{"synsetId": EXTRA_SYNSETS[n], "name": n, "numInstances": k} for n, k in sorted(extra.items())],
        "models": sorted(records, key=lambda r: (r["pool"], r["synset"], r["model_id"])),
    }
    table = summary_table(records)
    skipped_lines = "\n".join(f"- {reason}: {n}" for reason, n in sorted(skipped.items()))
    summary = f"# Data set summary\n\nSeed {seed}.\n\n{table}\n\nSkipped:\n\n{skipped_lines}\n"
    atomic_write_bytes(out / "summary.md", summary.encode())
    # Last: it lists the models, all written by now.
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())


@one_sentence_on_ctrl_c
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="package cache (debs/ and extracted/)")
    parser.add_argument("--out", type=Path, default=Path("data/shapenet"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--shapenet-root", type=Path, default=None, help="also read a ShapeNetCore v1/v2 folder")
    parser.add_argument("--no-packages", action="store_true", help="skip the Debian packages (with --shapenet-root)")
    parser.add_argument("--max-faces", type=int, default=FilterConfig.max_faces, help="skip models with more faces")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    start = time.perf_counter()
    try:
        if args.max_faces < 4:  # a closed mesh has at least 4 faces: every model would be skipped
            raise ValueError(f"--max-faces must be at least 4, got {args.max_faces}")
        if args.no_packages and args.shapenet_root is None:
            raise ValueError("--no-packages leaves no models to read: give --shapenet-root, or leave --no-packages "
                             "out to read the packages' models")
        if args.shapenet_root is not None and not args.shapenet_root.is_dir():
            what = "is a file" if args.shapenet_root.exists() else "does not exist"
            raise ValueError(f"--shapenet-root {args.shapenet_root} {what}; give the folder that holds the "
                             f"ShapeNetCore synset folders (03001627, ...)")
        _check_out(args.out)
        candidates: list[Candidate] = []
        if not args.no_packages:
            candidates += discover(ensure_packages(args.cache))
        if args.shapenet_root is not None:
            candidates += discover_shapenet(args.shapenet_root)
        if not candidates:
            looked = ([] if args.no_packages else [f"the packages under --cache {args.cache}"]) + (
                [] if args.shapenet_root is None else [f"--shapenet-root {args.shapenet_root}"])
            raise ValueError(f"no models found in {' or '.join(looked)}; "
                             "give a folder of ShapeNetCore synset folders with --shapenet-root"
                             + ("" if args.no_packages else ", or check --cache"))
        records = build(candidates, args.out, args.seed, FilterConfig(max_faces=args.max_faces), args.workers)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {os_error_sentence(exc)}", file=sys.stderr)
        return 2
    print(summary_table(records))
    print(f"{len(records)} models written to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
