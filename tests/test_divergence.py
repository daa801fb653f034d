"""A diverging run fails loudly, never writes non-finite weights, and can roll back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from galaxy_core.config import load_config
from galaxy_core.errors import CheckpointError
from galaxy_core.io.checkpoint import load_checkpoint, save_checkpoint
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.train.loop import TrainingDiverged, nonfinite_tensors, train
from galaxy_core.train.run import RunFolder

SMALL = ["data.dataset=hdf", "data.resolution=32", "model.width=8", "train.batch_size=8", "train.device=cpu",
         "train.threads=1", "log.metrics_every=5", "log.sample_every=50", "log.checkpoint_every=5",
         "log.eval_every=0", "log.grid_size=4"]
HUGE_LR = ["train.lr_g=1e30", "train.lr_d=1e30", "train.steps=30"]


def test_divergence_stops_the_run_as_failed_through_the_cli(tmp_path):
    run_dir = tmp_path / "diverged"
    sets = [a for s in SMALL + HUGE_LR + ["log.eval_every=10", "log.eval_samples=16"] for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--run-dir", str(run_dir), "--quiet", *sets],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "galaxygan: error: " in r.stderr and "became non-finite" in r.stderr and "Traceback" not in r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["message"]
    last = run_dir / "checkpoints" / "last.json"
    if last.exists():  # whatever was saved before the divergence is finite and loads
        tensors, _ = load_checkpoint(last)
        assert nonfinite_tensors(tensors) == []
        load_pretrained(last)


def test_rollback_reloads_the_last_checkpoint_with_lower_learning_rates(tmp_path):
    run_dir = tmp_path / "rolled"
    train(load_config(None, SMALL + ["train.steps=5"]), run_dir, progress=False)  # a good checkpoint at step 5
    cfg = load_config(None, SMALL + HUGE_LR + ["train.on_nonfinite=rollback"])
    with pytest.raises(TrainingDiverged):
        train(cfg, run_dir, progress=False)  # halving 1e30 three times does not save it: it fails in the end
    status = RunFolder(run_dir).read_status()
    assert status["state"] == "failed" and status["rollbacks"] == 3 and status["diverged_at"] == 6
    log = (run_dir / "log.txt").read_text()
    assert log.count("rolled back to step 5") == 3 and "x0.125" in log
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.json")
    assert meta["training"]["step"] == 5 and nonfinite_tensors(tensors) == []


def test_loading_refuses_non_finite_weights_naming_the_tensor(tmp_path):
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "checkpoints" / "dcgan_hdf32.json"
    tensors, meta = load_checkpoint(src)
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["G_ema.main.0.weight"][0, 0, 0, 0] = float("inf")
    meta.pop("tensors_sha256")
    save_checkpoint(tmp_path / "bad", tensors, meta)
    with pytest.raises(CheckpointError, match=r"G_ema\.main\.0\.weight"):
        load_pretrained(tmp_path / "bad.json")
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "sample", str(tmp_path / "bad.json"), "-n", "2",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "G_ema.main.0.weight" in r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))
    assert torch.isinf(tensors["G_ema.main.0.weight"]).any()
