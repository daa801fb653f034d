"""Strict JSON out (galaxy_core/io/atomic.py): non-finite floats are written as null."""

import json
import math

import numpy as np
import pytest

from galaxy_core.io.atomic import atomic_write_json, json_safe, json_text


def strict_loads(text: str):
    """``json.loads`` that refuses the NaN / Infinity tokens Python's json accepts by default."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON: {text!r}"))


def test_json_text_writes_non_finite_floats_as_null():
    obj = {"completeness": math.nan, "purity": np.float32("inf"), "ok": 0.5, "n": np.int64(3),
           "curve": np.array([1.0, np.nan, -np.inf]), "pair": (np.bool_(True), None), "name": "x"}
    assert strict_loads(json_text(obj)) == {"completeness": None, "purity": None, "ok": 0.5, "n": 3,
                                            "curve": [1.0, None, None], "pair": [True, None], "name": "x"}
    assert json_safe([float("-inf"), 2]) == [None, 2]
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        json_text({"a": object()})
    assert strict_loads(json_text({"t": object()}, default=str))["t"].startswith("<object")


def test_atomic_write_json_is_strict(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"realism": math.nan, "values": [math.inf, 1.5]})
    text = (tmp_path / "r.json").read_text()
    assert strict_loads(text) == {"realism": None, "values": [None, 1.5]} and text.endswith("}\n")


def test_png_record_is_strict_json():
    from galaxy_core.explore.export import png_with_record, read_png_record

    png = png_with_record(np.zeros((4, 4, 3), np.uint8), {"psi": math.nan, "seed": 1})
    assert read_png_record(png) == {"psi": None, "seed": 1, "display_scale": 1}
