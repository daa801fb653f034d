"""Held-out split of a user's folder: deterministic, stable as files are added, FITS bands kept together."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from galaxy_core.data.split import split_folder
from galaxy_core.errors import DataError


def _pngs(folder, names):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / n)


def test_split_is_deterministic_and_adding_files_moves_nothing(tmp_path):
    src = tmp_path / "gals"
    _pngs(src, [f"g{i:03d}.png" for i in range(60)])
    a = split_folder(src, fraction=0.2, out=tmp_path / "a", seed=4)
    b = split_folder(src, fraction=0.2, out=tmp_path / "b", seed=4)
    assert a["held_out"] == b["held_out"] and 4 <= len(a["held_out"]) <= 24  # ~12 expected
    assert sorted(a["train"] + a["held_out"]) == [f"g{i:03d}.png" for i in range(60)]
    assert not set(a["train"]) & set(a["held_out"])
    other = split_folder(src, fraction=0.2, out=tmp_path / "c", seed=5)
    assert other["held_out"] != a["held_out"]  # another seed, another split
    _pngs(src, [f"new{i}.png" for i in range(20)])
    grown = split_folder(src, fraction=0.2, out=tmp_path / "d", seed=4)
    assert set(a["held_out"]) <= set(grown["held_out"]) and set(a["train"]) <= set(grown["train"])
    # the folders hold exactly the assigned files, readable as images
    held_dir = tmp_path / "a" / "gals_held_out"
    assert sorted(p.name for p in held_dir.iterdir()) == a["held_out"]
    assert Image.open(held_dir / a["held_out"][0]).size == (16, 16)
    assert json.loads((tmp_path / "a" / "split.json").read_text())["held_out"] == a["held_out"]


def test_fits_bands_of_one_galaxy_stay_together(tmp_path):
    src = tmp_path / "cube"
    src.mkdir()
    for i in range(12):
        for band in "gri":
            fits.PrimaryHDU(np.full((8, 8), i, np.float32)).writeto(src / f"obj{i:02d}_{band}.fits")
    rec = split_folder(src, fraction=0.3, seed=1)
    held = {p.name for p in (tmp_path / "cube_split" / "cube_held_out").iterdir()}
    objs = {n.split("_")[0] for n in held}
    assert held == {f"{o}_{b}.fits" for o in objs for b in "gri"} and len(objs) == len(rec["held_out"])


def test_split_refuses_to_overwrite_or_nest(tmp_path):
    src = tmp_path / "gals"
    _pngs(src, ["a.png", "b.png", "c.png"])
    split_folder(src, fraction=0.5, out=tmp_path / "s", seed=0)
    with pytest.raises(DataError, match="holds a different split"):
        split_folder(src, fraction=0.5, out=tmp_path / "s", seed=9)
    with pytest.raises(DataError, match="must not be inside"):
        split_folder(src, fraction=0.5, out=src / "s")
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\)"):
        split_folder(src, fraction=1.0)
    _pngs(tmp_path / "one", ["x.png"])
    with pytest.raises(DataError, match="at least two"):
        split_folder(tmp_path / "one", fraction=0.5)


def test_prepare_with_held_out_fraction_prepares_the_training_part(tmp_path):
    src = tmp_path / "gals"
    _pngs(src, [f"g{i:02d}.png" for i in range(30)])
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "data", "prepare", str(src), "--resolution", "32",
                        "--held-out-fraction", "0.25"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "gals_split" / "split.json").read_text())
    assert f"gals_train: {len(rec['train'])} images" in r.stdout
    assert f"--data {tmp_path / 'gals_split' / 'gals_train'}" in r.stdout
    assert f"--held-out {tmp_path / 'gals_split' / 'gals_held_out'}" in r.stdout


def test_prepare_says_the_held_out_share_it_reached(tmp_path):
    """Each file is held out with the given probability, so 40 files at 0.3 gave 11 (28 %), not
    12: the command says the share reached beside the one asked for."""
    src = tmp_path / "gals"
    _pngs(src, [f"g{i:02d}.png" for i in range(40)])
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "data", "prepare", str(src), "--resolution", "32",
                        "--held-out-fraction", "0.3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "gals_split" / "split.json").read_text())
    assert (len(rec["train"]), len(rec["held_out"])) == (29, 11)  # seed 0
    assert (f"split {src} (seed 0): 29 training and 11 held-out galaxies (28 % held out; each galaxy is set aside "
            "with probability 0.3, so the share is near, not exactly, 30 %)") in r.stdout
