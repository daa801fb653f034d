"""Run folders: config, status with heartbeat, append-only metrics, sample grids, checkpoints.

::

    RUN/
      config.toml           resolved config (every value)
      status.json           state (running / finished / failed / stopped), pid, heartbeat, step
      metrics.jsonl         one JSON record per line, appended and flushed as the run goes
      samples/step_XXXXXXX.png   fixed-latent grids over time
      samples/fixed_z.npy   the fixed latents of those grids
      checkpoints/last.*    resumable checkpoint (with optimiser state)
      checkpoints/best.*    best by the live evaluation metric
      log.txt               human-readable log
      .lock                 one writer per run: an OS lock (flock) plus the holder's pid and heartbeat

The metrics file is append-only: a crash can at worst leave a partial last line, which
:func:`read_metrics` ignores. ``status.json`` is replaced atomically.

One process writes a run folder at a time. The writer holds ``.lock`` with :meth:`RunFolder.lock`
for the run's whole life (take it before writing status "running"); a second writer is refused
with :class:`RunLockedError` naming the holder's pid. The operating system releases the lock when
the holding process ends, however it ends, so a crashed run never leaves a lock that blocks its
resume; the pid and heartbeat kept in the file only say who holds (or last held) it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from galaxy_core.errors import GalaxyGanError
from galaxy_core.io.atomic import atomic_write_json, json_text

STATES = ("starting", "running", "finished", "failed", "stopped")
HEARTBEAT_STALE_S = 120.0
LOCK_NAME = ".lock"
LOCK_HEARTBEAT_S = 10.0  # seconds between heartbeats written into the lock file by its holder


class RunLockedError(GalaxyGanError):
    """Another process holds the run folder's lock (it is training, or resuming, in that folder)."""


class RunLock:
    """The held lock of a run folder (returned by :meth:`RunFolder.lock`).

    Attributes
    ----------
    path : Path
        ``RUN/.lock``.
    pid : int
        This process.
    previous : dict or None
        What the lock file said before it was taken: the last holder's ``pid``, ``host``,
        ``acquired`` and ``heartbeat`` (Unix seconds), and ``released`` when it let go cleanly.
        A ``previous`` without ``released`` means that holder ended without releasing (a crash
        or a kill); the loop may log it.
    """

    def __init__(self, path: Path, fd: int, previous: dict | None):
        self.path = path
        self.pid = os.getpid()
        self.previous = previous
        self._fd: int | None = fd
        self._record = {"pid": self.pid, "host": socket.gethostname(), "acquired": time.time()}
        self._io = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def heartbeat(self, **fields) -> None:
        """Write the holder's pid, host and the current time (plus ``fields``) into the lock file.

        Called every ``heartbeat_s`` seconds by a background thread when :meth:`RunFolder.lock`
        started one; the loop may also call it (``step=...``) after each step.
        """
        with self._io:
            if self._fd is None:
                return
            self._record.update(fields, heartbeat=time.time())
            _write_fd(self._fd, self._record)

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.heartbeat()
            except OSError:  # a full disk must not kill the run over its lock file
                pass

    def start_heartbeat(self, every_s: float) -> None:
        """Refresh the heartbeat from a daemon thread every ``every_s`` seconds until released."""
        if self._thread is None and every_s > 0:
            self._thread = threading.Thread(target=self._beat, args=(every_s,), name="run-lock-heartbeat",
                                            daemon=True)
            self._thread.start()

    def release(self) -> None:
        """Record the release in the file and unlock; safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._io:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                self._record["released"] = time.time()
                _write_fd(fd, self._record)
            except OSError:
                pass
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _write_fd(fd: int, record: dict) -> None:
    """Overwrite the lock file's content in place (never by rename: the lock is on this inode)."""
    data = (json_text(record) + "\n").encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _read_lock_file(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:  # caught mid-write, or damaged: the OS lock still decides
        return None
    return record if isinstance(record, dict) else None


def _describe_holder(record: dict | None) -> str:
    if not record or not record.get("pid") or record.get("released"):  # the new holder has not written yet
        return "another process (its pid is not recorded yet)"
    text = f"process {record['pid']}"
    if record.get("host") and record["host"] != socket.gethostname():
        text += f" on host {record['host']}"
    if isinstance(record.get("heartbeat"), (int, float)):
        text += f", last heartbeat {max(0.0, time.time() - record['heartbeat']):.0f} s ago"
    if record.get("host") in (None, socket.gethostname()) and not _pid_alive(record["pid"]):
        text += " (that process has exited: a child process it started, such as a data loader worker, " \
                "still holds the lock; end that child)"
    return text


def unique_run_name(stem: str, *, root: str | os.PathLike | None = None) -> str:
    """A run name that no other run gets, even one started in the same millisecond.

    The name is ``STEM-YYYYmmdd-HHMMSS-mmm-XXXX``: the UTC start time to the millisecond and
    eight random hex digits, so names sort by start time. With ``root``, the folder
    ``root/NAME`` is also created with an exclusive ``mkdir`` (retrying with a new suffix on the
    unlikely collision), so two processes can never be handed the same folder.

    Parameters
    ----------
    stem : str
        What the run is, e.g. a config name; characters other than letters, digits, ``.``,
        ``-`` and ``_`` become ``-``.
    root : path, optional
        The runs folder in which to create the run's folder (created if missing).

    Returns
    -------
    str
        The run name (the folder name under ``root``).

    Raises
    ------
    GalaxyGanError
        ``root`` cannot be written (the message names it).
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", str(stem)).strip("-.") or "run"
    root_path = None if root is None else Path(root)
    if root_path is not None:
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GalaxyGanError(f"{root_path}: cannot create a run folder there ({e.strerror or e})") from e
    for _ in range(100):
        now = datetime.now(timezone.utc)
        name = f"{clean}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{secrets.token_hex(4)}"
        if root_path is None:
            return name
        try:
            (root_path / name).mkdir()
        except FileExistsError:
            continue  # another process took this name an instant ago
        except OSError as e:
            raise GalaxyGanError(f"{root_path}: cannot create a run folder there ({e.strerror or e})") from e
        return name
    raise GalaxyGanError(f"{root}: could not find a free run name for {clean!r} after 100 tries")


class RunFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # paths
    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints_dir / f"{name}.json"

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    def create(self) -> "RunFolder":
        for d in (self.root, self.samples_dir, self.checkpoints_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # the one-writer lock
    @contextlib.contextmanager
    def lock(self, *, heartbeat_s: float = LOCK_HEARTBEAT_S) -> Iterator[RunLock]:
        """Hold the run folder's lock for the ``with`` block: the only writer of this run.

        Take it before writing status "running" and hold it until the final status is written.
        The OS releases it if the process dies, so a crash never leaves the folder locked.

        Parameters
        ----------
        heartbeat_s : float
            Seconds between heartbeats written into ``RUN/.lock`` by a daemon thread (0: none;
            call :meth:`RunLock.heartbeat` yourself).

        Yields
        ------
        RunLock
            The held lock; ``previous`` tells what the file said about the last holder.

        Raises
        ------
        RunLockedError
            Another process (or another ``lock()`` in this process) holds it; the message names
            the holder's pid, host and heartbeat age.
        GalaxyGanError
            The folder cannot be created or the lock file cannot be opened.
        """
        held = self.acquire_lock(heartbeat_s=heartbeat_s)
        try:
            yield held
        finally:
            held.release()

    def acquire_lock(self, *, heartbeat_s: float = LOCK_HEARTBEAT_S) -> RunLock:
        """Take the lock without a ``with`` block; call ``release()`` on the result (see :meth:`lock`)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GalaxyGanError(f"{self.lock_path}: cannot open the run's lock file ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise GalaxyGanError(f"{self.lock_path}: cannot lock the run folder ({e.strerror})") from e
            holder = _read_lock_file(self.lock_path)
            raise RunLockedError(
                f"{self.root}: run folder is in use by {_describe_holder(holder)}; only one process may "
                "write a run: wait for it to end, stop it (the Stop button or kill -TERM "
                f"{(holder or {}).get('pid', 'PID')}), or choose another run folder") from None
        previous = _read_lock_file(self.lock_path)
        held = RunLock(self.lock_path, fd, previous)
        held.start_heartbeat(heartbeat_s)
        return held

    def lock_holder(self) -> dict | None:
        """Who holds the lock now: the lock file's record (``pid``, ``host``, ``heartbeat``, ...).

        Returns
        -------
        dict or None
            None when no process holds the lock (never locked, released, or the holder died);
            ``{}`` when it is held but the holder has not written its record yet.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_lock_file(self.lock_path) or {}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # status
    def write_status(self, state: str, **fields) -> None:
        assert state in STATES, state
        old = self.read_status() or {}
        now = time.time()
        status = {
            **old,
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat": now,
            **fields,
        }
        status.setdefault("started", now)
        atomic_write_json(self.status_path, status)

    def read_status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def effective_state(self) -> str:
        """The state, with a 'running' run whose process is gone reported as 'failed'.

        When the run uses the lock (``RUN/.lock`` exists), a "running" status whose lock nobody
        holds is a run that died (the OS released its lock); a held lock is a live run whatever
        its heartbeat says.
        """
        st = self.read_status()
        if not st:
            return "unknown"
        if st.get("state") == "running" and self.lock_path.exists():
            return "running" if self.lock_holder() is not None else "failed"
        if st.get("state") in ("running", "starting"):
            alive = _pid_alive(st.get("pid")) if st.get("host") == socket.gethostname() else True
            stale = time.time() - st.get("heartbeat", 0) > HEARTBEAT_STALE_S
            if not alive or (stale and st.get("host") != socket.gethostname()):
                return "failed"
        return st["state"]

    # metrics
    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json_text(record, default=float) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.metrics_path)

    def sample_grids(self) -> list[tuple[int, Path]]:
        """(step, path) of every saved sample grid, by step."""
        out = []
        for p in self.samples_dir.glob("step_*.png"):
            m = re.match(r"step_(\d+)\.png$", p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def log(self, message: str) -> None:
        with open(self.root / "log.txt", "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read a metrics.jsonl written by a live or crashed run; a partial last line is skipped."""
    records = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return records


def truncate_metrics(path: str | os.PathLike, *, after_step: int) -> None:
    """Drop records past ``after_step`` (used on resume so the log matches the checkpoint)."""
    records = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
    from galaxy_core.io.atomic import atomic_write_text

    atomic_write_text(path, "".join(json_text(r) + "\n" for r in records))


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited child not yet reaped) is not alive
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def list_runs(root: str | os.PathLike) -> list[RunFolder]:
    """Run folders under ``root``, newest first."""
    root = Path(root)
    if not root.exists():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if (p / "status.json").exists() or (p / "config.toml").exists()]
    return sorted(runs, key=lambda r: r.root.stat().st_mtime, reverse=True)
