import pytest
import torch

from galaxy_core.models import get_arch, make_config


@pytest.mark.parametrize("resolution, n_convT", [(32, 4), (64, 5), (128, 6)])
def test_generator_and_discriminator_shapes(resolution, n_convT):
    cfg = make_config("dcgan", {"resolution": resolution, "width": 8, "num_bands": 3})
    spec = get_arch("dcgan")
    G, D = spec.build_G(cfg), spec.build_D(cfg)
    z = spec.sample_z(cfg, 4, generator=torch.Generator().manual_seed(0))
    assert z.shape == (4, 100)
    x = G(z)
    assert x.shape == (4, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert D(x).shape == (4,)
    convT = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convT) == n_convT  # 128 px adds a layer
    assert all(m.kernel_size == (4, 4) for m in convT)
    assert all(m.stride == (2, 2) for m in convT[1:])
    lrelu = [m for m in D.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert lrelu and all(m.negative_slope == 0.2 for m in lrelu)


def test_weight_init_is_normal_0_002():
    cfg = make_config("dcgan", {"resolution": 64, "width": 32})
    G = get_arch("dcgan").build_G(cfg)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)


def test_width_scales_channels():
    c32 = make_config("dcgan", {"width": 32})
    c128 = make_config("dcgan", {"width": 128})
    n = lambda c: sum(p.numel() for p in get_arch("dcgan").build_G(c).parameters())  # noqa: E731
    assert n(c128) > 10 * n(c32)


def test_dropout_option_adds_dropout():
    cfg = make_config("dcgan", {"d_dropout": 0.3})
    D = get_arch("dcgan").build_D(cfg)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in D.modules())


def test_single_band_output():
    cfg = make_config("dcgan", {"resolution": 32, "num_bands": 1, "width": 8})
    assert get_arch("dcgan").build_G(cfg)(torch.randn(2, 100)).shape == (2, 1, 32, 32)
