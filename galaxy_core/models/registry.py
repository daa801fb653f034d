"""Registry from a config's ``arch`` name to the model family's config and networks.

A checkpoint's JSON names its ``arch`` and holds the config fields; loading rebuilds the
networks from them here, so nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from galaxy_core.errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    config_cls: type                       # dataclass of the family's hyper-parameters
    build_G: Callable[[Any], nn.Module]
    build_D: Callable[[Any], nn.Module]
    description: str = ""

    def sample_z(self, cfg, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents for ``n`` images: (n, z_dim) standard normal."""
        return torch.randn(n, cfg.z_dim, generator=generator)


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> None:
    _REGISTRY[spec.name] = spec


def get_arch(name: str) -> ArchSpec:
    _register_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"model.arch: unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


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
    if _REGISTRY:
        return
    from galaxy_core.models import dcgan

    register(ArchSpec("dcgan", dcgan.DCGANConfig, dcgan.Generator, dcgan.Discriminator,
                      "DCGAN, 100-d noise, transposed convolutions (Radford et al. 2016)"))
