"""Detail levels: the names ``recon-mesh --detail``, the worker and the add-on offer, and the output size each means.

A level stands for an output vertex count, the ``vertices`` argument of
:meth:`recon_core.io.inference.Reconstructor.reconstruct`: the refiner's output vertex count for
ico-sphere models (``2V - 4`` triangles), about ``2V`` faces after simplification for occupancy
models; a shape-bank model's solid is decimated to about ``2V`` faces when it has more.
"""

from __future__ import annotations

__all__ = ["DETAIL_VERTICES", "DEFAULT_DETAIL", "vertices_for_detail", "detail_for_vertices", "approx_faces"]

DETAIL_VERTICES: dict[str, int] = {"low": 642, "medium": 2562, "high": 10242}
"""Detail level -> output vertex count (keys of :data:`recon_core.network.config.VERTEX_SCHEDULES`), lowest first."""

DEFAULT_DETAIL = "medium"
"""The level the add-on starts at, and the default vertex count of the shipped models' configs."""


def _either(items) -> str:
    """``"a, b or c"``."""
    items = [str(x) for x in items]
    return ", ".join(items[:-1]) + f" or {items[-1]}"


def vertices_for_detail(detail: str) -> int:
    """Output vertex count of the level named ``detail`` ("low", "medium" or "high").

    Raises:
        ValueError: ``detail`` is not one of :data:`DETAIL_VERTICES`' names.
    """
    try:
        return DETAIL_VERTICES[detail]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown detail level {detail!r}: choose {_either(DETAIL_VERTICES)}.") from None


def detail_for_vertices(vertices: int) -> str:
    """Name of the level whose output vertex count is ``vertices`` (642, 2562 or 10242).

    Raises:
        ValueError: no level has that count.
    """
    for name, count in DETAIL_VERTICES.items():
        if count == vertices:
            return name
    raise ValueError(f"No detail level has {vertices} vertices: the levels have {_either(DETAIL_VERTICES.values())}.")


def approx_faces(detail: str) -> int:
    """About how many triangles the level gives (``2V``, rounded to hundreds), for help texts."""
    return round(2 * vertices_for_detail(detail), -2)
