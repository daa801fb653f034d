"""Shared test setup: caches and runs go under test-output/, never the user's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
# Built-in datasets are deterministic, so a cache shared by the whole test session (and kept
# between local runs) is safe; set GALAXYGAN_CACHE yourself to point elsewhere.
os.environ.setdefault("GALAXYGAN_CACHE", str(OUTPUT / "cache"))
os.environ.setdefault("GALAXYGAN_RUNS", str(OUTPUT / "runs"))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Folder for artefacts a person may want to look at after the run (screenshots, grids)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
