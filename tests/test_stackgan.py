"""StackGAN stage II chained after a DCGAN stage I: the generator's layout, the dual loss, chained
sampling, training from the example config through the CLI, exact resume, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.errors import CheckpointError, ConfigError
from galaxy_core.io.checkpoint import checkpoint_id, load_checkpoint, read_meta
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.models.registry import get_arch
from galaxy_core.models.stackgan import Generator, ResBlock, StackGANConfig, num_conv_layers, pixel_loss, stage1_path
from galaxy_core.train.run import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ROOT / "checkpoints" / "dcgan_sim64.json"
TINY = ["data.count=64", "model.width=8", "model.final_width=16", "model.d_width=8", "train.batch_size=4",
        "train.device=cpu", "train.threads=1", "log.metrics_every=2", "log.sample_every=4",
        "log.checkpoint_every=2", "log.eval_every=0", "log.grid_size=4"]


def test_generator_maps_64_to_128_with_its_residual_paths():
    torch.manual_seed(0)
    cfg = StackGANConfig(resolution=128, num_bands=3, width=8, final_width=16)
    G = Generator(cfg).eval()
    assert num_conv_layers(G) == 16
    first = G.bottleneck[0]
    assert (first.kernel_size, first.stride) == ((4, 4), (2, 2))
    assert len(G.blocks) == 6 and all(isinstance(b, ResBlock) for b in G.blocks)
    assert G.up1[0].out_channels == 16 and G.to_img.in_channels == 16 and G.to_img.out_channels == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 15  # all but the tanh layer
    low = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = G(low)
        # the forward pass written out: bottleneck, blocks, + long residual, two doublings
        h0 = G.bottleneck(low)
        assert h0.shape == (2, 8, 32, 32)
        h = G.blocks(h0)
        blk = G.blocks[0]  # each block adds its input back
        torch.testing.assert_close(blk(h0), F.relu(h0 + blk.conv2(blk.conv1(h0))))
        h = G.mid(h) + h0
        h = G.up1(F.interpolate(h, scale_factor=2, mode="nearest"))
        want = torch.tanh(G.to_img(F.interpolate(h, scale_factor=2, mode="nearest")))
    assert out.shape == (2, 3, 128, 128) and out.abs().max() <= 1
    torch.testing.assert_close(out, want)


def test_pixel_loss_by_hand():
    fake = torch.tensor([[[[1.0, 0.0]], [[0.5, -1.0]]]])  # (1, 2 bands, 1, 2)
    real = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])
    # band sums: fake (1.5, -1.0), real (0, 0) -> ((1.5)^2 + 1^2) / 2
    assert float(pixel_loss("band_sum", fake, real)) == pytest.approx((2.25 + 1.0) / 2)
    assert float(pixel_loss("per_band", fake, real)) == pytest.approx((1 + 0 + 0.25 + 1) / 4)
    # opposite errors in two bands cancel in the band sum (the paper's definition)
    assert float(pixel_loss("band_sum", torch.tensor([[[[0.3]], [[-0.3]]]]), torch.zeros(1, 2, 1, 1))) == 0


def test_dual_objective_weights_adversarial_and_pixel_terms():
    from galaxy_core.config import load_config
    from galaxy_core.models.family import StepContext

    fam = get_arch("stackgan")
    cfg = StackGANConfig(resolution=64, num_bands=1, width=4, final_width=4, d_width=4, res_blocks=1)
    torch.manual_seed(1)
    nets = fam.build(cfg)
    train_cfg = load_config(None, []).train
    obj = fam.objective_cls(cfg, train_cfg, nets)
    hi = torch.rand(2, 1, 64, 64) * 2 - 1
    batch = {"image": hi, "low": F.avg_pool2d(hi, 2)}
    ctx = StepContext(step=0, batch_size=2, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      model_cfg=cfg, family=fam, augment=lambda x: x, observe=lambda x: None, amp=False)
    obj.run("D", batch, ctx)
    loss, stats = obj.run("G", batch, ctx)
    with torch.no_grad():
        fake = nets["G"](batch["low"])
        adv = F.binary_cross_entropy_with_logits(nets["D"](fake), torch.ones(2))  # train.loss = bce
        pix = ((fake[:, 0] - hi[:, 0]) ** 2).mean()  # one band: the band sum is the band
    assert float(stats["loss_adv"]) == pytest.approx(float(adv), rel=1e-5)
    assert float(stats["loss_pix"]) == pytest.approx(float(pix), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.001 * float(adv) + float(pix), rel=1e-5)


def test_stage1_must_fit_the_data():
    fam = get_arch("stackgan")

    class Data:
        resolution, num_bands = 128, 3

    assert fam.resolve_config({"stage1": str(STAGE1)}, Data)["z_dim"] == 100
    with pytest.raises(ConfigError, match="model.stage1"):
        fam.resolve_config({"stage1": str(ROOT / "checkpoints" / "dcgan_hdf32.json")}, Data)
    with pytest.raises(ConfigError, match="model.stage1: no checkpoint"):
        stage1_path("checkpoints/nothing_here.json")
    assert stage1_path("checkpoints/dcgan_sim64.json").resolve() == STAGE1.resolve()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, straight_and_split):
    return straight_and_split(tmp_path_factory.mktemp("stackgan"), str(ROOT / "configs" / "stackgan_sim128.toml"), TINY)


def test_trains_from_the_example_config_and_resumes_exactly(runs):
    a = read_metrics(runs / "straight" / "metrics.jsonl")
    b = read_metrics(runs / "split" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4]
    for ra, rb in zip(a, b):
        for key in ("loss_D", "loss_G", "loss_adv", "loss_pix"):
            assert np.isfinite(ra[key]) and ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key
        assert ra["loss_G"] == pytest.approx(0.001 * ra["loss_adv"] + ra["loss_pix"], rel=1e-4)
    ta, _ = load_checkpoint(runs / "straight" / "checkpoints" / "last.json")
    tb, _ = load_checkpoint(runs / "split" / "checkpoints" / "last.json")
    for k in ta:
        if k.startswith(("G_ema.", "D.")):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)
    # the card records the stage-I checkpoint by path and content hash
    ref = read_meta(runs / "straight" / "checkpoints" / "last.json")["engine"]["references"]["stage1"]
    assert Path(ref["path"]).resolve() == STAGE1.resolve() and ref["sha"] == checkpoint_id(STAGE1)


def test_chained_sample_is_deterministic_and_starts_from_stage1(runs):
    model = load_pretrained(runs / "straight" / "checkpoints" / "last.json")
    z = model.latents(7, 3)
    s = model.generate_stages(z)
    assert list(s) == ["stage1", "stage2"]
    assert s["stage1"].shape == (3, 3, 64, 64) and s["stage2"].shape == (3, 3, 128, 128)
    again = model.generate_stages(model.latents(7, 3))
    np.testing.assert_array_equal(s["stage2"], again["stage2"])
    np.testing.assert_array_equal(s["stage1"], load_pretrained(STAGE1).generate(z))
    np.testing.assert_array_equal(model.generate(z), s["stage2"])
    # stage II sampled with batch-norm statistics of its own (EMA) weights, estimated on stage-I output
    from galaxy_core.models.bnstats import state_key

    assert model.nets["G"]._bn_calibrated == state_key(model.nets["G"])
    # the sample grid shows both stages side by side (two 2x2 grids of 128 px tiles)
    from PIL import Image

    grid = np.asarray(Image.open(runs / "straight" / "samples" / "step_0000004.png"))
    assert grid.shape[0] < grid.shape[1] and grid.shape[1] > 2 * 2 * 128


def test_generate_without_stage1_says_what_is_missing():
    fam = get_arch("stackgan")
    cfg = StackGANConfig(resolution=64, num_bands=1, width=4, final_width=4, d_width=4)
    with pytest.raises(ValueError, match="stage-I"):
        fam.generate(fam.build(cfg), torch.zeros(1, 100), refs={})


def test_example_config_shows_every_model_field():
    from dataclasses import fields

    text = (ROOT / "configs" / "stackgan_sim128.toml").read_text()
    for f in fields(StackGANConfig):
        if f.name not in ("resolution", "num_bands"):  # from the data
            assert f"\n{f.name} = " in text, f.name
    assert "\nlr_step_every = 80.0" in text and '\nlr_step_unit = "epoch"' in text and "\nlr_gamma = 0.5" in text


def test_sampling_a_chained_checkpoint_writes_every_stage(tmp_path):
    import json
    from pathlib import Path

    from PIL import Image

    from galaxy_core.explore.sampling import save_samples
    from galaxy_core.models.pretrained import load_pretrained

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "stackgan_sim128.json"
    save_samples(load_pretrained(ckpt), out_dir=tmp_path, n=4, seed=1)
    rec = json.loads((tmp_path / "samples.json").read_text())
    assert rec["stages"] == ["stage1", "stage2"]
    g1, g2 = Image.open(tmp_path / "grid_stage1.png"), Image.open(tmp_path / "grid_stage2.png")
    assert abs(g1.size[0] - g2.size[0]) <= 8  # stage I drawn at twice its size, like stage II at 128 px
    assert Image.open(tmp_path / "sample_0000.png").size == (128, 128)  # single images are the final stage


def test_input_skip_starts_as_bilinear_upsampling_and_learns_a_correction():
    torch.manual_seed(0)
    cfg = StackGANConfig(resolution=128, num_bands=3, width=8, final_width=16, input_skip=True)
    G = Generator(cfg)
    low = torch.rand(2, 3, 64, 64) * 1.6 - 0.8
    bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(G.eval()(low), bilinear, atol=1e-5)
    # one optimiser step on a target away from the input moves the output towards it
    target = bilinear.roll(1, dims=-1)
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    G.train()
    before = F.mse_loss(G(low), target).item()
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(G(low), target).backward()
        opt.step()
    assert F.mse_loss(G(low), target).item() < before
    assert not torch.allclose(G.eval()(low), bilinear, atol=1e-3)
    # the paper's layout has no such path: an untrained generator is not an upsampler
    plain = Generator(StackGANConfig(resolution=128, num_bands=3, width=8, final_width=16)).eval()
    with torch.no_grad():
        assert (plain(low) - bilinear).abs().mean() > 0.1


def _copy_checkpoint(src: Path, dst: Path, *, perturb: float = 0.0) -> Path:
    """``src`` written to ``dst`` (a JSON path); ``perturb`` shifts every generator weight, as a
    retrained checkpoint of the same shape would."""
    from galaxy_core.io.checkpoint import save_checkpoint

    tensors, meta = load_checkpoint(src)
    if perturb:
        tensors = {k: v + perturb if k.startswith("G") and v.is_floating_point() else v for k, v in tensors.items()}
    meta.pop("tensors_sha256", None)
    save_checkpoint(dst.with_suffix(""), tensors, meta)
    return dst


def _stage2_after(tmp_path: Path, stage1: Path, *, named: str | None = None) -> Path:
    """The shipped stage II as a card trained after ``stage1``; ``model.stage1`` says ``named``."""
    from galaxy_core.io.checkpoint import update_card

    card = _copy_checkpoint(ROOT / "checkpoints" / "stackgan_sim128.json", tmp_path / "stage2.json")
    meta = read_meta(card)
    update_card(card, {"model": {**meta["model"], "stage1": named or str(stage1)},
                       "engine": {**meta["engine"], "references": {"stage1": {"path": str(stage1),
                                                                              "sha": checkpoint_id(stage1)}}}})
    return card


def test_a_stage1_replaced_after_training_is_refused_naming_both_files(tmp_path):
    stage1 = _copy_checkpoint(STAGE1, tmp_path / "s1" / "stage1.json")
    card = _stage2_after(tmp_path, stage1)
    trained_with = checkpoint_id(stage1)
    assert load_pretrained(card).refs["stage1"].id == trained_with
    _copy_checkpoint(STAGE1, stage1, perturb=0.05)  # retrained in place: same path, other weights
    with pytest.raises(CheckpointError, match="stage1") as e:
        load_pretrained(card)
    said = str(e.value)
    assert str(card) in said and str(stage1) in said and trained_with in said and checkpoint_id(stage1) in said
    _copy_checkpoint(STAGE1, stage1)  # the one it was trained with, back in its place
    assert load_pretrained(card).refs["stage1"].id == trained_with


def test_the_recorded_stage1_is_used_where_the_configured_path_holds_another_or_nothing(tmp_path):
    stage1 = _copy_checkpoint(STAGE1, tmp_path / "s1" / "stage1.json")
    other = _copy_checkpoint(STAGE1, tmp_path / "other.json", perturb=0.05)
    for named in (str(other), str(tmp_path / "gone.json")):
        model = load_pretrained(_stage2_after(tmp_path, stage1, named=named))
        assert model.refs["stage1"].path == stage1 and model.refs["stage1"].id == checkpoint_id(stage1)


def test_resuming_after_a_retrained_stage1_is_refused_and_the_run_is_left_as_it_was(tmp_path):
    from galaxy_core.config import load_config
    from galaxy_core.train.loop import train

    stage1 = _copy_checkpoint(STAGE1, tmp_path / "stage1.json")
    sets = TINY + ["model.res_blocks=1", f"model.stage1={str(stage1)!r}"]
    config = ROOT / "configs" / "stackgan_sim128.toml"
    train(load_config(config, sets + ["train.steps=2"]), tmp_path / "run", progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.json"
    ref = read_meta(last)["engine"]["references"]["stage1"]
    assert ref == {"path": str(stage1.resolve()), "sha": checkpoint_id(stage1)}  # absolute: found from any folder
    _copy_checkpoint(STAGE1, stage1, perturb=0.05)
    written = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(CheckpointError, match="was trained after the stage1 checkpoint"):
        train(load_config(config, sets + ["train.steps=4"]), tmp_path / "run", progress=False)
    assert {p: p.read_bytes() for p in written} == written


def _inputs_of(net: nn.Module) -> list:
    """Every batch ``net`` is called on from now, recorded by a forward pre-hook."""
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


def test_new_chains_hand_stage1_images_over_in_stage2s_stretch_in_training_and_sampling(runs):
    from galaxy_core.config import load_config
    from galaxy_core.io.stretch import restretch, stretch_from_dict
    from galaxy_core.train.loop import Trainer
    from galaxy_core.train.run import RunFolder

    ck = runs / "straight" / "checkpoints" / "last.json"
    assert read_meta(ck)["model"]["stage1_input"] == "restretch"  # the preset's, recorded in the card
    model = load_pretrained(ck)
    s1 = model.refs["stage1"]
    z = model.latents(3, 2)
    seen = _inputs_of(model.nets["G"])
    out = model.generate_stages(z)
    # flux per 64 px pixel, spread over 2x2 pixels of a quarter of the area (0.198 vs 0.396 arcsec)
    want = restretch(torch.from_numpy(out["stage1"]), source=stretch_from_dict(s1.stretch),
                     target=stretch_from_dict(model.stretch), flux_scale=0.25)
    torch.testing.assert_close(seen[-1], want)
    assert (want - torch.from_numpy(out["stage1"])).abs().mean() > 0.01  # the two stretches do differ
    # the engine's sample grids and live evaluation chain the same way
    trainer = Trainer(load_config(runs / "straight" / "config.toml"), RunFolder(runs / "straight"), progress=False)
    assert trainer.resume()
    seen = _inputs_of(trainer.sampling_nets()["G"])
    trainer.generate(z)
    torch.testing.assert_close(seen[-1], want)


def test_the_shipped_chain_hands_stage1_images_over_in_stage2s_stretch():
    from galaxy_core.io.stretch import restretch, stretch_from_dict
    from galaxy_core.models.bnstats import state_key

    model = load_pretrained(ROOT / "checkpoints" / "stackgan_sim128.json")
    assert model.model_cfg.stage1_input == "restretch"  # the weights were trained on inputs in this encoding
    G = model.nets["G"]
    G._bn_calibrated = state_key(G)  # the statistics are not what this test is about
    seen = _inputs_of(G)
    out = model.generate_stages(model.latents(0, 2))
    s1 = model.refs["stage1"]
    want = restretch(torch.from_numpy(out["stage1"]), source=stretch_from_dict(s1.stretch),
                     target=stretch_from_dict(model.stretch), flux_scale=0.25)
    torch.testing.assert_close(seen[-1], want)
    # total flux kept through the chain: these two galaxies hold 0.98-1.04 of their stage-I images'
    # flux in every band; handed over as they are, 0.88-0.93 (scripts/stackgan_compare.py: medians
    # over 256 galaxies 0.98 / 1.00 / 1.03 against 0.89 / 0.88 / 0.92)
    ratio = model.to_flux(out["stage2"]).sum((2, 3)) / s1.to_flux(out["stage1"]).sum((2, 3))  # (2, C)
    assert np.all(np.abs(ratio - 1) < 0.05), ratio


def test_a_card_written_before_stage1_input_loads_as_it_was_sampled(tmp_path):
    from galaxy_core.io.checkpoint import update_card

    card = _copy_checkpoint(ROOT / "checkpoints" / "stackgan_sim128.json", tmp_path / "old.json")
    model = {k: v for k, v in read_meta(card)["model"].items() if k != "stage1_input"}
    update_card(card, {"model": model})
    assert load_pretrained(card).model_cfg.stage1_input == "as_is"
    assert StackGANConfig().stage1_input == "restretch"  # what new runs get


def test_stage1_trained_on_another_kind_of_data_is_refused():
    fam = get_arch("stackgan")
    rgb_stage1 = str(ROOT / "checkpoints" / "dcgan_hdf64.json")  # 8-bit colour images, no flux stretch

    class Data:
        resolution, num_bands, name = 128, 3, "sim"

        def description(self):
            return {"stretch": read_meta(STAGE1)["data"]["stretch"]}

    with pytest.raises(ConfigError, match="model.stage1: .*dcgan_hdf64.json makes values without an invertible"):
        fam.resolve_config({"stage1": rgb_stage1}, Data())
    assert fam.resolve_config({"stage1": rgb_stage1, "stage1_input": "as_is"}, Data())["z_dim"] == 100


def test_resuming_with_another_stage1_input_is_refused_naming_the_field(runs):
    from galaxy_core.config import load_config
    from galaxy_core.train.loop import train

    before = (runs / "straight" / "checkpoints" / "last.json").read_bytes()
    cfg = load_config(runs / "straight" / "config.toml", ["model.stage1_input=as_is", "train.steps=6"])
    with pytest.raises(CheckpointError, match="model.stage1_input: 'restretch' in the run, 'as_is' in the config"):
        train(cfg, runs / "straight", progress=False)
    assert (runs / "straight" / "checkpoints" / "last.json").read_bytes() == before
