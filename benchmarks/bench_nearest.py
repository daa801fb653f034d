"""Nearest-training-image search on real data: speed of exact SSIM, and fast-path agreement.

Two measurements, each a comparison made in the same process so machine load affects both:

1. ``--ssim-ratio``: the batched SSIM of :func:`galaxy_core.metrics.ssim.ssim_matrix` against the
   per-pair loop it replaces (one ``skimage.metrics.structural_similarity`` call per pair), at
   ``--queries`` x ``--refs`` images of the chosen data. The loop is timed on ``--loop-pairs``
   pairs and scaled per pair (running it on all 640,000 pairs would take about 20 minutes);
   the ratio is loop time per pair / batched time per pair, and the values are compared.
2. ``--agreement``: for each distance, the fraction of queries whose top-1 training image from
   the fast search (PCA pre-filter, ``candidates`` re-ranked exactly) is the brute-force one,
   with both timings. Queries are real images held out of the training subset, like generated
   samples that are not copies.

    python benchmarks/bench_nearest.py --ssim-ratio --data sim --queries 64 --refs 10000
    python benchmarks/bench_nearest.py --agreement --data hdf
    python benchmarks/bench_nearest.py --agreement --data sim --metrics l1,mse

Measured (2 CPU cores shared with other jobs, load average 8-18, so absolute times are slow
and only ratios from one run mean much):

* SSIM, sim 64 px, 64 x 9,936 pairs, quiet machine (load average 1.0), 2 torch threads:
  batched 24.8 s; per-pair loop 0.6 s for 1,024 pairs, 342 s scaled: **13.8x** in wall-clock
  time, 7.1x in CPU time (goal 20x not reached); largest difference 4.1e-6. (An earlier run
  with 8 MB blocks at load 8-18: 3.4x. Under heavy load the two torch threads wait on each
  other and the batched side can even lose to the loop: at load 17.8, 64 x 1,000 gave 1.0x.)
  What is left per pair is the window mean of ``x y`` (a 49-term dot product per position,
  one batched matrix product) and five element-wise passes over (positions, q, m) blocks; a
  fused kernel (``torch.compile`` tried: 1.7x less CPU per pair on one thread) would remove
  most passes but costs 20-50 s of compilation per process and a C++ compiler at run time,
  so it is not used.
* top-1 agreement of the fast path (PCA pre-filter, 64 candidates) with exact search, 64 real
  held-out queries:

  ======  ======  =========  ======  =======
  data    metric  agreement  fast s  exact s
  ======  ======  =========  ======  =======
  hdf     l1      100 %      0.75    0.32
  hdf     mse     100 %      1.35    0.15
  hdf     ssim    84.4 %     91.5    29.5
  sim     l1      95.3 %     6.39    7.79
  sim     mse     96.9 %     6.23    3.18
  ======  ======  =========  ======  =======

  So ``ssim`` lost its fast path (always exact) and the CLI and the pages search every
  distance exactly.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from galaxy_core.data import load_dataset
from galaxy_core.metrics.ssim import ssim_matrix
from galaxy_core.metrics.vetting import nearest_matches


def real_split(data: str, *, resolution: int, n_queries: int, n_refs: int | None, seed: int = 0):
    """Model-range real images: (queries (Q, C, H, W), references (N, C, H, W)), disjoint."""
    ds = load_dataset(data, resolution=resolution, progress=True)
    perm = np.random.default_rng(seed).permutation(len(ds))
    q_idx = np.sort(perm[:n_queries])
    r_idx = np.sort(perm[n_queries : n_queries + n_refs] if n_refs else perm[n_queries:])
    return ds.to_model_range(q_idx), ds.to_model_range(r_idx)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def ssim_ratio(queries: np.ndarray, refs: np.ndarray, *, loop_pairs: int) -> dict:
    """Batched exact SSIM against the per-pair loop: wall-clock and CPU-time ratios per pair.

    The wall-clock ratio is what a user waits; the CPU-time ratio does not depend on how many
    other programs share the cores (the batched side counts the CPU time of all its threads,
    the loop runs on one), so it is the conservative figure on a busy machine.
    """
    from skimage.metrics import structural_similarity

    c0, t0 = _cpu_seconds(), time.perf_counter()
    fast = ssim_matrix(queries, refs)
    t_fast, c_fast = time.perf_counter() - t0, _cpu_seconds() - c0
    per_ref = max(1, loop_pairs // len(queries))
    c0, t0 = _cpu_seconds(), time.perf_counter()
    loop = np.array([[structural_similarity(q, r, data_range=2.0, channel_axis=0) for r in refs[:per_ref]]
                     for q in queries])
    t_loop, c_loop = time.perf_counter() - t0, _cpu_seconds() - c0
    pairs_fast, pairs_loop = fast.size, loop.size
    return {"pairs": pairs_fast, "batched_s": t_fast, "loop_pairs": pairs_loop, "loop_s": t_loop,
            "loop_s_scaled": t_loop / pairs_loop * pairs_fast,
            "ratio": (t_loop / pairs_loop) / (t_fast / pairs_fast),
            "cpu_ratio": (c_loop / pairs_loop) / (c_fast / pairs_fast),
            "load": os.getloadavg()[0],
            "max_abs_diff": float(np.abs(fast[:, :per_ref] - loop).max())}


def agreement(queries: np.ndarray, refs: np.ndarray, *, metrics: list[str], candidates: int) -> list[dict]:
    rows = []
    for metric in metrics:
        t0 = time.perf_counter()
        bi, bd = nearest_matches(queries, refs, metric=metric, method="brute")
        t_brute = time.perf_counter() - t0
        t0 = time.perf_counter()
        fi, fd = nearest_matches(queries, refs, metric=metric, method="fast", candidates=candidates)
        t_fast = time.perf_counter() - t0
        same = (fi[:, 0] == bi[:, 0]) | np.isclose(fd[:, 0], bd[:, 0], rtol=0, atol=1e-12)
        rows.append({"metric": metric, "agreement": float(same.mean()), "fast_s": t_fast, "exact_s": t_brute})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="hdf", choices=["hdf", "sim"])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--refs", type=int, default=None, help="reference images (default: all the rest)")
    p.add_argument("--ssim-ratio", action="store_true")
    p.add_argument("--loop-pairs", type=int, default=1024)
    p.add_argument("--agreement", action="store_true")
    p.add_argument("--metrics", default="l1,mse,ssim")
    p.add_argument("--candidates", type=int, default=64)
    args = p.parse_args()
    q, r = real_split(args.data, resolution=args.resolution, n_queries=args.queries, n_refs=args.refs)
    print(f"{args.data} {args.resolution}px: {len(q)} queries x {len(r)} references, shape {q.shape[1:]}")
    if args.ssim_ratio:
        s = ssim_ratio(q, r, loop_pairs=args.loop_pairs)
        print(f"SSIM batched: {s['pairs']} pairs in {s['batched_s']:.1f} s; per-pair loop: {s['loop_pairs']} pairs "
              f"in {s['loop_s']:.1f} s (scaled to all pairs: {s['loop_s_scaled']:.0f} s); "
              f"ratio {s['ratio']:.1f}x in wall-clock time, {s['cpu_ratio']:.1f}x in CPU time "
              f"(load average {s['load']:.1f}); max |difference| {s['max_abs_diff']:.2e}")
    if args.agreement:
        print(f"{'distance':8s} {'top-1 agreement':>16s} {'fast s':>8s} {'exact s':>8s}  (candidates {args.candidates})")
        for row in agreement(q, r, metrics=args.metrics.split(","), candidates=args.candidates):
            print(f"{row['metric']:8s} {row['agreement']:16.1%} {row['fast_s']:8.2f} {row['exact_s']:8.2f}")


if __name__ == "__main__":
    main()
