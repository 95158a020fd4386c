"""Tests of recon_core.network.losses: values, gradients, weights, silhouette conventions, validation."""

import dataclasses

import numpy as np
import pytest
import torch
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.utils import ico_sphere

from recon_core.mesh.camera import Camera, intrinsics, to_pytorch3d
from recon_core.mesh.topology import BatchMeshes
from recon_core.network.losses import (
    LOSS_NAMES,
    LossWeights,
    RenderSettings,
    SilhouetteTarget,
    chamfer_and_normal,
    edge_loss,
    laplacian_loss,
    mesh_loss,
    refinement_loss,
    sample_surface,
)

RADIUS = 0.3
DISTANCE = 1.2
MASK_SIZE = 48
RENDER = RenderSettings(image_size=32, sigma=1e-4 * (64 / 32) ** 2)


def _camera(size: int = MASK_SIZE) -> Camera:
    """A view-frame camera: R = I, T = (0, 0, d)."""
    return Camera(R=np.eye(3), T=np.array([0.0, 0.0, DISTANCE]), K=intrinsics(35.0, 32.0, size, size), width=size, height=size)


def _spheres(centres: torch.Tensor, level: int = 2) -> tuple[BatchMeshes, torch.Tensor]:
    """Ico-spheres of radius RADIUS at (B, 3) view-frame centres; returns the meshes and their leaf verts."""
    s = ico_sphere(level)
    verts = (s.verts_packed() * RADIUS)[None] + centres[:, None]  # (B, V, 3)
    verts = verts.detach().requires_grad_()
    return BatchMeshes(verts, s.faces_packed()), verts


def _gt_samples(centres: torch.Tensor, n: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    meshes, _ = _spheres(centres, level=4)
    points, normals = sample_points_from_meshes(meshes.to_pytorch3d(), n, return_normals=True)
    return points.detach(), normals.detach()


def _sphere_target(centres: torch.Tensor, size: int = MASK_SIZE) -> SilhouetteTarget:
    """Exact mask and depth of true spheres, by casting each pixel centre's ray (camera conventions)."""
    cam = _camera(size)
    rows, cols = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    pix = np.stack([cols, rows, np.ones_like(rows)], axis=-1)  # (H, W, 3): (u, v, 1)
    rays = pix @ np.linalg.inv(cam.K).T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    masks, depths = [], []
    for c in centres.numpy().astype(np.float64):
        c_cam = c + cam.T
        t = rays @ c_cam
        d2 = c_cam @ c_cam - t**2
        hit = d2 < RADIUS**2
        t_hit = t - np.sqrt(np.clip(RADIUS**2 - d2, 0.0, None))
        masks.append(hit.astype(np.float32))
        depths.append(np.where(hit, t_hit * rays[..., 2], np.inf).astype(np.float32))
    return SilhouetteTarget(
        masks=torch.from_numpy(np.stack(masks)),
        cameras=to_pytorch3d([cam] * len(centres)),
        depths=torch.from_numpy(np.stack(depths)),
    )


CENTRES = torch.tensor([[0.0, 0.0, 0.0], [0.15, -0.1, 0.05]])
ALL_ON = LossWeights(chamfer=1.0, normal=1.0, edge=1.0, laplacian=1.0, silhouette=1.0, depth=1.0)


def test_parts_minimal_when_pred_equals_gt_and_larger_otherwise():
    gt_points, gt_normals = _gt_samples(CENTRES)
    target = _sphere_target(CENTRES)
    torch.manual_seed(1)
    same, _ = _spheres(CENTRES)
    _, p_same = mesh_loss(same, gt_points, gt_normals, ALL_ON, num_samples=3000, silhouette=target, render=RENDER)
    assert set(p_same) == set(LOSS_NAMES)
    assert p_same["chamfer"] < 3e-4  # sampling noise only: area / (pi N) per direction, ~1.5e-4
    assert p_same["normal"] < 0.02  # facets of a level-3 ico-sphere against a level-4 one
    # Soft IoU floor: soft edges, and interior pixels near an edge shared by two faces get
    # alpha ~0.75 from pytorch3d's product of per-face probabilities.
    assert p_same["silhouette"] < 0.2
    assert p_same["depth"] < 0.02  # inscribed level-2 polyhedron

    moved, _ = _spheres(CENTRES + torch.tensor([0.1, 0.05, 0.1]))
    _, p_moved = mesh_loss(moved, gt_points, gt_normals, ALL_ON, num_samples=3000, silhouette=target, render=RENDER)
    for name in ("chamfer", "normal", "silhouette", "depth"):
        assert p_moved[name] > 2 * p_same[name], name
    assert p_moved["depth"].item() == pytest.approx(0.1, abs=0.03)  # moved 0.1 away from the camera
    for name in ("edge", "laplacian"):  # regularisers: translation invariant
        assert p_moved[name].item() == pytest.approx(p_same[name].item(), rel=1e-4), name


def test_silhouette_follows_the_camera_conventions():
    """A sphere off the axis matches its own ray-cast mask, not the point-mirrored one."""
    centre = torch.tensor([[0.2, 0.1, 0.0]])
    pred, _ = _spheres(centre)
    gt_points, gt_normals = _gt_samples(centre, n=500)
    weights = LossWeights(silhouette=1.0)
    _, right = mesh_loss(pred, gt_points, gt_normals, weights, num_samples=100, silhouette=_sphere_target(centre), render=RENDER)
    for flip in ([-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]):
        wrong_target = _sphere_target(centre * torch.tensor(flip))
        _, wrong = mesh_loss(pred, gt_points, gt_normals, weights, num_samples=100, silhouette=wrong_target, render=RENDER)
        assert wrong["silhouette"] > 3 * right["silhouette"]


def test_render_size_independent_of_mask_size():
    centre = torch.tensor([[0.1, -0.05, 0.0]])
    pred, _ = _spheres(centre)
    gt_points, gt_normals = _gt_samples(centre, n=500)
    losses = []
    for size in (32, 96):
        _, parts = mesh_loss(
            pred, gt_points, gt_normals, num_samples=100, silhouette=_sphere_target(centre, size), render=RENDER
        )
        losses.append(parts["silhouette"].item())
    assert max(losses) < 0.2 and abs(losses[0] - losses[1]) < 0.03


def test_gradients_reach_the_vertices_from_every_part():
    gt_points, gt_normals = _gt_samples(CENTRES, n=2000)
    target = _sphere_target(CENTRES)
    pred, verts = _spheres(CENTRES + torch.tensor([0.05, 0.03, 0.05]), level=2)
    with torch.no_grad():  # break the symmetry so that the regularisers have gradients
        verts.add_(0.01 * torch.randn(verts.shape, generator=torch.Generator().manual_seed(0)))
    _, parts = mesh_loss(pred, gt_points, gt_normals, ALL_ON, num_samples=2000, silhouette=target, render=RENDER)
    for name in LOSS_NAMES:
        (grad,) = torch.autograd.grad(parts[name], verts, retain_graph=True)
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


def test_silhouette_pulls_a_sphere_toward_the_target():
    target = _sphere_target(torch.tensor([[0.1, 0.05, 0.0]]))
    gt_points, gt_normals = _gt_samples(torch.zeros(1, 3), n=100)
    shift = torch.zeros(1, 3, requires_grad=True)
    s = ico_sphere(2)
    weights = LossWeights(chamfer=0.0, edge=0.0, silhouette=1.0)
    optimiser = torch.optim.Adam([shift], lr=0.015)
    history = []
    for _ in range(5):
        pred = BatchMeshes((s.verts_packed() * RADIUS + shift)[None], s.faces_packed())
        total, parts = mesh_loss(pred, gt_points, gt_normals, weights, num_samples=100, silhouette=target, render=RENDER)
        history.append(parts["silhouette"].item())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    assert history[-1] < 0.7 * history[0]
    assert shift[0, 0] > 0.03 and shift[0, 1] > 0.015  # toward (0.1, 0.05)


def test_zero_weight_drops_a_part_from_the_total_not_from_the_log():
    gt_points, gt_normals = _gt_samples(CENTRES, n=1000)
    pred, _ = _spheres(CENTRES + 0.05, level=2)
    target = _sphere_target(CENTRES)
    for name in LOSS_NAMES:
        weights = dataclasses.replace(ALL_ON, **{name: 0.0})
        torch.manual_seed(2)
        total, parts = mesh_loss(pred, gt_points, gt_normals, weights, num_samples=500, silhouette=target, render=RENDER)
        assert set(parts) == set(LOSS_NAMES)
        assert parts[name] > 0
        expected = sum(getattr(weights, k) * v for k, v in parts.items())
        assert total.item() == pytest.approx(expected.item(), rel=1e-6)
        assert total.item() < sum(parts.values()).item()


def test_refinement_loss_averages_the_stages():
    gt_points, gt_normals = _gt_samples(CENTRES, n=1000)
    stages = [_spheres(CENTRES + off, level=2)[0] for off in (0.1, 0.05, 0.0)]
    weights = LossWeights(normal=0.5, laplacian=0.1)
    torch.manual_seed(3)
    total, parts = refinement_loss(stages, gt_points, gt_normals, weights, num_samples=500)
    torch.manual_seed(3)
    per_stage = [mesh_loss(m, gt_points, gt_normals, weights, num_samples=500) for m in stages]
    assert total.item() == pytest.approx(sum(t.item() for t, _ in per_stage) / 3, rel=1e-5)
    for name in ("chamfer", "normal", "edge", "laplacian"):
        for i, (_, p) in enumerate(per_stage):
            assert parts[f"{name}_{i}"].item() == pytest.approx(p[name].item(), rel=1e-5)
        assert parts[name].item() == pytest.approx(np.mean([p[name].item() for _, p in per_stage]), rel=1e-5)
    assert parts["chamfer_0"] > parts["chamfer_2"]
    expected = sum(getattr(weights, k) * parts[k] for k in ("chamfer", "normal", "edge", "laplacian"))
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_validation_messages():
    gt_points, gt_normals = _gt_samples(CENTRES, n=100)
    pred, _ = _spheres(CENTRES, level=1)
    with pytest.raises(ValueError, match=r"gt_points must be a \(B, N, 3\) tensor with B = 2"):
        mesh_loss(pred, gt_points[:1], gt_normals[:1])
    with pytest.raises(ValueError, match="gt_normals must have the shape of gt_points"):
        mesh_loss(pred, gt_points, gt_normals[:, :50])
    with pytest.raises(ValueError, match="pred_meshes must be a BatchMeshes"):
        mesh_loss(pred.verts, gt_points, gt_normals)
    with pytest.raises(ValueError, match="need a SilhouetteTarget"):
        mesh_loss(pred, gt_points, gt_normals, LossWeights(silhouette=1.0))
    with pytest.raises(ValueError, match="LossWeights.edge must be finite and >= 0"):
        LossWeights(edge=-1.0)
    target = _sphere_target(CENTRES)
    with pytest.raises(ValueError, match=r"masks must be a \(B, H, W\) tensor with B = 2"):
        mesh_loss(pred, gt_points, gt_normals, silhouette=dataclasses.replace(target, masks=target.masks[0]))
    with pytest.raises(ValueError, match="depths must have the masks' shape"):
        mesh_loss(pred, gt_points, gt_normals, silhouette=dataclasses.replace(target, depths=target.depths[:, :10]))
    with pytest.raises(ValueError, match=r"cameras must be built for the masks' \(H, W\) = \(48, 48\)"):
        mesh_loss(pred, gt_points, gt_normals, silhouette=dataclasses.replace(target, cameras=to_pytorch3d([_camera(64)] * 2)))
    with pytest.raises(ValueError, match="weights.depth > 0 needs SilhouetteTarget.depths"):
        mesh_loss(pred, gt_points, gt_normals, LossWeights(depth=1.0), silhouette=dataclasses.replace(target, depths=None))
    with pytest.raises(ValueError, match="stage_meshes must hold at least one stage"):
        refinement_loss([], gt_points, gt_normals)


def _lumpy(batch: int = 3, level: int = 2, seed: int = 0) -> BatchMeshes:
    """Ico-spheres with random radial bumps: faces of unequal areas and vertices off their neighbours' mean."""
    g = torch.Generator().manual_seed(seed)
    s = ico_sphere(level)
    radii = 0.2 + 0.3 * torch.rand(batch, s.verts_packed().shape[0], 1, generator=g)
    return BatchMeshes(s.verts_packed()[None] * radii, s.faces_packed())


def test_torch_terms_equal_pytorch3d():
    from pytorch3d.loss import chamfer_distance, mesh_edge_loss, mesh_laplacian_smoothing

    meshes = _lumpy()
    reference = meshes.to_pytorch3d()
    torch.manual_seed(5)
    points, normals = sample_surface(meshes, 700)
    torch.manual_seed(5)
    ref_points, ref_normals = sample_points_from_meshes(reference, 700, return_normals=True)
    torch.testing.assert_close(points, ref_points, atol=1e-6, rtol=0)
    torch.testing.assert_close(normals, ref_normals, atol=1e-5, rtol=0)

    g = torch.Generator().manual_seed(1)
    gt = torch.randn(3, 500, 3, generator=g) * 0.3
    gt_normals = torch.nn.functional.normalize(torch.randn(3, 500, 3, generator=g), dim=-1)
    chamfer, normal = chamfer_and_normal(points, gt, normals, gt_normals)
    ref_chamfer, ref_normal = chamfer_distance(points, gt, x_normals=normals, y_normals=gt_normals)
    assert chamfer.item() == pytest.approx(ref_chamfer.item(), rel=1e-5)
    assert normal.item() == pytest.approx(ref_normal.item(), rel=1e-5)

    assert edge_loss(meshes).item() == pytest.approx(mesh_edge_loss(reference).item(), rel=1e-5)
    assert laplacian_loss(meshes).item() == pytest.approx(
        mesh_laplacian_smoothing(reference, method="uniform").item(), rel=1e-5)


def test_torch_terms_have_pytorch3d_gradients():
    from pytorch3d.loss import mesh_edge_loss, mesh_laplacian_smoothing

    base = _lumpy(batch=2, seed=3)
    ours = base.verts.clone().requires_grad_()
    theirs = base.verts.clone().requires_grad_()
    (edge_loss(BatchMeshes(ours, base.faces)) + laplacian_loss(BatchMeshes(ours, base.faces))).backward()
    reference = BatchMeshes(theirs, base.faces).to_pytorch3d()
    (mesh_edge_loss(reference) + mesh_laplacian_smoothing(reference, method="uniform")).backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-6, rtol=1e-4)


def _chamfer_through_the_table(x, y, x_normals, y_normals):
    """The obvious reference: autograd through the whole (B, N, M) table of squared distances."""
    d = ((x[:, :, None] - y[:, None]).square()).sum(-1)
    to_y, nn_y = d.min(dim=2)
    to_x, nn_x = d.min(dim=1)

    def cosine(a, b, nn):
        partner = b.gather(1, nn[..., None].expand(-1, -1, 3))
        return 1.0 - torch.nn.functional.cosine_similarity(a, partner, dim=2, eps=1e-6).abs()

    normal = cosine(x_normals, y_normals, nn_y).mean(1) + cosine(y_normals, x_normals, nn_x).mean(1)
    return (to_y.mean(1) + to_x.mean(1)).mean(), normal.mean()


@pytest.mark.parametrize("sizes", [(300, 500), (64, 7)])
def test_chamfer_gradients_equal_the_whole_table_and_pytorch3d(sizes):
    """Neighbours found without autograd, matched pairs differentiated: the gradients of the full table's
    (in float64, to rounding) and of pytorch3d's ``chamfer_distance`` (float32, which is all its knn takes)."""
    from pytorch3d.loss import chamfer_distance

    g = torch.Generator().manual_seed(7)
    n, m = sizes
    x0, y0 = torch.randn(2, n, 3, generator=g, dtype=torch.float64), torch.randn(2, m, 3, generator=g, dtype=torch.float64)
    y0[:, 1::2] = y0[:, 0:-1:2].clone() if m % 2 else y0[:, 0::2].clone()  # every point twice: ties take the first
    xn, yn = (torch.nn.functional.normalize(torch.randn(2, k, 3, generator=g, dtype=torch.float64), dim=-1)
              for k in (n, m))

    def run(fn, dtype):
        x, y, xnn = (t.to(dtype).clone().requires_grad_() for t in (x0, y0, xn))  # fresh leaves each run
        chamfer, normal = fn(x, y, xnn, yn.to(dtype))
        (chamfer + 0.3 * normal).backward()
        return chamfer.detach(), normal.detach(), x.grad, y.grad, xnn.grad

    ours, table = run(chamfer_and_normal, torch.float64), run(_chamfer_through_the_table, torch.float64)
    for a, b in zip(ours, table):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-9)
    ours32 = run(chamfer_and_normal, torch.float32)
    theirs = run(lambda x, y, xn_, yn_: chamfer_distance(x, y, x_normals=xn_, y_normals=yn_), torch.float32)
    for a, b in zip(ours32, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert ours[2].abs().max() > 1e-4  # the gradients compared are not all zero


def test_mesh_loss_is_the_pytorch3d_terms():
    """The whole loss (sampling included, one seed) against pytorch3d's functions."""
    from pytorch3d.loss import chamfer_distance, mesh_edge_loss, mesh_laplacian_smoothing

    meshes = _lumpy(batch=2, seed=4)
    gt_points, gt_normals = _gt_samples(torch.zeros(2, 3), n=800)
    weights = LossWeights(chamfer=1.0, normal=0.3, edge=0.2, laplacian=0.1)
    torch.manual_seed(9)
    total, parts = mesh_loss(meshes, gt_points, gt_normals, weights, num_samples=600)
    reference = meshes.to_pytorch3d()
    torch.manual_seed(9)
    points, normals = sample_points_from_meshes(reference, 600, return_normals=True)
    chamfer, normal = chamfer_distance(points, gt_points, x_normals=normals, y_normals=gt_normals)
    expected = {"chamfer": chamfer, "normal": normal, "edge": mesh_edge_loss(reference),
                "laplacian": mesh_laplacian_smoothing(reference, method="uniform")}
    for name, value in expected.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-5), name
    assert total.item() == pytest.approx(sum(getattr(weights, k) * v.item() for k, v in expected.items()), rel=1e-5)


def test_laplacian_of_a_vertex_in_no_face_is_pytorch3d_s():
    from pytorch3d.loss import mesh_laplacian_smoothing

    meshes = _lumpy(batch=2, level=1, seed=6)
    lone = torch.tensor([[[0.3, -0.2, 0.5]], [[0.1, 0.4, -0.2]]])
    with_lone = BatchMeshes(torch.cat([meshes.verts, lone], dim=1), meshes.faces)
    expected = mesh_laplacian_smoothing(with_lone.to_pytorch3d(), method="uniform")
    assert laplacian_loss(with_lone).item() == pytest.approx(expected.item(), rel=1e-5)
