"""The memorisation pipeline on real hdf stamps: a copying generator is caught, an honest one is not."""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_core.data import load_dataset
from galaxy_core.data.prepared import write_prepared
from galaxy_core.metrics.memorisation import (
    DEFAULT_DISTANCE,
    DISTANCE_NOTES,
    REFERENCE_RATIO_RANGE,
    THRESHOLD_PERCENTILE,
    assess,
    image_names,
    memorisation_check,
)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """hdf 64 px stamps in three disjoint parts: a training set (written as a prepared dataset),
    held-out images and new galaxies an honest generator could have made."""
    ds = load_dataset("hdf", resolution=64, progress=False)
    perm = np.random.default_rng(0).permutation(len(ds))
    train_idx, held_idx, new_idx = np.sort(perm[:250]), np.sort(perm[250:310]), np.sort(perm[310:370])
    manifest = {**ds.manifest, "name": "hdf-train", "key": "hdf-train-test", "count": len(train_idx)}
    train = write_prepared(tmp_path_factory.mktemp("train") / "hdf-train", np.asarray(ds.images[train_idx]),
                           manifest, catalog=None)
    return train, ds.to_model_range(held_idx), ds.to_model_range(new_idx)


def _copier(train, n: int, *, noise: float, seed: int) -> np.ndarray:
    """A memorising "generator": training images with a little Gaussian noise, clipped to range."""
    rng = np.random.default_rng(seed)
    x = train.to_model_range(np.sort(rng.choice(len(train), n, replace=False)))
    return np.clip(x + rng.normal(0, noise, x.shape).astype(np.float32), -1, 1)


def test_copying_generator_is_flagged_by_the_default_distance(split):
    train, held, _ = split
    res = memorisation_check(_copier(train, 48, noise=0.02, seed=1), train, held_out=held, held_out_about="test",
                             distances=(DEFAULT_DISTANCE,))
    main = res["results"][DEFAULT_DISTANCE]
    assert res["memorised"] is True and res["verdict"].startswith("Memorising")
    assert main["report"]["fraction_flagged"] > 0.9 and main["report"]["excess_p"] < 1e-6
    assert main["report"]["median_ratio"] < 0.5
    assert "48 generated samples searched against all 250 training images of hdf-train" in res["compared"]
    assert "60 held-out real images" in res["compared"]


def test_honest_generator_is_not_flagged(split):
    _, held, new = split
    train = split[0]
    res = memorisation_check(new, train, held_out=held, held_out_about="test", distances=(DEFAULT_DISTANCE,))
    rep = res["results"][DEFAULT_DISTANCE]["report"]
    assert res["memorised"] is False and res["verdict"].startswith("No sign")
    assert rep["fraction_flagged"] < 0.2  # 5 % expected by chance; 60 samples
    assert 0.6 < rep["median_ratio"] < 1.6
    # new images of the same data sit as far from the training set as training images from each other
    main = res["results"][DEFAULT_DISTANCE]
    low, high = REFERENCE_RATIO_RANGE
    assert low < main["reference_ratio"] < high and main["heldout_copies"] == 0
    assert main["reference_warning"] is None and "Check the held-out images" not in res["verdict"]


def test_training_images_among_the_held_out_ones_are_left_out_of_the_threshold(split):
    """Held-out images that are training images sit at distance 0: kept, they pull the 5 %
    threshold to 0 and a copying generator passes as honest."""
    train, held, _ = split
    copies = train.to_model_range(np.arange(20))
    mixed = np.concatenate([held, copies])
    fake = _copier(train, 48, noise=0.02, seed=1)
    res = memorisation_check(fake, train, held_out=mixed, held_out_about="test", distances=(DEFAULT_DISTANCE,))
    main = res["results"][DEFAULT_DISTANCE]
    assert main["heldout_copies"] == 20
    assert main["report"]["threshold"] > 0 and res["memorised"] is True
    assert "Check the held-out images: 20 of the 80 held-out images are training images" in res["verdict"]
    assert res["compared"].endswith("threshold from 60 held-out real images (test); 20 more held-out images are "
                                    "training images and were left out")
    # the same check by hand: the threshold is the one of the 60 real held-out distances alone
    clean = memorisation_check(fake, train, held_out=held, held_out_about="test", distances=(DEFAULT_DISTANCE,))
    assert main["report"]["threshold"] == pytest.approx(clean["results"][DEFAULT_DISTANCE]["report"]["threshold"])


def test_held_out_images_of_other_data_are_named_in_the_verdict(split):
    """Images of another kind (here the held-out stamps with their brightness inverted) sit far
    from every training image, which inflates the threshold; the verdict says so."""
    train, held, new = split
    res = memorisation_check(new, train, held_out=-held, held_out_about="test", distances=(DEFAULT_DISTANCE,))
    main = res["results"][DEFAULT_DISTANCE]
    assert main["reference_ratio"] > REFERENCE_RATIO_RANGE[1]
    assert "are probably not new images of the same data" in main["reference_warning"]
    assert main["reference_warning"] in res["verdict"]


def test_held_out_near_copies_of_training_images_give_no_verdict(split):
    """Held-out images that are mostly re-saved training galaxies (near-copies, not exact ones, so
    none is left out as a copy) pull the threshold down, and a copying generator passed as "No sign
    of memorisation" with only a warning beside it: now there is no verdict, with the reason."""
    from galaxy_core.metrics.report import memorisation_summary

    train, held, _ = split
    mixed = np.concatenate([held[:18], _copier(train, 27, noise=0.05, seed=7)])
    fake = _copier(train, 48, noise=0.05, seed=1)
    res = memorisation_check(fake, train, held_out=mixed, held_out_about="test", distances=(DEFAULT_DISTANCE,))
    main = res["results"][DEFAULT_DISTANCE]
    assert main["heldout_copies"] == 0 and main["reference_ratio"] < REFERENCE_RATIO_RANGE[0]
    assert main["report"] is not None and not main["report"]["memorised"]  # the too-low threshold passes it
    assert main["reference_dependent"] and main["memorised"] is None
    assert res["memorised"] is None and "No sign" not in res["verdict"]
    assert res["verdict"].startswith("No verdict: the held-out reference is not independent of the training set: "
                                     "the held-out images sit only 0.")
    assert main["reference_warning"] in res["verdict"]
    summary = memorisation_summary(res)
    assert summary["memorised"] is None and summary["verdict"] == res["verdict"]
    # a copier caught even against the too-low threshold is still called memorising
    caught = memorisation_check(_copier(train, 48, noise=0.02, seed=1), train, held_out=mixed, held_out_about="test",
                                distances=(DEFAULT_DISTANCE,))
    assert caught["memorised"] is True and "Check the held-out images: the held-out images sit only" \
        in caught["verdict"]


def test_every_distance_as_evidence_and_no_verdict_without_held_out(split):
    train, _, _ = split
    fake = _copier(train, 6, noise=0.02, seed=2)
    res = memorisation_check(fake, train, held_out=None, held_out_about="none given", k=2)
    assert res["memorised"] is None and res["verdict"].startswith("No verdict")
    assert set(res["results"]) == {"cosine", "l1", "ssim"}
    for name, r in res["results"].items():
        assert r["report"] is None and r["memorised"] is None and r["note"] == DISTANCE_NOTES[name]
        assert r["indices"].shape == (6, 2) and np.all(np.diff(r["distances"], axis=1) >= 0)
        assert r["median_gen"] < r["median_train"]  # copies sit on their sources under every distance
    # the copies' nearest training image under the pixel distances is their source
    src = np.sort(np.random.default_rng(2).choice(len(train), 6, replace=False))
    assert res["results"]["l1"]["indices"][:, 0].tolist() == src.tolist()


def test_assess_by_hand():
    held = np.arange(1.0, 101.0)  # 5th percentile 5.95
    out = assess([0.5, 3.0, 50.0, 80.0], held, np.array([4.0, 6.0]), distance="l1")
    assert out["report"]["threshold"] == pytest.approx(np.percentile(held, THRESHOLD_PERCENTILE))
    assert out["memorised"] is None  # only the default distance gives a verdict
    assert "2 of 4 generated samples (50%)" in out["sentence"] and out["median_train"] == 5.0
    assert out["reference_ratio"] == pytest.approx(50.5 / 5.0) and "10.10 times as far" in out["reference_warning"]
    # held-out distances of 0 are training images: left out; with fewer than two left, no threshold
    out = assess([0.5, 3.0], np.array([0.0, 0.0, 5.0]), np.array([4.0, 6.0]), distance="cosine")
    assert out["heldout_copies"] == 2 and out["report"] is None and out["memorised"] is None
    assert "fewer than two held-out images that are not training images" in out["sentence"]
    assert out["reference_ratio"] == pytest.approx(1.0) and out["reference_warning"].startswith("2 of the 3")
    # one held-out image that is no copy: given, but too few for a threshold, and the verdict says that
    one = assess([0.5, 3.0], np.array([5.0]), np.array([4.0, 6.0]), distance="cosine")
    assert one["report"] is None and "; fewer than two held-out images, so no threshold" in one["sentence"]
    from galaxy_core.metrics.memorisation import verdict

    assert verdict({"cosine": one})[1] == ("No verdict: a threshold needs at least two held-out images; give more "
                                           "real images that were never trained on.")
    # held-out images far closer to the training set than training images are to each other: no verdict
    near = assess([5.0, 6.0], np.linspace(0.5, 1.5, 20), np.array([4.0, 6.0]), distance="cosine")
    assert near["reference_ratio"] == pytest.approx(0.2) and not near["report"]["memorised"]
    assert near["memorised"] is None and near["reference_dependent"]
    assert verdict({"cosine": near})[0] is None
    far_ok = assess([5.0, 6.0], np.linspace(4.5, 5.5, 20), np.array([4.0, 6.0]), distance="cosine")
    assert far_ok["memorised"] is False and not far_ok["reference_dependent"] and verdict({"cosine": far_ok})[0] is False
    with pytest.raises(ValueError, match="unknown distance"):
        assess([1.0], None, [1.0], distance="l2")


def test_image_names_use_files_when_the_data_has_them(split, tmp_path):
    from astropy.table import Table

    train = split[0]
    assert image_names(train, [3, 0]) == ["hdf-train #3", "hdf-train #0"]
    m = {**train.manifest, "count": 2, "key": "named"}
    named = write_prepared(tmp_path / "named", np.asarray(train.images[:2]), m,
                           catalog=Table({"file": ["a/one.png", "b/two.png"]}))
    assert image_names(named, [1]) == ["b/two.png"]
