"""The refiner: stages that move mesh vertices, each vertex attending to the image.

One :class:`RefinerStage` (after Mesh R-CNN's mesh head, with attention in place of
``vert_align``):

1. project the vertices into the image: :func:`recon_core.mesh.camera.fit_projection` by default,
   or a projection the caller knows exactly (for the meshes of ``coarse="occupancy"``
   models, :func:`recon_core.mesh.occupancy.project_view` with the grid's camera);
2. **graph-image cross-attention**: the vertex feature is the query; the keys and
   values are the feature-pyramid cells in a ``window x window`` patch around the
   projection on every level (bilinearly sampled), each with a learned embedding of
   its (level, offset);
3. category-conditional normalisation, then graph convolutions over the mesh edges
   (torch_geometric's ``GraphConv`` with mean aggregation, written out as :class:`GraphConv`),
   vertex positions re-appended after each;
4. a displacement: ``tanh`` of a zero-initialised linear layer (so an untrained stage
   is the identity), bounded by ``max_displacement`` times the vertex's mean incident
   edge length, then averaged with its neighbours' displacements, so a vertex cannot
   jump past the ring around it and the surface does not fold. Per coordinate, vertex ``i``
   moves at most ``max_displacement * (l_i + mean_j l_j) / 2``, ``l`` the mean incident edge
   lengths and ``j`` its neighbours.

A stage moves vertices and never touches the faces: it runs on any mesh topology
(:class:`recon_core.mesh.topology.Topology`): an ico-sphere level (:class:`recon_core.mesh.topology.IcoTopology`)
or the graph of a mesh of any genus and number of components (:class:`recon_core.mesh.topology.MeshGraph`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recon_core.mesh.camera import fit_projection
from recon_core.mesh.topology import Topology, mean_edge_length, neighbour_mean

__all__ = ["CategoryNorm", "GraphConv", "GraphImageAttention", "RefinerStage"]


class GraphConv(nn.Module):
    """torch_geometric's ``GraphConv(in_dim, out_dim, aggr="mean")``, written out with its parameter names.

    ``out_i = lin_rel(mean_{j -> i} x_j) + lin_root(x_i)``, the mean over the edges ``(j, i)``
    of ``edge_index`` (source row 0, target row 1; a vertex no edge reaches gets 0 there).
    Written out so that building or loading a model does not import torch_geometric, which
    imports ``torch._dynamo`` (about a second of every start); tests/test_refiner_topology.py
    checks it against torch_geometric's layer (outputs, gradients, state-dict keys).

    Args:
        in_dim: width of the input features; out_dim: width of the output.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_rel = nn.Linear(in_dim, out_dim)
        self.lin_root = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) features and a (2, E) long edge index -> (N, out_dim)."""
        source, target = edge_index[0], edge_index[1]
        total = x.new_zeros(x.shape).index_add_(0, target, x[source])
        count = torch.bincount(target, minlength=x.shape[0]).clamp_min(1).to(x.dtype)
        return self.lin_rel(total / count[:, None]) + self.lin_root(x)


class CategoryNorm(nn.Module):
    """Layer normalisation whose scale and shift depend on the category.

    ``y = LN(x) * (1 + p @ G) + p @ B`` with ``p`` (B, K) category probabilities (one-hot
    when the category is known) and ``G, B`` (K, C) zero-initialised tables: at
    initialisation it is a plain LayerNorm. With ``conditional=False`` the tables are
    absent and it is a LayerNorm with a learned affine.
    """

    def __init__(self, dim: int, num_categories: int, conditional: bool = True):
        super().__init__()
        self.conditional = conditional
        self.norm = nn.LayerNorm(dim, elementwise_affine=not conditional)
        if conditional:
            self.gamma = nn.Parameter(torch.zeros(num_categories, dim))
            self.beta = nn.Parameter(torch.zeros(num_categories, dim))

    def forward(self, x: torch.Tensor, category_probs: torch.Tensor) -> torch.Tensor:
        """x: (B, V, C); category_probs: (B, K) -> (B, V, C)."""
        y = self.norm(x)
        if not self.conditional:
            return y
        scale = 1.0 + category_probs @ self.gamma  # (B, C)
        shift = category_probs @ self.beta
        return y * scale[:, None] + shift[:, None]


class GraphImageAttention(nn.Module):
    """Each vertex attends to the pyramid cells around its projection.

    Keys and values are linear in the features, and bilinear sampling is linear too, so
    the key/value projections run once on the (small) feature maps, before sampling;
    each cell's learned (level, offset) embedding is added after its projection.

    Args:
        query_dim: width of the query input (vertex features + position).
        feature_dim: channels of the pyramid maps.
        out_dim: output width (multiple of ``heads``).
        levels: number of pyramid levels.
        window: side of the patch sampled around the projection, in cells of each level.
        heads: attention heads.
    """

    def __init__(self, query_dim: int, feature_dim: int, out_dim: int, levels: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window, self.levels, self.out_dim = heads, window, levels, out_dim
        self.to_q = nn.Linear(query_dim, out_dim)
        self.to_kv = nn.Conv2d(feature_dim, 2 * out_dim, kernel_size=1)
        self.cell_embedding = nn.Parameter(torch.zeros(levels * window * window, 2 * out_dim))
        nn.init.normal_(self.cell_embedding, std=0.02)
        self.out = nn.Linear(out_dim, out_dim)
        r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
        grid = torch.stack(torch.meshgrid(r, r, indexing="xy"), dim=-1).reshape(-1, 2)  # (W*W, 2) in cells
        self.register_buffer("offsets", grid, persistent=False)

    def sample_cells(self, maps: list[torch.Tensor], strides: tuple[int, ...], uv: torch.Tensor, image_size: int):
        """Bilinearly sample the patches: uv (B, V, 2) pixels -> one (B, C, V, W*W) tensor per map (B, C, h, w)."""
        cells = []
        for fmap, stride in zip(maps, strides):
            pts = uv[:, :, None, :] + self.offsets[None, None] * stride  # (B, V, W*W, 2) pixels
            grid = pts / image_size * 2.0 - 1.0  # align_corners=False: -1 and 1 are the image's outer edges
            cells.append(F.grid_sample(fmap, grid, align_corners=False))  # (B, C, V, W*W)
        return cells

    def forward(self, query: torch.Tensor, pyramid: list[torch.Tensor], strides, uv: torch.Tensor, image_size: int):
        """query: (B, V, query_dim); uv: (B, V, 2) pixels -> (B, V, out_dim).

        The sampled cells stay in grid_sample's (B, C, V, n) layout, level by level, and the
        cell embeddings enter through their own small products (``q . (k + e) = q . k + q . e``),
        so the large (B, V, levels * n, C) tensor of keys and values is never assembled.
        """
        b, v, _ = query.shape
        h = self.heads
        d = self.out_dim // h
        n = self.offsets.shape[0]
        kv_maps = [self.to_kv(fmap) for fmap in pyramid]
        cells = self.sample_cells(kv_maps, strides, uv, image_size)  # levels x (B, 2*out, V, n)
        emb = self.cell_embedding.reshape(len(cells), n, 2, h, d)
        q = self.to_q(query).reshape(b, v, h, d) / d ** 0.5  # (B, V, h, d)
        values, scores = [], []
        for level, sampled in enumerate(cells):
            k, val = sampled.reshape(b, 2, h, d, v, n).unbind(dim=1)  # (B, h, d, V, n) each
            values.append(val)
            s = torch.einsum("bvhd,bhdvn->bvhn", q, k) + torch.einsum("bvhd,nhd->bvhn", q, emb[level, :, 0].to(q.dtype))
            scores.append(s)
        weights = torch.cat(scores, dim=-1).softmax(dim=-1).split(n, dim=-1)  # levels x (B, V, h, n)
        attended = 0
        for level, (a, val) in enumerate(zip(weights, values)):
            attended = attended + torch.einsum("bvhn,bhdvn->bvhd", a, val) + torch.einsum(
                "bvhn,nhd->bvhd", a, emb[level, :, 1].to(a.dtype))
        return self.out(attended.reshape(b, v, -1))

    def forward_reference(self, query: torch.Tensor, pyramid: list[torch.Tensor], strides, uv: torch.Tensor,
                          image_size: int) -> torch.Tensor:
        """The same attention written plainly: all cells of all levels as one key/value set (tests)."""
        b, v, _ = query.shape
        kv_maps = [self.to_kv(fmap) for fmap in pyramid]
        cells = torch.cat(self.sample_cells(kv_maps, strides, uv, image_size), dim=3).permute(0, 2, 3, 1)
        cells = cells + self.cell_embedding  # (B, V, levels * n, 2 * out)
        h = self.heads
        k, val = cells.reshape(b, v, cells.shape[2], 2, h, -1).unbind(dim=3)  # (B, V, N, h, d) each
        q = self.to_q(query).reshape(b, v, h, -1)
        scores = torch.einsum("bvhd,bvnhd->bvhn", q, k) / q.shape[-1] ** 0.5
        attended = torch.einsum("bvhn,bvnhd->bvhd", scores.softmax(dim=-1), val)
        return self.out(attended.reshape(b, v, -1))


class RefinerStage(nn.Module):
    """One refinement stage (see the module docstring).

    Args:
        feature_dim: pyramid channels.
        hidden_dim: vertex feature width.
        prev_dim: width of the incoming vertex features (0 for the first stage).
        gconv_layers: number of graph convolutions.
        levels, window, heads: cross-attention geometry.
        max_displacement: displacement bound in mean incident edge lengths.
        num_categories: size of the category tables of the conditional normalisation.
        category_norm: use category-conditional normalisation.
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_dim: int,
        prev_dim: int,
        gconv_layers: int,
        levels: int,
        window: int,
        heads: int,
        max_displacement: float,
        num_categories: int,
        category_norm: bool,
    ):
        super().__init__()
        self.max_displacement = max_displacement
        self.attention = GraphImageAttention(prev_dim + 3, feature_dim, hidden_dim, levels, window, heads)
        self.bottleneck = nn.Linear(hidden_dim + prev_dim + 3, hidden_dim)
        self.norm = CategoryNorm(hidden_dim, num_categories, conditional=category_norm)
        self.gconvs = nn.ModuleList([GraphConv(hidden_dim + 3, hidden_dim) for _ in range(gconv_layers)])
        self.offset = nn.Linear(hidden_dim + 3, 3)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(
        self,
        verts: torch.Tensor,
        feats: torch.Tensor | None,
        pyramid: list[torch.Tensor],
        strides: tuple[int, ...],
        image_size: int,
        category_probs: torch.Tensor,
        topology: Topology,
        level: int | None = None,
        uv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the vertices.

        Args:
            verts: (B, V, 3) view-frame positions of the B meshes sharing ``topology``.
            feats: (B, V, prev_dim) features of the previous stage, or None.
            pyramid: pyramid maps (B, C, h_l, w_l).
            strides: pyramid strides in pixels.
            image_size: input side in pixels.
            category_probs: (B, K).
            topology: the meshes' connectivity: an :class:`recon_core.mesh.topology.IcoTopology`
                (with ``level``) or a :class:`recon_core.mesh.topology.MeshGraph`.
            level: the ico level of ``verts``; ignored by a ``MeshGraph``.
            uv: (B, V, 2) pixel coordinates of the vertices in the input image, or None for
                :func:`recon_core.mesh.camera.fit_projection`. Gradients flow through it as given.

        Returns:
            new_verts: (B, V, 3); new_feats: (B, V, hidden_dim).

        Raises:
            ValueError: if ``uv`` is not (B, V, 2).
        """
        b, v, _ = verts.shape
        if uv is None:
            uv = fit_projection(verts, image_size)
        elif uv.shape != (b, v, 2):
            raise ValueError(f"uv must be (B, V, 2) = {(b, v, 2)} pixel coordinates, got {tuple(uv.shape)}")
        query = verts if feats is None else torch.cat([feats, verts], dim=-1)
        attended = self.attention(query, pyramid, strides, uv, image_size)
        x = self.bottleneck(torch.cat([attended, query], dim=-1))
        x = F.relu(self.norm(x, category_probs))
        edge_index = topology.batched_edge_index(level, b)  # (2, 2 E b): the batch as one graph
        flat_verts = verts.reshape(b * v, 3)
        x = x.reshape(b * v, -1)
        for gconv in self.gconvs:
            x = F.relu(gconv(torch.cat([x, flat_verts], dim=-1), edge_index))
        raw = torch.tanh(self.offset(torch.cat([x, flat_verts], dim=-1))).reshape(b, v, 3)
        x = x.reshape(b, v, -1)
        edges = topology.edges(level)
        bound = self.max_displacement * mean_edge_length(verts.detach(), edges)  # (B, V, 1)
        step = raw * bound
        step = 0.5 * (step + neighbour_mean(step, edges))
        return verts + step, x
