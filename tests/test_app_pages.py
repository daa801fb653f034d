"""Every page of the Streamlit studio, run headless with ``streamlit.testing.v1.AppTest``.

The pages use the shipped checkpoints (``galaxy_core.paths.checkpoints_dir()``) and the built-in
``hdf`` data; runs go to a fresh folder per test. A multi-band model for the colour-magnitude
diagram is made here with random weights (the page's code path, not the model's quality, is
under test) on a small ``sim`` set, so no 10,000-galaxy simulation is needed.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from galaxy_core.config import load_config, to_toml
from galaxy_core.data import load_dataset
from galaxy_core.errors import GalaxyGanError
from galaxy_core.io.render import png_bytes
from galaxy_core.models.dcgan import DCGANConfig, Generator
from galaxy_core.models.pretrained import list_checkpoints
from galaxy_core.paths import checkpoints_dir, configs_dir, confine
from galaxy_core.io.checkpoint import prefixed, save_checkpoint
from galaxy_core.train.run import RunFolder

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the app's helpers (studio_ui) sit beside app.py, outside the package
    sys.path.insert(0, str(ROOT))
SHIPPED = ("dcgan_hdf32", "dcgan_hdf64", "dcgan_sim64")
TIMEOUT = 120


# ---------------------------------------------------------------------------------- helpers


def shipped_path(name: str) -> str:
    path = checkpoints_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(f"shipped checkpoint {path} is missing (the app's pages are tested with it)")
    return str(path)


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A fresh runs folder and workspace for each test."""
    monkeypatch.setenv("GALAXYGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GALAXYGAN_WORKSPACE", str(tmp_path))
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"


def open_app(checkpoint: str | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert_clean(at)
    if checkpoint is not None:
        at.selectbox(key="checkpoint").set_value(checkpoint).run()
        assert_clean(at)
    if page is not None:
        at.switch_page(page).run()
        assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def image_urls(at: AppTest) -> list[str]:
    return [img.url for el in at.get("image") for img in el.proto.imgs]


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def labels(elements) -> list[str]:
    return [e.label for e in elements]


# ------------------------------------------------------------------------------- navigation


def test_pages_are_registered_in_order_and_future_pages_slot_in(tmp_path):
    from studio_ui import nav

    assert [p.title for p in nav.available()] == ["Home", "Train", "Latent Explorer", "Sky Composer", "Evaluation",
                                                 "Memorisation"]
    # A page file added later appears at its registered place, between Latent Explorer and Evaluation.
    for p in nav.available():
        (tmp_path / p.file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p.file).touch()
    (tmp_path / "pages" / "style_mixing.py").touch()
    titles = [p.title for p in nav.available(root=tmp_path)]
    assert titles.index("Style Mixing") == titles.index("Latent Explorer") + 1


def test_sidebar_lists_shipped_and_run_checkpoints(runs):
    fake = fake_run(runs)
    save_checkpoint(fake.checkpoints_dir / "last", *_copy_of("dcgan_hdf32"))
    at = open_app()
    shown = at.selectbox(key="checkpoint").options  # the labels, shipped ones first
    shipped = [label for label in shown if label.endswith(" · shipped")]
    assert shown[: len(shipped)] == shipped  # shipped ones first
    assert [label for label in shipped if label.split(" · ")[0] in SHIPPED] == [f"{name} · shipped" for name in SHIPPED]
    assert not any(label.startswith("positions_") for label in shown)  # grids belong to the Sky Composer
    assert "demo · last" in shown


def _copy_of(name: str) -> tuple[dict, dict]:
    from galaxy_core.io.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(shipped_path(name))
    return tensors, meta


# ------------------------------------------------------------------------------------- home


@pytest.mark.parametrize("name", SHIPPED)
def test_home_shows_model_card_and_samples_for_each_checkpoint(runs, name):
    at = open_app(shipped_path(name))
    assert at.title[0].value == "Galaxy GAN Studio"
    assert {"Architecture", "Resolution", "Training steps", "Training time", "Training data"} <= set(labels(at.metric))
    assert any(name in c.value for c in at.caption)
    captions = image_captions(at)
    assert len(captions) == 1 and "Display:" in captions[0] and "16 samples" in captions[0]
    assert len(at.get("download_button")) == 3


def test_home_seed_box_and_new_samples_change_the_grid(runs):
    at = open_app(shipped_path("dcgan_hdf32"))
    first = image_urls(at)
    at.number_input(key="home_seed").set_value(11).run()
    assert_clean(at)
    second = image_urls(at)
    assert second != first
    at.button[0].click().run()  # "New samples"
    assert_clean(at)
    assert at.number_input(key="home_seed").value != 11
    assert image_urls(at) != second


def test_home_reports_an_unreadable_checkpoint_without_a_traceback(runs):
    bad = runs / "broken" / "checkpoints"
    bad.mkdir(parents=True)
    meta = json.loads((checkpoints_dir() / "dcgan_hdf32.json").read_text())
    meta["model"]["width"] = meta["model"]["width"] * 2  # weights no longer fit the description
    meta.pop("tensors_sha256", None)
    (bad / "last.json").write_text(json.dumps(meta))
    (bad / "last.safetensors").write_bytes((checkpoints_dir() / "dcgan_hdf32.safetensors").read_bytes())
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.selectbox(key="checkpoint").set_value(str(bad / "last.json")).run()
    assert not at.exception
    assert any("do not fit" in e.value for e in at.error)


# ------------------------------------------------------------------------------------ train


def fake_run(runs: Path) -> RunFolder:
    """A finished run folder as the training loop writes it (metrics, grids, status)."""
    run = RunFolder(runs / "demo").create()
    cfg = load_config(configs_dir() / "dcgan_hdf32.toml")
    run.config_path.write_text(to_toml(cfg))
    for step in range(10, 210, 10):
        rec = {"step": step, "kimg": step * 0.032, "epoch": step / 12, "loss_D": 1.0 / step ** 0.3,
               "loss_G": 2.0 - 1.0 / step, "D_x": 0.7, "D_G_z": 0.3, "lr_G": 2e-4, "lr_D": 2e-4,
               "images_per_s": 120.0, "time": 0.0}
        if step % 100 == 0:
            rec["fid_pix8_256"] = 500.0 / step
        run.append_metrics(rec)
    for step, value in ((0, 20), (100, 200)):
        (run.samples_dir / f"step_{step:07d}.png").write_bytes(png_bytes(np.full((16, 16, 3), value, np.uint8)))
    run.write_status("finished", step=200, total=200)
    return run


def test_train_page_form_and_live_view(runs):
    run = fake_run(runs)
    save_checkpoint(run.checkpoints_dir / "last", *_copy_of("dcgan_hdf32"))
    at = open_app(page="pages/train.py")
    assert at.selectbox(key="train_preset").value == "dcgan_hdf32"  # the classroom preset
    preset = load_config(configs_dir() / "dcgan_hdf32.toml")
    assert at.number_input(key="tr_dcgan_hdf32_steps").value == preset.train.steps  # the form is built from it
    assert "Start training" in labels(at.button)
    charts = at.get("plotly_chart")
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in charts]
    assert {"Losses", "Discriminator output", "Training speed", "Live quality: fid_pix8_256"} <= set(titles)
    for c in charts:
        layout = json.loads(c.proto.spec)["layout"]
        assert layout["xaxis"]["title"]["text"] and layout["yaxis"]["title"]["text"]
    assert "step 100" in image_captions(at)[0]
    before = image_urls(at)
    at.select_slider(key="grid_step_demo").set_value(0).run()
    assert_clean(at)
    assert image_urls(at) != before and "step 0" in image_captions(at)[0]
    assert {"Continue", "Explore this model"} <= set(labels(at.button))  # a finished run can go on
    at.button(key="train_explore").click().run()
    assert_clean(at)
    assert at.title[0].value == "Latent Explorer"
    assert at.selectbox(key="checkpoint").value == str(run.checkpoint("last"))


def test_train_page_confines_dataset_paths_to_the_workspace(runs):
    at = open_app(page="pages/train.py")
    at.radio(key="tr_dcgan_hdf32_dataset").set_value("folder").run()
    at.text_input(key="tr_dcgan_hdf32_folder").set_value("../../etc").run()
    assert not at.exception
    assert any("outside the workspace" in e.value for e in at.error)
    assert at.button(key="train_start").disabled


# ------------------------------------------------------------------------- latent explorer


def test_latent_explorer_strip_animation_and_walk(runs):
    at = open_app(shipped_path("dcgan_hdf64"), page="pages/latent_explorer.py")
    urls = image_urls(at)
    assert len(urls) == 4 and urls[1].endswith(".gif")  # strip, GIF, walked image, grid walk
    assert all("Display:" in c for i, c in enumerate(image_captions(at)) if i in (0, 3))
    assert len(at.get("download_button")) == 7
    at.slider(key="le_pc0").set_value(2.0).run()
    assert_clean(at)
    moved = image_urls(at)
    assert moved[2] != urls[2] and moved[3] != urls[3]  # the walk follows the slider ...
    assert moved[:2] == urls[:2]                          # ... the strip is not recomputed
    at.slider(key="le_frames").set_value(8).run()
    assert_clean(at)
    assert image_urls(at)[0] != urls[0] and "8 frames" in image_captions(at)[0]
    at.radio(key="le_method").set_value("lerp").run()
    assert_clean(at)
    at.radio(key="le_dir_source").set_value("z").run()
    assert_clean(at)


def test_latent_explorer_uploaded_latents_and_bad_input(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/latent_explorer.py")
    at.text_input(key="le_seeds").set_value("5").run()
    assert not at.exception and any("at least two" in w.value for w in at.warning)
    at.text_input(key="le_seeds").set_value("5, seven").run()
    assert not at.exception and any("seven" in e.value for e in at.error)
    at.get("button_group")[0].set_value("Uploaded .npy").run()
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32))
    at.get("file_uploader")[0].set_value([("keys.npy", buf.getvalue(), "application/octet-stream")]).run()
    assert not at.exception and not at.error
    assert "keys.npy[2]" in image_captions(at)[0]
    at.get("file_uploader")[0].set_value([("bad.npy", b"garbage", "application/octet-stream")]).run()
    assert not at.exception and any("bad.npy" in e.value for e in at.error)


# ------------------------------------------------------------------------------ evaluation


def test_evaluation_distances_and_morphology(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/evaluation.py")
    at.select_slider(key="ev_n").set_value(64).run()
    at.button(key="ev_go").click().run()
    assert_clean(at)
    extractor = at.selectbox(key="ev_extractor").value  # the galaxy encoder when shipped, else pix8
    names = labels(at.metric)
    assert f"fid_{extractor}_64" in names and f"kid_{extractor}_64" in names  # the extractor is in the name
    assert any("Real-vs-real floor" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 5  # one histogram per morphology quantity
    assert any("colour–magnitude diagram needs" in i.value for i in at.info)  # hdf is RGB
    assert any(f"Extractor **{extractor}**" in c.value for c in at.caption)
    if extractor != "pix8":
        at.selectbox(key="ev_extractor").set_value("pix8").run()
        assert_clean(at)
        assert "fid_pix8_64" in labels(at.metric)


def test_evaluation_explains_unusable_reference_folders(runs):
    workspace = runs.parent
    (workspace / "empty").mkdir()
    (workspace / "broken").mkdir()
    (workspace / "broken" / "a.png").write_bytes(b"not an image")
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/evaluation.py")
    at.radio(key="ev_ref").set_value("folder").run()
    for folder, message in (("empty", "holds no image"), ("broken", "a.png"), ("missing", "no such file")):
        at.text_input(key="ev_path").set_value(folder).run()
        if not at.error:
            at.button(key="ev_go").click().run()
        assert not at.exception
        assert any(message in e.value for e in at.error), (folder, [e.value for e in at.error])


@pytest.fixture
def sim_checkpoint(runs) -> str:
    """A g/r/i DCGAN with random weights whose training data is a 128-galaxy sim set."""
    cfg = load_config(configs_dir() / "dcgan_sim64.toml", ["data.count=128", "model.width=8"])
    data = load_dataset("sim", resolution=64, count=128, seed=0, progress=False)
    model_cfg = DCGANConfig(resolution=64, num_bands=3, z_dim=100, width=8)
    torch.manual_seed(0)
    tensors = prefixed("G", Generator(model_cfg).state_dict())
    meta = {"arch": "dcgan", "model": {"arch": "dcgan", **asdict(model_cfg)}, "data": data.description(),
            "config": cfg.to_dict(), "training": {"step": 0}, "metrics": {}}
    return str(save_checkpoint(runs / "sim-fixture" / "checkpoints" / "last", tensors, meta))


def test_evaluation_colour_magnitude_for_a_multiband_model(sim_checkpoint):
    at = open_app(sim_checkpoint, page="pages/evaluation.py")
    at.select_slider(key="ev_n").set_value(64).run()
    at.button(key="ev_go").click().run()
    assert_clean(at)
    assert {"Generated inside the box", "Second real sample inside"} <= set(labels(at.metric))
    cmd = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
    assert cmd["layout"]["shapes"][0]["type"] == "rect"  # the acceptance box
    assert "magnitude" in cmd["layout"]["xaxis"]["title"]["text"]


# ---------------------------------------------------------------------------- memorisation


def test_memorisation_neighbours_distances_and_histograms(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/memorisation.py")
    at.button(key="mem_go").click().run()
    assert_clean(at)
    assert "Flagged as suspects" in labels(at.metric)
    captions = image_captions(at)
    shown, k = at.select_slider(key="mem_show").value, at.number_input(key="mem_k").value
    assert len(captions) == shown * (1 + k)
    first = [float(c.split("d = ")[1]) for c in captions[1 : 1 + k]]
    later = [float(c.split("d = ")[1]) for c in captions[-k:]]
    assert first == sorted(first) and first[0] <= later[0]  # closest (suspect) samples first
    hist = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"].split(" (")[0] for t in hist["data"]} == {"generated → train", "train → other train"}
    at.selectbox(key="mem_metric").set_value("mse").run()  # applies without pressing the button again
    assert_clean(at)
    hist = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "Δ²" in hist["layout"]["xaxis"]["title"]["text"]


# ------------------------------------------------------------------------ workspace paths


def test_confine_keeps_paths_inside_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_WORKSPACE", str(tmp_path))
    (tmp_path / "data").mkdir()
    assert confine("data") == (tmp_path / "data").resolve()
    assert confine(str(tmp_path / "data" / "x.fits")) == (tmp_path / "data" / "x.fits").resolve()
    for escape in ("..", "data/../../etc", "/etc/passwd", "", "   "):
        with pytest.raises(GalaxyGanError):
            confine(escape)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(GalaxyGanError, match="outside the workspace"):
        confine("link/passwd")


def test_shipped_checkpoints_are_listed():
    names = {p.stem for p in list_checkpoints(checkpoints_dir())}
    assert set(SHIPPED) <= names, f"missing shipped checkpoints: {set(SHIPPED) - names}"
