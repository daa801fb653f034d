"""StyleGAN family: shapes, modulation, truncation, penalties, optimiser groups, resume, freezing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from galaxy_core.config import load_config
from galaxy_core.io.checkpoint import load_checkpoint
from galaxy_core.models.registry import get_arch, make_config
from galaxy_core.models.stylegan import (
    Discriminator,
    Generator,
    ModulatedConv,
    StyleGANConfig,
    gradient_penalty,
    minibatch_stddev,
    num_ws,
    r1_penalty,
)
from galaxy_core.train.loop import Trainer, train
from galaxy_core.train.run import RunFolder, read_metrics

TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16)

SMALL = [
    "data.dataset=hdf", "data.resolution=32", "model.arch=\"stylegan\"", "model.z_dim=16", "model.w_dim=16",
    "model.mapping_layers=2", "model.channel_base=128", "model.channel_max=16", "train.batch_size=8",
    "train.device=cpu", "train.threads=1", "train.lr_g=0.002", "train.lr_d=0.002", "train.beta1=0.0",
    "train.beta2=0.99", "log.metrics_every=2", "log.sample_every=100", "log.checkpoint_every=4",
    "log.eval_every=0", "log.grid_size=4",
]


def _cfg(*extra):
    return load_config(None, SMALL + list(extra))


@pytest.mark.parametrize("resolution,bands", [(32, 1), (32, 3), (32, 5), (64, 3), (64, 1), (128, 3), (256, 3),
                                              (256, 1)])
def test_shapes_at_every_resolution_and_band_count(resolution, bands):
    torch.manual_seed(0)
    cfg = StyleGANConfig(resolution=resolution, num_bands=bands, **TINY)
    G, D = Generator(cfg), Discriminator(cfg)
    n_blocks = int(math.log2(resolution)) - 1  # 4, 8, ..., R
    assert G.num_ws == num_ws(cfg) == 2 + 3 * (n_blocks - 1)
    assert [r for _, r, _ in G.synthesis.layers].count(4) == 2
    z = torch.randn(2, 16)
    assert G.mapping(z).shape == (2, 16)
    with torch.no_grad():
        x = G(z, noise_mode="const")
    assert x.shape == (2, bands, resolution, resolution)
    assert torch.isfinite(x).all()
    assert D(x).shape == (2,)
    assert get_arch("stylegan").latent_spaces(cfg) == {"z": 16, "w": 16}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="model.resolution"):
        StyleGANConfig(resolution=48)
    with pytest.raises(ValueError, match="model.loss"):
        StyleGANConfig(loss="hinge")


def test_modulated_conv_equals_the_per_sample_modulated_and_demodulated_weight():
    torch.manual_seed(1)
    layer = ModulatedConv(4, 5, 6, k=3, resolution=8)
    x, w = torch.randn(3, 4, 8, 8), torch.randn(3, 6)
    with torch.no_grad():
        out = layer(x, w, noise_mode="none")
        s = layer.affine(w)  # (3, 4)
        wt = layer.weight * layer.gain  # (5, 4, 3, 3)
        ref = []
        for i in range(3):  # StyleGAN2 eq. 1 and 3 written out per sample
            wi = wt * s[i][None, :, None, None]
            wi = wi / torch.sqrt(wi.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            ref.append(F.conv2d(x[i : i + 1], wi, padding=1))
        ref = F.leaky_relu(torch.cat(ref) + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_psi_zero_gives_the_same_image_for_different_z():
    torch.manual_seed(2)
    cfg = StyleGANConfig(resolution=32, num_bands=3, **TINY)
    G = Generator(cfg)
    G.train()
    G.mapping(torch.randn(64, 16), update_w_avg=True)  # a non-zero w_avg
    G.eval()
    fam = get_arch("stylegan")
    z = torch.randn(3, 16)
    a = fam.generate({"G": G}, z, psi=0.0)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
    b = fam.generate({"G": G}, z, psi=1.0)
    assert (b[0] - b[1]).abs().max() > 1e-3
    assert a.min() >= -1 and a.max() <= 1  # clamped


def test_w_avg_is_the_running_mean_with_the_configured_decay():
    torch.manual_seed(3)
    cfg = StyleGANConfig(resolution=32, num_bands=1, w_avg_beta=0.5, **TINY)
    m = Generator(cfg).mapping.train()
    z1, z2 = torch.randn(4, 16), torch.randn(4, 16)
    w1 = m(z1, update_w_avg=True).detach()
    w2 = m(z2, update_w_avg=True).detach()
    want = 0.5 * (0.5 * 0 + 0.5 * w1.mean(0)) + 0.5 * w2.mean(0)
    torch.testing.assert_close(m.w_avg, want)
    m.eval()
    m(torch.randn(4, 16), update_w_avg=True)  # eval: never moves
    torch.testing.assert_close(m.w_avg, want)


def test_noise_modes():
    torch.manual_seed(4)
    G = Generator(StyleGANConfig(resolution=32, num_bands=1, **TINY)).eval()
    for n in G.synthesis.noise_layers:
        layer = G.synthesis.get_submodule(n)
        assert layer.noise_strength.shape == (layer.weight.shape[0],)  # one strength per channel
        layer.noise_strength.data.fill_(0.5)
    z = torch.randn(1, 16)
    with torch.no_grad():
        c1, c2 = G(z, noise_mode="const"), G(z, noise_mode="const")
        r1 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(0))
        r2 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(1))
        r1b = G(z, noise_mode="random", generator=torch.Generator().manual_seed(0))
        none = G(z, noise_mode="none")
    assert torch.equal(c1, c2) and torch.equal(r1, r1b)
    assert (r1 - r2).abs().max() > 1e-3 and (none - c1).abs().max() > 1e-3
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="loud")


def test_minibatch_stddev_matches_a_hand_computed_value():
    x = torch.tensor([1.0, 3.0, 5.0, 9.0]).reshape(4, 1, 1, 1)  # groups of 2: (1, 5) and (3, 9)
    y = minibatch_stddev(x, 2)
    # sample n takes group n % 2's statistic over members n and n + 2: |1-5|/2 = 2, |3-9|/2 = 3
    assert y[:, 1].flatten().tolist() == pytest.approx([2.0, 3.0, 2.0, 3.0], abs=1e-4)


class Linear(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        return (self.a * x).sum(dim=(1, 2, 3))


class Square(torch.nn.Module):
    def forward(self, x):
        return x.square().sum(dim=(1, 2, 3))


def test_r1_penalty_matches_hand_computed_values():
    a = torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1)
    real = torch.randn(3, 4, 1, 1)
    pen, logits = r1_penalty(Linear(a), real)
    assert pen.tolist() == pytest.approx([1 + 4 + 0.25 + 9] * 3)  # |grad| = |a|
    torch.testing.assert_close(logits, (a * real).sum(dim=(1, 2, 3)))
    real = torch.tensor([[1.0, 2.0], [0.0, -1.0]]).reshape(2, 2, 1, 1)
    pen, _ = r1_penalty(Square(), real)  # grad = 2x -> 4 |x|^2
    assert pen.tolist() == pytest.approx([4 * 5, 4 * 1])
    pen2, _ = r1_penalty(Square(), real, augment=lambda x: 3 * x)  # D(3x): grad = 18x
    assert pen2.tolist() == pytest.approx([324 * 5, 324 * 1])


def test_gradient_penalty_matches_hand_computed_values():
    a = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)  # |a| = 5
    real, fake = torch.randn(2, 2, 1, 1), torch.randn(2, 2, 1, 1)
    gp = gradient_penalty(Linear(a), real, fake, torch.tensor([0.3, 0.9]))
    assert gp.tolist() == pytest.approx([16.0, 16.0])  # (5 - 1)^2
    real = torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1)
    fake = torch.tensor([0.0, 2.0]).reshape(1, 2, 1, 1)
    gp = gradient_penalty(Square(), real, fake, torch.tensor([0.25]))
    x_hat = torch.tensor([0.5, 1.5])  # 0.25 real + 0.75 fake; grad = 2 x_hat
    assert gp.item() == pytest.approx((2 * float(x_hat.norm()) - 1) ** 2)


def test_channels_last_activations_compute_the_same_function():
    import galaxy_core.models.stylegan as sg

    torch.manual_seed(0)
    cfg = StyleGANConfig(resolution=32, num_bands=3, **TINY)
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(4, 16)
    out = {}
    for fmt in (torch.channels_last, torch.contiguous_format):
        sg.MEMORY_FORMAT = fmt
        try:
            x = G(z, noise_mode="const")
            out[fmt] = (x.detach(), D(x).detach())
        finally:
            sg.MEMORY_FORMAT = torch.channels_last
    assert out[torch.channels_last][0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(out[torch.channels_last], out[torch.contiguous_format]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_g_phase_gives_g_its_gradient_and_leaves_d_without_one(tmp_path):
    """D's weights are recorded without gradients in the G phase: G's gradient is unchanged,
    D gets none, and D's parameters require gradients again afterwards."""
    from galaxy_core.models.family import StepContext

    tr = Trainer(_cfg("train.steps=1"), RunFolder(tmp_path / "r"), progress=False)
    G, D, obj = tr.nets["G"], tr.nets["D"], tr.objective
    gen = torch.Generator().manual_seed(0)
    batch = tr.kind.batch(0, gen)
    ctx = StepContext(step=0, batch_size=8, device=torch.device("cpu"), generator=gen, model_cfg=tr.model_cfg,
                      family=tr.family, augment=lambda x: x, observe=lambda *a: None, amp=False)
    obj.begin_step(batch, ctx)
    obj.run("D", batch, ctx)
    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = None
    loss, _ = obj.run("G", batch, ctx)
    loss.backward(retain_graph=True)  # G's graph is used again below
    assert all(p.grad is None for p in D.parameters())
    assert all(p.requires_grad for p in D.parameters())
    got = {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}
    # the same loss with D's weights taking part in autograd
    for p in G.parameters():
        p.grad = None
    want = F.softplus(-D(ctx.stash["fake"]).float()).mean()
    want.backward()
    assert got.keys() == {n for n, p in G.named_parameters() if p.grad is not None} and got
    for n, p in G.named_parameters():
        if n in got:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-5, atol=1e-7)


def test_optimizer_groups_carry_the_mapping_lr_multiplier_and_lazy_ratio(tmp_path):
    tr = Trainer(_cfg("train.steps=1"), RunFolder(tmp_path / "r"), progress=False)
    tr.set_lr()
    g = {round(grp["lr_mult"], 8): grp for grp in tr.opts["G"].param_groups}
    c_d = 16 / 17  # r1_every = 16
    assert sorted(g) == [0.01, 1.0]  # pl_weight 0: G is not lazily regularised
    mapping_ids = {id(p) for p in tr.nets["G"].mapping.parameters()}
    assert {id(p) for p in g[0.01]["params"]} == mapping_ids
    assert g[0.01]["lr"] == pytest.approx(0.002 * 0.01)
    (d_group,) = tr.opts["D"].param_groups
    assert d_group["lr"] == pytest.approx(0.002 * c_d)
    assert d_group["betas"] == pytest.approx((0.0, 0.99**c_d))
    assert [p.name for p in tr.objective.phases] == ["D", "D_reg", "G"]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["logistic", "wgan-gp"])
def test_a_stylegan_run_resumes_exactly(tmp_path, loss):
    extra = [f"model.loss=\"{loss}\"", "model.r1_every=2", "model.pl_weight=2.0", "model.pl_every=3",
             "augment.diff=\"ada\"", "augment.ada_interval=2", "augment.ada_kimg=0.1"]
    train(_cfg("train.steps=8", *extra), tmp_path / "straight", progress=False)
    train(_cfg("train.steps=4", *extra), tmp_path / "split", progress=False)
    train(_cfg("train.steps=8", *extra), tmp_path / "split", progress=False)  # resumes at 4
    a = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    b = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in b] == [2, 4, 6, 8]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ("loss_D", "loss_G", "pl_mean", "augment_p"):
            if k in ra:  # pl_mean only in records whose steps ran the lazy G_reg phase
                assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), k
    assert ("gp" in a[-1]) == (loss == "wgan-gp") and ("r1" in a[-1]) == (loss == "logistic")
    ta, ma = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.json")
    tb, mb = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.json")
    assert ma["engine"]["objective"]["pl_mean"] > 0
    assert ma["engine"]["objective"]["pl_mean"] == pytest.approx(mb["engine"]["objective"]["pl_mean"], rel=1e-4)
    for k in ta:
        if k.startswith(("G_ema.", "D.")):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("unit,k,n_frozen_units", [("layer", 3, 3), ("block", 2, 2)])
def test_freezing_keeps_frozen_tensors_bit_identical(tmp_path, unit, k, n_frozen_units):
    base = tmp_path / "base"
    train(_cfg("train.steps=2"), base, progress=False)
    src, _ = load_checkpoint(base / "checkpoints" / "last.json")
    status = train(_cfg("train.steps=4", f"train.freeze_g={k}", f"train.freeze_unit=\"{unit}\"",
                        "train.freeze_d=1"),
                   tmp_path / "tuned", init_from=str(base / "checkpoints" / "last.json"), progress=False)
    assert status["init"]["recreated"] == [] and status["init"]["missing"] == []
    out, meta = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.json")
    fam = get_arch("stylegan")
    cfg = make_config("stylegan", {k2: v for k2, v in meta["model"].items() if k2 != "arch"})
    nets = fam.build(cfg)
    units = fam.freeze_units("G", nets["G"], unit)
    assert units[0] == [n for n in nets["G"].state_dict() if n.startswith("mapping.")]  # mapping is unit 1
    if unit == "block":
        assert "synthesis.const" in units[1] and all(".b4." in n for n in units[1] if n != "synthesis.const")
    else:
        assert "synthesis.const" in units[1] and all(".b4.conv1." in n for n in units[1] if n != "synthesis.const")
        assert all(".b4.torgb." in n for n in units[2])
    frozen = {f"G.{n}" for u in units[:n_frozen_units] for n in u}
    frozen |= {f"D.{n}" for n in fam.freeze_units("D", nets["D"], "block")[0]}
    assert "G.mapping.w_avg" in frozen
    for key in frozen:
        assert torch.equal(out[key], src[key]), key
        if key.startswith("G."):
            assert torch.equal(out["G_ema." + key[2:]], src[key]), key
    trainable = [key for key in out if key.startswith(("G.", "D.")) and key not in frozen
                 and out[key].is_floating_point() and "noise_const" not in key]
    changed = [key for key in trainable if not torch.equal(out[key], src[key])]
    assert len(changed) == len(trainable) > 0


def test_path_length_penalty_trains_with_a_frozen_mapping_network(tmp_path):
    # freeze_g >= 1 freezes the mapping network first, so w carries no gradient of its own; the
    # penalty differentiates the image with respect to ws and failed at the first G_reg phase
    base = tmp_path / "base"
    train(_cfg("train.steps=2"), base, progress=False)
    src, _ = load_checkpoint(base / "checkpoints" / "last.json")
    status = train(_cfg("train.steps=2", "train.freeze_g=1", "model.pl_weight=2.0", "model.pl_every=1"),
                   tmp_path / "tuned", init_from=str(base / "checkpoints" / "last.json"), progress=False)
    assert status["state"] == "finished"
    out, meta = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.json")
    assert meta["engine"]["frozen"]["G"] == len([k for k in src if k.startswith("G.mapping.")])
    assert meta["engine"]["objective"]["pl_mean"] > 0
    rec = read_metrics(tmp_path / "tuned" / "metrics.jsonl")[-1]
    assert rec["pl_penalty"] >= 0 and rec["pl_mean"] > 0
    assert all(torch.equal(out[k], src[k]) for k in src if k.startswith("G.mapping."))
    assert not torch.equal(out["G.synthesis.const"], src["G.synthesis.const"])
    G = Generator(StyleGANConfig(resolution=32, num_bands=3, **TINY)).requires_grad_(False)
    G.synthesis.requires_grad_(True)
    img, ws = G(torch.randn(2, 16), return_ws=True)
    (grad,) = torch.autograd.grad(img.sum(), ws)
    assert grad.shape == ws.shape and grad.abs().sum() > 0
    with torch.no_grad():
        assert not G(torch.randn(2, 16), return_ws=True)[1].requires_grad


@pytest.mark.parametrize("name", ["stylegan_sim64.toml", "stylegan_sim64_gri.toml", "stylegan_hdf64_ft.toml",
                                  "stylegan_sim128_gpu.toml"])
def test_stylegan_configs_load_and_show_every_default(name):
    from dataclasses import fields

    from galaxy_core.config import dataset_specific_keys
    from galaxy_core.paths import configs_dir

    path = configs_dir() / name
    cfg = load_config(path)
    text = path.read_text()
    for section in ("data", "augment", "train", "log"):
        for key in getattr(cfg, section).__dataclass_fields__:
            if section == "data" and key in dataset_specific_keys(cfg.data):
                continue
            assert f"\n{key} = " in text, f"{name}: {section}.{key} not shown"
    for f in fields(StyleGANConfig):
        if f.name not in ("resolution", "num_bands"):  # from the data
            assert f"\n{f.name} = " in text, f"{name}: model.{f.name} not shown"
    make_config("stylegan", cfg.model_values())


def test_freeze_sweep_reads_the_best_live_metric_of_a_run(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "freeze_sweep.py"
    spec = importlib.util.spec_from_file_location("freeze_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    recs = [{"step": 10, "loss_D": 1.0}, {"step": 20, "fid_galaxy_128": 30.5}, {"step": 40, "fid_galaxy_128": 12.25},
            {"step": 60, "fid_galaxy_128": 19.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert mod.best_metric(tmp_path) == ("fid_galaxy_128", 12.25, 40)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(recs[0]) + "\n")
    assert mod.best_metric(tmp_path) == (None, None, None)


def test_freeze_sweep_floor_of_the_live_metric_on_hdf():
    """Real images in place of samples: near zero against a reference that contains them,
    higher against the other real images, far below any shipped model's value."""
    import importlib.util
    from pathlib import Path

    from galaxy_core.paths import configs_dir

    path = Path(__file__).resolve().parents[1] / "scripts" / "freeze_sweep.py"
    spec = importlib.util.spec_from_file_location("freeze_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    f = mod.real_floor(str(configs_dir() / "stylegan_hdf64_ft.toml"), ["log.eval_samples=64"], draws=3)
    assert f["extractor"] == "galaxy" and f["samples"] == 64 and f["reference"] == 375
    same, other = f["vs_reference"][0], f["vs_other_real"][0]
    assert 0 < same < other < 200


def test_every_config_field_is_documented():
    from galaxy_core.models.family import config_fields

    docs = config_fields(StyleGANConfig)
    assert len(docs) == 20 and all(d["doc"] for d in docs)


def test_band_change_recreates_exactly_the_torgb_and_fromrgb_layers():
    from galaxy_core.io.checkpoint import prefixed
    from galaxy_core.train.finetune import load_matching

    fam = get_arch("stylegan")
    src = fam.build(StyleGANConfig(resolution=32, num_bands=3, **TINY))
    dst = fam.build(StyleGANConfig(resolution=32, num_bands=1, **TINY))
    tensors = {**prefixed("G", src["G"].state_dict()), **prefixed("D", src["D"].state_dict())}
    rep = load_matching(dst, tensors, source="three-band")
    want = {f"G.synthesis.blocks.b{r}.torgb.{p}" for r in (4, 8, 16, 32) for p in ("weight", "bias")}
    assert set(rep.recreated) == want | {"D.fromrgb.weight"} and rep.missing == []
    same = fam.build(StyleGANConfig(resolution=32, num_bands=3, **TINY))
    rep = load_matching(same, tensors, source="three-band")
    assert rep.recreated == [] and len(rep.loaded) == len(tensors)


def test_a_seed_s_latents_are_not_the_weights_the_model_was_initialised_with():
    """Training seeds the weight initialisation with torch.manual_seed(train.seed); latents drawn
    from a generator seeded with the same number repeated the mapping network's first weight
    rows (correlation 1 with stylegan_sim64_gri's), which gave seed 0 atypical images. A seed's
    latents now come from a stream of their own."""
    import numpy as np
    import torch

    from galaxy_core.models.family import latent_generator
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir

    model = load_pretrained(checkpoints_dir() / "stylegan_sim64_gri.json")
    W = model.nets["G"].state_dict()["mapping.net.0.weight"].numpy()
    raw = torch.randn(W.shape, generator=torch.Generator().manual_seed(0)).numpy()
    assert np.corrcoef(W[0], raw[0])[0, 1] > 0.99  # the shipped weights still carry their initial draw
    z = model.latents(0, W.shape[0]).numpy()
    corr = np.corrcoef(np.concatenate([W, z]))[: len(W), len(W):]
    assert np.abs(corr).max() < 0.5
    # the images of seed 0's first latents are as varied as any others' (median pixel sd within 5 %)
    x = model.generate(model.latents(0, 192))
    sd = x.reshape(len(x), -1).std(axis=1)
    assert abs(np.median(sd[:96]) / np.median(sd[96:]) - 1) < 0.05
    draws = {s: torch.randn(8, generator=latent_generator(0, s)) for s in ("latents", "live", "grid")}
    assert not any(torch.equal(draws[a], draws[b]) for a in draws for b in draws if a < b)
    assert torch.equal(torch.randn(8, generator=latent_generator(0)), draws["latents"])  # a pure function of both
