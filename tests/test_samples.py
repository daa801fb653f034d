"""Sample sizes: errors before any work, warnings below the feature dimension."""

from __future__ import annotations

import subprocess
import sys

import pytest

from galaxy_core.errors import ConfigError
from galaxy_core.metrics.samples import check_sample_size, feature_dimension, sample_size_warnings
from galaxy_core.paths import checkpoints_dir


@pytest.mark.parametrize("n", [1, 0, -5])
def test_too_small_counts_are_config_errors(n):
    with pytest.raises(ConfigError, match=rf"-n {n}: need at least 2 samples.*use -n 500"):
        check_sample_size(n)


def test_range_and_type():
    assert check_sample_size(2) == 2 and check_sample_size(64.0, option="--queries", minimum=1, maximum=64) == 64
    with pytest.raises(ConfigError, match="--queries 65: at most 64"):
        check_sample_size(65, option="--queries", minimum=1, maximum=64)
    with pytest.raises(ConfigError, match="whole number"):
        check_sample_size(2.5)


def test_warnings_below_the_feature_dimension_and_for_small_data():
    assert feature_dimension("galaxy", num_bands=3) == 128 and feature_dimension("pix8", num_bands=3) == 192
    w = sample_size_warnings(100, n_real=100, extractors=("galaxy", "pix8"), num_bands=3, data_name="hdf")
    assert len(w) == 2 and "fewer than the 128 dimensions" in w[0] and "192 dimensions of the pix8" in w[1]
    assert sample_size_warnings(500, n_real=500, extractors=("galaxy",), num_bands=3, data_name="hdf") == []
    w = sample_size_warnings(500, n_real=191, extractors=("galaxy",), num_bands=1, data_name="hdf")
    assert len(w) == 1 and "room for only 191 real images" in w[0]  # 191 >= 128: no dimension warning


@pytest.mark.parametrize("n", ["1", "0", "-5"])
def test_cli_gives_one_line_errors(n, tmp_path):
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "evaluate", str(checkpoints_dir() / "dcgan_hdf32.json"),
                        "--report", str(tmp_path / "r"), "-n", n], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"galaxygan: error: -n {n}: need at least 2 samples (a covariance and KID "
                                             "need 2 per set; 500 or more give stable values); use -n 500"]
    assert not (tmp_path / "r").exists()  # nothing was started
