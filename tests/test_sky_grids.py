"""Sky grids: class thresholds, grid <-> catalogue round trip, tiles of the deep field."""

import numpy as np
import pytest
import torch

from galaxy_core.errors import DataError
from galaxy_core.sky.grids import (HEURISTIC_AREA, GridOptions, catalogue_to_grid, dihedral_xy, grid_to_catalogue,
                                   sample_cells, size_class, size_thresholds, tile_grids)


def test_terciles_and_heuristic_thresholds():
    sizes = np.arange(1, 10, dtype=float)  # 1..9: terciles at 11/3 and 19/3
    lo, hi = size_thresholds(sizes)
    assert lo == pytest.approx(1 + 8 / 3) and hi == pytest.approx(1 + 16 / 3)
    assert size_class(sizes, (lo, hi)).tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert size_thresholds(sizes, method="heuristic") == HEURISTIC_AREA
    assert size_class([79.9, 80, 299, 300], HEURISTIC_AREA).tolist() == [1, 2, 2, 3]


def test_terciles_that_leave_a_class_empty_are_refused():
    """Tied sizes: 8 of 11 equal puts both terciles on that value (no small, no medium); 4 of 9
    at the smallest size puts the lower one there (no small). Heuristic cuts are left alone."""
    tied = np.array([20.0] * 8 + [30.0, 40.0, 50.0])
    with pytest.raises(DataError, match=r"terciles of the 11 sizes are 20 and 20 pix2, so no galaxy would be small "
                                        r"or medium \(8 of the sizes are 20\); use --thresholds heuristic"):
        size_thresholds(tied)
    with pytest.raises(DataError, match=r"are 5 and 7\.33333 pix2, so no galaxy would be small \(4 of the sizes are 5\)"):
        size_thresholds([5.0, 5, 5, 5, 6, 7, 8, 9, 10])
    assert size_thresholds(tied, allow_empty=True) == (20.0, 20.0)  # occupancy grids only record them
    assert size_thresholds(tied, method="heuristic") == HEURISTIC_AREA


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


# --------------------------------------------------------------------------- bad user catalogues


def _catalogue_csv(path, extra_rows=(), at=3, n=40):
    """A good 40-source catalogue of a 300 px field with ``extra_rows`` inserted as data row ``at + 1``."""
    rng = np.random.default_rng(0)
    rows = [f"{x:.2f},{y:.2f},{s:.1f}" for x, y, s in zip(rng.uniform(0, 299, n), rng.uniform(0, 299, n),
                                                          rng.uniform(5, 50, n))]
    rows[at:at] = list(extra_rows)
    path.write_text("x,y,size\n" + "\n".join(rows) + "\n")
    return path


def _grids_error(args, capsys):
    from galaxy_core.cli import main

    assert main(["sky", "grids", *args, "--grid", "16", "--count", "4"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err


@pytest.mark.parametrize("row, words", [
    ("100,,40", ["y", "blank or missing", "data row 4"]),
    ("100,40", ["size", "blank or missing", "data row 4"]),
    ("abc,5,40", ["x", "not a number", "data row 4", "'abc'"]),
    ("nan,5,40", ["x", "not finite", "data row 4"]),
    ("10,inf,40", ["y", "not finite", "data row 4"]),
    ("-5,5,40", ["x = -5", "negative", "data row 4"]),
    ("5,-7,40", ["y = -7", "negative", "data row 4"]),
    ("5,5,-40", ["size = -40", "positive", "data row 4"]),
    ("1e12,5,40", ["x = 1e+12", "far beyond", "data row 4"]),
])
def test_bad_catalogue_rows_are_named(tmp_path, capsys, row, words):
    cat = _catalogue_csv(tmp_path / "cat.csv", [row])
    err = _grids_error(["--catalogue", str(cat), "--out", str(tmp_path / "g")], capsys)
    assert f"error: {cat}: " in err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "g").exists()  # nothing written


def test_catalogue_of_equal_sizes_names_the_file_and_the_way_out(tmp_path, capsys):
    from galaxy_core.cli import main

    cat = tmp_path / "tied.csv"  # 40 sources, 30 of them 20 pix2: both terciles are 20
    rng = np.random.default_rng(0)
    sizes = [20.0] * 30 + list(rng.uniform(30, 60, 10))
    cat.write_text("x,y,size\n" + "\n".join(f"{x:.2f},{y:.2f},{s:.1f}" for x, y, s in
                                             zip(rng.uniform(0, 299, 40), rng.uniform(0, 299, 40), sizes)) + "\n")
    err = _grids_error(["--catalogue", str(cat), "--out", str(tmp_path / "g")], capsys)
    assert f"error: {cat}: size thresholds: " in err and "no galaxy would be small or medium" in err, err
    assert "(30 of the sizes are 20)" in err and "--thresholds heuristic" in err
    assert not (tmp_path / "g").exists()
    for way_out in (["--thresholds", "heuristic"], ["--occupancy"]):
        assert main(["sky", "grids", "--catalogue", str(cat), "--out", str(tmp_path / "g"), "--grid", "16",
                     "--count", "4", *way_out]) == 0


def test_catalogue_column_names_are_matched_without_regard_to_case(tmp_path):
    """A FITS table's X, Y, SIZE read as x, y, size; an exact name wins over one differing in
    case; two names differing only in case, neither exact, are refused."""
    from astropy.table import Table

    from galaxy_core.sky.grids import read_catalogue

    cols = {"X": [10.0, 200.0, 120.0, 60.0], "Y": [5.0, 150.0, 290.0, 80.0], "SIZE": [60.0, 80.0, 100.0, 70.0]}
    Table(cols).write(tmp_path / "upper.fits")
    cat = read_catalogue(tmp_path / "upper.fits")
    np.testing.assert_array_equal(cat["x"], cols["X"])
    np.testing.assert_array_equal(cat["area"], cols["SIZE"])
    assert cat["shape"] == (291, 201)
    both = tmp_path / "both.csv"  # x is exact; X (a stray copy, far off) is not used
    both.write_text("x,X,Y,Area\n10,9999,5,60\n200,9999,150,80\n120,9999,290,100\n60,9999,80,70\n")
    cat = read_catalogue(both)
    assert cat["x"].tolist() == cols["X"] and cat["area"].tolist() == cols["SIZE"]
    twice = tmp_path / "twice.csv"
    twice.write_text("x,y,Size,SIZE\n10,5,60,61\n200,150,80,81\n")
    with pytest.raises(DataError, match=r"twice\.csv: columns Size and SIZE differ only in case, so which one is "
                                        r"size is ambiguous"):
        read_catalogue(twice)


def test_read_catalogue_keeps_good_rows_and_finds_far_offsets(tmp_path):
    from galaxy_core.errors import DataError
    from galaxy_core.sky.grids import read_catalogue

    cat = read_catalogue(_catalogue_csv(tmp_path / "ok.csv"))
    assert len(cat["x"]) == 40 and cat["shape"][0] <= 300 and cat["shape"][1] <= 300
    assert np.isfinite(cat["x"]).all() and (cat["area"] >= 5).all()
    shifted = tmp_path / "shifted.csv"  # positions in another frame: 5000..5300 px
    shifted.write_text("x,y,size\n" + "\n".join(f"{5000 + 7 * i},{7 * i},20" for i in range(40)) + "\n")
    with pytest.raises(DataError, match=r"shifted\.csv: no source has x below 5000.*subtract the offset"):
        read_catalogue(shifted)


def test_empty_and_header_only_catalogues(tmp_path, capsys):
    from astropy.table import Table

    head = tmp_path / "head.csv"
    head.write_text("x,y,size\n")
    err = _grids_error(["--catalogue", str(head), "--out", str(tmp_path / "g")], capsys)
    assert f"{head}: the catalogue has no rows" in err
    empty = tmp_path / "empty.fits"
    Table({"x": np.zeros(0), "y": np.zeros(0), "area": np.zeros(0)}).write(empty)
    err = _grids_error(["--catalogue", str(empty), "--out", str(tmp_path / "g")], capsys)
    assert f"{empty}: the catalogue has no rows" in err


def test_fits_catalogue_with_text_or_not_fits(tmp_path, capsys):
    from astropy.table import Table

    text = tmp_path / "text.fits"
    Table({"x": np.array(["a", "10"]), "y": [1.0, 2.0], "area": [3.0, 4.0]}).write(text)
    err = _grids_error(["--catalogue", str(text), "--out", str(tmp_path / "g")], capsys)
    assert f"{text}: x is not a number in data row 1 ('a')" in err
    bad = tmp_path / "bad.fits"
    bad.write_text("x,y,size\n1,2,3\n")
    err = _grids_error(["--catalogue", str(bad), "--out", str(tmp_path / "g")], capsys)
    assert f"{bad}: cannot read as a FITS table" in err and "Format" not in err and "ascii" not in err
    err = _grids_error(["--catalogue", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "g")], capsys)
    assert f"{tmp_path / 'missing.csv'}: no such catalogue file" in err


def test_grids_from_a_bad_or_missing_image(tmp_path, capsys):
    from PIL import Image

    good = tmp_path / "sky.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    err = _grids_error(["--image", str(cut), "--out", str(tmp_path / "g")], capsys)
    assert f"{cut}: cannot read the image" in err and "truncated" in err
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert f"{junk}: cannot read the image" in _grids_error(["--image", str(junk), "--out", str(tmp_path / "g")],
                                                            capsys)
    gone = tmp_path / "gone.jpg"
    assert f"{gone}: no such image file" in _grids_error(["--image", str(gone), "--out", str(tmp_path / "g")], capsys)
    assert not (tmp_path / "g").exists()


def test_catalogue_smaller_than_a_tile_names_the_file(tmp_path, capsys):
    from galaxy_core.cli import main

    cat = _catalogue_csv(tmp_path / "small.csv")  # a 300 px field: 32 cells of 16 px do not fit
    assert main(["sky", "grids", "--catalogue", str(cat), "--out", str(tmp_path / "g"), "--count", "4"]) == 2
    err = capsys.readouterr().err
    assert f"error: {cat}: grid tiles of 512 px" in err and "Traceback" not in err
    assert not (tmp_path / "g").exists()
