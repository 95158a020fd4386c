"""The worker process protocol (recon_core.io.worker) and its client (blender_addon/worker_client.py), without Blender."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recon_core.io import worker
from recon_core.mesh.detail import DEFAULT_DETAIL, DETAIL_VERTICES
from recon_core.network.categories import CATEGORIES
from recon_core.network.config import ModelConfig
from tests.conftest import TINY

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "blender_addon"))  # the bpy-free modules of the add-on, imported as plain modules
import mesh_data  # noqa: E402
import worker_client  # noqa: E402
from worker_client import WorkerClient, WorkerError  # noqa: E402

PYTHON = os.environ.get("RECON_TEST_PYTHON") or (
    str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").is_file() else sys.executable)
"""Interpreter the test workers run with (``RECON_TEST_PYTHON`` overrides it)."""


def make_shape_image(path: Path) -> Path:
    """A red ellipse on white: an object the image loader can find."""
    image = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(image).ellipse((34, 16, 94, 112), fill=(200, 40, 40))
    image.save(path)
    return path


def make_alpha_image(path: Path) -> Path:
    """A 120 x 90 cut-out whose alpha is the mask: a block with a transparent hole and a half-transparent corner."""
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[20:70, 40:75] = (150, 90, 40, 255)
    rgba[30:40, 50:60, 3] = 0
    rgba[60:70, 40:45, 3] = 128
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def write_tiny_model(folder: Path) -> Path:
    stem = folder / "tiny"
    stem.with_suffix(".json").write_text(json.dumps({"model": ModelConfig(**TINY).to_dict(), "trained": False}))
    return stem


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worker")
    bad = folder / "bad.png"
    bad.write_bytes(b"this is not an image")
    return {"image": make_shape_image(folder / "shape.png"), "bad": bad, "model": write_tiny_model(folder)}


@pytest.fixture(scope="module")
def client(files):
    """One warm worker shared by the module's tests (the model loads once)."""
    c = WorkerClient(PYTHON, str(files["model"]), repo=str(REPO))
    yield c
    c.close()


# -- constants the add-on copies so that Blender never imports recon_core ------------------------------


def test_client_constants_match_recon_core():
    assert worker_client.PROTOCOL_VERSION == worker.PROTOCOL_VERSION
    assert worker_client.DELAY_ENV == worker.DELAY_ENV
    assert worker_client.CATEGORY_NAMES == tuple(c.name for c in CATEGORIES)
    assert worker_client.DETAIL_VERTICES == DETAIL_VERTICES
    assert worker_client.DEFAULT_DETAIL == DEFAULT_DETAIL
    from recon_core.io.inference import MAX_HEIGHT_MM, MIN_HEIGHT_MM

    assert (worker_client.MIN_HEIGHT_MM, worker_client.MAX_HEIGHT_MM) == (MIN_HEIGHT_MM, MAX_HEIGHT_MM)
    from recon_core.io.image import MAX_PIXELS

    assert worker_client.MAX_PIXELS == MAX_PIXELS


def test_array_encoding_round_trips_little_endian():
    verts = np.random.default_rng(0).normal(size=(7, 3))
    packed = worker.encode_array(verts, "<f4")
    assert packed["shape"] == [7, 3] and len(packed["data"]) % 4 == 0
    np.testing.assert_array_equal(worker_client._decode(packed), verts.astype("<f4"))
    faces = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(worker.decode_array(worker.encode_array(faces, "<i4")), faces)


def test_to_blender_rotates_output_frame_and_rests_on_origin():
    out = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    got = mesh_data.to_blender(out, scale=2.0)
    rotated = np.array([[0.0, 0.0, 0.0], [2.0, -6.0, 4.0]])  # (x, y, z) -> (x, -z, y), times 2
    np.testing.assert_allclose(got, rotated - [1.0, -3.0, 0.0])
    assert got[:, 2].min() == 0.0
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        mesh_data.to_blender(np.zeros((3, 2)))


def test_mesh_buffers_are_the_flat_arrays_foreach_set_takes():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # a tetrahedron, int64 as numpy makes it
    co, loop_verts, loop_starts = mesh_data.mesh_buffers(verts, faces)
    assert (co.dtype, loop_verts.dtype, loop_starts.dtype) == (np.float32, np.int32, np.int32)
    np.testing.assert_array_equal(co, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(loop_verts, [0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3])
    np.testing.assert_array_equal(loop_starts, [0, 3, 6, 9])
    empty = mesh_data.mesh_buffers(np.zeros((0, 3)), np.zeros((0, 3), np.int32))
    assert [len(a) for a in empty] == [0, 0, 0]
    with pytest.raises(ValueError, match=r"verts must have shape \(V, 3\)"):
        mesh_data.mesh_buffers(verts[:, :2], faces)
    with pytest.raises(ValueError, match=r"faces must have shape \(F, 3\)"):
        mesh_data.mesh_buffers(verts, np.array([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="integer vertex indices"):
        mesh_data.mesh_buffers(verts, faces.astype(float))
    with pytest.raises(ValueError, match=r"faces index vertices -1 \.\. 3, but there are 4 vertices"):
        mesh_data.mesh_buffers(verts, np.where(faces == 0, -1, faces))
    with pytest.raises(ValueError, match=r"faces index vertices 0 \.\. 4, but there are 4 vertices"):
        mesh_data.mesh_buffers(verts, np.where(faces == 3, 4, faces))


def _model_files(folder: Path, stem: str, meta, weights: bool = True, branch: bool = False) -> None:
    """``STEM.json`` holding ``meta`` (a dict, written as JSON), with ``STEM.safetensors`` and
    ``STEM.category.safetensors`` beside it as asked (empty: only whether they are there is checked)."""
    (folder / f"{stem}.json").write_text(json.dumps(meta))
    if weights:
        (folder / f"{stem}.safetensors").write_bytes(b"")
    if branch:
        (folder / f"{stem}.category.safetensors").write_bytes(b"")


def _model_case(name: str, folder: Path) -> Path:
    """The Model path of one case of :func:`test_check_model_refuses_exactly_what_weights_refuses`, its files made."""
    trained = {"model": {"category_branch": False}, "trained": True}
    branched = {"model": {"category_branch": True}, "trained": True}
    if name == "folder":
        (folder / "models").mkdir()
        return folder / "models"
    if name == "missing file":
        return folder / "nothing.safetensors"
    if name == "finder json":
        _model_files(folder, "finder", {"finder": {"base": 8}})
        return folder / "finder.json"
    if name == "no model section":
        _model_files(folder, "other", {"weights": "elsewhere"})
        return folder / "other.safetensors"
    if name in ("untrained without weights", "untrained branch without weights"):
        model = {"category_branch": name == "untrained branch without weights"}
        _model_files(folder, "tiny", {"model": model, "trained": False}, weights=False)
        return folder / "tiny"
    if name == "missing weights":
        _model_files(folder, "net", trained, weights=False)
        return folder / "net.json"
    if name == "missing category branch":
        _model_files(folder, "net", branched)
        return folder / "net.safetensors"
    if name == "category branch there":
        _model_files(folder, "net", branched, branch=True)
        return folder / "net.safetensors"
    if name == "stem with a dot":
        _model_files(folder, "net.v2", branched, branch=True)
        return folder / "net.v2"
    if name == "stem with a dot, branch missing":
        _model_files(folder, "net.v2", branched)
        (folder / "net.category.safetensors").write_bytes(b"")  # another stem's branch
        return folder / "net.v2.safetensors"
    if name == "good model":
        _model_files(folder, "good", trained)
        return folder / "good.safetensors"
    raise AssertionError(name)


@pytest.mark.parametrize("name, refused", [
    ("folder", True), ("missing file", True), ("finder json", True), ("no model section", True),
    ("untrained without weights", False), ("untrained branch without weights", False), ("missing weights", True),
    ("missing category branch", True), ("category branch there", False), ("stem with a dot", False),
    ("stem with a dot, branch missing", True), ("good model", False)])
def test_check_model_refuses_exactly_what_weights_refuses(tmp_path, name, refused):
    """The add-on's copy of recon_core.io.weights's rules (worker_client.check_model, without recon_core) refuses a
    Model exactly when weights.check_model_files does, on the same files: the two cannot drift apart unseen."""
    from recon_core.io.weights import WeightsError, check_model_files  # here: Blender's process never imports torch

    path = _model_case(name, tmp_path)
    try:
        check_model_files(path)
        weights_refused = False
    except WeightsError:
        weights_refused = True
    try:
        worker_client.check_model(str(path))
        client_refused = False
    except WorkerError as err:
        client_refused = True
        assert str(err).startswith(f"The Model in the add-on preferences, {path},"), str(err)
    assert (weights_refused, client_refused) == (refused, refused)


# -- the protocol, in-process -----------------------------------------------------------------------------


def test_serve_answers_protocol_errors_and_stops_at_shutdown(files):
    lines = [
        "not json",
        json.dumps({"type": "reconstruct", "version": 99, "id": "a"}),
        json.dumps({"type": "dance", "version": 1, "id": "b"}),
        json.dumps({"type": "reconstruct", "version": 1, "id": "c"}),  # no image
        json.dumps({"type": "shutdown", "version": 1}),
        json.dumps({"type": "reconstruct", "version": 1, "id": "never"}),
    ]
    out = io.StringIO()
    code = worker.serve(worker._Channel(out), io.StringIO("\n".join(lines) + "\n"), str(files["model"]))
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0
    assert all(m["version"] == worker.PROTOCOL_VERSION for m in messages)
    assert [m["type"] for m in messages] == ["hello", "ready", "error", "error", "error", "error"]
    assert messages[1]["trained"] is False
    errors = messages[2:]
    assert [e["id"] for e in errors] == [None, "a", "b", "c"]
    assert all(e["kind"] == "ProtocolError" and not e["fatal"] for e in errors)
    assert "protocol version 1" in errors[1]["message"] and "'image'" in errors[3]["message"]


def test_requests_ask_for_a_detail_level_or_the_legacy_vertex_count(files):
    """``detail`` names the level; ``vertices`` (add-ons before the levels) still works; both, or an
    unknown level, is an error and the worker goes on."""
    image = str(files["image"])
    requests = {
        "low": {"detail": "low"},
        "default": {"detail": None},
        "legacy": {"vertices": 642},
        "both": {"detail": "low", "vertices": 642},
        "unknown": {"detail": "ultra"},
    }
    lines = [json.dumps({"type": "reconstruct", "version": 1, "id": rid, "image": image, **fields})
             for rid, fields in requests.items()]
    out = io.StringIO()
    assert worker.serve(worker._Channel(out), io.StringIO("\n".join(lines) + "\n"), str(files["model"])) == 0
    answers = {m["id"]: m for m in map(json.loads, out.getvalue().splitlines()) if m["type"] in ("result", "error")}
    faces = {rid: worker.decode_array(m["faces"]).shape[0] for rid, m in answers.items() if m["type"] == "result"}
    assert faces == {"low": 2 * 642 - 4, "default": 2 * ModelConfig(**TINY).vertices - 4, "legacy": 2 * 642 - 4}
    for rid, fragment in (("both", "both detail and the older vertices"), ("unknown", "Unknown detail level 'ultra'")):
        assert answers[rid]["type"] == "error" and answers[rid]["kind"] == "ValueError", answers[rid]
        assert fragment in answers[rid]["message"] and not answers[rid]["fatal"]


# -- candidates: several plausible shapes in one result -------------------------------------------------


@pytest.fixture(scope="module")
def banked(tmp_path_factory) -> tuple[Path, Path]:
    """``(model stem, chair picture)``: a tiny sphere network with a shape bank of four fake models
    (tests/test_shape_bank.py's), so it can give up to four candidates."""
    from tests.test_shape_bank import write_banked_model

    return write_banked_model(tmp_path_factory.mktemp("banked"))


def serve_requests(model: Path, requests: dict[str, dict]) -> dict[str, dict]:
    """Answer ``reconstruct`` requests (id -> fields) with an in-process worker; returns each id's answer."""
    lines = [json.dumps({"type": "reconstruct", "version": 1, "id": rid, **fields}) for rid, fields in requests.items()]
    out = io.StringIO()
    assert worker.serve(worker._Channel(out), io.StringIO("\n".join(lines) + "\n"), str(model)) == 0
    return {m["id"]: m for m in map(json.loads, out.getvalue().splitlines()) if m["type"] in ("result", "error")}


def test_candidates_come_in_one_result_whose_own_fields_are_the_first(banked, tmp_path):
    """K > 1: one result, its fields those of a request without candidates (old clients read them), plus the
    list of K, each with its own mesh, report, category and a confidence falling in rank order."""
    model, image = banked
    fields = {"image": str(image), "detail": "low", "height_mm": 50.0}
    answers = serve_requests(model, {"one": fields, "null": {**fields, "candidates": None},
                                     "three": {**fields, "candidates": 3, "mask_path": str(tmp_path / "m.png")},
                                     "five": {**fields, "candidates": 5}})
    assert all(a["type"] == "result" for a in answers.values()), answers
    assert "candidates" not in answers["one"] and "candidates" not in answers["null"]
    three = answers["three"]
    assert len(three["candidates"]) == 3 and three["mask_path"] == str(tmp_path / "m.png")
    for key in ("verts", "faces", "category", "category_probs", "report"):  # the first, exactly as without K
        assert three[key] == answers["one"][key], key
    first = three["candidates"][0]
    assert first["verts"] == three["verts"] and first["faces"] == three["faces"] and first["report"] == three["report"]
    confidences = [c["confidence"] for c in three["candidates"]]
    assert all(0 < c <= 1 for c in confidences) and confidences == sorted(confidences, reverse=True)
    assert sum(confidences) <= 1 + 1e-9
    likely = [c["likelihood"] for c in three["candidates"]]  # in words, against the likeliest
    assert likely[0] == "the likeliest" and set(likely[1:]) <= {"about as likely", "less likely", "much less likely"}
    assert three["camera"] == first["camera"] and set(first["camera"]) == {"R", "T", "K", "width", "height"}
    meshes = set()
    for c in three["candidates"]:
        assert set(c) == {"verts", "faces", "report", "confidence", "likelihood", "category", "notes", "camera"}
        verts, faces = worker.decode_array(c["verts"]), worker.decode_array(c["faces"])
        assert verts.shape[1] == faces.shape[1] == 3 and faces.max() == len(verts) - 1
        assert np.ptp(verts[:, 1]) == pytest.approx(50.0, rel=1e-4)
        assert c["report"]["ok"] and c["report"]["summary"] and c["category"] == three["category"]
        meshes.add(verts.tobytes())
    assert len(meshes) == 3, "three different shapes"
    five = answers["five"]
    assert len(five["candidates"]) == 4, "the bank holds four models"
    assert "the model found 4 candidate shapes for this picture, not 5" in five["notes"]
    assert [c["confidence"] for c in five["candidates"][:3]] == pytest.approx(confidences)


def test_a_model_without_a_bank_answers_candidates_with_its_one_shape_and_a_note(files):
    image = str(files["image"])
    answers = serve_requests(files["model"], {"three": {"image": image, "detail": "low", "candidates": 3},
                                              "one": {"image": image, "detail": "low"}})
    three, one = answers["three"], answers["one"]
    assert three["type"] == "result", three
    [only] = three["candidates"]
    assert only["confidence"] is None and only["verts"] == three["verts"] == one["verts"]
    note = ("this model gives one shape per picture, so you get 1 candidate, not 3 (several need a model with a "
            "shape bank)")
    assert [n for n in three["notes"] if n not in one["notes"]] == [note]


@pytest.mark.parametrize("count", [0, -2, 2.5, "3", True, [3]])
def test_a_bad_candidate_count_is_a_value_error_and_the_worker_goes_on(files, count):
    image = str(files["image"])
    answers = serve_requests(files["model"], {"bad": {"image": image, "detail": "low", "candidates": count},
                                              "next": {"image": image, "detail": "low"}})
    bad = answers["bad"]
    assert bad["type"] == "error" and bad["kind"] == "ValueError" and not bad["fatal"], bad
    assert bad["message"] == f"The request's candidates must be a whole number of at least 1, got {count!r}."
    assert answers["next"]["type"] == "result"


@pytest.mark.parametrize("field, value, kind, fragment", [
    ("test_delay_s", "x", "ProtocolError", "The request's test_delay_s must be a number of seconds or null, got 'x'."),
    ("image", 5, "ProtocolError", "The request's image must be the picture file's path, got 5."),
    ("image", ["a.png"], "ProtocolError", "The request's image must be the picture file's path, got ['a.png']."),
    ("category", 3, "ProtocolError", "The request's category must be a category name or null, got 3."),
    ("smooth", "false", "ProtocolError", "The request's smooth must be true or false or null, got 'false'."),
    ("height_mm", "abc", "ProtocolError", "The request's height_mm must be a number of millimetres or null, got 'abc'."),
    ("height_mm", True, "ProtocolError", "The request's height_mm must be a number of millimetres or null, got True."),
    ("height_mm", 0, "ValueError", "height_mm must be a number of millimetres from 0.1 to 100,000 (or null: "
                                   "unscaled), got 0."),
    ("height_mm", 1e-44, "ValueError", "height_mm must be a number of millimetres from 0.1 to 100,000"),
    ("test_delay_s", float("inf"), "ProtocolError", "The request's test_delay_s must be under an hour, got inf."),
    ("height_mm", 1e39, "ValueError", "height_mm must be a number of millimetres from 0.1 to 100,000"),
    ("mask_path", 7, "ProtocolError", "The request's mask_path must be a file path or null, got 7."),
    ("solid", 1, "ProtocolError", "The request's solid must be true or false or null, got 1."),
    ("upright", "no", "ProtocolError", "The request's upright must be true or false or null, got 'no'."),
])
def test_a_request_field_of_the_wrong_kind_is_one_sentence_and_the_worker_goes_on(files, field, value, kind,
                                                                                   fragment):
    """Each field is checked before the work starts: a wrong type is the client's error (ProtocolError), a bad
    value the user's (ValueError); the worker answers both and serves the next request."""
    image = str(files["image"])
    answers = serve_requests(files["model"], {"bad": {"image": image, "detail": "low", field: value},
                                              "next": {"image": image, "detail": "low"}})
    bad = answers["bad"]
    assert bad["type"] == "error" and bad["kind"] == kind and not bad["fatal"], bad
    assert bad["message"].startswith(fragment), bad["message"]
    assert answers["next"]["type"] == "result"


def test_the_client_reads_the_candidates(banked):
    model, image = banked
    c = WorkerClient(PYTHON, str(model), repo=str(REPO))
    try:
        result = c.submit(str(image), detail="low", candidates=3).wait()
        single = c.submit(str(image), detail="low").wait()
    finally:
        c.close(timeout=30)
    assert len(result.candidates) == 3 and all(isinstance(k, worker_client.Candidate) for k in result.candidates)
    np.testing.assert_array_equal(result.candidates[0].verts, result.verts)
    np.testing.assert_array_equal(result.candidates[0].faces, result.faces)
    confidences = [k.confidence for k in result.candidates]
    assert all(isinstance(k, float) for k in confidences) and confidences == sorted(confidences, reverse=True)
    assert confidences[0] > confidences[1]
    for k in result.candidates:
        assert k.verts.dtype == np.float32 and k.faces.dtype == np.int32 and k.report["ok"] and k.category == "chair"
        assert k.camera["R"].shape == (3, 3) and k.camera["K"][0, 0] > 0 and k.camera["width"] > 0
    assert result.camera is not None and result.candidates[1].camera is not result.camera
    [own] = single.candidates  # one shape asked for: the list holds the result itself, without a confidence
    assert own.confidence is None and own.verts is single.verts and own.report == single.report
    np.testing.assert_array_equal(single.verts, result.verts)


def default_and(banked, **asked):
    """The banked model's results for its picture at the low detail: as a request without options, and with ``asked``
    (``submit``'s keywords), from one warm worker."""
    model, image = banked
    c = WorkerClient(PYTHON, str(model), repo=str(REPO))
    try:
        return c.submit(str(image), detail="low").wait(), c.submit(str(image), detail="low", **asked).wait()
    finally:
        c.close(timeout=30)


def test_the_client_asks_for_the_pockets_filled(banked):
    """``submit(solid=True)`` (the add-on's Fill Hollow Pockets) sends ``"solid": true``: the worker drops the part
    that encloses a negative volume and says so; without it the request is as before and the pocket stays, said."""
    import trimesh

    hollow, filled = default_and(banked, solid=True)

    def volumes(result):
        mesh = trimesh.Trimesh(result.verts, result.faces, process=False)
        return sorted(float(p.volume) for p in mesh.split(only_watertight=False))

    pockets = [v for v in volumes(hollow) if v < 0]
    assert pockets and f"the mesh holds {len(pockets)} sealed hollow pocket" in " ".join(hollow.notes)
    # the pockets are dropped before the decimation: the same outer solid, decimated anew (within its error)
    assert volumes(filled) == pytest.approx([v for v in volumes(hollow) if v > 0], rel=0.01)
    assert filled.report["ok"] and f"filled {len(pockets)} sealed hollow pocket" in " ".join(filled.notes)


def test_the_client_asks_for_the_mesh_as_seen_and_else_it_stands_upright(banked):
    """``submit(upright=False)`` (the add-on's Stand Upright off) sends ``"upright": false`` and gets the mesh as the
    picture's camera saw it; without it the request is as before and the worker stands the mesh on its base, as
    ``recon-mesh`` does: another box (tests/test_shape_bank.py checks the standing itself)."""
    stood, seen = default_and(banked, upright=False)
    assert stood.report["ok"] and seen.report["ok"]
    assert not np.allclose(np.ptp(stood.verts, axis=0), np.ptp(seen.verts, axis=0), atol=1e-3)


def test_a_malformed_candidate_fails_the_job_in_one_sentence():
    mesh = {"verts": worker.encode_array(np.zeros((4, 3)), "<f4"),
            "faces": worker.encode_array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], "<i4")}
    for candidates, fragment in (([{**mesh, "faces": worker.encode_array(np.zeros((2, 4)), "<i4")}], "shapes"),
                                 ([{"verts": mesh["verts"]}], "'faces'"), ([], "empty or malformed candidates list"),
                                 ({"a": 1}, "malformed candidates list")):
        job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
        job._handle({"type": "result", "id": "r1", **mesh, "candidates": candidates})
        assert job.result is None and "The worker sent a malformed mesh" in str(job.error), candidates
        assert fragment in str(job.error) and "\n" not in str(job.error)


def test_a_camera_that_is_not_one_fails_the_job_in_one_sentence():
    """The result's picture camera is read into arrays; one that is not a pinhole camera with square pixels, a
    rotation and a picture size fails the job in one sentence (the worker is another version); none is None."""
    mesh = {"verts": worker.encode_array(np.zeros((4, 3)), "<f4"),
            "faces": worker.encode_array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], "<i4")}
    good = {"R": np.diag([1.0, -1.0, -1.0]).tolist(), "T": [0.0, 0.0, 1.9],
            "K": [[200.0, 0.0, 64.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]], "width": 128, "height": 120}
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
    job._handle({"type": "result", "id": "r1", **mesh, "camera": good})
    assert job.error is None and job.result.camera["width"] == 128 and job.result.camera["T"].tolist() == [0, 0, 1.9]
    assert job.result.candidates[0].camera["K"][0, 0] == 200.0
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
    job._handle({"type": "result", "id": "r1", **mesh})
    assert job.error is None and job.result.camera is None
    for bad, fragment in (({"R": np.diag([1.0, 1.0, -1.0]).tolist()}, "not a rotation"),
                          ({"R": (2 * np.eye(3)).tolist()}, "not a rotation"),
                          ({"T": [0.0, float("nan"), 1.0]}, "not finite"),
                          ({"T": [0.0, 1.0]}, "shapes"),
                          ({"K": [[0.0, 0.0, 64.0], [0.0, 0.0, 60.0], [0.0, 0.0, 1.0]]}, "pinhole"),
                          ({"K": [[200.0, 0.0, 64.0], [0.0, 150.0, 60.0], [0.0, 0.0, 1.0]]}, "pinhole"),
                          ({"width": 0}, "0 x 120 pixels"), ({"width": True}, "True x 120"),
                          ({"height": 12.5}, "128 x 12.5"), ({"R": "east"}, "malformed mesh")):
        job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
        job._handle({"type": "result", "id": "r1", **mesh, "camera": {**good, **bad}})
        assert job.result is None and "The worker sent a malformed mesh" in str(job.error), bad
        assert fragment in str(job.error) and "\n" not in str(job.error), (bad, job.error)


def test_picture_view_puts_the_blender_camera_where_the_workers_sees_the_mesh():
    """The camera-to-object matrix of picture_view, applied to the mesh as to_blender places it, gives the camera
    coordinates through which the worker's camera (K (R p + T)) sees each vertex, at any scale; the picture's plane
    fills the picture's pixels exactly, behind the mesh; a mesh partly behind the camera is refused."""
    from recon_core.mesh.camera import Camera, picture_camera, rotation_x, seen_camera

    rng = np.random.default_rng(0)
    verts = rng.uniform(-0.3, 0.3, size=(100, 3))
    turn = rotation_x(20.0)
    rotation, centre = seen_camera(1.9, (turn, np.array([0.1, -0.2, 0.05])))
    moved = verts @ turn.T + [0.1, -0.2, 0.05]
    mask = np.zeros((90, 160))
    mask[20:70, 50:100] = 1.0
    camera = picture_camera(moved, rotation, centre, mask)
    packed = {"R": camera.R, "T": camera.T, "K": camera.K, "width": camera.width, "height": camera.height}
    for scale in (1.0, 0.02):
        view = mesh_data.picture_view(packed, moved, scale)
        local = np.linalg.inv(np.asarray(view["matrix"]))
        placed = mesh_data.to_blender(moved, scale)
        seen = placed @ local[:3, :3].T + local[:3, 3]  # Blender camera axes: x right, y up, looking along -z
        f, cx, cy = camera.K[0, 0], camera.K[0, 2], camera.K[1, 2]
        pixels = np.stack([cx + f * seen[:, 0] / -seen[:, 2], cy - f * seen[:, 1] / -seen[:, 2]], axis=1)
        np.testing.assert_allclose(pixels, camera.project(moved), atol=1e-9)
        assert np.allclose(local[:3, :3] @ local[:3, :3].T, np.eye(3))
        corner = np.asarray(view["plane_location"]) + [-view["plane_size"] / 2, view["plane_size"] / 2 * 90 / 160, 0]
        np.testing.assert_allclose([cx + f * corner[0] / -corner[2], cy - f * corner[1] / -corner[2]], [0, 0],
                                   atol=1e-9)  # the picture's top left corner
        assert -view["plane_location"][2] > (-seen[:, 2]).max() and view["clip_start"] < (-seen[:, 2]).min()
        assert view["clip_end"] > -view["plane_location"][2]
        assert view["lens"] == pytest.approx(f * mesh_data.SENSOR_MM / 160) and view["sensor_fit"] == 'HORIZONTAL'
    behind = Camera(R=camera.R, T=camera.T - [0, 0, 10.0], K=camera.K, width=160, height=90)
    with pytest.raises(ValueError, match="in front of the picture's camera"):
        mesh_data.picture_view({"R": behind.R, "T": behind.T, "K": behind.K, "width": 160, "height": 90}, moved)


def test_mesh_motion_follows_an_applied_transform_and_tells_an_edited_mesh():
    """mesh_motion: the identity for the mesh as picture_view saw it; the affine map of Apply Scale, Rotation and Set
    Origin (a turn, a stretch, a shift); None for a mesh with other vertices, or one whose outermost vertex moved."""
    from recon_core.mesh.camera import rotation_y

    rng = np.random.default_rng(2)
    verts = rng.uniform(-0.3, 0.3, size=(300, 3))
    packed = {"R": np.diag([1.0, -1.0, -1.0]), "T": np.array([0.0, 0.0, 1.9]),
              "K": np.array([[200.0, 0.0, 64.0], [0.0, 200.0, 64.0], [0.0, 0.0, 1.0]]), "width": 128, "height": 128}
    view = mesh_data.picture_view(packed, verts, 0.5)
    placed = mesh_data.to_blender(verts, 0.5).astype(np.float32).astype(np.float64)
    assert 4 <= len(view["anchors"]) <= 14
    np.testing.assert_allclose(mesh_data.mesh_motion(view, placed), np.eye(4), atol=1e-6)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = 2.0 * rotation_y(30.0) @ np.diag([1.0, 1.0, 1.5]), [0.1, -0.2, 0.3]
    moved = placed @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(mesh_data.mesh_motion(view, moved), affine, atol=1e-6)
    assert mesh_data.mesh_motion(view, placed[:-1]) is None
    edited = placed.copy()
    edited[view["anchors"][0]] += [0.0, 0.0, 0.05]
    assert mesh_data.mesh_motion(view, edited) is None
    inner = placed.copy()  # a vertex that is no anchor: an edit there is not seen (the camera is as good)
    inner[np.setdiff1d(np.arange(len(placed)), view["anchors"])[0]] += 0.01
    assert mesh_data.mesh_motion(view, inner) is not None
    # far from the origin (Apply All Transforms of an object placed far off), float32's rounding is no edit
    far = (placed + [300.0, 100.0, 0.0]).astype(np.float32).astype(np.float64)
    assert mesh_data.mesh_motion(view, far) is not None
    # a view recorded before the anchors were: as made
    old = {k: v for k, v in view.items() if k not in ("anchors", "anchor_co", "vertex_count")}
    np.testing.assert_array_equal(mesh_data.mesh_motion(old, placed), np.eye(4))


def test_a_worker_that_ignores_the_object_mask_fails_the_job():
    """A worker that predates object masks sends no ``object_mask`` back: it found the object itself, against the
    user's mask, so the job fails in one sentence; a result that names the mask sent is accepted."""
    mesh = {"verts": worker.encode_array(np.zeros((4, 3)), "<f4"),
            "faces": worker.encode_array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], "<i4")}
    for echoed, ok in ((None, False), ("/elsewhere/mask.png", False), ("/masks/mask.png", True)):
        job = worker_client.Job(WorkerClient(PYTHON), "r1", 0, object_mask="/masks/mask.png")
        job._handle({"type": "result", "id": "r1", **mesh, **({} if echoed is None else {"object_mask": echoed})})
        assert (job.result is not None) == ok and (job.error is None) == ok
        if not ok:
            assert "did not use the object mask" in str(job.error) and "\n" not in str(job.error)
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)  # no mask sent: nothing to check
    job._handle({"type": "result", "id": "r1", **mesh})
    assert job.result is not None and job.result.mask_unsure is False  # a worker that predates the field: sure
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
    job._handle({"type": "result", "id": "r1", **mesh, "mask_unsure": True})
    assert job.result.mask_unsure is True


class _StubReconstructor:
    """Stands in for a Reconstructor: every candidate a tetrahedron, a Reconstruction with the ``fields`` given."""

    def __init__(self, banked: bool, **fields):
        self.banked, self.fields = banked, fields

    def reconstruct_candidates(self, rgb, alpha, count, **kwargs):
        from recon_core.io.inference import Reconstruction
        from recon_core.mesh.printable import check_printable

        verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
        faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
        return [Reconstruction(verts, faces, "chair", np.full(13, 1 / 13), check_printable(verts, faces), None,
                               **self.fields) for _ in range(count if self.banked else 1)]


class _LargeReconstructor(_StubReconstructor):
    """Every candidate a tetrahedron ``size`` mm along each axis."""

    def __init__(self, size: float):
        super().__init__(True)
        self.size = size

    def reconstruct_candidates(self, rgb, alpha, count, **kwargs):
        results = super().reconstruct_candidates(rgb, alpha, count, **kwargs)
        for result in results:
            result.verts = result.verts * self.size
        return results


def test_a_shape_larger_than_most_printers_is_noted_at_once(files):
    """recon-mesh said it at once; the add-on only at the export, after the designer had worked on it."""
    for size, height, noted in ((300.0, 90.0, True), (200.0, 90.0, False), (300.0, None, False)):
        results, _ = worker._reconstruct(_LargeReconstructor(size), str(files["image"]), 2, {"height_mm": height})
        for result in results:
            said = [n for n in result.notes if "larger than the build volume" in n]
            assert len(said) == noted, (size, height, result.notes)
            if noted:
                assert said[0] == ("at 300 x 300 x 300 mm (width x depth x height) it is larger than the build volume "
                                   "of most printers (256 mm a side on a large one): give a smaller --height-mm "
                                   "(the add-on's Height) to print it whole, or cut it into parts")


class _KeyErrorReconstructor(_StubReconstructor):
    """A bug deep in the reconstruction that raises KeyError."""

    def reconstruct_candidates(self, rgb, alpha, count, **kwargs):
        return {}["verts"]


def test_a_request_without_its_image_is_said_and_a_keyerror_inside_is_no_missing_field(files):
    """Only a request that lacks the picture is told it lacks a field; a KeyError in the reconstruction was said as
    "The request lacks the field 'verts'", sending the user after the add-on's request."""
    answers = []
    for stub, request in ((_StubReconstructor(False), {}), (_KeyErrorReconstructor(False),
                                                              {"image": str(files["image"])})):
        out = io.StringIO()
        worker._handle_request(worker._Channel(out), stub, {"type": "reconstruct", "id": "r1", **request})
        answers.append([json.loads(line) for line in out.getvalue().splitlines() if '"error"' in line][-1])
    assert (answers[0]["kind"], answers[0]["message"]) == (
        "ProtocolError", "The request lacks the field 'image' (the picture file's path).")
    assert answers[1]["kind"] == "InternalError" and "lacks" not in answers[1]["message"]
    assert "KeyError" in answers[1]["message"]


def test_the_worker_sends_the_finders_doubt(files):
    """The result's mask_unsure is the reconstruction's (the finder unsure of the mask it found)."""
    for unsure in (False, True):
        out = io.StringIO()
        stub = _StubReconstructor(False, mask_unsure=unsure)
        worker._handle_request(worker._Channel(out), stub, {"type": "reconstruct", "id": "r1",
                                                            "image": str(files["image"])})
        result = [json.loads(line) for line in out.getvalue().splitlines() if '"result"' in line][-1]
        assert result["mask_unsure"] is unsure


def test_the_worker_sends_the_thin_faces_and_the_client_reads_them(files):
    """A result whose thin walls a note names sends their faces (for the add-on to mark), its candidates too; one
    without sends no field, and a client reads None; indices outside the mesh fail the job in one sentence."""
    for thin in (None, np.array([1, 3])):
        out = io.StringIO()
        worker._handle_request(worker._Channel(out), _StubReconstructor(True, thin_faces=thin, confidence=0.5), {"type": "reconstruct", "id": "r1", "candidates": 2,
                                                                  "image": str(files["image"])})
        message = [json.loads(line) for line in out.getvalue().splitlines() if '"result"' in line][-1]
        job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
        job._handle(message)
        assert job.error is None
        if thin is None:
            assert "thin_faces" not in message and job.result.thin_faces is None
            assert all(c.thin_faces is None for c in job.result.candidates)
        else:
            assert job.result.thin_faces.tolist() == [1, 3]
            assert [c.thin_faces.tolist() for c in job.result.candidates] == [[1, 3], [1, 3]]
    message["thin_faces"] = worker.encode_array([1, 4], "<i4")  # face 4 of 4
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
    job._handle(message)
    assert job.result is None and "malformed mesh" in str(job.error) and "\n" not in str(job.error)


# -- a real worker process ---------------------------------------------------------------------------


def test_reconstruct_cold_then_warm(client, files):
    job = client.submit(str(files["image"]), detail="low", height_mm=50.0)
    result = job.wait()
    assert client.hello["pid"] == client.process.pid and client.ready is not None
    assert result.verts.dtype == np.float32 and result.verts.shape == (642, 3)
    assert result.faces.dtype == np.int32 and result.faces.shape == (1280, 3)
    assert result.report["ok"] and result.report["watertight"] and result.report["edge_manifold"]
    assert np.ptp(result.verts[:, 1]) == pytest.approx(50.0, rel=1e-4)  # height is the output frame's Y
    assert result.report["unit"] == "mm" and "printable" in result.report["summary"]
    assert any("untrained" in note for note in result.notes)
    pid = client.process.pid
    warm = client.submit(str(files["image"]), detail="medium", category="chair").wait()
    assert client.process.pid == pid, "the worker stays warm between requests"
    assert warm.verts.shape == (2562, 3) and warm.category == "chair" and warm.report["unit"] == "units"


def test_bad_image_is_one_sentence_and_the_worker_survives(client, files):
    with pytest.raises(WorkerError) as err:
        client.submit(str(files["bad"])).wait()
    message = str(err.value)
    assert str(files["bad"]) in message and "\n" not in message
    with pytest.raises(WorkerError, match="not found"):
        client.submit(str(files["bad"].with_name("missing.png"))).wait()
    assert client.alive
    assert client.submit(str(files["image"]), detail="low").wait().report["ok"]


def test_the_mask_is_written_where_asked(client, files, tmp_path):
    """mask_path: the worker writes recon-mesh --save-mask's file there (here the picture's alpha) and says so."""
    picture = make_alpha_image(tmp_path / "cutout.png")
    path = tmp_path / "out" / "mask.png"
    path.parent.mkdir()
    result = client.submit(str(picture), detail="low", mask_path=str(path)).wait()
    assert result.mask_path == str(path) and result.report["ok"] and result.mask_unsure is False  # its own alpha
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (120, 90)
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(picture))[..., 3])
    assert [p.name for p in path.parent.iterdir()] == ["mask.png"], "no temporary file is left"
    assert client.submit(str(picture), detail="low").wait().mask_path is None, "no mask unless asked"
    blocked = tmp_path / "a file"
    blocked.write_text("")
    result = client.submit(str(picture), detail="low", mask_path=str(blocked / "mask.png")).wait()
    assert result.mask_path is None and result.report["ok"], "the mesh comes all the same"
    assert any(f"could not be written to {blocked / 'mask.png'}" in note for note in result.notes)


def test_a_mask_that_cannot_be_written_is_a_note_whatever_the_error(tmp_path, monkeypatch):
    """Not only OSError: Pillow's DecompressionBombError (an Exception) from the mask's write ended the worker, after
    the whole reconstruction, and the add-on said "worker stopped unexpectedly"."""
    from PIL import Image as PILImage

    from recon_core.io import image as image_module

    def refuse(*args, **kwargs):
        raise PILImage.DecompressionBombError("Image size (199756800 pixels) exceeds limit")

    monkeypatch.setattr(image_module, "save_mask", refuse)
    notes = []
    assert worker._write_mask(np.ones((4, 4), np.float32), "p.png", str(tmp_path / "m.png"), notes) is None
    assert notes == [f"the object mask could not be written to {tmp_path / 'm.png'} (Image size (199756800 pixels) "
                     "exceeds limit)"]


def test_the_picture_is_written_as_it_was_read_where_asked(client, files, tmp_path):
    """picture_path: the worker writes the picture as it read it, to be shown behind the mesh: a JPEG of the picture's
    decoded size, a cut-out's transparent pixels white, a photo stored turned (EXIF orientation 6) upright; without
    the field, no file and no field back; an unwritable path is a note, and the mesh comes."""
    picture = make_alpha_image(tmp_path / "cutout.png")
    path = tmp_path / "out" / "picture.jpg"
    path.parent.mkdir()
    result = client.submit(str(picture), detail="low", picture_path=str(path)).wait()
    assert result.picture_path == str(path) and result.report["ok"]
    rgba = np.asarray(Image.open(picture), dtype=np.float64)
    on_white = rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.size == (120, 90)
        assert np.abs(np.asarray(img.convert("RGB"), dtype=np.float64) - on_white).mean() < 3.0
    assert [p.name for p in path.parent.iterdir()] == ["picture.jpg"], "no temporary file is left"
    assert client.submit(str(picture), detail="low").wait().picture_path is None
    stored = Image.new("RGB", (60, 40), "white")  # stored 60 wide; orientation 6: shown turned, 40 wide
    ImageDraw.Draw(stored).rectangle((5, 5, 30, 30), fill=(200, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "turned.jpg", exif=exif)
    turned = client.submit(str(tmp_path / "turned.jpg"), detail="low", picture_path=str(path)).wait()
    with Image.open(path) as img:
        assert img.size == (40, 60), turned.notes
    blocked = tmp_path / "a file"
    blocked.write_text("")
    result = client.submit(str(picture), detail="low", picture_path=str(blocked / "picture.jpg")).wait()
    assert result.picture_path is None and result.report["ok"]
    assert any(f"could not be written to {blocked / 'picture.jpg'}" in note for note in result.notes)


def test_shown_picture_whitens_a_cut_out_and_shrinks_a_large_picture_in_its_proportions():
    from recon_core.io.image import shown_picture

    rgb = np.zeros((30, 50, 3), np.uint8)
    alpha = np.zeros((30, 50), np.uint8)
    alpha[10:20, 10:40] = 255
    alpha[0, 0] = 128
    shown = shown_picture(rgb, alpha)
    assert shown.shape == (30, 50, 3) and (shown[alpha == 0] == 255).all() and (shown[alpha == 255] == 0).all()
    assert (shown[0, 0] == 127).all() or (shown[0, 0] == 128).all()
    np.testing.assert_array_equal(shown_picture(rgb), rgb)
    big = np.full((3000, 5000, 3), 90, np.uint8)
    assert shown_picture(big).shape == (1229, 2048, 3) and shown_picture(big, side=None).shape == big.shape


def test_the_users_object_mask_is_used(client, files, tmp_path):
    """object_mask: the user's mask file is the object (the result's mask is it); a bad one is one sentence."""
    given = np.zeros((128, 128), np.uint8)
    given[10:60, 20:110] = 255  # not the ellipse the model finds
    Image.fromarray(given, "L").save(tmp_path / "given.png")
    used = tmp_path / "used.png"
    result = client.submit(str(files["image"]), detail="low", mask_path=str(used),
                           object_mask=str(tmp_path / "given.png")).wait()
    assert result.report["ok"] and np.array_equal(np.asarray(Image.open(used)), given)
    Image.fromarray(given[:, ::2], "L").save(tmp_path / "narrow.png")  # another shape
    with pytest.raises(WorkerError, match="must have the picture's size"):
        client.submit(str(files["image"]), detail="low", object_mask=str(tmp_path / "narrow.png")).wait()
    assert client.submit(str(files["image"]), detail="low").wait().report["ok"], "the worker goes on"


def test_one_request_at_a_time(client, files, monkeypatch):
    monkeypatch.setenv(worker.DELAY_ENV, "0.5")
    job = client.submit(str(files["image"]), detail="low")
    with pytest.raises(WorkerError, match="already running"):
        client.submit(str(files["image"]))
    job.wait()


def test_progress_is_reported_while_the_worker_is_busy(client, files, monkeypatch):
    """poll never blocks: through the worker's 1-second delay it returns again and again (a poll that waited for the
    result would return once), each time with the stage reached."""
    monkeypatch.setenv(worker.DELAY_ENV, "1.0")
    job = client.submit(str(files["image"]), detail="low")
    polls = 0
    stages = set()
    while not job.poll():
        polls += 1
        stages.add(job.stage)
        time.sleep(0.02)
    assert polls >= 20 and "waiting (test delay)" in stages


def test_the_reconstructions_stages_reach_the_client_in_order(client, files, monkeypatch):
    """The worker passes on each stage the reconstruction reports (Reconstructor.reconstruct_candidates' progress),
    so the add-on's bar moves through the work: it sat at 10 % from the request to the result."""
    Job = worker_client.Job
    seen = []
    real = Job._handle

    def recording(self, message):
        if message.get("type") == "progress":
            seen.append((message["stage"], message["fraction"]))
        real(self, message)

    monkeypatch.setattr(Job, "_handle", recording)
    client.submit(str(files["image"]), detail="low").wait()
    stages = [stage for stage, _ in seen]
    assert stages[-1] == "sending the mesh", stages
    # the worker's own stage, then the network's: each named once (the two were both "reading the picture", so the
    # stages went "reading the picture", "finding the object", "reading the picture")
    assert stages[0] == "opening the picture" and stages.count("reading the picture") == 1, stages
    assert len(set(stages)) == len(stages) - stages.count("making shape"), stages
    fractions = [fraction for _, fraction in seen]
    assert fractions == sorted(fractions), seen


def test_killed_worker_mid_run(files, monkeypatch):
    monkeypatch.setenv(worker.DELAY_ENV, "30")
    c = WorkerClient(PYTHON, str(files["model"]))
    job = c.submit(str(files["image"]), detail="low")
    deadline = time.perf_counter() + 60
    while job.stage != "waiting (test delay)" and time.perf_counter() < deadline:
        job.poll()
        time.sleep(0.05)
    os.kill(c.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"stopped unexpectedly \(killed by SIGKILL\).*\. Click Reconstruct again to "
                                          r"start a new one; if it stops again, the computer may be short of memory"):
        job.wait()
    assert not c.alive
    with pytest.raises(WorkerError, match="stopped"):
        c.submit(str(files["image"]))


def test_timeout_stops_the_worker(files, monkeypatch):
    monkeypatch.setenv(worker.DELAY_ENV, "30")
    c = WorkerClient(PYTHON, str(files["model"]))
    start = time.perf_counter()
    with pytest.raises(WorkerError, match=r"^The reconstruction took longer than 1.5 s \(after the model was loaded\) "
                                          r"and was stopped; raise the time-out"):
        c.submit(str(files["image"]), timeout_s=1.5).wait()
    assert time.perf_counter() - start < 10
    assert c.process.poll() is not None


def slow_starting_python(folder: Path, seconds: float) -> str:
    """An interpreter that takes ``seconds`` longer to start: a script that sleeps, then runs :data:`PYTHON`."""
    script = folder / "slow-python"
    script.write_text(f"#!/bin/sh\nsleep {seconds}\nexec {PYTHON} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def test_the_time_out_counts_from_the_model_loaded_and_a_slow_start_says_so(files, tmp_path, monkeypatch):
    """A cold worker that takes longer to start than the time-out still answers (the reconstruction is timed from its
    ``ready``); a start that passes its own limit names the stage that ran out of time."""
    slow = slow_starting_python(tmp_path, 3.0)
    c = WorkerClient(slow, str(files["model"]))
    try:
        job = c.submit(str(files["image"]), detail="low", timeout_s=2.5)
        assert job.wait().report["ok"] and job.elapsed > 3.0
    finally:
        c.close()
    monkeypatch.setattr(worker_client, "STARTUP_TIMEOUT_S", 1.0)
    c = WorkerClient(slow, str(files["model"]))
    with pytest.raises(WorkerError) as err:
        c.submit(str(files["image"]), detail="low", timeout_s=0.5).wait()
    assert str(err.value) == ("Starting the worker and loading the model took longer than 1 s and was stopped; check "
                              "the Python and Model settings in the add-on preferences, or raise the time-out there "
                              "if the computer is busy.")
    assert c.process.poll() is not None


def test_cancel_kills_the_worker_and_the_pool_starts_a_new_one(files, monkeypatch):
    monkeypatch.setenv(worker.DELAY_ENV, "30")
    c = worker_client.get_client(PYTHON, str(files["model"]))
    assert worker_client.get_client(PYTHON, str(files["model"])) is c
    job = c.submit(str(files["image"]), detail="low")
    job.cancel()
    with pytest.raises(WorkerError, match="cancelled"):
        job.poll()
    assert c.process.poll() is not None
    fresh = worker_client.get_client(PYTHON, str(files["model"]))
    assert fresh is not c and fresh.process is None
    worker_client.shutdown_all()


def test_missing_or_unset_interpreter():
    with pytest.raises(WorkerError, match="No Python interpreter is set"):
        WorkerClient("").submit("x.png")
    with pytest.raises(WorkerError, match=r"/nonexistent/python does not exist"):
        WorkerClient("/nonexistent/python").submit("x.png")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A fresh virtual environment without recon_core (nor anything else)."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return str(folder / "bin" / "python")


def test_recon_core_missing_in_interpreter(bare_python, files):
    c = WorkerClient(bare_python, repo="/src/seed-recon")
    with pytest.raises(WorkerError) as err:
        c.submit(str(files["image"])).wait()
    assert str(err.value) == (f"recon_core is not installed in {bare_python}; install it with "
                              f"{bare_python} -m pip install -e /src/seed-recon.")


def test_model_that_cannot_load_is_a_fatal_error(files):
    c = WorkerClient(PYTHON, str(files["model"].with_name("nowhere")))
    with pytest.raises(WorkerError, match="Model config not found"):
        c.submit(str(files["image"])).wait()
    c.process.wait(timeout=10)
    assert c.process.returncode is not None and not c.alive


def test_worker_exits_on_eof(client):  # last: closes the shared worker
    if client.process is None:
        client.start()
    client.close(timeout=60)
    assert client.process.returncode == 0


@pytest.mark.parametrize("fraction", [None, "half", float("nan"), float("inf"), [0.5]])
def test_a_progress_fraction_that_is_no_number_keeps_the_last(fraction):
    """A broken worker's progress fraction (null, text, NaN) is ignored: the last one stays (it raised inside the
    operator, and Reconstruct then thought a run was still going); a number is kept within 0 … 1."""
    job = worker_client.Job(WorkerClient(PYTHON), "r1", 0)
    job._handle({"type": "progress", "id": "r1", "stage": "fitting", "fraction": 0.4})
    job._handle({"type": "progress", "id": "r1", "stage": "meshing", "fraction": fraction})
    assert job.fraction == 0.4 and job.stage == "meshing" and job.error is None
    job._handle({"type": "progress", "id": "r1", "fraction": 7})
    assert job.fraction == 1.0


def test_a_message_the_client_cannot_read_ends_the_run_in_one_sentence(monkeypatch):
    """Whatever a message of the run breaks in the client, the run fails with one sentence, the worker is stopped and
    the client takes the next request (it raised out of the timer and left the client's run in place)."""
    import json

    client = WorkerClient(PYTHON)
    client.hello = {"type": "hello", "version": worker_client.PROTOCOL_VERSION}  # it greeted, as the worker does first
    job = worker_client.Job(client, "r1", 0)
    client.job = job

    def broken(message):
        raise TypeError("float() argument must be a string or a real number, not 'NoneType'")

    monkeypatch.setattr(job, "_handle", broken)
    killed = []
    monkeypatch.setattr(client, "kill", lambda: killed.append(True))
    client._messages.put(json.dumps({"version": worker_client.PROTOCOL_VERSION, "type": "progress", "id": "r1"}))
    client._pump()
    assert killed and client.job is None and job.done
    assert "could not be read (TypeError: float() argument" in str(job.error) and "\n" not in str(job.error)
    assert "this is a bug: please report it" in str(job.error)
    with pytest.raises(worker_client.WorkerError, match="could not be read"):
        job.poll()


def test_a_python_setting_that_is_a_folder_names_the_program_inside(tmp_path):
    """The Python setting set to a virtual environment's folder: it is a folder, and the program inside is named (it
    said the folder does not exist)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    with pytest.raises(worker_client.WorkerError, match=re.escape(f"{venv} is a folder; choose the Python program "
                                                                  f"inside it ({venv / 'bin' / 'python'})")):
        worker_client._check_python(str(venv))


def test_the_temporary_folder_sentence_names_the_folder_and_the_mend(monkeypatch):
    """The folder of the file that failed (else the temporary folder), and the mend its error asks for."""
    import errno

    sentence = worker_client.temp_folder_sentence(OSError(errno.ENOSPC, "No space left on device"))
    assert sentence.startswith(f"Cannot write a temporary file in {tempfile.gettempdir()} (No space left on device); "
                               "free some disk space there")
    assert "\n" not in sentence
    denied = worker_client.temp_folder_sentence(PermissionError(errno.EACCES, "Permission denied", "/locked/recon-x"))
    assert denied.startswith("Cannot write a temporary file in /locked (Permission denied); make it writable")

    def no_folder():
        raise FileNotFoundError(errno.ENOENT, "No usable temporary directory found")

    monkeypatch.setattr(worker_client.tempfile, "gettempdir", no_folder)
    gone = worker_client.temp_folder_sentence(OSError(errno.ENOENT, "No such file or directory"))
    assert gone.startswith("Cannot write a temporary file in the temporary folder (No such file or directory); check "
                           "that it exists and can be written")


def test_how_a_worker_ended_reads_as_each_system_says_it():
    """A worker that crashed on Windows ends with a status code (0xC0000005, an access violation): it was said as
    "exit code 3221225477", which no one can look up."""
    describe = worker_client._exit_description
    assert describe(-9) == "killed by SIGKILL" and describe(1) == "exit code 1" and describe(None) == "still running"
    assert describe(3221225477) == "exit code 0xC0000005, an access violation"
    assert describe(0xC0000017) == "exit code 0xC0000017, out of memory"
    assert describe(0xC0000142) == "exit code 0xC0000142"


def test_a_worker_ended_by_ctrl_c_on_windows_is_not_blamed_on_memory(files, monkeypatch):
    """0xC000013A is Windows' Ctrl+C or Ctrl+Break sent to a process, as SIGINT is elsewhere: the message said the
    computer may be short of memory."""
    c = WorkerClient(PYTHON, str(files["model"]))
    monkeypatch.setattr(c, "hello", {"pid": 1})  # it had greeted: the worker, not a wrong interpreter
    monkeypatch.setattr(c, "process", type("Ended", (), {"wait": lambda self, timeout=None: 0xC000013A})())
    c._on_exit()
    assert c.failure == ("The reconstruction worker was stopped by another program (exit code 0xC000013A, Ctrl+C). "
                         "Click Reconstruct again to start a new one.")


def test_a_killed_blenders_temporary_files_are_swept_after_a_day(tmp_path):
    """Entries of the add-on's prefix last written over a day ago go, a folder with what is in it and a link without
    its target; newer ones (a run in another Blender) and other programs' entries stay."""
    prefix, day = worker_client.TEMP_PREFIX, worker_client.STALE_TEMP_S
    now = time.time()
    old_run = tmp_path / f"{prefix}abc"
    old_run.mkdir()
    (old_run / "mask.png").write_bytes(b"mask")
    old_copy = tmp_path / f"{prefix}def.png"
    old_copy.write_bytes(b"picture")
    target = tmp_path / "kept-target"
    target.mkdir()
    (target / "file").write_bytes(b"x")
    old_link = tmp_path / f"{prefix}link"
    old_link.symlink_to(target)
    new_run = tmp_path / f"{prefix}new"
    new_run.mkdir()
    other = tmp_path / "recon-other-program"
    other.mkdir()
    for path in (old_run, old_copy, target, other):
        os.utime(path, (now - day - 60, now - day - 60))
    os.utime(old_link, (now - day - 60, now - day - 60), follow_symlinks=False)
    os.utime(new_run, (now - day + 60, now - day + 60))
    removed = worker_client.sweep_stale_temp(str(tmp_path), now=now)
    assert sorted(removed) == sorted([old_run.name, old_copy.name, old_link.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, new_run.name, other.name])
    assert (target / "file").read_bytes() == b"x"
    assert worker_client.sweep_stale_temp(str(tmp_path / "missing"), now=now) == []


def fake_python(folder: Path, body: str) -> str:
    """A program set as the interpreter that is not the worker: a shell script running ``body``."""
    script = folder / "not-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


NOT_THE_WORKER = "choose the Python interpreter that has recon_core installed in the add-on preferences"


@pytest.mark.parametrize("body, said", [
    ("exit 0", "The worker could not start with {program} (exit code 0); " + NOT_THE_WORKER + "."),
    ("echo 'cannot open recon_core.io.worker: No such file' >&2\nexit 2",
     "The worker could not start with {program} (exit code 2: cannot open recon_core.io.worker: No such file); "
     + NOT_THE_WORKER + "."),
])
def test_a_program_that_ends_before_greeting_says_which_interpreter_to_choose(tmp_path, body, said):
    """/bin/true, or a shell given ``-m recon_core.io.worker``, ends at once: the sentence says what to do, as for a
    program that answers otherwise (it said only the exit code, or the shell's complaint)."""
    program = fake_python(tmp_path, body)
    c = WorkerClient(program)
    with pytest.raises(WorkerError) as err:
        c.submit(str(tmp_path / "x.png")).wait()
    assert str(err.value) == said.format(program=program)


@pytest.mark.parametrize("body, said", [
    ("exec yes 'some other program'",  # lines of its own, going on
     "{program} does not answer as the reconstruction worker (it printed 'some other program' and more); "
     + NOT_THE_WORKER + "."),
    ("exec yes 42",  # JSON, but no greeting
     "{program} does not answer as the reconstruction worker (it printed '42' and more); " + NOT_THE_WORKER + "."),
    ("echo 'a banner'\nexec sleep 30",  # silent after a line: the greeting's time-out
     "{program} did not greet as the reconstruction worker within 1 s, printing 'a banner' and was stopped; "
     + NOT_THE_WORKER + ", or try again if the computer was busy."),
    ("echo 'starting slowly' >&2\nexec sleep 30",  # its stderr said
     "{program} did not greet as the reconstruction worker within 1 s and was stopped (its last output: starting "
     "slowly); " + NOT_THE_WORKER + ", or try again if the computer was busy."),
])
def test_a_program_that_is_not_the_worker_is_stopped_long_before_the_start_up_limit(tmp_path, monkeypatch, body, said):
    monkeypatch.setattr(worker_client, "STARTUP_TIMEOUT_S", 20.0)
    monkeypatch.setattr(worker_client, "HELLO_TIMEOUT_S", 1.0)
    program = fake_python(tmp_path, body)
    c = WorkerClient(program)
    start = time.perf_counter()
    with pytest.raises(WorkerError) as err:
        c.submit(str(tmp_path / "x.png")).wait()
    assert time.perf_counter() - start < 10
    assert str(err.value) == said.format(program=program)
    assert c.process.poll() is not None and not c.alive


@pytest.mark.parametrize("body, said", [
    ("yes 42 | head -n 5000\nexec sleep 30", "it printed '42' and more"),  # text: named by what it printed
    ("yes '' | head -n 5000\nexec sleep 30", "it floods its output: 4,000 lines waiting"),  # blank: a batch read, then the flood
])
def test_a_program_that_floods_before_greeting_is_named_by_what_it_printed(tmp_path, monkeypatch, body, said):
    """Lines before the greeting are read before the flood is weighed: a program that printed text faster than the
    polls (a busy machine) was said to flood, not named by its output, and a test of it failed at random."""
    monkeypatch.setattr(worker_client, "_FLOOD_LIMIT", 3000)
    c = WorkerClient(fake_python(tmp_path, body))
    c.start()
    deadline = time.perf_counter() + 30
    while c._messages.qsize() < 5000 and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert c._messages.qsize() == 5000
    c._pump()
    assert c.failure == f"{c.python} does not answer as the reconstruction worker ({said}); {NOT_THE_WORKER}."
    assert c.process.poll() is not None or not c.alive


def flooding_worker(tmp_path: Path, lines: int) -> WorkerClient:
    """A started client whose fake worker greets, sends ``lines`` progress messages for request r1 at once, then
    waits; returned once they have all arrived."""
    progress = json.dumps({"type": "progress", "version": worker_client.PROTOCOL_VERSION, "id": "r1", "stage": "x",
                           "fraction": 0.5})
    hello = json.dumps({"type": "hello", "version": worker_client.PROTOCOL_VERSION})
    c = WorkerClient(fake_python(tmp_path, f"echo '{hello}'\nyes '{progress}' | head -n {lines}\nexec sleep 30"))
    c.submit(str(tmp_path / "x.png"))
    deadline = time.perf_counter() + 30
    while c._messages.qsize() < lines + 1 and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert c._messages.qsize() == lines + 1
    return c


def test_a_poll_handles_at_most_a_batch_of_messages(tmp_path):
    """A poll (Blender's timer) returns after :data:`worker_client._PUMP_BATCH` messages, the rest left for the next,
    so a worker that sends messages without end cannot hold it."""
    c = flooding_worker(tmp_path, 5000)
    try:
        c.job.poll()
        assert c._messages.qsize() == 5001 - worker_client._PUMP_BATCH
        assert c.job.stage == "x" and c.job.fraction == 0.5 and not c.job.done
    finally:
        c.kill()


def test_a_worker_that_floods_its_output_is_stopped_in_one_sentence(tmp_path, monkeypatch):
    """Its lines would fill the memory faster than the polls take them (100-170 MB/s): past a limit it is stopped."""
    c = flooding_worker(tmp_path, 5000)
    job = c.job
    job.poll()  # the greeting and the first batch
    monkeypatch.setattr(worker_client, "_FLOOD_LIMIT", 3000)
    with pytest.raises(WorkerError) as err:
        job.poll()
    assert str(err.value) == ("The reconstruction worker flooded its output (4,001 lines waiting) and was stopped; "
                              "this is a bug: please report it with this sentence. Click Reconstruct again to retry.")
    assert c.process.poll() is not None and not c.alive


@pytest.mark.parametrize("program, printed", [("/bin/true", "it printed nothing"), ("/bin/echo", "it printed: -m"),
                                              ("/bin/cat", "exit code 1")])
def test_the_print_file_writer_names_the_interpreter_when_a_program_that_is_not_python_writes_nothing(
        tmp_path, program, printed):
    """The exports' writer run by a program that is not a Python with recon_core: /bin/true and /bin/echo exit 0
    having written nothing (the export said "Wrote …" of a file that was not there), /bin/cat fails with its own
    usage line. Each is one sentence naming the interpreter and the preference, and no file."""
    if not os.path.isfile(program):
        pytest.skip(f"{program} is not on this system")
    target = tmp_path / "part.stl"
    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    with pytest.raises(WorkerError) as err:
        worker_client.write_print_file(program, [("part", verts, faces)], str(target))
    message = str(err.value)
    assert message.startswith(f"{program} did not write {target}") and printed in message, message
    assert message.endswith(f"{worker_client._CHOOSE_PYTHON}.") and "\n" not in message
    assert not target.exists()


def test_the_print_file_writer_writes_and_says_so_with_the_real_interpreter(tmp_path):
    """The same call with the worker's Python writes the file and returns the writer's summary."""
    target = tmp_path / "part.stl"
    verts = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    written = worker_client.write_print_file(PYTHON, [("part", verts, faces)], str(target))
    assert written.startswith(f"wrote {target}") and target.stat().st_size == 84 + 50 * 4


def test_a_model_whose_files_change_is_loaded_again_before_the_next_request(tmp_path):
    """A warm worker kept answering with the model it loaded first after its files were replaced (a new
    models/default, a model retrained over the old one), until Blender restarted: it now loads them again, says so,
    and a half-copied model is an error for that request alone."""
    model = write_tiny_model(tmp_path)
    config = model.with_suffix(".json")
    other = 642 if ModelConfig(**TINY).vertices != 642 else 2562

    def request(rid: str) -> str:
        return json.dumps({"type": "reconstruct", "version": 1, "id": rid, "image": str(make_shape_image(
            tmp_path / "shape.png"))})

    def lines():
        yield request("first")
        yield request("same")
        config.write_text(json.dumps({"model": ModelConfig(**{**TINY, "vertices": other}).to_dict(), "trained": False}))
        yield request("changed")
        saved = config.read_text()
        config.write_text(saved[: len(saved) // 2])  # half copied
        yield request("half")
        config.write_text(saved)
        yield request("whole")

    out = io.StringIO()
    assert worker.serve(worker._Channel(out), lines(), str(model)) == 0
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    answers = {m["id"]: m for m in messages if m["type"] in ("result", "error")}
    faces = {rid: worker.decode_array(m["faces"]).shape[0] for rid, m in answers.items() if m["type"] == "result"}
    first = 2 * ModelConfig(**TINY).vertices - 4
    assert faces == {"first": first, "same": first, "changed": 2 * other - 4, "whole": 2 * other - 4}, faces
    reloads = [m["id"] for m in messages
               if m["type"] == "progress" and m["stage"].startswith("loading the model again")]
    assert reloads == ["changed", "half", "whole"]  # not before an unchanged model's request
    assert answers["half"]["kind"] == "WeightsError" and not answers["half"]["fatal"]
    assert answers["half"]["message"].startswith("The model's files changed since the worker loaded them, and loading "
                                                 "them again failed: "), answers["half"]


@pytest.fixture
def sigint_not_ignored():
    """This process's SIGINT not ignored while the test runs: a child inherits an ignored SIGINT (Python's own handler,
    and any other, is reset to the default at its start). Read from the kernel where it says (C code, Blender's, may
    set it without Python knowing)."""
    status = Path("/proc/self/status")
    if status.is_file():
        ignored = bool(int(status.read_text().split("SigIgn:")[1].split()[0], 16) & (1 << (signal.SIGINT - 1)))
    else:
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_a_ctrl_c_in_blenders_terminal_does_not_reach_the_worker_and_a_stop_is_not_blamed_on_memory(
        files, monkeypatch, sigint_not_ignored):
    """The worker shared Blender's process group: a Ctrl-C in the terminal of background Blender (which takes the first
    as a break and goes on) killed it mid-run, and the failure blamed memory, with a traceback's lines. It now has a
    group of its own; stopped by a signal another program sends, it says so, without the memory advice.

    A worker inherits an ignored SIGINT (as from a Blender started with ``&`` by a script): it then lives through the
    signal, as it should, so the test makes sure that this process does not ignore it (once in a full run it did)."""
    monkeypatch.setenv(worker.DELAY_ENV, "30")
    c = WorkerClient(PYTHON, str(files["model"]))
    job = c.submit(str(files["image"]), detail="low")
    try:
        assert os.getpgid(c.process.pid) != os.getpgid(0)  # a terminal's Ctrl-C goes to Blender's group alone
        deadline = time.perf_counter() + 60
        while job.stage != "waiting (test delay)" and time.perf_counter() < deadline:
            job.poll()
            time.sleep(0.05)
        assert job.stage == "waiting (test delay)", job.stage  # the worker is in the request, not still starting
        os.kill(c.process.pid, signal.SIGINT)  # what a kill -INT of the worker itself does
        with pytest.raises(WorkerError) as raised:
            job.wait()
    finally:
        c.close()
    assert str(raised.value) == ("The reconstruction worker was stopped by another program (killed by SIGINT). Click "
                                 "Reconstruct again to start a new one."), raised.value
