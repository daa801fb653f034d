"""Column look-up in user tables (galaxy_core/io/tables.py)."""

import pytest
from astropy.table import Table

from galaxy_core.errors import DataError
from galaxy_core.io.tables import column_name, with_column_names


def test_column_name_exact_first_then_ignoring_case():
    assert column_name(["x", "X", "Flux"], "x", where="t") == "x"
    assert column_name(["X", "Flux"], "x", where="t") == "X"
    assert column_name(["X", "Flux"], "flux", where="t") == "Flux"
    assert column_name(["X", "y_err"], "y", where="t") is None
    assert column_name(["Flux", "FLUX", "flux"], "flux", where="t") == "flux"  # exact: not ambiguous
    with pytest.raises(DataError, match=r"^cat\.fits: columns Flux and FLUX differ only in case, so which one is "
                                        r"flux is ambiguous; rename or remove all but one$"):
        column_name(["x", "Flux", "FLUX"], "flux", where="cat.fits")


def test_with_column_names_renames_a_copy():
    t = Table({"X": [1.0, 2.0], "FLUX": [3.0, 4.0], "other": [5, 6]})
    out = with_column_names(t, ("x", "y", "flux"), where="t")
    assert out.colnames == ["x", "flux", "other"]
    assert t.colnames == ["X", "FLUX", "other"]  # the table as read is left as it was
    assert out["x"].tolist() == [1.0, 2.0] and out["flux"].tolist() == [3.0, 4.0]
    same = Table({"x": [1.0]})
    assert with_column_names(same, ("x",), where="t") is same
