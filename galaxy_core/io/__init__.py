"""File formats: atomic writes, FITS, stretches, PNG grids and RGB rendering."""
