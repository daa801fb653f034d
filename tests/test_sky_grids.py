"""Sky grids: class thresholds, grid <-> catalogue round trip, tiles of the deep field."""

import numpy as np
import pytest
import torch

from galaxy_core.sky.grids import (HEURISTIC_AREA, GridOptions, catalogue_to_grid, dihedral_xy, grid_to_catalogue,
                                   sample_cells, size_class, size_thresholds, tile_grids)


def test_terciles_and_heuristic_thresholds():
    sizes = np.arange(1, 10, dtype=float)  # 1..9: terciles at 11/3 and 19/3
    lo, hi = size_thresholds(sizes)
    assert lo == pytest.approx(1 + 8 / 3) and hi == pytest.approx(1 + 16 / 3)
    assert size_class(sizes, (lo, hi)).tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert size_thresholds(sizes, method="heuristic") == HEURISTIC_AREA
    assert size_class([79.9, 80, 299, 300], HEURISTIC_AREA).tolist() == [1, 2, 2, 3]


def test_catalogue_to_grid_by_hand():
    # cell_px 10: x=0 -> col 0; x=9.4 -> col 0; x=9.6 -> col 1 (cell edges at -0.5 + 10 k)
    g = catalogue_to_grid([0, 9.4, 9.6, 25, 25, 100], [0, 0, 0, 12, 13, 0], [1, 2, 1, 1, 3, 2], grid=4, cell_px=10)
    expect = np.zeros((4, 4), np.uint8)
    expect[0, 0] = 2  # two galaxies in one cell: the larger class
    expect[0, 1] = 1
    expect[1, 2] = 3
    np.testing.assert_array_equal(g, expect)  # x=100 is outside the 40 px sky


def test_grid_catalogue_round_trip():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 4, (8, 8)) * (rng.random((8, 8)) < 0.3)
    cat = grid_to_catalogue(cells, cell_px=16)
    assert len(cat["x"]) == int((cells > 0).sum())
    np.testing.assert_allclose(cat["x"], (cat["col"] + 0.5) * 16 - 0.5)  # cell centres
    np.testing.assert_array_equal(catalogue_to_grid(cat["x"], cat["y"], cat["cls"], grid=8, cell_px=16), cells)
    jit = grid_to_catalogue(cells, cell_px=16, jitter=0.5, rng=rng)
    assert np.all(np.abs(jit["x"] - cat["x"]) <= 8) and np.all(np.abs(jit["y"] - cat["y"]) <= 8)
    np.testing.assert_array_equal(catalogue_to_grid(jit["x"], jit["y"], jit["cls"], grid=8, cell_px=16), cells)


def test_dihedral_maps_the_tile_onto_itself():
    x, y = np.array([0.0, 9.0, 3.0]), np.array([0.0, 0.0, 7.0])
    seen = set()
    for k in range(8):
        u, v = dihedral_xy(x, y, k, 10)
        assert np.all((u >= 0) & (u <= 9) & (v >= 0) & (v <= 9))
        seen.add(tuple(np.round(np.r_[u, v], 6)))
    assert len(seen) == 8
    u, v = dihedral_xy(np.array([9.0]), np.array([0.0]), 1, 10)  # a quarter turn moves a corner to a corner
    assert (u[0], v[0]) in {(0.0, 0.0), (9.0, 9.0), (0.0, 9.0)}


def test_tile_grids_counts_and_classes():
    src = {"x": np.array([5.0, 20.0, 35.0]), "y": np.array([5.0, 20.0, 35.0]), "area": np.array([10.0, 20.0, 30.0]),
           "shape": (40, 40)}
    grids, info = tile_grids(src, GridOptions(grid=4, cell_px=10, count=16, seed=0))
    assert grids.shape == (16, 1, 4, 4) and grids.dtype == np.uint8
    # the tile is the whole field: every grid holds all three galaxies, classes 1, 2, 3
    assert all(sorted(g[g > 0].tolist()) == [1, 2, 3] for g in grids[:, 0])
    occ, _ = tile_grids(src, GridOptions(grid=4, cell_px=10, count=4, classes=False))
    assert set(np.unique(occ)) == {0, 1} and info["mean_occupied"] == 3


def test_sample_cells_argmax_and_draw():
    p = np.zeros((1, 3, 2, 2))
    p[0, 2, 0, 0] = p[0, 1, 0, 1] = p[0, 0, 1] = 1.0
    x = 2 * p - 1
    np.testing.assert_array_equal(sample_cells(x)[0], [[2, 1], [0, 0]])
    np.testing.assert_array_equal(sample_cells(x, mode="sample", rng=np.random.default_rng(0))[0], [[2, 1], [0, 0]])
    half = np.full((1, 2, 50, 50), 0.0)  # p = 0.5 each: about half the cells occupied
    frac = sample_cells(half, mode="sample", rng=np.random.default_rng(1)).mean()
    assert 0.45 < frac < 0.55


def test_position_output_is_displayed_as_drawn_cells():
    """A position model's class probabilities are shown as the composer draws them: a class per
    cell in the grid palette. A model whose every cell is occupied with probability 0.12 (what a
    model trained on drawn cells gives) shows about 12 % coloured cells, not a flat map and not
    the empty grid its argmax is."""
    from galaxy_core.io.render import GRID_PALETTE, to_rgb
    from galaxy_core.train.kinds import GridKind

    p = np.zeros((2, 4, 64, 64))
    p[:, 0], p[:, 1], p[:, 2], p[:, 3] = 0.88, 0.06, 0.04, 0.02
    x = 2 * p - 1
    channels = ["class0", "class1", "class2", "class3"]
    rgb = to_rgb(x, channels)
    assert rgb.shape == (2, 64, 64, 3) and rgb.dtype == np.uint8
    colours = {tuple(c): k for k, c in enumerate(GRID_PALETTE[:4])}
    cls = np.vectorize(lambda r, g, b: colours[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    freq = np.bincount(cls.ravel(), minlength=4) / cls.size
    np.testing.assert_allclose(freq, [0.88, 0.06, 0.04, 0.02], atol=0.015)
    np.testing.assert_array_equal(to_rgb(x, channels), rgb)  # the same output always shows the same grid
    np.testing.assert_array_equal(to_rgb(x[0], channels), rgb[0])
    assert not sample_cells(x).any()  # its argmax: every cell empty
    # the sample grids written during training: the same draw, four pixels per cell
    shown = GridKind.__new__(GridKind).render(torch.as_tensor(x, dtype=torch.float32))
    assert shown.shape[0] >= 4 * 64 and 0.08 < (shown.max(axis=-1) > 0).mean() < 0.16
    # image channels are not grids
    grey = to_rgb(np.zeros((1, 3, 8, 8)), ["R", "G", "B"])
    assert (grey == 128).all() or (grey == 127).all()
