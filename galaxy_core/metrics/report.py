"""``galaxygan evaluate``: every evaluation of a checkpoint against real data, written to a folder.

The steps are those of the app's Evaluation and Memorisation pages
(:mod:`galaxy_core.explore.evaluation`, :mod:`galaxy_core.metrics.memorisation`), so the numbers
agree. Each comparison of generated with
real data comes with its real-vs-real reference (the "floor"): two disjoint real samples of the
same size compared the same way. A generator as good as the data reaches about the floor.

Written files::

    summary.json                 every number, with extractor names and sample sizes; warnings
                                 about small samples; what the memorisation check compared; the
                                 checkpoint's path, id, tensor hash, run and step, the software
                                 and the date (:func:`galaxy_core.explore.sampling.provenance`)
    metrics.csv                  name (metric_extractor_<generated>v<real>), value, real-vs-real floor
    morphology_real.csv, morphology_generated.csv    per-image fast-path measurements
    morphology_<property>.html/.png                  real vs generated histograms
    cmd.csv, cmd.html/.png       colour-magnitude diagram with the acceptance box (g, r data); the
                                 summary reads the box fraction against the real one
    redshift.html/.png           redshift histogram of the training data (when it has redshifts)
    memorisation_<distance>.html/.png  nearest-training-distance histograms of generated,
                                 held-out and training images with the suspect threshold (cosine
                                 of galaxy-encoder features gives the verdict; l1 and ssim are
                                 evidence)
    nearest_matches.png          the closest generated samples beside their nearest training
                                 images (cosine), every tile labelled with name and distance
    nearest_matches.csv          per sample and distance: nearest training images by file name
                                 (or dataset and index) with distances, closest first

The memorisation verdict needs real images that were never trained on (``held_out``; a fresh
simulation for ``sim``); without them the report gives the distances but no verdict.

PNG copies of plots need a Chromium-based browser for Plotly's exporter (kaleido); without one
the HTML files are written and the summary says why the PNGs are missing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from galaxy_core.explore import evaluation as ev
from galaxy_core.io.atomic import atomic_write_json, atomic_write_text
from galaxy_core.io.render import save_png, to_rgb
from galaxy_core.metrics import plots
from galaxy_core.metrics.colour_box import BOX_NSIGMA, read_box_fraction
from galaxy_core.metrics.fid import metric_name, mifid_from_features, precision_recall_density_coverage
from galaxy_core.metrics.memorisation import (
    DEFAULT_DISTANCE,
    DISTANCE_UNITS,
    THRESHOLD_PERCENTILE,
    image_names,
    memorisation_check,
)
from galaxy_core.metrics.memorisation_figures import distance_histogram, labelled_matches
from galaxy_core.metrics.samples import check_sample_size, sample_size_warnings
from galaxy_core.models.pretrained import Pretrained, load_pretrained

log = logging.getLogger(__name__)
Step = Callable[[str], None]


def feature_metrics(real_a, real_b, fake, *, extractor: str) -> dict:
    """FID/KID/PRDC/MiFID of ``fake`` against ``real_a``, and the floor ``real_b`` against ``real_a``.

    Parameters
    ----------
    real_a, real_b : ndarray, (M, C, H, W), float32, model range
        Two disjoint real samples.
    fake : ndarray, (N, C, H, W), float32, model range
        Generated samples.
    extractor : str
        Feature extractor name.

    Returns
    -------
    dict
        ``generated`` and ``floor`` (metric name -> value, names from
        :func:`galaxy_core.metrics.fid.metric_name`, the same for both so they line up),
        ``names`` (kind -> name: ``fid``, ``kid``, ``kid_std``, ``mifid``, ``precision``, ...),
        ``extractor``, ``extractor_description`` and ``fid_ratio_to_floor``.
    """
    fn = ev.load_feature_fn(extractor)
    fa, fb, ff = (ev.extract_features(x, fn=fn) for x in (real_a, real_b, fake))
    n, m = len(ff), len(fa)
    names = {kind: metric_name(kind, extractor=extractor, n=n, n_real=m)
             for kind in ("fid", "kid", "mifid", "precision", "recall", "density", "coverage")}
    names["kid_std"] = metric_name("kid", extractor=extractor, n=n, n_real=m, suffix="std")
    generated, floor = {}, {}
    for out, other in ((generated, ff), (floor, fb)):
        # the floor compares two real samples of the same size, so it is named like the generated value
        out.update(zip((names["fid"], names["kid"], names["kid_std"]),
                       ev.feature_distances(fa, other, extractor=extractor).values()))
        out[names["mifid"]] = mifid_from_features(fa, other)
        prdc = precision_recall_density_coverage(fa, other, k=min(5, m - 1))
        out.update({names[key]: value for key, value in prdc.items()})
    fid_floor = floor[names["fid"]]
    return {"extractor": extractor, "extractor_description": ev.describe_extractor(extractor), "names": names,
            "generated": generated, "floor": floor,
            "fid_ratio_to_floor": generated[names["fid"]] / fid_floor if fid_floor > 0 else float("inf")}


def morphology_section(lin_a, lin_b, lin_fake, *, seed: int) -> tuple[dict, dict]:
    """Fast-path morphology of the three sets; per property KS/W1 for generated and the floor."""
    from galaxy_core.metrics.morphology import compare_distributions, synthetic_galaxy_distance

    tables = {name: ev.morphology(x) for name, x in (("real", lin_a), ("heldout", lin_b), ("generated", lin_fake))}
    cols = [c for c in ev.MORPHOLOGY_COLUMNS if c in tables["real"].colnames]
    comp = {}
    for col in cols:
        try:
            comp[col] = {"generated": compare_distributions(tables["real"][col], tables["generated"][col]),
                         "floor": compare_distributions(tables["real"][col], tables["heldout"][col])}
        except ValueError as e:
            comp[col] = {"error": str(e)}
    ok = [c for c in cols if "error" not in comp[c]]
    summary = {"properties": comp,
               "failed": {k: int(np.sum(t["failed"])) for k, t in tables.items()},
               "count": {k: len(t) for k, t in tables.items()},
               "failure_reasons": {k: _commonest_reasons(t) for k, t in tables.items()}}
    if ok:
        summary["sgd"] = {"generated": synthetic_galaxy_distance(tables["real"], tables["generated"], ok),
                          "floor": synthetic_galaxy_distance(tables["real"], tables["heldout"], ok),
                          "columns": ok, "note": "morphology properties measured on the images, "
                          "each Wasserstein distance divided by the real spread "
                          "(a column constant in the real set: in its own units, listed under unstandardised)"}
    return summary, tables


def _commonest_reasons(table, most: int = 3) -> dict[str, int]:
    """The commonest reasons rows of a morphology table failed, with their counts (most first)."""
    from collections import Counter

    failed = np.asarray(table["failed"], bool) if len(table) else np.zeros(0, bool)
    if "reason" not in table.colnames:
        return {"(no reason recorded)": int(failed.sum())} if failed.any() else {}
    return dict(Counter(str(r) or "(no reason recorded)" for r in table["reason"][failed]).most_common(most))


def morphology_warning(morph: dict) -> str | None:
    """A warning when no generated image could be measured (else None): the morphology rows of
    the report are then missing, and the reason would otherwise sit only in ``summary.json``."""
    n, failed = morph["count"].get("generated", 0), morph["failed"].get("generated", 0)
    if not n or failed < n:
        return None
    reasons = morph.get("failure_reasons", {}).get("generated") or {}
    why = "; ".join(f"{reason} ({count})" for reason, count in reasons.items())
    return (f"morphology was skipped for all {n} generated images: none could be measured"
            + (f" ({why})" if why else "") + "; the report has no morphology comparison (per-image reasons in "
            "morphology_generated.csv)")


def cmd_section(model: Pretrained, data, flux_a, idx_a, flux_b, idx_b, flux_fake) -> dict | None:
    """Colour-magnitude diagram (M_r vs g - r) with the thesis' acceptance box, for g/r data."""
    from galaxy_core.metrics.photometry import absolute_magnitude, acceptance_box, fraction_in_box

    bands = [c.lower() for c in model.channels]
    if not model.physical or "g" not in bands or "r" not in bands:
        return None
    zp = model.meta["data"].get("zero_point")
    cat = data.catalog
    if cat is None or "redshift" not in cat.colnames:
        return {"skipped": "the training data has no redshifts, so absolute magnitudes are unknown"}
    z = np.asarray(cat["redshift"], float)
    z_med = float(np.median(z))
    out, pts = {"zero_point": zp, "median_redshift": z_med, "cosmology": "FlatLambdaCDM(H0=70, Om0=0.3)"}, {}
    # the box from the real galaxies at their own redshifts; the generated galaxies (which have
    # none) at the median redshift, as the thesis placed them, and the held-out floor the same way,
    # so that a perfect generator scores the floor (with their own redshifts the held-out galaxies
    # spread wider in M_r, and a perfect generator read "too narrow" in half of all splits)
    for name, flux, zs in (("real", flux_a, z[idx_a]), ("heldout", flux_b, np.full(len(flux_b), z_med)),
                           ("generated", flux_fake, np.full(len(flux_fake), z_med))):
        m_r, g_r = ev.colour_magnitude(flux, channels=model.channels, zero_point=zp)
        pts[name] = (absolute_magnitude(m_r, zs), g_r, m_r)
    box = acceptance_box(pts["real"][0], pts["real"][1], nsigma=BOX_NSIGMA)
    out["box"] = {"mag_lo": box.mag_lo, "mag_hi": box.mag_hi, "colour_lo": box.colour_lo, "colour_hi": box.colour_hi,
                  "nsigma": BOX_NSIGMA}
    for name in ("generated", "heldout"):
        out[f"fraction_in_box_{name}"] = fraction_in_box(pts[name][0], pts[name][1], box)
        out[f"n_{name}"] = len(pts[name][0])  # undetected galaxies count as outside
    out["reading"] = read_box_fraction(out["fraction_in_box_generated"], out["fraction_in_box_heldout"],
                                       n_generated=out["n_generated"], n_real=out["n_heldout"])
    out["points"] = pts
    return out


def memorisation_summary(mem: dict) -> dict:
    """The JSON-friendly part of :func:`galaxy_core.metrics.memorisation.memorisation_check`."""
    out = {"compared": mem["compared"], "verdict": mem["verdict"], "memorised": mem["memorised"],
           "heldout": mem["heldout_about"], "default_distance": DEFAULT_DISTANCE,
           "threshold_percentile": THRESHOLD_PERCENTILE, "distances": {}}
    for name, r in mem["results"].items():
        rep = r["report"] or {}
        out["distances"][name] = {
            "what_it_is_sensitive_to": r["note"], "units": r["units"], "gives_verdict": r["gives_verdict"],
            "reading": r["sentence"], "median_generated": r["median_gen"], "median_train": r["median_train"],
            "heldout_copies": r.get("heldout_copies", 0), "reference_ratio": r.get("reference_ratio"),
            "reference_warning": r.get("reference_warning"),
            **{k: v for k, v in rep.items() if k != "flagged"},
            "flagged_samples": np.flatnonzero(rep["flagged"]).tolist() if rep else None}
    return out


def matches_panel(mem: dict, fake: np.ndarray, train, *, channels, distance: str = DEFAULT_DISTANCE,
                  rows: int = 8) -> np.ndarray:
    """Labelled image: the ``rows`` generated samples closest to training images under ``distance``."""
    r = mem["results"][distance]
    order = np.argsort(r["distances"][:, 0], kind="stable")[:rows]
    flagged = r["report"]["flagged"][order] if r["report"] else None
    k = r["indices"].shape[1]
    neighbours = to_rgb(train.to_model_range(r["indices"][order].ravel()), train.channels)
    header = (f"nearest training images by {distance} ({r['units']}); closest samples first"
              + ("" if r["report"] else "; no threshold from held-out images, so no suspects are marked"))
    return labelled_matches(to_rgb(fake[order], channels), neighbours.reshape(len(order), k, *neighbours.shape[1:]),
                            gen_labels=[f"generated #{i}" for i in order],
                            train_labels=[image_names(train, r["indices"][i]) for i in order],
                            distances=r["distances"][order], flagged=flagged, header=header)


def matches_rows(mem: dict, train) -> tuple[list[str], list[list]]:
    """Header and rows of ``nearest_matches.csv``: per sample and distance, the nearest training
    images by name with their distances; rows ordered by the verdict's distance."""
    res = mem["results"]
    main = res.get(DEFAULT_DISTANCE) or next(iter(res.values()))
    order = np.argsort(main["distances"][:, 0], kind="stable")
    header = ["sample", f"flagged_{DEFAULT_DISTANCE}"]
    for name, r in res.items():
        for j in range(r["indices"].shape[1]):
            header += [f"{name}_nn{j + 1}_image", f"{name}_nn{j + 1}_distance"]
    rows = []
    for i in order:
        flag = "" if main["report"] is None else bool(main["report"]["flagged"][i])
        row = [int(i), flag]
        for r in res.values():
            for name, d in zip(image_names(train, r["indices"][i]), r["distances"][i]):
                row += [name, f"{d:.6g}"]
        rows.append(row)
    return header, rows


def _write_csv(path: Path, header: list[str], rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_figures(out: Path, figures: dict, *, png: bool) -> str | None:
    """HTML for every figure, and PNG copies when the exporter works; returns why not if not."""
    for name, fig in figures.items():
        atomic_write_text(out / f"{name}.html", fig.to_html(include_plotlyjs="cdn", full_html=True))
    if not png or not figures:
        return None if png else "PNG export turned off"
    try:
        import plotly.io as pio

        pio.write_images(list(figures.values()), [str(out / f"{n}.png") for n in figures], width=900, height=500)
    except Exception as e:  # kaleido missing, or no Chromium for it
        return f"PNG export failed ({type(e).__name__}: {e}); the HTML files have every plot"
    return None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k not in ("points",)}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    report_dir: str | os.PathLike,
    data: str | None = None,
    held_out: str | os.PathLike | None = None,
    n: int = 500,
    extractors: tuple[str, ...] = ("galaxy",),
    morphology: bool = True,
    memorisation: bool = True,
    n_queries: int = 64,
    evidence: tuple[str, ...] = ("l1", "ssim"),
    seed: int = 0,
    png: bool = True,
    step: Step | None = None,
    warn: Step | None = None,
) -> dict:
    """Evaluate a checkpoint and write the report folder (see module docstring).

    Parameters
    ----------
    checkpoint : path
        Generator checkpoint (``NAME.json``).
    report_dir : path
        Output folder (created).
    data : str, optional
        Reference dataset spec for the distribution metrics; default: the data the checkpoint
        was trained on. The memorisation search always uses the training data.
    held_out : path, optional
        Folder (or FITS file) of real images the checkpoint was not trained on: the reference
        that calibrates the memorisation threshold. Without it only ``sim`` checkpoints (fresh
        simulations) get a memorisation verdict.
    n : int
        Generated samples, and real samples per split (fewer if the data is small); >= 2.
    extractors : tuple of str
        Feature extractors for FID/KID/PRDC/MiFID (``galaxy``, ``inception``, ``pix8``).
    morphology, memorisation : bool
        Run those sections.
    n_queries : int
        Generated samples searched for nearest training images, 1 to ``n``; as many are drawn
        (from the same seed) even where a small data set leaves fewer real images per split.
    evidence : tuple of str
        Distances shown beside the verdict's (``l1``, ``ssim``). Every search is exact: on
        10,000 training images of 64 px, ``ssim`` is the slow one (a few minutes on two cores).
    seed : int
        Seed of the generated latents and the real splits.
    png : bool
        Also export plots as PNG.
    step : callable, optional
        Called with a line of text as each section starts (a progress report).
    warn : callable, optional
        Called with each warning about the sample sizes, or about a morphology section that measured
        no generated image (they are also in the summary).

    Returns
    -------
    dict
        The summary written to ``summary.json``.

    Raises
    ------
    ConfigError
        ``n`` or ``n_queries`` out of range (checked before anything is loaded).
    CheckpointError, DataError
        The checkpoint, the data or the held-out folder cannot be used (a held-out path that
        does not exist is refused before anything is loaded).

    Notes
    -----
    The report is written into a temporary folder beside ``report_dir`` and moved into it only
    when complete: a failed evaluation leaves ``report_dir`` as it was (no partial report, no
    empty folder). Evaluating again into the folder of an earlier report replaces that report:
    its files the new one does not write (a memorisation panel of a run with memorisation, say)
    are removed, so the folder never mixes two runs under one ``summary.json``. Other files are
    not touched.
    """
    n = check_sample_size(n, option="-n")
    n_queries = check_sample_size(n_queries, option="--queries", minimum=1, maximum=n) if memorisation else n_queries
    if memorisation and held_out is not None and not Path(held_out).exists():
        from galaxy_core.errors import DataError

        raise DataError(f"{held_out}: no such file or folder (--held-out)")
    final = Path(report_dir)
    if final.exists() and not final.is_dir():
        from galaxy_core.errors import GalaxyGanError

        raise GalaxyGanError(f"{final}: is a file, not a report folder")
    from galaxy_core.data.prepared import new_temporary_dir, remove_stale_temporaries

    made_parent = not final.parent.exists()
    if not made_parent:
        remove_stale_temporaries(final.parent)  # reports of killed runs
    out = new_temporary_dir(final.parent, "report")
    try:
        summary = _evaluate_into(out, checkpoint, data=data, held_out=held_out, n=n, extractors=extractors,
                                 morphology=morphology, memorisation=memorisation, n_queries=n_queries,
                                 evidence=evidence, seed=seed, png=png, step=step, warn=warn)
        _publish_report(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if made_parent and not final.exists():
            with contextlib.suppress(OSError):  # only the folders this call made, and only if empty
                final.parent.rmdir()
    return summary


# the files an evaluation writes (module docstring): what an earlier report in the folder consists of
_REPORT_NAME = re.compile(r"summary\.json|metrics\.csv|(morphology|memorisation)_\w+\.(csv|html|png)|"
                          r"cmd\.(csv|html|png)|redshift\.(html|png)|nearest_matches\.(csv|png)")


def _publish_report(staged: Path, final: Path) -> None:
    """Move a complete report from ``staged`` into ``final`` (created), removing the files of an
    earlier report there (those named as a report's, beside its ``summary.json``) that the new
    one does not replace; ``summary.json`` last, so it only ever describes the files beside it."""
    final.mkdir(parents=True, exist_ok=True)
    new = {p.name for p in staged.iterdir()}
    if (final / "summary.json").is_file():
        for p in final.iterdir():
            if p.is_file() and _REPORT_NAME.fullmatch(p.name) and p.name not in new:
                p.unlink()
    for name in sorted(new - {"summary.json"}) + ["summary.json"]:
        os.replace(staged / name, final / name)


def _evaluate_into(out: Path, checkpoint, *, data, held_out, n, extractors, morphology, memorisation, n_queries,
                   evidence, seed, png, step, warn) -> dict:
    """The body of :func:`evaluate_checkpoint`, writing into the folder ``out``."""
    say = step or (lambda s: log.info(s))
    t0 = time.perf_counter()
    model = load_pretrained(checkpoint)
    own = ev.training_data(model.meta)
    spec = dict(own, spec=data) if data is not None else own
    say(f"opening reference data {spec['spec']}")
    ref = ev.open_reference(**spec)
    ev.check_compatible(model, ref)
    idx_a, real_a, idx_b, real_b = ev.real_pair(ref, n, seed=seed)
    warnings = sample_size_warnings(n, n_real=len(real_a), extractors=extractors, num_bands=len(model.channels),
                                    data_name=ref.name)
    for w in warnings:
        (warn or log.warning)(w)
    # the memorisation search takes its own count of samples, also where the data (N // 2 real
    # images per split) bounds the others: the first ones are the same, so the page searches these too
    n_gen = max(len(real_a), n_queries) if memorisation else len(real_a)
    say(f"generating {n_gen} samples")
    _, drawn = ev.generated_sample(model, n_gen, seed=seed)
    fake = drawn[: len(real_a)]
    from galaxy_core.explore.sampling import provenance

    made = {k: v for k, v in provenance(model, seed=seed).items() if k != "latents_file"}  # path, hashes, software
    summary: dict = {**made, "data": ref.name,
                     "data_key": ref.manifest["key"], "n": len(real_a), "seed": seed, "warnings": warnings,
                     "floor_definition": f"a second, disjoint real sample of {len(real_b)} images"}
    rows, figures = [], {}
    summary["features"] = {}
    for name in extractors:
        say(f"feature metrics with the {name} extractor")
        fm = feature_metrics(real_a, real_b, fake, extractor=name)
        summary["features"][name] = fm
        for key, value in fm["generated"].items():
            rows.append([key, value, fm["floor"][key]])
    lin = {k: ev.to_linear(x, stretch=model.stretch) for k, x in (("a", real_a), ("b", real_b), ("fake", fake))}
    if morphology:
        say("morphology (segmentation fast path)")
        morph, tables = morphology_section(lin["a"], lin["b"], lin["fake"], seed=seed)
        summary["morphology"] = morph
        skipped = morphology_warning(morph)
        if skipped:
            warnings.append(skipped)
            (warn or log.warning)(skipped)
        tables["real"].write(out / "morphology_real.csv", overwrite=True)
        tables["generated"].write(out / "morphology_generated.csv", overwrite=True)
        for col, (short, axis) in ev.MORPHOLOGY_COLUMNS.items():
            if col in tables["real"].colnames:
                figures[f"morphology_{col}"] = plots.histograms(
                    {"real": np.asarray(tables["real"][col], float),
                     "generated": np.asarray(tables["generated"][col], float)},
                    title=f"{short}: real vs generated", x_title=axis)
                c = morph["properties"].get(col, {})
                if "generated" in c:
                    rows.append([f"ks_{col}", c["generated"]["ks"], c["floor"]["ks"]])
                    rows.append([f"wasserstein_{col}", c["generated"]["wasserstein"], c["floor"]["wasserstein"]])
        if "sgd" in morph:
            rows.append(["sgd_morphology", morph["sgd"]["generated"]["sgd"], morph["sgd"]["floor"]["sgd"]])
    say("colour-magnitude diagram")
    cmd = cmd_section(model, ref, lin["a"], idx_a, lin["b"], idx_b, lin["fake"]) if model.physical else None
    if cmd and "box" in cmd:
        pts = cmd["points"]
        _write_csv(out / "cmd.csv", ["set", "M_r", "g_r", "m_r"],
                   [[name, *vals] for name, arr in pts.items() for vals in zip(*arr)])
        box = cmd["box"]
        figures["cmd"] = plots.colour_magnitude(
            {k: (v[0], v[1]) for k, v in pts.items()},
            box={"mag_min": box["mag_lo"], "mag_max": box["mag_hi"], "colour_min": box["colour_lo"],
                 "colour_max": box["colour_hi"]},
            title=f"colour–magnitude diagram (box: real median ± {BOX_NSIGMA}σ); {cmd['reading']['reading']}",
            mag_title="M_r (mag)", colour_title="g − r (mag)")
        rows.append(["cmd_fraction_in_box", cmd["fraction_in_box_generated"], cmd["fraction_in_box_heldout"]])
    summary["cmd"] = cmd
    cat = ref.catalog
    if cat is not None and "redshift" in cat.colnames:
        z = np.asarray(cat["redshift"], float)
        summary["redshift"] = {"median": float(np.median(z)), "p5": float(np.percentile(z, 5)),
                               "p95": float(np.percentile(z, 95)), "count": int(len(z))}
        figures["redshift"] = plots.histograms({"training data": z}, title="redshift of the training data",
                                               x_title="redshift z (dimensionless)", density=False)
    if memorisation:
        train = ref if data is None else ev.open_reference(**own)
        if held_out is not None:
            say(f"preparing held-out images from {held_out}")
            held, held_about = ev.open_held_out(held_out, train=train, crop=own["crop"], normalisation=own["normalisation"])
        else:
            held, held_about = ev.held_out_sample(model.meta, train, n_queries)
        say(f"nearest training images of {n_queries} generated samples")
        mem = memorisation_check(drawn[:n_queries], train, held_out=held, held_out_about=held_about, k=3,
                                 distances=(DEFAULT_DISTANCE, *[d for d in evidence if d != DEFAULT_DISTANCE]),
                                 progress=lambda stage, done, total: say(f"memorisation, {stage} {done}/{total}"))
        summary["memorisation"] = memorisation_summary(mem)
        summary["memorised"] = mem["memorised"]
        warning = mem["results"].get(DEFAULT_DISTANCE, {}).get("reference_warning")
        if mem["memorised"] is None or warning:  # no verdict, or one against a doubtful reference: say why
            summary["memorised_note"] = mem["verdict"]
        for name, r in mem["results"].items():
            rep = r["report"]
            if rep is not None:
                rows.append([f"memorisation_fraction_flagged_{name}", rep["fraction_flagged"],
                             rep["expected_fraction"]])
            figures[f"memorisation_{name}"] = distance_histogram(
                r["distances"][:, 0], r["heldout_d"], r["train_d"], threshold=rep["threshold"] if rep else None,
                title=f"distance to the nearest training image: {name}"
                      + (" (gives the verdict)" if r["gives_verdict"] else " (evidence)"),
                x_title=DISTANCE_UNITS[name])
        save_png(out / "nearest_matches.png", matches_panel(mem, drawn[:n_queries], train, channels=model.channels))
        _write_csv(out / "nearest_matches.csv", *matches_rows(mem, train))
    _write_csv(out / "metrics.csv", ["metric", "generated", "real_vs_real_floor"], rows)
    why = _write_figures(out, figures, png=png)
    summary["png_note"] = why
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", _jsonable(summary))
    return summary


def headline_metrics(summary: dict) -> dict:
    """The numbers a model card carries: per extractor FID and KID, and the SGD, with floors."""
    metrics, floors = {}, {}
    for fm in summary.get("features", {}).values():
        for kind in ("fid", "kid"):
            key = fm["names"][kind]
            metrics[key], floors[key] = fm["generated"][key], fm["floor"][key]
    sgd = (summary.get("morphology") or {}).get("sgd")
    if sgd:
        metrics["sgd_morphology"], floors["sgd_morphology"] = sgd["generated"]["sgd"], sgd["floor"]["sgd"]
    cmd = summary.get("cmd") or {}
    if "fraction_in_box_generated" in cmd:
        metrics["cmd_fraction_in_box"] = cmd["fraction_in_box_generated"]
        floors["cmd_fraction_in_box"] = cmd["fraction_in_box_heldout"]
    return {"metrics": metrics, "floors": floors}


def record_in_card(checkpoint: str | os.PathLike, summary: dict, *, command: str) -> dict:
    """Write the headline metrics of an evaluation, with their floors and provenance, into the card.

    The card's ``metrics`` are merged key by key. ``evaluations`` lists every evaluation whose
    results the card still holds, oldest first, each with its command, date, data, sample
    count, floor definition, memorisation verdict and the metric keys it measured (``metrics``)
    with their real-vs-real floors: an evaluation that measures a metric again takes it over,
    and an earlier one that is left with no metric is dropped, unless it holds the latest
    memorisation verdict (the new one has none). So a metric's floor and the command that
    measured it always come from the same evaluation.
    ``evaluation`` is the latest entry, as cards have always carried it.

    Returns
    -------
    dict
        The updated card (JSON side of the checkpoint; the tensors are untouched).

    Raises
    ------
    CheckpointError
        The summary was measured on another checkpoint (its ``checkpoint_sha256``), or on a
        chain with another stage than the one the card records (``references``); nothing is
        written.
    """
    from galaxy_core.io.checkpoint import read_meta, update_card

    _check_measured_here(checkpoint, read_meta(checkpoint), summary)
    head = headline_metrics(summary)
    entry = {"command": command, "date": time.strftime("%Y-%m-%d"), "data": summary["data"],
             "n": summary["n"], "metrics": sorted(head["metrics"]), "real_vs_real_floor": head["floors"],
             "floor_definition": summary["floor_definition"],
             "memorised": summary.get("memorised"), "memorised_note": summary.get("memorised_note")}
    kept, earlier = [], card_evaluations(read_meta(checkpoint))
    with_verdict = [i for i, e in enumerate(earlier) if e.get("memorised") is not None]
    verdict_at = with_verdict[-1] if with_verdict and entry["memorised"] is None else None
    for i, old in enumerate(earlier):
        left = [k for k in old["metrics"] if k not in head["metrics"]]
        if left or i == verdict_at:  # its metrics, or the latest memorisation verdict the card has
            kept.append({**old, "metrics": left,
                         "real_vs_real_floor": {k: v for k, v in (old.get("real_vs_real_floor") or {}).items()
                                                if k in left}})
    return update_card(checkpoint, {"metrics": head["metrics"], "evaluation": entry,
                                    "evaluations": [*kept, entry]})


def _check_measured_here(checkpoint, meta: dict, summary: dict) -> None:
    """Refuse a summary whose provenance names other weights than the card's (or, for a chained
    model, another referenced checkpoint than the one the card records). A summary without
    provenance (written by hand) is taken as it is."""
    from galaxy_core.errors import CheckpointError

    measured, here = summary.get("checkpoint_sha256"), meta.get("tensors_sha256")
    if measured and here and measured != here:
        raise CheckpointError(f"{checkpoint}: the evaluation was measured on {summary.get('checkpoint_path')} "
                              f"(id {summary.get('checkpoint_id')}), not on this checkpoint (id {here[:12]}); record "
                              "it in the card of the checkpoint it measured, or evaluate this one")
    pins = (meta.get("engine") or {}).get("references") or {}
    for role, ref in (summary.get("references") or {}).items():
        pinned = (pins.get(role) or {}).get("sha")
        if pinned and ref.get("checkpoint_id") and ref["checkpoint_id"] != pinned:
            raise CheckpointError(f"{checkpoint}: the evaluation chained the {role} checkpoint "
                                  f"{ref.get('checkpoint')} (id {ref['checkpoint_id']}), but this model was trained "
                                  f"after {pins[role].get('path')} (id {pinned}); evaluate it again with that one")


def card_evaluations(meta: dict) -> list[dict]:
    """The evaluations a card holds, oldest first, each with the metric keys it measured.

    Cards written before ``evaluations`` existed carry one ``evaluation``; its metrics are the
    keys it recorded floors for (the headline metrics of that evaluation).
    """
    entries = meta.get("evaluations")
    if entries is None:
        entries = [meta["evaluation"]] if meta.get("evaluation") else []
    out = []
    for e in entries:
        keys = e.get("metrics")
        if keys is None:
            keys = list(e.get("real_vs_real_floor") or {})
        out.append({**e, "metrics": list(keys)})
    return out


def numbered_evaluations(meta: dict) -> list[tuple[int, dict]]:
    """``(number, entry)`` of the evaluations a card shows, numbered from 1, oldest first: those
    that hold metrics, and one kept only for its memorisation verdict (:func:`record_in_card`)."""
    shown = [e for e in card_evaluations(meta) if e["metrics"] or e.get("memorised") is not None]
    return list(enumerate(shown, start=1))


def metric_provenance(meta: dict) -> dict[str, tuple[int, dict]]:
    """Card metric key -> (number, entry) of the evaluation that measured it last, numbered as
    :func:`numbered_evaluations` numbers them.

    Metrics no evaluation measured (logged during training, or on a card written before
    evaluations were kept one by one: see :func:`floors_may_be_lost`) are absent.
    """
    out = {}
    for i, e in numbered_evaluations(meta):
        for k in e["metrics"]:
            out[k] = (i, e)
    return out


def memorisation_status(meta: dict) -> dict | None:
    """What a card says about memorisation, for display; None when no evaluation looked.

    Returns
    -------
    dict or None
        ``memorised``: True / False from the latest evaluation that reached a verdict, or None
        when none did; ``number``, ``entry``: that evaluation (:func:`numbered_evaluations`),
        or the latest evaluation when none reached a verdict; ``caveat`` (with a verdict): the
        evaluation's own warning about its reference, "" when none; ``note``: why the latest
        evaluation gave no verdict ("" when it gave one or the check was not run); ``later``:
        the (number, entry) of a later evaluation that gave no verdict, when the verdict shown
        is older than it (the verdict still holds for these weights: an evaluation never
        changes them), else None.
    """
    looked = [(i, e) for i, e in numbered_evaluations(meta) if "memorised" in e]
    if not looked:
        return None
    last_i, last = looked[-1]
    with_verdict = [(i, e) for i, e in looked if e.get("memorised") is not None]
    if not with_verdict:
        return {"memorised": None, "number": last_i, "entry": last, "caveat": "",
                "note": last.get("memorised_note") or "", "later": None}
    i, e = with_verdict[-1]
    later = (last_i, last) if last_i != i else None
    return {"memorised": bool(e["memorised"]), "number": i, "entry": e, "caveat": e.get("memorised_note") or "",
            "note": (last.get("memorised_note") or "") if later else "", "later": later}


def floors_may_be_lost(meta: dict) -> bool:
    """True for a card written before evaluations were kept one by one (an ``evaluation``
    but no ``evaluations``): a second evaluation then replaced the first, so a metric it
    does not name may come from an earlier evaluation whose floor and command were lost,
    not only from training."""
    return bool(meta.get("evaluation")) and "evaluations" not in meta
