"""Interpolation, latent directions and provenance-carrying exports (galaxy_core.explore)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from galaxy_core.explore.directions import (
    activation_pca,
    default_layer,
    latent_pca,
    layer_activations,
    walk,
    walk_grid,
)
from galaxy_core.explore.export import frames_zip, load_latents, npy_bytes, png_with_record, read_png_record
from galaxy_core.explore.interpolate import gif_bytes, interpolation_path, key_frames, lerp, slerp
from galaxy_core.models.dcgan import DCGANConfig, Generator


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------ interpolation


def test_lerp_endpoints_and_midpoint():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, -1.0])
    z = lerp(a, b, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(z, [a, [2.0, 2.0, 1.0], b], atol=1e-6)
    assert z.dtype == np.float32 and z.shape == (3, 3)


def test_slerp_endpoints():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=100), rng.normal(size=100)
    z = slerp(a, b, [0.0, 1.0])
    np.testing.assert_allclose(z[0], a, atol=1e-5)
    np.testing.assert_allclose(z[1], b, atol=1e-5)


def test_slerp_keeps_unit_norm_along_the_arc():
    rng = np.random.default_rng(2)
    a, b = unit(rng.normal(size=64)), unit(rng.normal(size=64))
    z = slerp(a, b, np.linspace(0, 1, 33))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    # equal angular steps: consecutive cosines are all the same
    cos = np.sum(z[1:] * z[:-1], axis=1) / np.linalg.norm(z[1:], axis=1) / np.linalg.norm(z[:-1], axis=1)
    np.testing.assert_allclose(cos, cos[0], atol=1e-6)


def test_slerp_of_orthogonal_unit_vectors_at_half_is_the_bisector():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(slerp(a, b, 0.5)[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-7)


def test_slerp_between_opposite_latents_keeps_its_norm_off_the_origin():
    z = np.random.default_rng(6).normal(size=64)
    path = slerp(z, -z, np.linspace(0, 1, 9))
    np.testing.assert_allclose(path[0], z, atol=1e-6)
    np.testing.assert_allclose(path[-1], -z, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z), rtol=1e-5)  # the chord passed 0
    path2 = slerp(z, -2 * z, [0.5])
    assert np.linalg.norm(path2) == pytest.approx(1.5 * np.linalg.norm(z), rel=1e-5)


def test_slerp_of_parallel_vectors_falls_back_to_lerp():
    a = np.array([1.0, 1.0, 0.0])
    np.testing.assert_allclose(slerp(a, 2 * a, [0.25]), lerp(a, 2 * a, [0.25]), atol=1e-6)


@pytest.mark.parametrize("n_keys, frames", [(2, 2), (2, 16), (3, 16), (4, 7), (5, 64)])
def test_interpolation_path_frame_count_and_keys(n_keys, frames):
    keys = np.random.default_rng(3).normal(size=(n_keys, 10))
    for method in ("slerp", "lerp"):
        z = interpolation_path(keys, frames, method=method)
        assert z.shape == (frames, 10)
        np.testing.assert_allclose(z[0], keys[0], atol=1e-5)
        np.testing.assert_allclose(z[-1], keys[-1], atol=1e-5)


def test_key_frames_land_on_the_keys_when_steps_divide_evenly():
    keys = np.random.default_rng(4).normal(size=(3, 5))
    z = interpolation_path(keys, 9, method="slerp")  # 4 steps per segment
    assert key_frames(3, 9) == [0, 4, 8]
    np.testing.assert_allclose(z[[0, 4, 8]], keys, atol=1e-5)


@pytest.mark.parametrize("n_keys, frames", [(3, 16), (3, 4), (4, 7), (4, 11), (5, 64), (6, 6)])
def test_every_key_is_a_frame_whatever_the_frame_count(n_keys, frames):
    # frames spread evenly over the key index had missed the middle keys (3 keys in 16
    # frames: key 1 at position 7.5, no frame on it)
    keys = np.random.default_rng(5).normal(size=(n_keys, 6))
    at = key_frames(n_keys, frames)
    assert at[0] == 0 and at[-1] == frames - 1 and all(np.diff(at) >= 1)
    for method in ("slerp", "lerp"):
        z = interpolation_path(keys, frames, method=method)
        np.testing.assert_allclose(z[at], keys, atol=1e-5)
        for s in range(n_keys - 1):  # evenly spaced between consecutive keys (lerp: equal chord steps)
            if method == "lerp" and at[s + 1] - at[s] > 1:
                steps = np.linalg.norm(np.diff(z[at[s] : at[s + 1] + 1], axis=0), axis=1)
                np.testing.assert_allclose(steps, steps[0], rtol=1e-4)


@pytest.mark.parametrize("keys, frames, match", [
    (np.zeros((1, 4)), 8, "at least two"),
    (np.zeros((4, 4)), 3, "at least 4"),
])
def test_interpolation_path_rejects_impossible_requests(keys, frames, match):
    with pytest.raises(ValueError, match=match):
        interpolation_path(keys, frames)


def test_interpolation_path_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolation_path(np.zeros((2, 3)), 4, method="cubic")


def test_gif_has_every_frame_forwards_and_back_and_loops():
    frames = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (0, 80, 160, 240)])
    data = gif_bytes(frames, fps=10, scale=2)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "GIF" and im.size == (16, 16)
        assert im.n_frames == 6  # 4 forwards + 2 back (no repeated ends)
        assert im.info["loop"] == 0 and im.info["duration"] == 100


# --------------------------------------------------------------------------------- directions


def test_latent_pca_directions_are_orthonormal():
    z = np.random.default_rng(5).normal(size=(500, 32))
    d = latent_pca(z, k=8)
    np.testing.assert_allclose(d.vectors @ d.vectors.T, np.eye(8), atol=1e-5)
    assert np.all(np.diff(d.explained) <= 1e-7) and 0 < d.explained.sum() <= 1


def test_latent_pca_finds_the_high_variance_axis():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(2000, 6))
    z[:, 3] *= 5.0  # std 5 along axis 3
    d = latent_pca(z, k=2)
    assert abs(d.vectors[0, 3]) > 0.99
    assert d.std[0] == pytest.approx(5.0, rel=0.05)


@pytest.fixture(scope="module")
def tiny_G():
    torch.manual_seed(0)
    G = Generator(DCGANConfig(resolution=32, num_bands=3, z_dim=16, width=4)).eval()
    return G


def test_layer_activations_stop_after_the_layer_and_leave_no_hook(tiny_G):
    z = np.random.default_rng(7).normal(size=(10, 16)).astype(np.float32)
    layer = default_layer(tiny_G)
    assert layer == "main.2"  # the first ReLU of a DCGAN generator
    acts = layer_activations(tiny_G, z, layer=layer)
    assert acts.shape == (10, 16 * 4 * 4)  # (N, 4w * 4 * 4) for 32 px: first block has 4w channels
    assert all(not m._forward_hooks for m in tiny_G.modules())
    with pytest.raises(ValueError, match="no layer"):
        layer_activations(tiny_G, z, layer="main.99")


def test_activation_pca_gives_unit_directions(tiny_G):
    z = np.random.default_rng(8).normal(size=(300, 16))
    d = activation_pca(tiny_G, z, layer="main.2", k=4)
    assert d.vectors.shape == (4, 16) and d.source == "layer main.2"
    np.testing.assert_allclose(np.linalg.norm(d.vectors, axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(d.explained) <= 1e-7) and np.all(d.std > 0)


def test_a_conditional_generator_s_activations_hold_one_class_whatever_the_batch():
    # without a label, a conditional generator takes label i % num_classes for image i of each
    # batch, so a latent's activations (and the directions found from them) changed with its
    # position in the batch
    from galaxy_core.models.began import BEGANConfig, Generator as BEGANGenerator

    torch.manual_seed(0)
    G = BEGANGenerator(BEGANConfig(resolution=32, num_bands=3, z_dim=8, h_dim=8, width=4, num_classes=3)).eval()
    z = np.random.default_rng(3).uniform(-1, 1, size=(7, 8)).astype(np.float32)
    layer = default_layer(G)
    assert isinstance(dict(G.named_modules())[layer], torch.nn.ELU)  # the first activation, not the linear fc
    whole = layer_activations(G, z, layer=layer, label=2)
    np.testing.assert_allclose(layer_activations(G, z[2:], layer=layer, label=2), whole[2:], atol=1e-6)
    other = layer_activations(G, z, layer=layer, label=0)
    assert np.abs(other - whole).max() > 1e-3  # the label is used
    zz = np.random.default_rng(4).uniform(-1, 1, size=(300, 8))
    a, b = activation_pca(G, zz, layer=layer, k=2, label=1), activation_pca(G, zz[::-1].copy(), layer=layer, k=2, label=1)
    np.testing.assert_allclose(np.abs(np.sum(a.vectors * b.vectors, axis=1)), 1.0, atol=1e-4)  # order-free


def test_a_generator_with_functional_activations_gets_its_first_block_as_the_ganspace_layer():
    # FastGAN's blocks apply GLU as a function: no leaf module holds an activation, and the
    # leaves before the first block are linear in z
    from galaxy_core.explore.directions import layer_names
    from galaxy_core.models.fastgan import FastGANConfig, Generator as FastGANGenerator

    torch.manual_seed(0)
    G = FastGANGenerator(FastGANConfig(resolution=32, num_bands=3, z_dim=16, width=4)).eval()
    layer = default_layer(G)
    assert layer == "ups.8" and layer in layer_names(G)
    z1, z2 = np.random.default_rng(5).normal(size=(2, 4, 16)).astype(np.float32)

    def departure(name):  # from an affine map of z, relative to the activations' size
        f = lambda z: layer_activations(G, z, layer=name).astype(np.float64)  # noqa: E731
        r = f(z1 + z2) - f(z1) - f(z2) + f(np.zeros_like(z1))
        return np.abs(r).mean() / np.abs(f(z1)).mean()

    assert departure("init.1") < 1e-4 and departure(layer) > 0.05


def test_a_file_of_another_latent_space_is_not_taken_for_z():
    # a StyleGAN with z_dim == w_dim: a bare (1, 128) array of w passed for latents z and was
    # mapped a second time; w files are .npz that say what they hold
    from galaxy_core.explore.export import space_npz_bytes

    w = np.random.default_rng(1).normal(size=(1, 128)).astype(np.float32)
    with pytest.raises(ValueError, match=r"w\.npz: holds styles w \(w\), not latents z"):
        load_latents(space_npz_bytes("styles w", w=w), z_dim=128, name="w.npz")
    buf = io.BytesIO()
    np.savez(buf, a=w)
    with pytest.raises(ValueError, match="a .npz archive \\(a\\), not a .npy array"):
        load_latents(buf.getvalue(), z_dim=128, name="x.npz")
    np.testing.assert_array_equal(load_latents(npy_bytes(w), z_dim=128), w)


def test_walk_moves_by_coefficient_times_std():
    z = np.random.default_rng(9).normal(size=(400, 12))
    d = latent_pca(z, k=3)
    z0 = np.zeros(12, np.float32)
    np.testing.assert_allclose(walk(z0, d, [0, 0, 0]), z0)
    moved = walk(z0, d, [2.0, 0, 0])
    assert float(moved @ d.vectors[0]) == pytest.approx(2.0 * d.std[0], rel=1e-5)
    grid = walk_grid(z0, d, components=[0, 2], steps=5, span=2.0)
    assert grid.shape == (10, 12)
    np.testing.assert_allclose(grid[2], z0, atol=1e-6)  # the middle column is the start point


# ------------------------------------------------------------------------------------- export


def test_png_record_round_trip():
    rgb = np.zeros((4, 5, 3), np.uint8)
    data = png_with_record(rgb, {"checkpoint": "m", "checkpoint_id": "abc", "seed": 3}, scale=2)
    assert read_png_record(data) == {"checkpoint": "m", "checkpoint_id": "abc", "seed": 3, "display_scale": 2}
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (10, 8)


def test_frames_zip_holds_png_json_and_latents():
    rgb = np.zeros((3, 4, 4, 3), np.uint8)
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    data = frames_zip(rgb, z, record={"checkpoint_id": "abc"}, extra={"strip.png": b"x"})
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert {"frame_000.png", "frame_002.json", "latents.npy", "record.json", "strip.png"} <= names
        rec = json.loads(zf.read("frame_001.json"))
        assert rec["latent"] == [2.0, 3.0] and rec["frame"] == 1 and rec["checkpoint_id"] == "abc"
        assert read_png_record(zf.read("frame_001.png"))["latent"] == [2.0, 3.0]
        np.testing.assert_array_equal(np.load(io.BytesIO(zf.read("latents.npy"))), z)


def test_load_latents_accepts_vectors_and_matrices():
    assert load_latents(npy_bytes(np.zeros(5)), z_dim=5).shape == (1, 5)
    assert load_latents(npy_bytes(np.zeros((3, 5))), z_dim=5).shape == (3, 5)


@pytest.mark.parametrize("payload, match", [
    (b"not a numpy file", "not a .npy file"),
    (npy_bytes(np.zeros((2, 4))), r"must be \(5,\)"),
    (npy_bytes(np.array([np.nan] * 5)), "NaN"),
])
def test_load_latents_refuses_bad_files(payload, match):
    with pytest.raises(ValueError, match=match):
        load_latents(payload, z_dim=5, name="up.npy")


def test_load_latents_never_unpickles():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a readable"):
        load_latents(buf.getvalue(), z_dim=1)


# --------------------------------------------------------------------------------- evaluation


def test_training_data_comes_from_the_stored_config():
    from galaxy_core.explore.evaluation import training_data

    meta = {"data": {"name": "sim", "resolution": 64},
            "config": {"data": {"dataset": "sim", "count": 2000, "seed": 3, "crop": 0.8, "normalisation": "asinh"}}}
    assert training_data(meta) == {"spec": "sim", "resolution": 64, "crop": 0.8, "count": 2000, "seed": 3,
                                   "normalisation": "asinh", "neighbours": "keep"}
    iso = {"data": {"name": "hdf", "resolution": 32},
           "config": {"data": {"dataset": "hdf", "resolution": 32, "neighbours": "sky"}}}
    assert training_data(iso)["neighbours"] == "sky"  # isolated stamps are compared with isolated stamps


def test_to_linear_and_restretch():
    from galaxy_core.explore.evaluation import restretch, to_linear
    from galaxy_core.io.stretch import AsinhStretch

    x = np.array([[[[-1.0, 0.0, 1.0]]]])
    np.testing.assert_allclose(to_linear(x, stretch=None), [[[[0.0, 0.5, 1.0]]]])
    a = AsinhStretch((1.0,), (-0.5,), (50.0,)).to_dict()
    b = AsinhStretch((2.0,), (-1.0,), (80.0,)).to_dict()
    flux = to_linear(x, stretch=a)
    np.testing.assert_allclose(flux[0, 0, 0, [0, 2]], [-0.5, 50.0], rtol=1e-9)
    y = restretch(x, source=a, target=b)
    np.testing.assert_allclose(to_linear(y, stretch=b), flux, rtol=1e-5, atol=1e-6)  # same fluxes
    assert restretch(x, source=a, target=a) is x


def _fits_folder(folder, *, bands, bunit, n=2):
    from galaxy_core.io.fits import write_fits_cube

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        flux = rng.normal(0, 0.05, (3, 32, 32)) + np.exp(-((np.mgrid[:32, :32] - 16.0) ** 2).sum(0) / 20.0)
        write_fits_cube(folder / f"g{i}.fits", flux, bands=bands, bunit=bunit)
    return folder


@pytest.mark.parametrize("bands, bunit, problem", [
    (["u", "z", "y"], "nanomaggy", r"bands u, z, y, but stylegan_sim64_gri has g, r, i"),
    (["g", "r", "i"], "count", r"pixel unit 'count' \(BUNIT\), but stylegan_sim64_gri is in 'nanomaggy'"),
])
def test_data_in_other_named_bands_or_unit_is_not_compared_with_a_model(tmp_path, monkeypatch, bands, bunit,
                                                                         problem):
    from galaxy_core.data import load_dataset
    from galaxy_core.errors import DataError
    from galaxy_core.explore.evaluation import check_compatible
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir

    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    model = load_pretrained(checkpoints_dir() / "stylegan_sim64_gri.json")
    data = load_dataset(_fits_folder(tmp_path / "other", bands=bands, bunit=bunit), resolution=64, progress=False)
    with pytest.raises(DataError, match=rf"other: {problem}; choose data"):
        check_compatible(model, data)
    same = load_dataset(_fits_folder(tmp_path / "same", bands=["g", "r", "i"], bunit="nmgy"), resolution=64,
                        progress=False)
    check_compatible(model, same)  # the model's bands and unit (nmgy = nanomaggy)
    unnamed = load_dataset(_fits_folder(tmp_path / "unnamed", bands=["band1", "band2", "band3"], bunit=None),
                           resolution=64, progress=False)
    check_compatible(model, unnamed)  # names nothing: compared by number of bands only, as before


def test_held_out_images_in_other_bands_than_the_training_data_are_refused(tmp_path, monkeypatch):
    from galaxy_core.data import load_dataset
    from galaxy_core.errors import DataError
    from galaxy_core.explore.evaluation import open_held_out

    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    train = load_dataset(_fits_folder(tmp_path / "train", bands=["g", "r", "i"], bunit="nanomaggy"), resolution=32,
                         progress=False)
    held = _fits_folder(tmp_path / "held", bands=["u", "z", "y"], bunit="nanomaggy")
    with pytest.raises(DataError, match=rf"{held}: bands u, z, y, but the training data train has g, r, i"):
        open_held_out(held, train=train)
    x, _ = open_held_out(_fits_folder(tmp_path / "held2", bands=["g", "r", "i"], bunit="nanomaggy"), train=train)
    assert x.shape == (2, 3, 32, 32)


def test_feature_distances_are_named_by_extractor_and_count():
    from galaxy_core.explore.evaluation import extract_features, feature_distances

    rng = np.random.default_rng(0)
    real = extract_features(rng.uniform(-1, 1, (40, 3, 16, 16)).astype(np.float32), extractor="pix8")
    fake = extract_features(rng.uniform(-1, 1, (32, 3, 16, 16)).astype(np.float32), extractor="pix8")
    assert real.shape == (40, 3 * 64)
    result = feature_distances(real, fake, extractor="pix8")
    assert set(result) == {"fid_pix8_32v40", "kid_pix8_32v40", "kid_pix8_32v40_std"}
    assert result["fid_pix8_32v40"] > 0 and result["kid_pix8_32v40_std"] > 0


def test_held_out_flux_images_are_prepared_with_the_training_data_s_normalisation(tmp_path, monkeypatch):
    # the held-out set was always prepared with asinh: a min-max model's evaluate --held-out (the
    # command data prepare prints for it) ended in "different non-invertible normalisations"
    from galaxy_core.data import load_dataset
    from galaxy_core.errors import DataError
    from galaxy_core.explore.evaluation import open_held_out

    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))
    train = load_dataset(_fits_folder(tmp_path / "train", bands=["g", "r", "i"], bunit="nanomaggy"), resolution=32,
                         normalisation="minmax", progress=False)
    held = _fits_folder(tmp_path / "held", bands=["g", "r", "i"], bunit="nanomaggy")
    with pytest.raises(DataError, match="non-invertible"):
        open_held_out(held, train=train)
    x, _ = open_held_out(held, train=train, normalisation="minmax")
    same = load_dataset(held, resolution=32, normalisation="minmax", progress=False)
    np.testing.assert_array_equal(x, same.to_model_range(slice(0, len(same))))
