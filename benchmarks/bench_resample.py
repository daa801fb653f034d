"""Flux resampling of a stack of stamps: ``resample_flux`` (one matrix per image axis) against
scikit-image's ``resize`` of the whole array, the baseline it must equal.

Both resample the same random (N, 3, 64, 64) stacks, as ``prepare_sim`` does in chunks of 500
(64 -> 128 px for the 128 px ``sim`` data, 64 -> 32 for 32 px). Rounds alternate in one
process, so machine load affects both alike; the figure is the ratio of median times.

    python benchmarks/bench_resample.py [--n 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from skimage.transform import resize

from galaxy_core.io.units import pixel_area_ratio, resample_flux


def baseline(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape[-2:]
    return resize(x, x.shape[:-2] + (size, size), order=1, mode="reflect", anti_aliasing=h > size or w > size,
                  preserve_range=True) * pixel_area_ratio((h, w), size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="stamps per stack")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    x = np.random.default_rng(0).lognormal(size=(args.n, 3, 64, 64))
    for size in (128, 32):
        times = {"resample_flux": [], "skimage resize": []}
        for _ in range(args.rounds):
            for name, fn in (("resample_flux", resample_flux), ("skimage resize", baseline)):
                t0 = time.perf_counter()
                out = fn(x, size)
                times[name].append(time.perf_counter() - t0)
        diff = float(np.abs(resample_flux(x, size) - out).max() / np.abs(out).max())
        ours, base = (statistics.median(times[k]) for k in ("resample_flux", "skimage resize"))
        print(f"64 -> {size} px, {args.n} x 3 bands: resample_flux {ours:.2f} s, skimage resize {base:.2f} s, "
              f"speed-up x{base / ours:.1f}; largest relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
