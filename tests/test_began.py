"""BEGAN: proportional control of k_t and the convergence measure against hand-computed values."""

import numpy as np
import pytest
import torch

from galaxy_core.models.began import (AutoEncoder, BEGANConfig, BEGANObjective, Generator, convergence_measure,
                                      k_update, recon_loss)
from galaxy_core.models.registry import get_arch


def test_k_update_by_hand():
    # k + lambda (gamma L_x - L_g) = 0.1 + 0.001 (0.5 * 0.4 - 0.1) = 0.1001
    assert k_update(0.1, 0.4, 0.1, gamma=0.5, lambda_k=0.001) == pytest.approx(0.1001)
    assert k_update(0.0, 0.1, 0.9, gamma=0.5, lambda_k=0.01) == 0.0  # clipped below
    assert k_update(0.999, 1.0, 0.0, gamma=1.0, lambda_k=0.1) == 1.0  # clipped above


def test_convergence_measure_by_hand():
    assert convergence_measure(0.4, 0.1, gamma=0.5) == pytest.approx(0.4 + 0.1)
    assert convergence_measure(0.4, 0.3, gamma=0.5) == pytest.approx(0.4 + 0.1)


def test_recon_loss_is_mean_l1():
    class Zero(torch.nn.Module):
        def forward(self, x, labels=None):
            return torch.zeros_like(x)

    x = torch.tensor([[[[1.0, -3.0]]]])
    assert float(recon_loss(Zero(), x)) == pytest.approx(2.0)


class _Ctx:
    def __init__(self, z, device="cpu"):
        self.stash, self.device, self._z, self.batch_size = {}, torch.device(device), z, len(z)

    def sample_latents(self, n):
        return self._z

    def augment(self, x):
        return x


@pytest.mark.parametrize("k", [0, 3])
def test_objective_step_matches_formulas_and_state_round_trips(k):
    torch.manual_seed(0)
    cfg = BEGANConfig(resolution=32, num_bands=3, z_dim=8, h_dim=8, width=4, num_classes=k, k_init=0.2,
                      lambda_k=0.01, gamma=0.5)
    nets = {"G": Generator(cfg), "D": AutoEncoder(cfg)}
    obj = BEGANObjective(cfg, None, nets)
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1}
    if k:
        batch["label"] = torch.tensor([0, 1, 2, 0])
    ctx = _Ctx(torch.rand(4, 8) * 2 - 1)
    obj.begin_step(batch, ctx)
    loss_d, st_d = obj.run("D", batch, ctx)
    labels = batch.get("label")
    with torch.no_grad():
        fake = nets["G"](ctx.stash["z"], labels)
        l_real = float(recon_loss(nets["D"], batch["image"], labels))
        l_fake = float(recon_loss(nets["D"], fake, labels))
    assert float(loss_d.detach()) == pytest.approx(l_real - 0.2 * l_fake, rel=1e-5)
    loss_g, st = obj.run("G", batch, ctx)
    assert float(loss_g.detach()) == pytest.approx(l_fake, rel=1e-5)
    assert float(st["k_t"]) == pytest.approx(min(max(0.2 + 0.01 * (0.5 * l_real - l_fake), 0), 1), rel=1e-5)
    assert float(st["M_global"]) == pytest.approx(l_real + abs(0.5 * l_real - l_fake), rel=1e-5)
    again = BEGANObjective(cfg, None, nets)
    again.load_state_dict(obj.state_dict())
    assert again.k == obj.k and obj.state_dict() == {"k_t": obj.k}


def test_families_registered_and_outputs_in_range():
    fam = get_arch("began_cond")
    cfg = BEGANConfig(num_classes=3, width=4, z_dim=8, h_dim=8)
    nets = fam.build(cfg)
    z = fam.sample_latents(cfg, 6, generator=torch.Generator().manual_seed(0))
    assert float(z.min()) >= -1 and float(z.max()) <= 1
    with torch.no_grad():
        x = fam.generate({"G": nets["G"]}, z)  # labels cycle through the classes
    assert x.shape == (6, 3, 32, 32) and float(x.abs().max()) <= 1
    assert get_arch("began").data_kind == "image" and fam.data_kind == "label"


def test_size_class_labels_from_catalogue():
    from astropy.table import Table

    class Data:
        name = "t"
        catalog = Table({"size_class": ["large", "small", "medium"]})

    labels = get_arch("began_cond").dataset_labels(None, Data())
    np.testing.assert_array_equal(labels, [2, 0, 1])


@pytest.mark.parametrize("name", ["began_hdf32", "began_cond_hdf32"])
def test_shipped_began_draws_galaxies_not_blank_sky(name):
    """The shipped BEGANs must draw galaxies with about the flux of the real 32 px stamps: a
    generator collapsed onto blank sky (what an auto-encoder reconstructs best, while k_t is
    still ~0) gives patches in which the composer's galaxy mask finds no flux at all."""
    from galaxy_core.data.hdf import prepare_hdf
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.stamps import galaxy_flux

    model = load_pretrained(checkpoints_dir() / f"{name}.json")
    z = model.family.sample_latents(model.model_cfg, 96, generator=torch.Generator().manual_seed(0))
    labels = np.arange(96) % 3 if model.num_classes else None
    fake = galaxy_flux(np.asarray(model.generate(z, labels=labels))).sum(axis=(1, 2, 3))
    real = galaxy_flux(prepare_hdf(resolution=32, progress=False).to_model_range()[:96]).sum(axis=(1, 2, 3))
    assert (fake > 0.05 * np.median(real)).mean() > 0.8  # nearly every sample holds a source
    assert 0.25 < np.median(fake) / np.median(real) < 4.0


def test_short_run_records_began_statistics_apart_from_quality_metrics(tmp_path):
    """A BEGAN run's records carry k_t, M_global, L_real and L_fake beside the live FID/KID; only
    the FID/KID are quality metrics (lower is better), and the run's own bookkeeping (cpu_s) is
    neither (the Train page draws its panels from this split)."""
    from galaxy_core.config import load_config
    from galaxy_core.paths import configs_dir
    from galaxy_core.train.live import split_record_keys
    from galaxy_core.train.loop import train
    from galaxy_core.train.run import RunFolder

    cfg = load_config(configs_dir() / "began_hdf32.toml",
                      ["train.steps=6", "train.batch_size=8", "model.width=4", "model.z_dim=8", "model.h_dim=8",
                       "train.device=cpu", "log.metrics_every=3", "log.eval_every=6", "log.eval_samples=32",
                       "log.sample_every=6", "log.checkpoint_every=6", "log.eval_extractor=pix8"])
    assert train(cfg, tmp_path / "run", progress=False)["state"] == "finished"
    recs = RunFolder(tmp_path / "run").read_metrics()
    quality, statistics = split_record_keys(recs)
    assert [k.split("_")[0] for k in quality] == ["fid", "kid"] and all("_pix8_" in k for k in quality)
    assert {"k_t", "M_global", "L_real", "L_fake"} <= set(statistics)
    assert all(0 <= r["k_t"] <= 1 for r in recs)
    assert "cpu_s" in recs[-1] and "cpu_s" not in quality + statistics
    assert not {"loss_D", "loss_G", "step", "kimg", "D_x"} & set(quality + statistics)
