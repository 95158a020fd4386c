import pytest
import torch
from pytorch3d.utils import ico_sphere

from recon_core.mesh.topology import IcoTopology, level_for_vertices, neighbour_mean, vertex_count
from recon_core.network.backbone import FrozenBatchNorm2d
from recon_core.network.config import ModelConfig
from recon_core.network.model import build_model


def _perturb_zero_layers(model, scale=0.05):
    """Zero-initialised layers block gradients at init; give them small values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, scale)


@pytest.mark.parametrize("vertices", [642, 2562])
def test_output_shapes(tiny_config, vertices):
    model = build_model(tiny_config).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images, vertices=vertices)
    assert out.coarse_verts.shape == (2, 162, 3)
    assert out.verts.shape == (2, vertices, 3)
    assert out.level == level_for_vertices(vertices)
    assert model.topology.faces(out.level).shape == (2 * vertices - 4, 3)
    assert out.category_logits.shape == (2, 13)
    assert [v.shape[1] for v in out.stage_verts] == [vertex_count(l) for l in out.levels]


@pytest.mark.parametrize("coarse", ["ico_sphere", "occupancy"])
def test_classify_gives_the_forward_passs_category_logits(tiny_config, coarse):
    import dataclasses

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config, coarse=coarse)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pyramid, pooled = model.encoder(images, pyramid=False)
        assert pyramid is None
        torch.testing.assert_close(pooled, model.encoder(images)[1])
        torch.testing.assert_close(model.classify(images), model(images).category_logits)
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        model.classify(torch.rand(1, 3, 8, 9))


def test_bad_input_shape_names_the_expected_shape(tiny_config):
    model = build_model(tiny_config)
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="vertices must be one of"):
        model(torch.rand(1, 3, 64, 64), vertices=1000)


def test_untrained_stage_is_identity(tiny_config):
    model = build_model(tiny_config).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), vertices=642)
        # coarse head output layer is zero-initialised too: the coarse shape is the sphere
        assert torch.allclose(out.coarse_verts[0], model.topology.sphere(2) * tiny_config.sphere_radius)
        assert torch.allclose(out.stage_verts[0], out.coarse_verts)
        (sub,) = model.topology.subdivide(2, out.stage_verts[0])
        assert torch.allclose(out.stage_verts[1], sub, atol=1e-6)


def test_gradients_reach_every_parameter(tiny_config):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**tiny_config.to_dict(), "coarse": "template"})).train()
    _perturb_zero_layers(model)
    images = torch.rand(2, 3, 64, 64)
    out = model(images, vertices=642)
    loss = sum(v.pow(2).mean() for v in out.stage_verts) + out.category_logits.logsumexp(-1).mean()
    # soft category probabilities feed the conditional norm and templates when no category is given
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_given_category_overrides_prediction(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    _perturb_zero_layers(model, 0.5)
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model(img, category=torch.tensor([0]), vertices=642).verts
        b = model(img, category=torch.tensor([5]), vertices=642).verts
    assert not torch.allclose(a, b)


def test_topology_matches_pytorch3d_ico_spheres():
    topo = IcoTopology(2, 5)
    for level in range(2, 6):  # built level by level, each is exactly pytorch3d's ico_sphere(level)
        mesh = ico_sphere(level)
        assert torch.equal(topo.sphere(level), mesh.verts_packed())
        assert torch.equal(topo.faces(level), mesh.faces_packed())
        assert torch.equal(topo.edges(level), mesh.edges_packed())
    for level in (2, 3, 4):  # subdivide() appends the edge midpoints in the order pytorch3d's subdivision numbers them
        (sub,) = topo.subdivide(level, topo.sphere(level)[None])
        sub = sub / sub.norm(dim=-1, keepdim=True)
        assert torch.allclose(sub[0], ico_sphere(level + 1).verts_packed(), atol=1e-6)
        assert torch.equal(topo.faces(level + 1), ico_sphere(level + 1).faces_packed())
    edges = topo.edges(2)
    assert edges.shape == (480, 2) and (edges[:, 0] < edges[:, 1]).all()
    ei = topo.batched_edge_index(2, 3)
    assert ei.shape == (2, 3 * 960) and int(ei.max()) == 3 * 162 - 1


def test_neighbour_mean_against_loops():
    topo = IcoTopology(2, 2)
    x = torch.randn(1, 162, 2)
    edges = topo.edges(2).tolist()
    nbrs = {i: set() for i in range(162)}
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    expected = torch.stack([x[0, sorted(nbrs[i])].mean(0) for i in range(162)])
    assert torch.allclose(neighbour_mean(x, topo.edges(2))[0], expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_fold_batchnorm_keeps_the_encoder_output(tiny_config, norm):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**tiny_config.to_dict(), "backbone_norm": norm}))
    with torch.no_grad():  # non-trivial statistics, so folding has something to do
        for m in model.encoder.modules():
            if hasattr(m, "running_var"):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    encoder = model.encoder.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pyramid, pooled = encoder(images)
        assert encoder.fold_batchnorm() == 20  # resnet18: stem + 8 blocks x 2 + 3 downsample branches
        pyramid_folded, pooled_folded = encoder(images)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for m in encoder.modules())
    for a, b in zip([*pyramid, pooled], [*pyramid_folded, pooled_folded]):
        assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max()), rtol=1e-5)


def test_fold_batchnorm_refuses_training_mode(tiny_config):
    with pytest.raises(RuntimeError, match="inference"):
        build_model(tiny_config).train().encoder.fold_batchnorm()


def test_reconstructor_runs_the_folded_channels_last_encoder(tiny_model_path, monkeypatch):
    """Folded, laid out for inference (channels-last but for the deep stages): the plain encoder's outputs (on a
    CPU without native bfloat16, where the encoder stays float32)."""
    from recon_core.io import inference
    from recon_core.io.inference import Reconstructor
    from recon_core.io.weights import load_model

    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    rec = Reconstructor.from_file(tiny_model_path)
    assert rec.model.encoder.stem[0].weight.dtype == torch.float32
    plain, _ = load_model(tiny_model_path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in rec.model.encoder.modules())
    encoder = rec.model.encoder
    assert encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert encoder.stages[1][0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for i in (2, 3):  # CONTIGUOUS_STAGES: weights contiguous, not channels-last
        weight = encoder.stages[i][0].conv1.weight
        assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        (p_fast, g_fast), (p_ref, g_ref) = rec.model.encoder(images), plain.encoder(images)
    for a, b in zip([*p_fast, g_fast], [*p_ref, g_ref]):
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-5)


def test_reconstructor_runs_the_encoder_in_bfloat16_where_the_cpu_computes_it(tiny_model_path, monkeypatch):
    """On a CPU with native bfloat16 the encoder's weights are bfloat16; it takes and gives float32, within
    bfloat16's rounding of the float32 encoder's outputs; the rest of the network stays float32."""
    from recon_core.io import inference
    from recon_core.io.inference import Reconstructor
    from recon_core.io.weights import load_model

    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    rec = Reconstructor.from_file(tiny_model_path)
    plain, _ = load_model(tiny_model_path)
    encoder = rec.model.encoder
    assert all(p.dtype == torch.bfloat16 for p in encoder.parameters())
    assert all(p.dtype == torch.float32 for p in rec.model.stages.parameters())
    torch.manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        (p_fast, g_fast), (p_ref, g_ref) = encoder(images), plain.encoder(images)
        _, g_only = encoder(images, pyramid=False)
        out = rec.model(images)
    assert torch.equal(g_only, g_fast)
    for a, b in zip([*p_fast, g_fast], [*p_ref, g_ref]):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert float((a - b).norm() / b.norm()) < 0.02  # bfloat16 keeps 8 bits of mantissa: ~0.4 % a value
        assert not torch.equal(a, b)  # it did compute in bfloat16
    assert all(v.dtype == torch.float32 for v in out.verts) and out.category_logits.dtype == torch.float32


def test_a_float32_encoder_under_autocast_gives_autocasts_activations(tiny_config):
    """Training's bfloat16 autocast: the float32 encoder's outputs stay as autocast makes them (not cast back)."""
    encoder = build_model(tiny_config).encoder.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid, pooled = encoder(torch.rand(1, 3, 64, 64))
    assert all(m.dtype == torch.bfloat16 for m in pyramid) and pooled.dtype == torch.bfloat16


def test_inference_dtype_refuses_training_mode(tiny_config):
    with pytest.raises(RuntimeError, match="inference"):
        build_model(tiny_config).train().encoder.inference_dtype(torch.bfloat16)


@pytest.mark.parametrize("window,heads", [(1, 1), (2, 4), (3, 2)])
def test_attention_equals_the_plain_all_cells_attention(window, heads):
    """The level-by-level attention (no assembled key tensor) = softmax over all cells at once."""
    from recon_core.network.refiner import GraphImageAttention

    torch.manual_seed(window * 10 + heads)
    att = GraphImageAttention(query_dim=11, feature_dim=8, out_dim=8, levels=3, window=window, heads=heads)
    torch.nn.init.normal_(att.cell_embedding, std=1.0)  # large, so a misplaced embedding would show
    size, strides = 32, (4, 8, 16)
    pyramid = [torch.randn(2, 8, size // s, size // s) for s in strides]
    query = torch.randn(2, 50, 11, requires_grad=True)
    uv = torch.rand(2, 50, 2) * size
    fast = att(query, pyramid, strides, uv, size)
    slow = att.forward_reference(query, pyramid, strides, uv, size)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), query)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), query)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-6)


def test_ico_sphere_is_pytorch3d_s():
    """The torch-only construction: the same vertices, faces and edges as pytorch3d's, level by level."""
    from pytorch3d.utils import ico_sphere as pytorch3d_ico_sphere

    from recon_core.mesh.topology import ico_sphere

    topo = IcoTopology(1, 5)
    for level in range(6):
        reference = pytorch3d_ico_sphere(level)
        verts, faces = ico_sphere(level)
        assert torch.equal(faces, reference.faces_packed())
        torch.testing.assert_close(verts, reference.verts_packed(), atol=0, rtol=0)
        if level >= 1:
            assert torch.equal(topo.faces(level), reference.faces_packed())
            assert torch.equal(topo.edges(level), reference.edges_packed())
            assert torch.equal(topo.sphere(level), reference.verts_packed())
