"""The prepared-dataset cache under concurrent writers and readers.

Two ranks of a distributed run prepare the same built-in dataset at once, and a rebuild can run
beside a training run that reads it: every one of them must end with the whole dataset and no
error, a reader must never find the folder missing or without its catalogue, and the cache
folder must hold nothing else afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback

import numpy as np
from astropy.table import Table

from galaxy_core.data.prepared import new_temporary_dir, open_prepared, remove_stale_temporaries, write_prepared

N_IMAGES = 64


def _images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(N_IMAGES, 3, 16, 16), dtype=np.uint8)


def _catalog() -> Table:
    return Table({"file": [f"g{i}.png" for i in range(N_IMAGES)], "flux": np.arange(N_IMAGES, dtype=float)})


def _manifest() -> dict:
    return {"name": "race", "key": "k", "source": "test", "channels": ["R", "G", "B"], "kind": "image"}


def _writer(root: str, rounds: int, replace: bool, errors) -> None:
    try:
        images = _images()
        for _ in range(rounds):
            ds = write_prepared(root, images, _manifest(), catalog=_catalog(), replace=replace)
            assert np.array_equal(np.asarray(ds.images), images) and list(ds.catalog["flux"]) == list(range(N_IMAGES))
    except BaseException:
        errors.put(traceback.format_exc())


def _reader(root: str, seconds: float, errors) -> None:
    """Opens the dataset again and again as training runs do, while the writers replace it."""
    try:
        images, end, n = _images(), time.monotonic() + seconds, 0
        while time.monotonic() < end or n < 50:
            ds = open_prepared(root)  # never missing, never without its catalogue
            assert ds.catalog is not None and len(ds.catalog) == N_IMAGES
            assert np.array_equal(np.asarray(ds.images), images)
            n += 1
    except BaseException:
        errors.put(traceback.format_exc())


def test_concurrent_writers_and_readers_of_one_dataset(tmp_path):
    root = tmp_path / "prepared" / "race-k"
    write_prepared(root, _images(), _manifest(), catalog=_catalog())  # readers start on a complete cache
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(root), 5, replace, errors)) for replace in (True, True, False)]
    procs += [ctx.Process(target=_reader, args=(str(root), 1.5, errors)) for _ in range(1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, "\n".join(found)
    assert all(p.exitcode == 0 for p in procs)
    assert np.array_equal(np.asarray(open_prepared(root).images), _images())
    assert sorted(p.name for p in root.parent.iterdir()) == ["race-k"]  # no temporary or moved-aside folder left


def test_a_whole_dataset_is_kept_unless_replaced_and_a_damaged_one_is_always_replaced(tmp_path):
    root = tmp_path / "race-k"
    first = write_prepared(root, _images(), _manifest())
    other = np.zeros_like(_images())
    other[:, :, 0, 0] = 1
    kept = write_prepared(root, other, _manifest())  # same key prepared meanwhile elsewhere: kept
    assert np.array_equal(np.asarray(kept.images), np.asarray(first.images))
    assert write_prepared(root, other, _manifest(), replace=True).images[0, 0, 0, 0] == 1  # a rebuild replaces
    (root / "images.npy").write_bytes(b"cut short")
    assert write_prepared(root, _images(), _manifest()).images.shape == (N_IMAGES, 3, 16, 16)
    assert open_prepared(root).catalog is None and open_prepared(root).manifest["catalog"] is False


def test_the_temporary_folder_of_a_killed_writer_is_removed_by_the_next_one(tmp_path):
    parent = tmp_path / "prepared"
    code = textwrap.dedent(f"""
        import pathlib, sys, time
        from galaxy_core.data.prepared import new_temporary_dir
        d = new_temporary_dir(pathlib.Path({str(parent)!r}), "race-k")
        (d / "images.npy").write_bytes(b"x" * 1000)
        print(d, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    left = proc.stdout.readline().strip()
    live = new_temporary_dir(parent, "other")  # this process's own work in progress
    remove_stale_temporaries(parent)
    assert os.path.isdir(left) and live.is_dir()  # its writer still runs: left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    write_prepared(parent / "race-k", _images(), _manifest())
    assert not os.path.exists(left) and live.is_dir()
