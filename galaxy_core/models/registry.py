"""Registry from a config's ``arch`` name to its model family (:class:`~galaxy_core.models.family.Family`).

A checkpoint's JSON names its ``arch`` and holds the config fields; loading rebuilds the
networks from them here, so nothing is ever unpickled. The built-in families are always
registered, whatever else has been registered before or after them.

Families from outside the package are registered by calling :func:`register`, or, so that
``galaxygan`` and the app see them too, by naming the modules that call it: the entry-point
group ``galaxy_core.families`` of an installed package, or ``GALAXYGAN_FAMILIES`` (module names
separated by commas, importable from ``PYTHONPATH``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from importlib.metadata import entry_points
from typing import Any

from galaxy_core.errors import ConfigError
from galaxy_core.models.family import Family

ArchSpec = Family  # the name used before families had objectives

_REGISTRY: dict[str, Family] = {}
_BUILTINS_DONE = False


def register(family: Family) -> Family:
    """Register a family instance under ``family.name`` (replacing one of the same name)."""
    if not isinstance(family, Family) or not family.name:
        raise ConfigError(f"register: expected a named Family instance, got {family!r}")
    if not dataclasses.is_dataclass(family.config_cls):
        raise ConfigError(f"register: {family.name}.config_cls must be a dataclass")
    _register_builtin()
    _REGISTRY[family.name] = family
    return family


def get_arch(name: str) -> Family:
    _register_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"model.arch: unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


get_family = get_arch


def known_archs() -> list[str]:
    _register_builtin()
    return sorted(_REGISTRY)


def make_config(arch: str, values: dict) -> Any:
    """Build the family's config dataclass from a dict, naming any unknown or bad key."""
    spec = get_arch(arch)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"model: unknown key(s) {', '.join(unknown)} for arch {arch!r}; known: {', '.join(sorted(fields))}")
    try:
        return spec.config_cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e


def _register_builtin() -> None:
    global _BUILTINS_DONE
    if _BUILTINS_DONE:
        return
    _BUILTINS_DONE = True
    from galaxy_core.models import began, dcgan, fastgan, positions, stackgan, stylegan

    for family in (dcgan.DCGANFamily(), stylegan.StyleGANFamily(), fastgan.FastGANFamily(),
                   stackgan.StackGANFamily(), positions.PositionsFamily(), began.BEGANFamily(),
                   began.BEGANCondFamily()):
        _REGISTRY.setdefault(family.name, family)
    _load_plugins()


def _load_plugins() -> None:
    """Import the modules that register outside families (see module docstring)."""
    names = [n.strip() for n in os.environ.get("GALAXYGAN_FAMILIES", "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"GALAXYGAN_FAMILIES: cannot import {name!r} ({e})") from e
    for ep in entry_points(group="galaxy_core.families"):
        ep.load()
