"""Data sources (image folders, FITS, built-in ``hdf`` and ``sim``), transforms and the cache.

Every source is turned into a :class:`~galaxy_core.data.prepared.PreparedDataset`; use
:func:`load_dataset` to get one from a spec string.
"""

from galaxy_core.data.sources import BUILTIN, load_dataset

__all__ = ["BUILTIN", "load_dataset"]
