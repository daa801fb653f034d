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


_CHECKPOINT_ENDINGS = (".json", ".safetensors")


def checkpoint_candidates(name: str | os.PathLike) -> list[Path]:
    """Where a checkpoint given as ``name`` is looked for, in order.

    ``name`` is ``NAME``, ``NAME.json`` or ``NAME.safetensors``, with or without folders. An
    absolute path is only itself; a relative one is looked for from the working folder, then
    from the repository (so ``checkpoints/NAME.json`` works from anywhere), then in the shipped
    checkpoints folder (:func:`checkpoints_dir`; so a bare ``NAME`` names a shipped checkpoint).
    """
    p = Path(name).expanduser()
    if p.is_absolute():
        return [p]
    out: list[Path] = []
    for c in (p, REPO_ROOT / p, checkpoints_dir() / p):
        if c not in out:
            out.append(c)
    return out


def find_checkpoint(name: str | os.PathLike) -> Path | None:
    """The first of :func:`checkpoint_candidates` whose model card ``NAME.json`` is there, or None."""
    for c in checkpoint_candidates(name):
        if with_suffix_of(c, ".json", _CHECKPOINT_ENDINGS).exists():
            return c
    return None


def closest_shipped_checkpoint(name: str | os.PathLike) -> str | None:
    """The shipped checkpoint whose name is closest to ``name``'s (``checkpoints/NAME.json``,
    as a path from the repository where it lies in it), or None when none is close."""
    from difflib import get_close_matches

    shipped = {c.stem: c for c in sorted(checkpoints_dir().glob("*.json"))}
    match = get_close_matches(with_suffix_of(Path(name), "", _CHECKPOINT_ENDINGS).name, list(shipped), n=1)
    if not match:
        return None
    c = shipped[match[0]]
    return str(c.relative_to(REPO_ROOT)) if c.is_relative_to(REPO_ROOT) else str(c)


def resolve_checkpoint(name: str | os.PathLike) -> Path:
    """A checkpoint given on the command line, found as :func:`find_checkpoint` finds it.

    Parameters
    ----------
    name : str or path
        ``NAME``, ``NAME.json`` or ``NAME.safetensors``: a path, or the name of a shipped
        checkpoint (``dcgan_hdf32``).

    Returns
    -------
    Path
        ``name`` itself where it is there from the working folder (unchanged, so a path the
        user gave is recorded as given), else where it was found.

    Raises
    ------
    CheckpointError
        Nothing of that name in any place looked at; the message lists the model cards looked
        for and the closest shipped name.
    """
    from galaxy_core.errors import CheckpointError

    found = find_checkpoint(name)
    if found is not None:
        return found
    tried = ", ".join(str(with_suffix_of(c.absolute(), ".json", _CHECKPOINT_ENDINGS))
                      for c in checkpoint_candidates(name))
    close = closest_shipped_checkpoint(name)
    raise CheckpointError(f"{name}: no such checkpoint (looked for {tried}); give a model card NAME.json with its "
                          f"NAME.safetensors, or the name of a checkpoint in {checkpoints_dir()}"
                          + (f"; did you mean {close!r}?" if close else ""))


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
