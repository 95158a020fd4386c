"""Every benchmark in its --tiny configuration: it runs and prints one JSON object with sane values.

No speed is asserted; this keeps a broken benchmark from going unnoticed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import pytest
import torch

from bench import all as bench_all
from bench import cold_start, fit, inference, render_throughput, retrieval, train_throughput
from tests.test_dataset import fake  # noqa: F401  (a fixture: the tiny data set of renders)


def _run(module, capsys, *argv) -> dict:
    returned = module.main(["--tiny", *argv])
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed == json.loads(json.dumps(returned))
    return printed


def _positive(*values) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and v > 0, values


def _check_targets(result: dict, names: set[str]) -> None:
    assert set(result["targets"]) == names
    for t in result["targets"].values():
        assert set(t) == {"value", "limit", "unit", "pass"} and isinstance(t["pass"], bool)
        _positive(t["value"], t["limit"])


def test_inference(capsys, monkeypatch):
    finder = Path(__file__).resolve().parents[1] / "models" / "finder"
    if finder.with_suffix(".safetensors").is_file():
        monkeypatch.setenv("RECON_FINDER", str(finder))  # the photo-without-alpha run finds the object with it
    res = _run(inference, capsys, "--runs", "2", "--profile")
    assert res["machine"]["torch_threads"] == 2 and res["model"]["trained"] is False
    run = res["by_vertices"]["2562"]
    assert run["output_vertices"] == 2562 and run["printable"]
    _positive(run["end_to_end_ms"]["p50"], run["end_to_end_ms"]["p95"])
    assert set(run["stages_p50_ms"]) == set(inference.STAGES)
    for stage in ("encoder", "refiner_0", "refiner_1", "refiner_2", "repair", "check", "export_stl"):
        _positive(run["stages_p50_ms"][stage])
    _positive(run["cpu_ms"]["p50"], run["cores_busy_p50"])
    assert run["cores_busy_p50"] <= _cores() + 0.5
    floor = res["floor"]
    _positive(floor["matmul_gflops"], floor["encoder_gflop"], floor["encoder_floor_ms"], floor["p50_over_floor"])
    assert floor["cpu_p50_ms"] == run["cpu_ms"]["p50"]
    threads = res["machine"]["torch_threads"]
    assert floor["cpu_p50_over_threads_ms"] == pytest.approx(run["cpu_ms"]["p50"] / threads, abs=1e-3)
    assert floor["network_gflop"] >= floor["encoder_gflop"]
    _check_targets(res, {"p50_ms_2562", "p50_over_floor_2562"})
    assert len(res["top_ops_2562"]) == 10 and all(op["self_ms"] >= 0 for op in res["top_ops_2562"])
    photo = res["no_alpha_2562"]
    assert photo["printable"] and set(photo["stages_p50_ms"]) == set(inference.STAGES)
    if finder.with_suffix(".safetensors").is_file():
        assert photo["finder"] == "models/finder"
        _positive(photo["stages_p50_ms"]["finder"])
    assert run["stages_p50_ms"]["finder"] == 0.0  # the example has alpha: no finder


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def test_run_once_counts_every_threads_cpu_time_not_waiting():
    """The CPU time of a run is the whole process's work, not its wall time: a run that sleeps costs no CPU; one
    whose work runs on another thread (as the mesh work does, on the thread pool) costs that thread's CPU."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])

    class Fake:
        def __init__(self, work):
            self.work = work

        def reconstruct(self, rgb, alpha, vertices=None, height_mm=None, upright=False):
            self.work()
            return SimpleNamespace(verts=verts, faces=faces, timings={}, report=None)

    def spin():  # 0.1 s of this thread's own CPU, however loaded the machine is
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass

    def on_another_thread():
        worker = threading.Thread(target=spin)
        worker.start()
        worker.join()

    timer = SimpleNamespace(take=lambda: {})
    inference.run_once(Fake(lambda: None), None, None, 2562, timer)  # the STL encoder's first import, out of the way
    time.sleep(0.3)  # threads a test before left waiting busily (an OpenMP pool) have gone to sleep by then
    wall, _, _, cpu = inference.run_once(Fake(lambda: time.sleep(0.15)), None, None, 2562, timer)
    assert wall >= 0.15 and cpu < 0.05
    wall, _, _, cpu = inference.run_once(Fake(on_another_thread), None, None, 2562, timer)
    assert 0.1 <= cpu <= wall * _cores() + 0.05


def test_stage_timer_accounts_for_the_network(tiny_model_path):
    import torch

    from recon_core.io.inference import Reconstructor

    rec = Reconstructor.from_file(tiny_model_path)
    timer = inference.StageTimer(rec.model)
    with torch.inference_mode():
        rec.model(torch.rand(1, 3, 64, 64), vertices=642)
    times = timer.take()
    timer.remove()
    assert {"encoder", "coarse_head", "refiner_0", "refiner_1", "refiner_2", "network"} <= set(times)
    assert sum(v for k, v in times.items() if k != "network") == pytest.approx(times["network"], rel=1e-6)
    assert not rec.model._forward_hooks and not rec.model.encoder._forward_pre_hooks


def test_cold_start(capsys):
    res = _run(cold_start, capsys)
    assert res["exit_codes"] == [0]
    _positive(res["wall_s"]["median"], res["peak_rss_mb"]["max"], res["import_s"])
    assert res["slowest_imports"] and all(i["seconds"] >= 0 for i in res["slowest_imports"])
    _check_targets(res, {"wall_s", "peak_rss_mb"})


def test_train_throughput(capsys):
    res = _run(train_throughput, capsys, "--cpu-only")
    cpu = res["results"]["cpu"]
    assert cpu["batch_size"] == 2 and cpu["steps"] == 1
    _positive(cpu["step_s"]["median"], cpu["images_per_s"])


def test_train_throughput_takes_config_overrides(capsys):
    """The step with the torch rasteriser's silhouette on, set on the command line as train.py takes it."""
    res = _run(train_throughput, capsys, "--cpu-only", "loss.silhouette=0.3", "loss.rasteriser=torch", "loss.depth=0")
    assert res["loss"]["silhouette"] == 0.3 and res["loss"]["depth"] == 0.0
    assert res["overrides"] == ["loss.silhouette=0.3", "loss.rasteriser=torch", "loss.depth=0"]
    _positive(res["results"]["cpu"]["images_per_s"])


def test_train_throughput_of_the_occupancy_network(capsys):
    """The occupancy config's step (synthetic ellipsoids with their frustum occupancy), its frozen stages too."""
    res = _run(train_throughput, capsys, "--cpu-only", "--config", "training/configs/occupancy_share.yaml")
    assert res["model"]["coarse"] == "occupancy"
    _positive(res["results"]["cpu"]["images_per_s"])


def test_retrieval(capsys):
    res = _run(retrieval, capsys)
    assert res["index_views"] == 500 and res["embedding_dim"] == 2048
    _positive(res["embed_ms"]["p50"], res["query_ms"]["p50"], res["total_ms"]["p50"])


def test_retrieval_refuses_a_file_that_is_not_an_index_in_one_sentence(tmp_path, capsys):
    """--index naming a file that is not a baseline index (it ended in a ValueError traceback, exit 1)."""
    import numpy as np

    whole = tmp_path / "whole.npz"
    np.savez(whole, features=np.zeros((50, 8), np.float32), model_ids=np.array(["m"] * 50))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a zip cut short: BadZipFile
    bad = tmp_path / "not_an_index.npz"
    bad.write_bytes(b"not a numpy archive")
    for path in (bad, cut, whole):  # whole: a numpy archive, but not an index (no rotations, ...)
        with pytest.raises(SystemExit) as exited:
            retrieval.main(["--tiny", "--index", str(path)])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and "is not a baseline index that can be read" in err, (path, err)


def test_fit(capsys):
    res = _run(fit, capsys)
    assert res["solids"] == 4 and res["runs"] == 2 and res["model"] == "tiny blobs"
    _positive(res["per_fit_ms"], res["per_fit_threaded_ms"])


@pytest.mark.blender
def test_render_throughput(capsys):
    pytest.importorskip("bpy")
    res = _run(render_throughput, capsys)
    assert res["views_rendered"] == res["views_written"] == 2
    _positive(res["views_per_s"], res["views_per_s_with_startup"])


def test_all_collects_results_and_errors(monkeypatch, capsys):
    fake = {"inference": {"by_vertices": {"2562": {"end_to_end_ms": {"p50": 100.0}}},
                          "targets": {"p50_ms_2562": {"value": 100.0, "limit": 150.0, "unit": "ms", "pass": True}}},
            "retrieval": {"total_ms": {"p50": 5.0}},
            "cold_start": {"error": "exit code 1"}}
    calls = []

    def run_benchmark(name, extra):
        calls.append((name, extra))
        return fake[name]

    monkeypatch.setattr(bench_all, "run_benchmark", run_benchmark)
    code = bench_all.main(["--tiny", "--only", "inference", "retrieval", "cold_start"])
    res = json.loads(capsys.readouterr().out)
    assert code == 1 and calls[0] == ("inference", ["--tiny", "--threads", "2"])
    assert res["summary"]["p50_ms"] == {"ours_2562": 100.0, "retrieval_baseline": 5.0}
    assert set(res["results"]) == {"inference", "retrieval", "cold_start"}
    assert res["summary"]["all_pass"] is None and "tiny" in res["summary"]["note"], "a tiny model judges no target"
    assert bench_all.main(["--only", "inference", "retrieval"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["all_pass"] is True and "note" not in res["summary"]


def test_all_runs_a_benchmark_in_a_fresh_process():
    res = bench_all.run_benchmark("retrieval", ["--tiny"])
    assert res["benchmark"] == "retrieval" and res["total_ms"]["runs"] == 3


@pytest.mark.parametrize("argv", [["--loader", "0"], ["--loader", "3", "--cuda-only"], ["--batch-size", "0"]])
def test_train_throughput_refuses_conflicting_options(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train_throughput.main(argv)
    assert exc.value.code == 2 and "--" in capsys.readouterr().err


@pytest.mark.parametrize("override,why", [("loss.nothing=1", "Unknown LossConfig field"),
                                          ("loss.rasteriser=opengl", "loss.rasteriser must be")])
def test_train_throughput_names_a_bad_override(override, why, capsys):
    with pytest.raises(SystemExit) as exc:
        train_throughput.main(["--tiny", override])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"the config with {override}" in err and why in err


@pytest.fixture(scope="module")
def fake_views(fake):
    """The root of test_dataset's tiny data set (renders of a box, 5 training views)."""
    return fake[0]


def test_train_throughput_on_training_views_from_a_saved_model(fake_views, tiny_model_path, capsys):
    """--views: the step on the config's training views (a tiny data set's renders), --init: from saved weights."""
    root = fake_views
    res = _run(train_throughput, capsys, "--cpu-only", "--views", "--init", str(tiny_model_path),
               f"data.shapenet={root / 'shapenet'}", f"data.renders={root / 'renders'}", "data.augment=false",
               "loss.silhouette=0.2", "loss.rasteriser=torch")
    assert res["data"] == "the config's training views (batches made before timing)"
    assert res["init"] == str(tiny_model_path)
    _positive(res["results"]["cpu"]["images_per_s"])


def test_train_throughput_names_missing_training_views(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        train_throughput.main(["--tiny", "--cpu-only", "--views", f"data.shapenet={tmp_path}",
                               f"data.renders={tmp_path}"])
    message = capsys.readouterr().err
    assert err.value.code == 2 and message.startswith("error: ") and "manifest" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_train_throughput_cuda_only_without_cuda_is_exit_2(capsys):
    with pytest.raises(SystemExit) as err:
        train_throughput.main(["--tiny", "--cuda-only"])
    message = capsys.readouterr().err
    assert err.value.code == 2 and message.startswith("error: --cuda-only: no CUDA device here") and message.count("\n") == 1


@pytest.mark.parametrize("module,argv,named", [
    (inference, ["--model", "MISSING"], "--model"), (inference, ["--tiny", "--runs", "0"], "--runs"),
    (inference, ["--threads", "0"], "--threads"), (inference, ["--height-mm", "-5"], "--height-mm"),
    (cold_start, ["--tiny", "--repeats", "0"], "--repeats"), (cold_start, ["--model", "MISSING"], "--model"),
    (fit, ["--solids", "0"], "--solids"), (fit, ["--solids", "1", "--runs", "0"], "--runs"),
    (fit, ["--model", "MISSING"], "--model"),
    (retrieval, ["--index", "MISSING.npz"], "--index"), (retrieval, ["--tiny", "--runs", "0"], "--runs"),
    (retrieval, ["--tiny", "--size", "0"], "--size"),
    (train_throughput, ["--config", "MISSING.yaml"], "--config"),
    (train_throughput, ["--tiny", "--steps", "0"], "--steps"),
    (train_throughput, ["--init", "MISSING"], "--init"),
    (render_throughput, ["--shapenet", "MISSING", "--limit", "0"], "--limit"),
    (render_throughput, ["--shapenet", "MISSING"], "--shapenet"),
])
def test_bad_arguments_exit_2_naming_the_option(module, argv, named, tmp_path, capsys):
    """Counts below 1 and files that are not there: exit 2 with the option named, before any work."""
    argv = [str(tmp_path / a) if a.startswith("MISSING") else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    captured = capsys.readouterr()
    assert exc.value.code == 2 and named in captured.err.splitlines()[-1] and captured.out == ""


def test_the_fit_benchmark_refuses_a_model_without_a_shape_bank(tmp_path, capsys):
    """A model without a shape bank has nothing to fit: one sentence and exit code 2 (it was 1)."""
    from bench import fit
    from bench._common import tiny_model_stem

    stem = tiny_model_stem(tmp_path)
    with pytest.raises(SystemExit) as exc:
        fit.main(["--model", str(stem), "--solids", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and "has no shape bank: nothing to fit" in err


def test_the_tiny_model_of_a_bench_run_leaves_no_folder_behind(tmp_path):
    """Each ``bench.* --tiny`` run left a /tmp/bench_model_* folder behind (106 of them here): it goes at exit."""
    import subprocess

    code = ("from bench._common import tiny_model_stem\nstem = tiny_model_stem()\n"
            "assert stem.with_suffix('.json').is_file()\nprint(stem.parent)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder.parent == tmp_path and not folder.exists()


def test_what_the_numbers_were_measured_on_is_said_without_a_load_average(monkeypatch):
    """Windows has no os.getloadavg: every benchmark failed with an AttributeError before measuring."""
    from bench._common import machine

    assert "load_average_1min" in machine(threads=1)
    monkeypatch.delattr("os.getloadavg")
    info = machine(threads=1)
    assert "load_average_1min" not in info and info["cpu_cores"] == os.cpu_count()
