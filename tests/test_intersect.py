"""Tests for recon_core.mesh.intersect: the fast test against the naive one and known cases."""

import math

import numpy as np
import pytest
from pytorch3d.utils import ico_sphere

from recon_core.mesh.intersect import (
    degenerate_faces,
    face_defects,
    intersecting_faces,
    self_intersections,
    self_intersections_naive,
)


def _sphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    mesh = ico_sphere(level)
    return mesh.verts_packed().double().numpy(), mesh.faces_packed().numpy().astype(np.int64)


def _both(verts, faces) -> np.ndarray:
    fast = self_intersections(verts, faces)
    naive = self_intersections_naive(verts, faces)
    np.testing.assert_array_equal(fast, naive)
    return fast


def _pair(tri_a, tri_b, faces=((0, 1, 2), (3, 4, 5))) -> bool:
    """Whether two triangles (3x3 corner lists) intersect; ``faces`` sets the sharing."""
    faces = np.array(faces)
    verts = np.zeros((faces.max() + 1, 3))
    for face, tri in zip(faces, (tri_a, tri_b)):
        verts[face] = tri
    return len(_both(verts, faces)) == 1


T1 = [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]


class TestPairs:
    def test_crossing(self):
        assert _pair(T1, [[0.5, 0.5, -1.0], [0.5, 0.5, 1.0], [3.0, 3.0, 0.5]])

    def test_far_apart(self):
        assert not _pair(T1, [[5.0, 5.0, 5.0], [6.0, 5.0, 5.0], [5.0, 6.0, 5.0]])

    def test_vertex_touching_interior(self):
        assert _pair(T1, [[0.5, 0.5, 0.0], [0.5, 0.5, 1.0], [1.0, 0.5, 1.0]])

    def test_edge_touching_edge(self):
        assert _pair(T1, [[1.0, 1.0, -1.0], [1.0, 1.0, 1.0], [3.0, 3.0, 0.0]])

    @pytest.mark.parametrize("gap, expected", [(1e-3, False), (1e-7, False), (1e-12, True), (0.0, True)])
    def test_near_parallel(self, gap, expected):
        other = [[0.5, 0.2, gap], [1.2, 0.2, gap], [0.5, 0.9, gap]]
        assert _pair(T1, other) == expected

    def test_tilted_near_miss_and_graze(self):
        # A face tilted by 1e-6 rad whose lowest corner is 1e-4 above T1: no contact.
        assert not _pair(T1, [[0.5, 0.2, 1e-4], [1.2, 0.2, 1e-4 + 7e-7], [0.5, 0.9, 1e-4 + 7e-7]])
        assert _pair(T1, [[0.5, 0.2, -1e-8], [1.2, 0.2, 1e-6], [0.5, 0.9, 1e-6]])

    def test_coplanar_overlap(self):
        assert _pair(T1, [[0.5, 0.5, 0.0], [3.0, 0.5, 0.0], [0.5, 3.0, 0.0]])

    def test_coplanar_contained(self):
        assert _pair(T1, [[0.2, 0.2, 0.0], [0.6, 0.2, 0.0], [0.2, 0.6, 0.0]])

    def test_coplanar_disjoint(self):
        assert not _pair(T1, [[1.5, 1.5, 0.0], [3.0, 1.5, 0.0], [1.5, 3.0, 0.0]])

    def test_shared_vertex_fan_is_not_an_intersection(self):
        shared = ((0, 1, 2), (0, 3, 4))
        assert not _pair(T1, [[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], shared)
        assert not _pair(T1, [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], shared)

    def test_shared_vertex_opposite_edge_pierces(self):
        shared = ((0, 1, 2), (0, 3, 4))
        assert _pair(T1, [[0.0, 0.0, 0.0], [0.5, 0.5, 1.0], [0.5, 0.5, -1.0]], shared)

    def test_shared_vertex_coplanar_overlap(self):
        shared = ((0, 1, 2), (0, 3, 4))
        assert _pair(T1, [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]], shared)

    def test_coincident_but_unshared_vertex_touches(self):
        # Same position, different index: the faces touch, they are not adjacent.
        assert _pair(T1, [[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

    @pytest.mark.parametrize(
        "angle, expected", [(0.0, True), (1e-8, True), (1e-3, False), (math.pi / 2, False), (math.pi, False)]
    )
    def test_shared_edge_fold(self, angle, expected):
        # Faces ABC and ABD around edge AB (the x axis); D at ``angle`` from C's half-plane.
        d = [1.0, math.cos(angle), math.sin(angle)]
        assert _pair(T1, [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], d], ((0, 1, 2), (0, 1, 3))) == expected

    def test_duplicate_face(self):
        verts = np.array(T1)
        assert len(_both(verts, np.array([[0, 1, 2], [0, 2, 1]]))) == 1


class TestDegenerate:
    def test_collinear_and_collapsed(self):
        verts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float)
        faces = np.array([[0, 1, 3], [0, 1, 2], [0, 4, 3], [1, 1, 3]])
        np.testing.assert_array_equal(degenerate_faces(verts, faces), [False, True, True, True])

    def test_two_degenerate_faces_are_not_a_pair(self):
        verts = np.array([[0, 0, 0], [2, 0, 0], [1, 0, 0], [1, 0, 0], [3, 0, 0], [2, 0, 0], [9, 9, 9]], dtype=float)
        faces = np.array([[0, 1, 2], [3, 4, 5], [0, 1, 6]])
        assert degenerate_faces(verts, faces)[:2].all()
        pairs = _both(verts, faces)
        assert [0, 1] not in pairs.tolist()

    def test_sliver_edge_through_face_is_found(self):
        verts = np.array(T1 + [[0.5, 0.5, -1.0], [0.5, 0.5, 1.0], [0.5, 0.5, 0.5]])
        faces = np.array([[0, 1, 2], [3, 4, 5]])
        assert degenerate_faces(verts, faces).tolist() == [False, True]
        assert _both(verts, faces).tolist() == [[0, 1]]


class TestSpheres:
    @pytest.mark.parametrize("level", [1, 2, 3, 4])
    def test_clean_sphere(self, level):
        verts, faces = _sphere(level)
        assert len(self_intersections(verts, faces)) == 0
        assert not degenerate_faces(verts, faces).any()

    def test_vertex_pushed_through_far_side(self):
        verts, faces = _sphere(2)
        verts[0] = -1.5 * verts[0]
        pairs = _both(verts, faces)
        assert len(pairs) > 0
        touching = np.isin(faces, [0]).any(1)
        assert touching[pairs].any(1).all()

    def test_mask(self):
        verts, faces = _sphere(1)
        verts[0] = -1.5 * verts[0]
        mask = intersecting_faces(verts, faces)
        assert mask.shape == (len(faces),)
        assert set(np.flatnonzero(mask)) == set(self_intersections(verts, faces).ravel())

    @pytest.mark.parametrize("level, sigma", [(1, 0.05), (1, 0.3), (1, 3.0), (2, 0.02), (2, 0.1), (2, 1.0)])
    def test_perturbed_matches_naive(self, level, sigma):
        rng = np.random.default_rng(int(sigma * 1000) + level)
        verts, faces = _sphere(level)
        verts = verts + rng.normal(scale=sigma, size=verts.shape)
        _both(verts, faces)

    def test_star_shaped_never_intersects(self):
        # Any positive radii along the sphere's vertex directions give an embedded mesh.
        rng = np.random.default_rng(7)
        verts, faces = _sphere(2)
        verts = verts * rng.uniform(0.2, 2.0, size=(len(verts), 1))
        assert len(_both(verts, faces)) == 0

    def test_max_pairs_stops_early(self):
        rng = np.random.default_rng(3)
        verts, faces = _sphere(3)
        verts = rng.normal(size=verts.shape)
        total = len(self_intersections(verts, faces))
        early = self_intersections(verts, faces, max_pairs=10)
        assert 10 <= len(early) < total

    @pytest.mark.parametrize("seed", range(4))
    def test_active_subset_is_the_full_result_restricted(self, seed):
        """Only pairs touching an active face: exactly the naive pairs with one active face."""
        rng = np.random.default_rng(50 + seed)
        verts, faces = _sphere(2)
        verts = verts + rng.normal(scale=0.2, size=verts.shape)
        active = rng.uniform(size=len(faces)) < 0.1
        naive = self_intersections_naive(verts, faces)
        expected = naive[active[naive[:, 0]] | active[naive[:, 1]]]
        assert len(expected) > 0 and len(expected) < len(naive)  # the subset is a real restriction
        np.testing.assert_array_equal(self_intersections(verts, faces, active=active), expected)
        assert len(self_intersections(verts, faces, active=np.zeros(len(faces), bool))) == 0
        with pytest.raises(ValueError, match="active must have shape"):
            self_intersections(verts, faces, active=active[:-1])

    def test_5k_faces_test_few_pairs_closely(self, monkeypatch):
        """The broad phase leaves the close test a few pairs a face, not all 12.5 million of a 5,120-face sphere
        (its time, about 0.05 s, is the benchmarks' to watch, not a test's)."""
        from recon_core.mesh import intersect

        verts, faces = _sphere(4)
        narrow, tested = intersect._narrow_phase, []

        def counted(*args, **kwargs):
            hits = narrow(*args, **kwargs)
            tested.append(len(hits))
            return hits

        monkeypatch.setattr(intersect, "_narrow_phase", counted)
        assert len(self_intersections(verts, faces)) == 0
        assert 0 < sum(tested) < 20 * len(faces)  # about 6 a face (the neighbours whose boxes touch)


class TestSoups:
    @pytest.mark.parametrize("seed", range(6))
    def test_random_soup(self, seed):
        rng = np.random.default_rng(seed)
        verts = rng.uniform(size=(40, 3))
        faces = np.array([rng.choice(40, 3, replace=False) for _ in range(60)])
        assert len(_both(verts, faces)) > 0

    @pytest.mark.parametrize("seed", range(6))
    def test_integer_grid_soup(self, seed):
        # Corners on a coarse grid: many exactly coplanar, touching and shared-edge cases.
        rng = np.random.default_rng(100 + seed)
        verts = rng.integers(0, 3, size=(30, 3)).astype(float)
        verts[:10, 2] = 0.0
        faces = np.array([rng.choice(30, 3, replace=False) for _ in range(50)])
        _both(verts, faces)

    def test_planar_soup(self):
        rng = np.random.default_rng(11)
        verts = np.c_[rng.uniform(size=(30, 2)), np.zeros(30)]
        faces = np.array([rng.choice(30, 3, replace=False) for _ in range(40)])
        assert len(_both(verts, faces)) > 0


@pytest.mark.parametrize("seed", range(4))
def test_face_defects_is_both_tests_at_once(seed):
    """The pairs and the degenerate faces of one call equal the two separate tests (and the naive pairs), on
    soups with collapsed and collinear faces among crossing ones."""
    rng = np.random.default_rng(300 + seed)
    verts = rng.integers(0, 4, size=(40, 3)).astype(float)
    faces = np.array([rng.choice(40, 3, replace=False) for _ in range(80)])
    a, b = rng.uniform(0, 3, size=(2, 12, 3))
    b[:8] = a[:8]  # 8 faces with a collapsed edge, then 4 with collinear corners
    verts = np.concatenate([verts, a, b, 2 * b - a])
    extra = 40 + np.arange(12)
    faces = np.concatenate([np.stack([extra, extra + 12, extra + 24], 1), faces])
    pairs, degenerate = face_defects(verts, faces)
    np.testing.assert_array_equal(pairs, self_intersections_naive(verts, faces))
    np.testing.assert_array_equal(degenerate, degenerate_faces(verts, faces))
    assert len(pairs) > 0 and degenerate[:8].all() and degenerate[8:12].all()
    tolerant = face_defects(verts, faces, deg_rel_tol=1e-2)
    np.testing.assert_array_equal(tolerant[1], degenerate_faces(verts, faces, rel_tol=1e-2))
    np.testing.assert_array_equal(tolerant[0], self_intersections(verts, faces, deg_rel_tol=1e-2))


@pytest.mark.parametrize("seed", range(4))
def test_face_defects_since_an_earlier_check_retests_only_what_moved(seed):
    """After some vertices move (inward, so the box and its tolerances stay; one face collapsed, another degenerate
    from the start and unmoved), ``since`` gives the same pairs and degenerate faces as a full call and as the naive
    reference, pairs appearing and disappearing; a pair of two
    faces that did not move keeps its earlier answer untested (a made-up one stays), and when the box changed
    everything is tested again (the made-up pair goes)."""
    rng = np.random.default_rng(400 + seed)
    verts, faces = _sphere(2)
    before = verts + rng.normal(scale=0.15, size=verts.shape)
    extreme = np.r_[before.argmin(0), before.argmax(0)]
    inner = np.flatnonzero(~np.isin(faces, extreme).any(1))  # faces with no vertex on the box
    kept_flat, made_flat = faces[inner[0]], faces[inner[-1]]
    before[kept_flat] = before[kept_flat].mean(0)  # a degenerate face that stays
    before_pairs, before_degenerate = face_defects(before, faces)
    after = before.copy()
    free = np.setdiff1d(np.arange(len(verts)), np.r_[extreme, kept_flat, made_flat])
    moved = np.r_[rng.choice(free, 9, replace=False), made_flat]
    after[moved] *= rng.uniform(0.2, 0.9, size=(12, 1))  # toward the centre: the box is set by others
    after[made_flat] = after[made_flat].mean(0)  # a face made degenerate
    assert np.array_equal(np.ptp(after, 0), np.ptp(before, 0))
    full = face_defects(after, faces)
    again = face_defects(after, faces, since=(before, before_pairs))
    np.testing.assert_array_equal(again[0], full[0])
    np.testing.assert_array_equal(again[1], full[1])
    np.testing.assert_array_equal(full[0], self_intersections_naive(after, faces))
    assert before_degenerate[inner[0]] and full[1][inner[0]] and full[1][inner[-1]] and not before_degenerate[inner[-1]]
    gone = {tuple(p) for p in before_pairs} - {tuple(p) for p in full[0]}
    new = {tuple(p) for p in full[0]} - {tuple(p) for p in before_pairs}
    assert gone or new  # the moves changed the answer

    still = ~np.isin(faces, moved).any(1)  # faces none of whose vertices moved
    i, j = np.flatnonzero(still)[[0, -1]]
    made_up = np.concatenate([before_pairs, [[i, j]]])
    kept = face_defects(after, faces, since=(before, made_up))[0]
    assert [i, j] in kept.tolist() and len(kept) == len(full[0]) + 1
    grown = after.copy()
    grown[moved[0]] = 10.0  # the box grows: every pair is tested again
    np.testing.assert_array_equal(face_defects(grown, faces, since=(before, made_up))[0],
                                  face_defects(grown, faces)[0])
    nothing = face_defects(before, faces, since=(before, before_pairs))
    np.testing.assert_array_equal(nothing[0], before_pairs)
    np.testing.assert_array_equal(nothing[1], face_defects(before, faces)[1])


class TestBatches:
    @pytest.mark.parametrize("seed", range(3))
    def test_many_batches_on_threads_equal_one_batch_and_the_reference(self, seed, monkeypatch):
        """The full search cuts the broad phase into batches tested on several threads: the pairs found
        must not depend on the cut (here down to ~50 same-cell pairs a batch) nor on the threads."""
        import recon_core.mesh.intersect as intersect
        import recon_core.mesh.threads as threads

        rng = np.random.default_rng(300 + seed)
        verts, faces = _sphere(2)
        verts = verts + rng.normal(scale=0.08, size=verts.shape)  # folds and crossings
        soup = len(verts) + np.array([rng.choice(60, 3, replace=False) for _ in range(40)])  # loose triangles
        verts = np.concatenate([verts, rng.uniform(-1, 1, size=(60, 3))])
        faces = np.concatenate([faces, soup])
        reference = self_intersections_naive(verts, faces)
        assert len(reference) > 0
        monkeypatch.setattr(threads, "workers", lambda: 1)
        monkeypatch.setattr(intersect, "workers", lambda: 1)
        one = self_intersections(verts, faces)
        monkeypatch.setattr(intersect, "_CHUNK_PAIRS", 50)
        monkeypatch.setattr(threads, "workers", lambda: 3)
        monkeypatch.setattr(intersect, "workers", lambda: 3)
        many = self_intersections(verts, faces)
        assert len(intersect._BroadPhase(verts[faces].min(1), verts[faces].max(1)).batches(50, 3)) > 10
        np.testing.assert_array_equal(one, many)
        np.testing.assert_array_equal(many, reference)


class TestValidation:
    def test_bad_verts_shape(self):
        with pytest.raises(ValueError, match=r"verts must have shape \(V, 3\)"):
            self_intersections(np.zeros((4, 2)), np.zeros((1, 3), dtype=int))

    def test_bad_faces_shape(self):
        with pytest.raises(ValueError, match=r"faces must have shape \(F, 3\)"):
            self_intersections(np.zeros((4, 3)), np.zeros((1, 4), dtype=int))

    def test_float_faces(self):
        with pytest.raises(ValueError, match="integer"):
            degenerate_faces(np.zeros((4, 3)), np.zeros((1, 3)))

    def test_index_out_of_range(self):
        with pytest.raises(ValueError, match=r"index verts in \[0, 4\)"):
            self_intersections_naive(np.zeros((4, 3)), np.array([[0, 1, 4]]))

    def test_non_finite(self):
        verts = np.zeros((3, 3))
        verts[1, 1] = np.nan
        with pytest.raises(ValueError, match="finite"):
            self_intersections(verts, np.array([[0, 1, 2]]))

    def test_empty(self):
        assert self_intersections(np.zeros((0, 3)), np.zeros((0, 3), dtype=int)).shape == (0, 2)


def test_a_far_unused_vertex_leaves_the_tolerances_as_they_were():
    """The tolerances scale with the box of the vertices the faces use: a stray unused vertex far away (the fast test
    and its reference share that code) must not make two faces 1e-7 apart in a unit mesh touch, nor a face
    degenerate."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0],  # a face in z = 0
                      [0.2, 0.2, 1e-7], [0.2, 0.2, 1.0], [0.6, 0.2, 1.0]], dtype=np.float64)  # one 1e-7 above it
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    assert len(self_intersections(verts, faces)) == 0
    far = np.concatenate([verts, [[1e4, 1e4, 1e4]]])
    assert len(self_intersections(far, faces)) == 0
    assert not degenerate_faces(far, faces).any()
