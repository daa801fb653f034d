"""Long data preparation reports its progress the same way everywhere: a tqdm bar, nothing, or
calls of ``progress(done, total)`` (what the app's progress bars listen to)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from galaxy_core.data.sources import load_dataset
from galaxy_core.progress import ProgressBar, track


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path / "cache"))


class Calls(list):
    """A plain ``progress(done, total)`` callable that records its calls."""

    def __call__(self, done, total):
        self.append((done, total))


class Staged(Calls):
    """The same, with the optional ``phase(desc, total)`` hook: records each stage as it starts."""

    def __init__(self):
        super().__init__()
        self.stages = []

    def phase(self, desc, total):
        self.stages.append((desc, total, len(self)))  # len: the reports made before the stage began


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


def test_a_callable_with_a_phase_method_is_told_each_stage_before_its_reports():
    calls = Staged()
    list(track("ab", calls, desc="first"))
    with ProgressBar(calls, total=3, desc="second") as bar:
        bar.update(3)
    assert calls.stages == [("first", 2, 0), ("second", 3, 2)] and calls == [(1, 2), (2, 2), (3, 3)]
    plain = Calls()  # no phase method: only the counts, restarting
    list(track("ab", plain, desc="first"))
    assert plain == [(1, 2), (2, 2)]


def test_sim_build_reports_every_galaxy_then_the_stretch():
    calls = Staged()
    ds = load_dataset("sim", resolution=32, count=12, seed=5, progress=calls)
    assert len(ds) == 12
    (sim, n_sim, at_sim), (stretch, n_st, at_st) = calls.stages
    assert (sim, n_sim, at_sim) == ("simulating galaxies", 12, 0) and (stretch, n_st) == ("resizing and stretching", 12)
    done = [d for d, _ in calls[:at_st]]
    assert done == sorted(done) and done[-1] == 12 and {t for _, t in calls} == {12}
    assert calls[at_st:] == [(12, 12)]  # one chunk of stamps resized and stretched
    again = Calls()
    load_dataset("sim", resolution=32, count=12, seed=5, progress=again)  # cached: nothing to report
    assert again == []


def test_folder_reports_hashing_and_decoding_per_file(tmp_path, noise_pngs):
    noise_pngs(tmp_path, 3)
    calls = Staged()
    ds = load_dataset(tmp_path, resolution=32, progress=calls)
    assert len(ds) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2  # hashing every file, then decoding each
    assert calls.stages == [("hashing files", 3, 0), ("decoding images", 3, 3)]


def test_fits_folder_reports_each_item(tmp_path):
    for i in range(2):
        ramp = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)  # not blank (blank files are skipped)
        fits.PrimaryHDU(np.stack([ramp + i] * 3)).writeto(tmp_path / f"g{i}.fits")
    calls = Staged()
    load_dataset(tmp_path, resolution=32, progress=calls)
    assert calls.stages == [("hashing files", 2, 0), ("reading FITS files", 2, 2), ("stretching", 2, 4)]
    assert calls[2:] == [(1, 2), (2, 2), (2, 2)]  # reading each FITS item, then stretching them in one chunk


def test_hdf_reports_sources_then_stamps():
    calls = Staged()
    ds = load_dataset("hdf", resolution=32, progress=calls)
    assert [(d, t) for d, t, _ in calls.stages] == [("detecting sources", 1), ("cutting stamps", len(ds))]
    assert calls[0] == (1, 1)  # the source detection
    stamps = calls[1:]
    assert stamps[-1] == (len(ds), len(ds)) and len(stamps) == len(ds)
