"""Isophote morphology throughput: the ``native`` protocol against the paper's 512 px protocol.

Both measure the same 64 px ``sim`` stamps (g + r + i summed, neighbours and stars included,
as the dataset has them) with :func:`galaxy_core.metrics.morphology.measure_many` in the same
number of worker processes, one after the other in this process, so machine load affects both
alike. Reported: stamps/s of each, their ratio, each protocol's failure rate, and the time 9,000
stamps would take on the ``native`` protocol at the measured rate (goal: under 10 minutes on a
2-core machine, with at most 5 % failures).

    python benchmarks/bench_morphology.py [--stamps 200] [--paper-stamps 6] [--workers 2]

The paper protocol is slow (seconds per stamp), so it runs on the first ``--paper-stamps``
stamps only; its rate is still a per-stamp figure measured in this run.

Measured on an idle machine (``--stamps 9000 --paper-stamps 1 --workers 2``, load average 2.0):
**9,000 stamps in 7.7 min** (19.4 stamps/s, 0.102 CPU s/stamp), 3.0 % failures; paper512 on
one stamp 1.9 CPU s (19x in CPU time, 38x in stamps/s).

Measured earlier (``--stamps 2000 --paper-stamps 4 --workers 2``, load average 14 from other jobs on the
2 cores, so the wall-clock rates are a third of an idle machine's and the CPU time is the figure
to read): native 0.118 CPU s/stamp, 3.5 % failures; paper512 4.0 CPU s/stamp; 34x in CPU time;
9,000 stamps project to 8.8 min on 2 otherwise idle cores (paper512: 5.0 h). With 400 stamps
at load 18: 0.122 CPU s/stamp, 3.2 % failures, 9.2 min.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from galaxy_core.data.sim import draw_galaxy, sample_params
from galaxy_core.metrics.morphology import measure_many

TARGET_STAMPS = 9_000


def sim_stamps(count: int, *, seed: int = 0) -> np.ndarray:
    """(count, 3, 64, 64) float32 nanomaggies: stamps 0..count-1 of ``sim`` seed ``seed``."""
    return np.stack([draw_galaxy(sample_params(seed, i)) for i in range(count)])


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished worker processes (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(images: np.ndarray, protocol: str, workers: int) -> tuple[float, float, float, object]:
    """(stamps per second, CPU seconds per stamp, failure fraction, table) for one protocol.

    CPU seconds per stamp do not depend on how many other programs share the cores, so they
    project what an otherwise idle machine would do; stamps/s is the wall-clock figure.
    """
    c0, t0 = _cpu_seconds(), time.perf_counter()
    table = measure_many(images, method="isophote", protocol=protocol, workers=workers,
                         progress=False, chunk_size=max(1, len(images) // (4 * max(workers, 1))))
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return len(images) / seconds, cpu / len(images), float(np.mean(table["failed"])), table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stamps", type=int, default=200, help="stamps measured with 'native'")
    ap.add_argument("--paper-stamps", type=int, default=6, help="stamps measured with 'paper512'")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    images = sim_stamps(max(args.stamps, args.paper_stamps), seed=args.seed)
    rate_native, cpu_native, fail_native, native = run(images[: args.stamps], "native",
                                                       args.workers)
    rate_paper, cpu_paper, fail_paper, _ = run(images[: args.paper_stamps], "paper512",
                                               args.workers)
    print(f"stamps: native {args.stamps}, paper512 {args.paper_stamps}; workers {args.workers}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"native    {rate_native:8.3f} stamps/s  {cpu_native:7.3f} CPU s/stamp  "
          f"failures {fail_native:6.1%}")
    print(f"paper512  {rate_paper:8.3f} stamps/s  {cpu_paper:7.3f} CPU s/stamp  "
          f"failures {fail_paper:6.1%}")
    print(f"ratio native / paper512: {rate_native / rate_paper:.1f}x in stamps/s, "
          f"{cpu_paper / cpu_native:.1f}x in CPU time")
    print(f"{TARGET_STAMPS} stamps on native: {TARGET_STAMPS / rate_native / 60:.1f} min at the "
          f"measured rate, {TARGET_STAMPS * cpu_native / args.workers / 60:.1f} min on "
          f"{args.workers} otherwise idle cores (paper512: "
          f"{TARGET_STAMPS * cpu_paper / args.workers / 3600:.1f} h)")
    for row in native[native["failed"]]:
        print(f"  native failure, stamp {row['index']}: {row['reason']}")


if __name__ == "__main__":
    main()
