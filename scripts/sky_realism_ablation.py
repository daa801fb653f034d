"""Which composer calibration lowers the classifier two-sample test, one at a time.

    python scripts/sky_realism_ablation.py --n 100 [--seed 1000 | --seeds 1000 2000 ... [--workers 2]] [--only NAME ...]
        [--galaxies checkpoints/fastgan_hdf32.json] [--faint-profile moffat|gaussian] [--no-modulation]
        [--feature-groups] [--stamp-neighbours keep|sky] [--random-positions] [--jitter J] [--null]
        [--no-faint-damping]

For each variant (raw galaxies, flux matching, faint sources, sharpening, pixel matching and
their combinations; then, on top of sharpening + pixel matching + faint sources, the
class-matched grids, the field's stars and the sources below the catalogue's detection limit;
the third-last variant is the composer's default, the second-last the default with each cell's
galaxy chosen for its size class (``sky.size_match``), the last the reference with the field's
catalogue grids and real stamps (``--stamp-neighbours sky``: isolated ones) in place of the
generators; every variant on the composer's
background, whose level and noise vary across the sky unless ``--no-modulation``), ``n`` 256 px skies from
``positions_hdf_cond`` are composed with seeds SEED.. and their 128 px tiles compared with
real tiles: the plain 5-fold C2ST against 4n random real tiles (seed SEED + 1) and the grouped
4-fold C2ST against 4n real tiles from 4 column bands (seed SEED + 2)
(:func:`galaxy_core.metrics.realism.classifier_test`; ``±`` = standard deviation over the
folds), plus the three largest standardised feature shifts. Prints one line per variant. The
spread between runs with different ``--seed`` (new skies and new real tiles) is the honest
uncertainty of a figure: for the grouped C2ST of the default at ``--n 100`` its standard
deviation over eight seed sets (1000, 2000, ..., 8000) is 0.027, several times the spread over
the folds of one run. ``--seeds`` runs every variant on each seed set in turn and ends with one
line per variant: the mean of each C2ST over the seed sets ± its standard error. ``--null`` also
scores each variant against one field of its own (the deep field's size, seed SEED + 500000;
:func:`galaxy_core.metrics.realism.one_field_null`): what a perfect generator of that variant
would score with a one-image reference, the floor its grouped figure is read against.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


_SEED_SET_RUNNER = None


def _run_seed_set(seed: int):
    return _SEED_SET_RUNNER(seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="256 px skies per variant")
    ap.add_argument("--positions", default="checkpoints/positions_hdf_cond.json")
    from galaxy_core.sky.pipeline import SkyConfig

    ap.add_argument("--galaxies", default=SkyConfig().galaxies,
                    help="galaxy checkpoint (default: the composer's, %(default)s; figures before fastgan_hdf32_w16 "
                         "became the default were measured with checkpoints/fastgan_hdf32.json)")
    ap.add_argument("--seed", type=int, default=1000, help="skies use seeds SEED.., real tiles SEED+1, SEED+2")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="several seed sets (each as --seed); ends with the mean ± standard error per variant")
    ap.add_argument("--only", nargs="+", help="run only the variants with these names (as printed)")
    ap.add_argument("--workers", type=int, default=1,
                    help="with --seeds: run the seed sets in this many processes (same figures as serially)")
    from galaxy_core.sky.calibrate import FAINT_PROFILES

    ap.add_argument("--faint-profile", default="moffat", choices=FAINT_PROFILES,
                    help="profile of the faint sources (the composer's default: moffat)")
    ap.add_argument("--no-faint-damping", action="store_true",
                    help="faint sources without the measured fine-structure damping (the composer damps them)")
    ap.add_argument("--no-modulation", action="store_true",
                    help="a uniform sky level and noise amplitude (the composer varies both as the field does)")
    ap.add_argument("--stamp-neighbours", default="keep", choices=["keep", "sky"],
                    help="the reference's real stamps as cut, or with their neighbours replaced by sky")
    ap.add_argument("--random-positions", action="store_true",
                    help="random grids at the position model's occupancy and class mix (after the variant's class "
                         "matching) in place of the position model: the paper's first experiment")
    ap.add_argument("--jitter", type=float, default=None,
                    help="sub-cell jitter of the galaxy positions, fraction of a cell (default: the composer's)")
    ap.add_argument("--feature-groups", action="store_true",
                    help="also the grouped C2ST on each feature group alone (power at 1-16, 17-40, 41-64 "
                         "cycles per tile, the intensity histogram) and the spread of the fakes' features")
    ap.add_argument("--null", action="store_true",
                    help="also the grouped C2ST of each variant against ONE field of its own (the deep field's size): "
                         "what a perfect generator of that variant scores with a one-image reference")
    args = ap.parse_args()

    import torch
    from scipy.stats import sem

    from galaxy_core.metrics.realism import (classifier_test, feature_names, feature_shifts, grouped_classifier_test,
                                             image_features, one_field_null, real_hdf_tiles, real_hdf_tiles_grouped,
                                             tile_features)
    from galaxy_core.sky.calibrate import FaintSources, FieldStars
    from galaxy_core.sky.compose import (CatalogueGrids, ClassMatchedGalaxies, ModelGalaxies, ModelPositions,
                                         RandomPositions, StampGalaxies, compose_sky)
    from galaxy_core.sky.pipeline import load_model

    torch.set_num_threads(1)
    n = args.n
    gal = load_model(args.galaxies)
    variants = {  # name: (flux_match, sharpen, pixel_match, faint, match_classes, stars[, size-matched galaxies])
        "raw": (False, False, False, False, False, False),
        "flux_match": (True, False, False, False, False, False),
        "faint": (False, False, False, True, False, False),
        "sharpen": (False, True, False, False, False, False),
        "pixel_match": (False, False, True, False, False, False),
        "sharpen + pixel_match": (False, True, True, False, False, False),
        "sharpen + pixel_match + faint": (False, True, True, True, False, False),
        "sharpen + pixel_match + faint + class-matched grids": (False, True, True, True, True, False),
        "sharpen + pixel_match + faint + stars": (False, True, True, True, False, True),
        "sharpen + pixel_match + faint + class-matched grids + stars": (False, True, True, True, True, True),
        "sharpen + pixel_match + faint + sub-catalogue": (False, True, True, "sub", False, False),
        "sharpen + pixel_match + faint + sub-catalogue + stars": (False, True, True, "sub", False, True),
        "sharpen + pixel_match + faint + sub-catalogue + class-matched grids + stars":
            (False, True, True, "sub", True, True),
        # each cell's galaxy chosen by its measured area among 4 candidates (ClassMatchedGalaxies)
        "sharpen + pixel_match + faint + sub-catalogue + class-matched grids + stars + size-matched galaxies":
            (False, True, True, "sub", True, True, True),
        # the field's own grids and real stamps in place of the two generators, with the default extras
        "reference: catalogue grids + real stamps + faint + sub-catalogue + stars": (None, None, None, "sub", None, True),
    }
    if args.only:
        variants = {k: v for k, v in variants.items() if any(o == k for o in args.only)}
    positions_model = load_model(args.positions)
    names = np.array(feature_names())
    k = np.array([int(f[1:]) if f.startswith("P") else 0 for f in names])
    feature_groups = {"P1-16": (k >= 1) & (k <= 16), "P17-40": (k > 16) & (k <= 40), "P41-64": k > 40,
                      "histogram": np.char.startswith(names, "H")}

    def make_sources(spec) -> tuple:
        """(positions, galaxies, faint, stars) of one variant; built once, so the galaxy source's
        calibrations are measured once for every seed set."""
        fm, sh, pm, fa, mc, st, *sm = spec
        if fm is None:  # the reference
            positions, source = CatalogueGrids(), StampGalaxies(neighbours=args.stamp_neighbours)
        else:
            positions = ModelPositions(positions_model, match_classes=mc)
            if args.random_positions:  # same occupancy and class mix, cells independent (as three_experiments)
                positions = RandomPositions.like([positions(np.random.default_rng(2000 + i)) for i in range(20)])
            source = ModelGalaxies(gal, flux_match=fm, sharpen=sh, pixel_match=pm)
            if sm and sm[0]:
                source = ClassMatchedGalaxies(source)
        faint = FaintSources(subcatalogue=fa == "sub", profile=args.faint_profile,
                             damping=not args.no_faint_damping) if fa else None
        return positions, source, faint, FieldStars() if st else None

    jitter = {} if args.jitter is None else {"jitter": args.jitter}
    sources = {name: make_sources(spec) for name, spec in variants.items()}

    def run_variant(name, *, seed, real, grouped, band) -> tuple[float, float]:
        """Compose ``n`` skies of seed set ``seed`` with one variant, print its line; (C2ST, grouped)."""
        positions, source, faint, stars = sources[name]

        def sky(h, w, s):
            return compose_sky(height=h, width=w, positions=positions, galaxies=source, faint=faint, stars=stars,
                               **jitter, seed=s, modulate=not args.no_modulation).image

        t0 = time.perf_counter()
        fakes = [image_features(sky(256, 256, seed + i)) for i in range(n)]
        fake = np.concatenate(fakes)
        plain = classifier_test(real, fake)
        grp = grouped_classifier_test(grouped, band, fakes)  # real tiles by column band, fakes by sky
        top = ", ".join(f"{s['feature']} {s['d']:+.2f}" for s in feature_shifts(real, fake, top=3))
        tag = f"[{seed}] " if len(seeds) > 1 else ""
        print(f"{tag}{name:52s} C2ST {plain['accuracy']:.3f} ± {plain['accuracy_std']:.3f}  "
              f"grouped {grp['accuracy']:.3f} ± {grp['accuracy_std']:.3f}  {top}  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if args.feature_groups:
            parts = [f"{g} {grouped_classifier_test(grouped[:, m], band, [f[:, m] for f in fakes])['accuracy']:.3f}"
                     for g, m in feature_groups.items()]
            spread = fake.std(axis=0) / np.maximum(grouped.std(axis=0), 1e-12)
            sel = feature_groups["P17-40"] | feature_groups["P41-64"]
            print(f"    grouped C2ST by feature group: {', '.join(parts)}; fakes' spread / real spread of "
                  f"P17-64: median {np.median(spread[sel]):.2f}", flush=True)
        if args.null:
            null = one_field_null(sky, n, seed=seed + 500_000)
            print(f"    one-field null (a perfect generator of this variant): grouped {null['accuracy']:.3f}", flush=True)
        return plain["accuracy"], grp["accuracy"]

    seeds = args.seeds or [args.seed]

    def run_seed_set(seed: int) -> dict[str, tuple[float, float]]:
        """Every variant on one seed set: ``{name: (C2ST, grouped)}``."""
        if len(seeds) > 1:
            print(f"-- seed set {seed}", flush=True)
        real = np.stack([tile_features(t) for t in real_hdf_tiles(4 * n, seed=seed + 1)])
        tiles, band = real_hdf_tiles_grouped(4 * n, seed=seed + 2)
        grouped = np.stack([tile_features(t) for t in tiles])
        return {name: run_variant(name, seed=seed, real=real, grouped=grouped, band=band) for name in variants}

    if args.workers > 1 and len(seeds) > 1:
        # seed sets in worker processes forked after the models are loaded (each measures the
        # calibrations once); the figures are those of a serial run, the printed lines interleave
        import multiprocessing

        global _SEED_SET_RUNNER
        _SEED_SET_RUNNER = run_seed_set  # inherited by the forked workers (a closure cannot be pickled)
        with multiprocessing.get_context("fork").Pool(min(args.workers, len(seeds))) as pool:
            per_seed = pool.map(_run_seed_set, seeds, chunksize=1)
    else:
        per_seed = [run_seed_set(seed) for seed in seeds]
    results = {name: [runs[name] for runs in per_seed] for name in variants}
    if len(seeds) > 1:
        print(f"-- mean ± standard error over {len(seeds)} seed sets ({', '.join(map(str, seeds))})")
        for name, runs in results.items():
            a = np.asarray(runs)
            se = sem(a, axis=0)
            print(f"{name:52s} C2ST {a[:, 0].mean():.3f} ± {se[0]:.3f}  grouped {a[:, 1].mean():.3f} ± {se[1]:.3f}  "
                  f"(grouped per seed set: {' / '.join(f'{g:.3f}' for g in a[:, 1])})", flush=True)


if __name__ == "__main__":
    main()
