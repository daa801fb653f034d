"""Run folders: the one-writer lock and unique run names (galaxy_core.train.run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from galaxy_core.errors import GalaxyGanError
from galaxy_core.train.launch import resume_run, stop_run
from galaxy_core.train.run import RunFolder, RunLockedError, unique_run_name

HOLDER = textwrap.dedent("""
    import sys, time
    from galaxy_core.train.run import RunFolder
    with RunFolder(sys.argv[1]).lock(heartbeat_s=0.1) as held:
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding ``tmp_path/run``'s lock; yields (RunFolder, Popen)."""
    run = RunFolder(tmp_path / "run").create()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked", "the holder process did not take the lock"
        yield run, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_a_second_process_is_refused_with_the_holders_pid(holder):
    run, proc = holder
    with pytest.raises(RunLockedError) as e:
        with run.lock():
            pytest.fail("two writers held one run folder")
    message = str(e.value)
    assert f"process {proc.pid}" in message and str(run.root) in message
    assert f"kill -TERM {proc.pid}" in message
    assert isinstance(e.value, GalaxyGanError)
    assert run.lock_holder()["pid"] == proc.pid


def test_the_holder_keeps_a_heartbeat_in_the_lock_file(holder):
    run, _ = holder
    first = run.lock_holder()["heartbeat"]
    deadline = time.monotonic() + 10
    while run.lock_holder()["heartbeat"] == first:
        assert time.monotonic() < deadline, "heartbeat did not advance"
        time.sleep(0.05)
    assert time.time() - run.lock_holder()["heartbeat"] < 5


def test_a_killed_holder_leaves_no_lock_behind(holder):
    """The OS releases flock when the process dies: the next writer gets in and learns of the crash."""
    run, proc = holder
    run.write_status("running", pid=proc.pid, step=3, total=10)
    assert run.effective_state() == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert run.lock_holder() is None
    assert run.effective_state() == "failed"  # status still says running, but nobody holds the lock
    with run.lock(heartbeat_s=0) as held:
        assert held.previous["pid"] == proc.pid and "released" not in held.previous  # it crashed
        assert run.lock_holder()["pid"] == os.getpid()


def test_launcher_refuses_resume_of_a_locked_run_and_stops_the_holder_only_if_training(holder):
    run, proc = holder
    run.config_path.write_text("")
    run.write_status("stopped", step=3, total=10)  # a stale status must not let a second writer in
    with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
        resume_run(run.root)
    run.write_status("running", pid=proc.pid, step=3, total=10)
    assert stop_run(run.root) is False  # the holder is not a galaxygan training command: not signalled
    assert proc.poll() is None


def test_one_process_cannot_take_its_own_run_twice(tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.lock(heartbeat_s=0) as held:
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            with run.lock():
                pass
        assert held.held
    assert not held.held and run.lock_holder() is None
    record = json.loads(run.lock_path.read_text())
    assert record["pid"] == os.getpid() and record["released"] >= record["acquired"]
    with run.lock(heartbeat_s=0) as again:  # released cleanly: taken again, previous says so
        assert again.previous["released"] == record["released"]


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    run = RunFolder(tmp_path / "run")
    with pytest.raises(ZeroDivisionError):
        with run.lock(heartbeat_s=0):
            1 / 0
    assert run.lock_holder() is None


def test_lock_in_an_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(GalaxyGanError, match="file"):
        with RunFolder(tmp_path / "file" / "run").lock():
            pass


def test_heartbeat_can_carry_the_step(tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.lock(heartbeat_s=0) as held:
        held.heartbeat(step=42)
        assert run.lock_holder()["step"] == 42


# -------------------------------------------------------------------------------- names


def test_unique_names_in_one_millisecond_differ_and_sort_by_time():
    names = [unique_run_name("dcgan_hdf32") for _ in range(500)]
    assert len(set(names)) == 500
    stem, date, clock, ms, suffix = names[0].rsplit("-", 4)
    assert stem == "dcgan_hdf32" and len(date) == 8 and len(clock) == 6 and len(ms) == 3 and len(suffix) == 8
    assert unique_run_name("my run/../x").startswith("my-run-..-x-2")
    assert "/" not in unique_run_name("../../etc") and unique_run_name("///").startswith("run-")


MAKER = textwrap.dedent("""
    import sys, time
    from galaxy_core.train.run import unique_run_name
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    for _ in range(50):
        print(unique_run_name("same", root=sys.argv[1]), flush=True)
""")


def test_two_processes_starting_together_get_different_folders(tmp_path):
    start = time.time() + 3  # both spin until the same instant, then create 50 folders each
    procs = [subprocess.Popen([sys.executable, "-c", MAKER, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    names = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        names += out.split()
    assert len(names) == 100 and len(set(names)) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_unique_name_reports_an_unwritable_root(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(GalaxyGanError, match="cannot create a run folder"):
        unique_run_name("x", root=tmp_path / "file")
    assert Path(tmp_path / "file").is_file()
