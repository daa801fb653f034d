"""Every page of the Streamlit studio, run headless with ``streamlit.testing.v1.AppTest``.

The pages use the shipped checkpoints (``galaxy_core.paths.checkpoints_dir()``) and the built-in
``hdf`` data; runs go to a fresh folder per test. A multi-band model for the colour-magnitude
diagram is made here with random weights (the page's code path, not the model's quality, is
under test) on a small ``sim`` set; only the projection test needs the 10,000-galaxy simulation
(the shipped StyleGAN's training data), built once per cache.
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
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

    assert [p.title for p in nav.available()] == ["Home", "Train", "Latent Explorer", "Style Mixing",
                                                 "Sky Composer", "Evaluation", "Memorisation"]
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
    assert shown[0] == "dcgan_hdf32 · shipped"  # a first visit shows the classroom model
    assert [label for label in shipped if label.split(" · ")[0] in SHIPPED] == [f"{name} · shipped" for name in SHIPPED]
    assert not any(label.startswith("positions_") for label in shown)  # grids belong to the Sky Composer
    families = {"dcgan", "stylegan", "fastgan", "stackgan", "began", "began_cond"}
    galaxy_models = {p.stem for p in list_checkpoints(checkpoints_dir())
                     if json.loads(p.read_text())["arch"] in families}
    assert {"stylegan_sim64", "fastgan_hdf64", "stackgan_sim128", "began_cond_hdf32"} <= galaxy_models
    assert {f"{name} · shipped" for name in galaxy_models} <= set(shipped)  # every family on every page
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
    assert {"Architecture", "Resolution", "Training steps", "Wall time", "CPU time", "Training data"} <= set(labels(at.metric))
    assert any(name in c.value for c in at.caption)
    captions = image_captions(at)
    assert len(captions) == 1 and "Display:" in captions[0] and "16 samples" in captions[0]
    downloads = labels(at.get("download_button"))
    no_fits = [c.value for c in at.caption if c.value.startswith("No FITS download:")]
    if name == "dcgan_sim64":  # g/r/i fluxes through an invertible stretch: a FITS cube is offered
        assert downloads == ["Grid (PNG)", "Each image (zip)", "Latents (.npy)", "Fluxes (FITS)"] and not no_fits
    else:  # display colours: no FITS, and the page says why
        assert downloads == ["Grid (PNG)", "Each image (zip)", "Latents (.npy)"]
        assert len(no_fits) == 1 and "not fluxes" in no_fits[0]


def test_home_gives_the_wall_time_and_the_cpu_time_apart(runs):
    """The card's wall time was shown as "Training time" and read as CPU time: each clock is named,
    here and in the full model card."""
    at = open_app(shipped_path("fastgan_hdf64"))
    tr = json.loads((checkpoints_dir() / "fastgan_hdf64.json").read_text())["training"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Wall time"] == f"{tr['wall_time_s'] / 60:.1f} min" == "18.0 min"
    assert shown["CPU time"] == f"{tr['cpu_time_s'] / 60:.1f} min" == "9.9 min"
    card = next(c.value for c in at.code if c.value.startswith("architecture: "))
    assert "on cpu; 18.0 min wall time, 9.9 min CPU time" in card


def test_home_metrics_table_is_readable(runs):
    at = open_app(shipped_path("dcgan_hdf32"))
    table = at.dataframe[0].value
    assert list(table.columns) == ["Metric", "Value", "Floor", "Measured by", "Key"]
    rows = dict(zip(table["Key"], table["Metric"]))
    assert rows["kid_galaxy_191"] == "KID · galaxy encoder · 191 samples"
    assert rows["fid_pix8_191"] == "FID · 8×8 pixels · 191 samples"
    assert rows["sgd_morphology"] == "SGD · morphology"
    assert max(len(label) for label in table["Metric"]) <= 36  # short enough for the table's column
    legend = [c.value for c in at.caption if "**Floor**" in c.value]  # what the abbreviations stand for
    assert len(legend) == 1 and "**FID**: Fréchet distance" in legend[0] and "**KID**: kernel distance" in legend[0]
    assert "**SGD · morphology**: Synthetic Galaxy Distance over morphology (Smith et al. 2022)" in legend[0]
    at = open_app(shipped_path("fastgan_hdf32_w16"))  # live metrics against a real set of another size
    table = at.dataframe[0].value
    assert dict(zip(table["Key"], table["Metric"]))["fid_galaxy_256v383"] == "FID · galaxy encoder · 256 vs 383"
    assert any("**256 vs 383**: generated vs real samples" in c.value for c in at.caption)
    at = open_app(shipped_path("dcgan_hdf32"))
    table = at.dataframe[0].value
    assert not any("_" in label for label in table["Metric"])  # no raw keys as labels
    floors = dict(zip(table["Key"], table["Floor"]))
    by = dict(zip(table["Key"], table["Measured by"]))
    assert float(floors["kid_galaxy_191"]) < 0  # the shipped card has a negative KID floor ...
    explained = [c.value for c in at.caption if "negative floor" in c.value]
    assert len(explained) == 1 and "unbiased" in explained[0] and "-4.65" in explained[0]  # ... and it is explained
    assert by["kid_galaxy_191"] == "evaluation 1"
    evaluations = [c.value for c in at.caption if c.value.startswith("**Evaluation")]
    assert len(evaluations) == 1 and "galaxygan evaluate checkpoints/dcgan_hdf32.json" in evaluations[0]
    # a metric logged during training has no floor: a dash, and a caption names it and says why
    assert floors["fid_pix8_256"] == "—" and by["fid_pix8_256"] == "live, in training"
    assert "None" not in table["Floor"].tolist()
    none = [c.value for c in at.caption if c.value.startswith("No floor is recorded for")]
    assert len(none) == 1 and "FID · 8×8 pixels · 256 samples" in none[0], none


def test_home_attributes_each_metric_to_the_evaluation_that_measured_it(runs):
    """Two evaluations with different metrics: each metric keeps its own floor and command."""
    import shutil

    from galaxy_core.metrics.report import record_in_card

    path = fake_run(runs).checkpoints_dir / "m.json"
    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", path.with_suffix(ext))
    first = {"features": {"galaxy": {"names": {"fid": "fid_galaxy_64", "kid": "kid_galaxy_64"},
                                     "generated": {"fid_galaxy_64": 30.0, "kid_galaxy_64": 0.02},
                                     "floor": {"fid_galaxy_64": 3.0, "kid_galaxy_64": 0.001}}},
             "data": "hdf", "n": 64, "floor_definition": "two halves of the held-out stamps"}
    second = {"features": {"pix8": {"names": {"fid": "fid_pix8_64", "kid": "kid_pix8_64"},
                                    "generated": {"fid_pix8_64": 9.0, "kid_pix8_64": 0.5},
                                    "floor": {"fid_pix8_64": 0.9, "kid_pix8_64": 0.05}}},
              "data": "hdf", "n": 64, "floor_definition": "two halves of the held-out stamps"}
    record_in_card(path, first, command="galaxygan evaluate m.json --features galaxy")
    record_in_card(path, second, command="galaxygan evaluate m.json --features pix8")
    at = open_app(str(path))
    table = at.dataframe[0].value
    floors, by = dict(zip(table["Key"], table["Floor"])), dict(zip(table["Key"], table["Measured by"]))
    # the shipped card's own evaluation keeps the metrics nobody measured again
    assert float(floors["kid_galaxy_191"]) < 0 and by["kid_galaxy_191"] == "evaluation 1"
    assert floors["fid_galaxy_64"] == "3" and by["fid_galaxy_64"] == "evaluation 2"
    assert floors["fid_pix8_64"] == "0.9" and by["fid_pix8_64"] == "evaluation 3"
    captions = [c.value for c in at.caption if c.value.startswith("**Evaluation")]
    assert [c.split(":")[0] for c in captions] == ["**Evaluation 1**", "**Evaluation 2**", "**Evaluation 3**"]
    assert "--features galaxy" in captions[1] and "--features pix8" in captions[2]


def test_home_shows_the_latest_memorisation_verdict_and_where_it_comes_from(runs):
    """The card's verdict is on Home with its evaluation, also when a later evaluation gave none."""
    import shutil

    from galaxy_core.metrics.report import record_in_card

    at = open_app(shipped_path("dcgan_sim64"))  # its evaluation found no sign of memorisation
    assert [s.value for s in at.success if "**Memorisation** (evaluation 2, 2026-12-03)" in s.value
            and "no sign of memorisation" in s.value]
    at = open_app(shipped_path("dcgan_hdf32"))  # no held-out images: no verdict, and why
    said = [c.value for c in at.caption if c.value.startswith("**Memorisation**")]
    assert len(said) == 1 and "no verdict: no held-out real images exist" in said[0], said

    path = fake_run(runs).checkpoints_dir / "m.json"
    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", path.with_suffix(ext))
    values = {"fid_pix8_64": 9.0, "kid_pix8_64": 0.5}
    summary = {"features": {"pix8": {"names": {"fid": "fid_pix8_64", "kid": "kid_pix8_64"}, "generated": values,
                                     "floor": {"fid_pix8_64": 0.9, "kid_pix8_64": 0.05}}},
               "data": "hdf", "n": 64, "floor_definition": "two halves of the held-out stamps"}
    record_in_card(path, {**summary, "memorised": True}, command="galaxygan evaluate m.json --held-out h")
    record_in_card(path, {**summary, "memorised": None, "memorised_note": "No verdict: no held-out images."},
                   command="galaxygan evaluate m.json")
    at = open_app(str(path))
    warned = [w.value for w in at.warning if w.value.startswith("**Memorisation**")]
    assert len(warned) == 1 and "(evaluation 2, " in warned[0] and "memorising" in warned[0], warned
    assert "Evaluation 3 (" in warned[0] and "gave no verdict (no held-out images.)" in warned[0]
    captions = [c.value for c in at.caption if c.value.startswith("**Evaluation 2**")]
    assert len(captions) == 1 and "kept for its memorisation verdict" in captions[0], captions


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
               "images_per_s": 120.0, "time": 0.0, "cpu_s": 0.5 * step, "k_t": 0.01 * step / 10}
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
    # every preset offered can be started from the form: not the Sky Composer's [sky] file, and the
    # position models (grid datasets) are named in the help as command-line presets
    offered = set(at.selectbox(key="train_preset").options)
    assert not any(o.startswith(("sky_default", "positions_hdf")) for o in offered) and len(offered) >= 8
    assert "positions_hdf_cond" in at.selectbox(key="train_preset").help
    preset = load_config(configs_dir() / "dcgan_hdf32.toml")
    assert at.number_input(key="tr_dcgan_hdf32_steps").value == preset.train.steps  # the form is built from it
    assert "Start training" in labels(at.button)
    charts = at.get("plotly_chart")
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in charts]
    assert {"Losses", "Discriminator output", "Training speed", "Live quality: fid_pix8_256"} <= set(titles)
    assert [t for t in titles if t.startswith("Live quality")] == ["Live quality: fid_pix8_256"]  # not cpu_s, k_t
    assert "k_t" in titles and "cpu_s" not in titles  # a family statistic, drawn apart from quality
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


def _one_band_checkpoint(runs: Path) -> str:
    """A 1-band (r) 32 px DCGAN with random weights, listed as a run's checkpoint."""
    model_cfg = DCGANConfig(resolution=32, num_bands=1, z_dim=100, width=4)
    torch.manual_seed(0)
    meta = {"arch": "dcgan", "model": {"arch": "dcgan", **asdict(model_cfg)},
            "data": {"name": "r-band", "channels": ["r"], "kind": "physical", "resolution": 32},
            "training": {"step": 5}, "metrics": {}}
    return str(save_checkpoint(runs / "oneband" / "checkpoints" / "last",
                               prefixed("G", Generator(model_cfg).state_dict()), meta))


def test_train_page_offers_no_extra_rotation_for_a_position_model(runs):
    """The engine refuses augment.rotate on grids of cell classes (GridKind); the form offered the
    choice anyway for a position model. It is hidden there, with a note why, and is sent as none."""
    at = open_app(page="pages/train.py")
    assert at.selectbox(key="tr_dcgan_hdf32_rot").options == ["none", "45° steps", "any angle"]
    at.selectbox(key="tr_dcgan_hdf32_rot").set_value("45").run()
    at.selectbox(key="tr_dcgan_hdf32_arch").set_value("positions").run()
    assert_clean(at)
    assert not [w for w in at.selectbox if w.key == "tr_dcgan_hdf32_rot"]
    assert any(c.value.startswith("No extra rotation for a position model") for c in at.caption)
    assert {"Flip ↔", "Flip ↕", "Rotate 90°"} <= set(labels(at.checkbox))  # the exact symmetries stay
    at.selectbox(key="tr_dcgan_hdf32_arch").set_value("dcgan").run()
    assert_clean(at)
    assert [w.key for w in at.selectbox if w.key == "tr_dcgan_hdf32_rot"] == ["tr_dcgan_hdf32_rot"]


def test_train_page_fine_tune_checks_bands(runs):
    one_band = _one_band_checkpoint(runs)
    at = open_app(page="pages/train.py")
    at.radio(key="tr_dcgan_hdf32_start").set_value("checkpoint").run()
    at.selectbox(key="tr_dcgan_hdf32_init").set_value(one_band).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("1-band images (r)" in e and "3 band(s) (R/G/B)" in e for e in errors), errors
    assert at.button(key="train_start").disabled
    at.selectbox(key="tr_dcgan_hdf32_init").set_value(shipped_path("dcgan_sim64")).run()
    assert_clean(at)  # same number of bands: allowed, with a warning that they differ
    assert any("trained on g/r/i; this data is R/G/B" in w.value for w in at.warning)
    assert not at.button(key="train_start").disabled
    at.selectbox(key="tr_dcgan_hdf32_init").set_value(shipped_path("dcgan_hdf64")).run()
    assert_clean(at)
    assert not any("bands" in w.value or "channels" in w.value for w in at.warning)
    assert any("resolution set to 64 px" in w.value for w in at.warning)


def test_train_page_shows_the_step_a_run_resumes_from_and_who_writes_it(runs):
    run = fake_run(runs)
    run.write_status("starting", pid=os.getpid(), step=150, total=400, message="resuming from step 150")
    with run.lock(heartbeat_s=0):
        at = open_app(page="pages/train.py")
        assert not at.exception
        bars = [p.proto.text for p in at.get("progress")]
        assert "starting: resuming at step 150 of 400" in bars, bars
        assert any(c.value.startswith(f"Written by process {os.getpid()}") for c in at.caption)
    run.write_status("running", pid=os.getpid(), step=150, total=400)
    at.run()  # the lock is gone but the status still says running: the writer died
    assert list(at.dataframe[0].value["state"]) == ["failed"]
    assert any("The run failed" in e.value for e in at.error)


def test_train_page_refuses_a_taken_run_name(runs):
    (runs / "taken").mkdir()
    at = open_app(page="pages/train.py")
    at.text_input(key="tr_dcgan_hdf32_name").set_value("taken").run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert any("a run named 'taken' already exists" in e.value for e in at.error)
    assert not (runs / "taken" / "status.json").exists()


def test_train_page_confines_dataset_paths_to_the_workspace(runs):
    at = open_app(page="pages/train.py")
    at.radio(key="tr_dcgan_hdf32_dataset").set_value("folder").run()
    at.selectbox(key="tr_dcgan_hdf32_res").set_value(64).run()
    at.slider(key="tr_dcgan_hdf32_crop").set_value(0.5).run()
    at.text_input(key="tr_dcgan_hdf32_folder").set_value("../../etc").run()
    assert not at.exception
    assert any("outside the workspace" in e.value for e in at.error)
    assert at.button(key="train_start").disabled
    # the bad path resets none of the other data settings
    assert (at.selectbox(key="tr_dcgan_hdf32_res").value, at.slider(key="tr_dcgan_hdf32_crop").value) == (64, 0.5)
    at.text_input(key="tr_dcgan_hdf32_folder").set_value("").run()
    assert (at.selectbox(key="tr_dcgan_hdf32_res").value, at.slider(key="tr_dcgan_hdf32_crop").value) == (64, 0.5)


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


def test_latent_explorer_holds_a_conditional_model_s_class(runs):
    # a conditional model without labels takes label i % 3 for frame i: a path changed class
    # from frame to frame; the page holds one chosen class for every image
    at = open_app(shipped_path("began_cond_hdf32"), page="pages/latent_explorer.py")
    assert at.selectbox(key="le_class").value == 0
    captions = image_captions(at)
    assert "class small throughout" in captions[0]
    downloads = labels(at.get("download_button"))
    assert downloads.count("Labels (.npy)") == 2  # the path's and the walked image's
    before = image_urls(at)
    at.selectbox(key="le_class").set_value(2).run()
    assert_clean(at)
    after = image_urls(at)
    assert "class large throughout" in image_captions(at)[0]
    assert after[0] != before[0] and after[2] != before[2]  # the strip and the walked image follow the class


def test_home_says_which_class_each_image_of_a_conditional_model_has(runs):
    at = open_app(shipped_path("began_cond_hdf32"))
    assert any("class labels in turn, small, medium, large" in c for c in image_captions(at))
    assert "Labels (.npy)" in labels(at.get("download_button"))


def test_latent_explorer_a_seed_typo_resets_nothing_else(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/latent_explorer.py")
    at.slider(key="le_frames").set_value(8).run()
    at.radio(key="le_method").set_value("lerp").run()
    at.slider(key="le_fps").set_value(12).run()
    at.text_input(key="le_seeds").set_value("4, 5x").run()
    assert not at.exception and any("5x" in e.value for e in at.error)
    assert (at.slider(key="le_frames").value, at.radio(key="le_method").value, at.slider(key="le_fps").value) \
        == (8, "lerp", 12)  # still drawn, with the user's values
    at.text_input(key="le_seeds").set_value("4, 5").run()
    assert_clean(at)
    assert (at.slider(key="le_frames").value, at.radio(key="le_method").value) == (8, "lerp")
    assert "lerp through seed 4, seed 5 in 8 frames" in image_captions(at)[0]
    at.text_input(key="le_seeds").set_value(", ".join(str(i) for i in range(10))).run()
    assert_clean(at)  # more keys than frames: frames follow the keys, the slider keeps its value
    assert at.slider(key="le_frames").value == 8 and "in 10 frames" in image_captions(at)[0]


def test_latent_explorer_offers_fits_for_a_band_model(runs):
    at = open_app(shipped_path("dcgan_sim64"), page="pages/latent_explorer.py")
    assert_clean(at)
    downloads = labels(at.get("download_button"))
    assert downloads.count("Fluxes (FITS)") == 2 and len(downloads) == 9
    assert not any(c.value.startswith("No FITS download:") for c in at.caption)


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


def test_latent_explorer_projects_a_real_galaxy_and_starts_the_path_there(runs):
    # the page opens the checkpoint's own training data: a copy of the shipped model whose card
    # names 128 simulated galaxies, which a fresh machine prepares in seconds (10,000 take minutes)
    tensors, meta = _copy_of("stylegan_sim64")
    meta["config"]["data"]["count"] = 128
    meta.pop("tensors_sha256", None)
    checkpoint = str(save_checkpoint(runs / "sim-small" / "checkpoints" / "last", tensors, meta))
    at = open_app(checkpoint, page="pages/latent_explorer.py")
    assert {"le_pj_go", "le_gs_pc0"} <= {b.key for b in at.button} | {s.key for s in at.slider}
    at.number_input(key="le_pj_index").set_value(3)
    at.slider(key="le_pj_steps").set_value(5)
    at.toggle(key="le_pj_chi2").set_value(True)
    at.button(key="le_pj_go").click().run()
    assert_clean(at)
    captions = image_captions(at)
    panel = [c for c in captions if c.startswith(("Target: sim #3", "Reconstruction in w", "Residual target"))]
    assert len(panel) == 3, captions  # target, reconstruction and residual side by side
    curve = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    curve = [c for c in curve if c["layout"]["title"]["text"] == "Projection loss"]
    assert len(curve) == 1 and len(curve[0]["data"][0]["y"]) == 5  # one point per step
    assert {"Pixel MSE (model range)", "Reduced χ² (flux units)"} <= set(labels(at.metric))
    assert {"ws + noise maps (.npz): exact", "Latent w (.npz)", "Reconstruction (PNG)",
            "Fluxes (FITS)"} <= set(labels(at.get("download_button")))
    # the figures shown are those of the reconstruction shown, and the .npz regenerates it
    from galaxy_core.explore.projection import render_projection
    from galaxy_core.models.pretrained import load_pretrained

    proj = at.session_state["le_projection"]
    mse = float(np.mean((proj["target"].astype(np.float64) - proj["reconstruction"]) ** 2))
    (shown,) = [m.value for m in at.metric if m.label == "Pixel MSE (model range)"]
    assert shown == f"{mse:.4g}"
    model = load_pretrained(checkpoint)
    np.testing.assert_allclose(render_projection(model, proj["npz"]), proj["reconstruction"], rtol=0, atol=1e-6)
    assert any("npz** regenerates the reconstruction exactly" in c.value and "constant noise" in c.value
               for c in at.caption)
    at.button(key="le_pj_use").click().run()
    assert_clean(at)
    assert image_captions(at)[0].startswith("lerp in w through projected sim #3, seed 1, seed 2, seed 3")

    # a FITS file of several images (the sampler's samples.fits) asks which one to project
    from galaxy_core.io.fits import write_fits_cube

    flux = model.to_flux(model.generate(model.latents(5, 3)))
    flux[1, 0] = 0.5  # image 1 has a blank band: left out, and the others keep their own numbers
    cube = write_fits_cube(runs / "samples.fits", flux, bands=model.channels)
    at.session_state["le_pj_src"] = "upload"
    at.run()
    (uploader,) = [u for u in at.get("file_uploader") if u.key == "le_pj_upload"]
    uploader.set_value([("samples.fits", cube.read_bytes(), "application/fits")]).run()
    assert_clean(at)
    index = at.selectbox(key="le_pj_upload_index")
    assert index.options == ["samples.fits#0", "samples.fits#2"]
    index.set_value(1)
    at.slider(key="le_pj_steps").set_value(5)
    at.button(key="le_pj_go").click().run()
    assert_clean(at)
    assert not at.warning, [w.value for w in at.warning]
    assert any(c.startswith("Target: samples.fits#2") for c in image_captions(at)), image_captions(at)

    # a stamp in other bands is refused, naming them; another pixel scale is a warning beside the target
    def upload(name, path):
        (u,) = [u for u in at.get("file_uploader") if u.key == "le_pj_upload"]
        u.set_value([(name, path.read_bytes(), "application/fits")]).run()

    upload("uzy.fits", write_fits_cube(runs / "uzy.fits", flux[0], bands=["u", "z", "y"], bunit="nanomaggy"))
    assert not at.exception and any("uzy.fits: bands u, z, y, but" in e.value for e in at.error), at.error
    upload("decals.fits", write_fits_cube(runs / "decals.fits", flux[0], bands=model.channels, bunit="nanomaggy",
                                          pixel_scale_arcsec=0.262))
    assert_clean(at)
    assert [w.value for w in at.warning if w.value.startswith("decals.fits: pixels of 0.262 arcsec")], at.warning


def test_latent_explorer_ganspace_acts_on_the_chosen_layers(runs):
    from galaxy_core.explore import style
    from galaxy_core.models.pretrained import load_pretrained

    at = open_app(shipped_path("stylegan_hdf64_ft"), page="pages/latent_explorer.py")
    single = [i for i, c in enumerate(image_captions(at)) if c.startswith("Seed 7 moved by the sliders")]
    assert len(single) == 1 and "on coarse, middle, fine" in image_captions(at)[single[0]]
    model = load_pretrained(shipped_path("stylegan_hdf64_ft"))
    start = style.w_plus(style.mapping(model, model.latents(7, 1).numpy()), model.G.num_ws)[0]
    np.testing.assert_array_equal(at.session_state["le_ganspace_ws"]["ws"], start)  # strength 0: the seed's styles
    before = image_urls(at)
    at.slider(key="le_gs_pc0").set_value(2.0)
    at.multiselect(key="le_gs_ranges").set_value(["fine"]).run()
    assert_clean(at)
    assert "on fine" in image_captions(at)[single[0]]
    assert image_urls(at)[single[0]] != before[single[0]] and image_urls(at)[:2] == before[:2]  # the strip stays
    ws = at.session_state["le_ganspace_ws"]["ws"]
    fine = style.layer_mask(model, "fine")
    np.testing.assert_array_equal(ws[~fine], start[~fine])  # other layers: bit-identical styles
    assert np.all(np.abs(ws[fine] - start[fine]).max(axis=1) > 0.1)
    shown, plain = style.synthesize(model, np.stack([ws, start]))
    assert np.abs(shown - plain).mean() > 1e-3  # ... and the image changes


# ------------------------------------------------------------------------------ evaluation


def test_evaluation_distances_and_morphology(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/evaluation.py")
    at.select_slider(key="ev_n").set_value(64).run()
    at.button(key="ev_go").click().run()
    assert_clean(at)
    extractor = at.selectbox(key="ev_extractor").value  # the galaxy encoder when shipped, else pix8
    names = labels(at.metric)
    assert f"fid_{extractor}_64v64" in names and f"kid_{extractor}_64v64" in names  # extractor and protocol
    assert any("Real-vs-real floor" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 5  # one histogram per morphology quantity
    assert any("colour–magnitude diagram needs" in i.value for i in at.info)  # hdf is RGB
    assert any(f"Extractor **{extractor}**" in c.value for c in at.caption)
    if extractor != "pix8":
        at.selectbox(key="ev_extractor").set_value("pix8").run()
        assert_clean(at)
        assert "fid_pix8_64v64" in labels(at.metric)


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


def test_evaluation_prepares_a_reference_folder_as_the_checkpoint_s_training_data(runs):
    # the page prepared a folder reference at crop 1.0 whatever the checkpoint was trained with,
    # so its scores and floor differed from `galaxygan evaluate --data` (FID 4938 / floor 61.3
    # against 4687 / 88.3 for a crop-0.5 model)
    import re

    from galaxy_core.metrics.report import evaluate_checkpoint

    workspace = runs.parent
    data = load_dataset("hdf", resolution=64, progress=False)
    folder = workspace / "stamps"
    folder.mkdir()
    for i in range(40):
        rgb = ((np.moveaxis(data.to_model_range(np.array([i]))[0], 0, -1) + 1) * 127.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"g{i:03d}.png")
    tensors, meta = _copy_of("dcgan_hdf32")
    meta["config"]["data"]["crop"] = 0.5
    meta.pop("tensors_sha256", None)
    checkpoint = str(save_checkpoint(runs / "cropped" / "checkpoints" / "last", tensors, meta))
    summary = evaluate_checkpoint(checkpoint, report_dir=workspace / "report", data=str(folder), n=64,
                                  extractors=("pix8",), morphology=False, memorisation=False, png=False)
    pix8 = summary["features"]["pix8"]  # 40 images: 20 per real sample, 20 generated
    at = open_app(checkpoint, page="pages/evaluation.py")
    at.radio(key="ev_ref").set_value("folder").run()
    at.text_input(key="ev_path").set_value("stamps").run()
    at.select_slider(key="ev_n").set_value(64).run()
    at.selectbox(key="ev_extractor").set_value("pix8").run()
    at.button(key="ev_go").click().run()
    assert_clean(at)
    floor = next(float(m.group(1)) for c in at.caption if (m := re.search(r"Real-vs-real floor ([0-9.]+);", c.value)))
    assert floor == pytest.approx(pix8["floor"]["fid_pix8_20v20"], rel=1e-3)
    shown = {m.label: float(m.value) for m in at.metric if m.label == "fid_pix8_20v20"}
    assert shown["fid_pix8_20v20"] == pytest.approx(pix8["generated"]["fid_pix8_20v20"], rel=1e-3)


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


@pytest.fixture
def chain_checkpoint(runs) -> str:
    """The shipped StackGAN stage II (chained on the shipped DCGAN stage I) with its card's training
    data cut to a 128-galaxy sim set, so the 128 px reference is quick to prepare."""
    tensors, meta = _copy_of("stackgan_sim128")
    meta["config"]["data"]["count"] = 128
    meta.pop("tensors_sha256", None)
    return str(save_checkpoint(runs / "chain" / "checkpoints" / "last", tensors, meta))


def test_a_chain_on_latent_explorer_evaluation_and_memorisation(chain_checkpoint):
    at = open_app(chain_checkpoint, page="pages/latent_explorer.py")
    captions = image_captions(at)
    stage1 = [c for c in captions if c.startswith("stage1: 64 px")]
    stage2 = [c for c in captions if c.startswith("stage2: 128 px")]
    assert len(stage1) == 2 and len(stage2) == 2  # the strip and the moved image, at both stages
    assert "Fluxes (FITS)" in labels(at.get("download_button"))
    at.switch_page("pages/evaluation.py").run()
    assert_clean(at)  # evaluation of the final stage against 128 px real data
    assert any("Chained model: stage1 dcgan_sim64 (64 px)" in c.value for c in at.caption)
    at.select_slider(key="ev_n").set_value(64).run()
    at.button(key="ev_go").click().run()
    assert_clean(at)
    captions = image_captions(at)
    assert captions[0].startswith("Real (first 16)") and captions[1].startswith("Generated (first 16)")
    assert [c.split(" · ")[0] for c in captions[2:4]] == ["stage1: 64 px, PNG enlarged ×2", "stage2: 128 px, PNG enlarged ×1"]
    extractor = at.selectbox(key="ev_extractor").value
    assert f"fid_{extractor}_64v64" in labels(at.metric)  # 64 generated 128 px images vs 64 real ones
    assert {"Generated inside the box", "Second real sample inside"} <= set(labels(at.metric))
    at.switch_page("pages/memorisation.py").run()
    at.select_slider(key="mem_n").set_value(16).run()
    at.button(key="mem_go").click().run()
    assert_clean(at)
    assert "Flagged as suspects" in labels(at.metric)  # sim: a fresh simulation gives the verdict
    captions = image_captions(at)
    shown, k = at.select_slider(key="mem_show").value, at.number_input(key="mem_k").value
    assert len(captions) == shown * (2 + k)  # stage I, the final sample and k neighbours per panel
    assert captions[0].endswith("stage1: 64 px") and captions[1].startswith("generated #")


# ---------------------------------------------------------------------------- memorisation


def test_memorisation_neighbours_distances_and_histograms(runs):
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/memorisation.py")
    at.button(key="mem_go").click().run()
    assert_clean(at)
    assert "Flagged as suspects" not in labels(at.metric)  # hdf has no held-out images: no verdict
    assert any(i.value.startswith("No verdict") for i in at.info)
    captions = image_captions(at)
    shown, k = at.select_slider(key="mem_show").value, at.number_input(key="mem_k").value
    assert len(captions) == shown * (1 + k)
    first = [float(c.split("d = ")[1]) for c in captions[1 : 1 + k]]
    later = [float(c.split("d = ")[1]) for c in captions[-k:]]
    assert first == sorted(first) and first[0] <= later[0]  # closest (suspect) samples first
    hist = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"].split(" (")[0] for t in hist["data"]} == {"generated → nearest training",
                                                                "training → nearest other training"}
    assert all(c.split(" · ")[0].startswith("hdf #") for c in captions if " · d = " in c)  # training images named
    at.selectbox(key="mem_metric").set_value("l1").run()  # applies without pressing the button again
    assert_clean(at)
    hist = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "|Δ|" in hist["layout"]["xaxis"]["title"]["text"]


def test_memorisation_with_training_images_given_as_held_out_gives_no_verdict_and_says_why(runs):
    """Held-out images that are the model's own training images would pull the threshold to 0
    and hide copying: they are left out, and with none left there is no verdict, which says so."""
    from PIL import Image

    from galaxy_core.explore.evaluation import open_reference, training_data
    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.io.render import to_rgb

    own = training_data(read_meta(shipped_path("dcgan_hdf32")))
    train = open_reference(**own)
    folder = runs.parent / "held"
    folder.mkdir()
    for i, rgb in enumerate(to_rgb(train.to_model_range(np.arange(12)), train.channels)):
        Image.fromarray(rgb).save(folder / f"copy{i:02d}.png")
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/memorisation.py")
    at.text_input(key="mem_held").set_value("held").run()
    at.button(key="mem_go").click().run()
    assert_clean(at)
    assert "Flagged as suspects" not in labels(at.metric)
    (info,) = [i.value for i in at.info if i.value.startswith("No verdict")]
    assert "12 of the 12 held-out images are training images" in info, info


def test_memorisation_with_near_copies_of_training_images_as_held_out_gives_no_verdict(runs):
    """Held-out images that are re-saved training galaxies with a little noise are not left out as
    copies, but pull the threshold far down: the page shows the numbers and no verdict, with why."""
    from PIL import Image

    from galaxy_core.explore.evaluation import open_reference, training_data
    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.io.render import to_rgb

    own = training_data(read_meta(shipped_path("dcgan_hdf32")))
    train = open_reference(**own)
    folder = runs.parent / "held"
    folder.mkdir()
    x = train.to_model_range(np.arange(16))
    x = np.clip(x + np.random.default_rng(0).normal(0, 0.05, x.shape), -1, 1).astype(np.float32)
    for i, rgb in enumerate(to_rgb(x, train.channels)):
        Image.fromarray(rgb).save(folder / f"resaved{i:02d}.png")
    at = open_app(shipped_path("dcgan_hdf32"), page="pages/memorisation.py")
    at.text_input(key="mem_held").set_value("held").run()
    at.button(key="mem_go").click().run()
    assert_clean(at)
    assert "Flagged as suspects" in labels(at.metric)  # a threshold was computed, but gives no verdict
    assert not [s.value for s in at.success]
    (said,) = [w.value for w in at.warning if w.value.startswith("No verdict")]
    assert said.startswith("No verdict: the held-out reference is not independent of the training set: the held-out "
                           "images sit only 0."), said
    assert "No sign of memorisation" not in said


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


def test_home_shows_both_stages_of_a_chained_checkpoint(runs):
    at = open_app(shipped_path("stackgan_sim128"))
    captions = image_captions(at)
    assert len(captions) == 3 and "16 samples" in captions[0]
    assert captions[1].startswith("stage1: 64 px") and captions[2].startswith("stage2: 128 px")


def test_data_prepared_on_first_use_shows_a_progress_bar_and_removes_it(tmp_path, monkeypatch, noise_pngs):
    """A reference folder the process has not seen is prepared under a progress bar that moves
    with the decoded images and is gone when the page has finished."""
    from streamlit.delta_generator import DeltaGenerator

    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    folder = noise_pngs(tmp_path / "reference", 30, name="g{i:02d}.png")
    shown = []
    real_progress = DeltaGenerator.progress

    def progress(self, value, text=None):  # the real element, its values recorded
        shown.append((value, text))
        return real_progress(self, value, text=text)

    monkeypatch.setattr(DeltaGenerator, "progress", progress)
    script = (f"import streamlit as st\nfrom studio_ui import state\n"
              f"ds = state.dataset(state.data_key({str(folder)!r}, resolution=32))\nst.write(f'n={{len(ds)}}')\n")
    at = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    assert not at.exception and [m.value for m in at.markdown] == ["n=30"]
    assert len(at.get("progress")) == 0  # removed once the data is ready
    values = [v for v, _ in shown]
    phases = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
    assert len(phases) == 1  # hashing the files, then decoding them: each fills the bar once
    for part in (values[: phases[0]], values[phases[0]:]):
        assert part == sorted(part) and part[0] == 0.0 and part[-1] == 1.0 and len(part) >= 10
    assert all("reference (32 px" in t for _, t in shown) and "30 of 30" in shown[-1][1]
    stages = [t.split(": ")[1].split(",")[0] for _, t in shown]  # each bar names the stage it counts
    assert set(stages[: phases[0]]) == {"hashing files"} and set(stages[phases[0]:]) == {"decoding images"}
    shown.clear()
    at.run()  # prepared in this process already: no bar
    assert not at.exception and shown == []


def test_a_run_checkpoint_is_named_with_its_run_and_says_why_it_has_no_metrics(runs):
    """A run's ``last`` is shown and downloaded as ``demo_last`` (two runs' ``last`` never share a
    file name), and weights saved between two live evaluations are not said to come from a run
    whose evaluation was off."""
    run = fake_run(runs)
    tensors, meta = _copy_of("dcgan_hdf32")
    meta = {**meta, "metrics": {}, "training": {**meta["training"], "step": 258}}
    meta["config"]["log"]["eval_every"] = 250
    path = save_checkpoint(run.checkpoints_dir / "last", tensors, meta)
    at = open_app(str(path))
    assert any("demo_last" in s.value for s in at.subheader)
    captions = " ".join(c.value for c in at.caption)
    assert "live evaluation ran every 250 steps and this checkpoint is from step 258" in captions
    assert "evaluation was off" not in captions
