"""recon_core.network.backbone against torchvision, the layers it re-writes: same names, same numbers."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

tv_models = pytest.importorskip("torchvision.models")
tv_ops = pytest.importorskip("torchvision.ops")

from recon_core.network.backbone import FeaturePyramidNetwork, FrozenBatchNorm2d, resnet  # noqa: E402
from recon_core.network.encoder import ImageEncoder  # noqa: E402

NORMS = {
    "batch": (nn.BatchNorm2d, nn.BatchNorm2d),
    "group": (lambda c: nn.GroupNorm(32, c), lambda c: nn.GroupNorm(32, c)),
    "frozen": (FrozenBatchNorm2d, tv_ops.FrozenBatchNorm2d),
}
"""norm name -> (our norm layer, torchvision's)."""


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters away from 0/1, so that a swapped buffer would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(m, name, None) if not isinstance(m, nn.Conv2d | nn.Linear) else None
                if isinstance(t, torch.Tensor):
                    low, high = (0.5, 1.5) if name in ("weight", "running_var") else (-0.3, 0.3)
                    t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)


def _pair(name: str, norm: str) -> tuple[nn.Module, nn.Module]:
    """(torchvision's ResNet with non-trivial norms, ours with its state dict loaded strictly)."""
    ours_norm, tv_norm = NORMS[norm]
    torch.manual_seed(1)
    theirs = getattr(tv_models, name)(weights=None, norm_layer=tv_norm)
    _randomise_norms(theirs)
    ours = resnet(name, ours_norm)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_resnet_has_torchvisions_names_shapes_and_seeded_initialisation(name, norm):
    """A seeded build draws the same random numbers as torchvision's: equal state dicts, key by key."""
    ours_norm, tv_norm = NORMS[norm]
    torch.manual_seed(7)
    theirs = getattr(tv_models, name)(weights=None, norm_layer=tv_norm).state_dict()
    torch.manual_seed(7)
    ours = resnet(name, ours_norm).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == value.shape, key
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_resnet_output_and_gradients_equal_torchvisions(name, norm):
    theirs, ours = _pair(name, norm)
    torch.manual_seed(2)
    x = torch.rand(2, 3, 64, 48)
    for train in (False, True):  # train: batch statistics, and the running statistics move the same way
        theirs.train(train)
        ours.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = theirs(xa), ours(xb)
        assert ya.shape == yb.shape == (2, 1000)
        assert _close(yb, ya), (train, float((ya - yb).abs().max()))
        ya.square().sum().backward()
        yb.square().sum().backward()
        assert _close(xb.grad, xa.grad)
        grads_a = {k: p.grad for k, p in theirs.named_parameters()}
        for k, p in ours.named_parameters():
            assert _close(p.grad, grads_a[k]), k
        for k, v in theirs.state_dict().items():
            assert _close(ours.state_dict()[k].float(), v.float()), k
        theirs.zero_grad()
        ours.zero_grad()


def test_frozen_batchnorm_matches_torchvision_and_ignores_num_batches_tracked():
    bn = nn.BatchNorm2d(6)
    _randomise_norms(bn)
    state = bn.state_dict()
    assert "num_batches_tracked" in state
    ours, theirs = FrozenBatchNorm2d(6), tv_ops.FrozenBatchNorm2d(6)
    ours.load_state_dict(state, strict=True)
    theirs.load_state_dict(state, strict=True)
    assert ours.eps == theirs.eps == bn.eps
    assert sorted(dict(ours.named_buffers())) == sorted(dict(theirs.named_buffers()))
    assert not list(ours.parameters())
    x = torch.randn(3, 6, 5, 4)
    ours.train()  # frozen: training mode changes nothing
    assert torch.equal(ours(x), theirs(x))
    assert torch.allclose(ours(x), bn.eval()(x), atol=1e-6)


@pytest.mark.parametrize("channels", [(64, 128, 256, 512), (256, 512, 1024, 2048)])
def test_fpn_equals_torchvisions(channels):
    torch.manual_seed(3)
    theirs = tv_ops.FeaturePyramidNetwork(list(channels), 16)
    torch.manual_seed(3)
    ours = FeaturePyramidNetwork(list(channels), 16)
    seeded = ours.state_dict()
    assert list(seeded) == list(theirs.state_dict())
    assert all(torch.equal(seeded[k], v) for k, v in theirs.state_dict().items())
    with torch.no_grad():
        for p in theirs.parameters():  # non-zero biases, so a swapped level would show
            p.normal_()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    sizes = [(17, 13), (9, 7), (5, 4), (3, 2)]  # odd sizes: the nearest upsampling is to the lateral's size
    maps = [torch.randn(2, c, h, w, requires_grad=True) for c, (h, w) in zip(channels, sizes)]
    out_a = list(theirs(OrderedDict((f"c{i}", m) for i, m in enumerate(maps))).values())
    maps_b = [m.detach().clone().requires_grad_() for m in maps]
    out_b = ours(maps_b)
    assert [o.shape for o in out_b] == [(2, 16, h, w) for h, w in sizes]
    for a, b in zip(out_a, out_b):
        assert _close(b, a)
    sum(o.square().sum() for o in out_a).backward()
    sum(o.square().sum() for o in out_b).backward()
    for a, b in zip(maps, maps_b):
        assert _close(b.grad, a.grad)
    with pytest.raises(ValueError, match="takes 4 maps"):
        ours(maps_b[:3])


class _TorchvisionEncoder(nn.Module):
    """The encoder as it was built from torchvision before recon_core.network.backbone (the reference)."""

    def __init__(self, backbone: str, fpn_channels: int, tv_norm):
        super().__init__()
        net = getattr(tv_models, backbone)(weights=None, norm_layer=tv_norm)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.fpn = tv_ops.FeaturePyramidNetwork([_out_channels(s) for s in self.stages], fpn_channels)
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        x = self.stem((images - self.mean) / self.std)
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[f"c{i + 2}"] = x
        return list(self.fpn(feats).values()), x.mean(dim=(2, 3))


def _out_channels(stage: nn.Sequential) -> int:
    block = stage[-1]
    return (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.shape[0]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_image_encoder_equals_the_torchvision_built_encoder(backbone, norm):
    """Model files saved before this module load strictly into either encoder and give the same outputs."""
    torch.manual_seed(4)
    ours = ImageEncoder(backbone, 32, norm=norm)
    _randomise_norms(ours)
    reference = _TorchvisionEncoder(backbone, 32, NORMS[norm][1])
    reference.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(reference.state_dict(), strict=True)
    images = torch.rand(2, 3, 64, 64)
    for train in (False, True):
        ours.train(train)
        reference.train(train)
        (pyr_a, g_a), (pyr_b, g_b) = reference(images), ours(images)
        assert len(pyr_b) == 4 and g_b.shape == (2, 2048 if backbone == "resnet50" else 512)
        for a, b in zip([*pyr_a, g_a], [*pyr_b, g_b]):
            assert a.shape == b.shape
            assert _close(b, a), (train, float((a - b).abs().max()))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_image_encoder_loads_torchvision_backbone_weights(tmp_path, suffix, norm):
    """A torchvision ImageNet-layout file (with its classifier and BatchNorm counters) fills the backbone."""
    torch.manual_seed(5)
    net = tv_models.resnet18(weights=None)
    _randomise_norms(net)
    state = net.state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    encoder = ImageEncoder("resnet18", 16, weights_path=str(path), norm=norm)
    assert torch.equal(encoder.stem[0].weight, state["conv1.weight"])
    assert torch.equal(encoder.stem[1].running_var, state["bn1.running_var"])
    assert torch.equal(encoder.stages[3][1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(encoder.stages[1][0].downsample[1].bias, state["layer2.0.downsample.1.bias"])
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ValueError, match="lack .* tensors"):
        ImageEncoder("resnet18", 16, weights_path=str(partial), norm=norm)


def test_resnet_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="resnet18"):
        resnet("resnet19")
