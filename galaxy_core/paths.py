"""Where the project keeps caches, runs and shipped checkpoints.

Every location can be overridden by an environment variable so tests, CI and users with
unusual setups never write inside the installed package.

========================  ==================================  ==============================
variable                  default                             holds
========================  ==================================  ==============================
``GALAXYGAN_CACHE``       ``$XDG_CACHE_HOME/galaxygan``       built-in datasets, prepared
                          (``~/.cache/galaxygan``)            data, reference statistics
``GALAXYGAN_RUNS``        ``./runs``                          training run folders
``GALAXYGAN_CHECKPOINTS`` ``<repository>/checkpoints``        shipped pretrained models
========================  ==================================  ==============================
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Root of the on-disk cache (created on demand)."""
    env = os.environ.get("GALAXYGAN_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "galaxygan"
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_dir() -> Path:
    """Folder that holds one sub-folder per training run (created on demand)."""
    root = Path(os.environ.get("GALAXYGAN_RUNS", "runs"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def checkpoints_dir() -> Path:
    """Folder of the shipped pretrained checkpoints."""
    return Path(os.environ.get("GALAXYGAN_CHECKPOINTS", REPO_ROOT / "checkpoints"))


def configs_dir() -> Path:
    """Folder of the example training configs."""
    return REPO_ROOT / "configs"
