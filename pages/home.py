"""Home: the chosen checkpoint's model card and a grid of its samples."""

from __future__ import annotations

import random

import numpy as np
import streamlit as st

from galaxy_core.explore.evaluation import describe_extractor
from galaxy_core.explore.export import frames_zip
from galaxy_core.explore.sampling import model_card_lines
from galaxy_core.metrics.fid import parse_metric_name
from galaxy_core.metrics.report import floors_may_be_lost, memorisation_status, metric_provenance, numbered_evaluations
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

SEED_KEY = "home_seed"
METRIC_NAMES = {"fd": "Fréchet distance", "fid": "Fréchet distance", "kid": "kernel distance",
                "mifid": "memorisation-informed FID", "prdc": "precision / recall"}
EXTRACTOR_NAMES = {"galaxy": "galaxy encoder", "pix8": "8×8 pixels", "inception": "Inception-v3"}
PLAIN_METRICS = {  # card metrics that are not feature-space distances: (short label, what it is)
    "sgd_morphology": ("SGD · morphology", "Synthetic Galaxy Distance over morphology (Smith et al. 2022)"),
    "cmd_fraction_in_box": ("Colour–magnitude box", "fraction inside the colour–magnitude box (median ± 1.75σ)"),
    "grid_distance_256": ("Grid distance · 256 grids", "grid statistics' distance from the data (0 = the same)"),
    "grid_occupancy": ("Grid occupancy", "fraction of grid cells holding a galaxy"),
    "grid_var_over_mean_8": ("Counts-in-cells var / mean", "counts-in-cells variance / mean in 8 × 8-cell blocks"),
}


def split_metric_name(name: str) -> tuple[str, str, str]:
    """``"fid_galaxy_256v5k"`` -> ("fid", "galaxy", "256 vs 5000 real"); other names -> (name, "", "").

    Reads names through the one parser of :mod:`galaxy_core.metrics.fid`.
    """
    parsed = None if name in PLAIN_METRICS else parse_metric_name(name)
    if parsed is None:
        return name, "", ""
    n = f"{parsed.n}" + (f" vs {parsed.n_real} real" if parsed.n_real else "")
    return parsed.metric, parsed.extractor, n


def _kind_short(kind: str) -> str:
    """A metric kind as its label abbreviates it: ``"kid"`` -> "KID", ``"mifid"`` -> "MiFID"."""
    return "MiFID" if kind == "mifid" else kind.upper()


def metric_label(name: str) -> str:
    """A card metric's key as a short label that fits the table: ``"kid_galaxy_191"`` ->
    "KID · galaxy encoder · 191 samples"; :func:`metric_legend` says what each abbreviation is."""
    if name in PLAIN_METRICS:
        return PLAIN_METRICS[name][0]
    kind, extractor, n = split_metric_name(name)
    if not extractor:
        return name.replace("_", " ")
    n = n.removesuffix(" real") if " vs " in n else f"{n} samples"  # "256 vs 383": generated vs real (legend)
    return f"{_kind_short(kind)} · {EXTRACTOR_NAMES.get(extractor, extractor)} · {n}"


def metric_legend(names) -> str:
    """What the abbreviations of these metrics' labels stand for, one phrase each, in table order."""
    said = {}
    for name in names:
        if name in PLAIN_METRICS:
            label, what = PLAIN_METRICS[name]
            said.setdefault(label, what)
            continue
        kind, extractor, n = split_metric_name(name)
        if extractor and kind in METRIC_NAMES:
            said.setdefault(_kind_short(kind), METRIC_NAMES[kind])
        if " vs " in n:
            said.setdefault(n.removesuffix(" real"), "generated vs real samples")
    return "; ".join(f"**{k}**: {v}" for k, v in said.items())


def facts_ui(model: Pretrained) -> None:
    meta, d, tr = model.meta, model.meta.get("data", {}), model.meta.get("training", {})
    wall, cpu = tr.get("wall_time_s"), tr.get("cpu_time_s")
    ips = tr.get("images_per_s")
    rows = [
        [("Architecture", str(meta.get("arch", "?")).upper(),
          ", ".join(f"{k}={v}" for k, v in (meta.get("model") or {}).items() if k != "arch")),
         ("Resolution", f"{model.resolution} px", f"channels in array order: {', '.join(model.channels)}"),
         ("Training data", f"{d.get('name')} · {d.get('count')}", f"{d.get('count')} images from {d.get('source')}")],
        [("Training steps", f"{tr.get('step', 0):,}",
          f"{tr.get('kimg', 0):.1f} kimg, {tr.get('epochs', 0):.1f} epochs"),
         ("Wall time", "—" if wall is None else f"{wall / 60:.1f} min",
          f"wall-clock time of the training on {tr.get('device')} ({tr.get('cpu')}); a machine shared with "
          "other jobs stretches it"),
         ("CPU time", "—" if cpu is None else f"{cpu / 60:.1f} min",
          "CPU time of the training process, all its threads: the fair clock on a shared machine"
          + ("" if cpu is not None else " (this card does not record it)")),
         ("Throughput", f"{ips:.0f} img/s" if ips else "—", "training images per second")],
    ]
    for row in rows:
        for col, (label, value, help_text) in zip(st.columns(len(row)), row):
            col.metric(label, value, help=help_text or None)


def no_metrics_reason(meta: dict) -> str:
    """Why a checkpoint's card holds no quality metrics: live evaluation was off, or these
    weights are from a step between two evaluations."""
    every = ((meta.get("config") or {}).get("log") or {}).get("eval_every") or 0
    step = (meta.get("training") or {}).get("step")
    if not every or step is None:
        return "No quality metrics were recorded for this checkpoint (live evaluation was off)."
    return (f"No quality metrics were measured on these weights: live evaluation ran every {every} steps and this "
            f"checkpoint is from step {step}; the run's best checkpoint holds the last ones measured.")


def _floor_text(value) -> str:
    """A floor as the table shows it: four significant digits, or a dash where none was measured
    (a number column would show an empty floor as "None")."""
    return f"{value:.4g}" if isinstance(value, (int, float)) else "—"


def metrics_table_ui(model: Pretrained) -> None:
    metrics = model.meta.get("metrics") or {}
    if not metrics:
        st.caption(no_metrics_reason(model.meta) + " Measure them on the Evaluation page.")
        return
    measured = metric_provenance(model.meta)  # key -> (number, the evaluation that measured it last)
    unknown = "training or an earlier evaluation" if floors_may_be_lost(model.meta) else "live, in training"
    floors, rows = {}, []
    for name, value in metrics.items():
        number, entry = measured.get(name, (None, {}))
        floor = (entry.get("real_vs_real_floor") or {}).get(name)
        if isinstance(floor, (int, float)):
            floors[name] = floor
        rows.append({"Metric": metric_label(name),
                     "Value": value if isinstance(value, (int, float)) else None,
                     "Floor": _floor_text(floors.get(name)),
                     "Measured by": f"evaluation {number}" if number else unknown,
                     "Key": name})
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_order=("Metric", "Value", "Floor", "Measured by"),
                 column_config={  # "Key" (the card's name) stays in the data, for search and the full card
                     "Metric": st.column_config.TextColumn(width="medium",
                                                           help="what was measured, with which features, on how "
                                                                "many samples"),
                     "Value": st.column_config.NumberColumn(format="%.4g", width="small",
                                                            help="generated vs real; lower is better for distances"),
                     "Floor": st.column_config.TextColumn(
                         width="small",
                         help="real-vs-real floor: the same comparison between two disjoint real samples; "
                              "— where none was measured"),
                     "Measured by": st.column_config.TextColumn(
                         width="small", help="the numbered evaluation below, or the live evaluation during training"),
                 })
    legend = metric_legend(metrics)
    st.caption((legend + ". " if legend else "") + "**Floor**: the same metric between two disjoint real samples — "
               "the best a model can reach with this many samples.")
    for number, entry in numbered_evaluations(model.meta):
        kept_for = ("" if entry["metrics"] else
                    " (kept for its memorisation verdict: its metrics were measured again later)")
        st.caption(f"**Evaluation {number}**: `{entry.get('command')}` on {entry.get('date')}, "
                   f"{entry.get('n')} samples; floor: {entry.get('floor_definition')}.{kept_for}")
    memorisation_ui(model.meta)
    missing = [metric_label(k) for k in metrics if k not in floors]
    if missing:
        lost = (" This card was written before evaluations were kept one by one, so a metric without a floor may "
                "also come from an earlier evaluation whose floor and command were replaced."
                if floors_may_be_lost(model.meta) else "")
        st.caption("No floor is recorded for " + "; ".join(missing) + ". Metrics logged during training "
                   "have none (they compare with the whole training set, which leaves no second real sample of "
                   "that size)." + lost + " `galaxygan evaluate CHECKPOINT --record` measures the headline metrics "
                   "with their floors and writes both into the card.")
    negative = [k for k, v in floors.items() if isinstance(v, (int, float)) and v < 0]
    if negative:
        st.caption(f"A negative floor ({', '.join(f'{metric_label(k)}: {floors[k]:.3g}' for k in negative)}) is "
                   "expected: KID is an unbiased estimate, so two samples of the same real data scatter around "
                   "zero and can come out below it. Read it as “no measurable difference”; a model's KID means "
                   "something by how far it lies above that scatter.")
    for extractor in sorted({split_metric_name(k)[1] for k in metrics} - {""}):
        st.caption(f"**{EXTRACTOR_NAMES.get(extractor, extractor)}** ({extractor}): "
                   f"{describe_extractor(extractor)}.")
    best = model.meta.get("best")
    if best:
        st.caption(f"Best value of {best.get('metric')} reached at step {best.get('step')}.")


def _no_verdict_reason(note: str) -> str:
    """Why an evaluation gave no memorisation verdict, without a leading "No verdict:"."""
    note = note.strip()
    if note.lower().startswith("no verdict"):
        note = note[len("no verdict"):].lstrip(":. ")
    return note or "the memorisation check was not run"


def memorisation_text(meta: dict) -> tuple[str, str] | None:
    """``(kind, text)`` of what the card says about memorisation: kind "warning" (memorised
    images found), "success" (none found) or "caption" (no verdict); None when no recorded
    evaluation looked. A verdict older than the latest evaluation is shown with its own
    evaluation's number and date, and the later one's reason for giving none."""
    status = memorisation_status(meta)
    if status is None:
        return None
    where = f"evaluation {status['number']}, {status['entry'].get('date')}"
    why = _no_verdict_reason(status["note"])
    if status["memorised"] is None:
        return "caption", f"**Memorisation** ({where}): no verdict: {why}"
    if status["caveat"]:  # the evaluation's own verdict, with its warning about the held-out images
        text = f"**Memorisation** ({where}): {status['caveat']}"
    elif status["memorised"]:
        text = (f"**Memorisation** ({where}): memorising: more generated samples sit on top of training images "
                "than chance allows. The Memorisation page shows the nearest matches.")
    else:
        text = (f"**Memorisation** ({where}): no sign of memorisation: generated samples are no closer to training "
                "images than unseen real galaxies are.")
    if status["later"] is not None:
        number, entry = status["later"]
        text += (f" Evaluation {number} ({entry.get('date')}) came later and gave no verdict ({why}); this verdict "
                 "is the latest the card holds and still describes these weights.")
    return ("warning" if status["memorised"] else "success"), text


def memorisation_ui(meta: dict) -> None:
    shown = memorisation_text(meta)
    if shown is None:
        return
    kind, text = shown
    if kind == "warning":
        st.warning(text, icon=":material/warning:")
    elif kind == "success":
        st.success(text, icon=":material/verified:")
    else:
        st.caption(text)


def model_card_ui(model: Pretrained) -> None:
    st.subheader(f":material/badge: {model.name}")
    widgets.model_badge(model)
    facts_ui(model)
    st.markdown("**Measured quality**")
    metrics_table_ui(model)
    if model.meta.get("note"):
        st.info(model.meta["note"], icon=":material/sticky_note_2:")
    with st.expander("Full model card"):
        st.code("\n".join(model_card_lines(model.meta)), language=None, wrap_lines=True)
        st.json({k: v for k, v in model.meta.items() if k not in ("optimizer", "config")}, expanded=False)


def _new_seed() -> None:
    st.session_state[SEED_KEY] = random.randrange(0, 2**31 - 1)


def sample_controls_ui() -> tuple[int, int]:
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1:
        seed = widgets.seed_ui("Seed", key=SEED_KEY, default=0)
    with c2:
        st.button("New samples", icon=":material/casino:", on_click=_new_seed, width="stretch",
                  help="Draw a fresh random seed")
    n = st.select_slider("Samples", options=[4, 9, 16, 25, 36, 64], value=16, key="home_n")
    return seed, n


def samples_ui(model: Pretrained) -> None:
    st.subheader(":material/grid_view: Samples")
    seed, n = sample_controls_ui()
    z = state.seed_latents(model, seed, n)
    rgb = state.render(model, z)
    scale = widgets.display_scale(model.resolution)
    labels = np.arange(n, dtype=np.int64) % model.num_classes if model.num_classes else None
    classes = {}
    if labels is not None:
        names = ", ".join(f"{i} {c}" for i, c in enumerate(model.class_names))
        classes = {"labels": labels.tolist(), "labels_rule": f"image i has class label i % {model.num_classes} ({names})"}
    record = widgets.record_for(model, seed=seed, count=n, note="image i comes from latents(seed, n)[i]", **classes)
    grid = widgets.grid_png(rgb, record, scale=scale)
    classes = ("" if labels is None else
               f" Conditional model: the images take the class labels in turn, "
               f"{', '.join(model.class_names)}, {model.class_names[0]}, … (read left to right).")
    widgets.show_image(grid, f"{n} samples from seed {seed}, PNG enlarged ×{scale} (fitted to the page's width)."
                             f"{classes} {widgets.stretch_note(model)}")
    if model.refs:  # a chained model: every stage of the same latents, side by side
        stages = state.render_stages(model, z)
        cols = st.columns(len(stages))
        for col, (stage, srgb) in zip(cols, stages.items()):
            with col:
                s_scale = max(1, scale * model.resolution // srgb.shape[1])
                widgets.show_image(widgets.grid_png(srgb, record, scale=s_scale),
                                   f"{stage}: {srgb.shape[1]} px, PNG enlarged ×{s_scale}")
    name = f"{model.name}_seed{seed}_n{n}"
    items = [
        ("Grid (PNG)", grid, f"{name}_grid.png", "image/png"),
        ("Each image (zip)", lambda: frames_zip(rgb, z, record=record, prefix="sample"),  # built when clicked
         f"{name}.zip", "application/zip"),
        widgets.latents_download(z, f"{name}_latents.npy"),
        *widgets.labels_download(labels, f"{name}_labels.npy"),
    ]
    fits = widgets.fits_download(model, z, seed=seed, file_name=f"{name}.fits")
    widgets.download_row(items + ([fits] if fits else []), key="home_dl")
    widgets.fits_note(model)


NEXT_STEPS = {
    "Train": "Train your own model and watch galaxies emerge",
    "Latent Explorer": "Interpolate between seeds and walk latent directions",
    "Style Mixing": "Mix coarse and fine styles of two galaxies",
    "Sky Composer": "Compose a sparse sky of generated galaxies",
    "Evaluation": "FID/KID, morphology and colours against real data",
    "Memorisation": "Check that samples are not copies of training images",
}


def next_steps_ui() -> None:
    st.divider()
    specs = [p for p in nav.available() if p.title in NEXT_STEPS]
    if not specs:
        return
    for col, spec in zip(st.columns(len(specs)), specs):
        with col:
            st.page_link(spec.file, label=spec.title, icon=spec.icon)
            st.caption(NEXT_STEPS[spec.title])


widgets.page_header("Galaxy GAN Studio", "Generative adversarial networks for galaxy images — trained, explored "
                    "and evaluated on this machine. Pick a checkpoint in the sidebar.")
with widgets.error_boundary("Loading the checkpoint"):
    model = state.selected_model()
    left, right = st.columns([3, 2], gap="large")
    with left:
        model_card_ui(model)
    with right:
        samples_ui(model)
next_steps_ui()
