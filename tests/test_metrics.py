"""Tests of recon_core.mesh.metrics against naive loop-based references."""

import numpy as np
import pytest
import torch
from pytorch3d.structures import Meshes
from pytorch3d.utils import ico_sphere

from recon_core.mesh.metrics import (
    GT_LONG_EDGE,
    compare_meshes,
    pixel2mesh_fscore,
    sampling_metrics,
)


def _nearest_naive(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3), (Q, 3) -> squared distance to and index of each src point's nearest dst point."""
    d2 = np.empty(len(src))
    idx = np.empty(len(src), dtype=np.int64)
    for i, p in enumerate(src):
        best, best_j = np.inf, -1
        for j, q in enumerate(dst):
            d = float(np.sum((p - q) ** 2))
            if d < best:
                best, best_j = d, j
        d2[i], idx[i] = best, best_j
    return d2, idx


def sampling_metrics_naive(pred, gt, pred_n, gt_n, thresholds):
    """One batch element of Mesh R-CNN's metrics, with loops: (P, 3), (G, 3) numpy float64."""
    p2g, p2g_idx = _nearest_naive(pred, gt)
    g2p, g2p_idx = _nearest_naive(gt, pred)
    out = {"Chamfer-L2": p2g.mean() + g2p.mean()}

    def cos(a, b):
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))

    cos_p = np.array([cos(pred_n[i], gt_n[p2g_idx[i]]) for i in range(len(pred))])
    cos_g = np.array([cos(gt_n[i], pred_n[g2p_idx[i]]) for i in range(len(gt))])
    out["NormalConsistency"] = 0.5 * (cos_p.mean() + cos_g.mean())
    out["AbsNormalConsistency"] = 0.5 * (np.abs(cos_p).mean() + np.abs(cos_g).mean())
    for t in thresholds:
        precision = np.mean([np.sqrt(d) < t for d in p2g])
        recall = np.mean([np.sqrt(d) < t for d in g2p])
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        out[f"Precision@{t:g}"], out[f"Recall@{t:g}"], out[f"F1@{t:g}"] = precision, recall, f1
    return out


def pixel2mesh_fscore_naive(pred, gt, taus, scale):
    p2g, _ = _nearest_naive(pred * scale, gt * scale)
    g2p, _ = _nearest_naive(gt * scale, pred * scale)
    out = {}
    for tau in taus:
        precision = np.mean([d < tau for d in p2g])
        recall = np.mean([d < tau for d in g2p])
        out[f"F1@{tau:.0e}"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture
def point_sets():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 60, 3, generator=g)
    gt = torch.rand(3, 45, 3, generator=g)
    pred_n = _unit(torch.randn(3, 60, 3, generator=g))
    gt_n = _unit(torch.randn(3, 45, 3, generator=g))
    return pred, gt, pred_n, gt_n


def test_sampling_metrics_matches_naive(point_sets):
    pred, gt, pred_n, gt_n = point_sets
    thresholds = (0.05, 0.1, 0.2)
    fast = sampling_metrics(pred, gt, pred_n, gt_n, thresholds)
    for b in range(pred.shape[0]):
        naive = sampling_metrics_naive(
            pred[b].double().numpy(), gt[b].double().numpy(), pred_n[b].double().numpy(), gt_n[b].double().numpy(),
            thresholds,
        )
        assert set(naive) == set(fast)
        for k, v in naive.items():
            assert fast[k][b].item() == pytest.approx(v, abs=1e-5), k


def test_pixel2mesh_fscore_matches_naive(point_sets):
    pred, gt, _, _ = point_sets
    pred, gt = pred * 0.1, gt * 0.1  # dense enough for the 1e-4 thresholds to matter
    fast = pixel2mesh_fscore(pred, gt, reduce=False)
    for b in range(pred.shape[0]):
        naive = pixel2mesh_fscore_naive(pred[b].double().numpy(), gt[b].double().numpy(), (1e-4, 2e-4), 0.57)
        for k, v in naive.items():
            assert fast[k][b].item() == pytest.approx(v, abs=1e-6), k
    reduced = pixel2mesh_fscore(pred, gt)
    assert set(reduced) == {"F1@1e-04", "F1@2e-04"}
    assert 0.0 < reduced["F1@1e-04"] < reduced["F1@2e-04"] < 1.0


def test_pixel2mesh_threshold_is_on_squared_distance():
    gt = torch.zeros(1, 1, 3)
    pred = torch.tensor([[[0.009, 0.0, 0.0]]])  # squared distance 8.1e-5 < 1e-4, distance 0.009
    assert pixel2mesh_fscore(pred, gt, taus=(1e-4,), scale=1.0)["F1@1e-04"] == pytest.approx(1.0)
    pred = torch.tensor([[[0.011, 0.0, 0.0]]])  # squared 1.21e-4 > 1e-4, < 2e-4
    scores = pixel2mesh_fscore(pred, gt, scale=1.0)
    assert scores["F1@1e-04"] == 0.0 and scores["F1@2e-04"] == pytest.approx(1.0)


def test_a_point_exactly_at_the_threshold_does_not_count():
    """Mesh R-CNN's and Pixel2Mesh's thresholds are strict: a point at exactly t (0.5, and 0.25 squared, exact in
    floating point) is not within it."""
    gt, pred = torch.zeros(1, 1, 3), torch.tensor([[[0.5, 0.0, 0.0]]])
    scores = sampling_metrics(pred, gt, thresholds=(0.5, 0.75))
    assert [float(scores[k]) for k in ("Precision@0.5", "Recall@0.5", "F1@0.5", "F1@0.75")] == [0.0, 0.0, 0.0, 1.0]
    assert pixel2mesh_fscore(pred, gt, taus=(0.25, 0.3), scale=1.0) == {"F1@2e-01": 0.0, "F1@3e-01": 1.0}


def test_identical_point_sets_are_perfect(point_sets):
    pred, _, pred_n, _ = point_sets
    m = sampling_metrics(pred, pred.clone(), pred_n, pred_n.clone())
    assert torch.allclose(m["Chamfer-L2"], torch.zeros(3))
    assert torch.allclose(m["NormalConsistency"], torch.ones(3))
    assert torch.allclose(m["AbsNormalConsistency"], torch.ones(3))
    for t in (0.1, 0.3, 0.5):
        assert torch.allclose(m[f"F1@{t:g}"], torch.ones(3), atol=1e-6)


def _sphere_batch(offsets: list[float], level: int = 3) -> Meshes:
    s = ico_sphere(level)
    verts = [s.verts_packed() * 0.5 + torch.tensor([o, 0.0, 0.0]) for o in offsets]
    return Meshes(verts=verts, faces=[s.faces_packed()] * len(offsets))


def test_compare_meshes_identical_and_shifted():
    torch.manual_seed(0)
    gt = _sphere_batch([0.0, 0.0])
    same = compare_meshes(_sphere_batch([0.0, 0.0]), gt, num_samples=5000)
    # Independent samples of one surface: each direction's mean squared NN distance is about
    # area / (pi * N) = (pi * 10^2) / (pi * 5000) = 0.02 for a sphere of diameter 10.
    assert same["Chamfer-L2"] < 0.06
    assert same["AbsNormalConsistency"] > 0.99
    assert same["F1@0.3"] > 0.97 and same["F1@0.5"] > 0.995

    shifted = compare_meshes(_sphere_batch([0.05, 0.1]), gt, num_samples=5000, reduce=False)
    assert shifted["F1@0.3"].shape == (2,)
    assert (shifted["F1@0.3"] < 0.9).all()
    assert shifted["F1@0.3"][1] < shifted["F1@0.3"][0]  # further is worse
    assert (shifted["Chamfer-L2"] > same["Chamfer-L2"]).all()


def test_compare_meshes_is_sampling_then_sampling_metrics():
    from pytorch3d.ops import sample_points_from_meshes

    pred, gt = _sphere_batch([0.02, 0.1]), _sphere_batch([0.0, 0.0])
    torch.manual_seed(3)
    got = compare_meshes(pred, gt, num_samples=500, reduce=False)
    torch.manual_seed(3)
    scale = GT_LONG_EDGE / 1.0  # the GT spheres have radius 0.5: long edge 1
    pp, pn = sample_points_from_meshes(pred.scale_verts(scale), 500, return_normals=True)
    gp, gn = sample_points_from_meshes(gt.scale_verts(scale), 500, return_normals=True)
    expected = sampling_metrics(pp, gp, pn, gn)
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-4), k


def test_compare_meshes_is_scale_invariant_and_broadcasts_gt():
    pred, gt = _sphere_batch([0.05, 0.1]), _sphere_batch([0.0])
    torch.manual_seed(1)
    a = compare_meshes(pred, gt, num_samples=500, reduce=False)
    torch.manual_seed(1)
    b = compare_meshes(pred.scale_verts(3.0), gt.scale_verts(3.0), num_samples=500, reduce=False)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    torch.manual_seed(1)
    c = compare_meshes(pred, gt, num_samples=500, unscale=False, reduce=False)
    assert (c["Chamfer-L2"] < a["Chamfer-L2"]).all()  # unscaled: units of a radius-0.5 sphere


def test_validation_messages():
    with pytest.raises(ValueError, match=r"pred_points must be a \(B, P, 3\) tensor"):
        sampling_metrics(torch.zeros(4, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="same batch size"):
        pixel2mesh_fscore(torch.zeros(2, 4, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="gt_normals must have the shape"):
        sampling_metrics(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="gt must hold 1 mesh or as many"):
        compare_meshes(_sphere_batch([0.0, 0.0, 0.0], level=1), _sphere_batch([0.0, 0.0], level=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_sq_dists_equals_brute_force_and_pytorch3d(seed):
    from pytorch3d.ops import knn_points

    from recon_core.mesh.metrics import nearest_sq_dists

    g = torch.Generator().manual_seed(seed)
    src, dst = torch.rand(3, 500, 3, generator=g), torch.rand(3, 321, 3, generator=g) * 1.5
    d2, idx = nearest_sq_dists(src, dst)
    assert d2.shape == idx.shape == (3, 500) and d2.dtype == src.dtype and idx.dtype == torch.int64
    brute = torch.cdist(src.double(), dst.double()) ** 2  # (3, 500, 321)
    torch.testing.assert_close(d2.double(), brute.min(dim=2).values, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(brute.gather(2, idx[..., None])[..., 0], brute.min(dim=2).values, rtol=0, atol=1e-12)
    knn = knn_points(src, dst, K=1)  # the search it replaced
    torch.testing.assert_close(d2, knn.dists[..., 0], rtol=1e-5, atol=1e-7)
    assert torch.equal(idx, knn.idx[..., 0])
    small, near = _nearest_naive(src[1, :20].double().numpy(), dst[1].double().numpy())
    np.testing.assert_allclose(d2[1, :20].double().numpy(), small, rtol=1e-6)
    np.testing.assert_array_equal(idx[1, :20].numpy(), near)
