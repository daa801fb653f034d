"""Sky composition speed: the two-stage composer against baseline 1 on the same sky size.

Both build a ``--size`` square sky in one process, alternating, so machine load affects both
alike. The two-stage side generates one position grid per 512 px tile and one galaxy per
occupied cell (the default sky config's shipped checkpoints) over the measured background, extracts
each galaxy's flux and adds it; baseline 1
draws diamonds. Reported: seconds per sky (median over rounds) and their ratio.

    python benchmarks/bench_sky.py [--size 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from galaxy_core.sky.baselines import baseline_uniform
from galaxy_core.sky.pipeline import SkyConfig, compose


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = SkyConfig(height=args.size, width=args.size)
    compose(cfg)  # load the models and the background statistics once
    two, base = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        sky = compose(SkyConfig(height=args.size, width=args.size, seed=r))
        two.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        baseline_uniform(height=args.size, width=args.size, seed=r)
        base.append(time.perf_counter() - t0)
    t, b = statistics.median(two), statistics.median(base)
    print(f"{args.size} px sky: two-stage {t:.2f} s ({len(sky.truth)} galaxies), baseline 1 {b:.2f} s, ratio {t / b:.1f}")


if __name__ == "__main__":
    main()
