"""A position model carries the properties of its own training grids into the composer: the cell
size, the size-class thresholds and the class fractions (not the built-in field's)."""

import json

import numpy as np
import pytest

from galaxy_core.config import load_config
from galaxy_core.errors import ConfigError
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.paths import checkpoints_dir, configs_dir
from galaxy_core.sky.grids import grid_class_fractions
from galaxy_core.sky.compose import ModelPositions, compose_sky
from galaxy_core.sky.grids import GridOptions, grid_properties, hdf_sources, prepare_catalogue_grids, size_thresholds
from galaxy_core.train.loop import train


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A position model trained (3 steps) on grids of a user catalogue with 10 px cells, dense
    (about 40 % of the cells occupied) and with sizes far from the deep field's."""
    tmp = tmp_path_factory.mktemp("user_grids")
    rng = np.random.default_rng(0)
    n = 400
    src = {"x": rng.uniform(0, 319, n), "y": rng.uniform(0, 319, n), "area": rng.uniform(500, 2000, n),
           "shape": (320, 320)}
    ds = prepare_catalogue_grids(src, tmp / "grids", GridOptions(grid=16, cell_px=10, count=64), source="test")
    cfg = load_config(configs_dir() / "positions_hdf_cond.toml",
                      [f"data.dataset={str(ds.root)!r}", "train.steps=3", "train.batch_size=8", "model.width=4",
                       "log.sample_every=3", "log.checkpoint_every=3", "log.eval_every=0", "train.threads=1"])
    assert train(cfg, tmp / "run", progress=False)["state"] == "finished"
    return ds, tmp / "run" / "checkpoints" / "last.json"


def test_checkpoint_records_its_grids_properties(user_model):
    ds, ck = user_model
    data = json.loads(ck.read_text())["data"]
    assert data["cell_px"] == 10
    assert data["size_thresholds_area"] == pytest.approx(ds.manifest["size_thresholds_area"])
    counts = np.bincount(np.asarray(ds.images).ravel(), minlength=4)
    assert data["class_fractions"] == pytest.approx(counts / counts.sum())
    props = grid_properties(data)
    assert props.cell_px == 10 and not props.builtin_hdf
    lo, hi = props.thresholds
    assert 500 < lo < hi < 2000  # terciles of the user's areas, nothing like the field's 73 / 127
    assert props.class_fractions[0] < 0.75  # the user's grids are far denser than the field's 0.88 empty


def test_composer_uses_the_models_cell_size_and_refuses_another(user_model):
    _, ck = user_model
    pos = ModelPositions(load_pretrained(ck))
    assert pos.cell_px == 10
    sky = compose_sky(height=200, width=200, positions=pos, galaxies=None, seed=0)
    assert sky.meta["cell_px"] == 10 and sky.meta["tile_px"] == 160
    with pytest.raises(ValueError, match="cell_px 16 differs from the 10 px cells"):
        compose_sky(height=200, width=200, positions=pos, galaxies=None, cell_px=16, seed=0)


def test_pipeline_takes_the_cell_size_and_thresholds_from_the_position_model(user_model):
    from galaxy_core.sky.pipeline import SkyConfig, compose, galaxy_source, position_source

    _, ck = user_model
    cfg = SkyConfig(height=64, width=64, positions=str(ck), galaxies=str(checkpoints_dir() / "fastgan_hdf32.json"),
                    size_match=True, detect=False, realism=False, faint=False, stars=False)
    positions = position_source(cfg)
    gal = galaxy_source(cfg, positions)
    assert gal.thresholds == pytest.approx(positions.properties.thresholds)
    with pytest.raises(ConfigError, match="sky.cell_px"):
        compose(SkyConfig(**{**cfg.__dict__, "cell_px": 16}))


def test_class_matching_aims_at_the_models_own_grids(user_model):
    _, ck = user_model
    pos = ModelPositions(load_pretrained(ck), match_classes=True)
    keep = pos.keep_probabilities()
    data = pos.properties.class_fractions
    grids = np.stack([pos(np.random.default_rng(i)) for i in range(200)])
    got = np.bincount(grids.ravel(), minlength=4) / grids.size
    # every class kept whole or thinned down to the user's fraction, never to the field's
    for k in (1, 2, 3):
        assert got[k] == pytest.approx(data[k], abs=0.03) if keep[k] < 1 else got[k] <= data[k] + 0.03
    field = grid_class_fractions()
    assert abs(got[1:].sum() - field[1:].sum()) > 0.1


def test_a_checkpoint_without_recorded_properties(user_model, tmp_path):
    """Saved before the properties were recorded: grids of the built-in field are measured
    again (the shipped checkpoints, exactly as before); a user's grids cannot be, and matching
    the classes then says so, naming the file."""
    shipped = load_pretrained(checkpoints_dir() / "positions_hdf_cond.json")
    assert "class_fractions" not in shipped.meta["data"]
    props = grid_properties(shipped.meta["data"])
    assert props.builtin_hdf and props.cell_px == 16
    np.testing.assert_allclose(props.class_fractions, grid_class_fractions(), atol=1e-12)
    assert props.thresholds == pytest.approx(size_thresholds(hdf_sources()["area"]))

    _, ck = user_model
    model = load_pretrained(ck)
    for k in ("cell_px", "size_thresholds_area", "class_fractions"):
        model.meta["data"].pop(k)
    old = ModelPositions(model, match_classes=True)
    assert old.properties.thresholds is None and old.properties.class_fractions is None
    assert old.cell_px == 10  # still in the recorded grid options
    with pytest.raises(ValueError, match="last.json does not record the class fractions"):
        old(np.random.default_rng(0))
    with pytest.raises(Exception, match="not grids"):
        grid_properties({"kind": "image"})


def test_pipeline_refuses_matching_classes_it_cannot_know(user_model, tmp_path):
    import shutil

    from galaxy_core.sky.pipeline import SkyConfig, compose

    _, ck = user_model
    meta = json.loads(ck.read_text())
    for k in ("size_thresholds_area", "class_fractions"):
        meta["data"].pop(k)
    old = tmp_path / "old_positions.json"
    old.write_text(json.dumps(meta))
    shutil.copy(ck.with_suffix(".safetensors"), old.with_suffix(".safetensors"))
    cfg = dict(height=64, width=64, positions=str(old), galaxies=str(checkpoints_dir() / "fastgan_hdf32.json"),
               detect=False, realism=False, faint=False, stars=False)
    with pytest.raises(ConfigError, match="sky.match_classes: .*old_positions.json does not record"):
        compose(SkyConfig(**cfg))
    with pytest.raises(ConfigError, match="sky.size_match: .*old_positions.json does not record"):
        compose(SkyConfig(**cfg, match_classes=False, size_match=True))
    sky = compose(SkyConfig(**cfg, match_classes=False))  # still composes, at its own 10 px cells
    assert sky.meta["cell_px"] == 10
