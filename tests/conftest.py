"""Shared test setup: caches and runs go under test-output/, never the user's cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
# Built-in datasets are deterministic, so a cache shared by the whole test session (and kept
# between local runs) is safe; set GALAXYGAN_CACHE yourself to point elsewhere.
os.environ.setdefault("GALAXYGAN_CACHE", str(OUTPUT / "cache"))
os.environ.setdefault("GALAXYGAN_RUNS", str(OUTPUT / "runs"))


def pytest_configure(config):
    """One thread per core in all: with several pytest-xdist workers each gets its share of the
    cores, since more threads than cores spin against each other (measured: 20 % more CPU for
    the same tests). Set here, in the process that starts the workers, before any imports torch;
    workers and the subprocesses tests start inherit it. Set OMP_NUM_THREADS yourself to override."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    workers = getattr(config.option, "numprocesses", None) or 1
    cores = os.cpu_count() or 2
    workers = workers if isinstance(workers, int) else cores  # "auto" and the like: one per core
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // max(1, workers)))


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Folder for artefacts a person may want to look at after the run (screenshots, grids)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


def _train_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", *args, "--quiet"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="session")
def straight_and_split():
    """``make(root, config, sets)``: train ``config`` 4 steps straight into ``root/straight`` and
    2 + 2 steps with a resume into ``root/split`` through the CLI (``sets``: ``--set`` values);
    returns ``root``. For exact-resume tests of a family."""

    def make(root: Path, config: str, sets: list[str]) -> Path:
        flags = [a for s in sets for a in ("--set", s)]
        for args in ((config, "--run-dir", str(root / "straight"), *flags, "--set", "train.steps=4"),
                     (config, "--run-dir", str(root / "split"), *flags, "--set", "train.steps=2"),
                     ("--resume", str(root / "split"), "--set", "train.steps=4")):
            r = _train_cli(*args)
            assert r.returncode == 0, r.stdout + r.stderr
        return root

    return make


def _write_noise_pngs(folder: Path, n: int, *, seed: int = 0, side: int = 40, name: str = "g{i}.png") -> Path:
    """``n`` random RGB PNGs of ``side`` px in ``folder`` (created): the smallest real image folder."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / name.format(i=i))
    return folder


@pytest.fixture
def noise_pngs():
    """The function ``noise_pngs(folder, n, seed=0, side=40, name="g{i}.png") -> folder``."""
    return _write_noise_pngs
