"""Projection of a real galaxy into a StyleGAN's latent space (galaxy_core.explore.projection):
the figures reported for the returned reconstruction, and the saved projection that regenerates it
exactly. Run on the shipped checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galaxy_core.errors import DataError
from galaxy_core.explore import projection, style
from galaxy_core.io.stretch import AsinhStretch
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.paths import checkpoints_dir

GRI = "stylegan_sim64_gri"  # g, r, i in nanomaggy, trained on 0.396 arcsec pixels


def _shipped(name: str):
    path = checkpoints_dir() / f"{name}.json"
    if not path.exists():
        pytest.fail(f"shipped checkpoint {path} is missing")
    return load_pretrained(path)


@pytest.fixture(scope="module")
def gri():
    return _shipped(GRI)


# ------------------------------------------------------- the result and its saved form


@pytest.fixture(scope="module")
def projected(gri):
    target = gri.generate(gri.latents(7, 1))[0]
    res = projection.project(gri, target, space="w+", steps=6, w_avg_samples=200, init_candidates=4,
                             feature_weight=0.1, chi2_weight=0.002, seed=0)
    return target, res


@pytest.mark.slow
def test_the_reported_figures_are_those_of_the_returned_reconstruction(gri, projected):
    from galaxy_core.metrics.features import load_extractor

    target, res = projected
    recon = res.reconstruction
    np.testing.assert_allclose(res.residual, target - recon, atol=1e-7)
    mse = float(np.mean((target.astype(np.float64) - recon.astype(np.float64)) ** 2))
    assert res.final["pixel"] == pytest.approx(mse, rel=1e-9) and res.pixel_mse == res.final["pixel"]
    st = AsinhStretch.from_dict(gri.stretch)
    chi2 = float(np.mean(((st.inverse(target) - st.inverse(recon)) / res.sigma[:, None, None]) ** 2))
    assert res.chi2 == pytest.approx(chi2, rel=1e-9) and res.final["chi2"] == res.chi2
    enc = load_extractor("galaxy")
    with torch.no_grad():
        f = torch.nn.functional.normalize(enc.forward(torch.from_numpy(np.stack([target, recon]))), dim=1)
    assert res.final["feature"] == pytest.approx(1 - float(f[0] @ f[1]), rel=1e-3, abs=1e-6)
    total = res.final["pixel"] + 0.1 * res.final["feature"] + 0.002 * res.final["chi2"]
    assert projection.reconstruction_loss(res) == pytest.approx(total, rel=1e-12)
    # the last step's record is measured before that step's update: not the figure of the image
    assert res.losses[-1]["pixel"] != pytest.approx(mse, rel=1e-3)


@pytest.mark.slow
def test_the_saved_projection_regenerates_the_reconstruction_exactly(tmp_path, gri, projected):
    _, res = projected
    data = projection.projection_npz(res, model=gri)
    saved = projection.read_projection_npz(data)
    assert saved["checkpoint_id"] == gri.id and saved["checkpoint"] == GRI and saved["space"] == "w+"
    assert saved["noise_layers"] == list(gri.G.synthesis.noise_layers)
    np.testing.assert_array_equal(saved["ws"], res.ws)
    np.testing.assert_allclose(projection.render_projection(gri, data), res.reconstruction, rtol=0, atol=1e-6)
    path = tmp_path / "p.npz"
    path.write_bytes(data)
    np.testing.assert_allclose(projection.render_projection(gri, path), res.reconstruction, rtol=0, atol=1e-6)
    # ws alone, with the checkpoint's constant noise, is another image: why the noise maps are saved
    assert np.abs(style.synthesize(gri, res.ws[None])[0] - res.reconstruction).max() > 0.01


@pytest.mark.slow
def test_a_saved_projection_is_refused_by_another_checkpoint_and_when_incomplete(tmp_path, gri, projected):
    _, res = projected
    data = projection.projection_npz(res, model=gri)
    other = _shipped("stylegan_sim64")
    with pytest.raises(DataError, match=rf"p.npz: made with checkpoint {GRI} \(id {gri.id}\), not stylegan_sim64 "
                                        rf"\(id {other.id}\)"):
        projection.render_projection(other, data, name="p.npz")
    with pytest.raises(DataError, match="p.npz: not a projection file"):
        projection.read_projection_npz(b"not a zip", name="p.npz")
    import io

    buf = io.BytesIO()
    np.savez(buf, ws=res.ws)  # ws alone
    with pytest.raises(DataError, match="p.npz: not a galaxygan-projection/1 file .*lacks latent, noise_layers"):
        projection.read_projection_npz(buf.getvalue(), name="p.npz")
