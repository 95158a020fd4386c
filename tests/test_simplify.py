"""Tests for recon_core.mesh.simplify: the decimation mended by replaying its collapses."""

import fast_simplification
import numpy as np
import pytest

from recon_core.mesh.printable import check_printable, check_topology
from recon_core.mesh.simplify import AGGRESSIVENESS, decimate
from recon_core.mesh.volume import grid_surface


def _plates(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed solid of six random boxes, most of them one cell thin (the thin parts quadric decimation pinches)."""
    rng = np.random.default_rng(seed)
    grid = np.zeros((24, 24, 24), dtype=bool)
    for _ in range(6):
        lo = rng.integers(2, 16, 3)
        size = rng.integers(1, 10, 3)
        size[rng.integers(3)] = 1
        grid[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = True
    return grid_surface(grid, smoothing=0.6, level=0.4)


def _plain(verts, faces, target):
    sv, sf = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32), target_count=target,
                                          agg=AGGRESSIVENESS)
    return np.asarray(sv, np.float64), np.asarray(sf, np.int64)


def _printable_or_faulty_faces(verts, faces):
    """A ``defects`` callback like the shape bank's: nothing when printable, else the faulty faces' vertices."""
    from recon_core.mesh.intersect import degenerate_faces, intersecting_faces

    if check_printable(verts, faces).ok:
        return np.zeros(0, dtype=np.int64)
    bad = intersecting_faces(verts, faces) | degenerate_faces(verts, faces)
    return np.unique(faces[bad]) if bad.any() else None


def test_pinched_decimations_are_mended_into_closed_manifolds():
    """Of 60 random thin solids decimated to 200 faces, those the plain decimation leaves non-manifold (there are
    some: the test needs them) come back closed manifolds near the target; with the printable check as the
    acceptance test, printable."""
    pinched = 0
    for seed in range(60):
        verts, faces = _plates(seed)
        if len(faces) < 1000:
            continue
        sv, sf = _plain(verts, faces, 200)
        if check_topology(sf, len(sv)).closed_manifold:
            continue
        pinched += 1
        mended = decimate(verts, faces, 200)
        assert mended is not None, seed
        mv, mf, mends = mended
        assert mends >= 1
        assert check_topology(mf, len(mv)).closed_manifold
        assert 200 <= len(mf) < 2.5 * 200  # the mended regions stay at the input's resolution, the rest is decimated
        checked = decimate(verts, faces, 200, defects=_printable_or_faulty_faces)
        assert checked is not None and check_printable(checked[0], checked[1]).ok
    assert pinched >= 3


def test_a_sound_decimation_is_the_librarys_own():
    """Nothing to mend: exactly fast-simplification's output, and its replay of all the collapses is the same mesh
    vertex for vertex (what the mend's map of input to decimated vertices rests on)."""
    verts, faces = _plates(3)
    sv, sf = _plain(verts, faces, 400)
    assert check_topology(sf, len(sv)).closed_manifold
    dv, df, mends = decimate(verts, faces, 400)
    assert mends == 0
    np.testing.assert_array_equal(dv, sv)
    np.testing.assert_array_equal(df, sf)
    _, _, collapses = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32),
                                                   target_count=400, agg=AGGRESSIVENESS, return_collapses=True)
    rv, rf, _ = fast_simplification.replay_simplification(verts.astype(np.float32), faces.astype(np.int32), collapses)
    np.testing.assert_allclose(np.asarray(rv, np.float64), sv, atol=1e-6)
    assert {tuple(sorted(f)) for f in np.asarray(rf).tolist()} == {tuple(sorted(f)) for f in sf.tolist()}


def test_a_flagged_region_is_kept_at_the_inputs_resolution():
    """The defects callback flags one vertex once: the next replay keeps the input's own vertices around it."""
    verts, faces = _plates(3)
    calls = []

    def flag(sv, sf):
        calls.append(sv)
        return np.array([int(np.argmax(sv[:, 0]))]) if len(calls) == 1 else np.zeros(0, dtype=np.int64)

    mv, mf, mends = decimate(verts, faces, 400, defects=flag)
    assert mends == 1 and len(calls) == 2
    plain_v = calls[0]
    assert len(mf) > 400
    inputs = set(map(tuple, verts.astype(np.float32).tolist()))

    def exact(v):  # how many of v's vertices are input vertices, unmoved
        return len(set(map(tuple, v.astype(np.float32).tolist())) & inputs)

    assert exact(mv) > exact(plain_v)
    # the flagged corner (the largest x) is back to the input's extreme there
    assert mv[:, 0].max() == pytest.approx(verts[:, 0].max(), abs=1e-6)
    assert check_topology(mf, len(mv)).closed_manifold


def test_a_rejection_without_a_region_gives_none_and_too_many_mends_give_up():
    verts, faces = _plates(3)
    assert decimate(verts, faces, 400, defects=lambda sv, sf: None) is None
    calls = []

    def always(sv, sf):  # flags a new place each time: the extreme vertex along x, then y, then z
        calls.append(len(sf))
        return np.array([int(np.argmax(sv[:, len(calls) - 1]))])

    assert decimate(verts, faces, 400, mends=2, defects=always) is None
    assert len(calls) == 3  # the decimation and its two replays, each checked
    with pytest.raises(ValueError, match="target"):
        decimate(verts, faces, len(faces))
    with pytest.raises(ValueError, match="mends"):
        decimate(verts, faces, 400, mends=-1)


def test_a_region_already_at_full_resolution_is_not_replayed_again():
    """Flagging the same vertex again after its region was restored holds nothing more back: None, not a loop of
    identical replays."""
    verts, faces = _plates(3)
    calls = []

    def same_place(sv, sf):
        calls.append(len(sf))
        corner = verts[np.argmax(verts[:, 0])]
        return np.array([int(np.argmin(np.linalg.norm(sv - corner, axis=1)))])

    assert decimate(verts, faces, 400, mends=3, defects=same_place) is None
    assert len(calls) < 4


@pytest.mark.parametrize("seed", [16, 33, 45])
def test_collapse_map_equals_the_replays_map(seed):
    """The survivor of each input vertex's chain, numbered among the survivors the decimated faces use: the
    library's replay's map wherever that vertex is in a face (both point into the same decimated mesh)."""
    from recon_core.mesh.simplify import collapse_map

    verts, faces = _plates(seed)
    v32, f32 = verts.astype(np.float32), faces.astype(np.int32)
    sv, _, collapses = fast_simplification.simplify(v32, f32, target_count=200, agg=AGGRESSIVENESS,
                                                    return_collapses=True)
    _, _, reference = fast_simplification.replay_simplification(v32, f32, collapses)
    mapping = collapse_map(faces, len(verts), collapses)
    used = mapping >= 0
    assert used.sum() > 0.9 * len(verts)
    np.testing.assert_array_equal(mapping[used], np.asarray(reference)[used])
    assert mapping.max() + 1 == len(sv)


def test_two_threads_decimating_at_once_get_their_own_meshes():
    """fast-simplification keeps its working mesh in one global: two threads decimating at once (a library user's
    ThreadPoolExecutor over one Reconstructor) mixed their meshes, an IndexError or another mesh's faces. Each result
    is the one a single thread gets."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    meshes = [_plates(seed) for seed in range(6)]
    jobs = [(v, f, max(8, len(f) // 4)) for v, f in meshes] * 4
    alone = [decimate(v, f, t) for v, f, t in jobs]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns between the library's steps, as a busy process's do
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda job: decimate(*job), jobs))
    finally:
        sys.setswitchinterval(interval)
    for a, b in zip(alone, together):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_allclose(a[0], b[0])
