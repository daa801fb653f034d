"""Columns of user tables (CSV, FITS) found by name, whatever their case.

FITS tables conventionally name their columns in upper case (``X``, ``Y``, ``FLUX``; the
standard's ``TTYPEn`` values are compared without regard to case), CSV files from other tools
use any case, and the project names its own columns in lower case. A column is therefore found
by its exact name first and otherwise by the one column whose name equals it ignoring case; two
or more such columns (``Flux`` and ``FLUX``, with no ``flux``) are an error, since either could
be meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from galaxy_core.errors import DataError

__all__ = ["column_name", "with_column_names"]


def column_name(colnames: Iterable[str], name: str, *, where: str) -> str | None:
    """The column of a table that is column ``name``.

    Parameters
    ----------
    colnames : iterable of str
        The table's column names.
    name : str
        The name looked for.
    where : str
        The table, for the message (e.g. ``"sky.fits: the TRUTH table"``).

    Returns
    -------
    str or None
        ``name`` itself when the table has it, else the one column equal to it ignoring case,
        else None.

    Raises
    ------
    DataError
        No exact match and several columns equal to ``name`` ignoring case.
    """
    colnames = list(colnames)
    if name in colnames:
        return name
    found = [c for c in colnames if c.casefold() == name.casefold()]
    if len(found) > 1:
        raise DataError(f"{where}: columns {' and '.join(found)} differ only in case, so which one is {name} is "
                        f"ambiguous; rename or remove all but one")
    return found[0] if found else None


def with_column_names(table, names: Sequence[str], *, where: str):
    """``table`` with each column found by :func:`column_name` renamed to its name in ``names``.

    Parameters
    ----------
    table : astropy.table.Table
        The table as read; it is not changed (the result shares its data).
    names : sequence of str
        The names the caller uses (lower case in this project); those the table lacks are
        simply not there, for the caller to report.
    where : str
        The table, for the message.

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    DataError
        A name matched by several columns differing only in case (see :func:`column_name`).
    """
    from astropy.table import Table

    found = {name: column_name(table.colnames, name, where=where) for name in names}
    renames = {col: name for name, col in found.items() if col is not None and col != name}
    if not renames:
        return table
    out = Table(table, copy=False)
    out.rename_columns(list(renames), list(renames.values()))
    return out
