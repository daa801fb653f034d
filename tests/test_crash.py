"""Killed at random moments or out of disk space, a run loses nothing it had saved."""

from __future__ import annotations

import json
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galaxy_core.io.checkpoint import load_checkpoint
from galaxy_core.models.pretrained import load_pretrained

SMALL = ["data.dataset=hdf", "data.resolution=32", "model.width=8", "train.batch_size=8", "train.device=cpu",
         "train.threads=1", "log.metrics_every=5", "log.sample_every=1000", "log.checkpoint_every=5",
         "log.eval_every=0", "log.grid_size=4"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _check_metrics_file(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]  # every line whole: no torn record survives a resume
    assert steps == sorted(set(steps)), steps  # no duplicates, in order
    return steps


@pytest.mark.slow
def test_ten_random_kills_resume_cleanly(tmp_path):
    # A step budget no run can reach between kills, however fast the machine: the run must still
    # be training when it is killed. The last resume then sets a reachable end.
    run_dir, budget, rng = tmp_path / "killed", 1_000_000, random.Random(7)
    lost = []
    for i in range(10):
        first = i == 0
        args = (["--run-dir", str(run_dir), *_sets(SMALL + [f"train.steps={budget}"])] if first
                else ["--resume", str(run_dir)])
        proc = subprocess.Popen([sys.executable, "-m", "galaxy_core.cli", "train", "--quiet", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        start_step = _status(run_dir).get("step", 0) if not first else 0
        t0 = time.time()
        while time.time() - t0 < 300 and proc.poll() is None:  # wait until it trains, then a random moment
            st = _status(run_dir)
            has_last = (run_dir / "checkpoints" / "last.json").exists()  # the first run: once it saved one
            if st.get("state") == "running" and st.get("pid") == proc.pid and st.get("step", 0) > start_step \
                    and has_last:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, proc.stderr.read()
        at_kill = _status(run_dir).get("step", 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.json")  # never torn
        lost.append(at_kill - meta["training"]["step"])
        if (run_dir / "metrics.jsonl").exists():
            text = (run_dir / "metrics.jsonl").read_text()
            complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
            steps = [json.loads(line)["step"] for line in complete.splitlines()]
            assert steps == sorted(set(steps))
    total = load_checkpoint(run_dir / "checkpoints" / "last.json")[1]["training"]["step"] + 20
    done = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--resume", str(run_dir), "--quiet",
                           *_sets([f"train.steps={total}"])], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert _check_metrics_file(run_dir / "metrics.jsonl") == list(range(5, total + 5, 5))
    assert max(lost) <= 10  # at most the steps since the last checkpoint (every 5) plus the one in flight
    print(f"kills: 10, clean resumes: 10, steps lost per kill: {lost}")
    load_pretrained(run_dir / "checkpoints" / "last.json")


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_with_a_clear_error_and_the_previous_checkpoint_loads(tmp_path):
    run_dir = tmp_path / "full"
    ok = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--run-dir", str(run_dir), "--quiet",
                         *_sets(SMALL + ["train.steps=10"])], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    size = (run_dir / "checkpoints" / "last.safetensors").stat().st_size
    # Resume to step 20 in a process that may not write a file as big as a checkpoint: CPython
    # ignores SIGXFSZ, so the write fails with EFBIG as on a full disk.
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--resume", str(run_dir), "--quiet",
                        *_sets(["train.steps=20"])], capture_output=True, text=True, timeout=300,
                       preexec_fn=_limit_file_size(size // 2))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "galaxygan: error:" in r.stderr and "could not write the checkpoint" in r.stderr
    assert "Traceback" not in r.stderr
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.json")
    assert meta["training"]["step"] == 10
    load_pretrained(run_dir / "checkpoints" / "last.json")
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # none half-written
