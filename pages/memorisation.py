"""Memorisation: are generated galaxies new, or copies of training images?

Each generated sample is shown beside its k nearest training images under a chosen distance;
the distances of generated samples are compared with those of real images the model never saw
(:func:`galaxy_core.metrics.vetting.memorisation_report`), and suspects are listed first.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import streamlit as st

from galaxy_core.explore import evaluation as ev
from galaxy_core.io.render import display_note, png_bytes, to_rgb
from galaxy_core.metrics import plots
from galaxy_core.metrics.vetting import build_index, memorisation_report, nearest_matches
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

RUN_KEY = "mem_requested"
FEATURES = next(n for n in ev.extractor_names() if n != "inception")  # galaxy encoder when shipped, else pix8
METRICS = {"l1": "L1, central crop (half the side)", "mse": "MSE, border excluded",
           "ssim": "1 − SSIM, whole image", "cosine": f"feature cosine distance ({FEATURES} features)"}
UNITS = {"l1": "mean |Δ| in model range [-1, 1]", "mse": "mean Δ² in model range [-1, 1]",
         "ssim": "1 − SSIM (dimensionless)", "cosine": "1 − cos (dimensionless)"}


# ------------------------------------------------------------------------------ cached compute


@st.cache_data(max_entries=8, show_spinner=False)
def generated(model_key: tuple, n: int, seed: int) -> np.ndarray:
    return ev.generated_sample(state.cached_model(model_key), n, seed=seed)[1]


@st.cache_resource(max_entries=8, show_spinner=False)
def _search_space(data_key: tuple, metric: str, features: str):
    train = state.dataset(data_key)
    if metric == "cosine":
        return ev.dataset_features(train, state.feature_fn(features)), None
    return train.images, None  # exact search: the PCA pre-filter misses true nearest images on real data


def search_space(data_key: tuple, metric: str):
    """(what the training set is searched in, PCA index or None): its images, or their features."""
    return _search_space(data_key, metric, FEATURES)


def _queries(x: np.ndarray, metric: str) -> np.ndarray:
    return ev.extract_features(x, fn=state.feature_fn(FEATURES)) if metric == "cosine" else x


def _search(x: np.ndarray, data_key: tuple, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    space, index = search_space(data_key, metric)
    opts = {} if index is None else {"index": index}
    return nearest_matches(_queries(x, metric), space, metric=metric, k=k, **opts)


@st.cache_data(max_entries=16, show_spinner=False)
def matches(model_key: tuple, data_key: tuple, n: int, seed: int, metric: str, k: int):
    """k nearest training images of each generated sample: (indices (n, k), distances (n, k))."""
    return _search(generated(model_key, n, seed), data_key, metric, k)


@st.cache_data(max_entries=16, show_spinner=False)
def baselines(model_key: tuple, data_key: tuple, metric: str, n: int) -> dict:
    """Nearest-training distances of ``n`` held-out images (when there are any) and of ``n``
    training images to their nearest other one (as ``galaxygan evaluate`` draws them)."""
    model, train = state.cached_model(model_key), state.dataset(data_key)
    space, index = search_space(data_key, metric)
    query = np.random.default_rng(1).choice(len(train), size=min(n, len(train)), replace=False)
    train_d = ev.leave_one_out(space, query, metric=metric, **({} if index is None else {"index": index}))
    held, about = ev.held_out_sample(model.meta, train, n)
    held_d = None if held is None else _search(held, data_key, metric, 1)[1][:, 0]
    return {"train": train_d, "held": held_d, "about": about}


# ------------------------------------------------------------------------------------ widgets


def settings_ui() -> tuple[str, int, int, int, int]:
    c1, c2, c3, c4, c5 = st.columns([3, 1, 2, 2, 2])
    metric = c1.selectbox("Distance", list(METRICS), format_func=METRICS.get, key="mem_metric")
    k = c2.number_input("k nearest", 1, 5, 3, key="mem_k")
    n = c3.select_slider("Generated samples", [16, 32, 64, 128, 256], value=64, key="mem_n",
                         help="Searched against the whole training set; their distances feed the statistics.")
    show = c4.select_slider("Shown", [4, 8, 16, 32], value=8, key="mem_show", help="Closest samples shown first.")
    with c5:
        seed = widgets.seed_ui("Seed", key="mem_seed", default=0)
    return metric, int(k), n, show, seed


def report_ui(report: dict, metric: str, held_about: str) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Flagged as suspects", f"{report['n_flagged']} of {len(report['flagged'])}", border=True,
              help=f"Closer to a training image than {report['percentile']:.0f}% of held-out images are.")
    c2.metric("Expected by chance", f"{report['expected_fraction']:.1%}", border=True)
    c3.metric("Excess p-value", f"{report['excess_p']:.2g}", border=True,
              help="One-sided binomial test of the flagged count against the chance rate.")
    c4.metric("Median distance ratio", f"{report['median_ratio']:.2f}", border=True,
              help="Generated / held-out median nearest-training distance; well below 1 suggests copying.")
    if report["memorised"]:
        st.warning("More generated samples sit on top of training images than chance allows: inspect the "
                   "suspects below.", icon=":material/warning:")
    else:
        st.success("No sign of memorisation at this sample size: generated samples are no closer to training "
                   "images than unseen real galaxies are.", icon=":material/verified:")
    st.caption(f"Threshold {report['threshold']:.4g} ({UNITS[metric]}). Held-out reference: {held_about}.")


def histogram_ui(gen_d: np.ndarray, base: dict, threshold: float, metric: str) -> None:
    groups = {"generated → train": gen_d}
    if base["held"] is not None:
        groups["held-out → train"] = base["held"]
    groups["train → other train"] = base["train"]
    fig = plots.histograms(groups, title="Nearest-training-image distances", x_title=f"distance ({UNITS[metric]})")
    fig.add_vline(x=threshold, line_dash="dash", line_color="#ff6b6b", annotation_text="suspect threshold",
                  annotation_position="bottom right", annotation_yshift=-4)
    st.plotly_chart(fig, key="mem_hist")


def panel_ui(i: int, gen_rgb: np.ndarray, train_rgb: np.ndarray, idx: np.ndarray, dist: np.ndarray,
             flagged: bool, scale: int) -> None:
    """One generated sample beside its nearest training images, each with its distance."""
    with st.container(border=True):
        tag = ":red-badge[:material/flag: suspect]" if flagged else ":green-badge[new]"
        st.markdown(f"**Generated #{i}** {tag} beside its nearest training images")
        cols = st.columns(1 + len(idx), gap="small")
        cols[0].image(png_bytes(gen_rgb, scale=scale), caption=f"generated #{i}", output_format="PNG",
                      width="stretch")
        for col, im, j, d in zip(cols[1:], train_rgb, idx, dist):
            col.image(png_bytes(im, scale=scale), caption=f"#{j} · d = {d:.3g}", output_format="PNG",
                      width="stretch")


def matches_csv(order: np.ndarray, idx: np.ndarray, dist: np.ndarray, flagged: np.ndarray, record: dict) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f"# checkpoint {record['checkpoint']} ({record['checkpoint_id']}), seed {record['seed']}: "
                "sample i is latents(seed, n)[i]"])
    w.writerow(["sample", "flagged"] + [f"train_{j + 1}" for j in range(idx.shape[1])] +
               [f"distance_{j + 1}" for j in range(idx.shape[1])])
    for i in order:
        w.writerow([i, bool(flagged[i]), *idx[i].tolist(), *[f"{d:.6g}" for d in dist[i]]])
    return buf.getvalue().encode()


def results_ui(model: Pretrained, data_key: tuple, metric: str, k: int, n: int, show: int, seed: int) -> None:
    data = state.dataset(data_key)
    ev.check_compatible(model, data)
    mk = state.model_cache_key(model)
    prog = widgets.StageProgress(4)
    prog.stage(0, "Generating samples")
    x = generated(mk, n, seed)
    prog.stage(1, f"Indexing {len(data)} training images and searching ({METRICS[metric]})")
    idx, dist = matches(mk, data_key, n, seed, metric, k)
    prog.stage(2, "Distances of held-out and training images")
    base = baselines(mk, data_key, metric, n)
    prog.stage(3, "Statistics")
    held = base["held"] if base["held"] is not None else base["train"]
    report = memorisation_report(dist[:, 0], held, base["train"], percentile=5.0)
    prog.done()
    report_ui(report, metric, base["about"])
    histogram_ui(dist[:, 0], base, report["threshold"], metric)
    order = np.argsort(dist[:, 0], kind="stable")  # closest first: suspects lead
    scale = widgets.display_scale(model.resolution)
    st.subheader(":material/compare: Closest samples first")
    st.caption(f"Generated: {display_note(model.channels, model.stretch)}. Training: "
               f"{display_note(data.channels, data.stretch)}. Distances: {UNITS[metric]}.")
    gen_rgb = to_rgb(x[order[:show]], model.channels)
    cols = st.columns(2)
    for slot, (i, rgb) in enumerate(zip(order[:show], gen_rgb)):
        with cols[slot % 2]:
            neighbours = to_rgb(data.to_model_range(idx[i]), data.channels)
            panel_ui(int(i), rgb, neighbours, idx[i], dist[i], bool(report["flagged"][i]), scale)
    record = widgets.record_for(model, seed=seed, metric=metric, k=k, n=n)
    widgets.download_row([("Matches (CSV)", matches_csv(order, idx, dist, report["flagged"], record),
                           f"{model.name}_matches_{metric}.csv", "text/csv")], key="mem_dl")


widgets.page_header("Memorisation", "Generated galaxies beside their nearest training images. A model that copies "
                    "its training set can look perfect on every other metric.")
with widgets.error_boundary("The memorisation check"):
    model = state.selected_model()
    widgets.model_badge(model)
    own = ev.training_data(model.meta)
    data_key = state.data_key(own["spec"], resolution=own["resolution"], crop=own["crop"], count=own["count"],
                              seed=own["seed"], normalisation=own["normalisation"])
    st.caption(f"Training data: **{own['spec']}** at {own['resolution']} px, as recorded in the checkpoint.")
    metric, k, n, show, seed = settings_ui()
    request = str(model.path)  # once searched, setting changes recompute only what they affect
    if st.button("Find nearest training images", type="primary", icon=":material/search:", key="mem_go"):
        st.session_state[RUN_KEY] = request
    if st.session_state.get(RUN_KEY) == request:
        results_ui(model, data_key, metric, k, n, show, seed)
    else:
        st.caption("Choose a distance and press the button. Afterwards every setting applies at once; results are "
                   "cached, so going back to earlier settings is instant.")
