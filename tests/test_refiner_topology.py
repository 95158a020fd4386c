"""Refiner stages on meshes of any topology (recon_core.mesh.topology.MeshGraph, recon_core.network.refiner.RefinerStage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_core.mesh.camera import fit_projection
from recon_core.mesh.occupancy import GridCamera, GridSpec, mesh_occupancy, project_view
from recon_core.mesh.printable import check_topology
from recon_core.mesh.topology import IcoTopology, MeshGraph, mean_edge_length, neighbour_mean
from recon_core.network.refiner import RefinerStage

SIZE, FEATURE_DIM, HIDDEN, CATEGORIES = 64, 8, 16, 13
STRIDES = (4, 8, 16, 32)
CAMERA = GridCamera(scale=1.2, principal=(0.48, 0.53), distance=1.9)


def _torus() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1, major_sections=24, minor_sections=10)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(0.6, [1.0, 0.3, 0.0]))
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _dumbbell() -> tuple[np.ndarray, np.ndarray]:
    """Two boxes joined by a bar: one body, genus 0, edges from very short to very long."""
    import trimesh

    left, right = trimesh.creation.box(extents=[0.2, 0.25, 0.2]), trimesh.creation.box(extents=[0.2, 0.25, 0.2])
    left.apply_translation([-0.3, 0.0, 0.0])
    right.apply_translation([0.3, 0.05, 0.0])
    bar = trimesh.creation.box(extents=[0.6, 0.06, 0.06])
    mesh = trimesh.boolean.union([left, right, bar]).subdivide()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _occupancy_mesh() -> tuple[np.ndarray, np.ndarray]:
    """What the occupancy path meshes: a ring (genus 1) and a separate block, 2 components, in the view frame."""
    spec = GridSpec(resolution=12, depth_bins=12, depth_range=0.5)
    k, i, j = np.meshgrid(*(np.arange(12),) * 3, indexing="ij")
    ring = (np.hypot(i - 4.5, j - 4.5) < 3.6) & (np.hypot(i - 4.5, j - 4.5) > 1.6) & (abs(k - 5.5) < 2)
    block = (i >= 9) & (j >= 8) & (j <= 10) & (abs(k - 5.5) < 3)
    return mesh_occupancy((ring | block).astype(float), CAMERA, spec)


MESHES = {"torus": (_torus, 0, 1), "dumbbell": (_dumbbell, 2, 1), "occupancy": (_occupancy_mesh, 2, 2)}
"""name -> (builder, Euler characteristic, components): genus 1; genus 0; genus 1 + genus 0."""


@pytest.fixture(scope="module", params=sorted(MESHES))
def mesh(request) -> tuple[torch.Tensor, MeshGraph]:
    """(V, 3) float32 view-frame vertices and the graph of a closed, manifold mesh of the named topology."""
    build, euler, components = MESHES[request.param]
    verts, faces = build()
    assert check_topology(faces, len(verts)).closed_manifold
    assert len(verts) - len(MeshGraph(faces).edges()) + len(faces) == euler
    assert _components(faces, len(verts)) == components
    return torch.as_tensor(verts, dtype=torch.float32), MeshGraph(faces, len(verts))


def _components(faces: np.ndarray, num_verts: int) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, cols = faces[:, [0, 1, 2]].ravel(), faces[:, [1, 2, 0]].ravel()
    return connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_verts, num_verts)))[0]


def _neighbours_naive(edges: list[list[int]], num_verts: int) -> list[list[int]]:
    nbrs = [set() for _ in range(num_verts)]
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    return [sorted(n) for n in nbrs]


def _stage(seed: int = 0, trained: bool = True, prev_dim: int = 0) -> RefinerStage:
    """A stage with random weights; ``trained``: its zero-initialised layers (offset, category tables) made non-zero."""
    torch.manual_seed(seed)
    stage = RefinerStage(FEATURE_DIM, HIDDEN, prev_dim, gconv_layers=2, levels=len(STRIDES), window=2, heads=2,
                         max_displacement=2.0, num_categories=CATEGORIES, category_norm=True)
    if trained:
        with torch.no_grad():
            for p in stage.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.3)
    return stage


def _inputs(batch: int, seed: int = 1) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random pyramid maps (B, C, S / stride, S / stride) and soft category probabilities (B, K)."""
    g = torch.Generator().manual_seed(seed)
    pyramid = [torch.randn(batch, FEATURE_DIM, SIZE // s, SIZE // s, generator=g) for s in STRIDES]
    return pyramid, torch.randn(batch, CATEGORIES, generator=g).softmax(-1)


def _batch(verts: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, V, 3): the mesh, then slightly moved copies of it (one topology, different shapes)."""
    g = torch.Generator().manual_seed(2)
    return torch.stack([verts] + [verts + 0.01 * torch.randn(verts.shape, generator=g) for _ in range(batch - 1)])


def test_mesh_graph_edges_equal_the_naive_set_of_pairs(mesh):
    _, graph = mesh
    faces = graph.faces().tolist()
    naive = sorted({tuple(sorted((f[a], f[b]))) for f in faces for a, b in ((0, 1), (1, 2), (2, 0))})
    edges = graph.edges()
    assert edges.dtype == torch.long and edges.shape == (len(naive), 2)
    assert edges.tolist() == [list(e) for e in naive]
    assert torch.equal(graph.edges(level=5), edges)  # the level is ignored
    ei = graph.batched_edge_index(None, 3)
    v, e = graph.num_verts, len(naive)
    for copy in range(3):
        block = ei[:, 2 * e * copy: 2 * e * (copy + 1)] - copy * v
        assert sorted(map(tuple, block.t().tolist())) == sorted(naive + [(b, a) for a, b in naive])


def test_mesh_graph_of_an_ico_sphere_equals_its_ico_topology():
    """On an ico level a MeshGraph gives IcoTopology's edges and edge index, so either can feed a stage."""
    topo = IcoTopology(2, 2)
    graph = MeshGraph(topo.faces(2))
    assert graph.num_verts == 162
    assert torch.equal(graph.edges(), topo.edges(2))
    assert torch.equal(graph.batched_edge_index(None, 2), topo.batched_edge_index(2, 2))


def test_neighbour_mean_over_a_mesh_graph_equals_a_loop(mesh):
    verts, graph = mesh
    x = torch.randn(2, graph.num_verts, 4, dtype=torch.float64)
    nbrs = _neighbours_naive(graph.edges().tolist(), graph.num_verts)
    expected = torch.stack([torch.stack([xb[n].mean(0) for n in nbrs]) for xb in x])
    torch.testing.assert_close(neighbour_mean(x, graph.edges()), expected)
    lengths = torch.stack([(verts[n] - verts[i]).norm(dim=-1).mean() for i, n in enumerate(nbrs)])
    torch.testing.assert_close(mean_edge_length(verts[None], graph.edges())[0, :, 0], lengths)


@pytest.mark.parametrize("faces,match", [
    (np.zeros((0, 3), dtype=np.int64), r"non-empty \(F, 3\)"),
    (np.array([[0, 1, 2, 3]]), r"\(F, 3\)"),
    (np.array([[0.0, 1.0, 2.0]]), "integer"),
    (np.array([[0, 1, -2]]), ">= 0"),
    (np.array([[0, 1, 1]]), "distinct"),
])
def test_mesh_graph_rejects_bad_faces(faces, match):
    with pytest.raises(ValueError, match=match):
        MeshGraph(faces)


def test_mesh_graph_rejects_indices_past_num_verts():
    with pytest.raises(ValueError, match="< num_verts = 3"):
        MeshGraph(np.array([[0, 1, 3]]), num_verts=3)
    assert MeshGraph(np.array([[0, 1, 2]]), num_verts=5).batched_edge_index(None, 2).max() == 5 + 2


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("projection", ["fit", "camera"])
def test_stage_runs_forward_and_backward_on_any_topology(mesh, batch, projection):
    verts, graph = mesh
    faces = graph.faces().clone()
    stage = _stage().train()
    pyramid, probs = _inputs(batch)
    x = _batch(verts, batch).requires_grad_()
    uv = project_view(x, CAMERA, SIZE) if projection == "camera" else None
    new_verts, feats = stage(x, None, pyramid, STRIDES, SIZE, probs, graph, uv=uv)
    assert new_verts.shape == (batch, graph.num_verts, 3) and feats.shape == (batch, graph.num_verts, HIDDEN)
    assert torch.isfinite(new_verts).all() and torch.isfinite(feats).all()
    assert (new_verts - x).abs().amax() > 1e-4  # the stage moved the vertices
    (new_verts.square().sum() + feats.square().mean()).backward()
    missing = [n for n, p in stage.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert torch.isfinite(x.grad).all()
    # only vertices come out: the faces stay the graph's, untouched, and still make a closed manifold mesh
    assert torch.equal(graph.faces(), faces)
    assert check_topology(faces.numpy(), graph.num_verts).closed_manifold


def test_a_second_stage_takes_the_first_ones_features(mesh):
    verts, graph = mesh
    pyramid, probs = _inputs(2)
    first, second = _stage(0), _stage(1, prev_dim=HIDDEN)
    v1, f1 = first(_batch(verts, 2), None, pyramid, STRIDES, SIZE, probs, graph)
    v2, f2 = second(v1, f1, pyramid, STRIDES, SIZE, probs, graph)
    assert v2.shape == v1.shape and f2.shape == f1.shape and torch.isfinite(v2).all()


def test_an_untrained_stage_is_the_identity(mesh):
    verts, graph = mesh
    pyramid, probs = _inputs(2)
    x = _batch(verts, 2)
    with torch.no_grad():
        for uv in (None, project_view(x, CAMERA, SIZE)):
            new_verts, _ = _stage(trained=False)(x, None, pyramid, STRIDES, SIZE, probs, graph, uv=uv)
            assert torch.equal(new_verts, x)


def test_displacements_stay_within_the_bound(mesh):
    """Saturated offsets (tanh near +-1): per coordinate, |step_i| <= m (l_i + mean_j l_j) / 2, computed by loops.

    ``l_i`` is vertex i's mean incident edge length and ``j`` its neighbours: the stage bounds each
    vertex's raw step by ``m l_i``, then averages it with the mean of its neighbours' steps.
    """
    verts, graph = mesh
    stage = _stage()
    with torch.no_grad():
        stage.offset.weight.normal_(0, 5.0)
        stage.offset.bias.copy_(torch.tensor([8.0, -8.0, 8.0]))
    pyramid, probs = _inputs(2)
    x = _batch(verts, 2)
    with torch.no_grad():
        step = stage(x, None, pyramid, STRIDES, SIZE, probs, graph)[0] - x  # (B, V, 3)
    nbrs = _neighbours_naive(graph.edges().tolist(), graph.num_verts)
    for xb, sb in zip(x, step):
        ring = [(xb[n] - xb[i]).norm(dim=-1).mean() for i, n in enumerate(nbrs)]
        bound = torch.stack([stage.max_displacement * (ring[i] + torch.stack([ring[j] for j in n]).mean()) / 2
                             for i, n in enumerate(nbrs)])  # (V,)
        ratio = sb.abs() / bound[:, None]
        assert ratio.max() <= 1 + 1e-5
        assert ratio.max() > 0.9  # saturated: the bound is reached, so the test is not vacuous


def test_given_uv_replaces_the_fitted_projection(mesh):
    verts, graph = mesh
    stage = _stage()
    pyramid, probs = _inputs(2)
    x = _batch(verts, 2)
    with torch.no_grad():
        default, _ = stage(x, None, pyramid, STRIDES, SIZE, probs, graph)
        fitted, _ = stage(x, None, pyramid, STRIDES, SIZE, probs, graph, uv=fit_projection(x, SIZE))
        camera, _ = stage(x, None, pyramid, STRIDES, SIZE, probs, graph, uv=project_view(x, CAMERA, SIZE))
    torch.testing.assert_close(fitted, default, rtol=0, atol=0)
    assert not torch.allclose(camera, default)


def test_a_uv_of_the_wrong_shape_is_refused(mesh):
    verts, graph = mesh
    pyramid, probs = _inputs(2)
    uv = torch.zeros(2, graph.num_verts + 1, 2)
    with pytest.raises(ValueError, match=r"uv must be \(B, V, 2\)"):
        _stage()(_batch(verts, 2), None, pyramid, STRIDES, SIZE, probs, graph, uv=uv)


@pytest.mark.parametrize("seed", range(3))
def test_graph_conv_equals_torch_geometric(seed, mesh):
    """The written-out GraphConv against torch_geometric's GraphConv(aggr="mean"): same keys, outputs, gradients."""
    from torch_geometric.nn import GraphConv as Reference

    from recon_core.network.refiner import GraphConv

    torch.manual_seed(seed)
    reference = Reference(7, 5, aggr="mean").double()
    ours = GraphConv(7, 5).double()
    assert set(ours.state_dict()) == set(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    verts, graph = mesh
    edge_index = graph.batched_edge_index(None, 2)  # the batch as one graph, as the stages use it
    x = torch.randn(2 * len(verts) + 3, 7, dtype=torch.float64, requires_grad=True)  # 3 rows no edge reaches
    x_ref = x.detach().clone().requires_grad_(True)
    out, expected = ours(x, edge_index), reference(x_ref, edge_index)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, dict(reference.named_parameters())[name].grad)
