"""Long data preparation reports its progress the same way everywhere: a tqdm bar, nothing, or
calls of ``progress(done, total)`` (what the app's progress bars listen to)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from galaxy_core.data.sources import load_dataset
from galaxy_core.progress import ProgressBar, track


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))


class Calls(list):
    def __call__(self, done, total):
        self.append((done, total))


def test_track_reports_after_each_item_and_a_bar_counts_updates(capsys):
    calls, seen = Calls(), []
    for x in track(["a", "b", "c"], calls, desc="letters"):
        seen.append((x, len(calls)))  # the item's own report comes after its work
    assert seen == [("a", 0), ("b", 1), ("c", 2)] and calls == [(1, 3), (2, 3), (3, 3)]
    assert list(track(range(2), False)) == [0, 1]
    with ProgressBar(True, total=4, desc="terminal") as bar:
        bar.update(3)
        bar.update()
    assert bar.done == 4 and "terminal" in capsys.readouterr().err  # a tqdm bar on stderr


def test_sim_build_reports_every_galaxy():
    calls = Calls()
    ds = load_dataset("sim", resolution=32, count=12, seed=5, progress=calls)
    assert len(ds) == 12
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 12 and {t for _, t in calls} == {12}
    again = Calls()
    load_dataset("sim", resolution=32, count=12, seed=5, progress=again)  # cached: nothing to report
    assert again == []


def test_folder_reports_hashing_and_decoding_per_file(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"g{i}.png")
    calls = Calls()
    ds = load_dataset(tmp_path, resolution=32, progress=calls)
    assert len(ds) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2  # hashing every file, then decoding each


def test_fits_folder_reports_each_item(tmp_path):
    for i in range(2):
        fits.PrimaryHDU(np.full((3, 40, 40), float(i + 1), np.float32)).writeto(tmp_path / f"g{i}.fits")
    calls = Calls()
    load_dataset(tmp_path, resolution=32, progress=calls)
    assert calls[-2:] == [(1, 2), (2, 2)]  # reading each FITS item, after hashing


def test_hdf_reports_sources_then_stamps():
    calls = Calls()
    ds = load_dataset("hdf", resolution=32, progress=calls)
    assert calls[0] == (1, 1)  # the source detection
    stamps = calls[1:]
    assert stamps[-1] == (len(ds), len(ds)) and len(stamps) == len(ds)
