"""StyleGAN exploration: layer ranges, style mixing (checked at every layer's input), generation
from z / w / w+, projection of a generated target, and the Style Mixing page."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.explore import projection, style
from galaxy_core.models.dcgan import DCGANConfig
from galaxy_core.models.dcgan import Generator as DCGANGenerator
from galaxy_core.models.stylegan import Generator, StyleGANConfig
from galaxy_core.paths import checkpoints_dir

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "stylegan_sim64"
SHIPPED_GRI = "stylegan_sim64_gri"  # g/r/i in flux units (FITS output)


def _generator(resolution: int, *, noise: float) -> Generator:
    """A small random StyleGAN with a meaningful w_avg and visible noise."""
    torch.manual_seed(0)
    cfg = StyleGANConfig(resolution=resolution, num_bands=3, z_dim=16, w_dim=16, mapping_layers=2,
                         channel_base=256, channel_max=32)
    g = Generator(cfg)
    with torch.no_grad():
        g.mapping.w_avg.copy_(g.mapping(torch.randn(2000, 16)).mean(0))
        for n in g.synthesis.noise_layers:
            g.synthesis.get_submodule(n).noise_strength.fill_(noise)
        for name, _, kind in g.synthesis.layers:  # outputs inside [-1, 1], like a trained model's,
            if kind == "rgb":                     # so no pixel of a target is clamped
                g.synthesis.get_submodule(name).weight.mul_(0.2)
    return g.eval()


@pytest.fixture(scope="module")
def G() -> Generator:
    return _generator(64, noise=0.1)


@pytest.fixture(scope="module")
def G32() -> Generator:
    return _generator(32, noise=0.0)  # projection without noise maps to explain the image


def test_layer_ranges_follow_resolution(G):
    res = [r for _, r, _ in style.layers(G)]
    assert res == [4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]
    assert np.flatnonzero(style.layer_mask(G, "coarse")).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(style.layer_mask(G, "middle")).tolist() == [5, 6, 7, 8, 9, 10]
    assert np.flatnonzero(style.layer_mask(G, "fine")).tolist() == [11, 12, 13]
    assert style.layer_mask(G, ["coarse", "fine"]).sum() == 8
    explicit = [False] * 14
    explicit[6] = True
    assert style.layer_mask(G, explicit).tolist() == explicit
    with pytest.raises(ValueError, match="unknown layer range 'huge'"):
        style.layer_mask(G, "huge")
    with pytest.raises(ValueError, match="14 styled layers"):
        style.layer_mask(G, [True, False])
    assert style.layer_label(G, 6) == "w[6] · 16 px · conv1"


def test_all_coarse_mask_feeds_column_styles_to_exactly_the_coarse_layers(G):
    """Capture the w each styled layer's affine receives; compare with the mapped latents.

    The grid shares computation between images whose styles agree up to a layer: at the coarse
    layers a cell's prefix is its column's, so those layers run once per source (rows, then
    columns); from the first fine layer on, every cell runs with its row's styles."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [G.synthesis.get_submodule(name).affine.register_forward_hook(
        lambda m, inp, out, i=i: seen.__setitem__(i, inp[0].detach().clone()))
        for i, (name, _, _) in enumerate(style.layers(G))]
    try:
        rng = np.random.default_rng(1)
        row_z, col_z = rng.normal(size=(2, 16)), rng.normal(size=(3, 16))
        mix = style.style_mix(G, row_z, col_z, mask="coarse", psi=0.8)
    finally:
        for h in hooks:
            h.remove()
    w_rows = torch.from_numpy(style.mapping(G, row_z, psi=0.8))
    w_cols = torch.from_numpy(style.mapping(G, col_z, psi=0.8))
    coarse = style.layer_mask(G, "coarse")
    for i in range(G.num_ws):
        w_in = seen[i]  # 2 rows + 3 columns (+ 6 cells once the cells part from their columns)
        assert len(w_in) == (5 if coarse[i] else 11), (i, len(w_in))
        torch.testing.assert_close(w_in[:2], w_rows)
        torch.testing.assert_close(w_in[2:5], w_cols)
        if not coarse[i]:
            cells = w_in[5:].reshape(2, 3, -1)
            for r in range(2):
                for c in range(3):
                    torch.testing.assert_close(cells[r, c], w_rows[r])
                    assert (cells[r, c] - w_cols[c]).abs().max() > 1e-3
        for r in range(2):  # the styles recorded per cell and layer
            for c in range(3):
                want = w_cols[c] if coarse[i] else w_rows[r]
                torch.testing.assert_close(torch.from_numpy(mix.ws[r, c, i]), want)
    # the shared computation gives the images of a plain synthesis of every cell's styles
    plain = style.synthesize(G, mix.ws.reshape(6, G.num_ws, -1))
    np.testing.assert_allclose(mix.grid.reshape(6, 3, 64, 64), plain, atol=1e-5)
    assert mix.grid.shape == (2, 3, 3, 64, 64) and mix.ws.shape == (2, 3, 14, 16)
    # a cell with no layers from the column is its row image; with all layers, its column image
    none = style.style_mix(G, row_z, col_z, mask=[False] * 14)
    every = style.style_mix(G, row_z, col_z, mask=[True] * 14)
    np.testing.assert_allclose(none.grid[1, 2], none.rows[1], atol=1e-5)
    np.testing.assert_allclose(every.grid[1, 2], every.columns[2], atol=1e-5)


def test_grid_with_headers_layout(G):
    mix = style.style_mix(G, np.zeros((2, 16)) + 0.5, np.ones((3, 16)), mask="fine")
    tiles = style.grid_with_headers(mix)
    assert tiles.shape == (12, 3, 64, 64)
    assert (tiles[0] == -1).all()  # empty corner
    np.testing.assert_array_equal(tiles[1:4], mix.columns)
    np.testing.assert_array_equal(tiles[4], mix.rows[0])
    np.testing.assert_array_equal(tiles[5:8], mix.grid[0])
    rgb, _ = style.mixing_grid_rgb(G, np.zeros((2, 16)), np.ones((3, 16)), mask="fine", channels=["g", "r", "i"])
    assert rgb.shape == (3 * 66 + 2, 4 * 66 + 2, 3) and rgb.dtype == np.uint8


def test_prefix_groups_and_shared_synthesis_match_plain_synthesis(G):
    from galaxy_core.models.stylegan import prefix_groups

    rng = np.random.default_rng(3)
    w = torch.from_numpy(rng.normal(size=(3, 16)).astype(np.float32))
    ws = w[[0, 1, 0, 2]][:, None, :].repeat(1, G.num_ws, 1)  # images 0 and 2 are the same
    ws[3, 8:] = w[1]  # image 3 = image 1 from layer 8 on: its own prefix until then
    groups = prefix_groups(ws)
    assert groups[0].tolist() == [0, 1, 0, 2] and groups[-1].tolist() == [0, 1, 0, 2]
    ws[2, 10:] = w[2]  # image 2 leaves image 0 at layer 10
    groups = prefix_groups(ws)
    assert groups[9].tolist() == [0, 1, 0, 2] and groups[10].tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        for noise_mode in ("const", "none"):
            shared = G.synthesis(ws, noise_mode=noise_mode, share_prefixes=True)
            plain = G.synthesis(ws, noise_mode=noise_mode)
            torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
        # random noise differs per image, so nothing is shared: images 0 and 2 differ
        g = torch.Generator().manual_seed(0)
        rand = G.synthesis(ws, noise_mode="random", generator=g, share_prefixes=True)
        assert (rand[0] - rand[2]).abs().max() > 1e-3


def test_mixing_grid_fits_cube_is_in_flux_with_units_and_bands():
    """The Style Mixing page's FITS download for a g/r/i model: flux units, band names, layout."""
    from astropy.io import fits
    import io

    from galaxy_core.models.pretrained import load_pretrained

    model = load_pretrained(checkpoints_dir() / f"{SHIPPED_GRI}.json")
    rows, cols = model.latents(1, 2).numpy(), model.latents(2, 3).numpy()
    mix = style.style_mix(model, rows, cols, mask="middle")
    raw = style.mixing_fits_bytes(model, mix, row_seeds=[1, 1], column_seeds=[2, 2, 2], psi=1.0)
    with fits.open(io.BytesIO(raw)) as hdul:
        h, data = hdul[0].header, hdul[0].data
        assert data.shape == (2 + 3 + 6, 3, 64, 64) and data.dtype.kind == "f"
        assert h["BUNIT"] == "nanomaggy"
        assert [h["BAND1"], h["BAND2"], h["BAND3"]] == ["g", "r", "i"]
        assert h["ZP"] == 22.5 and h["PIXSCALE"] == pytest.approx(0.396)
        assert h["MIXLAYRS"] == ",".join(map(str, np.flatnonzero(style.layer_mask(model, "middle"))))
        # the pixels are the inverted asinh stretch of the displayed images: cell (1, 2) last
        np.testing.assert_allclose(data[-1], model.to_flux(mix.grid[1, 2]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(data[2], model.to_flux(mix.columns[0]), rtol=1e-5, atol=1e-6)
        # a galaxy is brighter in i than in g in total (sim's galaxies are all red in g - i)
        assert float(data[:, 2].sum()) > float(data[:, 0].sum()) > 0


def test_mixing_fits_refuses_a_display_image_model():
    from galaxy_core.models.pretrained import load_pretrained

    model = load_pretrained(checkpoints_dir() / "stylegan_hdf64_ft.json")  # hdf: R/G/B display images
    mix = style.style_mix(model, model.latents(1, 1).numpy(), model.latents(2, 1).numpy(), mask="fine")
    with pytest.raises(ValueError, match="display images"):
        style.mixing_fits_bytes(model, mix)


def test_generation_from_z_w_and_w_plus_agree_and_psi_zero_is_the_mean(G):
    z = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    from_z = style.generate(G, z, space="z", psi=0.7)
    w = style.mapping(G, z)  # untruncated
    from_w = style.generate(G, w, space="w", psi=0.7)
    from_wp = style.generate(G, style.w_plus(w, G.num_ws), space="w+", psi=0.7)
    np.testing.assert_allclose(from_z, from_w, atol=1e-5)
    np.testing.assert_allclose(from_z, from_wp, atol=1e-5)
    with torch.no_grad():
        direct = G(torch.from_numpy(z), psi=0.7, noise_mode="const").clamp(-1, 1).numpy()
    np.testing.assert_allclose(from_z, direct, atol=1e-5)
    mean = style.generate(G, z, psi=0.0)
    np.testing.assert_array_equal(mean[0], mean[2])
    rnd = style.generate(G, z, noise_mode="random")
    assert np.abs(rnd - style.generate(G, z)).max() > 1e-3
    with pytest.raises(ValueError, match=r"w\+ latents must be"):
        style.generate(G, w, space="w+")


def test_style_helpers_refuse_a_non_stylegan_model():
    with pytest.raises(CheckpointError, match="needs a stylegan checkpoint"):
        style.layers(DCGANGenerator(DCGANConfig(resolution=32)))


@pytest.mark.slow
def test_projection_lowers_its_loss_and_recovers_w(G32):
    G = G32
    w_true = style.mapping(G, np.random.default_rng(5).normal(size=(1, 16)))
    target = style.synthesize(G, style.w_plus(w_true, G.num_ws))[0]  # (3, 32, 32), const noise
    assert np.abs(target).max() < 0.99  # not clamped: w_true is the exact optimum
    calls = []
    res = projection.project(G, target, steps=80, optimize_noise=False, feature_weight=0.1,
                             progress=lambda s, n, loss: calls.append((s, n)))
    assert calls[0] == (1, 80) and calls[-1] == (80, 80)
    first, last = res.losses[0]["total"], res.losses[-1]["total"]
    assert last < 0.02 * first
    assert res.losses[-1]["feature"] > 0  # the galaxy-encoder term is part of the loss
    d0 = np.linalg.norm(G.mapping.w_avg.numpy() - w_true[0])
    assert np.linalg.norm(res.latent - w_true[0]) < 0.1 * d0
    np.testing.assert_allclose(res.residual, target - res.reconstruction, atol=1e-6)
    assert res.latent.shape == (16,) and res.ws.shape == (11, 16)


@pytest.mark.slow
def test_projection_into_w_plus_with_noise_optimisation(G32):
    G = G32
    target = style.generate(G, np.random.default_rng(6).normal(size=(1, 16)))[0]
    res = projection.project(G, target, space="w+", steps=40, extractor=None, feature_weight=0.0)
    assert res.latent.shape == (11, 16) and len(res.noise) == len(G.synthesis.noise_layers)
    assert res.losses[-1]["pixel"] < 0.2 * res.losses[0]["pixel"]
    for n in res.noise:  # re-normalised after every step
        assert abs(n.mean()) < 1e-4 and abs(n.std() - 1) < 1e-3
    with pytest.raises(ValueError, match=r"target must be \(3, 32, 32\)"):
        projection.project(G, target[:1], steps=1)
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        projection.project(G, target * 3, steps=1)


def test_noise_regularisation_is_zero_for_uncorrelated_and_positive_for_smooth_maps():
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])[None, None]
    # shifted by one pixel the checkerboard is its own negative: autocorrelation -1 in x and y
    assert projection.noise_regularisation([checker]).item() == pytest.approx(2.0)
    flat = torch.ones(1, 1, 16, 16)  # autocorrelation 1 at 16 px and at 8 px, in x and y
    assert projection.noise_regularisation([flat]).item() == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------- page


def _app(sidebar: str | None = None):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    path = checkpoints_dir() / f"{SHIPPED}.json"
    if not path.exists():
        pytest.fail(f"shipped checkpoint {path} is missing (the Style Mixing page is tested with it)")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    if sidebar is not None:
        at.selectbox(key="checkpoint").set_value(sidebar).run()
    at.switch_page("pages/style_mixing.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    return at, str(path)


def _urls(at):
    return [img.url for el in at.get("image") for img in el.proto.imgs]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GALAXYGAN_WORKSPACE", str(tmp_path))
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"


def test_style_mixing_page_lists_only_stylegan_checkpoints(runs):
    at, _ = _app()  # the sidebar shows a DCGAN (the first shipped checkpoint)
    assert at.selectbox(key="checkpoint").value.endswith("dcgan_hdf32.json")
    options = at.selectbox(key="sm_checkpoint").options
    assert options and all(o.startswith("stylegan_") for o in options)
    assert f"{SHIPPED} · shipped" in options


def test_style_mixing_page_grid_controls_and_downloads(runs):
    path = str(checkpoints_dir() / f"{SHIPPED}.json")
    at, _ = _app(sidebar=path)
    assert at.selectbox(key="sm_checkpoint").value == path  # follows the sidebar when it shows a StyleGAN
    urls = _urls(at)
    assert len(urls) == 1 and len(at.get("download_button")) == 4  # grid, z, w+, FITS (g/r/i model)
    caption = at.get("image")[0].proto.imgs[0].caption
    assert "w[0] · 4 px · conv1" in caption and "Display:" in caption
    at.get("button_group")[0].set_value(["fine"]).run()
    assert not at.exception and not at.error
    fine = _urls(at)
    assert fine != urls and "64 px" in at.get("image")[0].proto.imgs[0].caption
    at.slider(key="sm_psi").set_value(0.0).run()
    assert _urls(at) != fine
    at.toggle(key="sm_expert").set_value(True).run()
    at.multiselect(key="sm_layers").set_value(["w[6] · 16 px · conv1"]).run()
    assert not at.exception and not at.error
    assert "w[6] · 16 px · conv1" in at.get("image")[0].proto.imgs[0].caption
    at.text_input(key="sm_rows").set_value("3, x").run()
    assert not at.exception and any("'x'" in w.value for w in at.warning)
    # a typo in a seed box resets none of the choices below it
    at.text_input(key="sm_rows").set_value("1, 2").run()
    assert at.slider(key="sm_psi").value == 0.0 and at.toggle(key="sm_expert").value
    assert "w[6] · 16 px · conv1" in at.get("image")[0].proto.imgs[0].caption
