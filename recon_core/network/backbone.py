"""The encoder's layers: ResNet-18/34/50 and a feature pyramid, as torchvision builds them.

He et al., "Deep Residual Learning for Image Recognition" (2016), in torchvision's "v1.5"
form (a Bottleneck strides in its 3x3 convolution); Lin et al., "Feature Pyramid Networks
for Object Detection" (2017), without extra levels. Written here so that inference never
imports torchvision (whose ``torchvision.ops`` pulls in ``torch._dynamo``, about a second
of start-up). Each class is a twin of its torchvision namesake: the same parameter and
buffer names and shapes (a torchvision state dict loads with ``strict=True`` and the
other way round), the same initialisation, drawing the same random numbers in the same
order (a seeded build equals torchvision's), and the same arithmetic. The tests compare
the twins on values and gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "FeaturePyramidNetwork", "FrozenBatchNorm2d", "ResNet", "resnet"]

NormLayer = Callable[[int], nn.Module]
"""Builds the normalisation of a layer from its channel count: ``nn.BatchNorm2d``, ``FrozenBatchNorm2d``, ..."""


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all buffers (``torchvision.ops.FrozenBatchNorm2d``).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel, in
    training mode too. A BatchNorm2d state dict loads into it (its ``num_batches_tracked``
    is dropped).

    Args:
        num_features: channels C.
        eps: added to the variance.

    Forward:
        x: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        return x * scale + (b - rm * scale)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34).

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first convolution (and of ``downsample``).
        downsample: the shortcut's projection when the shape changes, else None (identity).
        norm_layer: normalisation after each convolution.

    Forward:
        x: (B, inplanes, H, W) -> (B, planes, H / stride, W / stride) (rounded up).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, and a shortcut (ResNet-50).

    Args:
        inplanes: input channels.
        planes: channels of the 3x3 convolution; the output has ``4 * planes``.
        stride: stride of the 3x3 convolution (and of ``downsample``).
        downsample: the shortcut's projection when the shape changes, else None (identity).
        norm_layer: normalisation after each convolution.

    Forward:
        x: (B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride) (rounded up).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


_ARCHITECTURES: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """A ResNet image classifier (``torchvision.models.ResNet`` with groups=1, no dilation).

    Stem ``conv1 -> bn1 -> relu -> maxpool`` (stride 4), then ``layer1`` ... ``layer4``
    (strides 4, 8, 16, 32 from the input), average pooling and ``fc``. Convolutions start
    from Kaiming-normal (fan-out) weights, norms from weight 1 and bias 0.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks in each of the four stages.
        num_classes: outputs of ``fc``.
        norm_layer: normalisation after each convolution.

    Forward:
        x: (B, 3, H, W) float -> (B, num_classes) logits.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self._norm_layer = norm_layer
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                self._norm_layer(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(name: str, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNet:
    """An untrained ResNet by name, as ``torchvision.models.<name>(weights=None, norm_layer=norm_layer)``.

    Args:
        name: "resnet18", "resnet34" or "resnet50".
        norm_layer: normalisation after each convolution.

    Raises:
        ValueError: for another name.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"Unknown backbone {name!r}; use one of {', '.join(sorted(_ARCHITECTURES))}.")
    block, layers = _ARCHITECTURES[name]
    return ResNet(block, layers, norm_layer=norm_layer)


class FeaturePyramidNetwork(nn.Module):
    """Top-down feature pyramid (``torchvision.ops.FeaturePyramidNetwork`` without extra blocks or norms).

    Level ``i`` is ``layer_blocks[i](inner_blocks[i](x_i) + nearest_upsample(inner_{i+1}))``,
    the top-down sum starting from the coarsest map: 1x1 lateral convolutions, 3x3 output
    convolutions, all with bias, Kaiming-uniform (a=1) weights and zero biases.

    Args:
        in_channels_list: channels of each input map, finest first.
        out_channels: channels of every output map.

    Forward:
        maps: list of (B, in_channels_list[i], H_i, W_i), finest first.

    Returns:
        list of (B, out_channels, H_i, W_i), same order and sizes.
    """

    def __init__(self, in_channels_list: list[int], out_channels: int):
        super().__init__()
        self.inner_blocks = nn.ModuleList()
        self.layer_blocks = nn.ModuleList()
        for in_channels in in_channels_list:
            # One-conv Sequentials: torchvision's Conv2dNormActivation names ("inner_blocks.0.0.weight").
            self.inner_blocks.append(nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1)))
            self.layer_blocks.append(nn.Sequential(nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(maps) != len(self.inner_blocks):
            raise ValueError(f"FeaturePyramidNetwork takes {len(self.inner_blocks)} maps, got {len(maps)}")
        last_inner = self.inner_blocks[-1](maps[-1])
        results = [self.layer_blocks[-1](last_inner)]
        for idx in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[idx](maps[idx])
            last_inner = lateral + F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[idx](last_inner))
        return results
