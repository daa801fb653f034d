"""Training on your own folder of galaxies, as the README's section tells a new user to."""

from __future__ import annotations

import shlex
import subprocess
import sys

import numpy as np
from PIL import Image


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", *args], capture_output=True, text=True, timeout=300)


def test_prepare_then_train_with_data_folder_remembers_the_preprocessing(tmp_path):
    folder = tmp_path / "my galaxies"
    folder.mkdir()
    yy, xx = np.mgrid[:128, :128]
    for i in range(10):
        blob = np.exp(-((xx - 64 - i) ** 2 + (yy - 64) ** 2) / (2 * (6 + i) ** 2))
        rgb = (np.stack([blob, 0.8 * blob, 0.6 * blob], -1) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"g{i}.jpg", quality=95)
    r = _cli("data", "prepare", str(folder), "--crop", "0.5", "--resolution", "32")
    assert r.returncode == 0, r.stderr
    # the printed next step runs as pasted into a shell, from any folder (the space in the name is quoted)
    line = next(x for x in r.stdout.splitlines() if x.startswith("next: galaxygan train "))
    cmd = shlex.split(line[len("next: "):].split("   (")[0])
    assert cmd[:2] == ["galaxygan", "train"] and cmd[2].endswith("configs/dcgan_hdf32.toml") and cmd[-1] == str(folder)
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", *cmd[1:], "--dry-run"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "crop = 0.5" in r.stdout and "resolution = 32" in r.stdout and str(folder) in r.stdout
    assert "\ncount = " not in r.stdout and "\nnormalisation = " not in r.stdout  # meaningless for a JPG folder
    run_dir = tmp_path / "run"
    r = _cli("train", "configs/dcgan_hdf32.toml", "--data", str(folder), "--run-dir", str(run_dir), "--quiet",
             "--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "log.eval_every=0",
             "--set", "model.width=8", "--set", "log.grid_size=4", "--set", "train.device=cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    toml = (run_dir / "config.toml").read_text()
    assert "crop = 0.5" in toml and "resolution = 32" in toml


def test_a_one_image_folder_trains_with_live_evaluation_turned_off_and_says_why(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    yy, xx = np.mgrid[:64, :64]
    blob = (np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / 50.0) * 255).astype(np.uint8)
    Image.fromarray(np.stack([blob] * 3, -1)).save(folder / "only.png")
    run_dir = tmp_path / "run"
    r = _cli("train", "--data", str(folder), "--run-dir", str(run_dir), "--quiet",
             "--set", "data.resolution=32", "--set", "train.steps=4", "--set", "train.batch_size=2",
             "--set", "log.eval_every=2", "--set", "model.width=8", "--set", "log.grid_size=4",
             "--set", "train.device=cpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "galaxygan: warning: live evaluation turned off" in r.stderr and "log.eval_every=0" in r.stderr
    assert "Traceback" not in r.stderr
    log = (run_dir / "log.txt").read_text()
    assert "live evaluation turned off" in log
