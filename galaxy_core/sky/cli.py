"""``galaxygan sky ...``: grids, compose, mosaic, detect, crops, realism-fit, experiments.

Added to the main parser by :func:`_add_sky_commands`; every command calls the public
functions of :mod:`galaxy_core.sky` and :mod:`galaxy_core.metrics.realism`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from galaxy_core.config import positive_arg, seed_arg
from galaxy_core.io.atomic import json_text


def _cmd_grids(args) -> int:
    from galaxy_core.sky.grids import (GridOptions, catalogue_from_image, prepare_catalogue_grids,
                                       prepare_hdf_grids, read_catalogue)

    opts = GridOptions(grid=args.grid, cell_px=args.cell_px, classes=not args.occupancy, thresholds=args.thresholds,
                       count=args.count, seed=args.seed)
    if args.catalogue or args.image:
        if not args.out:
            from galaxy_core.errors import GalaxyGanError

            raise GalaxyGanError("sky grids: --out FOLDER is needed with --catalogue or --image")
        from galaxy_core.errors import DataError

        if args.catalogue:  # the user's own selection: no size cut (the manifest records min_area 0)
            import dataclasses

            opts = dataclasses.replace(opts, min_area=0.0)
            sources, what = read_catalogue(args.catalogue), f"catalogue {args.catalogue}"
        else:
            image, what = _read_image(args.image), f"image {args.image}"  # names the file itself
            try:
                sources = catalogue_from_image(image)
            except DataError as e:
                raise DataError(f"{args.image}: {e}") from e
            if len(sources["x"]) == 0:
                raise DataError(f"{args.image}: no sources found in the image; give an image of a sky with galaxies")
        ds = prepare_catalogue_grids(sources, args.out, opts, source=what, name=args.catalogue or args.image)
    else:
        ds = prepare_hdf_grids(opts, rebuild=args.rebuild)
    m = ds.manifest
    print(f"{m['name']}: {len(ds)} grids of {opts.grid} x {opts.grid} cells ({opts.cell_px} px), "
          f"{m['num_classes']} classes, {m['mean_occupied']:.1f} galaxies per grid; thresholds "
          f"{m['size_thresholds_area']} pix2")
    if m.get("sources_below_min_area"):
        print(f"  {m['sources_below_min_area']} sources smaller than min_area = {opts.min_area:g} pix2 left out "
              "(as the built-in field's grids leave them out)")
    print(f"  folder: {ds.root}")
    return 0


def _read_image(path) -> np.ndarray:
    """A PNG/JPG (grey levels in [0, 1]) or FITS (band sum) image as a 2-D float array.

    Raises
    ------
    DataError
        The file is missing, cannot be read as an image (corrupt, truncated, not an image), or is
        blank (every pixel the same value).
    """
    from galaxy_core.errors import DataError
    from galaxy_core.io.fits import is_fits_path, read_fits_image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file" if not path.exists() else f"{path}: not a file")
    if is_fits_path(path):
        return read_fits_image(path).data.sum(axis=0)
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), float) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's errors for bad files
        raise DataError(f"{path}: cannot read the image ({e}); give a complete PNG, JPG or FITS image") from e
    if grey.size and grey.min() == grey.max():  # a blank FITS band is refused by read_fits_image alike
        raise DataError(f"{path}: blank image (every pixel is {round(grey.min() * 255)}), so there is nothing to "
                        "detect or grid")
    return grey


def _cmd_grid_stats(args) -> int:
    from galaxy_core.sky.compose import ModelPositions
    from galaxy_core.sky.grids import grid_distance, grid_statistics
    from galaxy_core.sky.pipeline import check_checkpoint, load_model

    check_checkpoint(args.checkpoint, option="sky grid-stats CHECKPOINT", kind="a position checkpoint")
    model = load_model(args.checkpoint)
    if model.meta.get("arch") != "positions":
        from galaxy_core.errors import GalaxyGanError

        raise GalaxyGanError(f"sky grid-stats: {args.checkpoint} is a {model.meta.get('arch')!r} model, "
                             "not a position model (arch 'positions')")
    positions = ModelPositions(model, mode=args.mode, match_classes=args.match_classes)
    k = int(model.model_cfg.num_classes)
    if args.data:
        from galaxy_core.data.prepared import open_prepared

        data, what = np.asarray(open_prepared(args.data).images)[:, 0].astype(np.int64), args.data
    else:
        from galaxy_core.sky.grids import catalogue_grids

        data, what = np.asarray(catalogue_grids(classes=k > 2)), "hdf grid catalogue"
    grids = np.stack([positions(np.random.default_rng([args.seed, i])) for i in range(args.n)])
    out = {"model": grid_statistics(grids), "data": grid_statistics(data), "checkpoint": str(args.checkpoint),
           "data_source": what, "mode": args.mode, "match_classes": bool(args.match_classes), "seed": args.seed}
    out["grid_distance"] = grid_distance(out["model"], out["data"])
    rows = [("occupancy", "occupancy"), ("occupancy sd (over grids)", "occupancy_sd")]
    print(f"{'statistic':<36}{'model':>10}{'data':>10}{'independent':>13}")
    for label, key in rows:
        print(f"{label:<36}{out['model'][key]:>10.4f}{out['data'][key]:>10.4f}")
    for c, (fm, fd) in enumerate(zip(out["model"]["class_fractions"], out["data"]["class_fractions"])):
        print(f"{'fraction of cells, class ' + str(c):<36}{fm:>10.4f}{fd:>10.4f}")
    for b in out["model"]["var_over_mean"]:
        print(f"{f'var/mean of counts in {b}x{b} blocks':<36}{out['model']['var_over_mean'][b]:>10.3f}"
              f"{out['data']['var_over_mean'][b]:>10.3f}{out['model']['independent']['var_over_mean']:>13.3f}")
    print(f"{'occupied cells with a neighbour':<36}{out['model']['neighbour_fraction']:>10.3f}"
          f"{out['data']['neighbour_fraction']:>10.3f}{out['model']['independent']['neighbour_fraction']:>13.3f}")
    print(f"{'distance from the data (0 = same)':<36}{out['grid_distance']:>10.3f}")
    print(f"model: {args.n} grids ({args.mode}{', class-matched' if args.match_classes else ''}); "
          f"data: {len(data)} grids of the {what}; independent: cells independent at the model's occupancy")
    if args.out:
        from galaxy_core.io.atomic import atomic_write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, out)
        print(f"written: {args.out}")
    return 0


def _print_sky(sky, cfg, written) -> None:
    cls = np.asarray(sky.truth["cls"]) if len(sky.truth) else np.zeros(0, int)
    n_faint, n_stars = int(np.sum(cls == -1)), int(np.sum(cls == -2))
    faint = f" and {n_faint} faint sources" if n_faint else ""
    stars = f" and {n_stars} stars" if n_stars else ""
    size = f"{sky.image.shape[2]} x {sky.image.shape[1]} px"
    print(f"sky {size}, {int(np.sum(cls >= 0))} galaxies{faint}{stars}, seed {cfg.seed}")
    for p in written:
        print(f"  {p}")


def _cmd_compose(args) -> int:
    from galaxy_core.sky.mosaic import write_sky
    from galaxy_core.sky.pipeline import check_sources, compose, load_sky_config

    cfg = load_sky_config(args.config, {"height": args.size, "width": args.size, "seed": args.seed, "out": args.out,
                                        "positions": args.positions, "galaxies": args.galaxies,
                                        "flux_match": True if args.flux_match else None,
                                        "size_match": True if args.size_match else None})
    # a mistyped source is named as the user gave it: the option, else the config file's key
    check_sources(cfg, options={role: f"--{role}" if getattr(args, role) else f"{args.config}: sky.{role}"
                                for role in ("positions", "galaxies") if getattr(args, role) or args.config})
    from galaxy_core.paths import check_output_stem

    check_output_stem(cfg.out, "out")  # before the work, not after it
    t0 = time.perf_counter()
    sky = compose(cfg, progress=not args.quiet)
    t_compose = time.perf_counter() - t0
    cls = np.asarray(sky.truth["cls"]) if len(sky.truth) else np.zeros(0, int)
    report = {"compose_s": round(t_compose, 2), "n_galaxies": int(np.sum(cls >= 0)), "n_faint": int(np.sum(cls == -1)),
              "n_stars": int(np.sum(cls == -2))}
    # the measurements first: a sky that cannot be measured leaves the earlier files of OUT in place
    if cfg.detect:
        from galaxy_core.sky.detect import detection_report

        report.update(detection_report(sky.image, sky.truth, radius=cfg.radius).summary())
    if cfg.realism:
        from galaxy_core.metrics.realism import load_scorer

        scorer = load_scorer()
        if min(sky.image.shape[1:]) >= scorer.tile:
            report["realism"] = scorer.score(sky.image)
        else:
            report["realism"] = None
            report["realism_note"] = (f"not scored: the sky is smaller than the scorer's {scorer.tile} px tile "
                                      "(realism = false skips it)")
    written = write_sky(sky, cfg.out)
    _print_sky(sky, cfg, written)
    print(json_text(report, indent=2))
    return 0


def _cmd_mosaic(args) -> int:
    from galaxy_core.sky.mosaic import compose_mosaic, write_sky
    from galaxy_core.sky.pipeline import check_checkpoint, load_model

    from galaxy_core.paths import check_output_stem

    check_output_stem(args.out)
    check_checkpoint(args.checkpoint, option="sky mosaic CHECKPOINT", kind="a single-galaxy checkpoint")
    model = load_model(args.checkpoint)
    sky = compose_mosaic(model, height=args.height or args.size, width=args.width or args.size, density=args.density,
                         seed=args.seed, memmap=args.memmap, modulate=not args.no_modulation,
                         progress=not args.quiet, flux=False if args.display_values else None)
    written = write_sky(sky, args.out, png=not args.no_png)
    unit = f"in {sky.meta.get('unit') or 'flux (unit not recorded)'}" if sky.meta.get("display") else "in field units"
    print(f"mosaic {sky.image.shape[2]} x {sky.image.shape[1]} px, {len(sky.truth)} galaxies, bands "
          f"{', '.join(sky.meta['bands'])} {unit}")
    for p in written:
        print(f"  {p}")
    return 0


def _read_truth(path: Path):
    """The ``TRUTH`` table of a composed sky's FITS file, or None when the file has none.

    Its ``x``, ``y``, ``flux`` and ``cls`` columns are found without regard to case (FITS's
    ``X``, ``Y``, ``FLUX``) and returned under those lower-case names.

    Raises
    ------
    DataError
        ``TRUTH`` is not a table, lacks the x, y and flux columns the scores need, or has two
        columns whose names differ only in case where neither is the exact name.
    """
    from astropy.io import fits
    from astropy.table import Table

    from galaxy_core.errors import DataError
    from galaxy_core.io.tables import with_column_names

    try:
        with fits.open(path, memmap=False) as hdul:
            if "TRUTH" not in hdul:
                return None
            hdu = hdul["TRUTH"]
            if not isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                raise DataError(f"{path}: the TRUTH extension is not a table")
            truth = Table(hdu.data) if hdu.data is not None else Table()
    except DataError:
        raise
    except Exception as e:  # astropy raises OSError, ValueError, TypeError... on bad files
        raise DataError(f"{path}: cannot read the TRUTH table ({type(e).__name__}: {e})") from e
    truth = with_column_names(truth, ("x", "y", "flux", "cls"), where=f"{path}: the TRUTH table")
    missing = [c for c in ("x", "y", "flux") if c not in truth.colnames]
    if missing:
        raise DataError(f"{path}: the TRUTH table lacks column(s) {', '.join(missing)}; it has "
                        f"{', '.join(truth.colnames) or 'none'}")
    return truth


def _cmd_detect(args) -> int:
    """Detect on the band sum of a FITS sky; score against its ``TRUTH`` table when it has one.

    A file without ``TRUTH`` (any FITS image) is still detected: the report then holds the
    detection count only, and a note on stderr says why completeness and purity are missing.

    Raises
    ------
    DataError
        Missing file, not FITS, no image data, or an unusable ``TRUTH`` table.
    """
    import sys

    from galaxy_core.errors import DataError
    from galaxy_core.io.fits import read_fits_image
    from galaxy_core.sky.detect import detect, detection_report

    path = Path(args.fits)
    if not path.is_file():
        raise DataError(f"{path}: no such FITS file" if not path.exists() else f"{path}: not a file")
    image = np.asarray(read_fits_image(path).data, float)
    truth = _read_truth(path)
    try:
        if truth is None:
            det = detect(image.sum(axis=0), nsigma=args.nsigma)
            print(f"galaxygan: note: {path} has no TRUTH table; completeness and purity need the truth of a "
                  "composed sky (galaxygan sky compose), so only the detections are counted", file=sys.stderr)
            print(json_text({"n_detected": int(len(det["x"])), "nsigma": args.nsigma}, indent=2))
            return 0
        summary = detection_report(image, truth, radius=args.radius, nsigma=args.nsigma).summary()
    except DataError as e:
        raise DataError(f"{path}: {e}") from e
    print(json_text(summary, indent=2))
    return 0


def _cmd_crops(args) -> int:
    from galaxy_core.sky.experiments import write_field_crops

    paths = write_field_crops(args.out, n=args.n, size=args.size, seed=args.seed)
    print(f"{len(paths)} crops of {args.size} px of the deep field in {args.out}")
    return 0


def _cmd_realism_fit(args) -> int:
    from galaxy_core.paths import check_output_stem
    from galaxy_core.sky.experiments import fit_default_scorer

    check_output_stem(args.out)
    t0 = time.perf_counter()
    scorer = fit_default_scorer(n_real=args.n_real, n_skies=args.n_skies, seed=args.seed)
    path = scorer.save(args.out)
    c = scorer.meta["c2st"]
    print(f"{path}: classifier test accuracy {c['accuracy']:.3f} +- {c['accuracy_std']:.3f} "
          f"({c['n_real']} real vs {c['n_fake']} baseline tiles, {c['folds']}-fold), {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_experiments(args) -> int:
    from galaxy_core.metrics.realism import load_scorer
    from galaxy_core.sky.experiments import realism_table, three_experiments
    from galaxy_core.errors import CheckpointError, GalaxyGanError
    from galaxy_core.sky.pipeline import check_checkpoint, load_model

    def model(value: str, option: str, kind: str):  # a mistyped name is reported with its option
        check_checkpoint(value, option=option, kind=kind)
        return load_model(value)

    try:
        scorer = load_scorer(args.scorer)
    except CheckpointError as e:
        if not args.scorer:
            raise
        raise CheckpointError(f"--scorer {args.scorer!r}: {e}") from e
    if args.size < scorer.tile:  # before any row is computed
        raise GalaxyGanError(f"--size {args.size}: a sky must hold at least one {scorer.tile} px tile of the scorer")
    for option, value in (("--n", args.n), ("--n-exp", args.n_exp)):
        if value < 2:
            raise GalaxyGanError(f"{option} {value}: need at least 2 images for a cross-validated classifier test")
    models = {}
    for name, pos, gal in (("unconditional", args.positions_uncond, args.galaxies_uncond),
                           ("conditional", args.positions_cond, args.galaxies_cond)):
        if pos and gal:
            suffix = "uncond" if name == "unconditional" else "cond"
            models[name] = (model(pos, f"--positions-{suffix}", "a position checkpoint"),
                            model(gal, f"--galaxies-{suffix}", "a galaxy checkpoint"))
    for item in args.also or []:
        name, _, pair = item.partition("=")
        pos, _, gal = pair.partition(",")
        if not (name and pos and gal):
            raise GalaxyGanError(f"sky experiments --also {item!r}: expected NAME=POSITIONS.json,GALAXIES.json")
        models[name] = (model(pos, f"--also {item!r}: positions", "a position checkpoint"),
                        model(gal, f"--also {item!r}: galaxies", "a galaxy checkpoint"))
    e2e = None
    if args.end_to_end and args.end_to_end != "none":
        check_checkpoint(args.end_to_end, option="--end-to-end", names=("none",), kind="an end-to-end sky checkpoint")
        e2e = load_model(args.end_to_end)
    t0 = time.perf_counter()
    out = {"table": {} if args.experiments_only else realism_table(
        scorer, models=models, n=args.n, size=args.size, end_to_end=e2e, flux_match=args.flux_match,
        matched_rows=args.flux_matched_rows, calibrated_rows=args.calibrated_rows,
        reference_rows=args.reference_rows, progress=not args.quiet)}
    generated = {k: v for k, v in out["table"].items() if not k.startswith(("real", "baseline", "reference"))}
    if generated:  # the generated set the classifier two-sample test finds hardest to tell from real
        best = min(generated, key=lambda k: generated[k]["c2st_accuracy"])
        out["best"] = {"set": best, "c2st_accuracy": generated[best]["c2st_accuracy"],
                       "c2st_grouped": generated[best].get("c2st_grouped"), "realism_mean": generated[best]["mean"]}
    if "conditional" in models:
        gal = (model(args.experiment_galaxies, "--experiment-galaxies", "a galaxy checkpoint")
               if args.experiment_galaxies else models["conditional"][1])
        out["experiments"] = three_experiments(scorer, positions=models["conditional"][0], galaxies=gal,
                                               n=args.n_exp, size=args.size, flux_match=args.flux_match,
                                               calibrated=args.experiments_calibrated)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{'set':<32}{'realism mean':>14}{'std':>8}{'n':>6}{'C2ST acc':>10}{'grouped':>9}")
    for name, r in out["table"].items():
        acc = "" if r["c2st_accuracy"] is None else f"{r['c2st_accuracy']:.3f}"
        grp = "" if r.get("c2st_grouped") is None else f"{r['c2st_grouped']:.3f}"
        print(f"{name:<32}{r['mean']:>14.3f}{r['std']:>8.3f}{r['n']:>6}{acc:>10}{grp:>9}")
    if "best" in out:
        print(f"best generated set (lowest C2ST accuracy): {out['best']['set']} {out['best']['c2st_accuracy']:.3f}")
    for name, r in out.get("experiments", {}).items():
        if isinstance(r, dict):
            print(f"{name:<30}{r['mean']:.3f} +- {r['std']:.3f} (n={r['n']})  C2ST {r['c2st_accuracy']:.3f}"
                  f"  grouped {r['c2st_grouped']:.3f}")
    if args.out:
        from galaxy_core.io.atomic import atomic_write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, out)
        print(f"written: {args.out}")
    return 0


def _add_sky_commands(sub) -> None:
    """Add the ``sky`` command group to the ``galaxygan`` sub-parsers."""
    sky = sub.add_parser("sky", help="two-stage sparse skies: grids, compose, mosaic, detect, realism")
    ss = sky.add_subparsers(dest="sky_command", required=True)

    g = ss.add_parser("grids", help="build a grid dataset for the position model")
    g.add_argument("--occupancy", action="store_true", help="2 classes (empty/galaxy) instead of 4 size classes")
    g.add_argument("--catalogue", help="CSV or FITS table with x, y and size (or area) columns")
    g.add_argument("--image", help="an image (PNG/JPG/FITS) to segment into a catalogue")
    g.add_argument("--out", help="output folder (required with --catalogue or --image)")
    g.add_argument("--grid", type=positive_arg(int), default=32,
                   help="cells per side of each grid, G (the position model's resolution; default %(default)s)")
    g.add_argument("--cell-px", type=positive_arg(int), default=16,
                   help="side of a cell in sky pixels; a grid covers a tile of G x cell-px pixels "
                        "(default %(default)s)")
    g.add_argument("--count", type=positive_arg(int), default=4096,
                   help="number of grids, each of a tile at a random offset and symmetry (default %(default)s)")
    g.add_argument("--thresholds", choices=["terciles", "heuristic"], default="terciles",
                   help="size classes: terciles of the catalogue's sizes (equal thirds) or fixed area "
                        "thresholds (default %(default)s)")
    g.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the tiles' offsets and symmetries (default %(default)s)")
    g.add_argument("--rebuild", action="store_true",
                   help="the built-in field's grids: build them again even when cached")
    g.set_defaults(func=_cmd_grids)

    gs = ss.add_parser("grid-stats", help="a position model's grids against its data: occupancy, class "
                       "fractions, counts-in-cells clustering")
    gs.add_argument("checkpoint", help="position model checkpoint (.json)")
    gs.add_argument("--n", type=positive_arg(int), default=256, help="grids drawn from the model")
    gs.add_argument("--seed", type=seed_arg, default=0, help="seed of the model's grids (default %(default)s)")
    gs.add_argument("--mode", choices=["sample", "argmax"], default="sample",
                    help="class per cell drawn (the composer's default) or most likely")
    gs.add_argument("--match-classes", action="store_true", help="thin the grids to the data's class fractions "
                    "as the composer does by default")
    gs.add_argument("--data", help="a prepared grid dataset folder (default: the hdf grid catalogue)")
    gs.add_argument("--out", help="write the statistics as JSON")
    gs.set_defaults(func=_cmd_grid_stats)

    c = ss.add_parser("compose", help="compose a sky from a position model and a galaxy model (or a baseline)")
    c.add_argument("--config", help="TOML file with a [sky] table (default: configs/sky_default.toml values)")
    c.add_argument("--size", type=int, help="square sky side in pixels (overrides height and width)")
    c.add_argument("--seed", type=seed_arg, help="seed of the sky (default: the config's, 0 in sky_default.toml)")
    c.add_argument("--positions", help="position checkpoint, random, baseline1 or baseline2")
    c.add_argument("--galaxies", help="galaxy checkpoint or stamps")
    c.add_argument("--flux-match", action="store_true",
                   help="map the model galaxies' fluxes onto the real stamps' flux distribution")
    c.add_argument("--size-match", action="store_true",
                   help="give each cell a galaxy of its size class, chosen by measured area among 4 candidates")
    c.add_argument("--out", help="output stem (writes .png, .fits, .csv)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_compose)

    m = ss.add_parser("mosaic", help="wide mosaic from any single-galaxy checkpoint")
    m.add_argument("checkpoint", help="single-galaxy checkpoint (NAME.json, or a shipped checkpoint's name)")
    m.add_argument("--size", type=int, default=2000,
                   help="side of a square mosaic in pixels (default %(default)s)")
    m.add_argument("--height", type=positive_arg(int), help="height in pixels (default: --size)")
    m.add_argument("--width", type=positive_arg(int), help="width in pixels (default: --size)")
    m.add_argument("--density", type=float, default=4.9e-4, help="galaxies per pixel")
    m.add_argument("--seed", type=seed_arg, default=0, help="seed of the galaxies and the sky (default %(default)s)")
    m.add_argument("--memmap", help=".npy file to hold the sky (for the largest mosaics)")
    m.add_argument("--no-modulation", action="store_true",
                   help="the same sky level and noise everywhere (default: they vary as the deep field's do; "
                        "display-value mosaics only)")
    m.add_argument("--display-values", action="store_true",
                   help="compose a flux-calibrated model's galaxies as display values on the deep field's "
                        "background (default for such a model: linear flux in its own bands and unit)")
    m.add_argument("--no-png", action="store_true", help="write the FITS and CSV only")
    m.add_argument("--out", required=True, help="output stem (writes .png, .fits, .csv)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=_cmd_mosaic)

    d = ss.add_parser("detect", help="detect galaxies in a composed FITS sky; completeness and purity")
    d.add_argument("fits", help="FITS sky; scored against its TRUTH table where it has one (galaxygan sky compose)")
    d.add_argument("--radius", type=positive_arg(float), default=5.0,
                   help="largest distance in pixels between a true galaxy and the detection matched to it "
                        "(default %(default)s)")
    d.add_argument("--nsigma", type=positive_arg(float), default=2.0,
                   help="detection threshold in background standard deviations, on the band sum smoothed by a "
                        "2 px FWHM Gaussian (default %(default)s)")
    d.set_defaults(func=_cmd_detect)

    cr = ss.add_parser("crops", help="random crops of the deep field (training data of the end-to-end GAN)")
    cr.add_argument("--out", default="data/sky_e2e128_crops",
                    help="folder for the crops, written as crop_00000.png ... (default %(default)s)")
    cr.add_argument("--n", type=positive_arg(int), default=1500, help="number of crops (default %(default)s)")
    cr.add_argument("--size", type=positive_arg(int), default=128,
                    help="side of each crop in pixels (default %(default)s)")
    cr.add_argument("--seed", type=seed_arg, default=7,
                    help="seed of the crops' positions, turns and flips (default %(default)s)")
    cr.set_defaults(func=_cmd_crops)

    r = ss.add_parser("realism-fit", help="fit the power-spectrum realism scorer (real hdf vs baselines)")
    r.add_argument("--out", default="checkpoints/realism_hdf",
                   help="output stem: writes OUT.json and OUT.npz (default %(default)s, from the working folder; "
                        "run from the project folder it replaces the shipped scorer the sky commands use)")
    r.add_argument("--n-real", type=int, default=1600,
                   help="real 128 px tiles of the field's left 700 columns (default %(default)s)")
    r.add_argument("--n-skies", type=int, default=50,
                   help="512 px skies of each of the two baselines, 16 tiles each (default %(default)s)")
    r.add_argument("--seed", type=seed_arg, default=0,
                   help="seed of the real tiles and of the first baseline sky (default %(default)s)")
    r.set_defaults(func=_cmd_realism_fit)

    what = ("realism table (real, baselines, models) and the three experiments of the ETH Zurich two-stage GAN "
            "paper \"Generative models for sparse cosmological images\"")
    e = ss.add_parser("experiments", help=what, description=what[0].upper() + what[1:] + ".")
    e.add_argument("--n", type=positive_arg(int), default=100, help="images per row of the table")
    e.add_argument("--n-exp", type=positive_arg(int), default=50, help="images per experiment")
    e.add_argument("--size", type=positive_arg(int), default=256,
                   help="side of each sky in pixels, scored as the mean over its 128 px tiles (default %(default)s)")
    e.add_argument("--scorer", help="scorer JSON (default: checkpoints/realism_hdf.json)")
    e.add_argument("--positions-uncond", default="checkpoints/positions_hdf_uncond.json",
                   help="position checkpoint of the unconditional two-stage row (default %(default)s)")
    e.add_argument("--galaxies-uncond", default="checkpoints/began_hdf32.json",
                   help="galaxy checkpoint of the unconditional two-stage row (default %(default)s)")
    e.add_argument("--positions-cond", default="checkpoints/positions_hdf_cond.json",
                   help="size-class position checkpoint of the conditional row and the three experiments "
                        "(default %(default)s)")
    e.add_argument("--galaxies-cond", default="checkpoints/began_cond_hdf32.json",
                   help="size-conditional galaxy checkpoint of the conditional row (default %(default)s)")
    e.add_argument("--end-to-end", default="checkpoints/sky_e2e_dcgan128.json",
                   help="end-to-end GAN of whole sky tiles for its row ('none' to leave it out)")
    e.add_argument("--flux-match", action="store_true",
                   help="model galaxies with their fluxes mapped onto the real stamps' flux distribution")
    e.add_argument("--experiments-only", action="store_true", help="only the three experiments (no table)")
    e.add_argument("--flux-matched-rows", action="store_true",
                   help="also a flux-matched row for every model pair")
    e.add_argument("--calibrated-rows", action="store_true",
                   help="also a row per model pair with the composer's default calibrations (sharpened, "
                        "pixel-matched galaxies, class-matched grids, faint and sub-catalogue sources, stars)")
    e.add_argument("--reference-rows", action="store_true",
                   help="also the composer with the field's catalogue grids and real stamps in place of the two "
                        "generators (a reference for the composition under this scorer)")
    e.add_argument("--experiment-galaxies", help="galaxy checkpoint for the three experiments (default: --galaxies-cond)")
    e.add_argument("--experiments-calibrated", action="store_true",
                   help="compose the three experiments' skies as the composer does by default (calibrated galaxies, "
                        "class-matched grids, faint and sub-catalogue sources, stars)")
    e.add_argument("--also", action="append", metavar="NAME=POSITIONS,GALAXIES",
                   help="another row of the table (repeatable)")
    e.add_argument("--out", help="write the results as JSON")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_experiments)
