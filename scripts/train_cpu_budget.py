"""Run ``galaxygan train`` until its training has used a given number of CPU seconds.

Usage::

    python scripts/train_cpu_budget.py SECONDS RUN_DIR CONFIG [--set KEY=VALUE ...]

The run's ``metrics.jsonl`` records carry ``cpu_s`` (cumulative CPU seconds of the training
process, live evaluation excluded). Once a record reaches ``SECONDS`` the run is sent SIGTERM,
which saves ``last`` and stops cleanly. Budgeting by CPU time rather than wall time makes runs
comparable on a machine shared with other jobs. If ``RUN_DIR`` already holds a run (stopped by
an earlier, smaller budget), it is resumed with its own config until the new budget; resuming
is exact, so the curve is the one an uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def last_cpu_s(metrics: Path) -> float:
    if not metrics.exists():
        return 0.0
    lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
    for ln in reversed(lines):
        try:
            return float(json.loads(ln).get("cpu_s") or 0.0)
        except json.JSONDecodeError:  # a line being written
            continue
    return 0.0


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    budget, run_dir, rest = float(argv[0]), Path(argv[1]), argv[2:]
    if (run_dir / "checkpoints" / "last.json").exists():  # extend an earlier budgeted run to the new budget
        print(f"{run_dir} holds a run stopped at {last_cpu_s(run_dir / 'metrics.jsonl'):.0f} CPU-seconds: "
              "resuming it with its own config (the config and --set arguments given are not used)")
        cmd = [sys.executable, "-m", "galaxy_core.cli", "train", "--resume", str(run_dir), "--quiet"]
    else:
        cmd = [sys.executable, "-m", "galaxy_core.cli", "train", *rest, "--run-dir", str(run_dir), "--quiet"]
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        time.sleep(5)
        if last_cpu_s(run_dir / "metrics.jsonl") >= budget:
            proc.send_signal(signal.SIGTERM)
            break
    return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
