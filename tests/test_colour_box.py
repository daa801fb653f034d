"""Reading the colour-magnitude box fraction against the real fraction."""

from __future__ import annotations

import math

import pytest

from galaxy_core.metrics.colour_box import BOX_NSIGMA, read_box_fraction


def test_far_above_real_is_too_narrow():
    r = read_box_fraction(0.98, 0.80, n_generated=200, n_real=200)
    pooled = 0.89
    assert r["z"] == pytest.approx(0.18 / math.sqrt(pooled * (1 - pooled) * (2 / 200)))
    assert r["reading"] == "too narrow" and "too narrow" in r["sentence"] and "98%" in r["sentence"]


def test_far_below_and_consistent():
    assert read_box_fraction(0.40, 0.80, n_generated=200, n_real=200)["reading"] == "too broad or offset"
    r = read_box_fraction(0.82, 0.80, n_generated=200, n_real=200)
    assert r["reading"] == "consistent" and r["difference"] == pytest.approx(0.02)
    assert read_box_fraction(1.0, 0.8, n_generated=10, n_real=10)["reading"] == "consistent"  # too few to tell
    assert BOX_NSIGMA == 1.75


def test_errors():
    with pytest.raises(ValueError, match="need galaxies"):
        read_box_fraction(0.5, 0.5, n_generated=0, n_real=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        read_box_fraction(1.5, 0.5, n_generated=3, n_real=3)
