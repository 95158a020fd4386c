"""Training loop: AMP on CPU, resume after SIGKILL, and 2-process DDP against 1 process."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recon_core.io.weights import load_model

REPO = Path(__file__).resolve().parent.parent

TINY_ARGS = [
    "model.backbone=resnet18", "model.backbone_norm=group", "model.image_size=64", "model.fpn_channels=16",
    "model.coarse_hidden=32", "model.hidden_dim=16", "model.attention_heads=2", "model.gconv_layers=1",
    "model.vertices=642", "data.synthetic=16", "data.workers=0", "data.num_points=256", "loss.num_samples=256",
    "loss.silhouette=0.0", "loss.depth=0.0", "optim.warmup=1", "run.log_every=1", "run.threads=1",
]


def _run(out: Path, extra: list[str], torchrun: bool = False, resume: bool = False) -> subprocess.Popen:
    args = [*TINY_ARGS, f"run.out={out}", *extra]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(29500 + os.getpid() % 1000), str(REPO / "training" / "train.py"), *args]
    else:
        cmd = [sys.executable, str(REPO / "training" / "train.py"), *(["--resume"] if resume else []), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _losses(out: Path) -> dict[int, float]:
    with open(out / "log.csv") as f:
        return {int(r["step"]): float(r["total"]) for r in csv.DictReader(f)}


def _params(stem: Path) -> torch.Tensor:
    model, _ = load_model(stem)
    return torch.cat([p.detach().flatten().float() for p in model.parameters()])


def test_init_from_counts_the_steps_already_in_the_weights(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _finish(_run(first, ["optim.batch_size=2", "optim.steps=2", "run.checkpoint_every=2", "run.amp=false"]))
    start = first / "snapshots" / "step_000002"
    args = [*TINY_ARGS, f"run.out={second}", "optim.batch_size=2", "optim.steps=3", "run.checkpoint_every=3",
            "run.amp=false"]
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train.py"), "--init-from", str(start), *args],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, meta = load_model(second / "snapshots" / "step_000003")
    assert (meta["steps"], meta["run_step"], meta["init_steps"]) == (5, 3, 2)
    assert torch.load(second / "checkpoint.pt", weights_only=True)["init_steps"] == 2  # survives --resume


def test_a_time_budget_ends_the_run_decayed_with_a_snapshot(tmp_path):
    """``optim.minutes``: the run stops once its minutes are spent, with a snapshot of that step, and the
    learning rate follows the clock's share when it is further along than the steps'."""
    from training.config import load_train_config
    from training.train import _lr_at

    cfg = load_train_config(None, ["optim.lr=0.001", "optim.warmup=10", "optim.steps=1000", "optim.minutes=5"])
    assert _lr_at(5, cfg, clock=0.9) == pytest.approx(0.001 * 6 / 10)  # warm-up by steps alone
    assert _lr_at(110, cfg, clock=0.0) == pytest.approx(_lr_at(110, cfg))
    assert _lr_at(110, cfg, clock=0.5) == pytest.approx(0.001 * (0.05 + 0.95 * 0.5))  # half-way by the clock
    assert _lr_at(110, cfg, clock=1.0) == pytest.approx(0.001 * 0.05)
    out = tmp_path / "timed"
    log = _finish(_run(out, ["optim.batch_size=2", "optim.steps=50", "optim.minutes=0.0001", "run.checkpoint_every=40",
                             "run.amp=false"]))
    stopped = re.search(r"optim.minutes=0.0001 spent at step (\d+) of 50", log)
    assert stopped and int(stopped.group(1)) <= 2, log[-2000:]  # the first batch may come within 6 ms
    step = int(stopped.group(1))
    assert [p.name for p in (out / "snapshots").glob("*.safetensors")] == [f"step_{step:06d}.safetensors"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step


def test_amp_step_runs_on_cpu(tmp_path):
    out = tmp_path / "amp"
    log = _finish(_run(out, ["optim.batch_size=4", "optim.steps=2", "run.checkpoint_every=2", "run.amp=true"]))
    # the last line says where the run's files are (it said nothing at the end)
    assert f"done at step 2: the snapshot {out / 'snapshots' / 'step_000002'}, the checkpoint {out / 'checkpoint.pt'}" \
        in log, log[-2000:]
    losses = _losses(out)
    assert set(losses) == {1, 2} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (out / "checkpoint.pt").is_file() and (out / "snapshots" / "step_000002.safetensors").is_file()


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_sigkill_continues_the_loss_curve(tmp_path, ema):
    """Killed after step 4's checkpoint and resumed: the same losses and final snapshot (with optim.ema, the weight
    average, which the checkpoint carries) as the run that was never stopped."""
    common = ["optim.batch_size=4", "optim.steps=6", "run.checkpoint_every=2", "run.amp=false", f"optim.ema={ema}"]
    reference = tmp_path / "ref"
    _finish(_run(reference, common))

    killed = tmp_path / "killed"
    proc = _run(killed, common)
    deadline = time.time() + 600
    while not (killed / "snapshots" / "step_000004.json").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it was killed: the resume would test nothing"
    assert not (killed / "snapshots" / "step_000006.json").exists()
    _finish(_run(killed, common, resume=True))

    ref, res = _losses(reference), _losses(killed)
    assert set(res) >= {5, 6}
    for step in (5, 6):
        assert res[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-6), (step, res, ref)
    assert torch.allclose(_params(reference / "snapshots" / "step_000006"), _params(killed / "snapshots" / "step_000006"),
                          atol=1e-5)


def test_two_process_ddp_matches_one_process(tmp_path):
    common = ["optim.batch_size=4", "optim.steps=2", "run.checkpoint_every=2", "run.amp=false",
              "optim.lr=0.001", "loss.num_samples=2048", "data.num_points=1024"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _finish(_run(single, common))
    _finish(_run(ddp, common, torchrun=True))
    torch.manual_seed(0)
    from recon_core.network.model import build_model

    cfg = load_model(single / "snapshots" / "step_000002")[0].config
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for p in build_model(cfg).parameters()])
    a = _params(single / "snapshots" / "step_000002")
    b = _params(ddp / "snapshots" / "step_000002")
    moved = (a - init).norm()
    assert moved > 0
    # same global batches, gradients averaged over processes: the same update up to point-sampling noise
    assert (a - b).norm() < 0.1 * moved, ((a - b).norm(), moved)


def test_config_yaml_written_before_the_prior_was_removed_loads(tmp_path):
    """A run's config.yaml from before the retrieval prior's removal holds its fields at their defaults."""
    import yaml

    from training.config import load_train_config

    old = {"model": {"prior_templates": 0, "prior_views": 0, "prior_dim": 128, "prior_level": 4},
           "data": {"prior": "data/prior/bank", "prior_topk": 3}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_train_config(tmp_path / "config.yaml") == load_train_config(None)
    with pytest.raises(ValueError, match="prior_topk=5"):
        load_train_config(tmp_path / "config.yaml", ["data.prior_topk=5"])


def test_a_resumed_run_with_new_loss_parts_keeps_every_value_under_its_own_column(tmp_path):
    """The log's header grows to the union when a resumed run logs new parts; old rows keep their values."""
    from training.train import _log_fields

    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "chamfer", "total"])
        w.writeheader()
        w.writerow({"step": 1, "chamfer": 0.5, "total": 1.0})
    assert _log_fields(path, ["step", "total"]) == ["step", "chamfer", "total"]  # a subset: the file's header
    fields = _log_fields(path, ["step", "silhouette", "chamfer", "total"])
    assert fields == ["step", "chamfer", "total", "silhouette"]
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields, restval="").writerow({"step": 2, "silhouette": 0.7, "chamfer": 0.4,
                                                                  "total": 0.9})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {"step": "1", "chamfer": "0.5", "total": "1.0", "silhouette": ""}
    assert rows[1] == {"step": "2", "chamfer": "0.4", "total": "0.9", "silhouette": "0.7"}


@pytest.fixture
def fresh_bf16_probe():
    """The CPU is asked once a process (cached); these tests change its answer, so they clear it before and after."""
    from training.train import cpu_has_native_bf16

    cpu_has_native_bf16.cache_clear()
    yield
    cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_cpu_mixed_precision_only_where_the_cpu_has_native_bf16(monkeypatch, fresh_bf16_probe, avx512_bf16, amx,
                                                                   expected):
    from training.config import load_train_config
    from training.train import _autocast, amp_enabled

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    on, off = load_train_config(None, ["run.amp=true"]), load_train_config(None, ["run.amp=false"])
    assert amp_enabled(on, cpu) is expected
    assert amp_enabled(off, cpu) is False
    assert amp_enabled(on, torch.device("cuda")) is True  # fp16 autocast on CUDA whatever the CPU
    layer = torch.nn.Linear(4, 4)
    with _autocast(cpu, amp_enabled(on, cpu)):
        y = layer(torch.randn(2, 4))
    assert y.dtype == (torch.bfloat16 if expected else torch.float32)


def test_frozen_stages_keep_their_weights_and_statistics(tmp_path):
    """optim.freeze_stages=2: the stem and the first stage (weights and BatchNorm statistics) stay as they
    were; the second stage trains."""
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["optim.batch_size=2", "run.amp=false", "model.backbone_norm=batch"]
    _finish(_run(first, [*common, "optim.steps=1", "run.checkpoint_every=1"]))
    start = first / "snapshots" / "step_000001"
    args = [*TINY_ARGS, *common, f"run.out={second}", "optim.steps=2", "run.checkpoint_every=2",
            "optim.freeze_stages=2"]
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train.py"), "--init-from", str(start), *args],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, _ = load_model(start)
    after, _ = load_model(second / "snapshots" / "step_000002")
    b, a = before.encoder.state_dict(), after.encoder.state_dict()
    frozen = [k for k in b if k.startswith(("stem.", "stages.0."))]
    trained = [k for k in b if k.startswith("stages.1.") and k.endswith("weight")]
    assert frozen and trained
    assert any("running_mean" in k for k in frozen)
    for k in frozen:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], b[k]) for k in trained)


@pytest.mark.parametrize("setting", ["optim.freeze_stages=6", "optim.ema=1.0"])
def test_an_optimiser_setting_out_of_range_is_a_clear_error(tmp_path, setting):
    proc = subprocess.run([sys.executable, str(REPO / "training" / "train.py"), *TINY_ARGS,
                           f"run.out={tmp_path / 'x'}", "optim.steps=1", setting],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode != 0
    assert setting in proc.stderr and "Traceback" not in proc.stderr


def test_channels_last_trains_the_same_network(tmp_path):
    """run.channels_last: the same losses (up to float rounding) and snapshots that load like any other."""
    common = ["optim.batch_size=2", "optim.steps=2", "run.checkpoint_every=2", "run.amp=false",
              "model.backbone_norm=batch"]
    plain, last = tmp_path / "plain", tmp_path / "last"
    _finish(_run(plain, common))
    _finish(_run(last, [*common, "run.channels_last=true"]))
    a, b = _losses(plain), _losses(last)
    assert a.keys() == b.keys() == {1, 2}
    assert b[1] == pytest.approx(a[1], rel=1e-5)  # the same network, the same first batch
    # Adam normalises each gradient, so rounding-level differences of near-zero gradients become steps of ~lr
    assert b[2] == pytest.approx(a[2], rel=5e-3)
    torch.testing.assert_close(_params(last / "snapshots" / "step_000002"), _params(plain / "snapshots" / "step_000002"),
                               rtol=0, atol=3e-3)


def test_weight_average_is_the_exponential_average_of_the_weights_and_buffers():
    """optim.ema=d (training.train._weight_average): the first update copies, each later one gives
    d * average + (1 - d) * weights, BatchNorm statistics included."""
    from training.train import _weight_average

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    average = _weight_average(model, 0.75)
    states = []
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        average.update_parameters(model)
    got = average.module.state_dict()
    for key, value in got.items():
        if value.is_floating_point():
            want = 0.75 * (0.75 * states[0][key] + 0.25 * states[1][key]) + 0.25 * states[2][key]
            torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-6, msg=key)
    assert _weight_average(model, 0.0) is None


def test_weight_average_snapshots_hold_the_average(tmp_path):
    """A run with optim.ema: its snapshots hold the average (the checkpoint's), not the weights (resuming it:
    test_resume_after_sigkill_continues_the_loss_curve)."""
    common = ["optim.batch_size=2", "run.amp=false", "model.backbone_norm=batch", "run.checkpoint_every=1",
              "optim.ema=0.75"]
    whole = tmp_path / "whole"
    _finish(_run(whole, [*common, "optim.steps=3"]))
    state = torch.load(whole / "checkpoint.pt", weights_only=True)
    snapshot, meta = load_model(whole / "snapshots" / "step_000003")
    assert meta["ema"] == {"decay": 0.75, "averaged_steps": 3}
    apart = 0
    for key, value in snapshot.state_dict().items():
        if value.is_floating_point():  # the snapshot is fp16: equal to the average up to its rounding
            torch.testing.assert_close(value, state["ema"][f"module.{key}"].float(), rtol=2e-3, atol=1e-5, msg=key)
            apart += int(not torch.allclose(value, state["model"][key].float(), rtol=2e-3, atol=1e-5))
    assert apart > 10  # ... and not the weights


@pytest.mark.parametrize("silhouette", [False, True])
def test_trains_where_pytorch3d_is_not_installed(tmp_path, silhouette):
    """A machine without pytorch3d (the GPU machines) builds the model and trains it: every loss is torch alone,
    the silhouette and depth through the torch rasteriser (loss.rasteriser=torch)."""
    out = tmp_path / "run"
    extra = ["loss.silhouette=0.5", "loss.depth=0.2", "loss.rasteriser=torch", "loss.render_size=16"] if silhouette else []
    blocked = ("import runpy, sys; sys.modules['pytorch3d'] = None; "
               f"sys.argv = ['train.py', *{[*TINY_ARGS, f'run.out={out}', 'optim.steps=2', *extra]!r}]; "
               "runpy.run_path('training/train.py', run_name='__main__')")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(v > 0 for v in losses.values())
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    sil = [r.get("silhouette/2") or "" for r in rows]
    depth = [r.get("depth/2") or "" for r in rows]
    if silhouette:  # the last stage's soft IoU loss and depth L1, logged
        assert all(0.0 < float(v) <= 1.0 for v in sil) and all(float(v) >= 0.0 for v in depth), rows
    else:
        assert not any(sil) and not any(depth)


def test_numbers_written_as_yaml_reads_text_are_numbers(tmp_path):
    """YAML reads 1e-3 (no dot) as text: a float setting takes it as the number, an int setting 1e3 as 1000."""
    from training.config import load_train_config

    cfg = load_train_config(None, ["optim.lr=1e-3", "optim.steps=1e3", "loss.chamfer=2"])
    assert (cfg.optim.lr, cfg.optim.steps, cfg.loss.chamfer) == (0.001, 1000, 2.0)
    assert type(cfg.optim.lr) is float and type(cfg.optim.steps) is int and type(cfg.loss.chamfer) is float
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-3\n  weight_decay: 5E-5\n")
    cfg = load_train_config(tmp_path / "c.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (0.001, 5e-5)
    for setting, key in [("optim.lr=abc", "optim.lr"), ("optim.steps=2.5", "optim.steps"),
                         ("run.amp=maybe", "run.amp"), ("optim.lr=.nan", "optim.lr")]:
        with pytest.raises(ValueError, match=re.escape(key)):
            load_train_config(None, [setting])


def _bad_input_cases(tmp_path: Path) -> dict[str, list[str]]:
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "syntax.yaml").write_text("optim: {lr: 1e-3\n")
    (tmp_path / "list.yaml").write_text("- optim\n- run\n")
    (tmp_path / "afile").write_text("")
    return {
        "config folder": ["--config", str(tmp_path / "folder.yaml")],
        "YAML syntax": ["--config", str(tmp_path / "syntax.yaml")],
        "YAML list": ["--config", str(tmp_path / "list.yaml")],
        "batch 0": ["optim.batch_size=0"],
        "steps 0": ["optim.steps=0"],
        "steps -5": ["optim.steps=-5"],
        "lr text": ["optim.lr=abc"],
        "lr negative": ["optim.lr=-1"],
        "resume without checkpoint": ["--resume"],
        "init-from missing": ["--init-from", str(tmp_path / "no_such_model")],
        "out under a file": [f"run.out={tmp_path / 'afile' / 'x'}"],
    }


@pytest.mark.parametrize("case", ["config folder", "YAML syntax", "YAML list", "batch 0", "steps 0", "steps -5",
                                  "lr text", "lr negative", "resume without checkpoint", "init-from missing",
                                  "out under a file"])
def test_bad_input_is_one_sentence_exit_2_before_anything_is_written(tmp_path, capsys, case):
    """Each is refused before the data is read: an existing run's config.yaml stays as it was, nothing is added."""
    from training.train import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("the run's own config\n")
    extra = _bad_input_cases(tmp_path)[case]
    options = [a for a in extra if "=" not in a]
    settings = [a for a in extra if "=" in a]
    rc = main([*options, *TINY_ARGS, f"run.out={out}", "optim.steps=1", *settings])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert (out / "config.yaml").read_text() == "the run's own config\n"


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A finished 2-step run (checkpoint.pt at step 2, config.yaml), trained in this process."""
    from training.train import main

    out = tmp_path_factory.mktemp("run") / "two"
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=2", f"run.out={out}"]) == 0
    assert (out / "checkpoint.pt").is_file()
    return out


def test_resume_without_a_config_goes_on_with_the_runs_own_settings(two_step_run, tmp_path, capsys):
    """``--resume run.out=R optim.steps=N`` trained on with the built-in defaults (other losses, other points) and wrote
    them over R/config.yaml: the run's own settings went. It now reads R/config.yaml; --init-from beside --resume, whose
    checkpoint replaces those weights, is refused."""
    import shutil

    import yaml

    from training.train import main

    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    before = yaml.safe_load((run / "config.yaml").read_text())
    assert main(["--resume", f"run.out={run}", "optim.steps=3"]) == 0, capsys.readouterr().err
    after = yaml.safe_load((run / "config.yaml").read_text())
    assert after["optim"]["steps"] == 3 and after["model"] == before["model"] and after["loss"] == before["loss"]
    assert {k: v for k, v in after["data"].items()} == before["data"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    capsys.readouterr()
    assert main(["--resume", "--init-from", str(run / "snapshots" / "step_000002"), f"run.out={run}",
                 "optim.steps=4"]) == 2
    err = capsys.readouterr().err
    assert "whose weights replace --init-from's" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("damage", ["truncated", "empty", "random bytes", "not a checkpoint"])
def test_resuming_from_a_corrupt_checkpoint_is_one_sentence(two_step_run, tmp_path, capsys, damage):
    """A truncated, empty or random checkpoint gave torch's tracebacks (PytorchStreamReader, EOFError, ...)."""
    import shutil

    from training.train import main

    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "random bytes": os.urandom(5000), "not a checkpoint": b""}[damage])
    if damage == "not a checkpoint":
        torch.save({"weights": torch.zeros(2)}, ckpt)
    config = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=3", f"run.out={run}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert f"the checkpoint {ckpt} is corrupt or truncated" in err and "without --resume" in err
    # its advice leads somewhere: not back to this folder without --resume, which holds a run and is refused
    assert "another run.out" in err
    assert (run / "config.yaml").read_bytes() == config


def test_a_new_run_into_a_folder_that_holds_a_run_is_refused_and_leaves_it_whole(two_step_run, tmp_path, capsys):
    """A run started without --resume in a run's folder wrote over its checkpoint and log (hours of training); it is
    one sentence now, and every file of the run is as it was."""
    import shutil

    from training.train import main

    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=3", f"run.out={run}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: run.out={run} already holds a run ({run / 'checkpoint.pt'}); continue it with --resume, "
                   "or give another run.out (delete that folder first to start it over).\n")
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_being_written_refuses_a_second_and_a_killed_runs_lock_is_let_go(two_step_run, tmp_path, capsys):
    """Two runs into one folder (a --resume started twice) wrote over each other's checkpoints: the second is refused
    while the first holds the folder's lock; a run that is killed lets go of it with its process (its file left
    behind takes nothing), and a finished run leaves no file."""
    import shutil
    import subprocess

    from training.train import LOCK_FILE, main

    pytest.importorskip("fcntl")  # the holder below locks as the run does on POSIX
    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    assert not (two_step_run / LOCK_FILE).exists()  # the finished run removed its file
    holding = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
               "f.write('process 4242 on elsewhere'); f.flush(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", holding, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        capsys.readouterr()
        assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=3", f"run.out={run}", "--resume"]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: run.out={run} is in use by another training run (process 4242 on elsewhere); wait "
                       "for it to end, or give another run.out.\n")
        assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK_FILE).exists()  # the killed holder's file, no longer locked
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=3", f"run.out={run}", "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3 and not (run / LOCK_FILE).exists()


def test_a_refused_run_leaves_no_folder_and_a_file_system_without_locks_trains_unlocked(tmp_path, capsys,
                                                                                        monkeypatch, caplog):
    """A new run.out made for a run that then fails before writing (a missing --init-from) is removed again; where
    the file system cannot lock, a warning says so and the run goes on."""
    import errno
    import logging

    from training import train as train_module

    fresh = tmp_path / "new" / "run"
    assert train_module.main([*TINY_ARGS, "optim.steps=1", f"run.out={fresh}", "--init-from",
                              str(tmp_path / "no_such_model")]) == 2
    assert not fresh.exists()

    def no_locks(handle):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(train_module, "_lock_file", no_locks)
    with caplog.at_level(logging.WARNING, logger="recon-train"):
        assert train_module.main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=1", f"run.out={fresh}"]) == 0
    assert "cannot lock" in caplog.text and "No locks available" in caplog.text
    assert (fresh / "checkpoint.pt").is_file() and not (fresh / train_module.LOCK_FILE).exists()


def test_resuming_past_or_at_the_planned_steps_trains_nothing_and_keeps_the_config(two_step_run, tmp_path, capsys):
    """optim.steps below the checkpoint's step trained nothing, exited 0 and wrote the lower steps into config.yaml;
    it is refused now, and resuming a finished run (its step = optim.steps) is a no-op that says so."""
    import shutil

    from training.train import main

    run = tmp_path / "run"
    shutil.copytree(two_step_run, run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.parent.name != "tb"}
    capsys.readouterr()
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=1", f"run.out={run}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "at step 2, past optim.steps=1" in err
    assert main([*TINY_ARGS, "optim.batch_size=2", "optim.steps=2", f"run.out={run}", "--resume"]) == 0
    after = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.parent.name != "tb"}
    assert after == before


@pytest.mark.parametrize("missing,named", [("shapenet", "The meshes folder"), ("renders", "The renders folder"),
                                           ("manifest", "has no manifest.json")])
def test_a_missing_data_folder_is_named_before_anything_is_built(tmp_path, capsys, monkeypatch, missing, named):
    """data.shapenet=/tmp/nope said '[Errno 2] No such file or directory: .../manifest.json' once the model was built
    and the backgrounds read; now the folder and the setting to fix are named first."""
    import training.train as module

    def never(*args, **kwargs):
        raise AssertionError("built before the data folders were checked")

    monkeypatch.setattr(module, "build_model", never)
    (tmp_path / "shapenet").mkdir()
    (tmp_path / "renders").mkdir()
    if missing == "manifest":
        pass
    else:
        (tmp_path / "shapenet" / "manifest.json").write_text("[]")
        (tmp_path / missing).rename(tmp_path / "gone")
    argv = [f"data.shapenet={tmp_path / 'shapenet'}", f"data.renders={tmp_path / 'renders'}", "model.backbone=resnet18",
            f"run.out={tmp_path / 'run'}"]
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and len(err.strip().splitlines()) == 1, err
    assert f"data.{'shapenet' if missing == 'manifest' else missing}=" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_run_out_is_said_to_be_empty(capsys, value):
    """run.out= said 'run.out=None is not text'."""
    from training.train import main

    assert main([f"run.out={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run.out is empty; give a name or a path") and "None" not in err, err


def test_the_gpu_script_says_what_the_machine_lacks_in_one_sentence(tmp_path):
    """scripts/device_train.sh exits 2 when the run cannot start: OUT unset (was 1, against its header), or a machine
    without CUDA or without a package training needs (was an AssertionError's traceback)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "device_train.sh"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    unset = subprocess.run(["bash", str(script), "1", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert unset.returncode == 2 and unset.stderr.startswith("OUT must name the folder"), unset.stderr
    missing = subprocess.run(["bash", str(script), "1", "1"], capture_output=True, text=True, timeout=60,
                             env={**env, "OUT": str(tmp_path / "gone")})
    assert missing.returncode == 2 and missing.stderr == f"OUT {tmp_path / 'gone'} is not a folder: create it first\n"
    nogpu = subprocess.run(["bash", str(script), "1", "1"], capture_output=True, text=True, timeout=120,
                           env={**env, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""})
    assert nogpu.returncode == 2, nogpu.stderr
    assert nogpu.stderr.startswith("this machine ") and nogpu.stderr.count("\n") == 1, nogpu.stderr
    assert "Traceback" not in nogpu.stderr and not list(tmp_path.iterdir())
