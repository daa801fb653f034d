"""Failing loudly and losing nothing: what ``galaxygan`` says and records for awkward inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_core.paths import checkpoints_dir

ROOT = Path(__file__).resolve().parents[1]


def galaxygan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def shipped(name: str) -> Path:
    path = checkpoints_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(f"shipped checkpoint {path} is missing")
    return path


# ---------------------------------------------------------------------------- galaxygan sample


def test_sample_from_an_rgb_model_says_why_there_is_no_fits(tmp_path):
    ckpt = shipped("dcgan_hdf32")
    r = galaxygan("sample", str(ckpt), "-n", "4", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert ("note: no FITS cube written: dcgan_hdf32 was trained on display images (hdf, channels R/G/B), "
            "not on flux-calibrated data") in r.stdout
    assert not (tmp_path / "out" / "samples.fits").exists()
    record = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert "not fluxes" in record["fits_skipped"] and "fits" not in record
    # the checkpoint can be found and verified again from the record
    assert record["checkpoint_path"] == str(ckpt.resolve())
    digest = hashlib.sha256(ckpt.with_suffix(".safetensors").read_bytes()).hexdigest()
    assert record["checkpoint_sha256"] == digest and record["checkpoint_id"] == digest[:12]
    meta = json.loads(ckpt.read_text())
    assert record["run"] == meta["training"]["run"] and record["step"] == meta["training"]["step"]
    assert record["seed"] == 0 and record["count"] == 4


def test_sample_from_a_physical_model_writes_fits_unless_told_not_to(tmp_path):
    ckpt = shipped("dcgan_sim64")
    r = galaxygan("sample", str(ckpt), "-n", "2", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stdout and (tmp_path / "a" / "samples.fits").exists()
    assert json.loads((tmp_path / "a" / "samples.json").read_text())["fits"] == "samples.fits"
    r = galaxygan("sample", str(ckpt), "-n", "2", "--out", str(tmp_path / "b"), "--no-fits")
    assert r.returncode == 0, r.stderr
    assert "note: no FITS cube written: FITS output was turned off (--no-fits)" in r.stdout
    assert not (tmp_path / "b" / "samples.fits").exists()
