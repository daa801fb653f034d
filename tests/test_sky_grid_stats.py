"""Grid statistics of position models: hand-computed values, independent and clumped cells,
and the ``galaxygan sky grid-stats`` command on a shipped position model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from galaxy_core.sky.grids import grid_statistics

ROOT = Path(__file__).resolve().parents[1]


def test_grid_statistics_hand_computed():
    g = np.zeros((1, 4, 4), int)
    g[0, 0, 0], g[0, 0, 1], g[0, 3, 3] = 1, 2, 3
    s = grid_statistics(g, blocks=(2,))
    assert s["occupancy"] == pytest.approx(3 / 16)
    assert s["class_fractions"] == pytest.approx([13 / 16, 1 / 16, 1 / 16, 1 / 16])
    # 2x2 block counts 2, 0, 0, 1: mean 0.75, variance 1.25 - 0.5625
    assert s["var_over_mean"][2] == pytest.approx((1.25 - 0.75**2) / 0.75)
    assert s["neighbour_fraction"] == pytest.approx(2 / 3)  # the two adjacent cells, not the corner one
    # independent cells: corner cells have 3 neighbours, edge cells 5, inner cells 8
    m = np.array([3, 5, 5, 3, 5, 8, 8, 5, 5, 8, 8, 5, 3, 5, 5, 3])
    assert s["independent"]["neighbour_fraction"] == pytest.approx(np.mean(1 - (13 / 16) ** m))
    assert s["independent"]["var_over_mean"] == pytest.approx(13 / 16)


def test_independent_cells_match_their_expectation():
    rng = np.random.default_rng(3)
    s = grid_statistics((rng.random((400, 32, 32)) < 0.12).astype(int))
    for b, v in s["var_over_mean"].items():
        assert v == pytest.approx(s["independent"]["var_over_mean"], abs=0.03), b
    assert s["neighbour_fraction"] == pytest.approx(s["independent"]["neighbour_fraction"], abs=0.015)


def test_clumped_cells_are_flagged_as_clustered():
    rng = np.random.default_rng(4)
    seeds = rng.random((200, 16, 16)) < 0.04  # clump centres on a 16 x 16 grid of 2 x 2 clumps
    g = np.kron(seeds, np.ones((2, 2), int)).astype(int)  # (200, 32, 32), every galaxy in a 2 x 2 clump
    s = grid_statistics(g)
    assert s["neighbour_fraction"] == 1.0
    assert s["var_over_mean"][2] > 3 * s["independent"]["var_over_mean"]


@pytest.mark.parametrize("bad, blocks", [(np.zeros((4, 4)), (2,)), (np.zeros((2, 4, 6)), (2,)),
                                         (np.zeros((0, 4, 4)), (2,)), (np.zeros((1, 6, 6)), (4,))])
def test_grid_statistics_rejects_bad_input(bad, blocks):
    with pytest.raises(ValueError, match="grid_statistics"):
        grid_statistics(bad.astype(int), blocks=blocks)


def test_grid_stats_command_on_a_shipped_position_model(tmp_path):
    out = tmp_path / "stats.json"
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "sky", "grid-stats",
                        "checkpoints/positions_hdf_uncond.json", "--n", "24", "--match-classes", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "var/mean of counts in 8x8 blocks" in r.stdout
    s = json.loads(out.read_text())
    assert s["model"]["n"] == 24 and s["data"]["n"] == 1024
    # thinned to the data's occupancy (the composer's default), within the grid-to-grid spread
    assert s["model"]["occupancy"] == pytest.approx(s["data"]["occupancy"], abs=0.01)
    assert s["data"]["occupancy"] == pytest.approx(0.122, abs=0.002)
    assert 0 <= s["grid_distance"] < 1.0 and "distance from the data" in r.stdout


def test_grid_stats_command_refuses_a_galaxy_model():
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "sky", "grid-stats", "checkpoints/dcgan_hdf32.json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "dcgan_hdf32.json" in r.stderr and "not a position model" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name, limit", [("positions_hdf_cond", 0.2), ("positions_hdf_uncond", 0.15)])
def test_shipped_position_models_draw_grids_like_the_data(name, limit):
    """Drawn per cell, as the composer draws them, the shipped models' grids have the data's
    occupancy and a small grid distance (the first models, trained on soft maps: 0.75 and 1.9)."""
    from galaxy_core.sky.grids import catalogue_grids
    from galaxy_core.sky.compose import ModelPositions
    from galaxy_core.sky.pipeline import load_model
    from galaxy_core.sky.grids import grid_distance

    model = load_model(ROOT / "checkpoints" / f"{name}.json")
    assert model.meta["model"]["sampled_cells"] is True
    data = grid_statistics(np.asarray(catalogue_grids(classes=model.model_cfg.num_classes > 2)))
    positions = ModelPositions(model)
    s = grid_statistics(np.stack([positions(np.random.default_rng([9, i])) for i in range(128)]))
    assert s["occupancy"] == pytest.approx(data["occupancy"], abs=0.01)
    assert grid_distance(s, data) < limit
