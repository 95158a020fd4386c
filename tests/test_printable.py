"""Tests for recon_core.mesh.printable, cross-checked against trimesh and manifold3d."""

import manifold3d
import numpy as np
import pytest
import trimesh
from pytorch3d.utils import ico_sphere

from recon_core.mesh.intersect import face_defects
from recon_core.mesh.printable import CLOSED_MANIFOLD, check_printable, check_topology, signed_volume


def _sphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    mesh = ico_sphere(level)
    return mesh.verts_packed().double().numpy(), mesh.faces_packed().numpy().astype(np.int64)


def _manifold_ok(verts, faces) -> bool:
    mesh = manifold3d.Mesh(vert_properties=np.asarray(verts, np.float32), tri_verts=np.asarray(faces, np.uint32))
    return manifold3d.Manifold(mesh).status() == manifold3d.Error.NoError


def _trimesh(verts, faces) -> trimesh.Trimesh:
    return trimesh.Trimesh(verts, faces, process=False, validate=False)


def _bowtie() -> tuple[np.ndarray, np.ndarray]:
    """Two spheres touching at one shared vertex (index 0)."""
    verts, faces = _sphere(1)
    mirrored = 2 * verts[0] - verts[1:]  # point reflection through vertex 0, minus vertex 0
    remap = np.r_[0, np.arange(1, len(verts)) + len(verts) - 1]
    return np.concatenate([verts, mirrored]), np.concatenate([faces, remap[faces][:, ::-1]])


def _non_manifold_edge() -> tuple[np.ndarray, np.ndarray]:
    verts, faces = _sphere(1)
    a, b = faces[0, :2]
    fin = 0.5 * (verts[a] + verts[b]) * 1.5
    return np.concatenate([verts, fin[None]]), np.concatenate([faces, [[a, b, len(verts)]]])


def _hole():
    verts, faces = _sphere(1)
    return verts, faces[1:]


def _flipped_face():
    verts, faces = _sphere(1)
    faces = faces.copy()
    faces[3] = faces[3, ::-1]
    return verts, faces


class TestAgainstLibraries:
    @pytest.mark.parametrize("level", [0, 1, 2, 3])
    def test_clean_sphere(self, level):
        verts, faces = _sphere(level)
        report = check_printable(verts, faces)
        assert report.ok, report.summary()
        mesh = _trimesh(verts, faces)
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert report.volume == pytest.approx(mesh.volume)
        assert _manifold_ok(verts, faces)

    def test_hole(self):
        report = check_printable(*_hole())
        assert not report.watertight and report.edge_manifold and report.vertex_manifold
        assert report.consistently_oriented and not report.ok
        assert not _trimesh(*_hole()).is_watertight
        assert not _manifold_ok(*_hole())

    def test_non_manifold_edge(self):
        report = check_printable(*_non_manifold_edge())
        assert not report.watertight and not report.edge_manifold and not report.ok
        assert not _trimesh(*_non_manifold_edge()).is_watertight
        assert not _manifold_ok(*_non_manifold_edge())

    def test_flipped_face(self):
        report = check_printable(*_flipped_face())
        assert report.watertight and report.edge_manifold and report.vertex_manifold
        assert not report.consistently_oriented and not report.ok
        assert not _trimesh(*_flipped_face()).is_winding_consistent
        assert not _manifold_ok(*_flipped_face())

    def test_bowtie_vertex(self):
        verts, faces = _bowtie()
        report = check_printable(verts, faces)
        assert report.watertight and report.edge_manifold and report.consistently_oriented
        assert report.self_intersecting_pairs == 0 and report.outward
        assert not report.vertex_manifold and not report.ok
        # Both libraries only look at edges: they accept the bowtie.
        mesh = _trimesh(verts, faces)
        assert mesh.is_watertight and mesh.is_winding_consistent
        assert _manifold_ok(verts, faces)

    def test_inverted(self):
        verts, faces = _sphere(2)
        report = check_printable(verts, faces[:, ::-1])
        assert report.watertight and report.consistently_oriented and not report.outward and not report.ok
        assert report.volume < 0 and _trimesh(verts, faces[:, ::-1]).volume < 0

    def test_self_intersecting(self):
        verts, faces = _sphere(2)
        verts[0] *= -1.5
        report = check_printable(verts, faces)
        assert report.self_intersecting_pairs > 0 and not report.ok
        assert _trimesh(verts, faces).is_watertight and _manifold_ok(verts, faces)  # they cannot tell

    def test_degenerate(self):
        verts, faces = _sphere(2)
        a, b = faces[0, :2]
        verts[b] = verts[a]  # collapse an edge in place
        report = check_printable(verts, faces)
        assert report.degenerate_faces == 2 and not report.ok

    def test_defects_given_are_those_it_would_find(self):
        """A caller that has face_defects already (the decimation's mend) passes them: the same report."""
        verts, faces = _sphere(2)
        verts[0] *= -1.5
        a, b = faces[5, :2]
        verts[b] = verts[a]
        found = face_defects(verts, faces)
        report = check_printable(verts, faces, defects=found)
        assert report == check_printable(verts, faces)
        assert report.self_intersecting_pairs > 0 and report.degenerate_faces > 0
        none = (np.zeros((0, 2), dtype=np.int64), np.zeros(len(faces), dtype=bool))
        assert check_printable(verts, faces, defects=none).ok  # it trusts what it is given


class TestReport:
    def test_topology_only(self):
        verts, faces = _sphere(1)
        assert check_topology(faces).closed_manifold
        assert not check_topology(faces[1:]).closed_manifold

    def test_scale(self):
        verts, faces = _sphere(2)
        plain, mm = check_printable(verts, faces), check_printable(verts, faces, unit_scale_mm=10.0)
        assert mm.volume == pytest.approx(plain.volume * 1000)
        assert mm.bbox_size == pytest.approx([20.0, 20.0, 20.0])
        assert "mm" in mm.summary()

    def test_summary_marks_each_property(self):
        text = check_printable(*_flipped_face()).summary()
        assert "✗ consistently oriented faces" in text
        assert "✓ watertight" in text
        assert text.splitlines()[-1] == "✗ not printable"

    def test_summary_writes_large_figures_without_scientific_notation(self):
        """A 90 mm chair's volume read "1.814e+04 mm^3", a 100 m part's size "7.587e+04 x 1e+05"."""
        verts, faces = _sphere(1)
        text = check_printable(verts * 40.0, faces, unit_scale_mm=1.0).summary()
        volume = signed_volume(verts * 40.0, faces)
        assert f"(volume {volume:,.0f} mm³)" in text and "e+" not in text  # "mm³", as the notes' "mm²" (was "mm^3")
        text = check_printable(verts * 50_000.0, faces, unit_scale_mm=1.0).summary()
        assert "size 100,000 x 100,000 x 100,000 mm" in text and "e+" not in text
        assert "size 0.002 x 0.002 x 0.002 units" in check_printable(verts * 0.001, faces).summary()
        text = check_printable(verts * 4999.85, faces, unit_scale_mm=1.0).summary()  # 9,999.7: .4g rounds it up
        assert "size 10,000 x 10,000 x 10,000 mm" in text and "e+" not in text
        text = check_printable(verts * 500.0, faces, unit_scale_mm=1.0).summary()  # 1000 beside the notes' "1,000"
        assert "size 1,000 x 1,000 x 1,000 mm" in text

    def test_problems_write_counts_with_a_thousands_comma(self):
        """"14460 self-intersecting face pairs" stood beside "10,312 triangles" in an export's warning."""
        import dataclasses

        report = dataclasses.replace(check_printable(*_sphere(1)), self_intersecting_pairs=14460)
        assert "14,460 self-intersecting face pairs" in report.problems()

    def test_non_finite(self):
        verts, faces = _sphere(1)
        verts[5, 0] = np.nan
        report = check_printable(verts, faces)
        assert not report.finite and not report.ok
        assert report.self_intersecting_pairs is None
        assert "not checked" in report.summary()

    def test_non_finite_vertex_no_face_uses(self):
        """Only the faces' vertices are checked: a NaN that no face uses is neither reported nor raised."""
        verts, faces = _sphere(1)
        extra = np.vstack([verts, [[np.nan, 0.0, 0.0]]])
        report, plain = check_printable(extra, faces), check_printable(verts, faces)
        assert report.ok and report.finite and report.n_vertices == len(verts) + 1
        assert (report.self_intersecting_pairs, report.degenerate_faces, report.volume) == (
            plain.self_intersecting_pairs, plain.degenerate_faces, plain.volume)
        # two overlapping spheres, the NaN between their vertices: the same intersecting pairs as without it
        v2 = np.vstack([verts, verts + [0.5, 0.0, 0.0]])
        f2 = np.vstack([faces, faces + len(verts)])
        with_nan = np.vstack([v2[: len(verts)], [[np.nan] * 3], v2[len(verts):]])
        f_nan = np.where(f2 >= len(verts), f2 + 1, f2)
        crossing, crossing_nan = check_printable(v2, f2), check_printable(with_nan, f_nan)
        assert crossing.self_intersecting_pairs > 0 and not crossing_nan.ok
        assert crossing_nan.self_intersecting_pairs == crossing.self_intersecting_pairs

    def test_signed_volume_of_unit_cube(self):
        box = trimesh.creation.box()
        assert signed_volume(box.vertices, box.faces) == pytest.approx(1.0)

    def test_bad_scale(self):
        verts, faces = _sphere(0)
        with pytest.raises(ValueError, match="unit_scale_mm"):
            check_printable(verts, faces, unit_scale_mm=-1.0)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"faces must have shape \(F, 3\)"):
            check_topology(np.zeros((2, 2), dtype=int))


@pytest.mark.parametrize("seed", range(6))
def test_component_labels_equal_scipy(seed):
    """The numpy components against scipy's connected_components: the same partition, each labelled by its
    smallest node; random sparse graphs, isolated nodes, self-loops, repeated edges and a long shuffled path."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from recon_core.mesh.printable import component_labels

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    if seed == 5:  # a path visited in random order: the longest chains of hooks
        order = rng.permutation(n)
        a, b = order[:-1], order[1:]
    else:
        m = int(rng.integers(0, 2 * n))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    label = component_labels(n, a, b)
    _, reference = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    assert len(np.unique(label)) == len(np.unique(reference))
    _, first = np.unique(reference, return_index=True)  # each scipy component's smallest node
    np.testing.assert_array_equal(label, first[reference])


def _defects_naive(faces: np.ndarray) -> set[int]:
    """Reference for topology_defects: dictionaries of edges and a breadth-first walk of each vertex's faces."""
    from collections import Counter, defaultdict

    edge_faces, directed = defaultdict(list), Counter()
    around = defaultdict(list)
    for index, face in enumerate(faces.tolist()):
        for k in range(3):
            a, b = face[k], face[(k + 1) % 3]
            edge_faces[frozenset((a, b))].append(index)
            directed[(a, b)] += 1
            around[a].append(index)
    bad = set()
    for edge, owners in edge_faces.items():
        if len(owners) != 2:
            bad |= edge
    for (a, b), count in directed.items():
        if count > 1:
            bad |= {a, b}
    for vertex, owners in around.items():  # one fan: the faces around it joined through edges at it
        seen, todo = {owners[0]}, [owners[0]]
        while todo:
            face = todo.pop()
            for other in owners:
                shared = set(faces[face].tolist()) & set(faces[other].tolist())
                if other not in seen and vertex in shared and len(shared) >= 2:
                    seen.add(other)
                    todo.append(other)
        if len(seen) != len(set(owners)):
            bad.add(vertex)
    return bad


@pytest.mark.parametrize("make", [lambda: _sphere(2), _bowtie, _non_manifold_edge, _hole, _flipped_face])
def test_topology_defects_equal_the_naive_walk_and_check_topology(make):
    """The defect vertices against the dictionary-and-walk reference, empty exactly when check_topology says closed
    manifold; then on random subsets of a sphere's faces with some faces flipped and some doubled."""
    from recon_core.mesh.printable import topology_defects

    verts, faces = make()
    cases = [faces]
    rng = np.random.default_rng(len(faces))
    for _ in range(4):
        sub = faces[rng.random(len(faces)) < 0.9].copy()
        flip = rng.random(len(sub)) < 0.05
        sub[flip] = sub[flip][:, ::-1]
        cases.append(np.concatenate([sub, sub[rng.random(len(sub)) < 0.02]]))
    for case in cases:
        found = topology_defects(case, len(verts))
        assert set(found.tolist()) == _defects_naive(case)
        assert (len(found) == 0) == check_topology(case, len(verts)).closed_manifold
        if len(found) == 0:  # what check_printable may be told instead of computing it
            assert check_topology(case, len(verts)) == CLOSED_MANIFOLD
            assert check_printable(verts, case, topology=CLOSED_MANIFOLD) == check_printable(verts, case)
    if make is _bowtie:
        assert topology_defects(faces).tolist() == [0]
