"""Exceptions with messages meant for users: each names the file or key and what to do."""


class GalaxyGanError(Exception):
    """Base class for every error the project raises on purpose."""


class DataError(GalaxyGanError):
    """A data file or folder cannot be used (unreadable, empty, no image data, ...)."""


class ConfigError(GalaxyGanError):
    """A configuration file or override has an unknown key or an impossible value."""


class CheckpointError(GalaxyGanError):
    """A checkpoint is missing, incomplete or incompatible with this version."""
