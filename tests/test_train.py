"""The training loop end to end on the built-in data: run folder, exact resume, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from galaxy_core.config import load_config
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.io.checkpoint import load_checkpoint, read_meta
from galaxy_core.train.live import split_record_keys
from galaxy_core.train.loop import train
from galaxy_core.train.run import RunFolder, read_metrics

SMALL = [
    "data.dataset=hdf", "data.resolution=32", "model.width=8", "train.batch_size=16",
    "train.device=cpu", "train.threads=1", "log.metrics_every=5", "log.sample_every=10",
    "log.checkpoint_every=10", "log.eval_every=15", "log.eval_samples=64", "log.grid_size=16",
]


def _cfg(*extra):
    return load_config(None, SMALL + list(extra))


def test_short_run_writes_a_complete_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    calls = []
    status = train(_cfg("train.steps=30"), run_dir, progress_fn=lambda s, t, r: calls.append(s), progress=False)
    assert status["state"] == "finished" and status["step"] == 30
    run = RunFolder(run_dir)
    recs = read_metrics(run.metrics_path)
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30] == calls
    for key in ("loss_D", "loss_G", "D_x", "D_G_z", "lr_G", "lr_D", "images_per_s", "kimg", "epoch"):
        assert all(np.isfinite(r[key]) for r in recs), key
    loss_d = [r["loss_D"] for r in recs]
    assert max(loss_d) - min(loss_d) > 0.05  # the discriminator is learning, not frozen
    assert "fid_galaxy_64v383" in recs[2] and "fid_galaxy_64v383" in recs[-1]  # 64 samples vs all 383 hdf stamps
    assert np.isfinite(recs[-1]["kid_galaxy_64v383"])
    assert split_record_keys(recs) == (["fid_galaxy_64v383", "kid_galaxy_64v383"], [])  # cpu_s is bookkeeping
    assert [s for s, _ in run.sample_grids()] == [0, 10, 20, 30]
    assert np.load(run.samples_dir / "fixed_z.npy").shape == (16, 100)
    # resolved config is written and loads back
    assert load_config(run.config_path).model["num_bands"] == 3
    # last and best checkpoints load for sampling; best is the lowest live metric
    last = read_meta(run.checkpoint("last"))
    assert last["training"]["step"] == 30 and "optimizer" in last
    # each card carries only the metrics measured on its own weights
    fid_key = next(k for k in recs[-1] if k.startswith("fid_galaxy_"))
    assert last["metrics"][fid_key] == pytest.approx(recs[-1][fid_key])
    best = read_meta(run.checkpoint("best"))
    assert best["metrics"][fid_key] == pytest.approx(best["best"]["value"])
    values = [r["fid_galaxy_64v383"] for r in recs if "fid_galaxy_64v383" in r]
    assert best["best"]["value"] == pytest.approx(min(values))
    model = load_pretrained(run.checkpoint("last"))
    x = model.generate(model.latents(0, 4))
    assert x.shape == (4, 3, 32, 32) and -1 <= x.min() and x.max() <= 1


def test_resume_continues_exactly(tmp_path):
    sched = ["train.lr_step_every=5", "train.lr_step_unit=step", "train.lr_gamma=0.5", "log.eval_every=0"]
    train(_cfg("train.steps=20", *sched), tmp_path / "straight", progress=False)
    train(_cfg("train.steps=10", *sched), tmp_path / "split", progress=False)
    train(_cfg("train.steps=20", *sched), tmp_path / "split", progress=False)  # resumes from last at 10
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in b] == [5, 10, 15, 20]
    assert [r["lr_G"] for r in b] == pytest.approx([2e-4 * 0.5**k for k in (0, 1, 2, 3)])
    for ra, rb in zip(a, b):
        assert ra["loss_D"] == pytest.approx(rb["loss_D"], rel=1e-4, abs=1e-5)
    ta, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.json")
    tb, _ = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.json")
    for k in ta:
        if k.startswith(("G_ema.", "D.")):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)


def test_resume_with_dropout_is_bit_identical(tmp_path):
    # nn.Dropout draws from torch's global generator, not the step's; the loop seeds it per step.
    sets = ["train.steps=6", "model.d_dropout=0.3", "log.eval_every=0", "train.batch_size=8"]
    train(_cfg(*sets), tmp_path / "straight", progress=False)
    train(_cfg(*sets[1:], "train.steps=3"), tmp_path / "split", progress=False)
    torch.manual_seed(12345)  # whatever the global generator holds between the two processes
    torch.rand(7)
    train(_cfg(*sets), tmp_path / "split", progress=False)
    ta, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.json")
    tb, _ = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.json")
    assert sorted(ta) == sorted(tb)
    assert [k for k in ta if not torch.equal(ta[k], tb[k])] == []


def _galaxygan(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "galaxy_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(pred, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _last_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text())["training"]["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


@pytest.mark.slow
def test_kill_and_resume_through_the_cli(tmp_path):
    run_dir = tmp_path / "killed"
    sets = [a for s in SMALL + ["train.steps=120", "log.eval_every=0", "train.lr_step_every=20",
                                 "train.lr_step_unit=step"] for a in ("--set", s)]
    proc = _galaxygan("train", "--run-dir", str(run_dir), "--quiet", *sets)
    assert _wait_for(lambda: _last_step(run_dir) >= 20 or proc.poll() is not None), "no checkpoint written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _last_step(run_dir)
    assert 20 <= killed_at < 120
    assert RunFolder(run_dir).effective_state() == "failed"  # the process is gone
    done = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--resume", str(run_dir), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _last_step(run_dir) == 120
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == list(range(5, 125, 5))  # no gap, no duplicate across the kill
    lr = {r["step"]: r["lr_G"] for r in read_metrics(run_dir / "metrics.jsonl")}
    assert lr[120] == pytest.approx(2e-4 * 0.5 ** (119 // 20))  # schedule continued by step
    assert "resumed from step" in (run_dir / "log.txt").read_text()


@pytest.mark.slow
def test_sigterm_stops_cleanly(tmp_path):
    run_dir = tmp_path / "stopped"
    sets = [a for s in SMALL + ["train.steps=100000", "log.eval_every=0"] for a in ("--set", s)]
    proc = _galaxygan("train", "--run-dir", str(run_dir), "--quiet", *sets)
    assert _wait_for(lambda: (RunFolder(run_dir).read_status() or {}).get("step", 0) >= 10)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    st = RunFolder(run_dir).read_status()
    assert st["state"] == "stopped"
    assert _last_step(run_dir) == st["step"]  # nothing lost: last checkpoint is at the stop


def test_sample_and_info_cli_on_physical_data(tmp_path):
    run_dir = tmp_path / "sim"
    cfg = load_config(None, SMALL + ["data.dataset=sim", "data.count=64", "train.steps=4", "log.eval_every=0"])
    train(cfg, run_dir, progress=False)
    out = tmp_path / "samples"
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "sample", str(run_dir / "checkpoints" / "last.json"),
                        "-n", "6", "--seed", "3", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("sample_*.png"))) == 6 and (out / "grid.png").exists()
    assert np.load(out / "latents.npy").shape == (6, 100)
    from astropy.io import fits

    with fits.open(out / "samples.fits") as hdul:
        cube, hdr = hdul[0].data, hdul[0].header
    assert cube.shape == (6, 3, 32, 32)
    assert hdr["SEED"] == 3 and hdr["CKPTID"] == json.loads((out / "samples.json").read_text())["checkpoint_id"]
    assert hdr["BUNIT"] == "nanomaggy" and hdr["ZP"] == 22.5  # the data's unit travels through the card
    # flux in the FITS inverts back to exactly what the model generated
    model = load_pretrained(run_dir / "checkpoints" / "last.json")
    x = model.generate(model.latents(3, 6))
    np.testing.assert_allclose(cube, model.to_flux(x), rtol=1e-4, atol=1e-6 * np.abs(cube).max())
    info = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "info", str(run_dir / "checkpoints" / "last.json")],
                          capture_output=True, text=True, timeout=120)
    assert "architecture: dcgan" in info.stdout and "data: sim" in info.stdout


def test_fits_unit_of_shipped_sim_checkpoints_is_known():
    from galaxy_core.paths import checkpoints_dir

    for name in ("dcgan_sim64", "stylegan_sim64_gri", "stackgan_sim128"):
        assert load_pretrained(checkpoints_dir() / f"{name}.json").flux_unit == "nanomaggy", name
    assert load_pretrained(checkpoints_dir() / "dcgan_hdf32.json").flux_unit is None  # 8-bit images, no unit


def test_cli_reports_bad_config_without_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[train]\nstepz = 3\n")
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", str(cfg)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "train.stepz" in r.stderr and "Traceback" not in r.stderr


def test_cpu_seconds_accumulate_in_records_and_across_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    train(_cfg("train.steps=10", "log.eval_every=0"), run_dir, progress=False)
    first = read_meta(RunFolder(run_dir).checkpoint("last"))["training"]["cpu_time_s"]
    train(_cfg("train.steps=20", "log.eval_every=0"), run_dir, progress=False)  # resumes at step 10
    recs = read_metrics(RunFolder(run_dir).metrics_path)
    cpu = [r["cpu_s"] for r in recs]
    assert [r["step"] for r in recs] == [5, 10, 15, 20]
    assert all(b > a for a, b in zip(cpu, cpu[1:])) and cpu[0] > 0
    assert cpu[1] == pytest.approx(first) and cpu[2] > first  # continued from the checkpoint, not restarted
    last = read_meta(RunFolder(run_dir).checkpoint("last"))["training"]
    assert last["cpu_time_s"] == pytest.approx(cpu[-1])
    assert 0 < last["cpu_time_s"] < 4 * last["wall_time_s"] + 1  # seconds of one process, not a clock reading


def test_card_records_the_commit_of_the_code_that_started_the_run(tmp_path, monkeypatch):
    from galaxy_core.train import loop

    tr = loop.Trainer(_cfg("train.steps=1", "log.eval_every=0"), RunFolder(tmp_path / "r"), progress=False)
    want = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=Path(loop.__file__).parent, capture_output=True,
                          text=True).stdout.strip() or None
    assert tr.git_commit == want
    # a commit made while the run trains is not the code that trained it: the card keeps the start's
    monkeypatch.setattr(loop, "_git_commit", lambda: "0000000")
    _, meta = tr.card(with_optimizer=False)
    assert meta["training"]["git_commit"] == want


def test_live_evaluation_keeps_its_own_interval_when_it_is_not_a_multiple_of_the_metrics_one(tmp_path):
    """eval_every 3 with metrics_every 5: FID at steps 3, 6, 9 and the end (it only ran at the
    common multiples before), and the metrics records at 5 and 10 as well."""
    status = train(_cfg("train.steps=10", "log.eval_every=3", "log.sample_every=100"), tmp_path / "run", progress=False)
    assert status["state"] == "finished"
    recs = read_metrics(RunFolder(tmp_path / "run").metrics_path)
    assert [r["step"] for r in recs] == [3, 5, 6, 9, 10]
    assert [r["step"] for r in recs if "fid_galaxy_64v383" in r] == [3, 6, 9, 10]
