"""Model families (one file each) and the registry that builds them from a config."""

from galaxy_core.models.registry import ArchSpec, get_arch, known_archs, make_config

__all__ = ["ArchSpec", "get_arch", "known_archs", "make_config"]
