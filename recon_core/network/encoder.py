"""Image encoder: a ResNet with a feature pyramid on top.

The layers are :mod:`recon_core.network.backbone`'s twins of torchvision's ResNet and feature
pyramid (same names, so torchvision weights load unchanged; torchvision is not imported).
Backbones start untrained (nothing is downloaded); a local ImageNet weights file, in
torchvision's layout, can be given in the config.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import nn

from recon_core.network.backbone import FeaturePyramidNetwork, FrozenBatchNorm2d, resnet

__all__ = ["ImageEncoder", "IMAGENET_MEAN", "IMAGENET_STD", "cpu_has_native_bf16"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STAGE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
}


CONTIGUOUS_STAGES = (2, 3)
"""The backbone stages that :meth:`ImageEncoder.inference_layout` keeps contiguous. On 2 CPU cores (AVX-512, torch
2.11, one 137 px picture) oneDNN's channels-last kernels are slower for the deep stages' small maps of many channels
(ResNet-50's stages 3 and 4: 11.2 and 15.9 ms channels-last, 9.2 and 10.4 contiguous) and faster for the stem, the
first two stages and the pyramid: the encoder 41.9 -> 35.5 ms (bench/RESULTS.md, sixteenth session)."""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Without it, bfloat16 is emulated and slower than float32: a default-config training step took 22.6 s with bf16
    autocast and 12.1 s without on a 2-core AVX-512 Xeon lacking AVX512-BF16 (``python -m bench.train_throughput``,
    bench/RESULTS.md). True where torch cannot tell (older torch).
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):
        return True
    return any(probe() for probe in probes)


class ImageEncoder(nn.Module):
    """ResNet + FPN.

    Args:
        backbone: "resnet18", "resnet34" or "resnet50".
        fpn_channels: channels of every pyramid level.
        weights_path: optional local backbone weights (.safetensors or torchvision .pth).
        norm: "batch", "group" or "frozen" normalisation in the backbone.

    Forward:
        images: (B, 3, S, S) float RGB in [0, 1].
        pyramid: False skips the pyramid network (None in its place): what the category head needs.
        tap: True also returns the last stage's last block's input (what the category branch reads).

    Returns:
        pyramid: list of 4 maps (B, fpn_channels, S/4, S/4) ... (B, fpn_channels, S/32, S/32),
            strides 4, 8, 16, 32 (rounded up), or None.
        global_feature: (B, C5) average-pooled last backbone stage (C5 = 2048 for resnet50, 512 otherwise).
        tap (with ``tap=True``): (B, C5, S/32, S/32).
    """

    def __init__(self, backbone: str = "resnet50", fpn_channels: int = 128, weights_path: str | None = None,
                 norm: str = "batch"):
        super().__init__()
        norm_layer = {
            "batch": nn.BatchNorm2d,
            "group": lambda channels: nn.GroupNorm(32, channels),
            "frozen": FrozenBatchNorm2d,
        }[norm]
        net = resnet(backbone, norm_layer)
        if weights_path:
            _load_backbone_weights(net, weights_path)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        channels = _STAGE_CHANNELS[backbone]
        self.fpn = FeaturePyramidNetwork(list(channels), fpn_channels)
        self.global_dim = channels[-1]
        self.strides = (4, 8, 16, 32)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # the memory format each stage's input is put in (inference_layout); None: as it comes
        self.stage_formats: list[torch.memory_format] | None = None

    def forward(self, images: torch.Tensor, pyramid: bool = True, tap: bool = False
                ) -> tuple[list[torch.Tensor] | None, torch.Tensor] | tuple[list[torch.Tensor] | None, torch.Tensor,
                                                                                torch.Tensor]:
        """(B, 3, S, S) RGB in [0, 1] -> (the feature pyramid, (B, global_dim) pooled last-stage features).

        The pyramid is four (B, fpn_channels, ceil(S / stride), ceil(S / stride)) maps, one a stride of
        :attr:`strides`; ``pyramid=False`` skips the pyramid network and gives None in its place (what the category
        head needs). ``tap=True`` also returns the input of the last stage's last block, (B, global_dim,
        ceil(S / 32), ceil(S / 32)) in the caller's dtype: what a :class:`recon_core.network.heads.CategoryBranch`
        reads.
        """
        dtype, compute = images.dtype, self.mean.dtype  # compute: the weights' dtype (inference_dtype)
        x = (images.to(compute) - self.mean) / self.std
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            if self.stage_formats is not None:
                x = x.contiguous(memory_format=self.stage_formats[i])
            if i == len(self.stages) - 1:
                for block in stage[:-1]:
                    x = block(x)
                tap_input = x
                x = stage[-1](x)
            else:
                x = stage(x)
            feats.append(x)
        maps = self.fpn(feats) if pyramid else None
        if compute != dtype:  # only after inference_dtype (autocast's activations stay as it makes them)
            maps, x = (None if maps is None else [m.to(dtype) for m in maps]), x.to(dtype)
            tap_input = tap_input.to(dtype) if tap else tap_input
        return (maps, x.mean(dim=(2, 3)), tap_input) if tap else (maps, x.mean(dim=(2, 3)))

    def inference_dtype(self, dtype: torch.dtype) -> None:
        """Hold the weights in ``dtype`` and compute in it; inputs and outputs keep the caller's dtype.

        For CPU inference with ``torch.bfloat16`` where the CPU computes it in hardware (:func:`cpu_has_native_bf16`):
        one 137 px picture through ResNet-50 and the pyramid on 2 AVX512-BF16 cores, 33.5 -> 20.8 ms, outputs within
        0.4 % (relative norm) of float32's (bench/RESULTS.md, twenty-second session). Call after
        :meth:`fold_batchnorm` and :meth:`inference_layout`; not for training.
        """
        if self.training:
            raise RuntimeError("inference_dtype() is for inference: call .eval() first, and do not train afterwards")
        self.to(dtype)

    def inference_layout(self, contiguous_stages: tuple[int, ...] = CONTIGUOUS_STAGES) -> None:
        """Lay the weights and activations out for CPU inference: channels-last (oneDNN's fast layout) but for the
        stages in ``contiguous_stages``, which take their input and weights contiguous. Outputs equal up to float
        rounding; the pyramid's maps come out channels-last either way."""
        self.to(memory_format=torch.channels_last)
        for i in contiguous_stages:
            self.stages[i].to(memory_format=torch.contiguous_format)
        self.stage_formats = [torch.contiguous_format if i in contiguous_stages else torch.channels_last
                              for i in range(len(self.stages))]

    @torch.no_grad()
    def fold_batchnorm(self) -> int:
        """Fold every backbone BatchNorm (or FrozenBatchNorm) into the convolution before it, for inference.

        ``bn(conv(x)) = conv'(x)`` with the statistics folded into ``conv'``'s weight and bias
        (equal up to float rounding); the norm is replaced by ``nn.Identity``. Only valid in
        eval mode, so the encoder must not be trained afterwards.

        Returns:
            The number of norms folded.

        Raises:
            RuntimeError: in training mode.
        """
        if self.training:
            raise RuntimeError("fold_batchnorm() is for inference: call .eval() first, and do not train afterwards")
        folded = 0
        for module in self.modules():
            if isinstance(module, nn.Sequential):  # the stem, and the blocks' downsample branches
                names = list(module._modules)
                pairs = zip(names, names[1:])
            else:  # BasicBlock / Bottleneck: conv1 -> bn1, conv2 -> bn2, conv3 -> bn3
                pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(module, f"bn{i}")]
            for conv_name, bn_name in pairs:
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                    setattr(module, conv_name, _fused_conv(conv, bn))
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
        return folded


def _fused_conv(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """``conv`` itself, the eval-mode ``bn`` after it folded into its weight and bias (in place: torch's
    ``fuse_conv_bn_eval`` deep-copies the convolution first, a tenth of a second of every start for ResNet-50)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                  bn.weight, bn.bias)
    return conv


def _load_backbone_weights(net: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Backbone weights file not found: {path}. Fix model.backbone_weights or leave it empty.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)  # restricted unpickler: tensors only
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing:
        raise ValueError(f"Backbone weights {path} lack {len(missing)} tensors (e.g. {missing[0]}); is it the right ResNet?")
    log.info("loaded backbone weights from %s (%d unexpected keys ignored)", path, len(unexpected))
