"""A run folder is never rewritten by a run that is refused or has nothing to do."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SMALL = ["data.dataset=hdf", "data.resolution=32", "model.width=8", "train.batch_size=8", "train.device=cpu",
         "train.threads=1", "log.metrics_every=5", "log.sample_every=50", "log.checkpoint_every=5",
         "log.eval_every=0", "log.grid_size=4", "train.steps=5"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "galaxy_core.cli", *args], capture_output=True, text=True, timeout=300)


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _snapshot(folder: Path) -> dict[str, str]:
    # RUN/.lock records who last held the run's lock (pid, heartbeat); it is not run data
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "done"
    r = _cli("train", "--run-dir", str(run_dir), "--quiet", *_sets(SMALL))
    assert r.returncode == 0, r.stdout + r.stderr
    return run_dir


def test_a_plain_train_into_a_folder_with_checkpoints_is_refused(finished_run):
    before = _snapshot(finished_run)
    r = _cli("train", "--run-dir", str(finished_run), "--quiet", *_sets(SMALL + ["train.seed=3", "train.lr_g=1e-3"]))
    assert r.returncode == 2 and "--resume" in r.stderr and "--name" in r.stderr
    assert _snapshot(finished_run) == before


@pytest.mark.parametrize("args", [["--run-dir", "{run}", *_sets(SMALL)],  # refused before the data is read
                                  ["--resume", "{run}", *_sets(["model.width=16", "train.steps=10"])]])  # after
def test_a_refused_run_draws_no_progress_bar(finished_run, args):
    """A second run into a taken folder drew an empty "0/5" bar before its error: the bar is drawn
    once the loop starts, after every check."""
    r = _cli("train", *[a.format(run=finished_run) for a in args])  # not --quiet: a bar would be drawn
    assert r.returncode == 2 and "galaxygan: error: " in r.stderr, r.stderr
    assert "step/s" not in r.stderr and "/5 [" not in r.stderr and "/10 [" not in r.stderr, r.stderr


def test_a_refused_resume_leaves_the_folder_byte_for_byte_unchanged(finished_run):
    before = _snapshot(finished_run)
    r = _cli("train", "--resume", str(finished_run), "--quiet", *_sets(["model.width=16", "train.steps=10"]))
    assert r.returncode == 2 and "model" in r.stderr and "Traceback" not in r.stderr
    assert _snapshot(finished_run) == before


@pytest.mark.parametrize("change", ["train.freeze_g=1", "train.freeze_d=1"])
def test_a_resume_that_freezes_other_layers_is_refused_naming_both_settings(finished_run, change):
    # the saved optimiser state holds the run's trainable tensors only; loading it into an
    # optimiser over other tensors failed with a traceback from torch
    before = _snapshot(finished_run)
    r = _cli("train", "--resume", str(finished_run), "--quiet", *_sets([change, "train.steps=10"]))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    key = change.split("=")[0]
    assert str(finished_run / "checkpoints" / "last.json") in r.stderr
    assert "run was trained with train.freeze_g = 0, train.freeze_d = 0, config now says" in r.stderr
    assert f"{key} = 1" in r.stderr and "--init" in r.stderr
    assert _snapshot(finished_run) == before


def test_a_resume_keeps_the_frozen_layers_of_a_fine_tune(tmp_path, finished_run):
    from galaxy_core.config import load_config
    from galaxy_core.errors import ConfigError
    from galaxy_core.train.loop import train

    run_dir = tmp_path / "tuned"
    sets = SMALL + ["train.freeze_g=2", "train.freeze_unit=\"block\""]
    train(load_config(None, sets), run_dir, init_from=str(finished_run / "checkpoints" / "last.json"), progress=False)
    before = _snapshot(run_dir)
    for other in (["train.freeze_g=0"], ["train.freeze_unit=\"layer\""]):
        with pytest.raises(ConfigError, match="train.freeze_unit = 'block'"):
            train(load_config(None, sets + other + ["train.steps=10"]), run_dir, progress=False)
        assert _snapshot(run_dir) == before
    status = train(load_config(None, sets + ["train.steps=10"]), run_dir, progress=False)
    assert status["state"] == "finished" and status["step"] == 10


def test_a_resume_uses_the_optimiser_settings_it_is_given(tmp_path, finished_run):
    # the saved optimiser state brought back the run's own Adam betas, so --set train.beta1 on a
    # resume was silently ignored
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    r = _cli("train", "--resume", str(run_dir), "--quiet", *_sets(["train.steps=7", "train.beta1=0.3"]))
    assert r.returncode == 0, r.stderr
    meta = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    groups = [g for opt in meta["optimizer"].values() for g in opt["param_groups"]]
    assert groups and all(g["betas"] == [0.3, 0.999] for g in groups)
    assert meta["training"]["step"] == 7


def test_resuming_a_finished_run_with_nothing_to_do_rewrites_nothing(finished_run):
    before = _snapshot(finished_run)
    r = _cli("train", "--resume", str(finished_run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert _snapshot(finished_run) == before


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    import os

    from galaxy_core.train.run import RunFolder

    run_dir = tmp_path / "shared"
    held = RunFolder(run_dir).acquire_lock()  # this process is training into it
    try:
        r = _cli("train", "--run-dir", str(run_dir), "--quiet", *_sets(SMALL))
        assert r.returncode == 2 and str(os.getpid()) in r.stderr and "in use" in r.stderr
        assert not (run_dir / "checkpoints").exists()
    finally:
        held.release()


def test_default_run_names_are_unique_within_a_second(tmp_path):
    from galaxy_core.train.run import unique_run_name

    names = {unique_run_name("dcgan_hdf32") for _ in range(50)}
    assert len(names) == 50


def test_resuming_on_other_data_is_refused_unless_forced(finished_run, tmp_path):
    from galaxy_core.data import load_dataset

    hdf = load_dataset("hdf", resolution=32, progress=False)
    folder = tmp_path / "other"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.ascontiguousarray(np.transpose(hdf.images[i], (1, 2, 0)))).save(folder / f"g{i}.png")
    before = _snapshot(finished_run)
    other = _sets([f"data.dataset={folder}", "train.steps=10"])
    r = _cli("train", "--resume", str(finished_run), "--quiet", *other)
    assert r.returncode == 2 and "--force-data" in r.stderr and "hdf" in r.stderr
    assert _snapshot(finished_run) == before
    r = _cli("train", "--resume", str(finished_run), "--quiet", "--force-data", *other)
    assert r.returncode == 0, r.stderr


def test_a_folder_of_the_user_s_own_files_is_not_taken_for_a_run(tmp_path):
    """--run-dir at a folder holding files no run wrote (its own config.toml, a status.json of
    something else, notes) is refused before anything is written; so is a file."""
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.toml").write_text("# my own config\n")
    (mine / "status.json").write_text('{"mine": 1}')
    (mine / "log.txt").write_text("notes\n")
    before = _snapshot(mine)
    r = _cli("train", "--run-dir", str(mine), "--quiet", *_sets(SMALL))
    assert r.returncode == 2 and "holds files that no run wrote" in r.stderr and "log.txt" in r.stderr
    assert "Traceback" not in r.stderr and _snapshot(mine) == before
    (tmp_path / "afile").write_text("x")
    r = _cli("train", "--run-dir", str(tmp_path / "afile"), "--quiet", *_sets(SMALL))
    assert r.returncode == 2 and "is a file, not a run folder" in r.stderr
    assert (tmp_path / "afile").read_text() == "x"


def test_a_run_on_a_relative_data_folder_resumes_from_any_directory(tmp_path, noise_pngs):
    """``--data imgs`` given relative to where the run started is stored as an absolute path in
    the run's config.toml, so ``--resume`` works from another working directory."""
    work = tmp_path / "work"
    noise_pngs(work / "imgs", 8, seed=1)
    sets = [s for s in SMALL if not s.startswith(("data.dataset", "train.steps"))]
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "galaxy_core.cli", "train", "--quiet"]
    r = subprocess.run(base + ["--data", "imgs", "--run-dir", str(run_dir), *_sets(sets + ["train.steps=3"])],
                       capture_output=True, text=True, timeout=300, cwd=work)
    assert r.returncode == 0, r.stderr
    assert f'dataset = "{work / "imgs"}"' in (run_dir / "config.toml").read_text()
    r = subprocess.run(base + ["--resume", str(run_dir), "--set", "train.steps=6"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "finished at step 6" in r.stdout


def test_resuming_a_run_whose_checkpoint_is_gone_says_so_and_keeps_one_history(finished_run, tmp_path):
    """With checkpoints/last.* missing, --resume starts again at step 0 with a warning on the
    console, and metrics.jsonl holds that new history only (no old step-5 record beside the new)."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns(".lock"))
    for p in (run / "checkpoints").glob("last.*"):
        p.unlink()
    r = _cli("train", "--resume", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "galaxygan: warning:" in r.stderr and "no checkpoint to resume from" in r.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(5) == 1


def test_training_on_data_that_is_not_there_makes_no_run_folder(tmp_path):
    run_dir = tmp_path / "r"
    sets = [s for s in SMALL if not s.startswith("data.dataset")]
    r = _cli("train", "--data", str(tmp_path / "nowhere"), "--run-dir", str(run_dir), "--quiet", *_sets(sets))
    assert r.returncode == 2 and "nowhere: no such file or folder" in r.stderr and "Traceback" not in r.stderr
    assert not run_dir.exists()
