"""Sky Composer: a sparse sky from a position model and a galaxy model (or a baseline), with
the truth table, a detection overlay, completeness / purity and the power-spectrum realism score."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from galaxy_core.io.checkpoint import read_meta
from galaxy_core.models.pretrained import list_checkpoints
from galaxy_core.paths import checkpoints_dir
from galaxy_core.sky.pipeline import BASELINES, SkyConfig, compose
from studio_ui import nav, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

CLASS_NAMES = {0: "galaxy", 1: "small", 2: "medium", 3: "large"}


@st.cache_data(show_spinner=False)
def _choices() -> tuple[list[str], list[str]]:
    """(position checkpoints, galaxy-stamp checkpoints) among the shipped ones.

    A galaxy model is a 3-band model of at most :data:`MAX_STAMP_PX` px, drawn once per 16 px
    cell; larger ones (the 128 px StackGAN chain, the end-to-end model of whole 128 px sky
    tiles) would paste a picture bigger than many cells into each.
    """
    pos, gal = [], []
    for p in list_checkpoints(checkpoints_dir()):
        data = read_meta(p).get("data", {})
        if data.get("kind") == "grid":
            pos.append(str(p))
        elif len(data.get("channels", [])) == 3 and int(data.get("resolution") or 0) <= MAX_STAMP_PX:
            gal.append(str(p))
    return pos, gal


MAX_STAMP_PX = 64  # galaxy stamps up to this side are offered (the shipped galaxy models: 32 and 64 px)


def _index(options: list[str], wanted: str) -> int:
    """Position of the option whose file name matches ``wanted`` (a path or a name), else 0."""
    names = [Path(o).name for o in options]
    return names.index(Path(wanted).name) if Path(wanted).name in names else 0


def config_ui() -> SkyConfig:
    pos, gal = _choices()
    default = SkyConfig()  # the shipped defaults (configs/sky_default.toml) are selected first
    pos_opts, gal_opts = pos + ["random"] + list(BASELINES), gal + ["stamps"]
    c1, c2 = st.columns(2)
    positions = c1.selectbox("Positions", pos_opts, key="sky_positions", index=_index(pos_opts, default.positions),
                             format_func=lambda p: Path(p).stem if p.endswith(".json") else p,
                             help="A position GAN (grid of cells), independent random cells, or a whole-sky baseline.")
    galaxies = c2.selectbox("Galaxies", gal_opts, key="sky_galaxies", index=_index(gal_opts, default.galaxies),
                            format_func=lambda p: Path(p).stem if p.endswith(".json") else f"{p} (real hdf stamps)",
                            disabled=positions in BASELINES)
    bands = read_meta(galaxies).get("data", {}).get("channels", []) if galaxies.endswith(".json") else []
    if bands and [b.upper() for b in bands] != ["R", "G", "B"] and positions not in BASELINES:
        c2.caption(f"A model of the survey bands {', '.join(bands)}: they fill the sky's R, G, B planes reddest "
                   "first, as display values on the deep field's background; the calibrations aim at the hdf stamps.")
    c1, c2, c3 = st.columns(3)
    size = c1.select_slider("Sky size (px)", [256, 512, 768, 1000, 1500, 2000], value=512, key="sky_size")
    with c2:
        seed = widgets.seed_ui("Seed", key="sky_seed")
    jitter = c3.slider("Sub-cell jitter", 0.0, 0.5, 0.35, 0.05, key="sky_jitter")
    flux_match = c3.checkbox("Match galaxy fluxes to the data", value=default.flux_match, key="sky_flux_match",
                             help="Scale each model galaxy so its total flux has the rank in the real stamps' flux "
                                  "distribution that it has among the model's own galaxies (shapes stay the model's).")
    size_match = c3.checkbox("Galaxies of each cell's size class", value=default.size_match, key="sky_size_match",
                             help="For a galaxy model without size classes: draw four galaxies per cell, measure "
                                  "each one's area as the catalogue does, and give every cell one of its class "
                                  "(small / medium / large). Off: any galaxy in any cell.")
    modulate = c3.checkbox("Vary sky level and noise as the field does", value=default.modulate, key="sky_modulate",
                           help="The deep field's sky level (about 0.4 of an 8-bit level) and noise amplitude "
                                "(about 5 %) change slowly across it, on scales of about 35 px; off: the same "
                                "everywhere.")
    with st.expander("Class mix (occupancy models and random cells)"):
        m1, m2, m3 = st.columns(3)
        mix = [m1.slider("small", 0.0, 1.0, 1.0, key="sky_mix_s"), m2.slider("medium", 0.0, 1.0, 1.0, key="sky_mix_m"),
               m3.slider("large", 0.0, 1.0, 1.0, key="sky_mix_l")]
        occupancy = st.slider("Random cells: occupancy", 0.01, 0.5, 0.11, key="sky_occ")
    if sum(mix) <= 0:
        mix = [1.0, 1.0, 1.0]
    return SkyConfig(height=size, width=size, seed=seed, positions=positions, galaxies=galaxies, jitter=jitter,
                     class_mix=mix, occupancy=occupancy, flux_match=flux_match, size_match=size_match,
                     modulate=modulate)


LARGE = 1000 * 1000  # skies with more pixels than this get a progress bar


@st.cache_data(show_spinner="Composing the sky…", max_entries=8)
def _compose(cfg_items: tuple):
    cfg = SkyConfig(**dict((k, list(v) if isinstance(v, tuple) else v) for k, v in cfg_items))
    if cfg.height * cfg.width <= LARGE:
        sky = compose(cfg)
    else:
        bar = st.progress(0.0, text="Composing the sky…")
        sky = compose(cfg, progress=lambda done, total: bar.progress(done / total, text=f"Composing the sky: "
                                                                     f"{done * 50 // total} of 50"))
        bar.empty()
    return sky.image, sky.truth, sky.background_sum, sky.meta


@st.cache_data(show_spinner="Detecting galaxies…", max_entries=8)
def _detect(cfg_items: tuple, radius: float) -> dict:
    from galaxy_core.sky.detect import detection_report

    image, truth, _, _ = _compose(cfg_items)
    rep = detection_report(image, truth, radius=radius)
    missed = rep.galaxy_xy[rep.matched < 0]
    return {"summary": rep.summary(), "x": rep.detections["x"], "y": rep.detections["y"], "kind": rep.kind,
            "missed_x": missed[:, 0], "missed_y": missed[:, 1]}


@st.cache_resource(show_spinner="Fitting the realism scorer…")
def _scorer():
    from galaxy_core.metrics.realism import load_scorer

    return load_scorer()


def figure(image: np.ndarray, truth, det: dict | None):
    import plotly.graph_objects as go

    from galaxy_core.sky.mosaic import sky_to_rgb8

    fig = go.Figure(go.Image(z=sky_to_rgb8(image), hovertemplate="x %{x}, y %{y}<br>R, G, B %{z} "
                                                                 "(field units x 255)<extra></extra>"))
    row = np.flatnonzero(np.asarray(truth["cls"]) > 0) if len(truth) else np.zeros(0, np.int64)
    truth = truth[row]  # galaxies only: the faint sources (cls -1) and stars (cls -2) get no marker
    if len(truth):
        names = [CLASS_NAMES.get(int(c), str(c)) for c in truth["cls"]]
        cols = [np.round(np.asarray(truth[c], float), 2) for c in ("flux", "flux_r", "flux_g", "flux_b")]
        fig.add_trace(go.Scatter(x=np.asarray(truth["x"]), y=np.asarray(truth["y"]), mode="markers", name="placed",
                                 marker=dict(symbol="circle-open", size=9, color="#4da3ff"),
                                 customdata=np.column_stack([row, names, *cols, np.asarray(truth["tile"])]),
                                 hovertemplate="truth row %{customdata[0]}: placed %{customdata[1]}"
                                               "<br>flux %{customdata[2]} (R %{customdata[3]}, G %{customdata[4]}, "
                                               "B %{customdata[5]})<br>x %{x:.1f}, y %{y:.1f}, tile %{customdata[6]}"
                                               "<extra></extra>"))
    if det is not None:
        from galaxy_core.sky.detect import DETECTED_GALAXY, DETECTED_SOURCE, DETECTED_SPURIOUS

        # one trace per kind, so a click on the legend hides or shows it; the detections of faint
        # sources and stars (most of them on a default sky) start hidden
        for kind, name, color, visible in ((DETECTED_GALAXY, "detected galaxy", "#ff5a5a", True),
                                           (DETECTED_SPURIOUS, "detected, nothing placed there", "#ffb000", True),
                                           (DETECTED_SOURCE, "detected faint source or star", "#b0b0b0",
                                            "legendonly")):
            sel = np.asarray(det["kind"]) == kind
            fig.add_trace(go.Scatter(x=np.asarray(det["x"])[sel], y=np.asarray(det["y"])[sel], mode="markers",
                                     name=f"{name} ({int(sel.sum())})", visible=visible,
                                     marker=dict(symbol="x-thin-open", size=8, color=color, line=dict(width=1.5)),
                                     hovertemplate=f"{name}<br>x %{{x:.1f}}, y %{{y:.1f}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=det["missed_x"], y=det["missed_y"], mode="markers",
                                 name=f"missed galaxy ({len(det['missed_x'])})",
                                 marker=dict(symbol="square-open", size=11, color="#ffe14d"),
                                 hovertemplate="placed galaxy not detected<br>x %{x:.1f}, y %{y:.1f}<extra></extra>"))
    side = image.shape[-1]
    fig.update_layout(height=min(800, max(450, side)), margin=dict(l=0, r=0, t=0, b=0),
                      legend=dict(orientation="h", y=1.02), xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def downloads_ui(image, truth, background_sum, meta, seed: int) -> None:
    from galaxy_core.sky.compose import Sky
    from galaxy_core.sky.mosaic import write_sky

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sky(Sky(image=image, truth=truth, background_sum=background_sum, meta=meta), Path(tmp) / "sky")
        data = {p.suffix: p.read_bytes() for p in paths}
    stem = f"sky_seed{seed}_{image.shape[2]}x{image.shape[1]}"  # skies of other sizes get other names
    widgets.download_row([
        ("PNG", data[".png"], f"{stem}.png", "image/png"),
        ("FITS + truth table", data[".fits"], f"{stem}.fits", "application/fits"),
        ("Truth CSV", data[".csv"], f"{stem}.csv", "text/csv"),
    ], key="sky_dl")


def main() -> None:
    widgets.page_header("Sky Composer", "Two-stage sparse skies: a position GAN decides which cells of a 32 × 32 "
                        "grid hold a galaxy (and its size class); a galaxy GAN (by default the 32 px FastGAN, whose "
                        "skies are the hardest to tell from the deep field; or BEGAN, DCGAN) draws each galaxy, whose flux is added onto a background with "
                        "the deep field's own correlated noise. Display: field units, linear, clipped.")
    cfg = config_ui()
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in cfg.__dict__.items()))
    with widgets.error_boundary("Composing the sky"):
        image, truth, background_sum, meta = _compose(items)
        c1, c2 = st.columns([3, 1])
        overlay = c2.toggle("Detection overlay", value=True, key="sky_overlay")
        radius = c2.slider("Matching radius (px)", 1.0, 10.0, 5.0, 0.5, key="sky_radius")
        det = _detect(items, radius) if overlay else None
        c1.plotly_chart(figure(image, truth, det), width="stretch", key="sky_fig")
        cls = np.asarray(truth["cls"]) if len(truth) else np.zeros(0, np.int64)
        n_faint, n_stars = int(np.sum(cls == -1)), int(np.sum(cls == -2))
        c2.metric("Galaxies placed", int(np.sum(cls >= 0)),
                  help=f"plus {n_faint} faint sources below the catalogue's size cut and {n_stars} stars"
                  if n_faint or n_stars else None)
        if det is not None:
            s = det["summary"]
            c2.metric("Completeness", f"{s['completeness']:.2f}", help=f"placed galaxies detected within {radius} px")
            c2.metric("Completeness (bright half)", f"{s['completeness_bright']:.2f}")
            c2.metric("Purity", f"{s['purity']:.2f}",
                      help=f"{s['n_detected']} detections; fraction matched to a placed galaxy (or within "
                           f"{s['source_radius_px']:.1f} px of a faint source or star); galaxies only: "
                           f"{s['purity_galaxies']:.2f}")
        if min(image.shape[1:]) >= _scorer().tile:
            score = _scorer().score(image)
            c2.metric("Realism score", f"{score:.2f}",
                      help="Probability of 'real deep field' from the power-spectrum + intensity-histogram "
                           "classifier (real hdf tiles vs baseline skies); mean over 128 px tiles.")
        downloads_ui(image, truth, background_sum, meta, cfg.seed)
        with st.expander("Truth table"):
            buf = io.StringIO()
            truth.write(buf, format="ascii.csv")
            st.dataframe(truth.to_pandas() if hasattr(truth, "to_pandas") else buf.getvalue(), height=240)


main()
