"""End to end: the retrieval prior from a fake renders folder (no Blender) to a trained model's reconstruction.

The fake data set (written directly, like tests/test_dataset.py): four train models of known
categories (two chairs sharing the manifest group "chairs", a sofa without a group, a table in
group "tables"), one train model of a synset outside the 13 categories (not in the bank), and
one val chair. Every model has a box mesh of its own shape (shapenet/<synset>/<id>/models/
model_normalized.obj), points.npz, two photo views and one sketch view (same picture, "sketch": true).

Covered: training/build_prior.py (build_bank, main), RenderedViews(prior_groups=...),
training.train.train with model.coarse=retrieval (plain and --init-from a sphere model), and
Reconstructor on the trained snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon_core.camera import Camera, look_at
from recon_core.categories import category_index
from recon_core.config import ModelConfig
from recon_core.image import load_image
from recon_core.model import build_model
from recon_core.retrieval import EMBED_DIM, EMBED_VERSION, embed_image
from recon_core.weights import load_model, save_model
from training.build_prior import build_bank, load_bank, main, save_bank
from training.config import load_train_config
from training.dataset import RenderedViews
from training.evaluate import discover, load_view
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
CATEGORY_OF = {"chair_a": "chair", "chair_b": "chair", "table_a": "table", "sofa_a": "sofa"}
GROUP_NAME = {"chair_a": "chairs", "chair_b": "chairs", "table_a": "tables", "sofa_a": "sofa_a"}
SKETCH_VIEW = 2
BANK_ARGS = dict(dim=4, level=3, steps=(10, 5), batch=2)

TINY_ARGS = [  # tests/test_train.py's TINY_ARGS, on the fake renders instead of synthetic data
    "model.backbone=resnet18", "model.backbone_norm=group", "model.image_size=64", "model.fpn_channels=16",
    "model.coarse_hidden=32", "model.hidden_dim=16", "model.attention_heads=2", "model.gconv_layers=1",
    "model.vertices=642", "data.synthetic=0", "data.workers=0", "data.num_points=256", "loss.num_samples=256",
    "loss.silhouette=0.0", "loss.depth=0.0", "optim.warmup=1", "run.log_every=1", "run.threads=1",
]
TINY_MODEL = dict(backbone="resnet18", backbone_norm="group", image_size=64, fpn_channels=16, coarse_hidden=32,
                  hidden_dim=16, attention_heads=2, gconv_layers=1, vertices=642)
"""The ModelConfig fields of TINY_ARGS (for a sphere model that fits the retrieval config)."""


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


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior_fake")
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
def bank(fake, tmp_path_factory):
    """build_bank on the fake data, saved as a stem; ``(tensors, info, stem)``."""
    shapenet, renders = fake
    tensors, info = build_bank(shapenet, renders, **BANK_ARGS)
    stem = save_bank(tensors, info, tmp_path_factory.mktemp("bank") / "bank")
    return tensors, info, stem


def _camera_of(renders: Path, model_id: str, view: int) -> Camera:
    synset = next(m[0] for m in MODELS if m[1] == model_id)
    return Camera.from_json(json.loads((renders / synset / model_id / f"{view:03d}.json").read_text()))


def _rgba(renders: Path, model_id: str, view: int) -> tuple[np.ndarray, np.ndarray]:
    synset = next(m[0] for m in MODELS if m[1] == model_id)
    rgb, alpha, _ = load_image(renders / synset / model_id / f"{view:03d}.png")
    return rgb, alpha


# ------------------------------------------------------------------------------ 1. build_bank


def test_build_bank_indexes_photo_views_of_known_train_models(fake, bank):
    shapenet, renders = fake
    tensors, info, _ = bank
    assert [e.model_id for e in discover(shapenet, renders, "train")] == BANK_IDS
    m, v = len(BANK_IDS), 2 * len(BANK_IDS)  # two photo views per model; the sketch is skipped

    assert info["model_ids"] == BANK_IDS
    assert info["synsets"] == [CHAIR, CHAIR, SOFA, TABLE]
    assert info["groups"] == [GROUP_NAME[i] for i in BANK_IDS]
    assert (info["prior_templates"], info["prior_views"], info["prior_dim"], info["prior_level"]) == (m, v, 4, 3)
    assert info["embed_version"] == EMBED_VERSION and info["fit_steps"] == [10, 5]

    shapes = {"embed_mean": (EMBED_DIM,), "embed_basis": (EMBED_DIM, 4), "view_features": (v, 4), "view_template": (v,),
              "view_rotation": (v, 3, 3), "templates": (m, 642, 3), "template_category": (m,), "template_group": (m,)}
    assert {k: tuple(t.shape) for k, t in tensors.items()} == shapes
    for key in ("view_template", "template_category", "template_group"):
        assert tensors[key].dtype == torch.int64, key
    assert all(tensors[k].dtype == torch.float32 for k in ("embed_mean", "embed_basis", "view_features",
                                                             "view_rotation", "templates"))

    # views in discover order, photo views only: (model 0, view 0), (model 0, view 1), (model 1, view 0), ...
    expected_views = [(mid, view) for mid in BANK_IDS for view in (0, 1)]
    assert tensors["view_template"].tolist() == [BANK_IDS.index(mid) for mid, _ in expected_views]
    for row, (mid, view) in enumerate(expected_views):
        R = _camera_of(renders, mid, view).R
        np.testing.assert_allclose(tensors["view_rotation"][row].numpy(), R, atol=1e-6, err_msg=f"row {row}")
    sketch_rotations = [_camera_of(renders, mid, SKETCH_VIEW).R for mid in BANK_IDS]
    for R in sketch_rotations:  # no row holds a sketch camera
        assert (tensors["view_rotation"].double() - torch.from_numpy(R)).abs().amax(dim=(1, 2)).min() > 1e-3

    assert tensors["template_category"].tolist() == [category_index(CATEGORY_OF[i]) for i in BANK_IDS]
    groups = tensors["template_group"].tolist()
    assert groups[0] == groups[1]  # chair_a and chair_b share the manifest group "chairs"
    assert len({groups[0], groups[2], groups[3]}) == 3
    assert sorted(set(groups)) == [0, 1, 2]
    # group indices follow the sorted group names: chairs, sofa_a (no group: its id), tables
    assert groups == [0, 0, 1, 2]

    # each template was fitted to its own model: nearer its own points than any other model's
    with np.load(renders / CHAIR / "chair_a" / "points.npz") as d:
        pts_a = torch.from_numpy(d["points"]).float()
    with np.load(renders / TABLE / "table_a" / "points.npz") as d:
        pts_t = torch.from_numpy(d["points"]).float()

    def mean_dist(t, p):
        return torch.cdist(t, p).min(dim=1).values.mean().item()

    tmpl = tensors["templates"]
    assert mean_dist(tmpl[0], pts_a) < mean_dist(tmpl[0], pts_t)
    assert mean_dist(tmpl[3], pts_t) < mean_dist(tmpl[3], pts_a)


def test_bank_retrieves_a_training_view_as_itself(fake, bank):
    from recon_core.retrieval import ShapePrior

    shapenet, renders = fake
    tensors, info, _ = bank
    prior = ShapePrior(info["prior_templates"], info["prior_views"], info["prior_dim"], info["prior_level"])
    prior.load_state_dict(tensors)
    entries = discover(shapenet, renders, "train")
    row = 0
    for m, e in enumerate(entries):
        for view in e.views:
            rgb, alpha, _, meta = load_view(e, view)
            if meta.get("sketch"):
                continue
            emb = torch.from_numpy(embed_image(rgb, alpha))[None]
            d = torch.cdist(prior.project(emb), prior.view_features)[0]
            assert int(d.argmin()) == row, (e.model_id, view, d)
            assert float(d[row]) < 1e-4
            assert int(prior.nearest(emb, k=1)[0, 0]) == row
            assert int(prior.view_template[row]) == m
            row += 1
    assert row == info["prior_views"]


# ------------------------------------------------------------------------------ 2. main


def test_main_writes_the_bank(fake, bank, tmp_path, capsys):
    shapenet, renders = fake
    stem = tmp_path / "out" / "bank"
    rc = main(["--shapenet", str(shapenet), "--renders", str(renders), "--out", str(stem), "--dim", "4",
               "--level", "3", "--steps", "10,5", "--batch", "2"])
    assert rc == 0
    assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
    assert f"wrote {stem}.safetensors: 4 templates, 8 views, 4 dims" in capsys.readouterr().out
    got, info = load_bank(stem)
    ref, ref_info = bank[0], bank[1]
    assert info == ref_info
    assert set(got) == set(ref)
    for k in ref:  # the same inputs and seeds: the same bank
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=0, msg=k)


def test_main_without_renders_returns_2_and_writes_nothing(fake, tmp_path, capsys):
    shapenet, _ = fake
    out_dir = tmp_path / "nothing"
    rc = main(["--shapenet", str(shapenet), "--renders", str(tmp_path / "missing"), "--out", str(out_dir / "bank")])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], captured.err
    assert "--renders" in lines[0]
    assert not out_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_main_out_stem_with_a_dot(fake, tmp_path, capsys):
    shapenet, renders = fake
    stem = tmp_path / "bank.v2"
    assert main(["--shapenet", str(shapenet), "--renders", str(renders), "--out", str(stem), "--dim", "4",
                 "--level", "3", "--steps", "10,5", "--batch", "2"]) == 0
    reported = capsys.readouterr().out.split("wrote ", 1)[1].split(":", 1)[0]
    assert Path(reported).is_file(), (reported, sorted(p.name for p in tmp_path.iterdir()))


# ------------------------------------------------------------------------------ 3. RenderedViews


def _prior_groups(tensors, info) -> dict[str, int]:
    """As train.py makes them."""
    return {mid: int(g) for mid, g in zip(info["model_ids"], tensors["template_group"].tolist())}


def test_rendered_views_carry_embedding_and_group(fake, bank):
    shapenet, renders = fake
    tensors, info, _ = bank
    groups = _prior_groups(tensors, info)
    assert groups == {"chair_a": 0, "chair_b": 0, "sofa_a": 1, "table_a": 2}

    plain = RenderedViews(shapenet, renders, "train", image_size=64, num_points=64)
    assert "embedding" not in plain[0] and "group" not in plain[0]

    for augment in (False, True):
        ds = RenderedViews(shapenet, renders, "train", image_size=64, num_points=64, augment=augment,
                           prior_groups=groups)
        assert len(ds) == 5 * 3  # extra_a (unknown synset) is a training item too, only not in the bank
        seen = set()
        for i in range(len(ds)):
            item = ds[i]
            mid, view = item["model_id"], item["view"]
            seen.add(mid)
            emb = item["embedding"]
            assert emb.shape == (EMBED_DIM,) and emb.dtype == torch.float32
            assert abs(float(emb.norm()) - 1.0) < 1e-5
            rgb, alpha = _rgba(renders, mid, view)
            np.testing.assert_array_equal(emb.numpy(), embed_image(rgb, alpha))  # of the clean render
            assert item["group"].dtype == torch.int64 and item["group"].shape == ()
            assert int(item["group"]) == groups.get(mid, -1)
            if mid in BANK_IDS and view != SKETCH_VIEW:  # the query a training item makes is its bank row
                row = 2 * BANK_IDS.index(mid) + view
                proj = (emb - tensors["embed_mean"]) @ tensors["embed_basis"]
                torch.testing.assert_close(proj, tensors["view_features"][row], atol=1e-5, rtol=0)
        assert seen == set(BANK_IDS) | {"extra_a"}  # extra_a: group -1 (checked above)


# ------------------------------------------------------------------------------ 4-5. training


def _config(fake, stem: Path, out: Path, *extra: str):
    shapenet, renders = fake
    return load_train_config(None, [*TINY_ARGS, "model.coarse=retrieval", f"data.shapenet={shapenet}",
                                    f"data.renders={renders}", f"data.prior={stem}", "optim.batch_size=2",
                                    "run.amp=false", f"run.out={out}", *extra])


def _assert_bank_equal(prior_state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], exact: bool) -> None:
    for k, ref in tensors.items():
        got = prior_state[k]
        assert got.shape == ref.shape and got.dtype == ref.dtype, k
        if exact or not ref.is_floating_point():
            assert torch.equal(got, ref), k
        else:  # snapshots are fp16
            torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4, msg=k)


@pytest.fixture(scope="module")
def trained(fake, bank, tmp_path_factory):
    from training.train import train

    _, _, stem = bank
    out = tmp_path_factory.mktemp("train") / "run"
    cfg = _config(fake, stem, out, "optim.steps=2", "run.checkpoint_every=2")
    assert train(cfg) == out
    return out


def test_retrieval_training_run_snapshot(fake, bank, trained):
    tensors, info, _ = bank
    snap = trained / "snapshots" / "step_000002"
    model, meta = load_model(snap)
    assert meta["steps"] == 2 and meta["trained"] is True
    c = model.config
    assert c.coarse == "retrieval"
    assert (c.prior_templates, c.prior_views, c.prior_dim, c.prior_level) == (
        info["prior_templates"], info["prior_views"], info["prior_dim"], info["prior_level"])
    prior_state = {k[len("prior."):]: v for k, v in model.state_dict().items() if k.startswith("prior.")}
    assert set(prior_state) == set(tensors)
    _assert_bank_equal(prior_state, tensors, exact=False)
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    _assert_bank_equal({k[len("prior."):]: v for k, v in ckpt["model"].items() if k.startswith("prior.")}, tensors,
                       exact=True)
    # the run logged finite losses for both steps
    import csv

    with open(trained / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["total"])) for r in rows)


def test_trained_retrieval_model_reconstructs_a_render(fake, trained):
    from recon_core.inference import Reconstructor

    _, renders = fake
    model, meta = load_model(trained / "snapshots" / "step_000002")
    rgb, alpha = _rgba(renders, "chair_val", 0)  # a val render: retrieves a training view's template
    result = Reconstructor(model, meta).reconstruct(rgb, alpha)
    assert result.report.ok, result.report
    assert result.faces.shape == (1280, 3)
    assert "retrieval" in result.timings and result.notes == []


def test_init_from_sphere_model_zeroes_coarse_head(fake, bank, tmp_path):
    """--init-from a sphere model into a retrieval config, observed through train() itself.

    train() writes nothing for optim.steps=0 (the loop never runs), so the run takes one step at
    optim.lr=0: AdamW then changes no weight (the step and the decay are both scaled by lr = 0), and
    checkpoint.pt holds the weights exactly as initialised.
    """
    from training.train import train

    tensors, _, stem = bank
    torch.manual_seed(3)
    sphere = build_model(ModelConfig(**TINY_MODEL))
    with torch.no_grad():  # a "trained" sphere model: its coarse head's last layer is not zero
        sphere.coarse_head[-1].weight.normal_(0.0, 0.01)
        sphere.coarse_head[-1].bias.normal_(0.0, 0.01)
    sphere_stem = save_model(sphere, tmp_path / "sphere", {"steps": 7})
    init_model, _ = load_model(sphere_stem)  # fp16-rounded, as train() reads it
    assert init_model.config.coarse == "ico_sphere"
    assert torch.count_nonzero(init_model.coarse_head[-1].weight) > 0

    out = tmp_path / "run"
    cfg = _config(fake, stem, out, "optim.steps=1", "run.checkpoint_every=1", "optim.lr=0.0")
    train(cfg, init_from=str(sphere_stem))

    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    zeroed = ["coarse_head.2."] + [f"stages.{i}.offset." for i in range(len(init_model.stages))]
    for prefix in zeroed:
        assert torch.count_nonzero(state[prefix + "weight"]) == 0, prefix
        assert torch.count_nonzero(state[prefix + "bias"]) == 0, prefix
    init_state = init_model.state_dict()
    assert set(init_state) == {k for k in state if not k.startswith("prior.")}
    for k, v in init_state.items():
        if not any(k.startswith(p) for p in zeroed):
            assert torch.equal(state[k], v), k
    _assert_bank_equal({k[len("prior."):]: v for k, v in state.items() if k.startswith("prior.")}, tensors,
                       exact=True)

    model, meta = load_model(out / "snapshots" / "step_000001")
    assert (meta["steps"], meta["run_step"], meta["init_steps"]) == (8, 1, 7)
    assert model.config.coarse == "retrieval"
    # and so the initialised model's coarse shape is the retrieved shape itself
    rows = torch.tensor([0, 5])
    prior = model.prior.posed(rows)
    with torch.no_grad():
        res = model(torch.rand(2, 3, 64, 64), prior=prior)
    assert torch.equal(res.coarse_verts, prior[:, :162])
