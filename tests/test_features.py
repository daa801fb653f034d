"""Tests of galaxy_core.metrics.features with the shipped galaxy encoder.

Real images only: a small ``sim`` set with a seed the encoder was never trained on (seed 1;
training used seed 0) and the built-in ``hdf`` stamps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.data.sources import load_dataset
from galaxy_core.errors import ConfigError
from galaxy_core.metrics.features import (
    BASELINES,
    INCEPTION_ENV,
    KIND,
    baseline_images,
    default_encoder_path,
    disturb,
    disturbance_curves,
    fid_between,
    load_extractor,
    reference_cache_path,
    reference_statistics,
)
from galaxy_core.paths import checkpoints_dir

N_SIM = 200  # small, so the first run simulates it in seconds; cached afterwards


@pytest.fixture(scope="module")
def extractor():
    return load_extractor("galaxy")


@pytest.fixture(scope="module")
def sim():
    return load_dataset("sim", resolution=64, count=N_SIM, seed=1, progress=False)


@pytest.fixture(scope="module")
def hdf():
    return load_dataset("hdf", resolution=64, progress=False)


@pytest.fixture(scope="module")
def real(sim, hdf):
    return {"sim": sim.to_model_range(), "hdf": hdf.to_model_range()}


# ------------------------------------------------------------------------------ soundness


@pytest.mark.parametrize("name", ["sim", "hdf"])
def test_disturbance_curves_increase_monotonically(extractor, real, name):
    curves = disturbance_curves(real[name][:N_SIM], extractor, levels=4, rng=0)
    assert set(curves) == {"noise", "blur", "mask"}
    for kind, values in curves.items():
        assert len(values) == 4
        assert values[0] > 0, (name, kind, values)
        assert np.all(np.diff(values) > 0), f"{name} {kind} not increasing: {values}"


def test_heldout_fid_far_below_every_baseline(extractor, real):
    # sim: two halves of a seed never seen in training; hdf: the training split against the
    # held-out stamps (index % 5 == 4), which the encoder never saw.
    x = real["sim"]
    h = real["hdf"]
    held = np.arange(len(h)) % 5 == 4
    pairs = {"sim": (x[: N_SIM // 2], x[N_SIM // 2 :]), "hdf": (h[~held], h[held])}
    for name, (a, b) in pairs.items():
        fa = extractor(a)
        real_fid = fid_between(fa, extractor(b))
        for kind in BASELINES:
            base_fid = fid_between(fa, extractor(baseline_images(kind, b, rng=1)))
            assert base_fid > 10 * real_fid, (name, kind, real_fid, base_fid)


def test_model_card_records_training_and_soundness():
    from galaxy_core.models.pretrained import list_checkpoints
    from galaxy_core.io.checkpoint import read_meta

    meta = read_meta(default_encoder_path())
    assert meta["kind"] == KIND and meta["arch"] == "galaxy_encoder"
    assert meta["training"]["hardware"]["device"] == "cpu"
    r2 = meta["r2_heldout"]["unaugmented"]
    assert r2["mag_r"] > 0.9 and r2["g_r"] > 0.8
    s = meta["soundness"]
    assert s["monotonic"] is True
    assert s["min_baseline_over_heldout"] > 10
    # GAN checkpoint listings skip the encoder
    assert default_encoder_path() not in list_checkpoints(checkpoints_dir())


# ----------------------------------------------------------------------- extractor behaviour


def test_features_are_deterministic_and_batch_independent(extractor, real):
    x = real["hdf"][:40]
    f1 = extractor(x)
    f2 = extractor(x)
    assert f1.dtype == np.float64 and f1.shape == (40, extractor.dim) == (40, 128)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_allclose(extractor(x, batch=7), f1, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(extractor(torch.from_numpy(x)), f1)  # tensors accepted too
    assert len(extractor.id) == 12 and extractor.name == "galaxy"


def test_extractor_takes_one_channel_and_other_sizes(extractor, real):
    x = real["sim"][:16]
    grey = x[:, 1:2]  # (16, 1, 64, 64)
    np.testing.assert_array_equal(extractor(grey), extractor(np.repeat(grey, 3, axis=1)))
    small = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2).numpy()  # 32 px
    large = np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)  # 128 px
    f = extractor(x)
    for y in (small, large):
        g = extractor(y)
        assert g.shape == f.shape and np.all(np.isfinite(g))
    # a 128 px copy is close to the original in feature space, compared to a baseline
    d_large = np.linalg.norm(extractor(large) - f, axis=1).mean()
    d_noise = np.linalg.norm(extractor(baseline_images("noise", x, rng=0)) - f, axis=1).mean()
    assert d_large < 0.5 * d_noise
    with pytest.raises(ValueError, match="channels"):
        extractor(np.zeros((2, 2, 64, 64), np.float32))


def test_disturb_levels():
    rng = np.random.default_rng(0)
    x = np.full((3, 3, 64, 64), -0.8, np.float32)
    x[:, :, 24:40, 24:40] = 0.5
    np.testing.assert_array_equal(disturb(x, kind="noise", strength=0.0), x)
    masked = disturb(x, kind="mask", strength=1.0, rng=rng)
    assert np.all(np.isin(masked, np.unique(x)))  # filled with the background value
    assert (masked == -0.8).sum() > (x == -0.8).sum()
    blurred = disturb(x, kind="blur", strength=1.0)
    assert blurred[0, 0, 24, 24] < 0.3 and abs(blurred.mean() - x.mean()) < 1e-3
    with pytest.raises(ValueError, match="unknown disturbance"):
        disturb(x, kind="jpeg", strength=0.5)


# ------------------------------------------------------------------- reference statistics


def test_reference_statistics_are_cached_on_disk(extractor, sim, hdf, tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path))
    path = reference_cache_path(sim, extractor, max_images=200)
    assert path.parent == tmp_path / "refstats" and not path.exists()
    mu, sigma, feats = reference_statistics(sim, extractor, max_images=200)
    assert path.exists()
    assert mu.shape == (128,) and sigma.shape == (128, 128) and feats.shape == (200, 128)
    np.testing.assert_allclose(mu, feats.mean(0))
    again = reference_statistics(sim, extractor, max_images=200)
    for a, b in zip((mu, sigma, feats), again):
        np.testing.assert_array_equal(a, b)
    # the second call reads the file: a marker written into it comes back
    np.savez(path, mu=mu + 1.0, sigma=sigma, features=feats)
    np.testing.assert_array_equal(reference_statistics(sim, extractor, max_images=200)[0], mu + 1.0)
    np.testing.assert_array_equal(reference_statistics(sim, extractor, max_images=200, cache=False)[0], mu)

    other = PreparedDataset(root=sim.root, manifest={**sim.manifest, "key": "0000000000000000"})
    assert reference_cache_path(other, extractor, max_images=200) != path
    assert reference_cache_path(sim, extractor, max_images=100) != path
    assert reference_cache_path(hdf, extractor, max_images=200) != path


# ------------------------------------------------------------------------------- inception


def test_inception_without_file_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(ConfigError, match="inception-2015-12-05.pt") as info:
        load_extractor("inception")
    assert INCEPTION_ENV in str(info.value) and "never" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_extractor("inception", path=tmp_path / "missing.pt")
    junk = tmp_path / "weights.pkl"
    junk.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ConfigError, match="not a TorchScript file"):
        load_extractor("inception", path=junk)
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        load_extractor("resnet")


class _MeanColour(torch.nn.Module):
    """A TorchScript module with the calling convention of the FID Inception file."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return img.to(torch.float32).mean(dim=(2, 3))


def test_inception_path_loads_a_torchscript_file(tmp_path, monkeypatch, real):
    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit itself is deprecated
        torch.jit.script(_MeanColour()).save(str(path))
    monkeypatch.setenv(INCEPTION_ENV, str(path))
    ext = load_extractor("inception")
    assert ext.name == "inception" and ext.dim == 3 and len(ext.id) == 12
    x = real["hdf"][:5]
    expected = np.round((x + 1) * 127.5).clip(0, 255).mean(axis=(2, 3))  # uint8 input, as the reference
    np.testing.assert_allclose(ext(x), expected, rtol=1e-5)
    assert ext(x[:, :1]).shape == (5, 3)  # one channel repeated


# ----------------------------------------------------------------- training augmentations


def test_augmented_target_stats_constant_target_gets_unit_std():
    """A target with one value in every view (here the redshift) is centred but not divided
    by its zero spread; the others keep their std."""
    from galaxy_core.metrics.encoder_training import TARGETS, TrainConfig, augmented_target_stats

    names = list(TARGETS)
    iz, im = names.index("redshift"), names.index("mag_r")
    y = np.zeros((40, len(names)))
    y[:, iz] = 0.3
    y[:, im] = np.arange(40.0)
    mean, std = augmented_target_stats(y, names=names, cfg=TrainConfig(max_shift=0))
    assert mean[iz] == pytest.approx(0.3) and std[iz] == 1.0
    assert std[im] == pytest.approx(np.std(np.arange(40.0)))
    assert np.all(np.isfinite((y - mean) / std))


def test_training_views_carry_correctly_transformed_targets():
    """Offsets and orientation targets follow flips, quarter turns and shifts of the image
    (checked on a point source and on elongated Gaussians measured by second moments)."""
    from galaxy_core.metrics.encoder_training import TARGETS, TrainConfig, augment

    names = list(TARGETS)
    ix, iy, ie1, ie2 = (names.index(k) for k in ("dx", "dy", "e1", "e2"))
    cfg = TrainConfig(max_noise=0.0)
    n, side = 64, 48
    centre = (side - 1) / 2
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(18, 30, n), rng.integers(18, 30, n)  # profiles stay inside
    pa = rng.uniform(0, 180, n)
    yy, xx = np.mgrid[:side, :side] - centre
    t = np.deg2rad(pa)[:, None, None]
    u = (xx - (cols - centre)[:, None, None]) * np.cos(t) + (yy - (rows - centre)[:, None, None]) * np.sin(t)
    v = -(xx - (cols - centre)[:, None, None]) * np.sin(t) + (yy - (rows - centre)[:, None, None]) * np.cos(t)
    x = torch.tensor(np.exp(-0.5 * (u**2 / 9 + v**2 / 2)), dtype=torch.float32)[:, None]
    y = torch.zeros(n, len(names), dtype=torch.float64)
    y[:, ix], y[:, iy] = torch.tensor(cols - centre), torch.tensor(rows - centre)
    y[:, ie1], y[:, ie2] = torch.tensor(np.cos(2 * np.deg2rad(pa))), torch.tensor(np.sin(2 * np.deg2rad(pa)))

    views, targets = augment(x, y, names=names, cfg=cfg, gen=torch.Generator().manual_seed(3))
    im = views[:, 0].numpy().astype(np.float64)
    w = im.sum((1, 2))
    cx, cy = (im * (xx + centre)).sum((1, 2)) / w, (im * (yy + centre)).sum((1, 2)) / w
    np.testing.assert_allclose(cx - centre, targets[:, ix], atol=0.05)
    np.testing.assert_allclose(cy - centre, targets[:, iy], atol=0.05)
    dx, dy = xx[None] - (cx - centre)[:, None, None], yy[None] - (cy - centre)[:, None, None]
    qxx, qyy, qxy = ((im * d).sum((1, 2)) / w for d in (dx * dx, dy * dy, dx * dy))
    angle = 0.5 * np.arctan2(2 * qxy, qxx - qyy)  # major-axis angle of the view
    np.testing.assert_allclose(np.cos(2 * angle), targets[:, ie1], atol=0.02)
    np.testing.assert_allclose(np.sin(2 * angle), targets[:, ie2], atol=0.02)
