"""recon_core.mesh.volume: marching tetrahedra against a per-tetrahedron loop, closed manifold output, grids."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from recon_core.mesh.printable import check_printable, signed_volume
from recon_core.mesh.volume import (
    KUHN_TETRAHEDRA,
    cell_indices,
    grid_surface,
    marching_tetrahedra,
    occupancy_grid,
    pack_grid,
    unpack_grid,
)


def _reference_triangles(values, level, origin, spacing, clamp):
    """The slow, obvious version: visit every tetrahedron of every cube, emit its triangles by position."""
    nx, ny, nz = values.shape
    out = []
    for i in range(nx - 1):
        for j in range(ny - 1):
            for k in range(nz - 1):
                corners = [np.array([i + (n >> 2 & 1), j + (n >> 1 & 1), k + (n & 1)]) for n in range(8)]
                for tet in KUHN_TETRAHEDRA:
                    p = [corners[n] for n in tet]
                    v = [values[tuple(q)] for q in p]
                    inside = [x > level for x in v]
                    if all(inside) or not any(inside):
                        continue

                    def cut(a, b):
                        t = min(max((level - v[a]) / (v[b] - v[a]), clamp), 1 - clamp)
                        return origin + spacing * (p[a] + t * (p[b] - p[a]))

                    ins = [n for n in range(4) if inside[n]]
                    outs = [n for n in range(4) if not inside[n]]
                    if len(ins) == 2:
                        (a, b), (c, d) = ins, outs
                        quad = [cut(a, c), cut(a, d), cut(b, d), cut(b, c)]
                        tris = [[quad[0], quad[1], quad[2]], [quad[0], quad[2], quad[3]]]
                    else:
                        odd = ins[0] if len(ins) == 1 else outs[0]
                        tris = [[cut(odd, n) for n in range(4) if n != odd]]
                    c_in = np.mean([p[n] for n in ins], axis=0)
                    c_out = np.mean([p[n] for n in outs], axis=0)
                    for tri in tris:
                        normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
                        if normal @ (c_out - c_in) < 0:
                            tri = tri[::-1]
                        out.append(tri)
    return out


def _canonical(triangles):
    """Triangles as sorted tuples of rotation-normalised, rounded vertex positions (winding kept)."""
    keys = []
    for tri in triangles:
        pts = [tuple(np.round(np.asarray(q), 9)) for q in tri]
        start = pts.index(min(pts))
        keys.append(tuple(pts[start:] + pts[:start]))
    return sorted(keys)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_marching_tetrahedra_matches_per_tetrahedron_loop(seed):
    rng = np.random.default_rng(seed)
    values = np.pad(rng.random((5, 4, 6)), 1)
    origin, spacing = np.array([0.3, -1.0, 2.0]), 0.25
    verts, faces = marching_tetrahedra(values, 0.5, origin, spacing)
    expected = _reference_triangles(values, 0.5, origin, spacing, 0.02)
    assert len(faces) == len(expected) > 0
    assert _canonical(verts[faces]) == _canonical(expected)


@pytest.mark.parametrize("seed", [0, 3])
def test_random_blobs_give_printable_meshes(seed):
    """Several components, holes, cells touching only along an edge or at a corner: still closed and manifold."""
    rng = np.random.default_rng(seed)
    grid = rng.random((12, 12, 12)) > 0.6
    verts, faces = grid_surface(grid, bound=1.0)
    report = check_printable(verts, faces)
    assert report.ok, report


def test_sphere_volume_and_orientation():
    n = 40
    x = (np.arange(n) + 0.5) / n * 2 - 1
    grid = (x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) < 0.7**2
    verts, faces = grid_surface(grid, bound=1.0, smoothing=1.0)
    assert check_printable(verts, faces).ok
    assert signed_volume(verts, faces) == pytest.approx(4 / 3 * np.pi * 0.7**3, rel=0.05)
    assert np.abs(np.linalg.norm(verts, axis=1) - 0.7).max() < 2 * (2 / n)


def test_empty_and_full_grids():
    assert grid_surface(np.zeros((4, 4, 4), bool))[1].shape == (0, 3)
    verts, faces = grid_surface(np.ones((4, 4, 4), bool), bound=1.0)  # padded, so it closes
    assert check_printable(verts, faces).ok
    with pytest.raises(ValueError, match="grid"):
        marching_tetrahedra(np.zeros((1, 3, 3)), 0.5, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="clamp"):
        marching_tetrahedra(np.zeros((3, 3, 3)), 0.5, np.zeros(3), 1.0, clamp=0.0)
    with pytest.raises(ValueError, match="spacing"):
        marching_tetrahedra(np.zeros((3, 3, 3)), 0.5, np.zeros(3), -1.0)
    with pytest.raises(ValueError, match="finite"):
        marching_tetrahedra(np.full((3, 3, 3), np.nan), 0.5, np.zeros(3), 1.0)


def test_occupancy_grid_fills_closed_shells_and_keeps_open_ones_as_shells():
    import trimesh

    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    grid = occupancy_grid(box.vertices, box.faces, resolution=22)
    assert grid[11, 11, 11] and not grid[0, 0, 0]  # a closed shell is filled
    # without its top the outside reaches the inside: the solid is a shell one or two cells thick
    top = np.flatnonzero(box.triangles_center[:, 1] > 0.29)
    open_box = np.delete(np.asarray(box.faces), top, axis=0)
    shell = occupancy_grid(box.vertices, open_box, resolution=22)
    assert not shell[11, 11, 11] and shell[11, 11, 4:6].any()  # wall at z = -0.3: cell 5
    assert check_printable(*grid_surface(shell)).ok
    # a single-sided square sheet becomes a slab one or two cells thick, and its surface is printable
    sheet_v = np.array([[-0.4, 0.0, -0.4], [0.4, 0.0, -0.4], [0.4, 0.0, 0.4], [-0.4, 0.0, 0.4]])
    sheet_f = np.array([[0, 2, 1], [0, 3, 2]])
    slab = occupancy_grid(sheet_v, sheet_f, resolution=22)
    assert 1 <= slab.any(axis=(0, 2)).sum() <= 2
    assert check_printable(*grid_surface(slab)).ok


def test_pack_roundtrip_and_errors():
    grid = ndimage.binary_dilation(np.random.default_rng(0).random((9, 9, 9)) > 0.9)
    blob = pack_grid(grid)
    assert np.array_equal(unpack_grid(blob, 9), grid)
    with pytest.raises(ValueError, match="expected"):
        unpack_grid(blob, 10)
    with pytest.raises(ValueError, match="corrupt"):
        unpack_grid(b"not zlib", 9)


def test_blur_and_lower_level_keep_a_one_cell_slab():
    slab = np.zeros((16, 16, 16), bool)
    slab[3:13, 8, 3:13] = True
    assert grid_surface(slab, smoothing=1.0, level=0.5)[1].shape == (0, 3)  # the blur drops it below 0.5
    verts, faces = grid_surface(slab, bound=1.0, smoothing=1.0, level=0.25)
    assert check_printable(verts, faces).ok
    with pytest.raises(ValueError, match="level"):
        grid_surface(slab, level=1.0)


@pytest.mark.parametrize("smoothing, level", [(0.6, 0.15), (1.0, 0.25), (1.5, 0.4), (2.0, 0.3)])
def test_blurred_solids_touching_the_grid_edge_still_close(smoothing, level):
    full = np.ones((8, 8, 8), bool)
    edge_slab = np.zeros((8, 8, 8), bool)
    edge_slab[:, 0:3, :] = True  # a three-cell slab on the grid's border (thick enough to survive every blur here)
    for grid in (full, edge_slab):
        verts, faces = grid_surface(grid, bound=1.0, smoothing=smoothing, level=level)
        assert len(faces) and check_printable(verts, faces).ok


def test_a_mesh_beyond_the_grid_is_clipped_to_its_border_cells():
    """A box from the cube's centre out past its +x face: the cells it covers inside the cube are solid, and the part
    outside lands in the border cells of that face (x index R - 1) rather than being dropped."""
    import trimesh

    from recon_core.mesh.volume import occupancy_grid

    box = trimesh.creation.box([2.0, 0.4, 0.4])
    box.apply_translation([1.0, 0.0, 0.0])  # x from 0 to 2: past the cube's bound 0.5
    solid = occupancy_grid(box.vertices, box.faces, resolution=16, bound=0.5, samples=20_000, fill=True)
    # the cube's cells: x in [-0.5, 0.5] by 1/16; y and z in [-0.2, 0.2] are cells 4..11
    assert solid[8:, 5:11, 5:11].all() and not solid[:7].any() and not solid[:, :3].any()
    far = box.copy()
    far.apply_translation([1.0, 0.0, 0.0])  # x from 1 to 3: all of it beyond the face, all in its border cells
    beyond = occupancy_grid(far.vertices, far.faces, resolution=16, bound=0.5, samples=20_000, fill=False)
    assert beyond[15, 4:12, 4:12].any() and not beyond[:15].any()


@pytest.mark.parametrize("sigma", [0.3, 0.6, 0.7, 0.875, 1.0, 1.4, 2.5])  # 4 sigma: fractions above 0.5 too
def test_gaussian_blur_equals_scipy(sigma):
    """The written-out blur against scipy.ndimage.gaussian_filter (mode constant, zeros beyond the edges)."""
    from scipy import ndimage

    from recon_core.mesh.volume import gaussian_blur

    rng = np.random.default_rng(int(sigma * 10))
    field = (rng.random((9, 14, 11)) > 0.6).astype(np.float64)
    np.testing.assert_allclose(gaussian_blur(field, sigma),
                               ndimage.gaussian_filter(field, sigma, mode="constant", cval=0.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("smoothing", [0.0, 0.6])
def test_grid_surface_of_the_solids_box_equals_the_whole_grids(seed, smoothing):
    """grid_surface blurs and meshes only the solid's bounding box and margin: the mesh is the whole padded
    grid's, blurred and meshed as a block (the obvious way), to the last bit; solids at the grid's edge too."""
    from recon_core.mesh.volume import gaussian_blur, marching_tetrahedra

    rng = np.random.default_rng(40 + seed)
    grid = np.zeros((20, 20, 20), bool)
    lo = rng.integers(0, 12, size=3) if seed % 2 else np.array([0, rng.integers(0, 12), 0])  # odd: inside
    hi = lo + rng.integers(3, 8, size=3)
    grid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.uniform(size=tuple(hi - lo)) < 0.8
    bound, level = 0.5, 0.4
    h, pad = 2.0 * bound / 20, 1 + int(np.ceil(4.0 * smoothing))
    field = np.pad(grid.astype(np.float64), pad)
    if smoothing:
        field = gaussian_blur(field, smoothing)
    ref_verts, ref_faces = marching_tetrahedra(field, level, np.full(3, -bound + (0.5 - pad) * h), h)
    verts, faces = grid_surface(grid, bound, smoothing=smoothing, level=level)
    assert len(faces) > 0
    np.testing.assert_array_equal(faces, ref_faces)
    np.testing.assert_array_equal(verts, ref_verts)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("smoothing", [0.0, 0.6])
def test_grid_surface_vertices_are_the_meshs_vertices(seed, smoothing):
    """The vertices found edge direction by edge direction are the mesh's, to the last bit (sorted rows); solids at
    the grid's edge, with holes, and an empty grid."""
    from recon_core.mesh.volume import grid_surface_vertices

    rng = np.random.default_rng(70 + seed)
    grid = ndimage.binary_opening(rng.uniform(size=(18, 18, 18)) < 0.55) if seed < 2 else np.zeros((18, 18, 18), bool)
    if seed >= 2:
        grid[0:9, 3:15, 4:18] = rng.uniform(size=(9, 12, 14)) < 0.7
    verts, _ = grid_surface(grid, 0.55, smoothing=smoothing, level=0.4)
    found = grid_surface_vertices(grid, 0.55, smoothing=smoothing, level=0.4)
    assert len(verts) > 0

    def rows(v):
        return v[np.lexsort(v.T[::-1])]

    np.testing.assert_array_equal(rows(found), rows(verts))
    assert grid_surface_vertices(np.zeros((8, 8, 8), bool)).shape == (0, 3)


@pytest.mark.parametrize("shape", [(64, 64, 64), (5, 7, 3), (9, 4), (11,), (1, 1, 1), (0, 4, 4)])
@pytest.mark.parametrize("share", [0.0, 0.01, 0.3, 1.0])
def test_cell_indices_equal_argwhere(shape, share):
    mask = np.random.default_rng(len(shape) * 7 + int(share * 100)).random(shape) < share
    got = cell_indices(mask)
    assert got.dtype == np.int64 and np.array_equal(got, np.argwhere(mask))
    view = mask[..., ::2] if mask.ndim else mask  # a strided view: the same cells as its copy
    assert np.array_equal(cell_indices(view), np.argwhere(view))
