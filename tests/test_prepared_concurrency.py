"""The prepared-dataset cache under concurrent writers and readers.

Two ranks of a distributed run prepare the same built-in dataset at once, and a rebuild can run
beside a training run that reads it: every one of them must end with the whole dataset and no
error, and the cache folder must hold nothing else afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback

import numpy as np

from galaxy_core.data.prepared import open_prepared, write_prepared

N_IMAGES = 64


def _images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(N_IMAGES, 3, 16, 16), dtype=np.uint8)


def _manifest() -> dict:
    return {"name": "race", "key": "k", "source": "test", "channels": ["R", "G", "B"], "kind": "image"}


def _writer(root: str, rounds: int, errors) -> None:
    try:
        images = _images()
        for _ in range(rounds):
            ds = write_prepared(root, images, _manifest())
            assert np.array_equal(np.asarray(ds.images), images)
    except BaseException:
        errors.put(traceback.format_exc())


def _reader(root: str, rounds: int, errors) -> None:
    """Reads as a training run does: open the cache if it is there, then the images."""
    try:
        images = _images()
        seen = 0
        while seen < rounds:
            try:
                ds = open_prepared(root)
            except Exception:  # between two writers' renames the folder may be absent: prepare again
                continue
            assert np.array_equal(np.asarray(ds.images), images)
            seen += 1
    except BaseException:
        errors.put(traceback.format_exc())


def test_concurrent_writers_and_readers_of_one_dataset(tmp_path):
    root = tmp_path / "prepared" / "race-k"
    write_prepared(root, _images(), _manifest())  # readers start on a complete cache
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(root), 15, errors)) for _ in range(3)]
    procs += [ctx.Process(target=_reader, args=(str(root), 200, errors)) for _ in range(1)]
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
