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
