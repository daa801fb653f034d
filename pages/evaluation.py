"""Evaluation: feature-space distances, morphology and colours of generated against real galaxies.

The numbers are those of ``galaxygan evaluate`` (:mod:`galaxy_core.metrics.report`) for the same
checkpoint, data, sample size, extractor and seed: two disjoint real samples are drawn, the first
is compared with the generated images and with the second, which gives the real-vs-real floor.
Long steps are cached in chunks, so a progress bar advances between them and a repeat is instant.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from galaxy_core.explore import evaluation as ev
from galaxy_core.io.render import display_note, make_grid, png_bytes, to_rgb
from galaxy_core.metrics import plots
from galaxy_core.metrics.colour_box import BOX_NSIGMA, read_box_fraction
from galaxy_core.metrics.fid import parse_metric_name
from galaxy_core.metrics.photometry import absolute_magnitude, acceptance_box, fraction_in_box
from galaxy_core.metrics.report import feature_metrics
from galaxy_core.metrics.samples import sample_size_warnings
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

RUN_KEY = "ev_requested"
N_OPTIONS = [64, 128, 256, 512, 1000]
CHUNK = 32        # images per cached morphology / photometry step
GEN_CHUNK = 128   # images per cached generation step
SETS = {"real": "real", "heldout": "second real sample", "generated": "generated"}


# ------------------------------------------------------------------------------ cached stages
# A source is ("real" | "heldout", data_key, n, seed) or ("generated", model_key, m, seed).


@st.cache_data(max_entries=8, show_spinner=False)
def real_pair(data_key: tuple, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return ev.real_pair(state.dataset(data_key), n, seed=seed)


@st.cache_data(max_entries=64, show_spinner=False)
def generated_chunk(model_key: tuple, seed: int, start: int, stop: int) -> np.ndarray:
    model = state.cached_model(model_key)
    return model.generate(model.latents(seed, stop).numpy()[start:stop])


def images(source: tuple, update=None) -> np.ndarray:
    """Model-range images of a source; generated ones chunk by chunk (cached)."""
    kind, key, n, seed = source
    if kind != "generated":
        _, x_a, _, x_b = real_pair(key, n, seed)
        return x_a if kind == "real" else x_b
    parts = []
    for start in range(0, n, GEN_CHUNK):
        parts.append(generated_chunk(key, seed, start, min(start + GEN_CHUNK, n)))
        if update:
            update(min(start + GEN_CHUNK, n), n)
    return np.concatenate(parts)


def source_info(source: tuple) -> tuple[list[str], dict | None, float | None]:
    """(channels, stretch, zero point) of a source's images."""
    if source[0] != "generated":
        data = state.dataset(source[1])
        return data.channels, data.stretch, data.manifest.get("zero_point")
    model = state.cached_model(source[1])
    return model.channels, model.stretch, model.meta["data"].get("zero_point")


@st.cache_data(max_entries=16, show_spinner=False)
def distances(real: tuple, heldout: tuple, generated: tuple, extractor: str) -> dict:
    return feature_metrics(images(real), images(heldout), images(generated), extractor=extractor)


@st.cache_data(max_entries=512, show_spinner=False)
def morphology_chunk(source: tuple, start: int, stop: int) -> dict[str, np.ndarray]:
    _, stretch, _ = source_info(source)
    table = ev.morphology(ev.to_linear(images(source)[start:stop], stretch=stretch))
    return {c: np.asarray(table[c], float) for c in ev.MORPHOLOGY_COLUMNS}


@st.cache_data(max_entries=512, show_spinner=False)
def cmd_chunk(source: tuple, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    channels, stretch, zero_point = source_info(source)
    flux = ev.to_linear(images(source)[start:stop], stretch=stretch)
    return ev.colour_magnitude(flux, channels=channels, zero_point=zero_point)


def in_chunks(fn, source: tuple, update) -> list:
    """``fn(source, start, stop)`` over chunks of a source, advancing the progress bar."""
    n = len(images(source))
    out = []
    for start in range(0, n, CHUNK):
        out.append(fn(source, start, min(start + CHUNK, n)))
        update(min(start + CHUNK, n), n)
    return out


def morphology(source: tuple, update) -> dict[str, np.ndarray]:
    parts = in_chunks(morphology_chunk, source, update)
    return {c: np.concatenate([p[c] for p in parts]) for c in ev.MORPHOLOGY_COLUMNS}


def colour_magnitude(source: tuple, update) -> tuple[np.ndarray, np.ndarray]:
    """Apparent r magnitude and g − r of each image of a source."""
    parts = in_chunks(cmd_chunk, source, update)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ------------------------------------------------------------------------------------ widgets


def reference_ui(model: Pretrained) -> tuple | None:
    """The data to compare against, as a :func:`state.data_key` (None until it is usable)."""
    own = ev.training_data(model.meta)
    label = f"Training data of this checkpoint ({own['spec']}, {own['resolution']} px)"
    choice = st.radio("Reference data", ["training", "folder"], horizontal=True, key="ev_ref",
                      format_func={"training": label, "folder": "A folder or FITS file in the workspace"}.get)
    if choice == "training":
        return state.data_key(**own)
    path = widgets.workspace_path_ui("Folder or FITS file", key="ev_path", placeholder="data/my_galaxies")
    if path is None:
        return None
    # prepared as the training data was (crop, normalisation, ...), as `galaxygan evaluate --data` does,
    # so the real-vs-real floor and the generated-vs-real scores see the same preprocessing
    return state.data_key(**dict(own, spec=str(path)))


def settings_ui() -> tuple[int, str, int]:
    c1, c2, c3 = st.columns(3)
    n = c1.select_slider("Samples", N_OPTIONS, value=128, key="ev_n",
                         help="Generated images, and real images in each of the two real samples (at most half "
                              "the data each). More samples: smaller bias, slower.")
    names = ev.extractor_names()
    extractor = c2.selectbox("Feature extractor", names, key="ev_extractor",
                             help="; ".join(f"{name}: {ev.describe_extractor(name)}" for name in names))
    with c3:
        seed = widgets.seed_ui("Seed", key="ev_seed", default=0,
                               help="Seed of the generated latents and of the real samples.")
    return n, extractor, seed


# ------------------------------------------------------------------------------------ results


def distances_ui(result: dict, n: int) -> None:
    st.subheader(":material/functions: Feature-space distances")
    gen, floor, extractor, names = result["generated"], result["floor"], result["extractor"], result["names"]
    fid, kid, kid_std = names["fid"], names["kid"], names["kid_std"]
    c1, c2, c3 = st.columns(3)
    c1.metric(fid, f"{gen[fid]:.4g}", border=True,
              help="Fréchet distance of Gaussians fitted to the features (Heusel et al. 2017); squared feature "
                   "units; lower is better.")
    c1.caption(f"Real-vs-real floor {floor[fid]:.4g}; generated / floor = {result['fid_ratio_to_floor']:.2f}.")
    c2.metric(kid, f"{gen[kid]:.3g} ± {gen[kid_std]:.2g}", border=True,
              help="Kernel distance, unbiased at small samples (Bińkowski et al. 2018); mean ± std over subsets.")
    c2.caption(f"Real-vs-real floor {floor[kid]:.3g} ± {floor[kid_std]:.2g}.")
    c3.metric("precision / recall", f"{gen[names['precision']]:.2f} / {gen[names['recall']]:.2f}", border=True,
              help="Kynkäänniemi et al. 2019: generated inside the real manifold / real inside the generated one.")
    c3.caption(f"Density {gen[names['density']]:.2f}, coverage {gen[names['coverage']]:.2f} (Naeem et al. 2020); "
               f"floor {floor[names['precision']]:.2f} / {floor[names['recall']]:.2f}.")
    st.caption(f"Extractor **{extractor}**: {ev.describe_extractor(extractor)}. "
               f"`{fid}`: {parse_metric_name(fid).description}; the floor compares the real sample with a second, "
               "disjoint real sample of the same size.")


def morphology_ui(tables: dict[str, dict], *, physical: bool) -> None:
    st.subheader(":material/straighten: Morphology, real vs generated")
    rows = []
    cols = st.columns(3)
    for i, (col, (name, axis)) in enumerate(ev.MORPHOLOGY_COLUMNS.items()):
        real, heldout, fake = (t[col] for t in (tables["real"], tables["heldout"], tables["generated"]))
        gen = ev.compare_morphology({col: real}, {col: fake}, columns=(col,))[col]
        floor = ev.compare_morphology({col: real}, {col: heldout}, columns=(col,))[col]
        title = name if "error" in gen else f"{name}: KS {gen['ks']:.2f}, W {gen['wasserstein']:.3g}"
        fig = plots.histograms({"real": real, "generated": fake}, title=title, x_title=axis)
        cols[i % 3].plotly_chart(fig, key=f"ev_hist_{col}")
        if "error" not in gen and "error" not in floor:
            rows.append({"quantity": name, "axis": axis, "KS": gen["ks"], "KS p-value": gen["ks_p"],
                         "Wasserstein": gen["wasserstein"], "real-vs-real KS": floor["ks"],
                         "real-vs-real W": floor["wasserstein"], "n real": gen["n_real"], "n generated": gen["n_fake"]})
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.3g") for k in
                                ("KS", "KS p-value", "Wasserstein", "real-vs-real KS", "real-vs-real W")})
    flux = ("flux in the data's units (the stretch inverted)" if physical
            else "sum of 8-bit pixel values / 255 (the images are not calibrated)")
    st.caption("Segmentation morphology (photutils) of the central galaxy, measured identically on every set; "
               f"brightness is {flux}. Wasserstein distances (W) are in each axis' unit; failed measurements are "
               "left out. Real-vs-real: the real sample against the second real sample.")


def absolute_or_apparent(mags: dict, redshift: dict) -> tuple[dict, str]:
    """M_r: the real sample (which draws the box) at its catalogue redshifts, the generated galaxies and
    the second real sample (the floor, treated as a perfect generator's would be) at the real median;
    else apparent m_r."""
    if redshift["real"] is None:
        return {k: v[0] for k, v in mags.items()}, "apparent r magnitude m_r (mag; the data has no redshifts)"
    z_med = float(np.median(redshift["real"]))
    out = {}
    for name, (m_r, _) in mags.items():
        z = redshift["real"] if name == "real" else np.full(len(m_r), z_med)
        out[name] = absolute_magnitude(m_r, z)
    return out, (f"absolute r magnitude M_r (mag; generated galaxies and the second real sample placed at the "
                 f"median real z = {z_med:.3f})")


def cmd_ui(mags: dict, redshift: dict) -> None:
    st.subheader(":material/scatter_plot: Colour–magnitude diagram")
    M, mag_title = absolute_or_apparent(mags, redshift)
    colour = {k: v[1] for k, v in mags.items()}
    box = acceptance_box(M["real"], colour["real"], nsigma=BOX_NSIGMA)
    c1, c2 = st.columns([3, 1])
    fig = plots.colour_magnitude(
        {SETS[k]: (M[k], colour[k]) for k in ("real", "generated")},
        box={"mag_min": box.mag_lo, "mag_max": box.mag_hi, "colour_min": box.colour_lo, "colour_max": box.colour_hi},
        title=f"g − r against r (dashed: acceptance box, real median ± {BOX_NSIGMA}σ)", mag_title=mag_title,
        colour_title="g − r colour (mag)")
    fig.update_xaxes(autorange="reversed")  # bright to the right, as astronomers read it
    c1.plotly_chart(fig, key="ev_cmd")
    f_gen = fraction_in_box(M["generated"], colour["generated"], box)
    f_real = fraction_in_box(M["heldout"], colour["heldout"], box)
    c2.metric("Generated inside the box", f"{f_gen:.1%}", border=True)
    c2.metric("Second real sample inside", f"{f_real:.1%}", border=True,
              help="The floor: real galaxies not used to draw the box.")
    reading = read_box_fraction(f_gen, f_real, n_generated=len(M["generated"]), n_real=len(M["heldout"]))
    (c2.warning if reading["reading"] != "consistent" else c2.caption)(reading["sentence"])
    c2.caption("One Kron aperture per galaxy for all bands (aperture-matched colours), no K-correction. "
               "Undetected galaxies count as outside.")


def thumbnails_ui(model: Pretrained, real: np.ndarray, fake: np.ndarray, data_channels: list[str],
                  data_stretch: dict | None, seed: int) -> None:
    c1, c2 = st.columns(2)
    scale = widgets.display_scale(model.resolution)
    c1.image(png_bytes(make_grid(to_rgb(real[:16], data_channels), ncols=8), scale=scale), output_format="PNG",
             caption=f"Real (first 16). Display: {display_note(data_channels, data_stretch)}.")
    c2.image(png_bytes(make_grid(to_rgb(fake[:16], model.channels), ncols=8), scale=scale), output_format="PNG",
             caption=f"Generated (first 16). {widgets.stretch_note(model)}")
    if model.refs:  # a chain: the same 16 latents at every stage, side by side (generated i = latents(seed, n)[i])
        z = state.seed_latents(model, seed, len(fake))[:16]
        widgets.stage_images_ui(state.render_stages(model, z), widgets.record_for(model, seed=seed), ncols=8,
                                resolution=model.resolution, what=" · generated (first 16)")


def results_ui(model: Pretrained, data_key: tuple, n: int, extractor: str, seed: int) -> None:
    data = state.dataset(data_key)
    ev.check_compatible(model, data)
    idx_a, real, idx_b, _ = real_pair(data_key, n, seed)
    sources = {"real": ("real", data_key, n, seed), "heldout": ("heldout", data_key, n, seed),
               "generated": ("generated", state.model_cache_key(model), len(real), seed)}
    with_cmd = model.physical and {"g", "r"} <= {c.lower() for c in model.channels}
    for warning in sample_size_warnings(n, n_real=len(real), extractors=(extractor,), num_bands=len(model.channels),
                                        data_name=data.name):
        st.warning(warning.replace(" -n ", " a sample size of "), icon=":material/warning:")
    prog = widgets.StageProgress(8 if with_cmd else 5)
    fake = images(sources["generated"], prog.stage(0, "Generating images"))
    prog.stage(1, f"Feature metrics with the {extractor} extractor")
    dist = distances(sources["real"], sources["heldout"], sources["generated"], extractor)
    tables = {k: morphology(src, prog.stage(2 + i, f"Measuring the {SETS[k]} galaxies"))
              for i, (k, src) in enumerate(sources.items())}
    mags = None
    if with_cmd:
        mags = {k: colour_magnitude(src, prog.stage(5 + i, f"Photometry of the {SETS[k]} galaxies"))
                for i, (k, src) in enumerate(sources.items())}
    prog.done()
    thumbnails_ui(model, real, fake, data.channels, data.stretch, seed)
    distances_ui(dist, len(real))
    morphology_ui(tables, physical=model.physical)
    if mags is not None:
        cmd_ui(mags, {"real": ev.redshifts(data, idx_a), "heldout": ev.redshifts(data, idx_b), "generated": None})
    else:
        st.info("The colour–magnitude diagram needs a multi-band checkpoint with g and r bands in flux units "
                "(for example one trained on the built-in sim data).", icon=":material/info:")


widgets.page_header("Evaluation", "How close are generated galaxies to real ones? Feature-space distances, "
                    "morphology distributions and, for multi-band models, the colour–magnitude diagram — each "
                    "beside the value two real samples reach.")
with widgets.error_boundary("Evaluation"):
    model = state.selected_model()
    widgets.model_badge(model)
    widgets.chain_note(model, ev.training_data(model.meta)["spec"])
    data_key = reference_ui(model)
    n, extractor, seed = settings_ui()
    request = (str(model.path), data_key)  # once evaluated, setting changes recompute what they affect
    if st.button("Evaluate", type="primary", icon=":material/play_arrow:", disabled=data_key is None,
                 key="ev_go", help="Results are cached: repeating an evaluation is instant."):
        st.session_state[RUN_KEY] = request
    if data_key is not None and st.session_state.get(RUN_KEY) == request:
        results_ui(model, data_key, n, extractor, seed)
    elif data_key is not None:
        st.caption("Choose the reference data and press Evaluate. With 128 samples it takes well under a minute "
                   "for 32 and 64 px models on a laptop CPU the first time (8-21 s measured), about a minute and a "
                   "half for the 128 px chain; afterwards, changed settings recompute only what they affect. "
                   "`galaxygan evaluate` writes the same numbers to a report folder.")
