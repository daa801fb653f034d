"""Start-up cost of the command-line tools: CPU seconds of whole ``galaxygan`` processes against
the baseline every one of them pays, a Python process that only imports torch.

Every command is a fresh process (the app's Train page, the kill-and-resume tests and scripts
start many), so what a command imports before its first useful step is paid each time. The
commands run in rounds that alternate with the baseline, so machine load affects all alike;
each figure is the median CPU time (user + system, the process and its children) and its
ratio to the baseline's.

    python benchmarks/bench_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints"


def cpu_seconds(cmd: list[str]) -> float:
    """CPU time (user + system) of ``cmd`` run to completion, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    cli = [py, "-m", "galaxy_core.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "python -c 'import torch' (baseline)": lambda i: [py, "-c", "import torch"],
            "galaxygan info dcgan_hdf32": lambda i: [*cli, "info", str(CKPT / "dcgan_hdf32.json")],
            "galaxygan sample dcgan_hdf32 -n 1": lambda i: [*cli, "sample", str(CKPT / "dcgan_hdf32.json"), "-n", "1",
                                                            "--out", f"{tmp}/dcgan{i}"],
            "galaxygan sample stylegan_sim64 -n 1 --no-fits": lambda i: [
                *cli, "sample", str(CKPT / "stylegan_sim64.json"), "-n", "1", "--no-fits", "--out", f"{tmp}/sg{i}"],
            "galaxygan train (hdf 32 px, width 8, 1 step)": lambda i: [
                *cli, "train", "--quiet", "--run-dir", f"{tmp}/run{i}",
                *[a for s in ("data.dataset=hdf", "data.resolution=32", "model.width=8", "train.batch_size=8",
                              "train.device=cpu", "train.threads=1", "train.steps=1", "log.eval_every=0")
                  for a in ("--set", s)]],
        }
        cpu_seconds(cases["galaxygan train (hdf 32 px, width 8, 1 step)"]("warm"))  # prepares hdf once if needed
        times = {name: [] for name in cases}
        for i in range(args.rounds):
            for name, make in cases.items():
                times[name].append(cpu_seconds(make(i)))
    base = statistics.median(times["python -c 'import torch' (baseline)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:52s} {med:6.2f} CPU s  x{med / base:.2f} of the baseline")


if __name__ == "__main__":
    main()
