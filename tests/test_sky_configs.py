"""The sky family configs show every default (training tables and model fields) and load."""

import dataclasses
import numpy as np

import pytest

from galaxy_core.config import dataset_specific_keys, load_config
from galaxy_core.models.registry import get_arch
from galaxy_core.paths import configs_dir
from galaxy_core.sky.pipeline import SkyConfig, load_sky_config

NAMES = ["positions_hdf_uncond.toml", "positions_hdf_cond.toml", "began_hdf32.toml", "began_cond_hdf32.toml",
         "sky_e2e_dcgan128.toml"]


@pytest.mark.parametrize("name", NAMES)
def test_training_configs_show_every_default(name):
    path = configs_dir() / name
    cfg = load_config(path)
    text = path.read_text()
    for section in ("data", "augment", "train", "log"):
        for key in getattr(cfg, section).__dataclass_fields__:
            if section == "data" and key in dataset_specific_keys(cfg.data):
                continue
            assert f"\n{key} = " in text, f"{name}: {section}.{key} not shown"
    for f in dataclasses.fields(get_arch(cfg.arch).config_cls):
        if f.name not in ("resolution", "num_bands") and not (cfg.arch == "positions" and f.name == "num_classes"):
            assert f"\n{f.name} = " in text, f"{name}: model.{f.name} not shown"


def test_sky_default_config_shows_every_key():
    path = configs_dir() / "sky_default.toml"
    cfg = load_sky_config(path)
    text = path.read_text()
    for f in dataclasses.fields(SkyConfig):
        # TOML has no null: a key whose default is None (taken from the models) is shown commented out
        shown = f"\n# {f.name} = " if f.default is None else f"\n{f.name} = "
        assert shown in text, f"sky.{f.name} not shown"
    assert cfg.height == cfg.width == 1000


def test_sky_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text("[sky]\nheigth = 3\n")
    with pytest.raises(Exception, match="heigth"):
        load_sky_config(bad)
    with pytest.raises(Exception, match="jitter"):
        load_sky_config(None, {"jitter": 0.9})
    with pytest.raises(Exception, match="faint_profile"):
        load_sky_config(None, {"faint_profile": "sersic"})


def test_faint_profile_of_the_config_shapes_the_composed_sky():
    from galaxy_core.sky.pipeline import compose

    kw = dict(height=128, width=128, seed=4, positions="random", galaxies="stamps", stars=False, detect=False,
              realism=False)
    skies = {p: compose(SkyConfig(**kw, faint_profile=p)) for p in ("moffat", "gaussian")}
    t = {p: s.truth for p, s in skies.items()}
    faint = {p: tt[tt["cls"] == -1] for p, tt in t.items()}
    assert len(faint["moffat"]) > 10
    np.testing.assert_array_equal(np.asarray(faint["moffat"]["x"]), np.asarray(faint["gaussian"]["x"]))  # same draws
    assert skies["moffat"].meta["config"]["faint_profile"] == "moffat"
    diff = np.abs(skies["moffat"].image - skies["gaussian"].image).max()
    assert diff > 0.01  # the profiles differ, so the images do
    # the Moffat puts more of a source's light in its peak pixel
    x, y = int(round(faint["moffat"]["x"][0])), int(round(faint["moffat"]["y"][0]))
    assert skies["moffat"].image[:, y, x].sum() > skies["gaussian"].image[:, y, x].sum()


def test_size_match_gives_larger_cells_larger_galaxies():
    from galaxy_core.sky.compose import ClassMatchedGalaxies, ModelGalaxies
    from galaxy_core.sky.pipeline import compose, galaxy_source

    kw = dict(height=256, width=256, positions="random", occupancy=0.3, faint=False, stars=False, detect=False,
              realism=False, sharpen=False, pixel_match=False)
    assert isinstance(galaxy_source(SkyConfig(**kw)), ModelGalaxies)  # fastgan_hdf32_w16: classes ignored
    assert isinstance(galaxy_source(SkyConfig(**kw, size_match=True)), ClassMatchedGalaxies)
    means = {}
    for match in (False, True):
        truth = [compose(SkyConfig(**kw, seed=s, size_match=match)).truth for s in range(2)]
        flux = np.concatenate([np.asarray(t["flux"]) for t in truth])
        cls = np.concatenate([np.asarray(t["cls"]) for t in truth])
        means[match] = [float(np.median(flux[cls == c])) for c in (1, 2, 3)]
    lo, mid, hi = means[True]
    assert lo < mid < hi and hi > 2 * lo  # matched: brightness follows the cell's size class
    assert means[True][2] / means[True][0] > means[False][2] / means[False][0]


# --------------------------------------------------------------------------- types and ranges


@pytest.mark.parametrize("line, words", [
    ('height = "big"', ["sky.height", "expected a whole number", "'big'"]),
    ("width = 2.5", ["sky.width", "expected a whole number", "2.5"]),
    ("occupancy = 5", ["sky.occupancy", "must be in [0.0, 1.0]", "5"]),
    ("occupancy = -1", ["sky.occupancy", "must be in [0.0, 1.0]", "-1"]),
    ('occupancy = "lots"', ["sky.occupancy", "expected a number", "'lots'"]),
    ('detect = "maybe"', ["sky.detect", "expected true or false"]),
    ("positions = 3", ["sky.positions", "expected a string"]),
    ("cell_px = 0", ["sky.cell_px", "must be >= 1"]),
    ('cell_px = "x"', ["sky.cell_px", "expected a whole number"]),
    ("radius = 0", ["sky.radius", "must be > 0"]),
    ("seed = -1", ["sky.seed", "must be in [0, 9223372036854775807]; got -1"]),
    ('class_mix = [1, "a", 2]', ["sky.class_mix[1]", "expected a number"]),
    ("class_mix = 3", ["sky.class_mix", "expected a list of 3 numbers"]),
    ("class_mix = [1, 2]", ["sky.class_mix", "3 non-negative weights"]),
    ('out = ""', ["sky.out", "must not be empty"]),
])
def test_sky_config_types_and_ranges_are_checked(tmp_path, capsys, line, words):
    from galaxy_core.cli import main

    cfg = tmp_path / "bad.toml"
    base = "" if line.startswith("positions") else 'positions = "random"\n'
    cfg.write_text(f'[sky]\n{base}galaxies = "stamps"\n{line}\n')
    assert main(["sky", "compose", "--config", str(cfg), "--quiet", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert f"error: {cfg}: " in err
    for w in words:
        assert w in err, err
    assert not list(tmp_path.glob("s.*"))  # nothing composed or written


def test_sky_config_values_keep_their_types():
    cfg = load_sky_config(None, {"occupancy": 1, "jitter": 0, "cell_px": 16.0, "class_mix": (1, 2, 3)})
    assert isinstance(cfg.occupancy, float) and isinstance(cfg.jitter, float) and cfg.jitter == 0.0
    assert type(cfg.cell_px) is int and cfg.class_mix == [1.0, 2.0, 3.0]
    assert SkyConfig().cell_px is None
    with pytest.raises(Exception, match=r"^sky\.occupancy: must be in \[0\.0, 1\.0\]; got 1\.5"):
        SkyConfig(occupancy=1.5)
    with pytest.raises(Exception, match=r"^sky\.height: must be in \[1, 8000\]; got 0"):
        load_sky_config(None, {"height": 0})


def test_sky_config_keys_outside_the_sky_table_are_refused(tmp_path):
    from galaxy_core.errors import ConfigError

    cfg = tmp_path / "top.toml"
    cfg.write_text("height = 256\n[sky]\nwidth = 256\n")  # height meant for [sky] would be ignored
    with pytest.raises(ConfigError, match=r"top\.toml: height outside the \[sky\] table"):
        load_sky_config(cfg)
    cfg.write_text("sky = 3\n")
    with pytest.raises(ConfigError, match=r"top\.toml: sky must be a table"):
        load_sky_config(cfg)
