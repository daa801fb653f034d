"""``galaxygan sky``: grids from a user catalogue, and compose from a config to PNG/FITS/CSV."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galaxy_core.cli import main
from galaxy_core.data.prepared import open_prepared


def test_sky_grids_from_a_csv_catalogue(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Table({"x": rng.uniform(0, 299, 40), "y": rng.uniform(0, 299, 40), "size": rng.uniform(5, 50, 40)}).write(
        tmp_path / "cat.csv", format="ascii.csv")
    assert main(["sky", "grids", "--catalogue", str(tmp_path / "cat.csv"), "--out", str(tmp_path / "g"),
                 "--grid", "16", "--cell-px", "16", "--count", "8"]) == 0
    ds = open_prepared(tmp_path / "g")
    assert ds.images.shape == (8, 1, 16, 16) and ds.manifest["num_classes"] == 4
    assert "8 grids of 16 x 16 cells" in capsys.readouterr().out


def test_sky_compose_writes_png_fits_csv_and_reports(tmp_path, capsys):
    cfg = tmp_path / "sky.toml"
    cfg.write_text('[sky]\nheight = 256\nwidth = 256\npositions = "random"\ngalaxies = "stamps"\n'
                   f'out = "{tmp_path / "s"}"\nrealism = false\n')
    assert main(["sky", "compose", "--config", str(cfg), "--seed", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    truth = Table.read(tmp_path / "s.csv")
    assert report["n_galaxies"] > 0 and 0 <= report["completeness"] <= 1
    # the default composer adds the faint sources (truth cls -1), which completeness leaves out
    assert report["n_faint"] == int((truth["cls"] == -1).sum()) > 0
    assert report["n_galaxies"] + report["n_faint"] == len(truth) and report["n_truth"] == report["n_galaxies"]
    with fits.open(tmp_path / "s.fits") as h:
        assert h[0].data.shape == (3, 256, 256) and len(h["TRUTH"].data) == len(truth)
        hdr = h[0].header  # every composer option is in the header, the seed as given on the command line
        assert hdr["SKY SEED"] == 2 and hdr["SKY POSITIONS"] == "random" and hdr["SKY GALAXIES"] == "stamps"
        assert hdr["SKY FAINT"] is True and hdr["SKY HEIGHT"] == 256 and hdr["SKY SIZE_MATCH"] is False
        assert hdr["ROWORDER"] == "top-down"
        # every truth column says what it is; positions in pix, field-unit fluxes say so (no physical unit)
        table, th = Table.read(h["TRUTH"]), h["TRUTH"].header
        said = {th[f"TTYPE{i}"]: th.comments[f"TTYPE{i}"] for i in range(1, th["TFIELDS"] + 1)}
        assert set(said) == set(table.colnames) and all(said.values())
        assert table["x"].unit == "pix" and table["flux"].unit is None and said["flux"].endswith("field units")
        assert "-2 star" in said["cls"]
    assert (tmp_path / "s.png").stat().st_size > 0


def test_sky_compose_size_match_flag_reaches_the_composer(tmp_path, capsys):
    cfg = tmp_path / "sky.toml"
    cfg.write_text('[sky]\nheight = 128\nwidth = 128\npositions = "random"\ndetect = false\nrealism = false\n'
                   f'out = "{tmp_path / "m"}"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--size-match", "--quiet"]) == 0
    with fits.open(tmp_path / "m.fits") as h:
        assert h[0].header["SKY SIZE_MATCH"] is True and len(h["TRUTH"].data) > 0


def test_sky_experiments_writes_the_table_with_reference_rows(tmp_path, capsys):
    out = tmp_path / "exp.json"
    assert main(["sky", "experiments", "--n", "4", "--n-exp", "2", "--end-to-end", "none", "--calibrated-rows",
                 "--reference-rows", "--positions-uncond", "", "--out", str(out), "--quiet"]) == 0
    table = json.loads(out.read_text())["table"]
    ref = "reference: catalogue grids + real stamps"
    assert {"real", "baseline 1", "baseline 2", "conditional", "conditional, calibrated", ref,
            ref + ", with faint sources and stars"} <= set(table)
    assert "unconditional" not in table and "end-to-end GAN" not in table
    for row in table.values():
        assert row["n"] == 4 and 0 <= row["mean"] <= 1 and 0.0 <= row["c2st_accuracy"] <= 1.0
    assert table["baseline 1"]["mean"] < 0.2 < table[ref + ", with faint sources and stars"]["mean"]
    best = json.loads(out.read_text())["best"]["set"]
    assert not best.startswith(("real", "baseline", "reference"))  # the reference is no generated set
    assert "reference: catalogue grids + real stamps" in capsys.readouterr().out


def test_sky_experiments_calibrated_scores_each_set_against_real_tiles(tmp_path):
    """The three experiments composed as the composer does by default: every set carries its
    classifier tests, and the calibrated skies score far higher than the raw BEGAN galaxies'."""
    runs = {}
    for flag in ([], ["--experiments-calibrated"]):
        out = tmp_path / f"exp{len(flag)}.json"
        assert main(["sky", "experiments", "--experiments-only", "--n-exp", "3", "--positions-uncond", "",
                     "--out", str(out), "--quiet", *flag]) == 0
        runs[bool(flag)] = json.loads(out.read_text())["experiments"]
    sets = ("position_model", "random_positions", "fixed_positions_galaxy_sets", "fixed_positions_shuffled")
    for calibrated, exp in runs.items():
        assert exp["calibrated"] is calibrated and 0 < exp["occupancy"] < 0.5
        for name in sets:
            row = exp[name]
            assert row["n"] == 3 and 0.0 <= row["c2st_accuracy"] <= 1.0 and 0.0 <= row["c2st_grouped"] <= 1.0
            assert row["top_shifts"] and row["top_shifts"][0]["feature"]
    for name in sets:
        assert runs[True][name]["mean"] > runs[False][name]["mean"] + 0.3, name


def test_composed_and_baseline_skies_record_what_made_them(tmp_path, capsys):
    """A composed sky's FITS holds the full checkpoint paths and their content ids (no cut at
    48 characters), and no card for an option left unset; a baseline's holds its parameters."""
    import shutil

    from galaxy_core.io.checkpoint import checkpoint_id
    from galaxy_core.paths import checkpoints_dir

    deep = tmp_path / ("a_rather_long_directory_name_for_my_checkpoints_" + "v1" * 10)
    deep.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{suffix}", deep / f"dcgan_hdf32{suffix}")
    cfg = tmp_path / "sky.toml"
    cfg.write_text(f'[sky]\nheight = 96\nwidth = 96\npositions = "random"\ngalaxies = "{deep / "dcgan_hdf32.json"}"\n'
                   f'detect = false\nrealism = false\nfaint = false\nstars = false\nout = "{tmp_path / "c"}"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--quiet"]) == 0
    with fits.open(tmp_path / "c.fits") as h:
        hdr = h[0].header
        assert hdr["SKY GALAXIES"] == str(deep / "dcgan_hdf32.json")
        assert hdr["SKY GALAXIES_ID"] == checkpoint_id(checkpoints_dir() / "dcgan_hdf32.json")
        assert hdr["SKY GALAXIES_PATH"] == str((deep / "dcgan_hdf32.json").resolve())
        assert "SKY POSITIONS_ID" not in hdr and "SKY CELL_PX" not in hdr and hdr["CELL_PX"] == 16
    cfg.write_text(f'[sky]\nheight = 96\nwidth = 96\npositions = "baseline2"\nseed = 5\ndetect = false\n'
                   f'realism = false\nout = "{tmp_path / "b"}"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--quiet"]) == 0
    with fits.open(tmp_path / "b.fits") as h:
        hdr = h[0].header
        assert hdr["SKY BASELINE"] == 2 and hdr["SKY POSITIONS"] == "baseline2" and hdr["SEED"] == 5
        assert json.loads(hdr["SKY PARAMS"])  # the baseline's declared distributions


def _strict_json(text: str):
    """``json.loads`` that refuses the NaN / Infinity tokens Python's json accepts by default."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON: {text!r}"))


def test_a_sky_without_galaxies_reports_null_not_nan(tmp_path, capsys):
    """No galaxies, so completeness and purity are undefined: the printed reports of compose and
    detect are strict JSON with null there."""
    cfg = tmp_path / "empty.toml"
    cfg.write_text('[sky]\nheight = 96\nwidth = 96\npositions = "random"\noccupancy = 0.0\ngalaxies = "stamps"\n'
                   f'faint = false\nstars = false\nrealism = false\nout = "{tmp_path / "e"}"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    report = _strict_json(out[out.index("{"):])
    assert report["n_galaxies"] == 0 and report["n_detected"] == 0
    assert report["completeness"] is None and report["purity"] is None and report["purity_galaxies"] is None
    assert main(["sky", "detect", str(tmp_path / "e.fits")]) == 0
    report = _strict_json(capsys.readouterr().out)
    assert report["n_truth"] == 0 and report["completeness"] is None and report["completeness_bright"] is None


# --------------------------------------------------------------------------- mistyped sources


@pytest.mark.parametrize("args, words", [
    (["compose", "--positions", "randm"],
     ["--positions 'randm': no such checkpoint", "give random, baseline1, baseline2 or a position checkpoint",
      "did you mean 'random'?"]),
    (["compose", "--positions", "random", "--galaxies", "stamp"],
     ["--galaxies 'stamp': no such checkpoint", "give stamps or a galaxy checkpoint", "did you mean 'stamps'?"]),
    (["compose", "--positions", "checkpoints/positions_hdf_cnd.json"],
     ["--positions 'checkpoints/positions_hdf_cnd.json': no such checkpoint",
      "did you mean 'checkpoints/positions_hdf_cond.json'?"]),
    (["grid-stats", "positions_hdf_cnd"],
     ["sky grid-stats CHECKPOINT 'positions_hdf_cnd': no such checkpoint", "give a position checkpoint",
      "did you mean 'checkpoints/positions_hdf_cond.json'?"]),
    (["mosaic", "dcgan_hdf3", "--out", "m"],
     ["sky mosaic CHECKPOINT 'dcgan_hdf3': no such checkpoint", "did you mean 'checkpoints/dcgan_hdf32.json'?"]),
    (["experiments", "--size", "128", "--positions-cond", "positions_hdf_cnd"],
     ["--positions-cond 'positions_hdf_cnd': no such checkpoint"]),
    (["experiments", "--size", "128", "--end-to-end", "nnone"],
     ["--end-to-end 'nnone': no such checkpoint", "give none or an end-to-end sky checkpoint",
      "did you mean 'none'?"]),
    (["experiments", "--size", "128", "--also", "x=randm,checkpoints/began_hdf32.json"],
     ["--also 'x=randm,checkpoints/began_hdf32.json': positions 'randm': no such checkpoint"]),
    (["experiments", "--scorer", "realism_hdfx"], ["--scorer 'realism_hdfx': ", "realism scorer missing"]),
])
def test_a_mistyped_source_is_named_by_its_option_and_value(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)  # nothing written: every one is refused before any work
    assert main(["sky", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for w in words:
        assert w in err, err
    assert not any(tmp_path.iterdir())


def test_a_mistyped_source_in_a_config_file_is_named_by_the_file_and_key(tmp_path, capsys):
    from galaxy_core.errors import ConfigError
    from galaxy_core.sky.pipeline import SkyConfig, compose

    cfg = tmp_path / "sky.toml"
    cfg.write_text('[sky]\npositions = "randoom"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--out", str(tmp_path / "s")]) == 2
    assert f"error: {cfg}: sky.positions 'randoom': no such checkpoint" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"^sky\.galaxies 'stamp': no such checkpoint .*did you mean 'stamps'\?$"):
        compose(SkyConfig(positions="random", galaxies="stamp", height=64, width=64))
    compose(SkyConfig(positions="baseline1", galaxies="ignored by a baseline", height=64, width=64))


# --------------------------------------------------------------------------- detect: bad input


def _sky_fits(path, *, truth=True, truth_columns=("x", "y", "flux"), image=True):
    """A 3-band 96 px sky with three bright sources, optionally with a TRUTH table."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    img = rng.normal(0, 1, (3, 96, 96)).astype(np.float32)
    for x, y in ((25, 30), (70, 60), (40, 80)):
        img += 60 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)
    hdus = [fits.PrimaryHDU(img if image else None)]
    if truth:
        cols = {"x": [25.0, 70.0, 40.0], "y": [30.0, 60.0, 80.0], "flux": [1.0, 2.0, 3.0], "cls": [1, 2, 3]}
        t = fits.table_to_hdu(Table({k: cols[k] for k in (*truth_columns, "cls")}))
        t.name = "TRUTH"
        hdus.append(t)
    fits.HDUList(hdus).writeto(path)
    return path


def _detect_error(path, capsys):
    assert main(["sky", "detect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert f"error: {path}: " in err
    return err


def test_sky_detect_scores_a_sky_with_truth(tmp_path, capsys):
    assert main(["sky", "detect", str(_sky_fits(tmp_path / "s.fits"))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_truth"] == 3 and out["n_detected"] >= 3 and out["completeness"] == 1.0


def _with_truth(path, columns: dict):
    """``path`` with a TRUTH table of ``columns`` appended."""
    t = fits.table_to_hdu(Table(columns))
    t.name = "TRUTH"
    fits.append(path, t.data, t.header)
    return path


def test_sky_detect_reads_a_truth_table_with_fits_upper_case_columns(tmp_path, capsys):
    """X, Y, FLUX, CLS as FITS tools write them: the third source is marked a star (CLS -2), so
    it leaves the completeness only if CLS is read."""
    cols = {"X": [25.0, 70.0, 40.0], "Y": [30.0, 60.0, 80.0], "FLUX": [1.0, 2.0, 3.0], "CLS": [1, 2, -2]}
    path = _with_truth(_sky_fits(tmp_path / "upper.fits", truth=False), cols)
    assert main(["sky", "detect", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_truth"] == 2 and out["completeness"] == 1.0 and out["bright_flux"] == 1.5
    cols = {"x": [25.0], "y": [30.0], "Flux": [1.0], "FLUX": [2.0]}
    err = _detect_error(_with_truth(_sky_fits(tmp_path / "twice.fits", truth=False), cols), capsys)
    assert "the TRUTH table: columns Flux and FLUX differ only in case, so which one is flux is ambiguous" in err


def test_sky_detect_without_truth_counts_detections_only(tmp_path, capsys):
    path = _sky_fits(tmp_path / "plain.fits", truth=False)
    assert main(["sky", "detect", str(path)]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["n_detected"] >= 3 and "completeness" not in out
    assert f"{path} has no TRUTH table" in cap.err and "Traceback" not in cap.err


def test_sky_detect_bad_files_are_one_line_errors(tmp_path, capsys):
    assert "no image data" in _detect_error(_sky_fits(tmp_path / "noimg.fits", image=False), capsys)
    err = _detect_error(_sky_fits(tmp_path / "t.fits", truth_columns=("x", "flux")), capsys)
    assert "TRUTH table lacks column(s) y" in err
    text = tmp_path / "text.fits"
    text.write_text("not FITS at all\n")
    assert "cannot read as FITS" in _detect_error(text, capsys)
    assert "no such FITS file" in _detect_error(tmp_path / "missing.fits", capsys)
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.zeros((64, 64), np.float32)).writeto(blank)
    assert "band 'band1' is blank (every pixel is 0)" in _detect_error(blank, capsys)


def test_sky_grids_from_a_blank_image_says_it_is_blank(tmp_path, capsys):
    from PIL import Image

    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    assert main(["sky", "grids", "--image", str(tmp_path / "black.png"), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'black.png'}: blank image (every pixel is 0)" in err and "Traceback" not in err


def test_a_sky_smaller_than_the_scorer_s_tile_is_composed_and_left_unscored(tmp_path, capsys):
    from galaxy_core.metrics.realism import load_scorer

    cfg = tmp_path / "sky.toml"
    cfg.write_text('[sky]\nheight = 64\nwidth = 200\npositions = "random"\ngalaxies = "stamps"\n'
                   f'out = "{tmp_path / "small"}"\n')
    assert main(["sky", "compose", "--config", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["realism"] is None and "smaller than the scorer's 128 px tile" in report["realism_note"]
    assert fits.getdata(tmp_path / "small.fits").shape == (3, 64, 200)
    with pytest.raises(ValueError, match="200 x 64 px sky holds no 128 px tile"):
        load_scorer().score(np.zeros((3, 64, 200), np.float32))


def test_grids_from_an_image_get_the_field_s_size_cut_and_options_are_checked(tmp_path, capsys):
    """An image's detections are cut at min_area (50 pix2) as the built-in field's are, and the
    manifest says how many were left out; a catalogue is taken as it is; impossible options are
    refused by name."""
    from PIL import Image

    yy, xx = np.mgrid[:600, :600]
    img = np.zeros((600, 600))
    rng = np.random.default_rng(1)
    for i in range(120):  # 60 large and 60 tiny sources
        x, y, s = rng.uniform(20, 580), rng.uniform(20, 580), (4.0 if i % 2 else 0.7)
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s**2))
    img = 0.2 + 0.6 * img + rng.normal(0, 0.02, img.shape)  # a sky level with noise
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "sky.png")
    assert main(["sky", "grids", "--image", str(tmp_path / "sky.png"), "--out", str(tmp_path / "g"),
                 "--grid", "16", "--cell-px", "16", "--count", "8"]) == 0
    m = open_prepared(tmp_path / "g").manifest
    assert m["preprocess"]["min_area"] == 50 and m["sources_below_min_area"] > 0
    assert "smaller than min_area = 50 pix2 left out" in capsys.readouterr().out
    for option in ("--grid", "--cell-px", "--count"):
        with pytest.raises(SystemExit):
            main(["sky", "grids", option, "0"])
        assert f"argument {option}: must be > 0, got 0" in capsys.readouterr().err
