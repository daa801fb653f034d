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


def workspace_root() -> Path:
    """Folder that paths typed into the app must stay inside.

    ``$GALAXYGAN_WORKSPACE`` when set, else the current working directory; resolved (symlinks
    followed) so :func:`confine` compares real locations.
    """
    return Path(os.environ.get("GALAXYGAN_WORKSPACE") or os.getcwd()).expanduser().resolve()


def confine(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Path:
    """Resolve a user-supplied path and check that it lies inside the workspace.

    Parameters
    ----------
    path : str or path
        Absolute, or relative to the workspace root. ``~`` is expanded.
    root : path, optional
        The allowed root; default :func:`workspace_root`.

    Returns
    -------
    Path
        The resolved path (it need not exist).

    Raises
    ------
    GalaxyGanError
        The path is empty, or resolves (through ``..`` or a symbolic link) outside the root.
    """
    from galaxy_core.errors import GalaxyGanError

    root_p = workspace_root() if root is None else Path(root).expanduser().resolve()
    text = str(path).strip()
    if not text or "\x00" in text:
        raise GalaxyGanError("no path given: type a folder or file inside the workspace")
    p = Path(text).expanduser()
    resolved = (p if p.is_absolute() else root_p / p).resolve()
    if not resolved.is_relative_to(root_p):
        raise GalaxyGanError(f"{text}: outside the workspace {root_p}; use a path inside it "
                             "(or start the app with GALAXYGAN_WORKSPACE set to a folder that contains it)")
    return resolved


def check_output_stem(out: str | os.PathLike, what: str = "--out") -> Path:
    """``out`` as the stem of a set of output files (``OUT.png``, ``OUT.fits``; ``OUT.json`` +
    ``OUT.safetensors``), refused where it names a folder: ``sky/`` or an existing folder
    would otherwise give files named after the folder beside it (``sky.png``), not in it.

    Raises
    ------
    GalaxyGanError
        ``out`` ends in a path separator or is an existing folder.
    """
    from galaxy_core.errors import GalaxyGanError

    text = os.fspath(out)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise GalaxyGanError(f"{what} {text}: names a folder; give a file name without suffix, e.g. "
                             f"{Path(text) / 'my_output'} (the suffixes are added)")
    return Path(text)


def with_suffix_of(path: str | os.PathLike, suffix: str, known: tuple[str, ...]) -> Path:
    """``path`` with ``suffix`` added to its whole name, after removing one ending of ``known``.

    For file sets named by a stem (a checkpoint's ``.json`` + ``.safetensors``, a sky's
    ``.png`` + ``.fits`` + ``.csv``): ``run.v2`` -> ``run.v2.json`` (``Path.with_suffix`` would
    give ``run.json`` and let two names overwrite each other's files), ``run.v2.safetensors`` ->
    ``run.v2.json``. ``known`` endings are matched case-insensitively.
    """
    p = Path(path)
    name = p.name
    for end in known:
        if name.lower().endswith(end.lower()) and len(name) > len(end):
            name = name[: -len(end)]
            break
    return p.with_name(name + suffix)
