"""Wall thickness: the fast broad-phase version against the all-pairs reference, and against walls of known size."""

import numpy as np
import pytest
import trimesh

from recon_core.mesh.thickness import thin_walls, wall_thickness, wall_thickness_naive


def _same(fast, slow):
    slow = np.asarray(slow)
    assert fast.shape == slow.shape
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)


def _hollow_box(outer: float, wall: float) -> trimesh.Trimesh:
    """A closed cube of side ``outer`` holding a sealed cubic pocket: walls ``wall`` thick, the pocket's faces
    pointing into it (out of the solid), as the shape bank's walls come out."""
    box = trimesh.creation.box((outer,) * 3)
    pocket = trimesh.creation.box((outer - 2 * wall,) * 3)
    pocket.invert()
    return trimesh.util.concatenate([box, pocket])


def _big_and_small() -> trimesh.Trimesh:
    """A slab of 12 large faces around a spherical pocket of 320 small ones, 0.05 from its top and bottom: the median
    face is small, so the broad phase's grid must grow its cells for the large ones."""
    pocket = trimesh.creation.icosphere(2, 0.1)
    pocket.invert()
    return trimesh.util.concatenate([trimesh.creation.box((1.0, 0.3, 1.0)), pocket])


@pytest.mark.parametrize("mesh", [
    trimesh.creation.torus(1.0, 0.1, major_sections=24, minor_sections=12),
    trimesh.creation.box((1.0, 0.05, 0.7)),
    trimesh.creation.cylinder(0.03, 1.0, sections=16),
    _hollow_box(1.0, 0.04),
    _big_and_small(),
], ids=["torus", "plate", "rod", "hollow box", "large and small faces"])
@pytest.mark.parametrize("up_to", [0.05, 0.3, 5.0])
@pytest.mark.parametrize("batch", [1, 7, 65_536])
def test_matches_the_all_pairs_reference(mesh, up_to, batch, monkeypatch):
    """Also with the rays' pieces looked up a few at a time (every batch of rays must be looked at)."""
    from recon_core.mesh import thickness

    monkeypatch.setattr(thickness, "_PIECES_PER_BATCH", batch)
    _same(wall_thickness(mesh.vertices, mesh.faces, up_to), wall_thickness_naive(mesh.vertices, mesh.faces, up_to))


def test_matches_the_reference_on_rough_meshes():
    rng = np.random.default_rng(3)
    for k in range(4):
        sphere = trimesh.creation.icosphere(2)
        verts = sphere.vertices * (1 + 0.3 * rng.random((len(sphere.vertices), 1)))  # a bumpy, uneven shell
        verts = verts * rng.uniform(0.05, 1.0, 3)  # squashed to a thin lens along some axes
        up_to = float(rng.uniform(0.02, 1.0))
        _same(wall_thickness(verts, sphere.faces, up_to), wall_thickness_naive(verts, sphere.faces, up_to))


def test_known_walls():
    plate = trimesh.creation.box((1.0, 0.05, 0.7))
    t = wall_thickness(plate.vertices, plate.faces, 0.2)
    across = np.abs(plate.face_normals[:, 1]) > 0.5  # the two big faces, 0.05 apart; the others see 0.7 or 1
    np.testing.assert_allclose(t[across], 0.05)
    assert np.isinf(t[~across]).all()

    hollow = _hollow_box(1.0, 0.04)
    t = wall_thickness(hollow.vertices, hollow.faces, 0.5)
    np.testing.assert_allclose(t, 0.04)  # every face, outer and inner, sees the wall

    rod = trimesh.creation.cylinder(0.03, 1.0, sections=32)
    t = wall_thickness(rod.vertices, rod.faces, 0.2)
    side = np.abs(rod.face_normals[:, 2]) < 0.5
    np.testing.assert_allclose(t[side], 0.06 * np.cos(np.pi / 32))  # across the 32-gon, through its axis


def test_a_wall_far_thinner_than_the_start_tolerance_allows_is_found():
    """The start's tolerance (a hit nearer than 1e-9 of the diagonal is the ray's own face) is far below any wall: a
    plate a millionth of its size thick is found, exactly."""
    plate = trimesh.creation.box((1.0, 1e-6, 1.0))
    t = wall_thickness(plate.vertices, plate.faces, 0.5)
    across = np.abs(plate.face_normals[:, 1]) > 0.5
    np.testing.assert_allclose(t[across], 1e-6, rtol=1e-6)


def test_rays_long_against_the_faces_are_cut_into_pieces():
    """A print a few millimetres tall has faces a tenth of a millimetre and rays of 0.8 mm: the rays are cut into
    pieces a cell long, looked up a batch at a time (a whole ray's box once held most of the mesh: 8.8 GB at 3 mm).
    The same thicknesses as the reference, and the pairs looked at bounded."""
    from recon_core.mesh import thickness

    sphere = trimesh.creation.icosphere(2, 0.01)
    up_to = 0.5  # 25 times the sphere's diameter: clipped to its diagonal, many pieces a ray
    _same(wall_thickness(sphere.vertices, sphere.faces, up_to), wall_thickness_naive(sphere.vertices, sphere.faces,
                                                                                   up_to))
    looked, pieces = [], []
    pairs = thickness._FaceGrid.pairs

    def counted(self, seg_lo, seg_hi, seg_ray):
        found = pairs(self, seg_lo, seg_hi, seg_ray)
        looked.append(len(found[0]))
        pieces.append((len(seg_lo), len(np.unique(seg_ray)), self.cell))
        return found

    fine = trimesh.creation.icosphere(5, 1.5)  # 20,480 faces, 3 mm across: a 3 mm print at the high detail
    try:
        thickness._FaceGrid.pairs = counted
        t = wall_thickness(fine.vertices, fine.faces, 0.8)
    finally:
        thickness._FaceGrid.pairs = pairs
    assert np.isinf(t).all()  # 3 mm across: every wall is thicker than 0.8 mm
    assert sum(looked) < 60 * len(fine.faces), sum(looked)  # not faces x faces (420 million)
    assert all(n <= thickness._PIECES_PER_BATCH for n, _, _ in pieces) and len(pieces) > 1  # a batch at a time
    assert sum(rays for _, rays, _ in pieces) == len(fine.faces)  # every ray looked at, once
    n, rays, cell = pieces[0]
    assert n // rays == int(np.ceil(0.8 / cell)) > 1  # each ray cut into pieces a cell long


def test_the_grid_grows_its_cells_for_a_few_large_faces():
    """Cells half the median face wide would put each of the slab's 12 large faces in hundreds of thousands of cells:
    the grid grows them until the faces' entries are at most 16 a face."""
    from recon_core.mesh.thickness import _FaceGrid

    mesh = _big_and_small()
    tris = mesh.vertices[mesh.faces]
    lo, hi = tris.min(1), tris.max(1)
    grid = _FaceGrid(lo, hi, lo.min(0), hi.max(0))
    assert grid.cell > 0.5 * np.median((hi - lo).max(1)) and len(grid.key) <= 16 * len(mesh.faces)


def test_unit_free_and_bounded():
    mesh = trimesh.creation.torus(1.0, 0.1, major_sections=24, minor_sections=12)
    t = wall_thickness(mesh.vertices, mesh.faces, 1.0)
    np.testing.assert_allclose(wall_thickness(mesh.vertices * 25.0, mesh.faces, 25.0), t * 25.0, rtol=1e-9)
    short = wall_thickness(mesh.vertices, mesh.faces, 0.15)
    assert np.isinf(short[t > 0.15]).all() and np.array_equal(short[t <= 0.15], t[t <= 0.15])


def test_thin_walls():
    plate = trimesh.creation.box((1.0, 0.05, 0.7))
    found = thin_walls(plate.vertices, plate.faces, 0.2)
    big = np.flatnonzero(np.abs(plate.face_normals[:, 1]) > 0.5)  # the two big faces, 0.05 apart
    assert np.array_equal(found.faces, big)
    assert found.area == pytest.approx(2 * 0.7)
    assert found.surface == pytest.approx(2 * 0.7 + 2 * 0.05 * 0.7 + 2 * 0.05 * 1.0)
    assert found.median == pytest.approx(0.05)
    found = thin_walls(plate.vertices, plate.faces, 0.04)
    assert found.area == 0.0 and not len(found.faces) and np.isnan(found.median)

    # the median weighs each thin face by its area: two separate plates, 0.05 and 0.02 thick
    a = trimesh.creation.box((1.0, 0.05, 1.0))
    b = trimesh.creation.box((0.5, 0.02, 0.5))
    b.apply_translation((3, 0, 0))
    both = trimesh.util.concatenate([a, b])
    found = thin_walls(both.vertices, both.faces, 0.1)
    assert found.area == pytest.approx(2 * 1.0 + 2 * 0.25)  # their big faces; the plates' edges are 0.5 or 1 across
    assert found.median == pytest.approx(0.05)  # 2.0 of the 2.5 thin area is 0.05 thick
    b.apply_scale((3, 1, 3))  # now the 0.02 plate is the larger: 2 x 2.25
    both = trimesh.util.concatenate([a, b])
    assert thin_walls(both.vertices, both.faces, 0.1).median == pytest.approx(0.02)

    # every face thin: the area is the surface to the last bit (summed in another order, a note read "over 99%")
    rough = trimesh.creation.icosphere(3, 0.05)
    rough.vertices *= 1 + 0.2 * np.random.default_rng(0).random((len(rough.vertices), 1))
    found = thin_walls(rough.vertices, rough.faces, 1.0)
    assert len(found.faces) == len(rough.faces) and found.area == found.surface


@pytest.mark.parametrize("up_to", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_distance(up_to):
    box = trimesh.creation.box()
    with pytest.raises(ValueError, match="up_to"):
        wall_thickness(box.vertices, box.faces, up_to)
