"""The shape bank: built from a fake renders folder, selection against a brute-force reference, and the main job.

The fake data set (written directly, like tests/test_dataset.py): four train models of known
categories (two chairs sharing the manifest group "chairs", a sofa without a group, a table in
group "tables"), one train model of a synset outside the 13 categories (not in the bank), and
one val chair. Every model has a box mesh of its own shape (shapenet/<synset>/<id>/models/
model_normalized.obj), points.npz, two photo views and one sketch view (same picture, "sketch": true).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon_core.io.image import load_image
from recon_core.io.inference import SNAP_QUERY_POINTS
from recon_core.io.weights import load_model, save_model
from recon_core.mesh.camera import VIEW_TO_OUTPUT, Camera, look_at, stand_upright
from recon_core.mesh.printable import check_printable
from recon_core.mesh.volume import GRID_BOUND
from recon_core.network.categories import CATEGORIES, category_index
from recon_core.network.config import ModelConfig
from recon_core.network.model import build_model
from recon_core.network.retrieval import SHAPE_CANDIDATES, SHAPE_STATS_STRIDE, ShapeBank, embed_image
from training.build_shape_bank import attach_bank, build_shape_bank, main
from training.render import sample_surface

from tests.test_dataset import _write_view

CHAIR, SOFA, TABLE, EXTRA = "03001627", "04256520", "04379232", "02808440"  # EXTRA: not one of the 13, not held out
# (synset, model id, split, manifest group or None, box low corner, box high corner, colour)
MODELS = (
    (CHAIR, "chair_a", "train", "chairs", (-0.2, -0.4, -0.2), (0.2, 0.4, 0.2), (200, 40, 40)),
    (CHAIR, "chair_b", "train", "chairs", (-0.25, -0.35, -0.15), (0.2, 0.45, 0.25), (180, 60, 30)),
    (TABLE, "table_a", "train", "tables", (-0.45, -0.15, -0.3), (0.45, 0.15, 0.3), (40, 40, 200)),
    (SOFA, "sofa_a", "train", None, (-0.45, -0.2, -0.2), (0.45, 0.1, 0.2), (30, 160, 30)),
    (EXTRA, "extra_a", "train", "chairs", (-0.3, -0.3, -0.3), (0.3, 0.3, 0.3), (90, 90, 90)),
    (CHAIR, "chair_val", "val", None, (-0.2, -0.3, -0.2), (0.25, 0.4, 0.2), (120, 20, 120)),
)
BANK_IDS = ["chair_a", "chair_b", "sofa_a", "table_a"]
"""discover's order: train models of known categories, by (synset, model id)."""
SKETCH_VIEW = 2
TINY_MODEL = dict(backbone="resnet18", backbone_norm="group", image_size=64, fpn_channels=16, coarse_hidden=32,
                  hidden_dim=16, attention_heads=2, gconv_layers=1, vertices=642)
"""The ModelConfig fields of a tiny sphere network (random weights: the bank, not the network, is tested)."""


# ------------------------------------------------------------------------------------------ fake data


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    return np.asarray(lo) + corners * (np.asarray(hi) - np.asarray(lo)), faces


def _cameras(k: int) -> list[Camera]:
    """Three cameras of model ``k`` (a different azimuth per model, so every view has its own rotation)."""
    az = 17.0 * k
    return [look_at(30 + az, 20, 1.9, 40.0), look_at(200 + az, -15, 2.1, 35.0), look_at(300 + az, 35, 2.0, 40.0)]


def write_fake_data(root: Path) -> tuple[Path, Path]:
    """Write the fake data set of :data:`MODELS` under ``root``; returns its ``(shapenet, renders)`` folders."""
    shapenet, renders = root / "shapenet", root / "renders"
    rng = np.random.default_rng(0)
    records = []
    for k, (synset, model_id, split, group, lo, hi, colour) in enumerate(MODELS):
        rec = {"synset": synset, "model_id": model_id, "split": split}
        if group is not None:
            rec["group"] = group
        records.append(rec)
        verts, faces = _box(lo, hi)
        mesh_dir = shapenet / synset / model_id / "models"
        mesh_dir.mkdir(parents=True)
        trimesh.Trimesh(verts, faces, process=False).export(mesh_dir / "model_normalized.obj")
        folder = renders / synset / model_id
        folder.mkdir(parents=True)
        points, normals = sample_surface(verts, faces, 3000, rng)
        np.savez(folder / "points.npz", points=points, normals=normals)
        for view, camera in enumerate(_cameras(k)):
            _write_view(folder, view, camera, verts, faces, sketch=view == SKETCH_VIEW, colour=colour, shaded=True)
    (shapenet / "manifest.json").write_text(json.dumps({"models": records}))
    return shapenet, renders


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_fake_data(tmp_path_factory.mktemp("bank_fake"))


def _rgba(renders: Path, model_id: str, view: int) -> tuple[np.ndarray, np.ndarray]:
    synset = next(m[0] for m in MODELS if m[1] == model_id)
    rgb, alpha, _ = load_image(renders / synset / model_id / f"{view:03d}.png")
    return rgb, alpha


# ------------------------------------------------------------------------------------------ the bank


SIZES = dict(dim=4, num_points=64, resolution=24)


@pytest.fixture(scope="module")
def shape_bank(fake):
    shapenet, renders = fake
    return build_shape_bank(shapenet, renders, **SIZES)


@pytest.fixture(scope="module")
def bank_module(shape_bank):
    tensors, info = shape_bank
    s = info["sizes"]
    bank = ShapeBank(s["bank_shapes"], s["bank_views"], s["bank_dim"], s["bank_points"], s["bank_grid_bytes"],
                     s["bank_resolution"])
    bank.load_state_dict(tensors)
    return bank


def _notes(result) -> list[str]:
    """A result's notes without the note that the model is unsure what the object is (the tiny random networks here
    are unsure of every picture; tests/test_cli.py checks that note)."""
    return [n for n in result.notes if not n.startswith("the model is unsure what the object is")]


def _banked(shape_bank, folder, fields: dict, seed: int, shape_weight: float):
    """A tiny network of ``fields`` (random weights of ``seed``, saved as trained) with the fake bank attached."""
    tensors, info = shape_bank
    torch.manual_seed(seed)
    save_model(build_model(ModelConfig(**fields)), folder / "base", {"steps": 0})
    return attach_bank(folder / "base", tensors, info, folder / "banked", shape_weight=shape_weight)


@pytest.fixture(scope="module")
def banked_model(shape_bank, tmp_path_factory):
    """A tiny sphere network with the fake bank attached."""
    return _banked(shape_bank, tmp_path_factory.mktemp("banked"), TINY_MODEL, seed=0, shape_weight=2.0)


def write_banked_model(folder: Path) -> tuple[Path, Path]:
    """:func:`banked_model`'s model without pytest (the add-on's tests build it in a child process, so Blender's
    never imports torch): fake data and the model written under ``folder``.

    Returns:
        ``(model stem, picture)``: the picture is the val chair's first view (RGBA).
    """
    fake_data = write_fake_data(folder / "fake")
    model = _banked(build_shape_bank(*fake_data, **SIZES), folder, TINY_MODEL, seed=0, shape_weight=2.0)
    synset = next(m[0] for m in MODELS if m[1] == "chair_val")
    return model, fake_data[1] / synset / "chair_val" / "000.png"


def test_bank_holds_every_known_train_model_and_photo_view(shape_bank):
    tensors, info = shape_bank
    assert info["model_ids"] == BANK_IDS
    assert info["sizes"]["bank_views"] == 2 * len(BANK_IDS)  # the sketch views are not indexed
    assert tensors["view_shape"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [int(c) for c in tensors["shape_category"]] == [category_index(n) for n in ("chair", "chair", "sofa",
                                                                                          "table")]
    assert tensors["grid_offsets"][-1] == tensors["grid_data"].numel()


def test_grids_are_hollow_slabs_on_each_box(bank_module):
    r = SIZES["resolution"]
    h = 2 * GRID_BOUND / r
    centres = -GRID_BOUND + (np.arange(r) + 0.5) * h
    for m, model_id in enumerate(BANK_IDS):
        lo, hi = next((np.array(x[4]), np.array(x[5])) for x in MODELS if x[1] == model_id)
        grid = bank_module.grid(m)
        solid = np.argwhere(grid)
        pos = centres[solid]
        # every solid cell is within a cell of the box's surface, none deep inside
        inside_by = np.minimum(pos - lo, hi - pos).min(axis=1)
        assert (np.abs(inside_by) <= h).all()
        assert not grid[tuple(np.searchsorted(centres, (lo + hi) / 2))]  # the centre stays hollow
        # and every face of the box has solid cells: the slab covers the whole surface
        for axis in range(3):
            for side in (lo, hi):
                on_face = np.abs(pos[:, axis] - side[axis]) <= h
                assert on_face.sum() >= 4


def _reference_select(bank: ShapeBank, embedding: np.ndarray, points: np.ndarray, weight: float,
                      category: int | None) -> int:
    return _reference_ranked(bank, embedding, points, weight, category, 1)[0][0]


def _reference_ranked(bank: ShapeBank, embedding: np.ndarray, points: np.ndarray, weight: float,
                      category: int | None, count: int) -> list[tuple[int, float]]:
    """Brute force in numpy: loop over views, pose each shape, Chamfer by full distance matrices;
    the shape z-score's statistics over the candidates plus every SHAPE_STATS_STRIDE-th view; then the
    candidates by score, each model's first (best) view only, the first ``count``."""
    mean = bank.embed_mean.double().numpy()
    basis = bank.embed_basis.double().numpy()
    q = (embedding - mean) @ basis
    n = bank.view_features.shape[0]

    def shape_distance(row: int) -> float:
        rot = bank.view_rotation[row].double().numpy()
        posed = bank.shape_points[bank.view_shape[row]].double().numpy() @ rot.T
        d2 = ((points[:, None, :] - posed[None]) ** 2).sum(-1)
        return d2.min(1).mean() + d2.min(0).mean()

    pic = np.array([((bank.view_features[row].double().numpy() - q) ** 2).sum() for row in range(n)])
    if category is not None:
        allowed = bank.shape_category[bank.view_shape].numpy() == category
        if allowed.any():
            pic[~allowed] = np.inf
    finite = np.isfinite(pic)
    candidates = np.argsort(pic, kind="stable")[: min(SHAPE_CANDIDATES, finite.sum())]
    score = (pic[candidates] - pic[finite].mean()) / pic[finite].std(ddof=1)
    if weight:
        d = np.array([shape_distance(r) for r in list(candidates) + list(range(0, n, SHAPE_STATS_STRIDE))])
        score = score + weight * (d[: len(candidates)] - d.mean()) / d.std(ddof=1)
    ranked, seen = [], set()
    for i in np.argsort(score, kind="stable"):
        model = int(bank.view_shape[candidates[i]])
        if model not in seen and len(ranked) < count:
            seen.add(model)
            ranked.append((int(candidates[i]), float(score[i])))
    return ranked


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weight", [0.0, 1.0, 3.0])
def test_select_matches_brute_force(bank_module, fake, seed, weight):
    _, renders = fake
    rng = np.random.default_rng(seed)
    model_id = BANK_IDS[seed % len(BANK_IDS)]
    rgb, alpha = _rgba(renders, model_id, seed % 2)
    embedding = embed_image(rgb, alpha)
    points = rng.normal(scale=0.25, size=(40, 3))
    category = None if seed < 2 else category_index("sofa")
    got = bank_module.select(torch.from_numpy(embedding), torch.from_numpy(points), weight, category)
    assert got == _reference_select(bank_module, embedding.astype(np.float64), points, weight, category)


def test_the_shape_distance_can_overrule_the_picture(bank_module, fake):
    """A chair's picture with the table's posed points: the picture alone picks the chair, a heavy shape weight the table."""
    _, renders = fake
    rgb, alpha = _rgba(renders, "chair_a", 0)
    embedding = torch.from_numpy(embed_image(rgb, alpha))
    table_row = int(np.flatnonzero(bank_module.view_shape.numpy() == BANK_IDS.index("table_a"))[0])
    points = bank_module.shape_points[BANK_IDS.index("table_a")] @ bank_module.view_rotation[table_row].T
    assert int(bank_module.view_shape[bank_module.select(embedding, points, 0.0)]) == BANK_IDS.index("chair_a")
    assert bank_module.select(embedding, points, 50.0) == table_row


def test_view_mesh_is_printable_and_posed(bank_module):
    for row in (0, 3, 7):
        verts, faces = bank_module.view_mesh(row)
        assert check_printable(verts, faces).ok
        world = verts @ bank_module.view_rotation[row].double().numpy()  # undo the pose
        m = int(bank_module.view_shape[row])
        pts = bank_module.shape_points[m].double().numpy()
        h = 2 * GRID_BOUND / SIZES["resolution"]
        assert np.abs(world.min(0) - pts.min(0)).max() < 1.5 * h
        assert np.abs(world.max(0) - pts.max(0)).max() < 1.5 * h


def test_bank_needs_sizes():
    with pytest.raises(ValueError, match="build_shape_bank"):
        ShapeBank(0, 4, 2, 8, 10, 16)


def test_banked_model_round_trips_and_reconstructs_the_selected_solid(banked_model, fake):
    from recon_core.io.inference import Reconstructor

    _, renders = fake
    model, meta = load_model(banked_model)
    assert model.config.shape_bank and meta["shape_bank"]["train_models"] == len(BANK_IDS)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=0), meta)  # the bank's own pose
    rgb, alpha = _rgba(renders, "chair_val", 0)
    result = rec.reconstruct(rgb, alpha, smooth=False, vertices=10242)  # high detail: the solid as meshed
    assert result.report.ok, result.report
    assert "retrieval" in result.timings
    # the output is the bank's solid of the view that select() picks for this picture and reconstruction
    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        out = model(prepare_image(rgb, alpha, model.config.image_size).image[None])  # its own level, at any detail
        verts = out.verts[0]
        step = max(1, verts.shape[0] // SNAP_QUERY_POINTS)
        assert model.config.bank_shape_weight == 2.0
        row = model.bank.select(torch.from_numpy(embed_image(rgb, alpha)), verts[::step], 2.0)
    expected, _ = model.bank.view_mesh(row, model.config.bank_smoothing, model.config.bank_level)
    expected = expected @ VIEW_TO_OUTPUT.T
    assert np.allclose(np.sort(result.verts, axis=0), np.sort(expected, axis=0), atol=1e-6)
    # with a category, the solid is one of that category's
    sofa = rec.reconstruct(rgb, alpha, category="sofa", smooth=False, vertices=10242)
    sofa_rows = np.flatnonzero(model.bank.view_shape.numpy() == BANK_IDS.index("sofa_a"))
    candidates = [model.bank.view_mesh(int(r), model.config.bank_smoothing, model.config.bank_level)[0] @ VIEW_TO_OUTPUT.T
                  for r in sofa_rows]
    assert any(c.shape == sofa.verts.shape and np.allclose(np.sort(c, 0), np.sort(sofa.verts, 0), atol=1e-6)
               for c in candidates)


def test_main_writes_a_model_and_reports_bad_input(fake, banked_model, tmp_path, capsys):
    shapenet, renders = fake
    base = banked_model.parent / "base"
    args = ["--model", str(base), "--shapenet", str(shapenet), "--renders", str(renders), "--dim", "3",
            "--points", "32", "--resolution", "16"]
    assert main(args + ["--out", str(tmp_path / "m")]) == 0
    assert "4 shapes, 8 views" in capsys.readouterr().out
    model, _ = load_model(tmp_path / "m")
    assert model.bank.resolution == 16 and model.bank.shape_points.shape == (4, 32, 3)
    assert main(args[:6] + ["--renders", str(tmp_path / "nothing"), "--out", str(tmp_path / "n")]) == 2
    assert "renders" in capsys.readouterr().err
    assert main(args + ["--shape-weight", "-1", "--out", str(tmp_path / "w")]) == 2
    assert "--shape-weight" in capsys.readouterr().err
    assert not list(tmp_path.glob("n.*")) and not list(tmp_path.glob("w.*"))


@pytest.mark.parametrize("extra,named", [(["--limit", "0"], "--limit"), (["--limit", "-1"], "--limit"),
                                         (["--resolution", "100000"], "--resolution"), (["--dim", "0"], "--dim"),
                                         (["--model", "MISSING"], "MISSING"), (["--out", "FILE/x"], "--out")])
def test_main_refuses_bad_input_before_building_the_bank(fake, tmp_path, capsys, monkeypatch, extra, named):
    """Bad values, a model that is not there and an --out under a file: one sentence, exit 2, before any work."""
    import training.build_shape_bank as module

    def never(*args, **kwargs):
        raise AssertionError("the bank was built before the input was checked")

    monkeypatch.setattr(module, "build_shape_bank", never)
    (tmp_path / "FILE").write_text("")
    shapenet, renders = fake
    args = ["--shapenet", str(shapenet), "--renders", str(renders), "--out", str(tmp_path / "m")]
    extra = [str(tmp_path / a) if a in ("MISSING", "FILE/x") else a for a in extra]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("m.*"))


@pytest.fixture(scope="module")
def large_bank():
    """A random bank with more views than SHAPE_CANDIDATES, so the candidate cut and the stride sample matter."""
    rng = np.random.default_rng(5)
    m, n, dim, p = 30, 3 * SHAPE_CANDIDATES, 6, 20
    bank = ShapeBank(m, n, dim, p, 1, 4)
    from recon_core.network.retrieval import EMBED_DIM

    q, _ = np.linalg.qr(rng.normal(size=(EMBED_DIM, dim)))
    rots = np.stack([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(n)])
    bank.load_state_dict({
        "embed_mean": torch.tensor(rng.normal(size=EMBED_DIM) * 0.01, dtype=torch.float32),
        "embed_basis": torch.tensor(q, dtype=torch.float32),
        "view_features": torch.tensor(rng.normal(size=(n, dim)) * 0.1, dtype=torch.float32),
        "view_shape": torch.tensor(rng.integers(0, m, n)),
        "view_rotation": torch.tensor(rots, dtype=torch.float32),
        "shape_points": torch.tensor(rng.normal(scale=0.3, size=(m, p, 3)), dtype=torch.float32),
        "shape_category": torch.tensor(rng.integers(0, 3, m)),
        "grid_data": torch.zeros(1, dtype=torch.uint8),
        "grid_offsets": torch.zeros(m + 1, dtype=torch.long),
    })
    return bank


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weight", [0.0, 1.0, 4.0])
def test_select_with_candidate_cut_matches_brute_force(large_bank, seed, weight):
    rng = np.random.default_rng(seed)
    from recon_core.network.retrieval import EMBED_DIM

    embedding = rng.random(EMBED_DIM)
    embedding /= np.linalg.norm(embedding)
    points = rng.normal(scale=0.3, size=(25, 3))
    category = None if seed == 0 else int(seed)
    got = large_bank.select(torch.tensor(embedding, dtype=torch.float32), torch.tensor(points, dtype=torch.float32),
                            weight, category)
    assert got == _reference_select(large_bank, embedding.astype(np.float32).astype(np.float64), points, weight,
                                    category)
    if category is not None:
        assert int(large_bank.shape_category[large_bank.view_shape[got]]) == category


@pytest.mark.parametrize("seed", range(3))
def test_ranked_gives_the_best_view_of_each_of_the_nearest_models(large_bank, seed):
    """ranked() against the brute force: the same rows in the same order, each a different model, scores rising;
    its first is select()'s choice."""
    rng = np.random.default_rng(10 + seed)
    from recon_core.network.retrieval import EMBED_DIM

    embedding = rng.random(EMBED_DIM)
    embedding /= np.linalg.norm(embedding)
    points = rng.normal(scale=0.3, size=(25, 3))
    args = (torch.tensor(embedding, dtype=torch.float32), torch.tensor(points, dtype=torch.float32), 1.0, None)
    got = large_bank.ranked(*args, 5)
    expected = _reference_ranked(large_bank, embedding.astype(np.float32).astype(np.float64), points, 1.0, None, 5)
    assert [r for r, _ in got] == [r for r, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-4, atol=1e-4)
    assert len({int(large_bank.view_shape[r]) for r, _ in got}) == 5
    assert [s for _, s in got] == sorted(s for _, s in got)
    assert got[0][0] == large_bank.select(*args)
    with pytest.raises(ValueError, match="count must be at least 1"):
        large_bank.ranked(*args, 0)


def test_shape_distances_equal_knn(large_bank):
    from pytorch3d.ops import knn_points

    points = torch.randn(30, 3) * 0.3
    rows = torch.arange(0, 700, 7)
    got = large_bank.shape_distances(points, rows)
    posed = large_bank.shape_points[large_bank.view_shape[rows]] @ large_bank.view_rotation[rows].transpose(1, 2)
    q = points[None].expand(len(rows), -1, -1).contiguous()
    expected = knn_points(q, posed, K=1).dists[..., 0].mean(1) + knn_points(posed, q, K=1).dists[..., 0].mean(1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_an_empty_solid_keeps_the_networks_reconstruction(shape_bank, tmp_path, fake, caplog):
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.volume import pack_grid

    tensors, info = shape_bank
    r = info["sizes"]["bank_resolution"]
    blob = np.frombuffer(pack_grid(np.zeros((r, r, r), bool)), dtype=np.uint8)
    m = info["sizes"]["bank_shapes"]
    empty = {**tensors, "grid_data": torch.from_numpy(np.tile(blob, m).copy()),
             "grid_offsets": torch.arange(m + 1) * len(blob)}
    empty_info = {**info, "sizes": {**info["sizes"], "bank_grid_bytes": m * len(blob)}}
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(**TINY_MODEL)), tmp_path / "base", {"steps": 0})
    stem = attach_bank(tmp_path / "base", empty, empty_info, tmp_path / "empty")
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    result = Reconstructor.from_file(stem).reconstruct(rgb, alpha)
    assert result.report.ok and len(result.verts) == 642  # the network's own 642-vertex mesh, repaired
    assert "empty" in caplog.text


def test_attach_bank_refuses_an_untrained_model(shape_bank, tmp_path):
    tensors, info = shape_bank
    (tmp_path / "cfg.json").write_text(json.dumps({"model": TINY_MODEL}))  # a config without its weights file
    with pytest.raises(ValueError, match="Model weights not found: there is no .*cfg.safetensors"):
        attach_bank(tmp_path / "cfg", tensors, info, tmp_path / "out")
    (tmp_path / "cfg.json").write_text(json.dumps({"model": TINY_MODEL, "trained": False}))  # random on purpose
    with pytest.raises(ValueError, match="no trained weights"):
        attach_bank(tmp_path / "cfg", tensors, info, tmp_path / "out")


def test_a_snapped_mesh_that_fails_the_check_is_repaired(banked_model, fake, monkeypatch):
    """The final printable check guards the bank's output too: an open solid goes through make_printable."""
    import trimesh

    from recon_core.io.inference import Reconstructor

    box = trimesh.creation.box(extents=(0.3, 0.4, 0.2))
    open_box = (np.asarray(box.vertices), np.asarray(box.faces)[1:])  # one triangle missing: not watertight
    model, meta = load_model(banked_model)
    model = _with_config(model, bank_carve=False)  # a carved solid is meshed again from its grid, not from shape_mesh
    monkeypatch.setattr(type(model.bank), "view_mesh", lambda self, row, smoothing=0.0, level=0.5: open_box)
    monkeypatch.setattr(type(model.bank), "shape_mesh", lambda self, shape, smoothing=0.0, level=0.5: open_box)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    result = Reconstructor(model, meta).reconstruct(rgb, alpha)
    assert result.report.ok and result.repair.path != "original"


def test_inconsistent_banks_are_refused_when_loading(banked_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from recon_core.io.weights import WeightsError

    state = load_file(str(banked_model.with_suffix(".safetensors")))
    meta = json.loads(banked_model.with_suffix(".json").read_text())
    for name, change, message in [
        ("bad_index", lambda st: st["bank.view_shape"].fill_(99), "view_shape"),
        ("bad_offsets", lambda st: st["bank.grid_offsets"].__setitem__(-1, 1), "grid_offsets"),
        ("nan_points", lambda st: st["bank.shape_points"].fill_(float("nan")), "shape_points"),
    ]:
        broken = {k: v.clone() for k, v in state.items()}
        change(broken)
        save_file(broken, str(tmp_path / f"{name}.safetensors"))
        shutil.copy(banked_model.with_suffix(".json"), tmp_path / f"{name}.json")
        with pytest.raises(WeightsError, match=message):
            load_model(tmp_path / name)
    meta["model"]["bank_views"] = 0  # shape_bank on, no views: not buildable
    (tmp_path / "zero.json").write_text(json.dumps({**meta, "trained": False}))  # built, then refused
    with pytest.raises(WeightsError, match="buildable"):
        load_model(tmp_path / "zero")


def test_init_from_a_banked_model_copies_the_network_only(banked_model):
    from training.train import _load_init_weights

    init, _ = load_model(banked_model)
    model = build_model(ModelConfig(**TINY_MODEL))  # no bank: what train.py builds from a training config
    _load_init_weights(model, init)
    for k, v in model.state_dict().items():
        assert torch.equal(v, init.state_dict()[k]), k
    assert model.bank is None


def test_a_banked_models_solid_is_decimated_to_the_requested_detail(banked_model, fake):
    """The solid (5,000-6,000 faces here) is decimated to about 2 faces per requested vertex, stays
    printable and close to the full solid; a detail above its size leaves it as meshed."""
    from pytorch3d.ops import knn_points

    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)  # the picture picks the solid
    full = rec.reconstruct(rgb, alpha, vertices=10242)
    low = rec.reconstruct(rgb, alpha, vertices=642)
    assert len(full.faces) > 2 * 1.2 * 642  # big enough to be decimated
    assert len(low.faces) <= 1.2 * 2 * 642 and low.report.ok and check_printable(low.verts, low.faces).ok
    assert any(step.startswith("decimated to") for step in low.repair.steps)
    assert not any(step.startswith("decimated to") for step in full.repair.steps)
    # the fake bank's boxes are hollow slabs: the one note is of the pocket kept inside
    assert [n[:27] for n in _notes(low) + _notes(full)] == ["the mesh holds 1 sealed hol"] * 2
    # every decimated vertex lies near a vertex of the full solid: within 5 % of its size (about one cell of
    # this bank's 24-cell grid; the full solid's vertices are ~0.2 cell apart)
    d = knn_points(torch.tensor(low.verts, dtype=torch.float32)[None], torch.tensor(full.verts, dtype=torch.float32)[None])
    assert float(d.dists.max().sqrt()) < 0.05 * float(np.ptp(full.verts, axis=0).max())


def test_a_solid_that_cannot_be_decimated_is_written_whole_with_a_note(banked_model, fake, monkeypatch):
    """When the decimation cannot be mended (simplify.decimate gives None), the user is told that the detail was
    not reached: the full solid, printable, with a note naming the faces asked for and written."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import simplify

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    goals = []
    monkeypatch.setattr(simplify, "decimate", lambda verts, faces, target, **kwargs: goals.append(target))
    result = rec.reconstruct(rgb, alpha, vertices=642)
    # the detail's size, twice, 4 and 8 times it (the solid has 12,664 faces: 16 times would not simplify it)
    assert goals == [1284, 2568, 5136, 10272]
    assert result.report.ok and len(result.faces) > 2 * 1.2 * 642
    assert _notes(result)[:-1] == [f"the solid could not be simplified to about 1,284 faces and stay printable: it is "
                                   f"written whole, {len(result.faces):,} faces (simplify it in your modeller if need be)"]
    assert _notes(result)[-1].startswith("the mesh holds 1 sealed hollow pocket")  # the fake bank's hollow slabs


def test_a_stand_in_for_the_reconstruction_is_said(banked_model, fake, monkeypatch):
    """When the repair's last resort (the convex hull or the bounding box) is the output, a note says so."""
    import trimesh

    from recon_core.io import inference

    model, meta = load_model(banked_model)
    model = _with_config(model, bank_carve=False)

    box = trimesh.creation.box(extents=(0.3, 0.4, 0.2))
    open_box = (np.asarray(box.vertices), np.asarray(box.faces)[1:])  # open: the repair falls back to its hull
    monkeypatch.setattr(type(model.bank), "view_mesh", lambda self, row, smoothing=0.0, level=0.5: open_box)
    monkeypatch.setattr(type(model.bank), "shape_mesh", lambda self, shape, smoothing=0.0, level=0.5: open_box)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    result = inference.Reconstructor(model, meta).reconstruct(rgb, alpha)
    assert result.report.ok and result.repair.path in ("hull", "box"), result.repair.path
    stand_in = {"hull": "its convex hull", "box": "its bounding box"}[result.repair.path]
    assert _notes(result)[-1] == f"the reconstruction could not be made printable: {stand_in} stands in for it"


def test_solid_fills_the_sealed_pockets_of_the_output(banked_model, fake):
    """The bank's solids keep each closed part's walls, so the output holds sealed pockets (parts enclosing a
    negative volume); ``solid=True`` drops exactly those, checks the result again and says how many. Undecimated
    (high detail), the filled output is the hollow one less its pockets; decimated (low), the pockets are dropped
    before the decimation, so the detail's faces all go to the outer surface: more of them than the hollow
    output's outer parts hold, and the same solid within the decimation's error."""
    import trimesh

    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0, bank_carve=False), meta)

    def parts(result):
        mesh = trimesh.Trimesh(result.verts, result.faces, process=False)
        return sorted(((float(p.volume), len(p.faces)) for p in mesh.split(only_watertight=False)))

    for vertices in (10242, 642):  # unsmoothed: the smoothing keeps each output's own volume, not its parts'
        hollow = rec.reconstruct(rgb, alpha, vertices=vertices, smooth=False)
        filled = rec.reconstruct(rgb, alpha, vertices=vertices, solid=True, smooth=False)
        pockets = [v for v, _ in parts(hollow) if v < 0]
        assert pockets, "the fake bank's boxes are hollow slabs: their solid has a pocket"
        outer = [(v, n) for v, n in parts(hollow) if v > 0]
        assert filled.report.ok and all(v > 0 for v, _ in parts(filled)) and len(parts(filled)) == len(outer)
        s = "s" if len(pockets) > 1 else ""
        share = -sum(pockets) / sum(v for v, _ in outer)  # the pockets' share of the filled solid's volume
        them = "them" if s else "it"  # one pocket: "prints it hollow"
        kept = (f"the mesh holds {len(pockets)} sealed hollow pocket{s} ({share:.0%} of its volume): a filament "
                f"printer prints {them} hollow; resin and powder printers trap material in {them}, and --solid (the "
                f"add-on's Fill Hollow Pockets) fills {them}")
        assert _notes(hollow)[-1] == kept, "without solid, the pockets kept are said"
        filled_note = f"filled {len(pockets)} sealed hollow pocket{s} inside the solid"
        assert _notes(filled) == [*_notes(hollow)[:-1], filled_note]
        if vertices == 10242:  # not decimated: exactly the outer parts
            assert not any(step.startswith("decimated") for step in filled.repair.steps)
            assert parts(filled) == [pytest.approx(p) for p in outer]
            assert filled.report.volume == pytest.approx(hollow.report.volume - sum(pockets))
        else:
            assert any(step.startswith("decimated") for step in filled.repair.steps)
            assert len(filled.faces) > sum(n for _, n in outer), "the pockets' faces went to the outer surface"
            assert len(filled.faces) <= 1.2 * 2 * 642
            assert filled.report.volume == pytest.approx(hollow.report.volume - sum(pockets), rel=0.01)


def test_solid_says_so_when_the_bank_solid_has_no_pocket(banked_model, fake, monkeypatch):
    """A bank solid without a sealed pocket (here the filling finds none) gets the note that there was none to fill,
    as --help promises a note; without ``solid``, no note of pockets."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import repair

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0, bank_carve=False), meta)
    monkeypatch.setattr(repair, "fill_cavities", lambda verts, faces: (verts, faces, 0))
    filled = rec.reconstruct(rgb, alpha, vertices=642, solid=True)
    assert filled.confidence is not None, "the bank's solid, not the network's mesh"
    assert filled.notes.count("no sealed hollow pocket to fill inside the solid (--solid, the add-on's Fill Hollow "
                              "Pockets)") == 1
    assert not any("pocket" in n for n in rec.reconstruct(rgb, alpha, vertices=642).notes)


def test_walls_too_thin_to_print_at_the_height_asked_are_said(banked_model, fake):
    """At a height, the share of the surface thinner than a filament printer's wall is said with its area and median
    (a figure recomputed here from the written mesh); printed large enough, or without a height (no size to print
    at), no note."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.thickness import THIN_WALL_AREA_MM2, THIN_WALL_MM
    from recon_core.mesh import repair
    from recon_core.mesh.thickness import thin_walls

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)

    def thin_notes(result):
        return [n for n in result.notes if n.startswith("walls thinner than")]

    small = rec.reconstruct(rgb, alpha, vertices=642, height_mm=8.0)
    thin = thin_walls(small.verts, small.faces, THIN_WALL_MM)
    assert thin.area >= THIN_WALL_AREA_MM2, "the fake bank's hollow slabs have thin walls at 8 mm"
    share = 100 * thin.area / thin.surface
    assert 10 <= thin.area < 1000 and 10 <= share < 99.5
    # the fake bank's slabs are hollow: their thin walls are the pockets' shells, which filling leaves fewer of
    filled = thin_walls(*repair.fill_cavities(small.verts, small.faces)[:2], THIN_WALL_MM).area
    assert filled < 0.5 * thin.area
    assert thin_notes(small) == [
        f"walls thinner than 0.8 mm cover {thin.area:,.0f} mm² of it ({share:.0f}% of the surface; {thin.median:.2g} mm "
        "thick in the median there; most of them are the shells of its sealed pockets, and filled (--solid, the "
        f"add-on's Fill Hollow Pockets) {filled:.2g} mm² are left): thin walls print weak and break easily, and a "
        "filament printer may leave upright ones out; print it taller (--height-mm, the add-on's Height) or thicken "
        "them in your modeller (the add-on marks them)"]
    solid = rec.reconstruct(rgb, alpha, vertices=642, height_mm=8.0, solid=True)
    assert not any("shells of its sealed pockets" in n for n in thin_notes(solid))
    assert np.array_equal(small.thin_faces, thin.faces)  # for a front end to mark them
    assert small.thin_share == pytest.approx(share / 100, rel=1e-12)  # and to say their share (the preview)
    large = rec.reconstruct(rgb, alpha, vertices=642, height_mm=2000.0)
    assert thin_walls(large.verts, large.faces, THIN_WALL_MM).area < THIN_WALL_AREA_MM2 and not thin_notes(large)
    assert large.thin_faces is None and large.thin_share is None
    unsized = rec.reconstruct(rgb, alpha, vertices=642)
    assert not thin_notes(unsized) and unsized.thin_faces is None
    tiny = rec.reconstruct(rgb, alpha, vertices=642, height_mm=0.5)  # under 10 mm² in all, but most of its surface
    thin = thin_walls(tiny.verts, tiny.faces, THIN_WALL_MM)
    assert thin.area < THIN_WALL_AREA_MM2 and len(thin_notes(tiny)) == 1 and np.array_equal(tiny.thin_faces, thin.faces)


def test_the_pictures_notes_come_before_the_meshs(banked_model, fake):
    """The notes of the picture (here its object cut by the left edge) before those of the mesh (its pockets): a
    probe read the pockets' note before "object found by the object finder"."""
    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    left = int(np.flatnonzero((alpha > 127).any(0))[0]) + 2  # cut through the object's left side
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    notes = _notes(rec.reconstruct(np.ascontiguousarray(rgb[:, left:]), np.ascontiguousarray(alpha[:, left:]),
                                   vertices=642))
    cut = [i for i, n in enumerate(notes) if n.startswith("the object touches the picture's left edge")]
    pockets = [i for i, n in enumerate(notes) if n.startswith("the mesh holds")]
    assert cut and pockets and cut[0] < pockets[0], notes


def test_a_category_the_bank_holds_no_shape_of_is_said_and_chooses_among_all(banked_model, fake):
    """``--category rifle`` keeps the bank to the rifle's shapes, and the shipped bank has none: the run was silent and
    byte for byte the run without a category. The note says so; a category the bank holds gets none."""
    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)
    held = {int(c) for c in rec.model.bank.shape_category if int(c) >= 0}
    missing = next(c for c in CATEGORIES if CATEGORIES.index(c) not in held)
    free, unheld = (rec.reconstruct(rgb, alpha, category=name, vertices=642) for name in (None, missing.name))
    said = [n for n in unheld.notes if n.startswith(f"the model holds no {missing.name} shape")]
    assert len(said) == 1 and f"--category {missing.name}" in said[0], unheld.notes
    assert np.array_equal(unheld.verts, free.verts)  # the nearest of all its shapes, as without a category
    kept = rec.reconstruct(rgb, alpha, category="chair", vertices=642)
    assert not any("holds no" in n for n in kept.notes)


def test_solid_fills_the_networks_mesh_when_the_bank_gives_none(banked_model, fake, monkeypatch):
    """When no bank solid can be made, the network's own mesh comes out: ``solid=True`` goes through its filling
    too (once), as for a model without a bank."""
    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)
    monkeypatch.setattr(Reconstructor, "_snap", lambda self, row, pose=None, mask=None, upright=False: None)
    filled, fill = [], Reconstructor._fill
    monkeypatch.setattr(Reconstructor, "_fill", staticmethod(lambda result, height_mm: filled.append(result)
                                                             or fill(result, height_mm)))
    result = rec.reconstruct(rgb, alpha, solid=True)
    assert filled == [result] and result.confidence is None and result.report.ok
    # the network's mesh is one closed surface, with no pocket to fill: the note says so, as --help promises a note
    assert "no sealed hollow pocket to fill inside the solid (--solid, the add-on's Fill Hollow Pockets)" in result.notes
    assert not any("sealed hollow pocket" in n for n in rec.reconstruct(rgb, alpha).notes)


def test_every_detail_chooses_the_same_shape(banked_model, fake, monkeypatch):
    """A bank model's network mesh only ranks the bank: it is made at the model's own level whatever the detail, so
    low, medium and high give the same training shape in the same pose; only the decimation differs."""
    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)  # the network's mesh takes part in the choice (the fixture's bank_shape_weight 2)
    chosen, levels = [], []
    snap, forward = Reconstructor._snap, type(model).forward
    monkeypatch.setattr(Reconstructor, "_snap", lambda self, row, pose=None, mask=None, upright=False: chosen.append(
        (row, pose.rotation.tobytes(), pose.scale.tobytes())) or snap(self, row, pose, mask))

    def counted(self, images, category=None, vertices=None):
        levels.append(vertices)
        return forward(self, images, category=category, vertices=vertices)

    monkeypatch.setattr(type(model), "forward", counted)
    results = [rec.reconstruct(rgb, alpha, vertices=v) for v in (642, 2562, 10242)]
    assert levels == [None, None, None] and len(chosen) == 3 and len(set(chosen)) == 1
    assert 2 * 642 <= len(results[0].faces) <= 1.2 * 2 * 642 and len(results[0].faces) < len(results[2].faces)
    with pytest.raises(ValueError, match="vertices must be one of"):  # the network no longer checks it here
        rec.reconstruct(rgb, alpha, vertices=100)
    # when the bank gives nothing, the network's own mesh comes out, made at the detail asked
    levels.clear()
    monkeypatch.setattr(Reconstructor, "_snap", lambda self, row, pose=None, mask=None, upright=False: None)
    fallback = rec.reconstruct(rgb, alpha, vertices=2562)  # the fixture's own level is 642
    assert levels == [None, 2562] and fallback.report.ok and len(fallback.verts) >= 2562


# ------------------------------------------------------------------------------------------ occupancy models

TINY_OCCUPANCY = dict(backbone="resnet18", image_size=64, fpn_channels=16, hidden_dim=16, attention_heads=2,
                      coarse="occupancy", occupancy_resolution=8, occupancy_depth_bins=12, vertices=642)


@pytest.fixture(scope="module")
def banked_occupancy(shape_bank, tmp_path_factory):
    """A tiny occupancy network with the fake bank attached."""
    return _banked(shape_bank, tmp_path_factory.mktemp("banked_occ"), TINY_OCCUPANCY, seed=1, shape_weight=1.0)


@pytest.mark.parametrize("weight", [0.25, 1.0])
def test_an_occupancy_model_blends_the_nearest_shape_into_its_grid(banked_occupancy, fake, weight):
    """The blend equals (1 - w) p_network + w * (the share of each cell in the solid of the view the bank
    selects for the picture and the network's filled cells, posed by that view's rotation and the
    predicted camera), computed here from the bank's buffers by brute force."""
    from recon_core.io.inference import SNAP_QUERY_POINTS, Reconstructor
    from recon_core.mesh.occupancy import GridCamera, voxelize_frustum
    from recon_core.network.crop import prepare_image

    model, meta = load_model(banked_occupancy)
    model = _with_config(model, bank_weight=weight)
    rec = Reconstructor(model, meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    with torch.inference_mode():
        out = model(prepare_image(rgb, alpha, model.config.image_size).image[None])
        fused = rec._fuse_bank(out, rgb, alpha, category_index(CHAIR))
    bank = model.bank
    camera = GridCamera.from_prediction(out.camera[0].numpy())
    points = _filled_cell_points(out.occupancy_logits[0].sigmoid().numpy(), camera, model.grid_spec)
    points = points[:: max(1, len(points) // SNAP_QUERY_POINTS)]
    row = bank.select(torch.from_numpy(embed_image(rgb, alpha)), torch.tensor(points, dtype=torch.float32),
                      model.config.bank_shape_weight, category_index(CHAIR))
    # the network's shape changes the choice for this picture, so a blend of the picture-only choice fails
    assert row != bank.select(torch.from_numpy(embed_image(rgb, alpha)), None, 0.0, category_index(CHAIR))
    from scipy import ndimage

    solid = ndimage.binary_fill_holes(bank.grid(int(bank.view_shape[row])))  # the walls and what they enclose
    assert solid.sum() > 2 * bank.grid(int(bank.view_shape[row])).sum()  # the box's inside is filled
    share = voxelize_frustum(solid, GRID_BOUND, bank.view_rotation[row].double().numpy(), camera, model.grid_spec,
                             supersample=2, share=True)
    assert share.max() > 0.5  # the chair's solid lies in the frustum
    expected = (1 - weight) * out.occupancy_logits[0].sigmoid().numpy() + weight * share
    got = fused.occupancy_logits[0].sigmoid().numpy()
    assert np.allclose(got, np.clip(expected, 1e-4, 1 - 1e-4), atol=1e-5)
    assert torch.equal(fused.camera, out.camera) and torch.equal(fused.mask_logits, out.mask_logits)


def _filled_cell_points(probs: np.ndarray, camera, spec) -> np.ndarray:
    """(M, 3) view-frame centres of the cells with p > 0.5, in (k, i, j) order, one cell at a time from
    the module docstring's formulas."""
    out = []
    z, n = probs.shape[0], probs.shape[1]
    for k in range(z):
        for i in range(n):
            for j in range(n):
                if probs[k, i, j] > 0.5:
                    u, v = (j + 0.5) / n, (i + 0.5) / n
                    zc = -spec.depth_range + (k + 0.5) * 2 * spec.depth_range / z
                    z_cam = camera.distance + camera.scale * zc
                    out.append([(u - camera.principal[0]) * z_cam / camera.focal,
                                (v - camera.principal[1]) * z_cam / camera.focal, z_cam - camera.distance])
    return np.array(out).reshape(-1, 3)


def test_network_points_are_the_filled_cells_centres_thinned():
    from recon_core.io.inference import network_points
    from recon_core.mesh.occupancy import GridCamera, GridSpec

    spec = GridSpec(resolution=6, depth_bins=8, depth_range=0.75)
    camera = GridCamera(scale=0.9, principal=(0.48, 0.53), distance=1.7)
    probs = np.random.default_rng(3).random((8, 6, 6))
    naive = _filled_cell_points(probs, camera, spec)
    assert len(naive) > 100
    assert np.allclose(network_points(probs, camera, spec, 10_000), naive)
    thinned = network_points(probs, camera, spec, 20)
    assert np.allclose(thinned, naive[:: len(naive) // 20])
    assert network_points(np.zeros((8, 6, 6)), camera, spec, 20) is None


def _with_config(model, **fields):
    """``model`` with its config's ``fields`` replaced (the weights are shared)."""
    import dataclasses

    model.config = dataclasses.replace(model.config, **fields)
    return model


def test_a_banked_occupancy_model_reconstructs_a_printable_centred_mesh(banked_occupancy, fake):
    from recon_core.io.inference import Reconstructor

    rec = Reconstructor.from_file(banked_occupancy)
    assert rec.model.config.bank_weight == 0.5
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    result = rec.reconstruct(rgb, alpha)
    assert result.report.ok and check_printable(result.verts, result.faces).ok
    assert "bank" in result.timings
    centre = 0.5 * (result.verts.min(0) + result.verts.max(0))
    assert np.abs(centre).max() < 1e-6 * np.ptp(result.verts, axis=0).max() + 1e-7
    # weight 0: the bank is not consulted and the output is the network's own
    plain = Reconstructor(_with_config(load_model(banked_occupancy)[0], bank_weight=0.0), {"trained": True})
    result0 = plain.reconstruct(rgb, alpha)
    assert "bank" not in result0.timings


# ------------------------------------------------------------------------------------------ candidates


def test_candidates_are_the_ranked_models_solids_most_confident_first(banked_model, fake):
    """K candidates: the first is reconstruct()'s mesh; each is the solid of one of ranked()'s rows (different
    models, in rank order), printable; the confidences fall and are the softmax over every candidate model."""
    from recon_core.io.inference import Reconstructor

    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=0), meta)  # the bank's own order
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    single = rec.reconstruct(rgb, alpha, smooth=False, vertices=10242)  # high detail: each solid as meshed
    results = rec.reconstruct_candidates(rgb, alpha, 3, smooth=False, vertices=10242)
    assert len(results) == 3
    np.testing.assert_array_equal(results[0].verts, single.verts)
    assert all(r.report.ok for r in results)
    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
        ranked = model.bank.ranked(torch.from_numpy(embed_image(rgb, alpha)),
                                   verts[:: max(1, verts.shape[0] // SNAP_QUERY_POINTS)], 2.0, None, None)
    for (row, _), result in zip(ranked, results):
        expected, _ = model.bank.view_mesh(row, model.config.bank_smoothing, model.config.bank_level)
        assert np.allclose(np.sort(result.verts, axis=0), np.sort(expected @ VIEW_TO_OUTPUT.T, axis=0), atol=1e-6)
    expected_conf = torch.tensor([-s for _, s in ranked], dtype=torch.float64).softmax(0)[:3]
    np.testing.assert_allclose([r.confidence for r in results], expected_conf.numpy(), rtol=1e-9)
    assert results[0].confidence >= results[1].confidence >= results[2].confidence
    assert len({int(model.bank.view_shape[row]) for row, _ in ranked[:3]}) == 3
    with pytest.raises(ValueError, match="at least 1"):
        rec.reconstruct_candidates(rgb, alpha, 0)


def test_fitted_candidates_are_posed_to_the_pictures_silhouette_and_ranked_by_it(banked_model, fake):
    """bank_fit_candidates K: each of the bank's K best-ranked models is posed by fit_pose against the picture's
    mask; the candidates are their solids stretched and turned so (here without the outline warp, bank_warp 0),
    best IoU first, and the confidences the softmax of the IoUs over FIT_TEMPERATURE among the K (so they fall
    and sum to at most 1)."""
    from recon_core.io.inference import FIT_TEMPERATURE, Reconstructor
    from recon_core.mesh.silhouette import fit_pose, mask_grid, solid_points, stretched
    from recon_core.mesh.volume import GRID_BOUND

    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=4, bank_warp=0, bank_place=False), meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    results = rec.reconstruct_candidates(rgb, alpha, 3, smooth=False, vertices=10242)
    single = rec.reconstruct(rgb, alpha, smooth=False, vertices=10242)
    np.testing.assert_array_equal(results[0].verts, single.verts)
    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
        ranked = model.bank.ranked(torch.from_numpy(embed_image(rgb, alpha)),
                                   verts[:: max(1, verts.shape[0] // SNAP_QUERY_POINTS)], 2.0, None, None)[:4]
    target = mask_grid(alpha / 255.0)
    fitted = []
    for row, _ in ranked:
        shape = int(model.bank.view_shape[row])
        pose = fit_pose(solid_points(model.bank.grid(shape), GRID_BOUND, seed=shape),
                        model.bank.view_rotation[row].double().numpy(), target)
        fitted.append((pose.iou, shape, pose))
    fitted.sort(key=lambda item: -item[0])
    assert len(results) == 3
    for (_, shape, pose), result in zip(fitted, results):
        assert result.report.ok
        world, _ = model.bank.shape_mesh(shape, model.config.bank_smoothing, model.config.bank_level)
        expected = stretched(world, pose.scale) @ pose.rotation.T @ VIEW_TO_OUTPUT.T
        assert np.allclose(np.sort(result.verts, axis=0), np.sort(expected, axis=0), atol=1e-6)
    conf = torch.tensor([iou for iou, _, _ in fitted], dtype=torch.float64).div(FIT_TEMPERATURE).softmax(0)[:3]
    np.testing.assert_allclose([r.confidence for r in results], conf.numpy(), rtol=1e-9)
    assert sum(r.confidence for r in results) <= 1.0 + 1e-12


def test_each_fitted_candidate_is_warped_onto_the_mask_with_its_own_points(banked_model, fake, monkeypatch):
    """bank_warp N (the default): each posed solid's warp is fitted (fit_warp) with N iterations, the picture's
    mask and the solid's points under the same stretch and turn as its vertices (stretched()'s even rescaling
    included); without carving, the candidate is the vertices as the fit left them, moved by that warp and put
    back in their box (keep_box); a mask that takes the whole picture is not warped onto."""
    import dataclasses

    import recon_core.mesh.silhouette as silhouette
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.silhouette import keep_box, solid_points, stretched
    from recon_core.mesh.volume import GRID_BOUND

    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=4, bank_carve=False, bank_place=False), meta)
    assert model.config.bank_warp > 0
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    calls = []
    fit_warp = silhouette.fit_warp

    def recording(points, mask, iterations, **kwargs):
        calls.append((np.array(points), np.array(mask), iterations))
        warp = fit_warp(points, mask, iterations, **kwargs)
        if len(calls) % 2:  # every other one moved half a cell to the right and kept (whether or not it was)
            warp = dataclasses.replace(warp, field=warp.field + np.array([0.0, 0.5])[:, None, None], kept=True)
        calls[-1] += (warp,)
        return warp

    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        net_verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
    ranked = rec._fitted(rec._ranked(rgb, alpha, net_verts, None, 4), alpha / 255.0, 3)
    monkeypatch.setattr(silhouette, "fit_warp", recording)
    kept = 0
    for row, pose, _ in ranked:
        shape = int(model.bank.view_shape[row])
        got, _ = rec._snap(row, pose, alpha / 255.0)[:2]
        points, mask, iterations, warp = calls[-1]
        world, _ = model.bank.shape_mesh(shape, model.config.bank_smoothing, model.config.bank_level)
        posed = stretched(world, pose.scale) @ pose.rotation.T
        expected = keep_box(warp.move(posed), posed) if warp.kept else posed
        kept += warp.kept
        np.testing.assert_allclose(got, expected @ VIEW_TO_OUTPUT.T, atol=1e-12)
        # the points under the map stretched() applied to the vertices: per axis, the same factor
        raw = solid_points(model.bank.grid(shape), GRID_BOUND, seed=shape)
        k = np.flatnonzero(np.abs(world[:, 0]) > 1e-3)[0]
        factor = stretched(world, pose.scale)[k] / world[k]  # (3,) = scale * even
        np.testing.assert_allclose(points, (raw * factor) @ pose.rotation.T, atol=1e-9)
        assert iterations == model.config.bank_warp and np.array_equal(mask, alpha / 255.0)
    assert kept >= 2
    count = len(calls)
    rec._snap(ranked[0][0], ranked[0][1], np.ones(alpha.shape))  # the whole picture: no outline to draw onto
    assert len(calls) == count == len(ranked) == 3


def test_a_carved_candidate_is_its_solid_carved_by_the_warp_then_meshed_and_moved(banked_model, fake, monkeypatch):
    """bank_carve (the default): the solid carve_to_mask leaves, under the warp fit_warp found, is meshed, stretched,
    turned and moved by that warp, then put in the box the whole solid's warped vertices have; printable."""
    import recon_core.mesh.silhouette as silhouette
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.printable import check_printable
    from recon_core.mesh.silhouette import keep_box, stretch_factors, stretched
    from recon_core.mesh.volume import grid_surface

    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=4), meta)
    assert model.config.bank_carve
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    mask = alpha / 255.0
    mask[:, : mask.shape[1] // 2 - 2] = 0.0  # the picture shows only half the object: the other half is carved
    seen = []
    carve = silhouette.carve_to_mask

    def recording(solid, bound, factors, rotation, warp, **kwargs):
        out = carve(solid, bound, factors, rotation, warp, **kwargs)
        seen.append((warp, out))
        return out

    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        net_verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
    (row, pose, _), = rec._fitted(rec._ranked(rgb, alpha, net_verts, None, 4), mask, 1)
    monkeypatch.setattr(silhouette, "carve_to_mask", recording)
    monkeypatch.setattr(silhouette, "CARVE_MIN_IOU", 0.0)  # this bank's 24³ solids splat sparse silhouettes
    got, faces = rec._snap(row, pose, mask)[:2]
    (warp, (carved, share)), = seen
    assert 0 < share <= silhouette.CARVE_MAX_SHARE
    shape = int(model.bank.view_shape[row])
    assert carved.sum() < model.bank.grid(shape).sum()
    world, _ = model.bank.shape_mesh(shape, model.config.bank_smoothing, model.config.bank_level)
    posed = stretched(world, pose.scale) @ pose.rotation.T
    cv, cf = grid_surface(carved, smoothing=model.config.bank_smoothing, level=model.config.bank_level)
    factors = stretch_factors(world, pose.scale)
    expected = keep_box(warp.move((cv * factors) @ pose.rotation.T), posed, warp.move(posed))
    np.testing.assert_allclose(got, expected @ VIEW_TO_OUTPUT.T, atol=1e-12)
    np.testing.assert_array_equal(faces, cf)
    assert check_printable(got, faces).ok


def test_recon_mesh_candidates_writes_each_with_how_likely_it_is(banked_model, fake, tmp_path, capsys, monkeypatch):
    from recon_core.io.cli import main as recon_mesh

    synset = next(m[0] for m in MODELS if m[1] == "chair_val")
    image = fake[1] / synset / "chair_val" / "000.png"
    out = tmp_path / "chair.obj"
    code = recon_mesh([str(image), "-o", str(out), "--model", str(banked_model), "--candidates", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chair_1.obj", "chair_2.obj"]
    assert f"candidate {tmp_path / 'chair_1.obj'}:" in printed and f"candidate {tmp_path / 'chair_2.obj'}:" in printed
    assert printed.count(" faces, the likeliest\n") == 1 and printed.count(" the likeliest\n") == 2  # the second
    assert printed.count("✓ printable") == 2  # "as" or "than the likeliest", in words (was "confidence 25.0%")
    # bad counts, and a failure while writing the second: no file at all
    assert recon_mesh([str(image), "-o", str(tmp_path / "x.obj"), "--model", str(banked_model), "--candidates", "0"]) == 2
    assert "--candidates must be at least 1" in capsys.readouterr().err
    import recon_core.io.export as export

    real, calls = export.export_mesh, []

    def second_fails(verts, faces, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise export.ExportError(f"Cannot write {path.name}: No space left on device.")
        return real(verts, faces, path, *args, **kwargs)

    monkeypatch.setattr(export, "export_mesh", second_fails)
    target = tmp_path / "sub"
    target.mkdir()
    assert recon_mesh([str(image), "-o", str(target / "c.stl"), "--model", str(banked_model), "--candidates", "2"]) == 2
    assert "No space left" in capsys.readouterr().err and not list(target.iterdir())


def test_a_model_without_a_bank_refuses_candidates(tmp_path, capsys):
    from recon_core.io.cli import main as recon_mesh
    from recon_core.network.config import ModelConfig

    stem = tmp_path / "plain"
    stem.with_suffix(".json").write_text(json.dumps({"model": ModelConfig(**TINY_MODEL).to_dict(), "trained": False}))
    image = tmp_path / "p.png"
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = 200
    from PIL import Image

    Image.fromarray(rgba).save(image)
    assert recon_mesh([str(image), "-o", str(tmp_path / "p.stl"), "--model", str(stem), "--candidates", "3"]) == 2
    assert "one shape per picture" in capsys.readouterr().err
    assert not (tmp_path / "p.stl").exists() and not (tmp_path / "p_1.stl").exists()


def test_a_banked_result_at_a_height_is_checked_once_as_written(banked_model, fake, monkeypatch):
    """With height_mm the decimated solid is scaled first and checked once, at the size it is written; the report
    is that mesh's (the same as checking the output again), and the mesh is that tall."""
    from recon_core.io import inference
    from recon_core.io.inference import Reconstructor

    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    calls = []
    real = inference.check_printable

    def counted(*args, **kwargs):
        calls.append(kwargs.get("unit_scale_mm"))
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "check_printable", counted)
    result = rec.reconstruct(rgb, alpha, vertices=642, height_mm=90.0)
    assert any(step.startswith("decimated to") for step in result.repair.steps)
    assert calls == [1.0]  # one check, in millimetres
    assert np.ptp(result.verts[:, 1]) == pytest.approx(90.0, rel=1e-6)
    assert np.array_equal(result.verts, result.verts.astype(np.float32).astype(np.float64))
    again = real(result.verts, result.faces, unit_scale_mm=1.0)
    assert result.report.ok and again.ok and again == result.report


DECIMATED_642 = 2000
"""More faces than a solid decimated for 642 vertices has (about 1,284, a mended region adds a few) and fewer than the
fake bank's full solids: a mesh below it is a decimated one."""


def _reconstruct_with_faults(banked_model, fake, monkeypatch, fault):
    """The chair's reconstruction at 642 vertices, unsmoothed, with ``intersect.face_defects`` reporting
    ``fault(faces, pairs)`` instead of its own pairs; returns the result and the (faces, real pairs) of every call,
    in order."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import intersect

    real = intersect.face_defects
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def faulty(verts, faces, **kwargs):
        pairs, degenerate = real(verts, faces, **kwargs)
        seen.append((np.asarray(faces).copy(), pairs))
        return fault(faces, pairs), degenerate

    monkeypatch.setattr(intersect, "face_defects", faulty)
    model, meta = load_model(banked_model)
    model = _with_config(model, bank_place=False)  # the faults below were found on this chair's unplaced solid
    return Reconstructor(model, meta).reconstruct(*_rgba(fake[1], "chair_val", 0), vertices=642, smooth=False), seen


ONE_PAIR = np.array([[0, 1]], dtype=np.int64)


def test_intersecting_faces_of_the_decimated_solid_are_mended_through_the_check(banked_model, fake, monkeypatch):
    """The decimation's acceptance test is the printable check: faces it finds intersecting (here, two faces of the
    first decimated mesh said to intersect) are handed back as the vertices to mend, the decimation is replayed
    without the collapses that built them, and the mended mesh, checked again, is the output."""
    calls = []

    def first_only(faces, pairs):
        calls.append(len(pairs))
        return ONE_PAIR if len(calls) == 1 else pairs

    result, seen = _reconstruct_with_faults(banked_model, fake, monkeypatch, first_only)
    assert calls[0] == 0  # the real decimation is sound: the pair reported is the only fault
    assert len(seen) == 2  # the decimated mesh, then the mended one (a replay with topology defects is not asked)
    steps = [re.fullmatch(r"decimated to \d+ faces \(mended (\d+) times\)", step) for step in result.repair.steps]
    assert any(m is not None and int(m.group(1)) >= 1 for m in steps)
    first, mended = seen[0][0], seen[1][0]
    assert not np.array_equal(first, mended) and np.array_equal(result.faces, mended)
    assert result.report.ok and check_printable(result.verts, result.faces).ok


def test_a_decimation_that_cannot_be_mended_leaves_the_full_solid(banked_model, fake, monkeypatch):
    """Faces said to intersect after every mend: the decimation gives up and the full solid is the output, checked."""
    result, seen = _reconstruct_with_faults(
        banked_model, fake, monkeypatch, lambda faces, pairs: ONE_PAIR if len(faces) < DECIMATED_642 else pairs)
    assert any("could not be mended" in step for step in result.repair.steps)
    assert len(result.faces) > DECIMATED_642 and result.report.ok  # the full solid, through the final check
    assert len(seen) >= 2


def test_a_fitted_candidate_is_placed_where_the_picture_shows_it(banked_model, fake):
    """bank_place (the default): _snap's solid, posed, warped and carved as without it, is then moved across the
    view by place_in_picture with the picture's mask; a translation, the same faces."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.silhouette import place_in_picture

    model, meta = load_model(banked_model)
    assert model.config.bank_place
    placed = Reconstructor(_with_config(model, bank_fit_candidates=4), meta)
    other, _ = load_model(banked_model)  # _with_config sets the model's own config: a second model, unplaced
    unplaced = Reconstructor(_with_config(other, bank_fit_candidates=4, bank_place=False), meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    mask = alpha / 255.0
    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        net_verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
    moved = 0
    for row, pose, _ in placed._fitted(placed._ranked(rgb, alpha, net_verts, None, 4), mask, 3):
        got, faces = placed._snap(row, pose, mask)[:2]
        before, before_faces = unplaced._snap(row, pose, mask)[:2]
        expected, was_moved = place_in_picture(before @ VIEW_TO_OUTPUT, mask)
        moved += was_moved
        np.testing.assert_allclose(got, expected @ VIEW_TO_OUTPUT.T, atol=1e-12)
        np.testing.assert_array_equal(faces, before_faces)
    assert moved == 3


def test_bank_unit_diagonal_scales_each_candidate_into_the_datas_frame(banked_model, fake):
    """bank_unit_diagonal: _snap's output, posed, warped and carved as without it (placement off in both), is scaled
    about its box's centre by 1 / the diagonal of its training solid as meshed; also without a pose (the view's
    rotation); the same faces."""
    from recon_core.io.inference import Reconstructor

    model, meta = load_model(banked_model)
    assert not model.config.bank_unit_diagonal  # the field's default: the solid's own size
    unit = Reconstructor(_with_config(model, bank_fit_candidates=4, bank_place=False, bank_unit_diagonal=True), meta)
    other, _ = load_model(banked_model)
    plain = Reconstructor(_with_config(other, bank_fit_candidates=4, bank_place=False), meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    mask = alpha / 255.0
    with torch.inference_mode():
        from recon_core.network.crop import prepare_image

        net_verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
    fitted = unit._fitted(unit._ranked(rgb, alpha, net_verts, None, 4), mask, 3)
    for row, pose, _ in fitted + [(fitted[0][0], None, 1.0)]:
        got, faces = unit._snap(row, pose, None if pose is None else mask)[:2]
        before, before_faces = plain._snap(row, pose, None if pose is None else mask)[:2]
        world, _ = model.bank.shape_mesh(int(model.bank.view_shape[row]), model.config.bank_smoothing,
                                         model.config.bank_level)
        d = float(np.linalg.norm(world.max(0) - world.min(0)))
        assert abs(d - 1.0) > 1e-3  # this bank's solids are not of diagonal 1: the test can fail
        centre = 0.5 * (before.min(0) + before.max(0))
        np.testing.assert_allclose(got, (before - centre) / d + centre, atol=1e-12)
        np.testing.assert_array_equal(faces, before_faces)


# ------------------------------------------------------------------------- the candidates' category votes


def test_category_votes_equal_a_candidate_by_candidate_sum(bank_module):
    """Each category's share of the weights of the views whose model has a category; models without one (-1,
    the extra pool) do not vote; with no vote at all every category gets an even share."""
    import copy

    bank = copy.deepcopy(bank_module)
    bank.shape_category[1] = -1  # the second chair: a model of unknown category
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = rng.integers(0, len(bank.view_shape), int(rng.integers(1, 8))).tolist()
        weights = rng.random(len(rows)).tolist()
        expected = np.zeros(13)
        for row, w in zip(rows, weights):
            category = int(bank.shape_category[int(bank.view_shape[row])])
            if category >= 0:
                expected[category] += w
        expected = expected / expected.sum() if expected.sum() > 0 else np.full(13, 1 / 13)
        np.testing.assert_allclose(bank.category_votes(rows, weights, 13), expected, rtol=1e-12)
    unknown = [row for row in range(len(bank.view_shape)) if int(bank.view_shape[row]) == 1]
    np.testing.assert_allclose(bank.category_votes(unknown, [1.0] * len(unknown), 13), np.full(13, 1 / 13))
    np.testing.assert_allclose(bank.category_votes([], [], 13), np.full(13, 1 / 13))
    with pytest.raises(ValueError, match="as long"):
        bank.category_votes([0, 1], [1.0], 13)


def test_the_candidates_vote_for_the_category_reported_and_leave_the_mesh_alone(banked_model, fake, monkeypatch):
    """category_bank_weight w > 0: the category reported is the arg-max of log softmax(logits) + w log(floor +
    votes), the votes the categories' shares of the bank_fit_candidates fitted candidates' confidences (whatever
    the count asked), and its probabilities the softmax of those scores over category_vote_temperature (the same
    as category_scores gives calibrate.py); the meshes and confidences are those of w = 0; a category the user
    gives is kept, with the head's probabilities; without a fit nothing votes."""
    from recon_core.io.inference import CATEGORY_VOTE_FLOOR, Reconstructor
    from recon_core.network.categories import CATEGORIES
    from recon_core.network.crop import object_mask, prepare_image

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    fields = dict(bank_fit_candidates=4, bank_warp=0, category_temperature=1.2, category_vote_temperature=1.5)
    plain_model, meta = load_model(banked_model)
    plain = Reconstructor(_with_config(plain_model, **fields), meta)
    model, _ = load_model(banked_model)
    rec = Reconstructor(_with_config(model, category_bank_weight=3.0, **fields), meta)
    before = plain.reconstruct_candidates(rgb, alpha, 2, smooth=False)
    after = rec.reconstruct_candidates(rgb, alpha, 2, smooth=False)
    assert len(before) == len(after) == 2
    for a, b in zip(before, after):  # the same meshes and confidences, in the same order
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.faces, b.faces)
        assert a.confidence == b.confidence
    with torch.inference_mode():
        out = model(prepare_image(rgb, alpha, model.config.image_size).image[None])
        candidates = rec._fitted(rec._ranked(rgb, alpha, out.verts[0], None, 4), object_mask(rgb, alpha))
    assert len(candidates) == 4
    votes = np.zeros(13)
    for row, _, confidence in candidates:
        votes[int(model.bank.shape_category[int(model.bank.view_shape[row])])] += confidence
    votes /= votes.sum()
    logits = out.category_logits[0].double().numpy()
    log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())

    def expected(w: float, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = log_probs + w * np.log(CATEGORY_VOTE_FLOOR + v)
        return scores, np.exp(scores / 1.5) / np.exp(scores / 1.5).sum()

    scores, probs = expected(3.0, votes)
    for result in after:
        assert result.category_probs.dtype == np.float32
        np.testing.assert_allclose(result.category_probs, probs, rtol=1e-5)
        assert result.category == CATEGORIES[int(scores.argmax())].name
    fused, head = rec.category_scores(rgb, alpha)
    np.testing.assert_allclose(fused, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head, log_probs, rtol=1e-5, atol=1e-6)
    # more candidates asked than fitted: the same ten (here four) vote
    many = rec.reconstruct_candidates(rgb, alpha, 6, smooth=False)
    np.testing.assert_allclose(many[0].category_probs, probs, rtol=1e-5)
    # the head alone: its probabilities at its own temperature, and category_scores its log-probabilities
    head_probs = np.exp(logits / 1.2) / np.exp(logits / 1.2).sum()
    np.testing.assert_allclose(before[0].category_probs, head_probs, rtol=1e-5)
    for got in plain.category_scores(rgb, alpha):
        np.testing.assert_allclose(got, log_probs, rtol=1e-5, atol=1e-6)
    given = rec.reconstruct(rgb, alpha, category="lamp", smooth=False)
    assert given.category == "lamp"
    np.testing.assert_allclose(given.category_probs, head_probs, rtol=1e-5)
    # votes for a category the head does not name outvote it (the bank's votes forced to one category)
    other = int(np.argsort(logits)[-2])  # the head's second choice
    monkeypatch.setattr(type(model.bank), "category_votes", lambda self, rows, weights, k: np.eye(k)[other])
    assert int(logits.argmax()) != other
    outvoted = rec.reconstruct(rgb, alpha, smooth=False)
    assert outvoted.category == CATEGORIES[other].name and CATEGORIES[int(logits.argmax())].name != outvoted.category
    np.testing.assert_allclose(outvoted.category_probs, expected(3.0, np.eye(13)[other])[1], rtol=1e-5)
    np.testing.assert_array_equal(outvoted.verts, before[0].verts)
    # without a fit nothing votes: the head's category and probabilities
    _with_config(model, bank_fit_candidates=0)
    unfitted = rec.reconstruct(rgb, alpha, smooth=False)
    assert unfitted.category == CATEGORIES[int(logits.argmax())].name
    np.testing.assert_allclose(unfitted.category_probs, head_probs, rtol=1e-5)
    with pytest.raises(ValueError, match="category_bank_weight"):
        ModelConfig(category_bank_weight=-1.0)
    with pytest.raises(ValueError, match="category_vote_temperature"):
        ModelConfig(category_vote_temperature=0.0)


def _roughness(verts: np.ndarray, faces: np.ndarray) -> float:
    """Mean distance of a vertex from its neighbours' mean (the umbrella Laplacian), over the mean edge length."""
    from recon_core.mesh.repair import vertex_adjacency

    adj = vertex_adjacency(faces, len(verts))
    degree = np.asarray(adj.sum(1)).ravel()
    lap = adj @ verts / degree[:, None] - verts
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return float(np.linalg.norm(lap, axis=1).mean() / np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1).mean())


def test_bank_smoothing_iterations_keep_one_smoothing_length_at_every_detail():
    from recon_core.io.inference import SMOOTH_ITERATIONS, bank_smoothing_iterations

    assert bank_smoothing_iterations(5124) == SMOOTH_ITERATIONS == 10
    assert bank_smoothing_iterations(20484) == 40 and bank_smoothing_iterations(2562) == 5
    assert bank_smoothing_iterations(2561) == 0 and bank_smoothing_iterations(1284) == 0  # the low detail: none


@pytest.mark.parametrize("vertices, iterations", [(642, 10), (2562, 10), (10242, 40)])
def test_a_banked_output_is_smoothed_by_at_most_half_a_cell_and_stays_printable(banked_model, fake, monkeypatch,
                                                                                 vertices, iterations):
    """The decimated solid (642, its smoothing forced here, as the low detail has none; 2562, this fake solid's
    12,664 faces decimated to 5,124) and the solid as meshed (10242: not decimated) are Taubin-smoothed within the
    check, as many iterations as the detail asked for has: smoother than without, printable, no vertex moved more
    than SMOOTH_MAX_MOVE of the diagonal, the step logged."""
    from recon_core.io import inference
    from recon_core.io.inference import SMOOTH_MAX_MOVE, Reconstructor

    if vertices == 642:
        monkeypatch.setattr(inference, "bank_smoothing_iterations", lambda faces: 10)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    rough = rec.reconstruct(rgb, alpha, vertices=vertices, smooth=False)
    smooth = rec.reconstruct(rgb, alpha, vertices=vertices)
    n = iterations
    assert smooth.report.ok and smooth.repair.smoothing_iterations == n and not rough.repair.smoothing_iterations
    assert any(step.startswith("decimated") for step in smooth.repair.steps) == (vertices != 10242)
    assert any(step.startswith(f"Taubin smoothing, {n} iterations, each vertex moved at most half a cell")
               for step in smooth.repair.steps)
    assert np.array_equal(smooth.faces, rough.faces)  # (this solid needs no mend either way)
    moved = np.linalg.norm(smooth.verts - rough.verts, axis=1)
    assert moved.max() <= SMOOTH_MAX_MOVE * float(np.linalg.norm(np.ptp(rough.verts, axis=0))) * (1 + 1e-5)
    assert moved.mean() > 0 and _roughness(smooth.verts, smooth.faces) < _roughness(rough.verts, rough.faces)


def test_smoothing_is_given_back_where_it_makes_faces_meet(banked_model, fake, monkeypatch):
    """Faces the smoothed mesh is said to have meeting (the first check of it) get their vertices', and their
    neighbours', unsmoothed places back; the rest stays smoothed, the check passes, the step says how many (the
    solid decimated without a mend either way, so its vertices are the unsmoothed output's)."""
    from recon_core.io import inference
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import intersect

    real, calls = intersect.face_defects, []

    def first_smoothed_call_meets(verts, faces, **kwargs):
        pairs, degenerate = real(verts, faces, **kwargs)
        calls.append(len(pairs))
        return (np.array([[0, 1]], dtype=np.int64) if len(calls) == 1 else pairs), degenerate

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    rough = rec.reconstruct(rgb, alpha, vertices=2562, smooth=False)
    monkeypatch.setattr(intersect, "face_defects", first_smoothed_call_meets)
    smooth = rec.reconstruct(rgb, alpha, vertices=2562)
    # (a second round may give back more: a step between smoothed and unsmoothed places can make faces meet too)
    assert len(calls) >= 2 and smooth.report.ok and smooth.repair.smoothing_iterations
    step = [s for s in smooth.repair.steps if s.startswith("Taubin smoothing")][0]
    reverted = int(re.search(r"not where it made faces meet: (\d+) vertices", step).group(1))
    same = np.all(smooth.verts == rough.verts, axis=1)
    ring = set(rough.faces[:2].ravel())
    assert all(same[v] for v in ring) and reverted == int(same.sum()) and 0 < reverted < len(same)


def test_the_check_after_giving_back_retests_what_moved_and_changes_nothing(banked_model, fake, monkeypatch):
    """The check after the smoothing has given vertices back (forced here by a made-up meeting pair in the first
    check) is handed the previous check (``face_defects(..., since=...)``), and the output is the same mesh as with
    every pair tested again."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import intersect

    real = intersect.face_defects
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)

    def run(incremental: bool):
        calls: list[bool] = []

        def first_meets(verts, faces, since=None, **kwargs):
            calls.append(since is not None)
            pairs, degenerate = real(verts, faces, since=since if incremental else None, **kwargs)
            return (np.array([[0, 1]], dtype=np.int64) if len(calls) == 1 else pairs), degenerate

        monkeypatch.setattr(intersect, "face_defects", first_meets)
        return rec.reconstruct(rgb, alpha, vertices=2562), calls

    incremental, calls = run(True)
    full, _ = run(False)
    assert calls[:2] == [False, True] and incremental.report.ok
    assert any("not where it made faces meet" in step for step in incremental.repair.steps)
    np.testing.assert_array_equal(incremental.verts, full.verts)
    np.testing.assert_array_equal(incremental.faces, full.faces)
    assert incremental.repair.steps == full.repair.steps


def test_a_decimation_that_cannot_be_mended_at_the_detail_is_tried_at_twice_it(banked_model, fake, monkeypatch):
    """The detail's size not mendable (simplify.decimate gives None for it): twice that size is decimated instead,
    printable, with a note naming both; not the whole solid."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import simplify

    real, goals = simplify.decimate, []

    def not_at_1284(verts, faces, target, **kwargs):
        goals.append(target)
        return None if target == 1284 else real(verts, faces, target, **kwargs)

    monkeypatch.setattr(simplify, "decimate", not_at_1284)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    result = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta).reconstruct(rgb, alpha, vertices=642)
    assert goals == [1284, 2568] and result.report.ok and len(result.faces) <= 1.2 * 2568
    assert _notes(result)[:-1] == [f"the solid could not be simplified to about 1,284 faces and stay printable: it is "
                                   f"simplified to {len(result.faces):,} faces instead"]
    assert _notes(result)[-1].startswith("the mesh holds 1 sealed hollow pocket")  # the fake bank's hollow slabs


def test_a_decimation_whose_mends_leave_many_more_faces_than_asked_says_so(banked_model, fake, monkeypatch):
    """Each mend keeps a region at the solid's resolution: a decimation at the detail's size whose mends left more than
    MENDED_FACES_NOTE times the faces asked gets a note naming both counts; without mends, or near the size asked,
    none."""
    from recon_core.io.inference import MENDED_FACES_NOTE, Reconstructor
    from recon_core.mesh import simplify

    real = simplify.decimate
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    for factor, mends, noted in ((2.5, 3, True), (2.5, 0, False), (1.0, 2, False)):
        def mended(verts, faces, target, factor=factor, mends=mends, **kwargs):
            out = real(verts, faces, int(factor * target), **kwargs)
            return None if out is None else (out[0], out[1], mends)

        monkeypatch.setattr(simplify, "decimate", mended)
        result = rec.reconstruct(rgb, alpha, vertices=642)
        assert result.report.ok
        notes = [n for n in result.notes if "more than the about 1,284 asked" in n]
        if noted:
            assert len(result.faces) > MENDED_FACES_NOTE * 1284
            assert notes == [f"it is simplified to {len(result.faces):,} faces, more than the about 1,284 asked: "
                             f"{mends} places where simplifying folded the surface are kept finer"]  # mends = 3
        else:
            assert notes == [], (factor, mends)


def test_recon_mesh_candidates_say_the_pictures_notes_once(banked_model, fake, tmp_path, capsys):
    """`recon-mesh --candidates 2` on a picture read with a note (a faint cut-out): the picture's note is every
    candidate's, so it is said once, unprefixed, not once per candidate nor as the first candidate's own."""
    from PIL import Image

    from recon_core.io.cli import main as recon_mesh

    synset = next(m[0] for m in MODELS if m[1] == "chair_val")
    rgba = np.asarray(Image.open(fake[1] / synset / "chair_val" / "000.png").convert("RGBA")).copy()
    rgba[..., 3] = (rgba[..., 3].astype(np.float32) * 0.4).astype(np.uint8)  # at most 102 of 255: faint
    Image.fromarray(rgba, "RGBA").save(tmp_path / "faint.png")
    code = recon_mesh([str(tmp_path / "faint.png"), "-o", str(tmp_path / "c.obj"), "--model", str(banked_model),
                       "--candidates", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    faint = [line for line in err.splitlines() if "faint everywhere" in line]
    assert len(faint) == 1 and faint[0].startswith("note: its transparency is faint everywhere"), err


def test_progress_reports_each_stage_in_order_and_changes_no_mesh(banked_model, fake):
    """reconstruct_candidates(progress=...) is told of each stage as it starts, fractions rising, one per candidate's
    mesh (the add-on's bar follows them); the meshes are the same with it as without."""
    from recon_core.io.inference import PROGRESS, Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_shape_weight=0.0), meta)
    told = []
    with_progress = rec.reconstruct_candidates(rgb, alpha, count=2, vertices=642,
                                               progress=lambda stage, fraction: told.append((stage, fraction)))
    plain = rec.reconstruct_candidates(rgb, alpha, count=2, vertices=642)
    assert [stage for stage, _ in told] == [PROGRESS["network"][0], PROGRESS["bank"][0], "making shape 1 of 2",
                                            "making shape 2 of 2"]
    fractions = [fraction for _, fraction in told]
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions) and 0 < fractions[0]
    assert fractions[-1] < 1.0
    for a, b in zip(with_progress, plain):
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.faces, b.faces)


# ------------------------------------------------------------------------------------- standing upright


def test_upright_stands_each_candidate_as_its_training_shape_was_modelled(banked_model, fake):
    """upright: _snap's mesh, posed by a fitted pose (stretched, turned) or by the bank view's rotation, is turned so
    that each vertex's height is its training solid's own (stretched) height (these boxes rest flat on their base, so
    settling turns them by a hundredth of a degree at most): the camera's look from above taken
    out, the turn about the vertical kept; the faces are the same. Through reconstruct, the upright output is
    printable, and its height is not the one as seen."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh.silhouette import stretch_factors
    from recon_core.network.crop import prepare_image

    model, meta = load_model(banked_model)
    rec = Reconstructor(_with_config(model, bank_fit_candidates=4, bank_place=False), meta)
    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    with torch.inference_mode():
        net_verts = model(prepare_image(rgb, alpha, model.config.image_size).image[None]).verts[0]
    fitted = rec._fitted(rec._ranked(rgb, alpha, net_verts, None, 4), alpha / 255.0, 3)
    leaned = 0
    for row, pose, _ in fitted + [(fitted[0][0], None, 1.0)]:
        world, world_faces = model.bank.shape_mesh(int(model.bank.view_shape[row]), model.config.bank_smoothing,
                                                   model.config.bank_level)
        own = world * (1.0 if pose is None else stretch_factors(world, pose.scale))
        got, faces = rec._snap(row, pose, None, upright=True)[:2]
        seen, seen_faces = rec._snap(row, pose, None)[:2]
        np.testing.assert_array_equal(faces, seen_faces)
        # the bank keeps its views' rotations at half precision (orthonormal to ~1e-3): heights agree to that
        np.testing.assert_allclose(got[:, 1] - got[:, 1].min(), own[:, 1] - own[:, 1].min(), atol=2e-3)
        np.testing.assert_allclose(np.linalg.norm(got - got.mean(0), axis=1),
                                   np.linalg.norm(seen - seen.mean(0), axis=1), atol=1e-9)  # only turned
        leaned += not np.allclose(seen[:, 1] - seen[:, 1].min(), own[:, 1] - own[:, 1].min(), atol=0.02)
    assert leaned, "as seen, some candidate leans: the test can fail"
    # warped, carved and placed (what recon-mesh makes): stood last, by the pose's own up, the same faces
    placed = Reconstructor(_with_config(model, bank_fit_candidates=4, bank_place=True), meta)
    for row, pose, _ in fitted:
        got, faces = placed._snap(row, pose, alpha / 255.0, upright=True)[:2]
        seen, seen_faces = placed._snap(row, pose, alpha / 255.0)[:2]
        np.testing.assert_array_equal(faces, seen_faces)
        stood = stand_upright(seen, VIEW_TO_OUTPUT @ pose.rotation @ [0.0, 1.0, 0.0])
        # the boxes rest flat as modelled: settled too, by a hundredth of a degree at most (their warp is slight)
        assert placed._flat_based(int(model.bank.view_shape[row]))
        np.testing.assert_allclose(got, stood, atol=1e-3)
        placed._bases[int(model.bank.view_shape[row])] = False  # a shape with no flat base: stood, not settled
        np.testing.assert_allclose(placed._snap(row, pose, alpha / 255.0, upright=True)[0], stood, atol=1e-12)
        del placed._bases[int(model.bank.view_shape[row])]
    stood = rec.reconstruct(rgb, alpha, height_mm=80.0, upright=True)
    as_seen = rec.reconstruct(rgb, alpha, height_mm=80.0)
    assert stood.report.ok and as_seen.report.ok
    assert not np.allclose(np.ptp(stood.verts, axis=0), np.ptp(as_seen.verts, axis=0), atol=0.5)


def test_upright_without_a_shape_bank_stays_as_seen_with_a_note(tmp_path):
    """A model without a shape bank has no pose to stand its mesh by: the same mesh, and a note that says so."""
    from recon_core.io.inference import NOT_UPRIGHT_NOTE, Reconstructor

    torch.manual_seed(0)
    save_model(build_model(ModelConfig(**TINY_MODEL)), tmp_path / "plain", {"steps": 0})
    rec = Reconstructor.from_file(tmp_path / "plain")
    rgb, alpha = np.full((64, 64, 3), 200, np.uint8), np.zeros((64, 64), np.uint8)
    alpha[16:48, 20:44] = 255
    stood = rec.reconstruct(rgb, alpha, upright=True)
    as_seen = rec.reconstruct(rgb, alpha)
    np.testing.assert_array_equal(stood.verts, as_seen.verts)
    assert NOT_UPRIGHT_NOTE in stood.notes and NOT_UPRIGHT_NOTE not in as_seen.notes


def test_a_shape_that_would_turn_more_than_the_cap_stays_as_seen_with_a_note(banked_model, fake, monkeypatch):
    """A candidate whose standing would turn it by more than UPRIGHT_MAX_TURN (likely another kind of object, posed
    steeply to fit the outline) stays as the picture's camera saw it, with a note naming the turn."""
    from recon_core.io import inference

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = inference.Reconstructor(model, meta)
    as_seen = rec.reconstruct(rgb, alpha)
    monkeypatch.setattr(inference.Reconstructor, "_turn_to_stand", lambda self, row, pose=None: 52.4)
    steep = rec.reconstruct(rgb, alpha, upright=True)
    np.testing.assert_array_equal(steep.verts, as_seen.verts)
    assert ("not stood on its base: the shape chosen would turn by 52°, more than the 45° a camera's look from above "
            "takes out (it may be another kind of object than the picture's), so it is turned as the picture's camera "
            "saw it") in steep.notes
    for turn in (45.04, 45.3):  # over the cap by less than rounding shows: not "45°" nor "45.0°, more than the 45°"
        monkeypatch.setattr(inference.Reconstructor, "_turn_to_stand", lambda self, row, pose=None: turn)
        just = rec.reconstruct(rgb, alpha, upright=True)
        assert any("the shape chosen would turn by more than the 45° a camera's" in n for n in just.notes), just.notes
    monkeypatch.setattr(inference.Reconstructor, "_turn_to_stand", lambda self, row, pose=None: 44.0)
    stood = rec.reconstruct(rgb, alpha, upright=True)
    assert not np.array_equal(stood.verts, as_seen.verts) and not any("not stood" in n for n in stood.notes)


def test_an_output_of_several_pieces_says_so_with_the_smallest_share(banked_model, fake, monkeypatch):
    """Separate outward parts print as loose pieces: the note counts them and gives the smallest one's share of the
    volume (pockets' inward shells are not pieces); one piece, no note."""
    from recon_core.io.inference import Reconstructor
    from recon_core.mesh import repair

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)
    assert not any("separate pieces" in n for n in rec.reconstruct(rgb, alpha).notes)
    monkeypatch.setattr(repair, "part_volumes", lambda verts, faces: np.array([3.6, -0.5, 0.2, 0.2]))
    assert [n for n in rec.reconstruct(rgb, alpha).notes if "separate pieces" in n] == [
        "the mesh is 3 separate pieces, the smallest 5% of its volume: each prints as a loose part (delete the small "
        "ones or join them in your modeller)"]


# ------------------------------------------------------------------------------------- the picture's camera


def _seen_through(result) -> np.ndarray:
    """(H, W) bool: the pixels of the picture that ``result``'s mesh covers through its camera."""
    from recon_core.mesh.render import rasterize

    camera = result.camera
    depth = camera.world_to_camera(result.verts)[:, 2]
    return rasterize(camera.project(result.verts), depth, result.faces, (camera.height, camera.width)) >= 0


def test_the_picture_camera_sees_the_mesh_on_the_pictures_object_however_it_was_turned_and_scaled(banked_model, fake,
                                                                                                  tmp_path):
    """Each candidate's camera (Reconstruction.camera) sees its mesh where the picture has the object: as seen, stood
    on its base and at 80 mm the same pixels (the camera moved and scaled with the mesh), and a silhouette close to the
    mask's; the camera of the mesh as seen sits on +Z, the stood one's does not. A model without a bank has none."""
    from recon_core.io.inference import Reconstructor

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    rec = Reconstructor(model, meta)
    seen = rec.reconstruct_candidates(rgb, alpha, 3)
    stood = rec.reconstruct_candidates(rgb, alpha, 3, upright=True)
    printed = rec.reconstruct_candidates(rgb, alpha, 3, upright=True, height_mm=80.0)
    mask = alpha > 127
    turned = 0
    for a, b, c in zip(seen, stood, printed):
        assert (a.camera.width, a.camera.height) == (rgb.shape[1], rgb.shape[0])
        np.testing.assert_allclose(a.camera.centre[:2], 0.0, atol=1e-12)
        turned += not np.allclose(b.camera.R, a.camera.R, atol=1e-3)
        pixels = [_seen_through(r) for r in (a, b, c)]
        for other in pixels[1:]:
            assert (pixels[0] != other).mean() < 0.005  # the same silhouette, to an edge pixel here and there
        assert (pixels[0] & mask).sum() / (pixels[0] | mask).sum() > 0.8
    assert turned, "some candidate was stood: the test can fail"
    torch.manual_seed(0)
    save_model(build_model(ModelConfig(**TINY_MODEL)), tmp_path / "plain", {"steps": 0})
    assert Reconstructor.from_file(tmp_path / "plain").reconstruct(rgb, alpha).camera is None


def test_the_preview_lays_the_mesh_on_the_picture_through_its_camera(banked_model, fake):
    """recon-mesh --preview's picture tile: the pixels it changes (the mesh shaded over the picture, its outline) are
    the picture's object, framed as the tile frames it (IoU over 0.8, as the camera's own silhouette); the mesh tile
    marks thin faces red, and only those."""
    from recon_core.io import preview
    from recon_core.io.inference import Reconstructor
    from recon_core.io.preview import THIN_COLOUR, TILE, mesh_tile, picture_tile

    rgb, alpha = _rgba(fake[1], "chair_val", 0)
    model, meta = load_model(banked_model)
    result = Reconstructor(model, meta).reconstruct(rgb, alpha, upright=True, height_mm=80.0)
    tile = picture_tile(rgb, result, TILE)
    # the frame: around the mask's box and the mesh's projected box
    rows, cols = np.flatnonzero((alpha > 127).any(axis=1)), np.flatnonzero((alpha > 127).any(axis=0))
    uv = result.camera.project(result.verts)
    u0, v0 = min(cols[0], uv[:, 0].min()), min(rows[0], uv[:, 1].min())
    u1, v1 = max(cols[-1] + 1, uv[:, 0].max()), max(rows[-1] + 1, uv[:, 1].max())
    side = max(u1 - u0, v1 - v0) * (1 + 2 * preview.MARGIN)
    x0, y0 = (u0 + u1 - side) / 2, (v0 + v1 - side) / 2
    plain = np.clip(preview._shown(rgb, None, (x0, y0, side), TILE) + 0.5, 0, 255).astype(np.uint8)
    changed = (tile != plain).any(axis=2)
    centres = x0 + (np.arange(TILE) + 0.5) * side / TILE, y0 + (np.arange(TILE) + 0.5) * side / TILE
    c, r = np.floor(centres[0]).astype(int), np.floor(centres[1]).astype(int)
    h, w = alpha.shape
    object_ = (alpha[np.clip(r, 0, h - 1)[:, None], np.clip(c, 0, w - 1)[None, :]] > 127)
    object_ &= ((c >= 0) & (c < w))[None, :] & ((r >= 0) & (r < h))[:, None]
    assert (changed & object_).sum() / (changed | object_).sum() > 0.8
    assert object_.mean() > 0.25, "the object fills the tile, not a corner of it"

    def reddish(picture: np.ndarray) -> np.ndarray:
        picture = picture.astype(int)
        return (picture[..., 0] > 1.5 * picture[..., 1]) & (picture[..., 0] > 1.5 * picture[..., 2])

    assert reddish(np.array([[THIN_COLOUR]])).all()
    result.thin_faces = np.arange(0, len(result.faces), 2)
    assert reddish(mesh_tile(result, 96)).any()
    result.thin_faces = None
    assert not reddish(mesh_tile(result, 96)).any()
