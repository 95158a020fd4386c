"""The torch-only soft rasteriser (recon_core.network.soft_raster) against pytorch3d's, which it stands in for."""

import numpy as np
import pytest
import torch
from pytorch3d.utils import ico_sphere

from recon_core.mesh.camera import Camera, intrinsics, to_pytorch3d
from recon_core.mesh.topology import BatchMeshes
from recon_core.network.losses import LossWeights, RenderSettings, SilhouetteTarget, mesh_loss, render_silhouette
from recon_core.network.soft_raster import PinholeCameras, nearest_depth, soft_silhouette
from training.config import LossConfig

DISTANCE = 1.1


def _cameras(b: int, height: int, width: int) -> tuple[PinholeCameras, object]:
    """The same B view-frame cameras (R = I, T = (0, 0, d)) for both rasterisers, principal points apart."""
    cams = []
    for i in range(b):
        K = intrinsics(35.0, 32.0, width, height)
        K[0, 2] += 2.0 * i
        K[1, 2] -= 1.5 * i
        cams.append(Camera(R=np.eye(3), T=np.array([0.01 * i, 0.0, DISTANCE]), K=K, width=width, height=height))
    ours = PinholeCameras(torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32),
                          torch.tensor(np.stack([c.T for c in cams]), dtype=torch.float32), (height, width))
    return ours, to_pytorch3d(cams)


def _blobs(b: int = 3, level: int = 2, seed: int = 0) -> BatchMeshes:
    """Noisy, stretched ico-spheres: folds and faces of both orientations, as a network's early meshes."""
    g = torch.Generator().manual_seed(seed)
    s = ico_sphere(level)
    verts = s.verts_packed()[None] * torch.tensor([0.35, 0.25, 0.3])
    verts = verts + 0.04 * torch.randn(b, *verts.shape[1:], generator=g)
    return BatchMeshes(verts.contiguous(), s.faces_packed())


@pytest.mark.parametrize("height,width", [(24, 24), (20, 28)])
def test_equals_pytorch3d_over_all_faces(height, width):
    """With as many faces per pixel as the mesh has, pytorch3d's alpha is ours: the same distances, signs, blur
    radius and blend, the same pixel centres and projection, square and not."""
    meshes = _blobs()
    ours_cams, p3d_cams = _cameras(len(meshes), 2 * height, 2 * width)  # the render at half the image's size
    render = RenderSettings(image_size=max(height, width), sigma=3e-4, faces_per_pixel=meshes.faces.shape[0])
    theirs, _, _ = render_silhouette(meshes, p3d_cams, (height, width), render)
    ours = soft_silhouette(meshes.verts, meshes.faces, ours_cams, (height, width), sigma=3e-4)
    assert ours.shape == (len(meshes), height, width)
    assert 0.2 < float((ours > 0.5).float().mean()) < 0.8  # a real silhouette, neither empty nor full
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_gradients_equal_pytorch3d_over_all_faces():
    meshes = _blobs(b=2, level=1)
    ours_cams, p3d_cams = _cameras(2, 32, 32)
    weights = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3))
    render = RenderSettings(image_size=16, sigma=1e-3, faces_per_pixel=meshes.faces.shape[0])
    grads = []
    for which in ("ours", "pytorch3d"):
        verts = meshes.verts.clone().requires_grad_()
        if which == "ours":
            alpha = soft_silhouette(verts, meshes.faces, ours_cams, (16, 16), sigma=1e-3)
        else:
            alpha = render_silhouette(BatchMeshes(verts, meshes.faces), p3d_cams, (16, 16), render)[0]
        (alpha * weights).sum().backward()
        grads.append(verts.grad)
    assert grads[1].abs().max() > 1e-2  # the comparison has something to compare
    torch.testing.assert_close(grads[0], grads[1], atol=1e-3 * float(grads[1].abs().max()), rtol=1e-3)


def _dense(verts, faces, cameras, size, sigma, eps=1e-4):
    """The obvious reference: every face's signed distance at every pixel centre, blended as pytorch3d does."""
    h, w = size
    height, width = cameras.image_size
    unit = 2.0 / min(h, w)
    uv = cameras.project(verts) * torch.tensor([w / width, h / height]) * unit
    tri = uv[:, faces]                                              # (B, F, 3, 2)
    ii, jj = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    p = torch.stack([jj, ii], dim=-1).reshape(1, 1, -1, 2) * unit  # (1, 1, P, 2)
    out = torch.ones(verts.shape[0], h * w)
    for f in range(tri.shape[1]):
        a, b, c = (tri[:, f, k, None, :] for k in range(3))        # (B, 1, 2)
        d2, sides = [], []
        for u, v in ((a, b), (b, c), (c, a)):
            e, rel = v - u, p[0, 0] - u
            t = ((rel * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
            d2.append((rel - t[..., None] * e).square().sum(-1))
            sides.append(torch.sign(e[..., 0] * rel[..., 1] - e[..., 1] * rel[..., 0]))
        d = torch.stack(d2).amin(0)
        inside = (sides[0] == sides[1]) & (sides[1] == sides[2]) & (sides[0] != 0)
        d = torch.where(inside, -d, d)
        prob = torch.where(d < sigma * np.log(1 / eps - 1), torch.sigmoid(-d / sigma), torch.zeros_like(d))
        out = out * (1 - prob)
    return (1 - out).reshape(-1, h, w)


def test_windows_equal_every_face_at_every_pixel_and_a_narrow_one_only_loses():
    """Each face over its own window of pixels (the fast path) against every face at every pixel: equal when
    the window holds the widest face's reach; a window capped below it only leaves alpha out."""
    meshes = _blobs(b=2, level=1)        # 80 faces, each ~10 pixels wide at 40 px
    cams, _ = _cameras(2, 40, 40)
    reference = _dense(meshes.verts, meshes.faces, cams, (40, 40), sigma=5e-4)
    wide = soft_silhouette(meshes.verts, meshes.faces, cams, (40, 40), sigma=5e-4, max_window=64)
    torch.testing.assert_close(wide, reference, atol=1e-5, rtol=0)
    narrow = soft_silhouette(meshes.verts, meshes.faces, cams, (40, 40), sigma=5e-4, max_window=4)
    assert bool((narrow <= reference + 1e-5).all()) and float((reference - narrow).max()) > 0.5


def test_more_faces_per_pixel_than_pytorch3d_keeps_only_adds_alpha():
    """pytorch3d blends the 8 nearest faces; ours blends them all, so its alpha is never smaller."""
    meshes = _blobs(level=3)
    ours_cams, p3d_cams = _cameras(len(meshes), 48, 48)
    theirs = render_silhouette(meshes, p3d_cams, (32, 32), RenderSettings(image_size=32, sigma=2.5e-4))[0]
    ours = soft_silhouette(meshes.verts, meshes.faces, ours_cams, (32, 32), sigma=2.5e-4)
    assert bool((ours >= theirs - 1e-5).all())


def test_nearest_depth_equals_pytorch3d():
    """The nearest covering face's camera-frame depth and where a face covers the pixel centre, as pytorch3d's
    rasteriser finds them (perspective-correct interpolation), on folded meshes with faces of both orientations."""
    meshes = _blobs(b=3, level=2)
    ours_cams, p3d_cams = _cameras(3, 48, 48)
    render = RenderSettings(image_size=32, sigma=1e-4, faces_per_pixel=meshes.faces.shape[0])
    _, theirs, theirs_covered = render_silhouette(meshes, p3d_cams, (32, 32), render)
    depth, covered = nearest_depth(meshes.verts, meshes.faces, ours_cams, (32, 32))
    assert 0.2 < float(covered.float().mean()) < 0.8
    assert torch.equal(covered, theirs_covered)
    torch.testing.assert_close(depth[covered], theirs[covered], atol=1e-5, rtol=1e-5)
    assert bool((depth[~covered] == 0).all())
    assert float(depth[covered].min()) > DISTANCE - 0.5  # camera-frame z: the object sits DISTANCE away


def test_nearest_depth_is_the_nearest_of_a_slow_per_pixel_search():
    """Every face at every pixel centre, by a loop: inside by barycentric signs, z by 1 / sum(b / z), the least."""
    meshes = _blobs(b=1, level=1)
    cams, _ = _cameras(1, 20, 20)
    depth, covered = nearest_depth(meshes.verts, meshes.faces, cams, (20, 20))
    uv = cams.project(meshes.verts)[0].double().numpy()
    z = (meshes.verts[0, :, 2] + cams.T[0, 2]).double().numpy()
    for i in range(20):
        for j in range(20):
            p, best = np.array([j + 0.5, i + 0.5]), np.inf
            for f in meshes.faces.numpy():
                a, b, c = uv[f]
                area = np.cross(b - a, c - a)
                if abs(area) < 1e-12:
                    continue
                bary = np.array([np.cross(b - p, c - p), np.cross(c - p, a - p), np.cross(a - p, b - p)]) / area
                if (bary > 0).all():
                    best = min(best, 1.0 / (bary / z[f]).sum())
            assert bool(covered[0, i, j]) == np.isfinite(best)
            if np.isfinite(best):
                assert abs(float(depth[0, i, j]) - best) < 1e-5


def test_silhouette_and_depth_losses_with_the_torch_rasteriser_match_pytorch3d():
    meshes = _blobs(b=2, level=1)
    ours_cams, p3d_cams = _cameras(2, 24, 24)
    masks = (torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    depths = DISTANCE + 0.1 * torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(2))
    points, normals = torch.randn(2, 64, 3), torch.nn.functional.normalize(torch.randn(2, 64, 3), dim=-1)
    render = RenderSettings(image_size=12, sigma=1e-3, faces_per_pixel=meshes.faces.shape[0])
    weights = LossWeights(silhouette=1.0, depth=1.0)
    results = []
    for cams in (ours_cams, p3d_cams):
        verts = meshes.verts.clone().requires_grad_()
        _, parts = mesh_loss(BatchMeshes(verts, meshes.faces), points, normals, weights, num_samples=32,
                             render=render, silhouette=SilhouetteTarget(masks=masks, cameras=cams, depths=depths))
        (parts["silhouette"] + parts["depth"]).backward()
        results.append((parts["silhouette"].detach(), parts["depth"].detach(), verts.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert float(results[1][1]) > 0 and float(results[1][2].abs().max()) > 0


def test_config_names_the_rasteriser():
    assert LossConfig(rasteriser="torch", depth=0.1).rasteriser == "torch"
    with pytest.raises(ValueError, match="loss.rasteriser"):
        LossConfig(rasteriser="opengl")


def test_bad_cameras_are_named():
    with pytest.raises(ValueError, match=r"\(B, 3, 3\)"):
        PinholeCameras(torch.eye(3), torch.zeros(1, 3), (8, 8))
    with pytest.raises(ValueError, match="B = 2"):
        PinholeCameras(torch.eye(3).expand(2, 3, 3), torch.zeros(3, 3), (8, 8))
    cams, _ = _cameras(2, 8, 8)
    with pytest.raises(ValueError, match="B cameras"):
        soft_silhouette(torch.zeros(3, 4, 3), torch.zeros(1, 3, dtype=torch.long), cams, (8, 8))


def _blob_and_a_large_face(b: int = 2) -> BatchMeshes:
    """The noisy ico-sphere of level 2 and one triangle ten times wider than its faces: windows of several sides."""
    meshes = _blobs(b=b, level=2)
    big = torch.tensor([[-0.45, -0.4, 0.1], [0.5, -0.3, 0.15], [0.0, 0.45, 0.05]]).expand(b, 3, 3)
    verts = torch.cat([meshes.verts, big], dim=1).contiguous()
    v = meshes.verts.shape[1]
    faces = torch.cat([meshes.faces, torch.tensor([[v, v + 1, v + 2]])])
    return BatchMeshes(verts, faces)


def test_faces_of_very_different_sizes_each_get_their_own_window(monkeypatch):
    """Small faces and one large one: grouped by window side, the silhouette equals every face at every pixel and
    the depth equals the same faces all on the widest face's window (the rasteriser without groups)."""
    from recon_core.network import soft_raster
    from recon_core.network.soft_raster import _face_groups, _projected

    meshes = _blob_and_a_large_face()
    cams, _ = _cameras(2, 40, 40)
    _, groups = _face_groups(_projected(meshes.verts, meshes.faces, cams, (40, 40)), 1.0, 64)
    assert len(groups) >= 2 and sum(len(g) for _, g in groups) == meshes.faces.shape[0]
    reference = _dense(meshes.verts, meshes.faces, cams, (40, 40), sigma=5e-4)
    grouped = soft_silhouette(meshes.verts, meshes.faces, cams, (40, 40), sigma=5e-4, max_window=64)
    torch.testing.assert_close(grouped, reference, atol=1e-5, rtol=0)
    depth, covered = nearest_depth(meshes.verts, meshes.faces, cams, (40, 40), max_window=64)
    monkeypatch.setattr(soft_raster, "WINDOW_SIDES", ())  # one group: every face on the widest window
    one_depth, one_covered = nearest_depth(meshes.verts, meshes.faces, cams, (40, 40), max_window=64)
    assert torch.equal(covered, one_covered) and torch.equal(depth, one_depth)
    assert len(_face_groups(_projected(meshes.verts, meshes.faces, cams, (40, 40)), 1.0, 64)[1]) == 1
