"""Heads beyond the mesh: the category branch, and the dense heads of ``coarse="occupancy"`` models (2.5D maps,
the frustum occupancy and the picture's camera).

:class:`CategoryBranch`: a copy of the backbone's last residual block and a linear head of its own, fine-tuned for the
category on pictures in every style (training/train_category.py), reading what the encoder's last block reads; the
shared block and head stay as the mesh was trained with them.

After MarrNet's 2.5D sketches and Mesh R-CNN's voxel branch: from the feature pyramid's
finest level (stride 4) a small convolutional trunk predicts the object's mask, depth and
surface normals at stride 4 (a dense, cheap signal that teaches the encoder geometry), and
from the same trunk, resampled to the grid's ``N x N`` pixels, the occupancy of ``Z`` depth
bins per pixel (:mod:`recon_core.mesh.occupancy`). The global feature predicts the grid's camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recon_core.mesh.occupancy import GridSpec

__all__ = ["CategoryBranch", "OccupancyHeads", "OccupancyOutput", "MAP_CHANNELS"]

MAP_CHANNELS = 5
"""Channels of the 2.5D maps: mask logit, depth, normal (x, y, z)."""


class CategoryBranch(nn.Module):
    """The category from the input of the backbone's last block: that block again (batch norm folded into the
    convolutions' biases) with weights of its own, average pooling and a linear layer.

    Args:
        channels: C, the block's input and output channels (2048 for ResNet-50).
        width: the block's inner channels (512 for ResNet-50).
        num_categories: K.

    Forward:
        x: (B, C, h, w), :class:`recon_core.network.encoder.ImageEncoder`'s ``tap`` -> (B, K) logits.
    """

    def __init__(self, channels: int, width: int, num_categories: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, channels, 1)
        self.head = nn.Linear(channels, num_categories)

    @classmethod
    def from_block(cls, block: nn.Module, head: nn.Linear) -> "CategoryBranch":
        """A branch that gives ``head``'s logits from the block's input: a float32 copy of ``block`` (a ResNet
        bottleneck whose batch norms are folded into its convolutions,
        :meth:`recon_core.network.encoder.ImageEncoder.fold_batchnorm`) and of ``head``."""
        if not all(isinstance(getattr(block, f"bn{i}"), nn.Identity) for i in (1, 2, 3)):
            raise ValueError("the block's batch norms must be folded first (ImageEncoder.fold_batchnorm)")
        branch = cls(block.conv1.in_channels, block.conv1.out_channels, head.out_features)
        convs = {k: v.float() for k, v in block.state_dict().items() if k.startswith("conv")}
        branch.load_state_dict({**convs, **{f"head.{k}": v.float() for k, v in head.state_dict().items()}})
        return branch

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C): the block, then average pooling (what the head reads)."""
        x = x.to(self.conv1.weight.dtype)
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        return F.relu(self.conv3(y) + x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


@dataclass
class OccupancyOutput:
    """What a ``coarse="occupancy"`` network returns.

    Attributes:
        occupancy_logits: (B, Z, N, N) logits of the frustum cells (layout of :mod:`recon_core.mesh.occupancy`).
        mask_logits: (B, 1, h, w) object mask logits at stride 4.
        depth: (B, 1, h, w) depth offset from the object's centre, crop units (``z_c``).
        normals: (B, 3, h, w) unnormalised camera-frame surface normals.
        camera: (B, 3) ``(log s, p_cx - 0.5, p_cy - 0.5)`` of :class:`recon_core.mesh.occupancy.GridCamera`.
        category_logits: (B, K).
        pyramid: the encoder's feature maps (B, C, h_l, w_l), which the refiner stages sample
            (:meth:`recon_core.network.model.ReconstructionNet.refine_mesh`); None when not kept.
    """

    occupancy_logits: torch.Tensor
    mask_logits: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    camera: torch.Tensor
    category_logits: torch.Tensor
    pyramid: list[torch.Tensor] | None = None


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class OccupancyHeads(nn.Module):
    """See the module docstring.

    Args:
        feature_dim: channels of the pyramid's finest map.
        global_dim: width of the encoder's global feature.
        spec: the occupancy grid's size.
        hidden: channels of the trunk.
    """

    def __init__(self, feature_dim: int, global_dim: int, spec: GridSpec, hidden: int = 128):
        super().__init__()
        self.spec = spec
        self.context = nn.Linear(global_dim, hidden)
        self.trunk = nn.Sequential(_conv(feature_dim, hidden), _conv(hidden, hidden))
        self.maps = nn.Conv2d(hidden, MAP_CHANNELS, 1)
        self.occupancy = nn.Sequential(_conv(hidden, hidden), _conv(hidden, hidden), nn.Conv2d(hidden, spec.depth_bins, 1))
        self.camera = nn.Sequential(nn.Linear(global_dim, 256), nn.ReLU(inplace=True), nn.Linear(256, 3))
        nn.init.zeros_(self.camera[-1].weight)
        nn.init.zeros_(self.camera[-1].bias)

    def forward(self, finest: torch.Tensor, global_feature: torch.Tensor, category_logits: torch.Tensor
                ) -> OccupancyOutput:
        """finest: (B, C, h, w) stride-4 map; global_feature: (B, G); category_logits: (B, K) (passed through)."""
        x = self.trunk(finest) + self.context(global_feature)[:, :, None, None]
        maps = self.maps(x)
        n = self.spec.resolution
        grid = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False)
        return OccupancyOutput(
            occupancy_logits=self.occupancy(grid),
            mask_logits=maps[:, :1],
            depth=maps[:, 1:2],
            normals=maps[:, 2:5],
            camera=self.camera(global_feature),
            category_logits=category_logits,
        )
