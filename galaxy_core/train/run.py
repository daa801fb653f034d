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

The metrics file is append-only: a crash can at worst leave a partial last line, which
:func:`read_metrics` ignores. ``status.json`` is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from galaxy_core.io.atomic import atomic_write_json

STATES = ("starting", "running", "finished", "failed", "stopped")
HEARTBEAT_STALE_S = 120.0


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

    def create(self) -> "RunFolder":
        for d in (self.root, self.samples_dir, self.checkpoints_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

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
        """The state, with a 'running' run whose process is gone reported as 'failed'."""
        st = self.read_status()
        if not st:
            return "unknown"
        if st["state"] in ("running", "starting"):
            alive = _pid_alive(st.get("pid")) if st.get("host") == socket.gethostname() else True
            stale = time.time() - st.get("heartbeat", 0) > HEARTBEAT_STALE_S
            if not alive or (stale and st.get("host") != socket.gethostname()):
                return "failed"
        return st["state"]

    # metrics
    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
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

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


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
