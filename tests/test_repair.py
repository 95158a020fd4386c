"""Tests for recon_core.mesh.repair: the printable guarantee on many broken meshes."""

import manifold3d
import numpy as np
import pytest
import trimesh
from pytorch3d.utils import ico_sphere

from recon_core.mesh.printable import check_printable, signed_volume
from recon_core.mesh.repair import make_printable, taubin_smooth


def _sphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    mesh = ico_sphere(level)
    return mesh.verts_packed().double().numpy(), mesh.faces_packed().numpy().astype(np.int64)


SPHERES = {level: _sphere(level) for level in (2, 3, 4)}


def _deform(kind: str, verts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the ways random weights can break a sphere."""
    n = len(verts)
    scale = 10.0 ** rng.uniform(-3, 3)  # the mesh's overall size
    if kind == "noise":
        out = verts + rng.normal(scale=10.0 ** rng.uniform(-5, 1), size=verts.shape)
    elif kind == "radii":
        out = verts * np.exp(rng.normal(scale=rng.uniform(0.1, 2.0), size=(n, 1)))
    elif kind == "through":  # a few vertices pulled through the far side
        out = verts.copy()
        idx = rng.choice(n, size=rng.integers(1, 4), replace=False)
        out[idx] *= -rng.uniform(1.1, 3.0, size=(len(idx), 1))
    elif kind == "collapsed":
        out = np.tile(rng.normal(size=3), (n, 1))
    elif kind == "nan":
        out = verts + rng.normal(scale=0.01, size=verts.shape)
        out[rng.random(verts.shape) < rng.uniform(0.01, 0.5)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == "all_nan":
        out = np.full_like(verts, np.nan)
    elif kind == "mirrored":
        out = verts * np.array([1.0, 1.0, -1.0]) + rng.normal(scale=0.01, size=verts.shape)
    elif kind == "flat":
        out = verts * np.array([1.0, 1.0, 0.0])
    elif kind == "line":
        out = verts * np.array([1.0, 0.0, 0.0])
    elif kind == "spike":
        out = verts.copy()
        out[rng.integers(n)] *= 10.0 ** rng.uniform(1, 8)
    elif kind == "crumpled":  # smooth low-frequency folding
        k = rng.normal(scale=3.0, size=(3, 3))
        out = verts + rng.uniform(0.2, 1.5) * np.sin(verts @ k)
    elif kind == "uniform":
        out = rng.uniform(-1, 1, size=verts.shape)
    else:
        raise ValueError(kind)
    return out * scale


KINDS = ["noise", "radii", "through", "collapsed", "nan", "all_nan", "mirrored", "flat", "line", "spike", "crumpled", "uniform"]


def _cases(n_cases: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        level = 4 if i % 25 == 0 else (3 if i % 3 == 0 else 2)
        verts, faces = SPHERES[level]
        kind = KINDS[i % len(KINDS)]
        template = verts if i % 4 else None
        yield kind, level, _deform(kind, verts, rng), faces, template


def _assert_printable(verts: np.ndarray, faces: np.ndarray) -> None:
    assert np.isfinite(verts).all()
    report = check_printable(verts, faces)
    assert report.ok, report.summary()
    mesh = trimesh.Trimesh(verts, faces, process=False, validate=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    # manifold3d works in float32: centre and normalise so that the cast keeps the mesh.
    unit = (verts - verts.mean(0)) / np.abs(verts - verts.mean(0)).max()
    m3d = manifold3d.Manifold(manifold3d.Mesh(vert_properties=unit.astype(np.float32), tri_verts=faces.astype(np.uint32)))
    assert m3d.status() == manifold3d.Error.NoError
    assert m3d.volume() > 0


def test_guarantee_on_many_broken_spheres():
    paths = {}
    for kind, level, verts, faces, template in _cases(216):
        out_verts, out_faces, log = make_printable(verts, faces, sphere_verts=template)
        try:
            _assert_printable(out_verts, out_faces)
        except AssertionError as error:
            raise AssertionError(f"{kind} (level {level}, template {template is not None}): {log.steps}") from error
        paths[log.path] = paths.get(log.path, 0) + 1
    # The cases exercise every stage of the chain.
    assert set(paths) == {"original", "untangled", "star", "hull", "box"}, paths


class TestPaths:
    def test_clean_sphere_is_kept(self):
        verts, faces = SPHERES[3]
        out_verts, out_faces, log = make_printable(verts, faces, sphere_verts=verts)
        assert log.path == "original" and not log.flipped and log.smoothing_iterations == 10
        np.testing.assert_array_equal(out_faces, faces)
        assert signed_volume(out_verts, out_faces) == pytest.approx(signed_volume(verts, faces), rel=1e-9)
        assert np.abs(out_verts - verts).max() < 0.05

    def test_vertex_pulled_through_is_untangled(self):
        verts, faces = SPHERES[3]
        broken = verts.copy()
        broken[7] *= -1.5
        assert check_printable(broken, faces).self_intersecting_pairs > 0
        out_verts, out_faces, log = make_printable(broken, faces, sphere_verts=verts)
        assert log.path == "untangled" and log.untangle_rounds >= 1
        _assert_printable(out_verts, out_faces)
        moved = np.linalg.norm(out_verts - verts, axis=1)
        assert np.median(moved) < 0.05  # the rest of the sphere stays put

    def test_mirrored_is_flipped(self):
        verts, faces = SPHERES[2]
        out_verts, out_faces, log = make_printable(verts * [1, 1, -1], faces)
        assert log.path == "original" and log.flipped
        np.testing.assert_array_equal(out_faces, faces[:, ::-1])

    def test_huge_noise_uses_the_star_or_the_hull(self):
        verts, faces = SPHERES[3]
        noisy = verts + np.random.default_rng(1).normal(scale=3.0, size=verts.shape)
        assert make_printable(noisy, faces, sphere_verts=verts)[2].path == "star"
        assert make_printable(noisy, faces)[2].path == "hull"

    def test_collapsed_without_template_is_a_box(self):
        verts, faces = SPHERES[2]
        out_verts, out_faces, log = make_printable(np.ones_like(verts), faces, smooth_iterations=0)
        assert log.path == "box" and len(out_faces) == 12
        assert np.linalg.norm(out_verts.max(0) - out_verts.min(0)) == pytest.approx(1.0)

    def test_nan_vertices_are_replaced(self):
        verts, faces = SPHERES[2]
        broken = verts.copy()
        broken[[3, 40]] = np.nan
        out_verts, _, log = make_printable(broken, faces)
        assert log.path == "original" and log.nonfinite_replaced == 2
        assert np.isfinite(out_verts).all()

    def test_open_mesh_falls_back_to_the_hull(self):
        verts, faces = SPHERES[2]
        out_verts, out_faces, log = make_printable(verts, faces[1:])
        assert not log.input_closed_manifold and log.path == "hull"
        _assert_printable(out_verts, out_faces)

    def test_deterministic(self):
        verts, faces = SPHERES[3]
        noisy = verts + np.random.default_rng(2).normal(scale=0.1, size=verts.shape)
        first = make_printable(noisy, faces, sphere_verts=verts)
        second = make_printable(noisy, faces, sphere_verts=verts)
        np.testing.assert_array_equal(first[0], second[0])
        np.testing.assert_array_equal(first[1], second[1])
        assert first[2] == second[2]


class TestTaubin:
    def test_filter_keeps_volume_of_a_clean_sphere(self):
        verts, faces = SPHERES[3]
        smoothed = taubin_smooth(verts, faces, 20, preserve_volume=False)
        assert signed_volume(smoothed, faces) == pytest.approx(signed_volume(verts, faces), rel=0.03)

    def test_rescaling_restores_volume_exactly(self):
        verts, faces = SPHERES[3]
        noisy = verts + np.random.default_rng(3).normal(scale=0.01, size=verts.shape)
        smoothed = taubin_smooth(noisy, faces, 20)
        assert signed_volume(smoothed, faces) == pytest.approx(signed_volume(noisy, faces), rel=1e-9)
        assert np.linalg.norm(smoothed - verts, axis=1).mean() < np.linalg.norm(noisy - verts, axis=1).mean()

    def test_plain_laplacian_would_shrink(self):
        verts, faces = SPHERES[3]
        shrunk = taubin_smooth(verts, faces, 20, mu=0.0, preserve_volume=False)
        assert signed_volume(shrunk, faces) < 0.9 * signed_volume(verts, faces)


class TestValidation:
    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"verts must have shape \(V, 3\)"):
            make_printable(np.zeros((5, 2)), np.zeros((1, 3), dtype=int))

    def test_template_shape(self):
        verts, faces = SPHERES[2]
        with pytest.raises(ValueError, match=r"sphere_verts must have shape \(V, 3\) = \(162, 3\)"):
            make_printable(verts, faces, sphere_verts=verts[:10])

    def test_negative_iterations(self):
        verts, faces = SPHERES[2]
        with pytest.raises(ValueError, match="smooth_iterations"):
            make_printable(verts, faces, smooth_iterations=-1)

    def test_no_vertices(self):
        with pytest.raises(ValueError, match="at least one vertex"):
            make_printable(np.zeros((0, 3)), np.zeros((0, 3), dtype=int))


def _winding(point, tris):
    """The winding number of the closed triangles ``tris`` (T, 3, 3) about ``point``: the sum of their signed
    solid angles (Van Oosterom and Strackee) over 4 pi; +-1 inside, 0 outside."""
    a, b, c = (tris[:, k] - point for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    num = np.einsum("td,td->t", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("td,td->t", a, b) * lc + np.einsum("td,td->t", b, c) * la \
        + np.einsum("td,td->t", c, a) * lb
    return float(2.0 * np.arctan2(num, den).sum() / (4.0 * np.pi))


def _filled_reference(verts, faces):
    """The parts (trimesh's split) that lie inside no other part (by winding number), as sorted face triples of
    their vertex positions, and the count of dropped parts that enclose a negative volume: the slow, obvious fill."""
    mesh = trimesh.Trimesh(verts, faces, process=False)
    parts = mesh.split(only_watertight=False)
    inner = [i for i, p in enumerate(parts)
             if any(abs(_winding(p.vertices[p.faces[0, 0]], q.vertices[q.faces])) > 0.5
                    for j, q in enumerate(parts) if j != i)]
    kept = [p for i, p in enumerate(parts) if i not in inner]
    return (sorted(tuple(np.round(p.vertices[f], 9).ravel()) for p in kept for f in p.faces),
            sum(1 for i in inner if parts[i].volume < 0))


def _shell(centre, radius, level, inward=False):
    s = trimesh.creation.icosphere(level, radius=radius)
    faces = s.faces[:, ::-1] if inward else s.faces
    return s.vertices + centre, faces


def _joined(parts, order):
    verts, faces, offset = [], [], 0
    for i in order:
        v, f = parts[i]
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


@pytest.mark.parametrize("seed", range(8))
def test_fill_cavities_keeps_the_outermost_parts(seed):
    """Solids with pockets (inward shells inside outward ones), islands inside pockets, separate solids, unused
    vertices, and inside-out parts with nothing around them: the same faces kept as the winding-number reference's,
    the pockets counted, never an empty mesh, and the result still printable when the input was."""
    from recon_core.mesh.repair import fill_cavities

    rng = np.random.default_rng(seed)
    parts = []
    for k in range(int(rng.integers(1, 4))):  # separate solids, each with 0-2 pockets, a pocket maybe with an island
        centre = np.array([3.0 * k, rng.normal(), rng.normal()])
        parts.append(_shell(centre, 1.0, 2, inward=seed == 7))  # seed 7: inside-out parts alone
        if seed == 7:
            continue
        for j in range(int(rng.integers(0, 3))):
            pocket = centre + [0.45 * (2 * j - 1), 0.0, 0.0]
            parts.append(_shell(pocket, 0.35, 1, inward=True))
            if rng.random() < 0.5:
                parts.append(_shell(pocket + rng.normal(0, 0.02, 3), 0.15, 1))
    verts, faces = _joined(parts, rng.permutation(len(parts)))  # a pocket's vertices not after its solid's
    if seed == 3:  # unused vertices between the parts
        verts = np.concatenate([verts, rng.normal(size=(5, 3))])
    expected, pockets = _filled_reference(verts, faces)
    got_v, got_f, count = fill_cavities(verts, faces)
    assert count == pockets and len(got_f) > 0
    assert sorted(tuple(np.round(got_v[f], 9).ravel()) for f in got_f) == expected
    assert len(got_v) == len(np.unique(got_f))
    if seed != 7:
        assert check_printable(verts, faces).ok and check_printable(got_v, got_f).ok
    if len(expected) == len(faces):
        assert got_v is verts


def test_fill_cavities_keeps_a_solid_whose_ray_passes_through_another():
    """Whether a part is inside another is the parity of its ray's crossings with that part: a ray from a small solid
    that runs through a larger one beside it crosses it twice, and both are kept (counted, not their parity, the small
    one was dropped from the print). With a pocket in the larger one on that ray, four crossings: both kept still."""
    from recon_core.mesh.repair import _RAY, fill_cavities

    ahead = 6.0 * _RAY / np.linalg.norm(_RAY)  # every ray from the small solid runs near the larger one's centre
    for pocket in (False, True):
        parts = [_shell(np.zeros(3), 0.3, 1), _shell(ahead, 3.0, 2)]
        if pocket:
            parts.append(_shell(ahead + [0.05, -0.03, 0.02], 1.0, 1, inward=True))
        verts, faces = _joined(parts, [0, 1, 2][:len(parts)])
        expected, pockets = _filled_reference(verts, faces)
        got_v, got_f, count = fill_cavities(verts, faces)
        assert sorted(tuple(np.round(got_v[f], 9).ravel()) for f in got_f) == expected
        assert len(expected) == len(faces) - (len(parts[2][1]) if pocket else 0) and count == pockets == int(pocket)


def test_part_volumes_equal_trimesh_s_split_volumes():
    """Each connected part's signed volume, in the order of its first face: the same as trimesh's split of the mesh
    (a slow, independent reference), pockets' inward shells negative."""
    from recon_core.mesh.repair import part_volumes

    parts = [_shell(np.array([0.0, 0.0, 0.0]), 1.0, 2), _shell(np.array([0.2, 0.0, 0.0]), 0.3, 1, inward=True),
             _shell(np.array([4.0, 1.0, 0.0]), 0.5, 1)]
    verts, faces = _joined(parts, [2, 0, 1])
    got = part_volumes(verts, faces)
    pieces = trimesh.Trimesh(verts, faces, process=False).split(only_watertight=False)
    expected = sorted(float(p.volume) for p in pieces)
    assert sorted(got) == pytest.approx(expected, rel=1e-9)
    assert got[0] == pytest.approx(trimesh.creation.icosphere(1, radius=0.5).volume)  # the first part: the small one
    assert (got < 0).sum() == 1
    assert len(part_volumes(verts, faces[:0])) == 0
