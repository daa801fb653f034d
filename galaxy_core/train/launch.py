"""Start, stop and resume training runs as separate, detached processes.

The app never trains in its own process: it starts ``python -m galaxy_core.cli train ...`` in a
new session (so a browser reload, a closed tab or a restarted app server does not end the run)
and afterwards only reads the run folder. Arguments are passed as a list, never through a
shell. Stopping sends SIGTERM to the process recorded in ``status.json``; the command line's
handler turns it into a clean stop (``last`` saved, state "stopped").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from galaxy_core.config import Config, from_dict, load_config, to_toml
from galaxy_core.errors import GalaxyGanError
from galaxy_core.io.atomic import atomic_write_text
from galaxy_core.io.checkpoint import read_meta
from galaxy_core.paths import with_suffix_of
from galaxy_core.train.run import RunFolder, RunLockedError

LOG_NAME = "process.log"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "galaxy_core.cli", "train", *args]


def _spawn(cmd: list[str], run_dir: Path, *, step: int, total: int, message: str) -> int:
    """Start ``cmd`` detached, output appended to ``run_dir/process.log``; returns the pid.

    Until the child writes its own status, the run is recorded as "starting" at ``step`` of
    ``total`` (a resumed run shows the step it resumes from, not 0).
    """
    with open(run_dir / LOG_NAME, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    # Reap the child when it exits so it does not linger as a zombie of the app's process.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    run = RunFolder(run_dir)
    if not _status_written_by(run, proc.pid):
        # Until the child writes its own status (after its imports), record it so the run is
        # listed as starting at once and can be stopped.
        run.write_status("starting", pid=proc.pid, step=step, total=total, message=message)
    return proc.pid


def _status_written_by(run: RunFolder, pid: int) -> bool:
    st = run.read_status()
    return bool(st) and st.get("pid") == pid


def launch_training(config: str | os.PathLike | Config | dict, run_dir: str | os.PathLike, *,
                    overrides: list[str] | tuple[str, ...] = (), init: str | os.PathLike | None = None) -> int:
    """Start a training run in a detached process.

    Parameters
    ----------
    config : path, Config or dict
        A config file (TOML/YAML), or a config object / nested dict, which is written as
        ``run_dir/config.toml`` first.
    run_dir : path
        The run folder; must not already hold a run (use :func:`resume_run` for that).
    overrides : list of str
        ``section.key=value`` overrides, passed on as ``--set`` arguments.
    init : path, optional
        Checkpoint to initialise G, D and G_ema from (fine-tuning).

    Returns
    -------
    int
        The process id of the training process.

    Raises
    ------
    ConfigError
        The config (with overrides) is invalid; checked here, before anything is started.
    RunLockedError
        A process holds the run folder's lock (the message names its pid).
    GalaxyGanError
        The run folder already holds a run, or ``init`` does not exist.
    """
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    _refuse_if_locked(run)
    if run.status_path.exists() or run.checkpoint("last").exists():
        raise GalaxyGanError(f"{run_dir}: already holds a run; resume it or choose a new name")
    if init is not None and not with_suffix_of(init, ".json", (".json", ".safetensors")).exists():
        raise GalaxyGanError(f"{init}: no such checkpoint to start from")
    overrides = [str(o) for o in overrides]
    if isinstance(config, (Config, dict)):
        cfg = config if isinstance(config, Config) else from_dict(config, source="app")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, to_toml(cfg))
        config_path = run.config_path
    else:
        config_path = Path(config)
    cfg = load_config(config_path, overrides)  # raises ConfigError naming the bad key
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = _cli(str(config_path), "--run-dir", str(run_dir), "--quiet")
    for item in overrides:
        cmd += ["--set", item]
    if init is not None:
        cmd += ["--init", str(with_suffix_of(init, ".json", (".json", ".safetensors")))]
    return _spawn(cmd, run_dir, step=0, total=cfg.train.steps, message="process started")


def resume_run(run_dir: str | os.PathLike, *, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Continue a stopped, failed or finished run from its ``last`` checkpoint; returns the pid.

    Parameters
    ----------
    run_dir : path
        The run folder.
    overrides : list of str
        ``section.key=value`` changes for the continuation, e.g. ``train.steps=3000`` to train a
        finished run further (without it a finished run ends at once).

    Raises
    ------
    RunLockedError
        A process holds the run folder's lock (it is still training); the message names its pid.
    ConfigError
        The run's config with ``overrides`` is invalid (checked before anything starts).
    GalaxyGanError
        Not a run folder, or the run is still starting or running.
    """
    run = RunFolder(run_dir)
    if not run.config_path.exists():
        raise GalaxyGanError(f"{run.root}: not a run folder (config.toml missing)")
    _refuse_if_locked(run)
    if run.effective_state() in ("running", "starting"):
        raise GalaxyGanError(f"{run.root}: is still running (pid {run.read_status().get('pid')})")
    overrides = [str(o) for o in overrides]
    cfg = load_config(run.config_path, overrides)  # raises ConfigError naming the bad key
    cmd = _cli("--resume", str(run.root), "--quiet")
    for item in overrides:
        cmd += ["--set", item]
    step = resume_step(run)
    return _spawn(cmd, run.root, step=step, total=cfg.train.steps, message=f"resuming from step {step}")


def resume_step(run: RunFolder) -> int:
    """The step a resume continues from: that of the ``last`` checkpoint (0 when there is none).

    Falls back to the step in ``status.json`` when the checkpoint's description cannot be read.
    """
    try:
        return int(read_meta(run.checkpoint("last"))["training"]["step"])
    except (GalaxyGanError, KeyError, TypeError, ValueError):
        return int((run.read_status() or {}).get("step") or 0)


def _refuse_if_locked(run: RunFolder) -> None:
    """Raise :class:`RunLockedError` naming the holder when a process holds the run's lock."""
    holder = run.lock_holder()
    if holder is not None:
        pid = holder.get("pid", "unknown")
        raise RunLockedError(f"{run.root}: is in use by process {pid} (it holds {run.lock_path.name}); "
                             "stop that run first or choose another run folder")


def _is_training_process(pid: int) -> bool:
    """True when ``pid`` runs a galaxygan training command (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        # No /proc (macOS): trust the status record; on Linux a missing entry means no process.
        return not Path("/proc/self").exists()
    except OSError:
        return False
    text = b" ".join(cmdline)
    return b"train" in cmdline and (b"galaxy_core.cli" in text or b"galaxygan" in text)


def stop_run(run_dir: str | os.PathLike, *, wait_s: float = 0.0) -> bool:
    """Ask a running training process to stop cleanly (SIGTERM to the pid in ``status.json``).

    The process saves ``last`` and records state "stopped"; this can take a few seconds
    (the current step and checkpoint are finished first).

    Parameters
    ----------
    run_dir : path
        The run folder.
    wait_s : float
        Wait up to this long for the run to leave the running state.

    Returns
    -------
    bool
        True when a signal was sent.
    """
    run = RunFolder(run_dir)
    st = run.read_status()
    if not st or run.effective_state() not in ("running", "starting"):
        return False
    if st.get("host") not in (None, socket.gethostname()):
        raise GalaxyGanError(f"{run.root}: runs on host {st.get('host')}; stop it there")
    holder = run.lock_holder() or {}
    pid = int(holder.get("pid") or st.get("pid") or 0)  # the lock's holder is the writer, if it has one
    if pid <= 0 or not _is_training_process(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and run.effective_state() in ("running", "starting"):
        time.sleep(0.2)
    return True
