"""The training engine: outside families, fine-tuning and freezing, adaptive augmentation, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from galaxy_core.config import load_config
from galaxy_core.io.checkpoint import load_checkpoint, read_meta
from galaxy_core.models import get_arch, make_config
from galaxy_core.models.family import config_fields
from galaxy_core.train.finetune import load_matching
from galaxy_core.train.loop import train
from galaxy_core.train.run import read_metrics

ROOT = Path(__file__).resolve().parents[1]

SMALL = ["data.dataset=hdf", "data.resolution=32", "train.batch_size=8", "train.device=cpu", "train.threads=1",
         "log.metrics_every=5", "log.sample_every=10", "log.checkpoint_every=10", "log.eval_every=0",
         "log.grid_size=4"]

# A tiny family written the way a user outside the package writes one: its own config, networks,
# an objective with two phases and a statistic of its own, registered on import.
PLUGIN = '''
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.models.family import Family, Objective, Phase
from galaxy_core.models.registry import register


@dataclass
class TinyConfig:
    resolution: int = field(default=32, metadata={"doc": "output side (from the data)"})
    num_bands: int = field(default=3, metadata={"doc": "output channels (from the data)"})
    z_dim: int = field(default=8, metadata={"doc": "latent size"})


class TinyG(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.z_dim, cfg.num_bands * 8 * 8)

    def forward(self, z):
        x = self.fc(z).view(len(z), self.cfg.num_bands, 8, 8)
        return torch.tanh(F.interpolate(x, size=self.cfg.resolution, mode="nearest"))


class TinyD(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv2d(cfg.num_bands, 4, 4, 4)
        self.fc = nn.Linear(4 * (cfg.resolution // 4) ** 2, 1)

    def forward(self, x):
        return self.fc(F.leaky_relu(self.conv(x), 0.2).flatten(1)).flatten()


class TinyObjective(Objective):
    phases = (Phase("critic", optimizer="D"), Phase("gen", optimizer="G"))

    def begin_step(self, batch, ctx):
        ctx.stash["z"] = ctx.sample_latents(ctx.batch_size)

    def run(self, phase, batch, ctx):
        G, D = self.nets["G"], self.nets["D"]
        if phase == "critic":
            real, fake = D(batch["image"]), D(G(ctx.stash["z"]).detach())
            loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            return loss, {"loss_D": loss.detach(), "tiny_margin": (real.mean() - fake.mean()).detach()}
        loss = -D(G(ctx.stash["z"])).mean()
        return loss, {"loss_G": loss.detach()}


class TinyFamily(Family):
    name = "tiny"
    config_cls = TinyConfig
    objective_cls = TinyObjective
    description = "a two-layer test family"

    def build(self, cfg):
        return {"G": TinyG(cfg), "D": TinyD(cfg)}


register(TinyFamily())
'''


@pytest.fixture()
def plugin_env(tmp_path):
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    (plugdir / "tiny_family.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugdir), str(ROOT)]), GALAXYGAN_FAMILIES="tiny_family")
    return env


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def test_outside_family_registers_beside_the_builtins(plugin_env):
    code = "from galaxy_core.models.registry import known_archs; print(','.join(known_archs()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plugin_env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {"dcgan", "tiny"} <= set(out.stdout.strip().split(","))


def test_outside_family_trains_resumes_samples_and_verifies_through_the_cli(tmp_path, plugin_env):
    cfg = SMALL + ["model.arch=tiny", "train.lr_step_every=10", "train.lr_step_unit=step"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    for args in (["--run-dir", str(straight), *_sets(cfg + ["train.steps=20"])],
                 ["--run-dir", str(split), *_sets(cfg + ["train.steps=10"])],
                 ["--resume", str(split), *_sets(["train.steps=20"])]):
        r = _cli("train", "--quiet", *args, env=plugin_env)
        assert r.returncode == 0, r.stdout + r.stderr
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(split / "metrics.jsonl")
    assert [r["step"] for r in b] == [5, 10, 15, 20]
    assert all("tiny_margin" in r and "loss_G" in r for r in b)  # the family's own statistic is logged
    for ra, rb in zip(a, b):
        assert ra["tiny_margin"] == pytest.approx(rb["tiny_margin"], rel=1e-5, abs=1e-6)
    ta, _ = load_checkpoint(straight / "checkpoints" / "last.json")
    tb, _ = load_checkpoint(split / "checkpoints" / "last.json")
    for k in ta:
        if k.startswith(("G_ema.", "D.")):
            torch.testing.assert_close(ta[k], tb[k], rtol=1e-5, atol=1e-6)
    out = tmp_path / "samples"
    r = _cli("sample", str(split / "checkpoints" / "last.json"), "-n", "4", "--out", str(out), env=plugin_env)
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("*.png"))) >= 4
    r = _cli("checkpoints", "verify", str(split / "checkpoints"), env=plugin_env)
    assert r.returncode == 0 and "1 of 1 checkpoints verified" in r.stdout, r.stdout + r.stderr  # last (no live eval: no best)
    r = _cli("train", "--dry-run", *_sets(["model.arch=tiny"]), env=plugin_env)
    assert r.returncode == 0 and "z_dim (int, default 8): latent size" in r.stdout


def test_shipped_checkpoints_verify():
    r = _cli("checkpoints", "verify", str(ROOT / "checkpoints"))
    assert r.returncode == 0, r.stdout + r.stderr
    n = len([p for p in (ROOT / "checkpoints").glob("*.json") if p.with_suffix(".safetensors").exists()])
    assert f"{n} of {n} checkpoints verified" in r.stdout


def test_verify_flags_a_non_finite_checkpoint(tmp_path):
    from galaxy_core.io.checkpoint import save_checkpoint

    tensors, meta = load_checkpoint(ROOT / "checkpoints" / "dcgan_hdf32.json")
    tensors = {k: v.clone() for k, v in tensors.items()}
    key = next(k for k in tensors if k.startswith("G_ema.") and k.endswith("weight"))
    tensors[key][0] = float("nan")
    meta.pop("tensors_sha256")
    save_checkpoint(tmp_path / "bad", tensors, meta)
    r = _cli("checkpoints", "verify", str(tmp_path))
    assert r.returncode == 1 and "FAIL" in r.stdout and key in r.stdout


def test_family_fields_are_documented():
    docs = {f["name"]: f["doc"] for f in config_fields(get_arch("dcgan").config_cls)}
    assert set(docs) == {"resolution", "num_bands", "z_dim", "width", "d_dropout"}
    assert all(docs.values())


def test_band_change_recreates_exactly_the_input_and_output_layers():
    fam = get_arch("dcgan")
    rgb = fam.build(make_config("dcgan", {"resolution": 32, "width": 8, "num_bands": 3}))
    one = fam.build(make_config("dcgan", {"resolution": 32, "width": 8, "num_bands": 1}))
    tensors = {f"{n}.{k}": v for n, net in rgb.items() for k, v in net.state_dict().items()}
    rep = load_matching(one, tensors, source="rgb")
    last_convT = [n for n, m in one["G"].named_modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    first_conv = [n for n, m in one["D"].named_modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert rep.recreated == [f"G.{last_convT}.weight", f"D.{first_conv}.weight"]
    assert not rep.missing
    torch.testing.assert_close(one["G"].state_dict()["main.0.weight"], rgb["G"].state_dict()["main.0.weight"])


def test_fine_tune_with_frozen_layers_keeps_them_bit_identical(tmp_path):
    base = tmp_path / "base"
    train(load_config(None, SMALL + ["model.width=8", "train.steps=10"]), base, progress=False)
    src, _ = load_checkpoint(base / "checkpoints" / "last.json")
    status = train(load_config(None, SMALL + ["model.width=8", "train.steps=10", "train.freeze_g=2",
                                              "train.freeze_d=1"]),
                   tmp_path / "tuned", init_from=str(base / "checkpoints" / "last.json"), progress=False)
    assert status["init"]["loaded"] == len([k for k in src if k.startswith(("G.", "D."))])
    assert status["init"]["recreated"] == [] and status["init"]["missing"] == []
    out, meta = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.json")
    assert meta["engine"]["frozen"] == {"G": 12, "D": 1}  # 2 x (convT + batch norm's 5 tensors); D's first conv
    fam = get_arch("dcgan")
    cfg = make_config("dcgan", {k: v for k, v in meta["model"].items() if k != "arch"})
    nets = fam.build(cfg)
    g_units = fam.freeze_units("G", nets["G"], "layer")
    frozen = {f"G.{n}" for u in g_units[:2] for n in u} | {f"D.{n}" for n in fam.freeze_units("D", nets["D"], "block")[0]}
    assert len(frozen) == 13
    for k in frozen:
        assert torch.equal(out[k], src[k]), k
        if k.startswith("G."):  # the EMA copy starts from the fine-tuned G and cannot move either
            assert torch.equal(out["G_ema." + k[2:]], src[k]), k
    changed = [k for k in out if k.startswith(("G.", "D.")) and k not in frozen and out[k].is_floating_point()
               and not torch.equal(out[k], src[k])]
    trainable = [k for k in out if k.startswith(("G.", "D.")) and k not in frozen and out[k].is_floating_point()]
    assert len(changed) == len(trainable) > 0


@pytest.mark.parametrize("net", ["g", "d"])
def test_freezing_every_unit_of_a_network_is_refused(tmp_path, net):
    from galaxy_core.errors import ConfigError

    nets = get_arch("dcgan").build(make_config("dcgan", {"resolution": 32, "width": 8, "num_bands": 3}))
    fam = get_arch("dcgan")
    n = len(fam.freeze_units(net.upper(), nets[net.upper()], "layer" if net == "g" else "block"))
    with pytest.raises(ConfigError, match=f"train.freeze_{net} = {n} but {net.upper()} has {n} .*freeze at most {n - 1}"):
        train(load_config(None, SMALL + ["model.width=8", "train.steps=2", f"train.freeze_{net}={n}"]),
              tmp_path / "all", progress=False)
    train(load_config(None, SMALL + ["model.width=8", "train.steps=1", f"train.freeze_{net}={n - 1}"]),
          tmp_path / "all_but_one", progress=False)


def test_recalibration_re_estimates_the_batch_norms_of_frozen_layers():
    from galaxy_core.models.bnstats import recalibrate
    from galaxy_core.train.finetune import freeze

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    net[0].bias.data = torch.tensor([2.0, -1.0, 0.5])
    freeze(net, ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                 "1.num_batches_tracked"])
    x = torch.randn(64, 4)
    with torch.no_grad():
        pre = net[0](x)
    net.train()
    net(x)
    assert not net[1].training and int(net[1].num_batches_tracked) == 0  # pinned in eval mode while fine-tuning
    recalibrate(net, [x])
    torch.testing.assert_close(net[1].running_mean, pre.mean(0))
    torch.testing.assert_close(net[1].running_var, pre.var(0))
    net(x + 1)
    assert net.training and not net[1].training  # still pinned once recalibrated
    torch.testing.assert_close(net[1].running_mean, pre.mean(0))


def test_ema_copy_of_a_frozen_generator_follows_train_and_eval():
    from galaxy_core.train.ema import make_ema
    from galaxy_core.train.finetune import freeze

    G = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    freeze(G, ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
               "1.num_batches_tracked"])
    G_ema = make_ema(G)
    assert not G_ema.training and not any(p.requires_grad for p in G_ema.parameters())
    G_ema.train()
    G_ema(torch.randn(8, 4))
    assert G_ema[1].training and int(G_ema[1].num_batches_tracked) == 1
    G.train()
    G(torch.randn(8, 4))
    assert not G[1].training  # the trained network keeps its frozen layer in eval mode


def test_fine_tune_with_frozen_batch_norms_samples_as_without_freezing(tmp_path):
    # At a learning rate of 1e-12 the fine-tuned weights are the source's whatever is frozen, so
    # the EMA copy's re-estimated batch-norm statistics, its samples and checkpoint are the same.
    src = ROOT / "checkpoints" / "fastgan_hdf32.json"
    out = {}
    for k in (0, 2):
        sets = SMALL + ["model.arch=\"fastgan\"", "model.width=8", "model.z_dim=256", "train.steps=1",
                        f"train.freeze_g={k}", "train.lr_g=1e-12", "train.lr_d=1e-12"]
        train(load_config(None, sets), tmp_path / f"freeze{k}", init_from=str(src), progress=False)
        out[k], meta = load_checkpoint(tmp_path / f"freeze{k}" / "checkpoints" / "last.json")
        assert meta["engine"]["frozen"] == ({"G": 12} if k else {})
    stats = [key for key in out[0] if key.startswith("G_ema.") and key.endswith(("running_mean", "running_var"))]
    assert len(stats) == 8
    for key in stats:
        torch.testing.assert_close(out[2][key], out[0][key], rtol=1e-4, atol=1e-5)
        assert not torch.equal(out[2][key], torch.zeros_like(out[2][key])), key
        assert not torch.equal(out[2][key], torch.ones_like(out[2][key])), key
    for step in (0, 1):
        a = np.asarray(Image.open(tmp_path / "freeze0" / "samples" / f"step_{step:07d}.png"), np.int16)
        b = np.asarray(Image.open(tmp_path / "freeze2" / "samples" / f"step_{step:07d}.png"), np.int16)
        assert np.abs(a - b).max() <= 1, step


# One tiny configuration per built-in family, every phase due at step 0 (StyleGAN's lazy R1 and
# path-length phases included).
FAMILY_STEPS = {
    "dcgan": ("dcgan_hdf32.toml", ["model.width=8"]),
    "positions": ("positions_hdf_cond.toml", ["model.width=8"]),
    "fastgan": ("fastgan_hdf32.toml", ["model.z_dim=32"]),
    "stylegan": ("stylegan_sim64.toml", ["data.dataset=hdf", "data.resolution=32", "model.z_dim=16", "model.w_dim=16",
                                         "model.mapping_layers=2", "model.channel_base=128", "model.channel_max=16",
                                         "model.pl_weight=2.0"]),
    "began": ("began_hdf32.toml", ["model.width=8"]),
    "began_cond": ("began_cond_hdf32.toml", ["model.width=8"]),
    "stackgan": ("stackgan_sim128.toml", ["data.dataset=hdf", "data.resolution=64",
                                          "model.stage1=checkpoints/dcgan_hdf32.json", "model.width=8",
                                          "model.final_width=8", "model.res_blocks=1", "model.d_width=8"]),
}
FACTORIES = ("tensor", "as_tensor", "scalar_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "eye")


@pytest.mark.parametrize("arch", sorted(FAMILY_STEPS))
def test_every_family_returns_its_statistics_on_the_networks_device(tmp_path, monkeypatch, arch):
    # A tensor made without a device lands on the CPU while the networks may be on a GPU, where
    # the loop's finiteness check stacked it with the losses and failed at the first step. With
    # the networks on the CPU, a factory called without a device is made to answer on 'meta'
    # (standing in for "not the networks' device"), so such a statistic shows.
    from galaxy_core.train.loop import Trainer, _check_finite
    from galaxy_core.train.run import RunFolder

    config, extra = FAMILY_STEPS[arch]
    sets = ["train.batch_size=4", "train.device=cpu", "train.threads=1", "log.eval_every=0", "log.grid_size=4"]
    tr = Trainer(load_config(ROOT / "configs" / config, sets + extra), RunFolder(tmp_path / "run"), progress=False)
    assert tr.model["arch"] == arch and tr.step == 0  # every phase is due at step 0

    def elsewhere(factory):
        def make(*args, **kwargs):
            if kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return factory(*args, **kwargs)
        return make

    with monkeypatch.context() as m:
        for name in FACTORIES:
            m.setattr(torch, name, elsewhere(getattr(torch, name)))
        stats = tr.train_step()
    assert stats and {k: v.device for k, v in stats.items()} == {k: torch.device("cpu") for k in stats}
    _check_finite(tr, stats)


def test_finiteness_check_gathers_statistics_from_several_devices():
    from galaxy_core.train.loop import _statistics_tensor

    stats = {"loss_G": torch.zeros((), device="meta"), "k_t": torch.tensor(0.1), "M_global": torch.tensor([0.2])}
    values = _statistics_tensor(stats)  # 'meta' stands in for the accelerator the losses are on
    assert values.device.type == "meta" and values.shape == (3,) and values.dtype == torch.float32


def test_a_resumed_fine_tuning_run_keeps_its_init_record_and_refuses_another_init(tmp_path):
    from galaxy_core.io.checkpoint import checkpoint_id
    from galaxy_core.train.loop import RunRefused

    sets = SMALL + ["model.width=8"]
    for name, seed in (("source", 0), ("other", 5)):
        train(load_config(None, sets + ["train.steps=2", f"train.seed={seed}"]), tmp_path / name, progress=False)
    source, other = (tmp_path / n / "checkpoints" / "last.json" for n in ("source", "other"))
    tuned = tmp_path / "tuned"
    train(load_config(None, sets + ["train.steps=2"]), tuned, init_from=str(source), progress=False)
    record = read_meta(tuned / "checkpoints" / "last.json")["engine"]["init"]
    assert record["sha"] == checkpoint_id(source) and record["source"] == str(source.resolve())
    train(load_config(None, sets + ["train.steps=4"]), tuned, progress=False)  # resumed without --init
    assert read_meta(tuned / "checkpoints" / "last.json")["engine"]["init"] == record
    with pytest.raises(RunRefused, match="started from .*not from"):
        train(load_config(None, sets + ["train.steps=6"]), tuned, init_from=str(other), progress=False)
    train(load_config(None, sets + ["train.steps=6"]), tuned, init_from=str(source), progress=False)
    meta = read_meta(tuned / "checkpoints" / "last.json")
    assert meta["training"]["step"] == 6 and meta["engine"]["init"] == record
    with pytest.raises(RunRefused, match="started from scratch"):
        train(load_config(None, sets + ["train.steps=8"]), tmp_path / "other", init_from=str(source), progress=False)


def _tiny_folder(tmp_path, n=6):
    from galaxy_core.data import load_dataset

    hdf = load_dataset("hdf", resolution=32, progress=False)
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(n):
        rgb = np.transpose(hdf.images[i], (1, 2, 0))
        Image.fromarray(np.ascontiguousarray(rgb)).save(folder / f"g{i}.png")
    return folder


def test_adaptive_augmentation_rises_on_an_overfit_discriminator_and_resumes_with_its_p(tmp_path):
    folder = _tiny_folder(tmp_path)
    sets = SMALL + [f"data.dataset={folder}", "model.width=16", "augment.diff=ada", "augment.ada_interval=2",
                    "augment.ada_kimg=0.5", "augment.ada_target=0.6", "log.metrics_every=2"]
    train(load_config(None, sets + ["train.steps=40"]), tmp_path / "straight", progress=False)
    recs = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    ps = [r["augment_p"] for r in recs]
    assert ps[0] < ps[-1] and max(ps) > 0.3, ps  # D overfits six images: r_t > 0.6 and p climbs
    assert max(r["ada_rt"] for r in recs) > 0.6
    train(load_config(None, sets + ["train.steps=20"]), tmp_path / "split", progress=False)
    assert read_meta(tmp_path / "split" / "checkpoints" / "last.json")["engine"]["augment"]["p"] == pytest.approx(
        [r for r in recs if r["step"] == 20][0]["augment_p"])
    train(load_config(None, sets + ["train.steps=40"]), tmp_path / "split", progress=False)
    resumed = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["augment_p"] for r in resumed] == pytest.approx(ps)


def _assert_same_checkpoints(a, b):
    ta, ma = load_checkpoint(a)
    tb, mb = load_checkpoint(b)
    assert sorted(ta) == sorted(tb)
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]
    assert ma["engine"] == mb["engine"]


def test_adaptive_augmentation_resumed_between_two_updates_of_p_is_exact(tmp_path):
    # p moves every 4 steps; the split run saves at step 6, halfway through an interval, so
    # the sign sums of steps 5 and 6 must come back with the checkpoint.
    sets = SMALL + ["model.width=8", "augment.diff=ada", "augment.diff_p=0.2", "augment.ada_interval=4",
                    "augment.ada_kimg=0.1", "augment.ada_target=0.6", "train.seed=1", "log.metrics_every=1"]
    train(load_config(None, sets + ["train.steps=12"]), tmp_path / "straight", progress=False)
    train(load_config(None, sets + ["train.steps=6"]), tmp_path / "split", progress=False)
    saved = read_meta(tmp_path / "split" / "checkpoints" / "last.json")["engine"]["augment"]
    train(load_config(None, sets + ["train.steps=12"]), tmp_path / "split", progress=False)
    clock = ("time", "cpu_s", "images_per_s")
    recs = {n: [{k: v for k, v in r.items() if k not in clock} for r in read_metrics(tmp_path / n / "metrics.jsonl")]
            for n in ("straight", "split")}
    assert recs["split"] == recs["straight"]  # p, and r_t logged between its updates
    assert len({r["augment_p"] for r in recs["straight"]}) > 1  # p did move in these 12 steps
    _assert_same_checkpoints(tmp_path / "straight" / "checkpoints" / "last.json",
                             tmp_path / "split" / "checkpoints" / "last.json")
    assert saved.get("count") == 2 * 8 and abs(saved["sign_sum"]) <= 16  # steps 5 and 6, 8 real images each


def test_adaptive_augmentation_state_replaces_the_sign_sums_and_gathers_them_on_one_rank():
    from galaxy_core.train.diffaug import AdaptiveAugment

    aug = AdaptiveAugment(ops=("flip",), mode="ada", p=0.1)
    aug.observe(torch.tensor([1.0, 1.0, -1.0]))
    assert aug.state_dict() == {"p": 0.1, "r_t": None, "sign_sum": 1.0, "count": 3}
    aug.observe(torch.tensor([1.0]))  # a step that a rollback undoes
    aug.load_state_dict({"p": 0.1, "r_t": 0.5, "sign_sum": 1.0, "count": 3})
    assert aug.state_dict() == {"p": 0.1, "r_t": 0.5, "sign_sum": 1.0, "count": 3}
    aug.load_state_dict({"p": 0.2})  # a checkpoint written before the sums were saved
    assert aug.state_dict() == {"p": 0.2, "r_t": None, "sign_sum": 0.0, "count": 0}
    # torchrun: two ranks' sums end up on rank 0, and an update sums the same total as before
    ranks = [AdaptiveAugment(ops=("flip",), mode="ada", p=0.5, interval=1, speed_kimg=1.0) for _ in range(2)]
    ranks[0].observe(torch.tensor([1.0, 1.0]))
    ranks[1].observe(torch.tensor([1.0, -1.0]))
    totals = torch.tensor([2.0, 4.0], dtype=torch.float64)  # what all_reduce of the two ranks' sums returns
    for i, r in enumerate(ranks):
        r.gather(lambda t: totals, keep=i == 0)
    assert ranks[0].state_dict() == {"p": 0.5, "r_t": None, "sign_sum": 2.0, "count": 4}
    assert ranks[1].state_dict() == {"p": 0.5, "r_t": None, "sign_sum": 0.0, "count": 0}
    assert ranks[0].update(step=1, images_per_step=4) == pytest.approx(0.5)  # r_t of all four logits


def test_diff_augmentation_refuses_colour_on_survey_bands():
    from galaxy_core.errors import ConfigError
    from galaxy_core.train.diffaug import policy_ops

    assert policy_ops("auto", ["g", "r", "i"]) == ("flip", "rot90", "shift", "noise")
    assert policy_ops("auto", ["R", "G", "B"]) == ("translation", "cutout", "color")
    with pytest.raises(ConfigError, match="color"):
        policy_ops("translation,color", ["g", "r", "i"])


def test_diff_augmentation_is_differentiable_and_identity_at_p0():
    from galaxy_core.train.diffaug import AdaptiveAugment, ALL_OPS

    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    aug = AdaptiveAugment(ops=ALL_OPS, mode="fixed", p=0.0)
    assert aug(x, torch.Generator().manual_seed(0)) is x
    aug.p = 1.0
    y = aug(x, torch.Generator().manual_seed(0))
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0
    assert not torch.equal(y.detach(), x.detach())


@pytest.mark.slow
def test_torchrun_two_processes_agree_and_write_one_run(tmp_path):
    # No --run-dir: each rank would draw its own random run name; they must use rank 0's.
    sets = SMALL + ["model.width=8", "train.steps=10", "log.metrics_every=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "galaxy_core.cli", "train", "--quiet", *_sets(sets)]
    env = dict(os.environ, OMP_NUM_THREADS="1", GALAXYGAN_RUNS=str(tmp_path / "runs"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    errors = [line for line in r.stderr.splitlines() if "galaxygan: error" in line]  # each rank's own reason first
    assert r.returncode == 0, "\n".join(errors) + "\n" + r.stdout[-3000:] + r.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    run_dir = runs[0]
    assert r.stdout.count(f"run folder: {run_dir}") == 2  # both ranks named the one folder
    status = json.loads((run_dir / "status.json").read_text())
    sums = status["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    steps = [rec["step"] for rec in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == [2, 4, 6, 8, 10]  # one metrics stream, not one per rank
    cfg = (run_dir / "config.toml").read_text()
    assert "world_size = 2" in cfg and "per_rank_batch = 4" in cfg and "effective_batch = 8" in cfg
