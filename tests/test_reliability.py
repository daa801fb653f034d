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


# ------------------------------------------------------------------------- FITS in the app


def test_app_fits_download_holds_the_fluxes_of_the_shown_latents():
    import io

    import numpy as np
    from astropy.io import fits

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from galaxy_core.models.pretrained import load_pretrained
    from studio_ui import widgets

    model = load_pretrained(shipped("dcgan_sim64"))
    z = model.latents(5, 3).numpy()
    label, build, name, mime = widgets.fits_download(model, z, seed=5, file_name="x.fits")
    assert (label, name, mime) == ("Fluxes (FITS)", "x.fits", "application/fits")
    with fits.open(io.BytesIO(build())) as hdul:
        cube, header = hdul[0].data, hdul[0].header
    assert cube.shape == (3, 3, 64, 64) and header["SEED"] == 5 and header["CKPTID"] == model.id
    expected = model.to_flux(model.generate(z))
    np.testing.assert_allclose(cube, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert widgets.fits_download(load_pretrained(shipped("dcgan_hdf32")), z, seed=5, file_name="y.fits") is None


# ------------------------------------------------------------------------- galaxygan train --dry-run


def test_dry_run_accepts_a_numeric_choice():
    r = galaxygan("train", "configs/dcgan_hdf32.toml", "--set", "augment.rotate=45", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert '\nrotate = "45"\n' in r.stdout


@pytest.mark.parametrize(
    "setting, message",
    [
        ("model.width=abc", "--set model.width: expected a whole number, got 'abc'"),
        ("train.device=cuda:99", "--set train.device: 'cuda:99' cannot be used"),
        ("data.crop=0", "--set data.crop: must be in (0.0, 1.0]; got 0.0"),
    ],
)
def test_dry_run_names_the_key_of_a_bad_setting(setting, message):
    r = galaxygan("train", "configs/dcgan_hdf32.toml", "--set", setting, "--dry-run")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
