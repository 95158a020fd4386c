"""recon_core.mesh.detail: the detail levels and the vertex count each stands for."""

from __future__ import annotations

import pytest

from recon_core.mesh.detail import (
    DEFAULT_DETAIL, DETAIL_VERTICES, approx_faces, detail_for_vertices, vertices_for_detail,
)
from recon_core.network.config import VERTEX_SCHEDULES


def test_levels_are_model_vertex_counts_lowest_first():
    assert list(DETAIL_VERTICES) == ["low", "medium", "high"]
    assert set(DETAIL_VERTICES.values()) <= set(VERTEX_SCHEDULES)
    assert list(DETAIL_VERTICES.values()) == sorted(DETAIL_VERTICES.values())
    assert DEFAULT_DETAIL in DETAIL_VERTICES


def test_names_and_counts_round_trip():
    assert [vertices_for_detail(name) for name in ("low", "medium", "high")] == [642, 2562, 10242]
    for name, count in DETAIL_VERTICES.items():
        assert detail_for_vertices(count) == name


@pytest.mark.parametrize("bad", ["ultra", "Low", "", None, 642])
def test_unknown_level_is_one_clear_sentence(bad):
    with pytest.raises(ValueError) as err:
        vertices_for_detail(bad)
    assert str(err.value) == f"Unknown detail level {bad!r}: choose low, medium or high."


def test_unknown_count_names_the_counts():
    with pytest.raises(ValueError, match=r"^No detail level has 1000 vertices: the levels have 642, 2562 or 10242\.$"):
        detail_for_vertices(1000)


def test_approx_faces_is_twice_the_vertices_in_hundreds():
    assert [approx_faces(name) for name in DETAIL_VERTICES] == [1300, 5100, 20500]
