"""The reconstruction network: encoder -> coarse shape -> refiner stages.

Mesh batches are ``verts (B, V, 3)`` in the view frame (:mod:`recon_core.mesh.camera`) plus
the shared faces of their ico-sphere level (:mod:`recon_core.mesh.topology`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recon_core.mesh.occupancy import GridCamera, GridSpec, project_view
from recon_core.mesh.topology import IcoTopology, MeshGraph, vertex_count
from recon_core.network.config import VERTEX_SCHEDULES, ModelConfig
from recon_core.network.encoder import ImageEncoder
from recon_core.network.heads import CategoryBranch, OccupancyHeads, OccupancyOutput
from recon_core.network.refiner import RefinerStage
from recon_core.network.retrieval import ShapeBank

__all__ = ["ReconstructionNet", "ReconOutput", "build_model"]


@dataclass
class ReconOutput:
    """What the network returns.

    Attributes:
        coarse_verts: (B, V_0, 3) coarse shape at ico level ``levels[0]``... before the first stage.
        stage_verts: list of (B, V_s, 3), the output of each refiner stage.
        levels: ico level of each stage's output (faces: ``model.topology.faces(level)``).
        coarse_level: ico level of ``coarse_verts``.
        category_logits: (B, K) the category reported: the category branch's logits when the model has one
            (:attr:`recon_core.network.config.ModelConfig.category_branch`), else the category head's.
    """

    coarse_verts: torch.Tensor
    stage_verts: list[torch.Tensor]
    levels: list[int]
    coarse_level: int
    category_logits: torch.Tensor

    @property
    def verts(self) -> torch.Tensor:
        """(B, V, 3) final vertices."""
        return self.stage_verts[-1]

    @property
    def level(self) -> int:
        return self.levels[-1]


class ReconstructionNet(nn.Module):
    """See the module docstring; build it with :func:`build_model`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = ImageEncoder(c.backbone, c.fpn_channels, c.backbone_weights, c.backbone_norm)
        v0 = vertex_count(c.ico_level)
        max_level = c.ico_level + max(sum(s) for s in VERTEX_SCHEDULES.values())
        self.topology = IcoTopology(c.ico_level, max_level)
        self.category_head = nn.Linear(self.encoder.global_dim, c.num_categories)
        self.category_branch = None
        if c.category_branch:  # inference only: training/train_category.py fits it on the trained network
            self.category_branch = CategoryBranch(self.encoder.global_dim, self.encoder.global_dim // 4,
                                                  c.num_categories)
        self.coarse_head = None
        if c.coarse != "occupancy":
            self.coarse_head = nn.Sequential(
                nn.Linear(self.encoder.global_dim, c.coarse_hidden), nn.ReLU(), nn.Linear(c.coarse_hidden, v0 * 3)
            )
            nn.init.zeros_(self.coarse_head[-1].weight)
            nn.init.zeros_(self.coarse_head[-1].bias)
        if c.coarse == "template":
            # A learned template per category, on the ico-sphere's topology (offsets from the sphere).
            self.templates = nn.Parameter(torch.zeros(c.num_categories, v0, 3))
        self.heads = None
        if c.coarse == "occupancy":
            self.heads = OccupancyHeads(c.fpn_channels, self.encoder.global_dim, self.grid_spec)
        self.bank = None
        if c.shape_bank:  # used by recon_core.io.inference after the forward pass; training never touches it
            self.bank = ShapeBank(c.bank_shapes, c.bank_views, c.bank_dim, c.bank_points, c.bank_grid_bytes,
                                  c.bank_resolution)
        self.stages = nn.ModuleList(
            [
                RefinerStage(
                    feature_dim=c.fpn_channels,
                    hidden_dim=c.hidden_dim,
                    prev_dim=0 if i == 0 else c.hidden_dim,
                    gconv_layers=c.gconv_layers,
                    levels=4,
                    window=c.attention_window,
                    heads=c.attention_heads,
                    max_displacement=c.max_displacement,
                    num_categories=c.num_categories,
                    category_norm=c.category_norm,
                )
                for i in range(3)
            ]
        )

    @property
    def grid_spec(self) -> GridSpec:
        """The frustum grid of a ``coarse="occupancy"`` model."""
        return self.config.grid_spec

    def forward(
        self,
        images: torch.Tensor,
        category: torch.Tensor | None = None,
        vertices: int | None = None,
    ) -> ReconOutput | OccupancyOutput:
        """Reconstruct a batch.

        Args:
            images: (B, 3, S, S) float RGB in [0, 1], cropped by :func:`recon_core.network.crop.prepare_image`.
            category: (B,) long category indices overriding the predicted category, or None.
            vertices: output vertex count (a key of ``VERTEX_SCHEDULES``); the config's default if None.

        Returns:
            :class:`ReconOutput`; for ``coarse="occupancy"`` the dense heads' :class:`OccupancyOutput`
            (the mesh is made from it by :mod:`recon_core.io.inference`).
        """
        c = self.config
        _check_images(images)
        if self.heads is not None:
            pyramid, global_feature = self.encoder(images)  # occupancy models have no category branch (config)
            out = self.heads(pyramid[0], global_feature, self.category_head(global_feature))
            out.pyramid = pyramid
            return out
        schedule = VERTEX_SCHEDULES.get(vertices or c.vertices)
        if schedule is None:
            raise ValueError(f"vertices must be one of {sorted(VERTEX_SCHEDULES)}, got {vertices}")
        b, size = images.shape[0], images.shape[-1]
        pyramid, global_feature, tap = self.encoder(images, tap=True)
        logits = self.category_head(global_feature)  # the refiner's conditioning, as it was trained
        if category is None:
            probs = logits.softmax(dim=-1)
        else:
            probs = F.one_hot(category.long(), c.num_categories).to(images.dtype)
        probs = probs.to(global_feature.dtype)

        level = c.ico_level
        sphere = self.topology.sphere(level) * c.sphere_radius
        verts = sphere[None] + self.coarse_head(global_feature).reshape(b, -1, 3)
        if c.coarse == "template":
            verts = verts + torch.einsum("bk,kvc->bvc", probs, self.templates)
        coarse = verts
        feats = None
        stage_verts, levels = [], []
        for stage, subdivisions in zip(self.stages, schedule):
            for _ in range(subdivisions):
                if feats is None:
                    (verts,) = self.topology.subdivide(level, verts)
                else:
                    verts, feats = self.topology.subdivide(level, verts, feats)
                level += 1
            verts, feats = stage(verts, feats, pyramid, self.encoder.strides, size, probs, self.topology, level)
            stage_verts.append(verts)
            levels.append(level)
        return ReconOutput(coarse, stage_verts, levels, c.ico_level, self._reported(logits, tap))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) cropped RGB in [0, 1] -> (B, K) category logits: the backbone and the category head (or
        branch) only (the same logits as :meth:`forward`'s ``category_logits``, without the pyramid, the mesh or the
        dense heads)."""
        _check_images(images)
        _, global_feature, tap = self.encoder(images, pyramid=False, tap=True)
        return self._reported(self.category_head(global_feature), tap)

    def _reported(self, head_logits: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
        """(B, K) the category reported: ``head_logits`` or, with a category branch, its logits from ``tap``
        (:class:`recon_core.network.encoder.ImageEncoder`'s ``tap``), in ``head_logits``' dtype."""
        if self.category_branch is None:
            return head_logits
        return self.category_branch(tap).to(head_logits.dtype)

    def refine_mesh(
        self,
        pyramid: list[torch.Tensor],
        verts: torch.Tensor,
        graph: MeshGraph,
        camera: GridCamera,
        category_probs: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The refiner stages on one picture's occupancy mesh (``coarse="occupancy"``, any topology).

        Each stage samples the picture where the vertices project through the grid's camera
        (:func:`recon_core.mesh.occupancy.project_view`), so the features under a vertex are those of
        the pixels it covers, and moves them (:class:`recon_core.network.refiner.RefinerStage`); the faces stay.

        Args:
            pyramid: the picture's feature maps, (1, C, h_l, w_l) each (:attr:`OccupancyOutput.pyramid`).
            verts: (V, 3) float view-frame vertices of the mesh (:func:`recon_core.mesh.occupancy.mesh_occupancy`).
            graph: the mesh's :class:`recon_core.mesh.topology.MeshGraph`.
            camera: the :class:`recon_core.mesh.occupancy.GridCamera` the mesh was made with.
            category_probs: (1, K) category probabilities (one-hot when the category is given).

        Returns:
            The (V, 3) vertices after each stage.
        """
        size = self.config.image_size
        x, feats = verts[None], None
        out = []
        for stage in self.stages:
            uv = project_view(x, camera, size)
            x, feats = stage(x, feats, pyramid, self.encoder.strides, size, category_probs, graph, uv=uv)
            out.append(x[0])
        return out


def _check_images(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a (B, 3, S, S) batch."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (B, 3, S, S), got {tuple(images.shape)}")


def build_model(config: ModelConfig) -> ReconstructionNet:
    """The one place where a config becomes layers."""
    return ReconstructionNet(config)
