"""The realism experiments of the two-stage sparse-sky paper, with the power-spectrum scorer.

* :func:`realism_table` (the paper's Table II): realism score, mean and standard deviation
  over ``n`` images each, of real deep-field crops, baseline 1, baseline 2, the unconditional
  two-stage model (occupancy positions + unconditional BEGAN) and the conditional one
  (size-class positions + size-conditional BEGAN); plus the classifier two-sample test
  accuracy of each set of tiles against real tiles.
* :func:`three_experiments`: (1) position model vs random positions (same occupancy and
  galaxies); (2) fixed positions with 50 galaxy sets; (3) fixed positions with the same
  galaxies shuffled among the cells 50 times; each set with its realism scores and its
  classifier two-sample tests, with the model's own galaxies or as the composer composes
  by default (``calibrated``).

An image is a ``size`` x ``size`` sky (default 256) scored as the mean over its 128 px tiles.
"""

from __future__ import annotations

import numpy as np

from galaxy_core.metrics.realism import (RealismScorer, classifier_test, feature_shifts, grouped_classifier_test,
                                        image_features, real_hdf_tiles, real_hdf_tiles_grouped, real_vs_real_grouped,
                                        tile_features)
from galaxy_core.sky.calibrate import FaintSources, FieldStars
from galaxy_core.sky.compose import (CatalogueGrids, FixedPositions, ModelGalaxies, ModelPositions, RandomPositions,
                                     StampGalaxies, compose_sky)


FIELD_WIDTH = 1000  # columns of the hdf field


def _summary(scores: list[float]) -> dict:
    a = np.asarray(scores, float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": int(len(a))}


def real_images(n: int, *, size: int = 256, seed: int = 100, columns: tuple[int, int] | None = None
                ) -> list[np.ndarray]:
    """``n`` random (3, size, size) crops of the deep field (field units), each turned/flipped;
    ``columns`` = (x0, x1) restricts them to that band of field columns."""
    from galaxy_core.data.hdf import hdf_field

    field = np.moveaxis(hdf_field().astype(np.float32) / 255.0, -1, 0)
    if columns is not None:
        field = field[:, :, columns[0] : columns[1]]
    rng = np.random.default_rng(seed)
    _, h, w = field.shape
    out = []
    for _ in range(n):
        y, x, k = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1), int(rng.integers(0, 8))
        c = np.rot90(field[:, y : y + size, x : x + size], k % 4, axes=(1, 2))
        out.append(np.ascontiguousarray(c[:, :, ::-1] if k >= 4 else c))
    return out


class ShuffledGalaxies:
    """One fixed set of galaxies, handed out in a new random order on every call."""

    def __init__(self, stamps: np.ndarray):
        self.stamps = stamps

    def __call__(self, cls, rng):
        return self.stamps[rng.permutation(len(self.stamps))[: len(cls)]]


REFERENCE = "reference: catalogue grids + real stamps"
GROUPS = 4  # column bands of the field / image groups of the grouped classifier test


def _score_set(scorer: RealismScorer, images, real_feats, grouped=None) -> dict:
    feats = [image_features(im) for im in images]
    scores = [float(scorer.tile_scores(f).mean()) for f in feats]
    out = _summary(scores)
    out["c2st_accuracy"] = classifier_test(real_feats, np.concatenate(feats))["accuracy"] if real_feats is not None else None
    if grouped is not None:  # real tiles by column band, the set's tiles by image: no overlap across folds
        out["c2st_grouped"] = grouped_classifier_test(grouped[0], grouped[1], feats, folds=GROUPS)["accuracy"]
    if real_feats is not None:  # what tells the set from real tiles (standardised mean shifts, KS)
        out["top_shifts"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()}
                             for f in feature_shifts(real_feats, np.concatenate(feats), top=5)]
    return out


def end_to_end_images(model, n: int, *, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` (3, size, size) skies from an end-to-end GAN (a checkpoint that draws whole sky
    tiles of ``R`` px, ``size`` a multiple of ``R``): independent samples side by side, in
    field units (model range [-1, 1] -> [0, 1], as the 8-bit field / 255)."""
    import torch

    r = int(model.resolution)
    if size % r:
        raise ValueError(f"end_to_end_images: size {size} is not a multiple of the model's {r} px")
    m = size // r
    g = torch.Generator().manual_seed(seed)
    z = model.family.sample_latents(model.model_cfg, n * m * m, generator=g)
    x = (np.asarray(model.generate(z), np.float32) + 1) / 2  # (n m m, 3, r, r)
    x = x.reshape(n, m, m, 3, r, r).transpose(0, 3, 1, 4, 2, 5).reshape(n, 3, size, size)
    return list(x)


def _real_references(n: int, seed: int) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The real tiles a set of ``n`` skies is tested against: features of ``4 n`` random tiles
    of the field (seed ``seed + 1``; the plain test) and of ``4 n`` tiles from its column bands
    with their band (seed ``seed + 2``; the grouped test)."""
    real_feats = np.stack([tile_features(t) for t in real_hdf_tiles(4 * n, seed=seed + 1)])
    g_tiles, g_band = real_hdf_tiles_grouped(4 * n, seed=seed + 2, bands=GROUPS)
    return real_feats, (np.stack([tile_features(t) for t in g_tiles]), g_band)


def _model_sources(positions, galaxies, *, calibrated: bool, flux_match: bool = False, class_mix=None
                   ) -> tuple[ModelPositions, ModelGalaxies, dict]:
    """Position source, galaxy source and the extra sources (``compose_sky`` keywords) of a
    model pair: the models' own output, or, ``calibrated``, as the composer composes by
    default (galaxies sharpened and pixel-matched, grids thinned to the data's class
    fractions, faint and sub-catalogue sources, the field's stars)."""
    ps = ModelPositions(positions, class_mix=class_mix, match_classes=calibrated)
    gs = ModelGalaxies(galaxies, flux_match=flux_match, sharpen=calibrated, pixel_match=calibrated)
    extras = {"faint": FaintSources(subcatalogue=True), "stars": FieldStars()} if calibrated else {}
    return ps, gs, extras


def realism_table(scorer: RealismScorer, *, models: dict, n: int = 100, size: int = 256, cell_px: int | None = None,
                  seed: int = 1000, end_to_end=None, flux_match: bool = False, matched_rows: bool = False,
                  calibrated_rows: bool = False, reference_rows: bool = False, progress: bool = True) -> dict:
    """Realism table (see module docstring).

    Parameters
    ----------
    models : dict
        ``{"unconditional": (positions_model, galaxy_model), "conditional": (...)}``
        (:class:`~galaxy_core.models.pretrained.Pretrained`); missing entries are skipped.
    end_to_end : Pretrained, optional
        An end-to-end GAN of whole sky tiles (:func:`end_to_end_images`): row "end-to-end GAN".
    flux_match : bool
        Model galaxies with their fluxes mapped onto the real stamps' (:class:`ModelGalaxies`).
    matched_rows : bool
        Without ``flux_match``: also a row "NAME, flux-matched" per model pair with the mapping.
    calibrated_rows : bool
        Also a row "NAME, calibrated" per model pair: galaxies sharpened and pixel-matched to
        the real stamps, grids thinned to the data's class fractions, plus the faint and
        sub-catalogue sources and the field's stars (:mod:`galaxy_core.sky.calibrate`; the
        composer's default).
    reference_rows : bool
        Also the composer with real parts in place of the two generators, a reference for
        the two-stage composition under this scorer (not a clean ceiling: a real stamp brings
        the field's noise inside its mask on top of the composed background): "reference:
        catalogue grids + real stamps"
        (grids of the field's catalogue, :class:`CatalogueGrids`; real 32 px stamps of the
        cell's size class, :class:`StampGalaxies`) and the same ", with faint sources and
        stars" (the composer's default extra sources).
    n : int
        Images per row.

    Returns
    -------
    dict
        Row name -> ``{"mean", "std", "n", "c2st_accuracy", "c2st_grouped"}``; the classifier
        test compares the row's tiles with an independent set of real tiles (real crops use
        other seeds); ``c2st_grouped`` is the leakage-free version: real tiles from 4 column
        bands of the field, grouped 4-fold cross-validation by band and by image
        (:func:`~galaxy_core.metrics.realism.classifier_test` with ``groups``); for the row
        "real" it is the field against itself, column-band pairs against column-band pairs
        (:func:`~galaxy_core.metrics.realism.real_vs_real_grouped`), what a perfect generator
        would score.
    """
    from tqdm.auto import tqdm

    from galaxy_core.sky.baselines import baseline_geometric, baseline_uniform

    real_feats, grouped = _real_references(n, seed)
    rows = {}
    variants = [(flux_match, False, "")]
    variants += [(True, False, ", flux-matched")] if matched_rows and not flux_match else []
    variants += [(flux_match, True, ", calibrated")] if calibrated_rows else []
    bar = tqdm(total=4 + len(models) * len(variants) + (end_to_end is not None) + 2 * reference_rows,
               desc="realism table", disable=not progress)
    # the real crops overlap the grouped test's real tiles, so that test would mean nothing for them;
    # the field against itself, band pairs against band pairs, is what a perfect generator would get
    rows["real"] = _score_set(scorer, real_images(n, size=size, seed=seed), real_feats)
    rows["real"]["c2st_grouped"] = real_vs_real_grouped(8 * n, seed=seed + 3)["accuracy"]
    held = scorer.meta.get("real_columns")
    if held is not None and FIELD_WIDTH - held[1] >= size:  # columns the scorer never saw
        rows["real (held-out columns)"] = _score_set(
            scorer, real_images(n, size=size, seed=seed, columns=(held[1], FIELD_WIDTH)), real_feats, grouped)
    bar.update()
    rows["baseline 1"] = _score_set(scorer, [baseline_uniform(height=size, width=size, seed=seed + i).image
                                             for i in range(n)], real_feats, grouped)
    bar.update()
    rows["baseline 2"] = _score_set(scorer, [baseline_geometric(height=size, width=size, seed=seed + i).image
                                             for i in range(n)], real_feats, grouped)
    bar.update()
    if end_to_end is not None:
        rows["end-to-end GAN"] = _score_set(scorer, end_to_end_images(end_to_end, n, size=size, seed=seed), real_feats,
                                            grouped)
        bar.update()
    for name, (pos, gal) in models.items():
        mix = (1.0, 1.0, 1.0) if pos.model_cfg.num_classes == 2 else None
        for match, calibrated, suffix in variants:
            ps, gs, extras = _model_sources(pos, gal, calibrated=calibrated, flux_match=match, class_mix=mix)
            skies = [compose_sky(height=size, width=size, positions=ps, galaxies=gs, cell_px=cell_px, seed=seed + i,
                                 **extras).image for i in range(n)]
            rows[name + suffix] = _score_set(scorer, skies, real_feats, grouped)
            bar.update()
    if reference_rows:
        ps, gs = CatalogueGrids(), StampGalaxies()
        for suffix, extra in (("", False), (", with faint sources and stars", True)):
            faint, stars = (FaintSources(subcatalogue=True), FieldStars()) if extra else (None, None)
            skies = [compose_sky(height=size, width=size, positions=ps, galaxies=gs, cell_px=cell_px, faint=faint,
                                 stars=stars, seed=seed + i).image for i in range(n)]
            rows[REFERENCE + suffix] = _score_set(scorer, skies, real_feats, grouped)
            bar.update()
    bar.close()
    return rows


def three_experiments(scorer: RealismScorer, *, positions, galaxies, n: int = 50, size: int = 256,
                      cell_px: int | None = None, seed: int = 2000, flux_match: bool = False,
                      calibrated: bool = False) -> dict:
    """The paper's three experiments with the conditional two-stage model.

    (1) The position model's grids against random grids of the same occupancy and class mix,
    both with the same galaxy model; (2) one fixed grid (the first generated one) with ``n``
    different galaxy sets; (3) the same grid with one galaxy set shuffled among its cells
    ``n`` times. Each set of ``n`` skies is scored like a row of :func:`realism_table`.

    Parameters
    ----------
    positions, galaxies : Pretrained
        Position model and galaxy model.
    n : int
        Skies per experiment set.
    calibrated : bool
        Compose every set as the composer does by default: galaxies sharpened and
        pixel-matched, grids thinned to the data's class fractions, faint and sub-catalogue
        sources and the field's stars (:mod:`galaxy_core.sky.calibrate`). Without it the
        galaxies are the model's own (``flux_match`` optional) on the background alone.
    seed : int
        Skies use seeds ``seed``..; the classifier tests' real tiles ``seed + 1``, ``seed + 2``.

    Returns
    -------
    dict
        ``occupancy`` (of the position model's grids, after any thinning), ``calibrated``, and
        ``position_model``, ``random_positions`` (experiment 1), ``fixed_positions_galaxy_sets``
        (2), ``fixed_positions_shuffled`` (3): each ``{"mean", "std", "n"}`` of realism scores
        plus ``c2st_accuracy``, ``c2st_grouped`` and ``top_shifts`` of its tiles against real
        tiles, as in :func:`realism_table`. The grouped test is the one to compare sets by: the
        realism score of calibrated skies is near 1 for every set.
    """
    ps, gs, extras = _model_sources(positions, galaxies, calibrated=calibrated, flux_match=flux_match)
    grids = [ps(np.random.default_rng(seed + i)) for i in range(20)]
    rand = RandomPositions.like(grids)
    real_feats, grouped = _real_references(n, seed)

    def scores(pos, gal, seeds):
        skies = [compose_sky(height=size, width=size, positions=pos, galaxies=gal, cell_px=cell_px, seed=s,
                             **extras).image for s in seeds]
        return _score_set(scorer, skies, real_feats, grouped)

    out = {"occupancy": rand.p, "calibrated": bool(calibrated),
           "position_model": scores(ps, gs, range(seed, seed + n)),
           "random_positions": scores(rand, gs, range(seed, seed + n))}
    fixed = FixedPositions(grids[0])
    out["fixed_positions_galaxy_sets"] = scores(fixed, gs, range(seed + n, seed + 2 * n))
    cells = grids[0][grids[0] > 0]
    stamps = gs(cells, np.random.default_rng(seed))
    out["fixed_positions_shuffled"] = scores(fixed, ShuffledGalaxies(stamps), range(seed + 2 * n, seed + 3 * n))
    return out


def fit_default_scorer(*, n_real: int = 1600, n_skies: int = 50, seed: int = 0,
                       real_columns: tuple[int, int] | None = (0, 700)) -> RealismScorer:
    """The shipped scorer: real deep-field tiles vs tiles of baseline-1 and baseline-2 skies.

    ``n_real`` random 128 px real tiles from field columns ``real_columns`` (default the left
    700, so crops of the right 300 columns are a held-out real set); ``n_skies`` 512 px skies
    of each baseline (16 tiles each). The classifier two-sample test accuracy (5-fold) is
    stored in the meta.
    """
    from galaxy_core.sky.baselines import baseline_geometric, baseline_uniform

    x_real = np.stack([tile_features(t) for t in real_hdf_tiles(n_real, seed=seed, columns=real_columns)])
    fakes = [image_features(baseline_uniform(height=512, width=512, seed=seed + i).image) for i in range(n_skies)]
    fakes += [image_features(baseline_geometric(height=512, width=512, seed=seed + i).image) for i in range(n_skies)]
    x_fake = np.concatenate(fakes)
    test = classifier_test(x_real, x_fake)
    from galaxy_core.metrics.realism import TILE, train_scorer

    meta = {"tile": TILE, "real_columns": list(real_columns) if real_columns else None,
            "real": f"{n_real} random {TILE} px tiles of the hdf field, columns {real_columns} (seed {seed})",
            "fake": f"{16 * n_skies} tiles each of baseline-1 and baseline-2 512 px skies (seeds {seed}..{seed + n_skies - 1})",
            "c2st": test}
    return train_scorer(x_real, x_fake, meta=meta)


def write_field_crops(out, *, n: int = 1500, size: int = 128, seed: int = 7) -> list:
    """Write ``n`` random ``size`` px crops of the deep field (each turned/flipped, as
    :func:`real_images`) as 8-bit PNGs ``OUT/crop_00000.png``...: the training data of the
    end-to-end GAN baseline (a GAN that draws whole sky tiles, no two stages)."""
    from pathlib import Path

    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(real_images(n, size=size, seed=seed)):
        p = out / f"crop_{i:05d}.png"
        Image.fromarray(np.clip(np.rint(np.moveaxis(im, 0, -1) * 255), 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths
