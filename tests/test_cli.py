"""The ``galaxygan`` command as a user runs it: real subprocesses on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from galaxy_core.data.prepared import open_prepared


ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def test_data_prepare_folder_reports_and_skips_bad_files(tmp_path):
    folder = tmp_path / "zoo"
    folder.mkdir()
    yy, xx = np.mgrid[:424, :424]
    for i in range(5):
        blob = np.exp(-((xx - 212) ** 2 + (yy - 212) ** 2) / (2 * (20 + 5 * i) ** 2))
        rgb = (np.stack([blob, 0.8 * blob, 0.6 * blob], -1) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"galaxy_{i}.jpg", quality=95)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = _run("data", "prepare", str(folder), "--crop", "0.5", "--resolution", "32")
    assert r.returncode == 0, r.stderr
    assert "5 images" in r.stdout and "skipped 1 file" in r.stdout and "broken.jpg" in r.stdout
    root = r.stdout.split("folder: ")[1].split()[0]
    ds = open_prepared(root)
    assert ds.images.shape == (5, 3, 32, 32) and ds.manifest["preprocess"]["crop"] == 0.5
    # the crop kept the bright centre: the stamp centre is brighter than its corner
    assert ds.images[0, 0, 16, 16] > ds.images[0, 0, 0, 0] + 100


def test_data_prepare_missing_and_empty_folders(tmp_path):
    r = _run("data", "prepare", str(tmp_path / "nope"))
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = _run("data", "prepare", str(tmp_path / "empty"))
    assert r.returncode == 2 and "empty" in r.stderr and "Traceback" not in r.stderr


def test_data_build_hdf_and_dry_run(tmp_path):
    r = _run("data", "build", "hdf", "--resolution", "32")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hdf: 383 images, 3 channels ['R', 'G', 'B'], 32px")
    r = _run("train", "configs/dcgan_sim64.toml", "--set", "train.steps=123", "--dry-run")
    assert r.returncode == 0 and "steps = 123" in r.stdout and 'dataset = "sim"' in r.stdout


def test_export_drops_optimizer_state(tmp_path):
    from galaxy_core.config import load_config
    from galaxy_core.io.checkpoint import load_checkpoint
    from galaxy_core.train.loop import train

    cfg = load_config(None, ["data.dataset=hdf", "data.resolution=32", "model.width=8", "train.steps=2",
                             "train.batch_size=8", "log.eval_every=0", "log.grid_size=4"])
    train(cfg, tmp_path / "run", progress=False)
    r = _run("export", str(tmp_path / "run"), "--out", str(tmp_path / "exported"), "--note", "tiny test model")
    assert r.returncode == 0, r.stderr
    tensors, meta = load_checkpoint(tmp_path / "exported.json")
    assert not any(k.startswith("opt_") for k in tensors) and "optimizer" not in meta
    assert meta["note"] == "tiny test model" and meta["training"]["step"] == 2
    info = _run("info", str(tmp_path / "exported.json"))
    assert "note: tiny test model" in info.stdout
    # an existing checkpoint is never replaced without --force; a name with a dot keeps it
    before = (tmp_path / "exported.safetensors").read_bytes()
    again = _run("export", str(tmp_path / "run"), "--out", str(tmp_path / "exported"), "--note", "other")
    assert again.returncode == 2 and "exported.safetensors: already exists" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "exported.safetensors").read_bytes() == before
    assert load_checkpoint(tmp_path / "exported.json")[1]["note"] == "tiny test model"
    forced = _run("export", str(tmp_path / "run"), "--out", str(tmp_path / "exported"), "--note", "other", "--force")
    assert forced.returncode == 0 and load_checkpoint(tmp_path / "exported.json")[1]["note"] == "other"
    dotted = _run("export", str(tmp_path / "run"), "--out", str(tmp_path / "my_model.v2"))
    assert dotted.returncode == 0 and (tmp_path / "my_model.v2.json").exists() and not (tmp_path / "my_model.json").exists()
    (tmp_path / "afile").write_text("x")
    blocked = _run("export", str(tmp_path / "run"), "--out", str(tmp_path / "afile" / "m"))
    assert blocked.returncode == 2 and "afile" in blocked.stderr and "Traceback" not in blocked.stderr


def test_a_bare_checkpoint_name_is_found_in_the_shipped_folder_by_every_command(tmp_path):
    """``galaxygan info dcgan_hdf32`` failed ("dcgan_hdf32.json not found") while the sky commands
    took such names: every command finds a checkpoint from the working folder, the repository,
    then the shipped folder, and lists the places when it is in none."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(ROOT / "checkpoints" / f"dcgan_hdf32{suffix}", shipped / f"mine{suffix}")
    here = tmp_path / "elsewhere"
    here.mkdir()
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this tree, from elsewhere
    kw = {"cwd": here, "env": {**os.environ, "GALAXYGAN_CHECKPOINTS": str(shipped), "PYTHONPATH": path}}

    r = _run("info", "mine", **kw)
    assert r.returncode == 0 and r.stdout.startswith("architecture: dcgan"), r.stderr
    r = _run("sample", "mine.json", "-n", "2", "--out", "s", "--no-fits", **kw)
    assert r.returncode == 0, r.stderr
    assert json.loads((here / "s" / "samples.json").read_text())["checkpoint_path"] == str(shipped / "mine.json")
    r = _run("evaluate", "mine", "--report", "rep", "-n", "8", "--extractor", "pix8", "--no-morphology",
             "--no-memorisation", "--no-png", "--quiet", **kw)
    assert r.returncode == 0 and (here / "rep" / "metrics.csv").exists(), r.stderr
    r = _run("export", "mine", "--out", "copy", **kw)
    assert r.returncode == 0 and (here / "copy.safetensors").exists(), r.stderr
    r = _run("sky", "mosaic", "mine", "--size", "64", "--density", "1e-3", "--no-png", "--out", "sky", "--quiet", **kw)
    assert r.returncode == 0 and (here / "sky.fits").exists(), r.stderr

    tried = f"(looked for {here / 'nope.json'}, {ROOT / 'nope.json'}, {shipped / 'nope.json'})"
    for args in (["info", "nope"], ["sample", "nope", "--out", "s2"], ["evaluate", "nope", "--report", "rep2"],
                 ["export", "nope", "--out", "c2"], ["train", "--init", "nope", "--run-dir", "run"]):
        r = _run(*args, **kw)
        assert r.returncode == 2 and f"error: nope: no such checkpoint {tried}" in r.stderr, (args, r.stderr)
    assert sorted(p.name for p in here.iterdir()) == ["copy.json", "copy.safetensors", "rep", "s", "sky.csv",
                                                     "sky.fits"]  # nothing made by the refused ones


def _commands(parser, path=("galaxygan",)):
    """``(command words, parser)`` for the parser and every sub-command under it."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_says_what_it_does():
    """``data build --resolution``, ``sky grids --grid``, ``sky detect --radius`` and others had
    no help at all; defaults are shown where an option has one, and the sky experiments name
    the paper they come from."""
    import argparse

    from galaxy_core.cli import build_parser

    bare = [f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}" for path, p in _commands(build_parser())
            for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert bare == []
    helps = {" ".join(path): p.format_help() for path, p in _commands(build_parser())}
    for command, shown in [("galaxygan evaluate", "at least 2 (default 500)"),
                           ("galaxygan data build", "256 (default 64)"),
                           ("galaxygan sky grids", "cells per side of each grid, G"),
                           ("galaxygan sky detect", "(default 5.0)"),
                           ("galaxygan sky crops", "(default 1500)"),
                           ("galaxygan sky realism-fit", "OUT.json and OUT.npz"),
                           ("galaxygan sky experiments", "ETH Zurich two-stage GAN paper \"Generative models for "
                                                         "sparse cosmological images\"")]:
        assert shown in " ".join(helps[command].split()), (command, helps[command])
    assert "paper's" not in helps["galaxygan sky"]
