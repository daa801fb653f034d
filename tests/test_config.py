import dataclasses

import pytest
import torch

from galaxy_core.config import available_devices, from_dict, load_config, parse_override, to_toml
from galaxy_core.errors import ConfigError
from galaxy_core.paths import configs_dir


def _training_configs() -> list[str]:
    """Every shipped training config (files with a [train] table; sky composition configs are not)."""
    return sorted(p.name for p in configs_dir().glob("*.toml") if "\n[train]" in "\n" + p.read_text())


def test_every_family_ships_training_configs():
    names = _training_configs()
    assert {"dcgan_hdf32.toml", "dcgan_hdf64.toml", "dcgan_sim64.toml"} <= set(names)
    assert any(n.startswith(("stylegan", "fastgan", "stackgan")) for n in names)


@pytest.mark.parametrize("name", _training_configs())
def test_shipped_configs_load_and_show_every_default(name):
    from galaxy_core.config import dataset_specific_keys
    from galaxy_core.models.registry import get_arch

    path = configs_dir() / name
    cfg = load_config(path)
    text = path.read_text()
    # every field of every table is written out in the example config
    for section in ("data", "augment", "train", "log"):
        for key in getattr(cfg, section).__dataclass_fields__:
            if section == "data" and key in dataset_specific_keys(cfg.data):
                continue
            assert f"\n{key} = " in text, f"{name}: {section}.{key} not shown"
    # and every model field the data does not decide
    family = get_arch(cfg.arch)
    for f in dataclasses.fields(family.config_cls):
        if f.name not in family.data_fields:
            assert f"\n{f.name} = " in text, f"{name}: model.{f.name} not shown"


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


def test_override_parsing_keeps_the_text():
    assert parse_override("train.lr_g=1e-4") == ("train", "lr_g", "1e-4")
    assert parse_override(" data.dataset = /data/my galaxies") == ("data", "dataset", "/data/my galaxies")
    assert parse_override("augment.rotate=45") == ("augment", "rotate", "45")


@pytest.mark.parametrize(
    "override, section, key, value",
    [
        ("train.lr_g=1e-4", "train", "lr_g", 1e-4),
        ("train.lr_g=1", "train", "lr_g", 1.0),            # an integer for a float
        ("train.steps=1_000", "train", "steps", 1000),
        ("train.steps=2e3", "train", "steps", 2000),       # an integral number written as a float
        ("augment.flip_h=false", "augment", "flip_h", False),
        ("augment.flip_h=yes", "augment", "flip_h", True),
        ("augment.rotate=45", "augment", "rotate", "45"),  # a choice written as a number
        ("augment.rotate=any", "augment", "rotate", "any"),
        ("data.dataset=/data/my galaxies", "data", "dataset", "/data/my galaxies"),
        ('data.dataset="sim"', "data", "dataset", "sim"),  # TOML quoting is accepted
        ("data.dataset=123", "data", "dataset", "123"),    # a folder may be named by digits
        ("train.device=cpu", "train", "device", "cpu"),
        ("model.width=16", "model", "width", 16),          # typed by the family's dataclass
        ("model.d_dropout=0", "model", "d_dropout", 0.0),
    ],
)
def test_set_values_are_parsed_to_the_declared_type(override, section, key, value):
    cfg = load_config(configs_dir() / "dcgan_hdf32.toml", [override])
    got = cfg.model[key] if section == "model" else getattr(getattr(cfg, section), key)
    assert got == value and type(got) is type(value)


def test_numbers_for_choices_in_files_and_dicts(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[augment]\nrotate = 45\n[train]\nlr_g = 1\n")
    cfg = load_config(p)
    assert cfg.augment.rotate == "45" and cfg.train.lr_g == 1.0 and isinstance(cfg.train.lr_g, float)
    assert from_dict({"augment": {"rotate": 45.0}}, source="app").augment.rotate == "45"
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  lr_g: 1e-4\n")  # YAML reads 1e-4 as text; it is still a number here
    assert load_config(y).train.lr_g == 1e-4


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
        (["model.width=abc"], "--set model.width: expected a whole number, got 'abc'"),
        (["model.d_dropout=much"], "--set model.d_dropout: expected a number"),
        (["model.width=0"], "--set model.width=0: model.width"),
        (["train.steps=abc"], "--set train.steps: expected a whole number"),
        (["train.lr_g=fast"], "--set train.lr_g: expected a number"),
        (["train.lr_g=nan"], "--set train.lr_g: expected a finite number"),
        (["train.lr_g=inf"], "--set train.lr_g: expected a finite number"),
        (["train.lr_g=0"], "train.lr_g: must be > 0"),
        (["train.lr_step_every=-1"], "train.lr_step_every: must be >= 0"),
        (["train.threads=-2"], "train.threads: must be >= 0"),
        (["data.crop=1.5"], r"data.crop: must be in (0.0, 1.0]"),
        (["data.count=0"], "data.count: must be >= 1"),
        (["augment.rotate=30"], "augment.rotate: must be one of 'none', '45', 'any'; got '30'"),
        (["augment.hue_p=2"], "augment.hue_p: must be in [0.0, 1.0]"),
        (["augment.flip_h=maybe"], "augment.flip_h: expected true or false"),
        (["log.eval_samples=1"], "log.eval_samples: must be >= 2"),
        (["train.beta1=1"], r"train.beta1: must be in [0.0, 1.0)"),
        (["train.device=tpu"], "train.device: 'tpu' cannot be used"),
        (["train.device=gpu"], "train.device: 'gpu' cannot be used"),
        (["train.device=cuda:99"], "train.device: 'cuda:99' cannot be used"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[augment]\nrotate = 30\n', "c.toml: augment.rotate: must be one of"),
        ('[train]\nsteps = "many"\n', "c.toml: train.steps: expected a whole number, got 'many'"),
        ('[train]\namp = 1\n', "c.toml: train.amp: expected true or false"),
        ('[model]\nwidth = "wide"\n', "c.toml: model.width: expected a whole number"),
        ('[model]\nwidth = 8.5\n', "c.toml: model.width: expected a whole number"),
        ('[data]\ndataset = 3\n', "c.toml: data.dataset: expected a string"),
        ('[log]\ngrid_size = 10\n', "c.toml: log.grid_size: must be a square number"),
        ('[train]\ndevice = "tpu"\n', "c.toml: train.device: 'tpu' cannot be used"),
    ],
)
def test_bad_file_values_name_file_and_key(tmp_path, text, fragment):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert fragment in str(e.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_gpu_devices_are_checked_against_this_machine(device):
    """``train.device`` must name hardware torch can use here; the error lists what there is."""
    if device in available_devices():
        assert load_config(None, [f"train.device={device}"]).train.device == device
        return
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"train.device={device}"])
    message = str(e.value)
    assert f"train.device: {device!r} cannot be used" in message
    assert "available here: " + ", ".join(available_devices()) in message
    assert "train.device=auto" in message


def test_available_devices_match_torch():
    devices = available_devices()
    assert devices[:2] == ["auto", "cpu"]
    assert ("cuda" in devices) == torch.cuda.is_available()


def test_dry_run_reports_an_unavailable_device():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "train", "--set", "train.device=tpu", "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "train.device: 'tpu' cannot be used" in r.stderr and "Traceback" not in r.stderr


def test_round_trip_keeps_types_of_numeric_choices(tmp_path):
    cfg = load_config(None, ["augment.rotate=45"])
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    assert 'rotate = "45"' in p.read_text() and load_config(p).augment.rotate == "45"


def test_bad_file_is_named(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[train\nsteps = 1")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")


def test_dataset_specific_keys_name_what_each_dataset_ignores():
    from galaxy_core.config import DataConfig, dataset_specific_keys

    assert set(dataset_specific_keys(DataConfig(dataset="hdf"))) == {"count", "seed"}
    assert set(dataset_specific_keys(DataConfig(dataset="sim"))) == {"neighbours"}
    assert set(dataset_specific_keys(DataConfig(dataset="hdf_grid_classes"))) == {"neighbours"}  # tiles, seed
    assert set(dataset_specific_keys(DataConfig(dataset="data/my_galaxies"))) == {"count", "seed", "neighbours"}
