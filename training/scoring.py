"""How each method's mesh is scored: the point metrics of Mesh R-CNN and Pixel2Mesh, the silhouette IoU in the view's
true camera, the category prediction's accuracy and calibration, and the tables of them.

Every method's mesh is in the output frame, as each ground truth is posed, ``p_out = VIEW_TO_OUTPUT @ R @ p_world``.
The point metrics follow :func:`recon_core.mesh.metrics.compare_meshes` (Mesh R-CNN: the ground truth's long edge
rescaled to 10, points sampled on each surface, Chamfer-L2, normal consistency, F1@0.1/0.3/0.5) and Pixel2Mesh's
F@tau, F@2tau (:func:`recon_core.mesh.metrics.pixel2mesh_fscore`) on the same points (:func:`score_meshes`; the
tests check both against the metrics module). The silhouette IoU (:func:`silhouette_iou`) rasterises a mesh with the
view's true camera (perspective, the render's resolution) and compares it with the rendered mask. Per-category
numbers are means over that category's samples; the "mean" row is the mean over categories (as both papers report),
the "all" row the mean over samples (:func:`summarize`, :func:`format_table`).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recon_core.mesh.camera import VIEW_TO_OUTPUT, Camera
from recon_core.mesh.render import rasterize
from recon_core.network.categories import CATEGORIES
from training.eval_data import DataError, category_order

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "POINT_METRICS",
    "METRICS",
    "LOWER_IS_BETTER",
    "Prediction",
    "point_metrics",
    "score_meshes",
    "candidate_diversity",
    "candidate_summary",
    "format_candidate_table",
    "mean_of",
    "expected_calibration_error",
    "summarize",
    "format_value",
    "format_table",
    "silhouette",
    "silhouette_iou",
]

METHODS = ("ours", "sphere", "mean_shape", "retrieval")
"""Methods of the table, in column order."""


METHOD_LABELS = {
    "ours": "ours",
    "sphere": "silhouette ellipsoid",
    "mean_shape": "category mean shape*",
    "retrieval": "nearest-view retrieval",
}


POINT_METRICS = ("Chamfer-L2", "NormalConsistency", "F1@0.1", "F1@0.3", "F1@0.5", "P2M-F@1e-04", "P2M-F@2e-04")
"""Metrics of the points sampled on the surfaces (:func:`score_meshes`)."""


METRICS = POINT_METRICS + ("Sil-IoU",)
"""Per-sample metrics (keys of the JSON): the point metrics and :func:`silhouette_iou`; ``Printable``
(ours only) is added by :func:`summarize`."""


_HEADERS = {
    "Chamfer-L2": "Chamfer-L2 ↓",
    "NormalConsistency": "Normal ↑",
    "F1@0.1": "F1@0.1 ↑",
    "F1@0.3": "F1@0.3 ↑",
    "F1@0.5": "F1@0.5 ↑",
    "P2M-F@1e-04": "F@τ ↑",
    "P2M-F@2e-04": "F@2τ ↑",
    "Sil-IoU": "Sil-IoU ↑",
    "CategoryAccuracy": "category ↑",
    "CategoryECE": "ECE ↓",
}


_OURS_ONLY = ("CategoryAccuracy", "CategoryECE")
"""Columns of our model's category prediction (:func:`summarize`), after ``printable``."""


LOWER_IS_BETTER = {"Chamfer-L2"}


@dataclass
class Prediction:
    """One method's mesh for one image, in the output frame."""

    verts: np.ndarray
    """(V, 3) float64."""
    faces: np.ndarray
    """(F, 3) int64."""
    info: dict[str, Any] = field(default_factory=dict)


def point_metrics(
    pred_points: torch.Tensor,
    gt_points: torch.Tensor,
    pred_normals: torch.Tensor,
    gt_normals: torch.Tensor,
    scale: float,
) -> dict[str, torch.Tensor]:
    """Both protocols' metrics from one nearest-neighbour pass, on points in data units.

    Mesh R-CNN's (:func:`recon_core.mesh.metrics.sampling_metrics` on the points multiplied by
    ``scale``, the factor that gives the ground truth a long edge of ``GT_LONG_EDGE``) and
    Pixel2Mesh's F-scores: :func:`recon_core.mesh.metrics.pixel2mesh_fscore` thresholds squared
    distances ``(P2M_SCALE * d)² < tau``, i.e. Euclidean ``scale * d < scale * sqrt(tau) / P2M_SCALE``
    in the rescaled units, so they are ``F1`` at those extra thresholds (the test checks the
    two agree).

    Args:
        pred_points, pred_normals: (B, P, 3) float, data units.
        gt_points, gt_normals: (B, G, 3) float, data units.
        scale: Mesh R-CNN's rescaling factor.

    Returns:
        Keys of :data:`POINT_METRICS` -> (B,) float tensors.
    """
    from recon_core.mesh.metrics import MESHRCNN_THRESHOLDS, P2M_SCALE, P2M_TAUS, sampling_metrics

    p2m = {f"P2M-F@{tau:.0e}": scale * math.sqrt(tau) / P2M_SCALE for tau in P2M_TAUS}
    m = sampling_metrics(pred_points * scale, gt_points * scale, pred_normals, gt_normals,
                         thresholds=tuple(MESHRCNN_THRESHOLDS) + tuple(p2m.values()))
    out = {k: m[k] for k in ("Chamfer-L2", "NormalConsistency")}
    out.update({f"F1@{t:g}": m[f"F1@{t:g}"] for t in MESHRCNN_THRESHOLDS})
    out.update({name: m[f"F1@{t:g}"] for name, t in p2m.items()})
    return out


@torch.no_grad()
def score_meshes(
    preds: list[Prediction], gt: Prediction, num_samples: int = 10000, seed: int = 0
) -> list[dict[str, float]]:
    """Score several predictions against one ground truth (all in the same frame, data units).

    The protocol of :func:`recon_core.mesh.metrics.compare_meshes` (rescale each pair so the ground
    truth's longest bounding-box edge is 10, sample ``num_samples`` points with normals on each
    surface, :func:`recon_core.mesh.metrics.sampling_metrics`) plus Pixel2Mesh's F-scores on the same
    points (:func:`point_metrics`), so one nearest-neighbour pass serves both. The ground truth
    is sampled once for all predictions. Torch is seeded with ``seed``.

    Returns:
        One dict per prediction with the keys of :data:`POINT_METRICS`.
    """
    from pytorch3d.ops import sample_points_from_meshes
    from pytorch3d.structures import Meshes

    from recon_core.mesh.metrics import GT_LONG_EDGE

    def meshes(items: list[Prediction]) -> Meshes:
        return Meshes(
            verts=[torch.tensor(np.asarray(p.verts), dtype=torch.float32) for p in items],
            faces=[torch.tensor(np.asarray(p.faces), dtype=torch.int64) for p in items],
        )

    torch.manual_seed(seed)
    pred_m, gt_m = meshes(preds), meshes([gt])
    bbox = gt_m.get_bounding_boxes()[0]  # (3, 2)
    long_edge = float((bbox[:, 1] - bbox[:, 0]).max())
    if not long_edge > 0:
        raise DataError("A ground-truth mesh has an empty bounding box; it cannot be evaluated.")
    pred_pts, pred_n = sample_points_from_meshes(pred_m, num_samples, return_normals=True)
    gt_pts, gt_n = sample_points_from_meshes(gt_m, num_samples, return_normals=True)
    b = len(preds)
    m = point_metrics(pred_pts, gt_pts.expand(b, -1, -1), pred_n, gt_n.expand(b, -1, -1), GT_LONG_EDGE / long_edge)
    return [{k: float(m[k][i]) for k in POINT_METRICS} for i in range(b)]


DIVERSITY_SAMPLES = 2000
"""Points sampled on each candidate for :func:`candidate_diversity`."""


@torch.no_grad()
def candidate_diversity(preds: list[Prediction], gt: Prediction, num_samples: int = DIVERSITY_SAMPLES,
                        seed: int = 0) -> float | None:
    """Mean pairwise Chamfer-L2 between candidate meshes, in Mesh R-CNN's units (the ground truth's longest
    bounding-box edge rescaled to 10, as :func:`score_meshes` scores them); None for fewer than two.

    Chamfer-L2 of two point sets is the mean squared distance from each point of one to the nearest of the
    other, summed over both directions (:func:`recon_core.mesh.metrics.sampling_metrics`'s definition).
    """
    if len(preds) < 2:
        return None
    from pytorch3d.ops import knn_points, sample_points_from_meshes
    from pytorch3d.structures import Meshes

    from recon_core.mesh.metrics import GT_LONG_EDGE

    torch.manual_seed(seed)
    long_edge = float(np.ptp(np.asarray(gt.verts), axis=0).max())
    meshes = Meshes(verts=[torch.tensor(np.asarray(p.verts), dtype=torch.float32) for p in preds],
                    faces=[torch.tensor(np.asarray(p.faces), dtype=torch.int64) for p in preds])
    points = sample_points_from_meshes(meshes, num_samples) * (GT_LONG_EDGE / long_edge)
    values = []
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            a, b = points[i : i + 1], points[j : j + 1]
            d_ab = knn_points(a, b, K=1).dists[0, :, 0].mean()
            d_ba = knn_points(b, a, K=1).dists[0, :, 0].mean()
            values.append(float(d_ab + d_ba))
    return float(np.mean(values))


def candidate_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per category (and the mean over categories, and over images) of the records' ``candidates``: the
    first candidate's F1@0.3 (ours), the best of them (oracle) and the diversity; None without candidates."""
    have = [r for r in records if "candidates" in r]
    if not have:
        return None
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in have:
        groups[r["category"]].append(r)

    def block(recs: list[dict[str, Any]]) -> dict[str, float]:
        return {"n": len(recs),
                "first_f1": mean_of([r["candidates"]["F1@0.3"][0] for r in recs]),
                "oracle_f1": mean_of([r["candidates"]["oracle_f1"] for r in recs]),
                "diversity": mean_of([r["candidates"]["diversity"] for r in recs]),
                "count": mean_of([r["candidates"]["count"] for r in recs]),
                "printable": mean_of([float(all(r["candidates"]["printable"])) for r in recs])}

    per = OrderedDict((name, block(groups[name])) for name in sorted(groups, key=category_order))
    mean = {k: mean_of([b[k] for b in per.values()]) for k in ("first_f1", "oracle_f1", "diversity", "count", "printable")}
    return {"per_category": per, "mean": {"n": len(have), **mean}, "all": block(have)}


def format_candidate_table(summary: dict[str, Any]) -> str:
    """Markdown table of :func:`candidate_summary`."""
    lines = ["| category | n | candidates | first F1@0.3 ↑ | best of K F1@0.3 (oracle) ↑ | diversity (Chamfer-L2) "
             "| every candidate printable |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    rows = [*summary["per_category"].items(), ("**mean** (categories)", summary["mean"]), ("**all** (images)",
                                                                                           summary["all"])]
    for name, b in rows:
        lines.append(f"| {name} | {b['n']} | {b['count']:.1f} | {100 * b['first_f1']:.1f} | {100 * b['oracle_f1']:.1f} "
                     f"| {b['diversity']:.3f} | {100 * b['printable']:.0f}% |")
    return "\n".join(lines)


def mean_of(values: list[float]) -> float:
    """The mean of the finite values (None and NaN left out); NaN when there is none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


ECE_BINS = 10
"""Equal-width confidence bins of :func:`expected_calibration_error`."""


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of a classifier's top-probability confidence (Guo et al. 2017).

    ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over ``bins`` equal-width bins of the
    confidence ``max_c probs[i, c]``, bin ``b`` holding the confidences in ``(b / bins, (b + 1) / bins]``
    (the first also 0); a prediction is right when its arg-max is the label.

    Args:
        probs: (N, C) float class probabilities, N >= 1.
        labels: (N,) int true class indices.
        bins: number of bins.

    Returns:
        The ECE in [0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) == 0 or labels.shape != (len(probs),):
        raise ValueError(f"probs must be (N, C) with N >= 1 and labels (N,), got {probs.shape} and {labels.shape}")
    confidence = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # (N,) bin of each
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # summed per bin
    return float(np.abs(gap).sum() / len(probs))


_CATEGORY_SYNSETS = tuple(c.synset for c in CATEGORIES)


def _category_scores(recs: list[dict[str, Any]], with_ece: bool) -> dict[str, float]:
    """``CategoryAccuracy`` (and with ``with_ece``, ``CategoryECE``) of our model on the records of the 13
    categories that have its prediction; NaN without any."""
    known = [r for r in recs if r.get("synset") in _CATEGORY_SYNSETS and "predicted_category" in r]
    out = {"CategoryAccuracy": mean_of([float(r["predicted_category"] == r["category"]) for r in known])}
    if with_ece:
        scored = [r for r in known if r.get("category_probs") is not None]
        out["CategoryECE"] = (expected_calibration_error(
            np.array([r["category_probs"] for r in scored]),
            np.array([_CATEGORY_SYNSETS.index(r["synset"]) for r in scored])) if scored else float("nan"))
    return out


def summarize(records: list[dict[str, Any]], methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Aggregate per-sample records into per-category, class-mean and instance-mean tables.

    Args:
        records: dicts with ``category`` (name), ``synset``, ``metrics`` (method -> metric -> value)
            and, for our model, ``printable`` (bool), ``predicted_category`` (name) and
            ``category_probs`` ((13,) in ``CATEGORIES`` order, or None).
        methods: methods to aggregate (a method missing from a record is skipped there).

    Returns:
        ``{"per_category": {name: {"n": int, "methods": {method: {metric: mean}}}},
        "mean": {...same without per-category}, "all": {...}}``; ``ours`` also gets
        ``Printable``, the share of its outputs that passed the printable check, and
        ``CategoryAccuracy``, the share of its category predictions that are right over the
        images of the 13 categories (NaN without any; the mean row: the mean over categories);
        the ``all`` row's ``ours`` also gets ``CategoryECE``, the
        :func:`expected_calibration_error` of those predictions.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["category"]].append(r)

    def block(recs: list[dict[str, Any]], with_ece: bool = False) -> dict[str, dict[str, float]]:
        out = {}
        for m in methods:
            have = [r["metrics"][m] for r in recs if m in r.get("metrics", {})]
            if not have:
                continue
            out[m] = {k: mean_of([h.get(k) for h in have]) for k in METRICS}
            if m == "ours":
                out[m]["Printable"] = mean_of([float(bool(r["printable"])) for r in recs if "printable" in r])
                out[m].update(_category_scores(recs, with_ece))
        return out

    per_category = OrderedDict(
        (name, {"n": len(groups[name]), "methods": block(groups[name])}) for name in sorted(groups, key=category_order)
    )
    class_mean: dict[str, dict[str, float]] = {}
    for m in methods:
        rows = [c["methods"][m] for c in per_category.values() if m in c["methods"]]
        if rows:
            class_mean[m] = {k: mean_of([r.get(k) for r in rows]) for k in rows[0]}
    return {
        "per_category": per_category,
        "mean": {"n": len(records), "categories": len(per_category), "methods": class_mean},
        "all": {"n": len(records), "methods": block(records, with_ece=True)},
    }


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as the tables print it: Chamfer-L2 and normal consistency as they are, shares as percentages,
    the others ×100; "—" for none."""
    if value is None or not math.isfinite(value):
        return "—"
    if metric == "Chamfer-L2":
        return f"{value:.3f}"
    if metric == "NormalConsistency":
        return f"{value:.3f}"
    if metric in ("Printable", "CategoryAccuracy"):
        return f"{100 * value:.0f}%"
    return f"{100 * value:.1f}"


def format_table(summary: dict[str, Any], methods: tuple[str, ...] = METHODS, note: str | None = None) -> str:
    """A markdown table: one block of rows per category (one row per method), then *mean* and *all*.

    The best value of each metric within a block is bold. The last columns are our model's
    category accuracy and calibration error (:func:`summarize`), "—" where there are none.
    """
    header = ["category", "n", "method"] + [_HEADERS[k] for k in METRICS] + ["printable"] + [
        _HEADERS[k] for k in _OURS_ONLY]
    align = ["---", "--:", "---"] + ["--:"] * (len(METRICS) + 1 + len(_OURS_ONLY))
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]

    def rows(label: str, n: int, block: dict[str, dict[str, float]]) -> None:
        present = [m for m in methods if m in block]
        best = {}
        for k in METRICS:
            vals = [(block[m][k], m) for m in present if math.isfinite(block[m].get(k, float("nan")))]
            if len(vals) > 1:
                best[k] = (min if k in LOWER_IS_BETTER else max)(vals)[1]
        for i, m in enumerate(present):
            cells = [label if i == 0 else "", str(n) if i == 0 else "", METHOD_LABELS.get(m, m)]
            for k in METRICS:
                text = format_value(k, block[m].get(k))
                cells.append(f"**{text}**" if best.get(k) == m else text)
            cells.append(format_value("Printable", block[m].get("Printable")) if "Printable" in block[m] else "—")
            cells += [format_value(k, block[m].get(k)) for k in _OURS_ONLY]
            lines.append("| " + " | ".join(cells) + " |")

    for name, cat in summary["per_category"].items():
        rows(name, cat["n"], cat["methods"])
    rows(f"**mean** ({summary['mean']['categories']} categories)", summary["mean"]["n"], summary["mean"]["methods"])
    rows("**all** (images)", summary["all"]["n"], summary["all"]["methods"])
    text = "\n".join(lines)
    return text + ("\n\n" + note if note else "")


NEAR = 1e-3
"""Camera-frame depth (data units) of the near plane that :func:`silhouette` clips meshes at."""


def _clip_near(tri: np.ndarray, near: float = NEAR) -> np.ndarray:
    """Clip camera-frame triangles to the half-space ``z >= near``.

    A triangle with one vertex behind the plane becomes two, one with two behind becomes one
    smaller triangle, one with three behind is dropped.

    Args:
        tri: (F, 3, 3) float camera-frame vertices of each triangle.

    Returns:
        (F', 3, 3) float64.
    """
    tri = np.asarray(tri, dtype=np.float64)
    behind = tri[..., 2] < near  # (F, 3)
    count = behind.sum(axis=1)  # (F,)
    out = [tri[count == 0]]
    for k in (1, 2):
        sel, b = tri[count == k], behind[count == k]
        lone = np.argmax(b if k == 1 else ~b, axis=1)  # (n,) the vertex alone on its side of the plane
        order = (lone[:, None] + np.arange(3)) % 3  # (n, 3) cyclic, so the lone vertex comes first
        a, p, q = np.moveaxis(np.take_along_axis(sel, order[..., None], axis=1), 1, 0)  # each (n, 3)
        ap = a + (p - a) * ((near - a[:, 2]) / (p[:, 2] - a[:, 2]))[:, None]  # on the plane, along a-p
        aq = a + (q - a) * ((near - a[:, 2]) / (q[:, 2] - a[:, 2]))[:, None]
        if k == 1:  # a behind: the quad (ap, p, q, aq) is in front
            out += [np.stack([ap, p, q], axis=1), np.stack([ap, q, aq], axis=1)]
        else:  # a alone in front
            out.append(np.stack([a, ap, aq], axis=1))
    return np.concatenate(out)


def silhouette(verts: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixels covered by an output-frame mesh seen through a view's camera (perspective).

    The mesh is placed as the evaluation's ground truth is, ``p_out = VIEW_TO_OUTPUT @ R @ p_world``,
    so ``p_cam = VIEW_TO_OUTPUT.T @ p_out + T`` (:mod:`recon_core.mesh.camera`); it is clipped at the
    near plane ``z = NEAR`` and a pixel is covered when its centre is in a projected triangle
    (:func:`rasterize`, edges included).

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        camera: the view's camera.

    Returns:
        (camera.height, camera.width) bool.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    p_cam = verts @ VIEW_TO_OUTPUT + camera.T  # rows: VIEW_TO_OUTPUT.T @ p_out + T
    tri = _clip_near(p_cam[faces]).reshape(-1, 3)  # (3 F', 3)
    uvw = tri @ camera.K.T
    xy = uvw[:, :2] / uvw[:, 2:3]
    soup = np.arange(len(tri), dtype=np.int64).reshape(-1, 3)
    return rasterize(xy, tri[:, 2], soup, (camera.height, camera.width)) >= 0


def silhouette_iou(verts: np.ndarray, faces: np.ndarray, camera: Camera, mask: np.ndarray) -> float:
    """Intersection over union of an output-frame mesh's :func:`silhouette` and an object mask.

    Args:
        verts: (V, 3) float output-frame vertices.
        faces: (F, 3) int.
        camera: the view's camera.
        mask: (camera.height, camera.width) bool object mask of the view.

    Returns:
        The IoU in [0, 1].

    Raises:
        ValueError: the mask is empty or not of the camera's size.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (camera.height, camera.width):
        raise ValueError(f"mask must have the camera's shape {(camera.height, camera.width)}, got {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: its IoU with a silhouette is undefined")
    sil = silhouette(verts, faces, camera)
    return float((sil & mask).sum() / (sil | mask).sum())
