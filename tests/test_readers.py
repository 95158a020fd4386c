"""Readers on small files written here: AC3D transforms and line surfaces, OBJ, a tiny .sh3f, the rules, normalisation."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from training.build_dataset import clean_mesh, geometry_hash, normalise_vertices
from training.readers import (
    SOURCE_TO_SHAPENET,
    ReaderError,
    classify_flightgear,
    classify_sh3f,
    parse_ac3d,
    parse_obj,
    read_catalog,
    read_sh3f_model,
)

# A parent rotated 90 degrees about +Y (row-major rot) and moved by (10, 0, 0), holding a child
# moved by (0, 0, 1) with one triangle, plus a line surface that must be skipped.
AC3D_NESTED = """AC3Db
MATERIAL "m" rgb 1 1 1  amb 1 1 1  emis 0 0 0  spec 0 0 0  shi 10  trans 0
OBJECT world
kids 1
OBJECT group
name "parent"
data 11
two
 lines
rot 0 0 1 0 1 0 -1 0 0
loc 10 0 0
kids 1
OBJECT poly
name "child"
loc 0 0 1
numvert 4
0 0 0
1 0 0
0 1 0
5 5 5
numsurf 2
SURF 0x10
mat 0
refs 3
0 0 0
1 1 0
2 0 1
SURF 0x12
mat 0
refs 2
0 0 0
3 1 1
kids 0
"""


def test_ac3d_composes_nested_transforms_and_skips_lines():
    mesh = parse_ac3d(AC3D_NESTED)
    assert mesh.faces.tolist() == [[0, 1, 2]]
    R = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=float)
    local = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], dtype=float) + [0, 0, 1]
    expected = local @ R.T + [10, 0, 0]
    np.testing.assert_allclose(mesh.vertices, expected)
    np.testing.assert_allclose(mesh.vertices[1], [11.0, 0.0, -1.0])  # child (1,0,1) -> rot -> (1,0,-1) -> +loc


def test_ac3d_quad_is_fan_triangulated():
    text = "AC3Db\nOBJECT poly\nnumvert 4\n0 0 0\n1 0 0\n1 1 0\n0 1 0\nnumsurf 1\nSURF 0x0\nmat 0\nrefs 4\n0 0 0\n1 0 0\n2 0 0\n3 0 0\nkids 0\n"
    assert parse_ac3d(text).faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_ac3d_rejects_other_files():
    with pytest.raises(ReaderError, match="AC3D header"):
        parse_ac3d("OBJ 1\n")


def test_obj_parses_slashes_negative_indices_and_polygons():
    mesh = parse_obj("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1/1 3//1 4\nf -4 -3 -2\nl 1 2\n")
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2]]
    with pytest.raises(ReaderError, match="out of range"):
        parse_obj("v 0 0 0\nf 1 2 3\n")


def _write_sh3f(path):
    props = (
        "id=Test\nlicense=CC0\n"
        "id#1=t#chair\nname#1=Red chair\ncategory#1=Living room\nmodel#1=/chair/chair.obj\n"
        "width#1=50\ndepth#1=60\nheight#1=90\ncreator#1=Someone\n"
        "modelRotation#1=1 0 0 0 0 1 0 -1 0\n"
        "id#2=t#lamp\nname#2=Lamp\ncategory#2=Lights\nmodel#2=/lamp/lamp.3ds\n"
        "width#2=1\ndepth#2=1\nheight#2=1\ncreator#2=Other\nlicense#2=CC-BY\n"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("PluginFurnitureCatalog.properties", props)
        zf.writestr("chair/chair.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 2\nf 1 2 3\nf 1 2 4\n")
        zf.writestr("lamp/lamp.3ds", b"\x00")


def test_sh3f_catalog_and_model(tmp_path):
    path = tmp_path / "test.sh3f"
    _write_sh3f(path)
    entries = read_catalog(str(path))
    assert [e.name for e in entries] == ["Red chair", "Lamp"]
    chair, lamp = entries
    assert chair.model == "chair/chair.obj" and chair.size_cm == (50.0, 60.0, 90.0)
    assert chair.licence == "CC0" and lamp.licence == "CC-BY" and chair.creator == "Someone"
    mesh = read_sh3f_model(str(path), chair.model, chair.model_rotation)
    # modelRotation maps (x, y, z) -> (x, z, -y): the z = 2 vertex goes up to y = 2.
    np.testing.assert_allclose(mesh.vertices[3], [0, 2, 0])
    assert mesh.faces.shape == (2, 3)
    with pytest.raises(ReaderError, match="only OBJ"):
        read_sh3f_model(str(path), lamp.model)


@pytest.mark.parametrize(
    ("name", "category", "expected"),
    [
        ("Armchair", "Living room", "chair"),
        ("Wheelchair", "Miscellaneous", None),
        ("Coffee table", "Living room", "table"),
        ("Desk lamp", "Lights", "lamp"),
        ("Television cabinet", "Living room", "cabinet"),
        ("Wall flat TV", "Living room", "display"),
        ("TV remote control", "Living room", None),
        ("Sofa 3 seats", "Living room", "sofa"),
        ("Mobile phone", "Office", "telephone"),
        ("Headphones", "Office", None),
        ("Speaker", "Living room", "loudspeaker"),
        ("Ford Focus", "Vehicles", "car"),
        ("Truck", "Vehicles", None),
        ("Rowboat", "Exterior", "watercraft"),
        ("Wine bottle", "Kitchen", "bottle"),
        ("Cactus", "Exterior", None),
    ],
)
def test_sh3f_rules(name, category, expected):
    label = classify_sh3f(name, category)
    assert (label.name if label else None) == expected
    if expected == "bottle":
        assert label.pool == "extra"
    elif expected is not None:
        assert label.pool == "core"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("AI/Aircraft/A320/Models/A320.ac", "airplane"),
        ("AI/Aircraft/A320/Models/lights/flash.ac", None),
        ("AI/Aircraft/balloon/Models/balloon1t.ac", None),
        ("Models/Maritime/Civilian/Tanker.ac", "watercraft"),
        ("Models/Maritime/Misc/RedBuoy.ac", None),
        ("Models/Aircraft/H-60.ac", None),
    ],
)
def test_flightgear_rules(path, expected):
    label = classify_flightgear(path)
    assert (label.name if label else None) == expected


def test_normalise_centres_and_scales_to_unit_diagonal():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(100, 3)) * [3, 1, 0.5] + [7, -2, 4]
    n = normalise_vertices(v)
    lo, hi = n.min(0), n.max(0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-12)
    assert np.linalg.norm(hi - lo) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="degenerate"):
        normalise_vertices(np.ones((4, 3)))


def test_clean_mesh_and_hash_ignore_vertex_order():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [9, 9, 9]], dtype=float)
    f = np.array([[0, 1, 2], [0, 0, 1]])
    cv, cf = clean_mesh(v, f)
    assert cf.tolist() == [[0, 1, 2]] and len(cv) == 3
    perm = [2, 0, 1]
    assert geometry_hash(cv, cf) == geometry_hash(cv[perm], np.argsort(perm)[cf])


def test_source_rotations_are_proper_and_send_fronts_to_minus_z():
    for R in SOURCE_TO_SHAPENET.values():
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(SOURCE_TO_SHAPENET["ac3d"] @ [-1, 0, 0], [0, 0, -1])  # FlightGear nose -X
    np.testing.assert_allclose(SOURCE_TO_SHAPENET["sh3f"] @ [0, 0, 1], [0, 0, -1])  # Sweet Home 3D front +Z
    np.testing.assert_allclose(SOURCE_TO_SHAPENET["trigger-rally"] @ [0, 1, 0], [0, 0, -1])  # Trigger front +Y
    np.testing.assert_allclose(SOURCE_TO_SHAPENET["trigger-rally"] @ [0, 0, 1], [0, 1, 0])  # Trigger up +Z
