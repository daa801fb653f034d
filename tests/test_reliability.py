"""Failing loudly and losing nothing: what ``galaxygan`` says and records for awkward inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_dry_run_prints_the_config_and_fails_for_a_dataset_that_is_not_there(tmp_path):
    r = galaxygan("train", "configs/dcgan_hdf32.toml", "--set", f"data.dataset={tmp_path / 'nosuch'}", "--dry-run")
    assert r.returncode == 2 and "[train]" in r.stdout and "Traceback" not in r.stderr
    assert f"{tmp_path / 'nosuch'}: no such file or folder" in r.stderr


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


def test_sampling_again_into_a_folder_replaces_the_earlier_run_and_nothing_else(tmp_path):
    """Six dcgan_sim64 images, then two from another model into the same folder: the folder
    holds the second run only (no stale sample_0002.png beside a record of two images), a file
    of the user's stays; a folder of sample-named files that no sampling wrote is refused."""
    out = tmp_path / "out"
    assert galaxygan("sample", str(shipped("dcgan_sim64")), "-n", "6", "--out", str(out)).returncode == 0
    (out / "notes.txt").write_text("mine")
    r = galaxygan("sample", str(shipped("stylegan_sim64_gri")), "-n", "2", "--seed", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "samples.json").read_text())
    assert record["checkpoint"] == "stylegan_sim64_gri" and record["count"] == 2
    assert sorted(p.name for p in out.glob("sample_*.png")) == ["sample_0000.png", "sample_0001.png"]
    assert sorted(record["files"] + ["notes.txt"]) == sorted(p.name for p in out.iterdir())
    assert record["psi"] == 1.0 and record["noise_mode"] == "const" and record["software"].startswith("Galaxy GAN")
    from astropy.io import fits

    with fits.open(out / "samples.fits") as h:
        hdr = h[0].header
        assert hdr["CKPT"] == "stylegan_sim64_gri" and hdr["PSI"] == 1.0 and hdr["NOISE"] == "const"
        assert h[0].data.shape[0] == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "sample_0000.png").write_bytes(b"not ours")
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "-n", "2", "--out", str(foreign))
    assert r.returncode == 2 and "no samples.json" in r.stderr and "Traceback" not in r.stderr
    assert (foreign / "sample_0000.png").read_bytes() == b"not ours" and len(list(foreign.iterdir())) == 1
    (foreign / "samples.json").write_text('{"mine": true}')  # a record of the user's own is no sampling's
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "-n", "2", "--out", str(foreign))
    assert r.returncode == 2 and "is not the record of an earlier sampling" in r.stderr
    assert (foreign / "samples.json").read_text() == '{"mine": true}' and len(list(foreign.iterdir())) == 2


def test_a_chained_model_s_fits_names_the_checkpoint_it_runs_after(tmp_path):
    from astropy.io import fits

    from galaxy_core.io.checkpoint import checkpoint_id

    r = galaxygan("sample", str(shipped("stackgan_sim128")), "-n", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    with fits.open(tmp_path / "samples.fits") as h:
        assert h[0].header["REF STAGE1"] == f"dcgan_sim64 {checkpoint_id(shipped('dcgan_sim64'))}"
    record = json.loads((tmp_path / "samples.json").read_text())
    assert record["references"]["stage1"]["checkpoint"] == "dcgan_sim64"


@pytest.mark.parametrize("bad, problem", [
    (np.full((2, 100), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((2, 7), np.float32), "(n, 100)"),
    (np.zeros((0, 100), np.float32), "holds no latents"),
    (np.array(["a", "b"]), "numeric array"),
    (None, "not a .npy file"),  # a text file: not the pickle message numpy would give
    ("cut", "not a readable .npy array"),
])
def test_bad_latents_are_refused_naming_the_file_before_anything_is_written(tmp_path, bad, problem):
    lat = tmp_path / "lat.npy"
    if bad is None:
        lat.write_text("not an array")
    elif isinstance(bad, str):  # a .npy file cut short
        np.save(lat, np.zeros((4, 100), np.float32))
        lat.write_bytes(lat.read_bytes()[:200])
    else:
        np.save(lat, bad)
    out = tmp_path / "out"
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "--latents", str(lat), "--out", str(out), "--no-fits")
    assert r.returncode == 2 and f"{lat}:" in r.stderr and problem in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_sample_counts_and_paths_that_cannot_be_used_are_one_line_errors(tmp_path):
    for n in ("0", "-1"):
        r = galaxygan("sample", str(shipped("dcgan_hdf32")), "-n", n, "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and f"-n {n}: need at least one image" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("x")
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "-n", "2", "--out", str(tmp_path / "afile" / "sub"))
    assert r.returncode == 2 and str(tmp_path / "afile") in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "afile").read_text() == "x"
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "--latents", str(tmp_path / "nope.npy"), "--out",
                  str(tmp_path / "o2"))
    assert r.returncode == 2 and "nope.npy: cannot read the latents" in r.stderr and not (tmp_path / "o2").exists()


def test_a_seed_gives_each_image_the_same_latent_at_any_count(tmp_path):
    """Image i of a seed does not depend on how many were drawn: dcgan_sim64's 100-d latents
    are not a whole number of torch's 16-value blocks for 1 or 3 images (torch.randn redraws a
    partial last block), yet -n 1 and -n 3 give the same first image, in PNG and FITS."""
    import torch
    from astropy.io import fits

    from galaxy_core.models.family import standard_normal

    for dim in (3, 100, 128):
        whole = standard_normal(8, dim, generator=torch.Generator().manual_seed(5))
        for n in range(1, 8):
            part = standard_normal(n, dim, generator=torch.Generator().manual_seed(5))
            assert torch.equal(part, whole[:n]), (dim, n)
    # draws of whole blocks are torch.randn's own (a seed's images from before are unchanged)
    assert torch.equal(standard_normal(4, 100, generator=torch.Generator().manual_seed(5)),
                       torch.randn(4, 100, generator=torch.Generator().manual_seed(5)))
    ckpt = shipped("dcgan_sim64")
    for n in ("1", "3"):
        r = galaxygan("sample", str(ckpt), "-n", n, "--seed", "7", "--out", str(tmp_path / n))
        assert r.returncode == 0, r.stderr
    z1, z3 = np.load(tmp_path / "1" / "latents.npy"), np.load(tmp_path / "3" / "latents.npy")
    np.testing.assert_array_equal(z1[0], z3[0])
    assert (tmp_path / "1" / "sample_0000.png").read_bytes() == (tmp_path / "3" / "sample_0000.png").read_bytes()
    with fits.open(tmp_path / "1" / "samples.fits") as a, fits.open(tmp_path / "3" / "samples.fits") as b:
        # the same image up to float rounding (a batch of 3 runs other kernel paths than a batch of 1)
        np.testing.assert_allclose(a[0].data[0], b[0].data[0], rtol=0, atol=1e-5)
        hdr = a[0].header  # the provenance cards say what they are, and which way up the array is
        assert hdr["ROWORDER"] == "top-down" and "arcsec/pixel" in hdr.comments["PIXSCALE"]
        assert all(hdr.comments[k] for k in ("CKPT", "CKPTID", "ARCH", "SEED", "ZP"))


def test_a_conditional_model_s_labels_are_written_and_regenerate_any_one_image(tmp_path):
    """began_cond_hdf32's image depends on its size-class label: the labels used go to labels.npy,
    samples.json and the FITS-less record, and one latent row with its label (--labels)
    regenerates that image exactly; a bad labels file is refused before anything is written."""
    from PIL import Image

    ckpt = shipped("began_cond_hdf32")
    out = tmp_path / "all"
    r = galaxygan("sample", str(ckpt), "-n", "5", "--seed", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    labels = np.load(out / "labels.npy")
    record = json.loads((out / "samples.json").read_text())
    assert labels.tolist() == record["labels"] == [0, 1, 2, 0, 1] and "labels.npy" in record["files"]
    np.save(tmp_path / "z1.npy", np.load(out / "latents.npy")[1:2])
    np.save(tmp_path / "l1.npy", labels[1:2])
    r = galaxygan("sample", str(ckpt), "--latents", str(tmp_path / "z1.npy"), "--labels", str(tmp_path / "l1.npy"),
                  "--out", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    again = np.asarray(Image.open(tmp_path / "one" / "sample_0000.png"))
    np.testing.assert_array_equal(again, np.asarray(Image.open(out / "sample_0001.png")))
    # without its label the row is drawn as image 0 of a new run, class 0: another image
    r = galaxygan("sample", str(ckpt), "--latents", str(tmp_path / "z1.npy"), "--out", str(tmp_path / "nolabel"))
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "nolabel" / "sample_0000.png")), again)
    np.save(tmp_path / "bad.npy", np.array([3]))
    r = galaxygan("sample", str(ckpt), "-n", "3", "--latents", str(tmp_path / "z1.npy"), "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "the latents file sets the count" in r.stderr  # -n would be ignored
    r = galaxygan("sample", str(ckpt), "--latents", str(tmp_path / "z1.npy"), "--labels", str(tmp_path / "bad.npy"),
                  "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "bad.npy: labels must lie in [0, 2]" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()
    r = galaxygan("sample", str(shipped("dcgan_hdf32")), "-n", "1", "--labels", str(tmp_path / "l1.npy"),
                  "--out", str(tmp_path / "uncond"))
    assert r.returncode == 2 and "is unconditional" in r.stderr and not (tmp_path / "uncond").exists()


def test_a_position_model_s_samples_say_they_are_class_grids(tmp_path):
    r = galaxygan("sample", str(shipped("positions_hdf_cond")), "-n", "2", "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "g" / "samples.json").read_text())
    assert record["display"].startswith("class grid, one pixel per cell") and "large red" in record["display"]
    assert "grids of cell classes" in record["fits_skipped"] and "colours" not in record["fits_skipped"]


@pytest.mark.parametrize("extra, named", [(["configs/dcgan_hdf32.toml"], "CONFIG"), (["--name", "x"], "--name"),
                                          (["--run-dir", "elsewhere"], "--run-dir"),
                                          (["--init", "checkpoints/dcgan_hdf64.json"], "--init")])
def test_resume_refuses_what_it_would_silently_ignore(tmp_path, extra, named):
    """--resume continues a run with its own config, folder and weights: a config file, a new
    name or folder, or other initial weights beside it are refused, not dropped unsaid."""
    r = galaxygan("train", "--resume", str(tmp_path / "run"), *extra)
    assert r.returncode == 2 and f"{named} cannot be used with it" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_seeds_beyond_what_the_generators_take_are_refused_by_name(tmp_path):
    """A seed must lie in 0 .. 2**63 - 1 everywhere one is given: each command's --seed, the
    config's seeds and the app's seed lists (a larger one overflowed torch's generator)."""
    from galaxy_core.config import MAX_SEED
    from studio_ui.widgets import parse_seeds

    big = str(2**64)
    for cmd in (["sample", str(shipped("dcgan_hdf32")), "-n", "1", "--out", str(tmp_path / "s")],
                ["evaluate", str(shipped("dcgan_hdf32")), "--report", str(tmp_path / "r")],
                ["sky", "compose", "--size", "128", "--out", str(tmp_path / "k")]):
        r = galaxygan(*cmd, "--seed", big)
        assert r.returncode == 2 and f"--seed: must lie in 0 .. 2**63 - 1, got {big}" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    r = galaxygan("train", "configs/dcgan_hdf32.toml", "--set", f"train.seed={big}", "--dry-run")
    assert r.returncode == 2 and "train.seed" in r.stderr and "Traceback" not in r.stderr
    assert parse_seeds(f"1, {MAX_SEED}") == [1, MAX_SEED]
    with pytest.raises(ValueError, match="too large"):
        parse_seeds(big)


def test_ctrl_c_during_a_long_command_ends_with_one_line_and_no_half_written_files(tmp_path):
    """SIGINT while the simulated dataset is being built: exit status 130, a one-line message,
    no traceback, and nothing left in the cache (the dataset is written only when complete)."""
    import os
    import signal
    import time

    env = {**os.environ, "GALAXYGAN_CACHE": str(tmp_path / "cache")}
    # as from a terminal: SIGINT handled (a pytest-xdist worker ignores it, and children inherit that)
    p = subprocess.Popen([sys.executable, "-m", "galaxy_core.cli", "data", "build", "sim", "--count", "50000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    while b"simulating galaxies" not in seen:  # its progress bar is running (minutes from the end)
        chunk = p.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")[-2000:]
        seen += chunk
    time.sleep(1)
    p.send_signal(signal.SIGINT)
    err = (seen + p.communicate(timeout=120)[1]).decode(errors="replace")
    assert p.returncode == 130 and "galaxygan: interrupted" in err and "Traceback" not in err, err[-2000:]
    left = [q for q in (tmp_path / "cache").rglob("*") if q.is_file()]
    assert not any(q.suffix in (".fits", ".npy") for q in left), left


def test_an_output_stem_that_names_a_folder_is_refused_before_any_work(tmp_path):
    """--out sky/ (or an existing folder) gave sky.png beside the folder: refused, nothing written."""
    (tmp_path / "there").mkdir()
    for out in (f"{tmp_path / 'new'}/", str(tmp_path / "there")):
        for cmd in (["sky", "compose", "--size", "128", "--out", out],
                    ["sky", "mosaic", str(shipped("dcgan_hdf32")), "--size", "128", "--out", out],
                    ["export", str(shipped("dcgan_hdf32")), "--out", out]):
            r = galaxygan(*cmd)
            assert r.returncode == 2 and "names a folder; give a file name without suffix" in r.stderr, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["there"] and not any((tmp_path / "there").iterdir())
