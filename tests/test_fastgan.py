"""FastGAN / Lightweight GAN: skip-layer excitation, the self-supervised discriminator, training
from the example config through the CLI, exact resume, loading for sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from galaxy_core.io.checkpoint import load_checkpoint, read_meta
from galaxy_core.models.bnstats import state_key
from galaxy_core.models.fastgan import (SLE, Discriminator, FastGANConfig, Generator, calibration_latents, quarter,
                                        reconstruction_loss, reconstruction_targets)
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.models.registry import get_arch
from galaxy_core.train.run import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.width=8", "model.z_dim=32", "train.batch_size=3", "train.device=cpu", "train.threads=1",
        "log.metrics_every=2", "log.sample_every=4", "log.checkpoint_every=2", "log.eval_every=0", "log.grid_size=4"]


def test_sle_gate_matches_its_definition_and_gates_channels():
    torch.manual_seed(0)
    sle = SLE(4, 6)
    low, high = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 64, 64)
    gate = sle.gate(low)
    assert gate.shape == (2, 6, 1, 1) and 0 < gate.min() and gate.max() < 1
    # by hand: 2x2 mean pool to 4x4, 4x4 valid conv, LeakyReLU(0.1), 1x1 conv, sigmoid
    pooled = low.reshape(2, 4, 4, 2, 4, 2).mean((3, 5))
    h = torch.einsum("nchw,ochw->no", pooled, sle.squeeze.weight)
    h = torch.where(h > 0, h, 0.1 * h)
    want = torch.sigmoid(h @ sle.excite.weight[:, :, 0, 0].T)
    torch.testing.assert_close(gate[:, :, 0, 0], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sle(high, low), high * want[:, :, None, None], rtol=1e-5, atol=1e-6)
    # a different low-resolution map gives different gates
    assert (sle.gate(low + 1.0) - gate).abs().max() > 1e-3


@pytest.mark.parametrize("resolution, gated", [(64, ["64"]), (128, ["64", "128"]), (256, ["64", "128", "256"])])
def test_generator_sides_and_which_maps_are_gated(resolution, gated):
    torch.manual_seed(0)
    cfg = FastGANConfig(resolution=resolution, width=8, z_dim=16, num_bands=1)
    G = Generator(cfg).eval()
    assert sorted(G.sle, key=int) == gated
    z = torch.randn(2, 16)
    with torch.no_grad():
        feats = G.features(z)
        x = G(z)
        # the 64 px map is the 64 px up-block's output gated by the 8x8 map
        ungated = G.ups["64"](feats[32])
        gate = G.sle["64"].gate(feats[8])
    assert x.shape == (2, 1, resolution, resolution) and x.abs().max() <= 1
    torch.testing.assert_close(feats[64], ungated * gate, rtol=1e-5, atol=1e-6)
    assert (feats[64] - ungated).abs().mean() > 0.1 * ungated.abs().mean()  # gates in (0, 1) shrink the map


def test_32px_generator_gates_its_output_map_by_the_4x4_map_and_d_reconstructs_16px():
    torch.manual_seed(0)
    cfg = FastGANConfig(resolution=32, width=8, z_dim=16, num_bands=3)
    G, D = Generator(cfg).eval(), Discriminator(cfg).eval()
    assert list(G.sle) == ["32"]
    z = torch.randn(2, 16)
    with torch.no_grad():
        feats = G.features(z)
        ungated = G.ups["32"](feats[16])
        gate = G.sle["32"].gate(feats[4])
        x = G(z)
        logits, rec_full, rec_part = D(x, part=3)
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(feats[32], ungated * gate, rtol=1e-5, atol=1e-6)
    assert (feats[32] - ungated).abs().mean() > 0.1 * ungated.abs().mean()
    assert logits.shape == (2 * 25,) and rec_full.shape == rec_part.shape == (2, 3, 16, 16)


def test_quarter_and_reconstruction_targets_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert quarter(x, 1).flatten().tolist() == [2, 3, 6, 7]
    assert quarter(x, 2).flatten().tolist() == [8, 9, 12, 13]
    full, part = reconstruction_targets(x, 3, 2)
    assert full.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # 2x2 means
    assert part.flatten().tolist() == [10, 11, 14, 15]
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    assert float(reconstruction_loss("l1", a, b)) == pytest.approx(1.0)
    assert float(reconstruction_loss("mse", a, b)) == pytest.approx(1.5)


def test_discriminator_decoders_learn_to_reconstruct():
    torch.manual_seed(0)
    cfg = FastGANConfig(resolution=64, width=8, num_bands=3)
    D = Discriminator(cfg)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    real = torch.stack([torch.exp(-((xx - a) ** 2 + (yy - b) ** 2) / 0.1) * 1.6 - 0.8
                        for a, b in ((0, 0), (0.3, -0.2), (-0.4, 0.4))])[:, None].repeat(1, 3, 1, 1)  # (3, 3, 64, 64)
    logits, full, part = D(real, 2)
    assert logits.shape == (3 * 25,)
    assert full.shape == part.shape == (3, 3, 32, 32)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        p = step % 4
        _, full, part = D(real, p)
        full_t, part_t = reconstruction_targets(real, p, cfg.rec_side)
        loss = reconstruction_loss("l1", full, full_t) + reconstruction_loss("l1", part, part_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, straight_and_split):
    # DiffAugment on (the hdf preset has it off), so the resume also covers the augmentation's random stream
    return straight_and_split(tmp_path_factory.mktemp("fastgan"), str(ROOT / "configs" / "fastgan_hdf64.toml"),
                              TINY + ["augment.diff=fixed", "augment.diff_p=1.0"])


def test_trains_from_the_example_config_and_resumes_exactly(runs):
    a = read_metrics(runs / "straight" / "metrics.jsonl")
    b = read_metrics(runs / "split" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4]
    for key in ("loss_D", "loss_D_adv", "loss_rec", "loss_G", "D_real", "D_fake"):
        assert all(np.isfinite(r[key]) for r in a), key
    assert a[0]["loss_D"] == pytest.approx(a[0]["loss_D_adv"] + a[0]["loss_rec"], rel=1e-5)
    assert a[0]["augment_p"] == 1.0  # differentiable augmentation on
    for ra, rb in zip(a, b):
        for key in ("loss_D", "loss_rec", "loss_G"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5)
    ta, _ = load_checkpoint(runs / "straight" / "checkpoints" / "last.json")
    tb, _ = load_checkpoint(runs / "split" / "checkpoints" / "last.json")
    for k in ta:
        if k.startswith(("G_ema.", "D.")):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)
    assert (runs / "straight" / "samples" / "step_0000004.png").exists()


def test_output_bias_starts_at_the_sky_level_of_the_training_data(runs):
    from galaxy_core.data.sources import load_dataset
    from galaxy_core.models.fastgan import data_out_bias

    meta = read_meta(runs / "straight" / "checkpoints" / "last.json")
    data = load_dataset("hdf", resolution=64, progress=False)
    assert data.description()["key"] == meta["data"]["key"]
    sky = float(np.median(data.to_model_range()))
    assert sky < -0.5  # hdf stamps are mostly dark sky
    assert meta["model"]["out_bias"] == pytest.approx(float(np.arctanh(sky)), abs=1e-5)
    assert meta["model"]["out_bias"] == pytest.approx(data_out_bias(data.to_model_range()), abs=1e-5)
    # an untrained generator with that bias draws the sky level, not mid-grey
    cfg = FastGANConfig(width=8, z_dim=16, out_bias=meta["model"]["out_bias"])
    torch.manual_seed(0)
    with torch.no_grad():
        x = Generator(cfg).train()(torch.randn(8, 16))
        x0 = Generator(FastGANConfig(width=8, z_dim=16)).train()(torch.randn(8, 16))
    assert float(x.median()) == pytest.approx(sky, abs=0.05)
    assert abs(float(x0.median())) < 0.05
    with pytest.raises(ValueError, match="out_bias"):
        FastGANConfig(out_bias=float("nan"))


def test_checkpoint_loads_for_sampling(runs):
    path = runs / "straight" / "checkpoints" / "last.json"
    assert read_meta(path)["model"]["arch"] == "fastgan"
    model = load_pretrained(path)
    assert model.latent_spaces == {"z": 32}
    x = model.generate(model.latents(3, 4))
    assert x.shape == (4, 3, 64, 64) and np.isfinite(x).all() and np.abs(x).max() <= 1
    np.testing.assert_array_equal(x[:2], model.generate(model.latents(3, 2)))


def test_sampling_generator_gets_batch_norm_statistics_of_its_own_weights():
    torch.manual_seed(0)
    G = Generator(FastGANConfig(width=8, z_dim=32)).eval()
    bn = G.init[1]
    bn.running_mean.fill_(5.0)  # statistics that belong to other weights
    bn.running_var.fill_(100.0)
    fam = get_arch("fastgan")
    z = torch.randn(3, 32)
    first = fam.generate({"G": G}, z)
    cal = torch.cat(calibration_latents(32))
    with torch.no_grad():
        pre = G.init[0](cal.view(len(cal), 32, 1, 1))  # what the first batch norm sees
    torch.testing.assert_close(bn.running_mean, pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not G.training
    key = state_key(G)
    torch.testing.assert_close(fam.generate({"G": G}, z[:1]), first[:1])  # no re-estimate, batch-independent
    assert state_key(G) == key
    with torch.no_grad():  # new weights (an EMA update) -> new statistics
        G.init[0].weight.mul_(2.0)
    fam.generate({"G": G}, z)
    torch.testing.assert_close(bn.running_mean, 2 * pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_config_rejects_bad_values_with_the_key():
    with pytest.raises(ValueError, match="model.resolution"):
        FastGANConfig(resolution=48)
    with pytest.raises(ValueError, match="model.rec_loss"):
        FastGANConfig(rec_loss="lpips")
    assert get_arch("fastgan").data_kind == "image"


def test_example_config_shows_every_model_field():
    from dataclasses import fields

    text = (ROOT / "configs" / "fastgan_hdf64.toml").read_text()
    for f in fields(FastGANConfig):
        if f.name not in get_arch("fastgan").data_fields:  # resolution, bands, output bias: from the data
            assert f"\n{f.name} = " in text, f.name


def test_discriminator_adversarial_convolutions_are_spectrally_normalised():
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    D = Discriminator(FastGANConfig(resolution=64, width=8, num_bands=3)).train()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for _ in range(30):  # each training-mode forward runs one power iteration
            D(x)
    adv = [m for part in (D.stem, D.downs, D.head) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    assert adv and all(parametrize.is_parametrized(m, "weight") for m in adv)
    for m in adv:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.1
    decoders = [m for m in D.dec_full.modules() if isinstance(m, torch.nn.Conv2d)]
    assert decoders and not any(parametrize.is_parametrized(m) for m in decoders)
    plain = Discriminator(FastGANConfig(resolution=64, width=8, num_bands=3, d_spectral_norm=False))
    assert not any(parametrize.is_parametrized(m) for m in plain.modules() if isinstance(m, torch.nn.Conv2d))


def test_discriminator_width_can_differ_from_the_generator_width():
    cfg = FastGANConfig(resolution=64, width=8, d_width=16, num_bands=3)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.to_img.in_channels == 8  # G keeps width 8 at 64 px
    assert D.stem[0].out_channels == 16 and D.head[-1].in_channels == 128  # D: 16 at 64 px, 8 x 16 at 8 px
    logits, full, part = D(torch.randn(2, 3, 64, 64), 1)
    assert logits.shape == (50,) and full.shape == part.shape == (2, 3, 32, 32)
    same = Discriminator(FastGANConfig(resolution=64, width=8, num_bands=3))
    assert same.stem[0].out_channels == 8
    with pytest.raises(ValueError, match="d_width"):
        FastGANConfig(d_width=-1)


def test_without_self_supervision_the_decoders_are_not_run(tmp_path):
    from galaxy_core.config import load_config
    from galaxy_core.models.family import StepContext
    from galaxy_core.train.loop import Trainer
    from galaxy_core.train.run import RunFolder

    stats = {}
    for w in (0.0, 1.0):
        cfg = load_config(str(ROOT / "configs" / "fastgan_hdf64.toml"), TINY + [f"model.rec_weight={w}", "train.steps=1"])
        tr = Trainer(cfg, RunFolder(tmp_path / f"r{w}"), progress=False)
        D, obj = tr.nets["D"], tr.objective
        gen = torch.Generator().manual_seed(0)
        batch = tr.kind.batch(0, gen)
        ctx = StepContext(step=0, batch_size=3, device=torch.device("cpu"), generator=gen, model_cfg=tr.model_cfg,
                          family=tr.family, augment=lambda x: x, observe=lambda *a: None, amp=False)
        obj.begin_step(batch, ctx)
        loss, s = obj.run("D", batch, ctx)
        loss.backward()
        decoders = list(D.dec_full.parameters()) + list(D.dec_part.parameters())
        stats[w] = (s, [p.grad for p in decoders])
    s0, g0 = stats[0.0]
    assert float(s0["loss_rec"]) == 0.0 and float(s0["loss_D"]) == pytest.approx(float(s0["loss_D_adv"]))
    assert all(g is None for g in g0)  # never run, so no gradient at all
    s1, g1 = stats[1.0]
    assert float(s1["loss_rec"]) > 0 and all(g is not None for g in g1)
