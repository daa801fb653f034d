"""File formats: atomic writes, FITS, user table columns, stretches, PNG grids and RGB rendering."""
