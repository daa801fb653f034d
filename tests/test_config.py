import pytest

from galaxy_core.config import load_config, parse_override, to_toml
from galaxy_core.errors import ConfigError
from galaxy_core.paths import configs_dir


@pytest.mark.parametrize("name", ["dcgan_hdf32.toml", "dcgan_hdf64.toml", "dcgan_sim64.toml"])
def test_shipped_configs_load_and_show_every_default(name):
    path = configs_dir() / name
    cfg = load_config(path)
    text = path.read_text()
    # every field of every table is written out in the example config
    for section in ("data", "augment", "train", "log"):
        for key in getattr(cfg, section).__dataclass_fields__:
            if section == "data" and key in ("count", "seed") and cfg.data.dataset != "sim":
                continue
            assert f"\n{key} = " in text, f"{name}: {section}.{key} not shown"


def test_round_trip_through_toml(tmp_path):
    cfg = load_config(configs_dir() / "dcgan_sim64.toml", ["train.steps=7", "model.width=16"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    again = load_config(p)
    assert again.to_dict() == cfg.to_dict()
    assert again.train.steps == 7 and again.model["width"] == 16


def test_yaml_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  dataset: sim\n  resolution: 32\ntrain:\n  steps: 5\n  lr_g: 1.0e-4\n")
    cfg = load_config(p)
    assert (cfg.data.dataset, cfg.data.resolution, cfg.train.steps, cfg.train.lr_g) == ("sim", 32, 5, 1e-4)


def test_override_parsing():
    assert parse_override("train.lr_g=1e-4") == ("train", "lr_g", 1e-4)
    assert parse_override("augment.flip_h=false") == ("augment", "flip_h", False)
    assert parse_override("data.dataset=/data/my galaxies") == ("data", "dataset", "/data/my galaxies")


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["train.stepz=3"], "train.stepz"),
        (["model.widht=3"], "widht"),
        (["data.resolution=48"], "data.resolution"),
        (["train.loss=wasserstein"], "train.loss"),
        (["train.batch_size=0"], "train.batch_size"),
        (["train.steps=1.5"], "train.steps"),
        (["augment.flip_h=3"], "augment.flip_h"),
        (["log.grid_size=10"], "log.grid_size"),
        (["model.arch=vae"], "vae"),
        (["nosection.x=1"], "nosection"),
        (["steps=3"], "section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, override)


def test_bad_file_is_named(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[train\nsteps = 1")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")
