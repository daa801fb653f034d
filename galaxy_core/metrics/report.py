"""``galaxygan evaluate``: every evaluation of a checkpoint against real data, written to a folder.

The steps are those of the app's Evaluation and Memorisation pages
(:mod:`galaxy_core.explore.evaluation`), so the numbers agree. Each comparison of generated with
real data comes with its real-vs-real reference (the "floor"): two disjoint real samples of the
same size compared the same way. A generator as good as the data reaches about the floor.

Written files::

    summary.json                 every number, with extractor names and sample sizes
    metrics.csv                  name, value, real-vs-real floor
    morphology_real.csv, morphology_generated.csv    per-image fast-path measurements
    morphology_<property>.html/.png                  real vs generated histograms
    cmd.csv, cmd.html/.png       colour-magnitude diagram with the acceptance box (g, r data)
    redshift.html/.png           redshift histogram of the training data (when it has redshifts)
    memorisation_<metric>.html/.png  nearest-training-distance histograms (cosine of
                                 galaxy-encoder features, which gives the verdict, and pixel L1)
    nearest_matches.png, nearest_matches.csv         generated samples beside their nearest
                                                     training images, closest first

PNG copies of plots need a Chromium-based browser for Plotly's exporter (kaleido); without one
the HTML files are written and the summary says why the PNGs are missing.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from galaxy_core.explore import evaluation as ev
from galaxy_core.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from galaxy_core.io.render import make_grid, save_png, to_rgb
from galaxy_core.metrics import plots
from galaxy_core.metrics.fid import metric_name, mifid_from_features, precision_recall_density_coverage
from galaxy_core.models.pretrained import Pretrained, load_pretrained

log = logging.getLogger(__name__)
Step = Callable[[str], None]


def _split_real(data, n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two disjoint random real samples of up to ``n`` each: (idx_a, x_a, idx_b, x_b)."""
    rng = np.random.default_rng(seed)
    m = min(n, len(data) // 2)
    perm = rng.permutation(len(data))
    ia, ib = np.sort(perm[:m]), np.sort(perm[m : 2 * m])
    return ia, data.to_model_range(ia), ib, data.to_model_range(ib)


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
               "count": {k: len(t) for k, t in tables.items()}}
    if ok:
        summary["sgd"] = {"generated": synthetic_galaxy_distance(tables["real"], tables["generated"], ok),
                          "floor": synthetic_galaxy_distance(tables["real"], tables["heldout"], ok),
                          "columns": ok, "note": "morphology properties measured on the images, "
                          "each Wasserstein distance divided by the real spread"}
    return summary, tables


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
    for name, flux, zs in (("real", flux_a, z[idx_a]), ("heldout", flux_b, z[idx_b]),
                           ("generated", flux_fake, np.full(len(flux_fake), z_med))):
        m_r, g_r = ev.colour_magnitude(flux, channels=model.channels, zero_point=zp)
        pts[name] = (absolute_magnitude(m_r, zs), g_r, m_r)
    box = acceptance_box(pts["real"][0], pts["real"][1], nsigma=1.75)
    out["box"] = {"mag_lo": box.mag_lo, "mag_hi": box.mag_hi, "colour_lo": box.colour_lo, "colour_hi": box.colour_hi,
                  "nsigma": 1.75}
    for name in ("generated", "heldout"):
        out[f"fraction_in_box_{name}"] = fraction_in_box(pts[name][0], pts[name][1], box)
        out[f"n_{name}"] = int(np.sum(np.isfinite(pts[name][0]) & np.isfinite(pts[name][1])))
    out["points"] = pts
    return out


def memorisation_section(data, fake, *, held: np.ndarray | None, held_note: str, metric: str = "l1",
                         k: int = 3) -> dict:
    """Nearest training images of generated samples, against held-out and training baselines.

    ``fake`` holds the query samples and ``held`` real images never trained on (None when the
    data has none; :func:`galaxy_core.explore.evaluation.held_out_sample`). ``metric`` is a
    pixel metric of :func:`galaxy_core.metrics.vetting.nearest_matches` or ``"cosine"``, which
    compares galaxy-encoder features of every image. Pixel distances are biased for noisy data:
    a generated image is usually smoother than a real one, so it sits closer to every noisy
    training image than another noisy real image does, and the pixel test flags it without any
    copying. The feature distance does not have that bias and gives the verdict; the pixel
    distance is reported beside it and drives the panel.
    """
    from galaxy_core.metrics.vetting import memorisation_report, nearest_matches

    sub = np.random.default_rng(1).choice(len(data), size=min(len(fake), len(data)), replace=False)
    if metric == "cosine":
        from galaxy_core.metrics.features import load_extractor, reference_statistics

        ext = load_extractor("galaxy")
        train = reference_statistics(data, ext, max_images=len(data))[2]
        queries, held_q = ext(fake), (ext(held) if held is not None else None)
    else:
        train = data.images  # memory-mapped, native dtype
        queries, held_q = fake, held
    idx, d = nearest_matches(queries, train, metric=metric, k=k)
    train_d = ev.leave_one_out(train, sub, metric=metric)  # nearest *other* training image
    held_d = nearest_matches(held_q, train, metric=metric, k=1)[1][:, 0] if held_q is not None else train_d
    rep = memorisation_report(d[:, 0], held_d, train_d, percentile=5.0)
    return {"metric": metric, "k": k, "indices": idx, "distances": d, "heldout_note": held_note,
            "has_heldout": held is not None, "heldout_d": held_d, "train_d": train_d, "report": rep}


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
    n: int = 500,
    extractors: tuple[str, ...] = ("galaxy",),
    morphology: bool = True,
    memorisation: bool = True,
    n_queries: int = 64,
    seed: int = 0,
    png: bool = True,
    step: Step | None = None,
) -> dict:
    """Evaluate a checkpoint and write the report folder (see module docstring).

    Parameters
    ----------
    checkpoint : path
        Generator checkpoint (``NAME.json``).
    report_dir : path
        Output folder (created).
    data : str, optional
        Reference dataset spec; default: the data the checkpoint was trained on.
    n : int
        Generated samples, and real samples per split (fewer if the data is small).
    extractors : tuple of str
        Feature extractors for FID/KID/PRDC/MiFID (``galaxy``, ``inception``, ``pix8``).
    morphology, memorisation : bool
        Run those sections.
    n_queries : int
        Generated samples searched for nearest training images.
    seed : int
        Seed of the generated latents and the real splits.
    png : bool
        Also export plots as PNG.
    step : callable, optional
        Called with a line of text as each section starts (a progress report).

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    say = step or (lambda s: log.info(s))
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = load_pretrained(checkpoint)
    spec = ev.training_data(model.meta)
    if data is not None:
        spec["spec"] = data
    say(f"opening reference data {spec['spec']}")
    ref = ev.open_reference(spec["spec"], resolution=spec["resolution"], crop=spec["crop"], count=spec["count"],
                            seed=spec["seed"], normalisation=spec["normalisation"])
    ev.check_compatible(model, ref)
    idx_a, real_a, idx_b, real_b = _split_real(ref, n, seed=seed)
    say(f"generating {len(real_a)} samples")
    _, fake = ev.generated_sample(model, len(real_a), seed=seed)
    summary: dict = {"checkpoint": model.name, "checkpoint_id": model.id, "data": ref.name,
                     "data_key": ref.manifest["key"], "n": len(real_a), "seed": seed,
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
            title="colour–magnitude diagram (box: real median ± 1.75σ)", mag_title="M_r (mag)",
            colour_title="g − r (mag)")
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
        say(f"nearest training images of {n_queries} generated samples")
        held, held_note = ev.held_out_sample(model.meta, ref, n_queries)  # simulated once, used by both metrics
        mems = {m: memorisation_section(ref, fake[:n_queries], held=held, held_note=held_note, metric=m)
                for m in ("cosine", "l1")}
        labels = {"cosine": "cosine distance of galaxy-encoder features (gives the verdict)",
                  "l1": "mean |difference| on the central 50% (pixels; biased low for smooth samples)"}
        summary["memorisation"] = {}
        for m, mem in mems.items():
            rep = mem["report"]
            summary["memorisation"][m] = {"metric": labels[m], "heldout": mem["heldout_note"],
                                          **{k: v for k, v in rep.items() if k != "flagged"},
                                          "flagged_samples": np.flatnonzero(rep["flagged"]).tolist()}
            rows.append([f"memorisation_fraction_flagged_{m}", rep["fraction_flagged"], rep["expected_fraction"]])
            figures[f"memorisation_{m}"] = plots.histograms(
                {"generated → train": mem["distances"][:, 0], "held-out → train": mem["heldout_d"],
                 "train → other train": mem["train_d"]},
                title=f"distance to the nearest training image: {m}", x_title=labels[m])
        has_heldout = mems["cosine"]["has_heldout"]
        # Without an independent held-out set the baseline is the training images' distances to
        # each other, which a generator collapsed onto a common kind of galaxy beats without
        # copying anything: report the statistics, withhold the verdict.
        summary["memorised"] = summary["memorisation"]["cosine"]["memorised"] if has_heldout else None
        if not has_heldout:
            summary["memorised_note"] = ("no held-out real images exist for this data; the flags compare with "
                                         "training-to-training distances and are indicative only — inspect "
                                         "nearest_matches.png")
        mem = mems["l1"]
        rep = mem["report"]
        order = np.argsort(mem["distances"][:, 0])
        panel = []
        for i in order[:8]:
            panel.append(fake[i])
            panel.extend(ref.to_model_range(mem["indices"][i]))
        save_png(out / "nearest_matches.png", make_grid(to_rgb(np.stack(panel), model.channels), ncols=1 + mem["k"]),
                 scale=2 if model.resolution <= 32 else 1)
        _write_csv(out / "nearest_matches.csv", ["sample", "flagged"] + [f"nn{j}_index" for j in range(mem["k"])]
                   + [f"nn{j}_distance" for j in range(mem["k"])],
                   [[int(i), bool(rep["flagged"][i]), *mem["indices"][i].tolist(), *mem["distances"][i].tolist()]
                    for i in order])
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
    """Write the headline metrics of an evaluation into the checkpoint's model card."""
    from galaxy_core.io.checkpoint import update_card

    head = headline_metrics(summary)
    evaluation = {"command": command, "date": time.strftime("%Y-%m-%d"), "data": summary["data"],
                  "n": summary["n"], "real_vs_real_floor": head["floors"],
                  "floor_definition": summary["floor_definition"],
                  "memorised": summary.get("memorised"), "memorised_note": summary.get("memorised_note")}
    return update_card(checkpoint, {"metrics": head["metrics"], "evaluation": evaluation})
