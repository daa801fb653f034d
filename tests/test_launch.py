"""Detached training processes: launch, watch, stop cleanly, resume (galaxy_core.train.launch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galaxy_core.config import load_config
from galaxy_core.errors import ConfigError, GalaxyGanError
from galaxy_core.paths import configs_dir
from galaxy_core.train.launch import launch_training, resume_run, stop_run
from galaxy_core.train.run import RunFolder


def tiny_config() -> dict:
    """The classroom preset, shrunk so a CPU makes a step every few milliseconds."""
    cfg = load_config(configs_dir() / "dcgan_hdf32.toml").to_dict()
    cfg["model"]["width"] = 4
    cfg["train"].update(steps=1_000_000, batch_size=8, threads=1, device="cpu")
    cfg["log"].update(metrics_every=5, sample_every=20, checkpoint_every=1_000_000, eval_every=0, grid_size=4)
    return cfg


def wait_for(predicate, timeout: float, what: str, run: RunFolder):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    log = (run.root / "process.log").read_text() if (run.root / "process.log").exists() else ""
    pytest.fail(f"timed out waiting for {what}; status {run.read_status()}; log:\n{log[-2000:]}")


@pytest.mark.slow
def test_launch_watch_stop_and_resume(tmp_path):
    run = RunFolder(tmp_path / "run")
    pid = launch_training(tiny_config(), run.root)
    try:
        assert run.read_status()["pid"] == pid  # listed at once, before the child has imported torch
        assert run.effective_state() in ("starting", "running")
        wait_for(lambda: run.effective_state() == "running" and len(run.read_metrics()) >= 2, 120,
                 "the run to record metrics", run)
        assert os.getpgid(pid) == pid  # its own session: a closed tab or app restart cannot signal it

        assert stop_run(run.root, wait_s=60)
        assert run.effective_state() == "stopped"
        stopped_at = run.read_status()["step"]
        assert stopped_at > 0 and run.checkpoint("last").exists()
        assert "--run-dir" in (run.root / "process.log").read_text()

        resume_run(run.root, overrides=[f"train.steps={stopped_at + 10}"])
        st = run.read_status()  # at once, before the child has imported torch: the real step, the new total
        assert (st["step"], st["total"]) == (stopped_at, stopped_at + 10) and st["state"] in ("starting", "running")
        wait_for(lambda: run.effective_state() == "finished", 120, "the resumed run to finish", run)
        assert run.read_status()["step"] == stopped_at + 10
        assert load_config(run.config_path).train.steps == stopped_at + 10
    finally:
        stop_run(run.root)


def test_launch_refuses_an_invalid_config_before_starting(tmp_path):
    bad = tiny_config()
    bad["train"]["loss"] = "wasserstein"
    with pytest.raises(ConfigError, match="train.loss"):
        launch_training(bad, tmp_path / "run")
    assert not (tmp_path / "run" / "status.json").exists()
    with pytest.raises(ConfigError, match="unknown key"):
        launch_training(configs_dir() / "dcgan_hdf32.toml", tmp_path / "run2", overrides=["train.nope=1"])


def test_launch_refuses_an_existing_run_and_a_missing_init(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    run.write_status("finished", step=10, total=10)
    with pytest.raises(GalaxyGanError, match="already holds a run"):
        launch_training(tiny_config(), run.root)
    with pytest.raises(GalaxyGanError, match="no such checkpoint"):
        launch_training(tiny_config(), tmp_path / "other", init=tmp_path / "missing.json")


def test_stop_only_signals_training_processes(tmp_path):
    """A status file naming some other process (a reused pid) must not get it killed."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = RunFolder(tmp_path / "run").create()
        run.write_status("running", pid=sleeper.pid, step=1, total=10)
        assert stop_run(run.root) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_and_resume_need_the_right_state(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    run.write_status("finished", step=10, total=10)
    assert stop_run(run.root) is False
    with pytest.raises(GalaxyGanError, match="not a run folder"):
        resume_run(tmp_path / "nowhere")
    assert Path(run.root).exists()
