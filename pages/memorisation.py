"""Memorisation: are generated galaxies new, or copies of training images?

The steps are those of ``galaxygan evaluate`` (:mod:`galaxy_core.metrics.memorisation`): exact
nearest training images under the galaxy-encoder cosine distance, which gives the verdict with
a threshold calibrated on held-out real images, and under pixel L1 and 1 − SSIM as evidence.
This page only caches the steps and draws their results.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import streamlit as st

from galaxy_core.explore import evaluation as ev
from galaxy_core.io.render import display_note, png_bytes, to_rgb
from galaxy_core.metrics import memorisation as mem
from galaxy_core.metrics.memorisation_figures import distance_histogram
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

RUN_KEY = "mem_requested"
LABELS = {"cosine": "cosine of galaxy-encoder features (gives the verdict)", "l1": "L1, central half (evidence)",
          "ssim": "1 − SSIM, whole image (evidence)"}


# ------------------------------------------------------------------------------ cached steps


@st.cache_resource(show_spinner=False)
def extractor():
    return mem.feature_extractor()


@st.cache_resource(max_entries=8, show_spinner=False)
def space(data_key: tuple, distance: str):
    return mem.search_space(state.dataset(data_key), distance, extractor=extractor())


@st.cache_data(max_entries=8, show_spinner=False)
def generated(model_key: tuple, n: int, seed: int) -> np.ndarray:
    return ev.generated_sample(state.cached_model(model_key), n, seed=seed)[1]


@st.cache_data(max_entries=16, show_spinner=False)
def matches(model_key: tuple, data_key: tuple, n: int, seed: int, distance: str, k: int):
    """k nearest training images of each generated sample: (indices (n, k), distances (n, k))."""
    return mem.nearest(generated(model_key, n, seed), space(data_key, distance), distance, k=k, extractor=extractor())


@st.cache_data(max_entries=4, show_spinner=False)
def held_out(model_key: tuple, data_key: tuple, folder: str | None, n: int) -> tuple[np.ndarray | None, str]:
    """Real images never trained on: a given folder, a fresh simulation for ``sim``, else none."""
    train = state.dataset(data_key)
    if folder is not None:
        return ev.open_held_out(folder, train=train, crop=data_key[2], normalisation=data_key[5])
    return ev.held_out_sample(state.cached_model(model_key).meta, train, n)


@st.cache_data(max_entries=16, show_spinner=False)
def held_out_distances(model_key: tuple, data_key: tuple, folder: str | None, n: int,
                       distance: str) -> np.ndarray | None:
    x, _ = held_out(model_key, data_key, folder, n)
    if x is None:
        return None
    return mem.nearest(x, space(data_key, distance), distance, extractor=extractor())[1][:, 0]


@st.cache_data(max_entries=16, show_spinner=False)
def baseline(data_key: tuple, distance: str, n: int) -> np.ndarray:
    return mem.training_baseline(space(data_key, distance), distance, n=n)[1]


# ------------------------------------------------------------------------------------ widgets


def settings_ui() -> tuple[list[str], str, int, int, int, int]:
    c1, c2, c3, c4, c5, c6 = st.columns([3, 3, 1, 2, 2, 2])
    evidence = c1.multiselect("Evidence distances", ["l1", "ssim"], default=["l1"], key="mem_evidence",
                              format_func=LABELS.get,
                              help="Shown beside the verdict. 1 − SSIM is exact and takes longer on large sets.")
    shown = [mem.DEFAULT_DISTANCE, *evidence]
    metric = c2.selectbox("Panels and histogram by", shown, format_func=LABELS.get, key="mem_metric")
    k = c3.number_input("k nearest", 1, 5, 3, key="mem_k")
    n = c4.select_slider("Generated samples", [16, 32, 64, 128, 256], value=64, key="mem_n",
                         help="Searched exactly against the whole training set.")
    show = c5.select_slider("Shown", [4, 8, 16, 32], value=8, key="mem_show", help="Closest samples shown first.")
    with c6:
        seed = widgets.seed_ui("Seed", key="mem_seed", default=0)
    return shown, metric, int(k), n, show, seed


def held_out_ui(own: dict) -> str | None:
    """A folder of real images not trained on (None: a fresh simulation for sim, else none)."""
    if own["spec"] == "sim":
        st.caption("Held-out reference: freshly simulated galaxies (another seed), never seen in training.")
        return None
    path = widgets.workspace_path_ui(
        "Held-out real images (folder or FITS file, not trained on)", key="mem_held", placeholder="data/held_out",
        help="They calibrate the suspect threshold. Without them the distances are shown but there is no verdict.")
    return None if path is None else str(path)


def verdict_ui(main: dict, verdict: str, memorised: bool | None) -> None:
    rep = main["report"]
    if rep is None:
        st.info(verdict, icon=":material/info:")
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Flagged as suspects", f"{rep['n_flagged']} of {len(rep['flagged'])}", border=True,
              help=f"Closer to a training image than {mem.THRESHOLD_PERCENTILE:.0f} % of held-out images are.")
    c2.metric("Expected by chance", f"{rep['expected_fraction']:.1%}", border=True)
    c3.metric("Excess p-value", f"{rep['excess_p']:.2g}", border=True,
              help="One-sided test of the flagged count against chance, allowing for the threshold being "
                   "estimated from the held-out images (beta-binomial).")
    c4.metric("Median distance ratio", f"{rep['median_ratio']:.2f}", border=True,
              help="Generated / held-out median nearest-training distance; well below 1 suggests copying.")
    if memorised is None:  # a threshold, but from held-out images that are near-copies of training ones
        st.warning(verdict, icon=":material/help:")
    elif memorised:
        st.warning(verdict, icon=":material/warning:")
    elif main.get("reference_warning"):  # no sign, but measured against a doubtful reference: not a green light
        st.warning(verdict, icon=":material/help:")
    else:
        st.success(verdict, icon=":material/verified:")


def evidence_ui(results: dict) -> None:
    rows = []
    for name, r in results.items():
        rep = r["report"] or {}
        rows.append({"distance": LABELS[name], "median generated": r["median_gen"],
                     "median training ↔ training": r["median_train"], "threshold": rep.get("threshold"),
                     "flagged": rep.get("fraction_flagged"), "what it responds to": r["note"]})
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={"median generated": st.column_config.NumberColumn(format="%.4g"),
                                "median training ↔ training": st.column_config.NumberColumn(format="%.4g"),
                                "threshold": st.column_config.NumberColumn(format="%.4g"),
                                "flagged": st.column_config.NumberColumn(format="percent")})


def panel_ui(i: int, gen_rgb: np.ndarray, train_rgb: np.ndarray, names: list[str], dist: np.ndarray,
             flagged: bool | None, scale: int, earlier: dict[str, np.ndarray] | None = None) -> None:
    """One generated sample beside its nearest training images, each with its name and distance;
    ``earlier`` holds the sample's earlier stages of a chained model ({stage: (H, W, 3)}), shown first."""
    earlier = earlier or {}
    with st.container(border=True):
        tag = "" if flagged is None else (":red-badge[:material/flag: suspect]" if flagged else ":green-badge[new]")
        st.markdown(f"**Generated #{i}** {tag} beside its nearest training images")
        cols = st.columns(len(earlier) + 1 + len(names), gap="small")
        for col, (stage, im) in zip(cols, earlier.items()):
            col.image(png_bytes(im, scale=max(1, scale * gen_rgb.shape[0] // im.shape[0])), output_format="PNG",
                      caption=f"#{i} {stage}: {im.shape[0]} px", width="stretch")
        cols = cols[len(earlier):]
        cols[0].image(png_bytes(gen_rgb, scale=scale), caption=f"generated #{i}", output_format="PNG",
                      width="stretch")
        for col, im, name, d in zip(cols[1:], train_rgb, names, dist):
            col.image(png_bytes(im, scale=scale), caption=f"{name} · d = {d:.3g}", output_format="PNG",
                      width="stretch")


def matches_csv(order: np.ndarray, names: list[list[str]], dist: np.ndarray, flagged, record: dict) -> bytes:
    """The nearest matches as a plain CSV any reader takes (no comment line): one row per generated
    sample, with its provenance in columns (sample ``i`` is ``latents(seed, n)[i]`` of the checkpoint)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    k = dist.shape[1]
    w.writerow(["sample", "flagged"] + [f"nn{j + 1}_image" for j in range(k)] + [f"nn{j + 1}_distance" for j in range(k)]
               + ["distance", "seed", "checkpoint", "checkpoint_id"])
    about = [record["metric"], record["seed"], record["checkpoint"], record["checkpoint_id"]]
    for row, i in enumerate(order):
        w.writerow([i, "" if flagged is None else bool(flagged[i]), *names[row], *[f"{d:.6g}" for d in dist[i]],
                    *about])
    return buf.getvalue().encode()


def results_ui(model: Pretrained, data_key: tuple, folder: str | None, shown: list[str], metric: str, k: int,
               n: int, show: int, seed: int) -> None:
    data = state.dataset(data_key)
    ev.check_compatible(model, data)
    mk = state.model_cache_key(model)
    prog = widgets.StageProgress(1 + 3 * len(shown))
    prog.stage(0, "Generating samples and preparing held-out images")
    generated(mk, n, seed)
    held, about = held_out(mk, data_key, folder, n)
    results = {}
    for j, name in enumerate(shown):
        # stage by stage (a cached step may not draw, so the bar moves between steps)
        prog.stage(1 + 3 * j, f"{name}: searching all {len(data)} training images")
        idx, dist = matches(mk, data_key, n, seed, name, k)
        prog.stage(2 + 3 * j, f"{name}: held-out images")
        held_d = held_out_distances(mk, data_key, folder, n, name)
        prog.stage(3 + 3 * j, f"{name}: training baseline")
        train_d = baseline(data_key, name, n)
        results[name] = {**mem.assess(dist[:, 0], held_d, train_d, distance=name), "indices": idx, "distances": dist,
                         "heldout_d": held_d, "train_d": train_d}
    prog.done()
    main = results[mem.DEFAULT_DISTANCE]
    memorised, verdict = mem.verdict(results)
    verdict_ui(main, verdict, memorised)
    st.caption(f"{n} generated samples searched exactly against all {len(data)} training images of {data.name}; "
               f"held-out reference: {about}.")
    evidence_ui(results)
    r = results[metric]
    rep = r["report"]
    st.plotly_chart(distance_histogram(r["distances"][:, 0], r["heldout_d"], r["train_d"],
                                       threshold=rep["threshold"] if rep else None,
                                       title=f"Nearest-training-image distances: {LABELS[metric]}",
                                       x_title=f"distance ({mem.DISTANCE_UNITS[metric]})"), key="mem_hist")
    st.caption(mem.DISTANCE_NOTES[metric])
    order = np.argsort(r["distances"][:, 0], kind="stable")  # closest first: suspects lead
    scale = widgets.display_scale(model.resolution)
    st.subheader(":material/compare: Closest samples first")
    st.caption(f"Generated: {display_note(model.channels, model.stretch)}. Training: "
               f"{display_note(data.channels, data.stretch)}. Distances: {mem.DISTANCE_UNITS[metric]}.")
    x = generated(mk, n, seed)
    flagged = rep["flagged"] if rep else None
    names = [mem.image_names(data, r["indices"][i]) for i in order]
    stages = {}
    if model.refs:  # a chain: the earlier stages of the shown samples (sample i is latents(seed, n)[i])
        shown_z = state.seed_latents(model, seed, n)[order[:show]]
        shown_labels = order[:show] % model.num_classes if model.num_classes else None  # sample i's label
        stages = {k: v for k, v in list(state.render_stages(model, shown_z, shown_labels).items())[:-1]}
    cols = st.columns(2)
    for slot, i in enumerate(order[:show]):
        with cols[slot % 2]:
            neighbours = to_rgb(data.to_model_range(r["indices"][i]), data.channels)
            panel_ui(int(i), to_rgb(x[i], model.channels), neighbours, names[slot], r["distances"][i],
                     None if flagged is None else bool(flagged[i]), scale,
                     earlier={k: v[slot] for k, v in stages.items()})
    record = widgets.record_for(model, seed=seed, metric=metric, k=k, n=n)
    widgets.download_row([("Matches (CSV)", matches_csv(order, names, r["distances"], flagged, record),
                           f"{model.name}_matches_{metric}.csv", "text/csv")], key="mem_dl")


widgets.page_header("Memorisation", "Generated galaxies beside their nearest training images. A model that copies "
                    "its training set can look perfect on every other metric.")
with widgets.error_boundary("The memorisation check"):
    model = state.selected_model()
    widgets.model_badge(model)
    own = ev.training_data(model.meta)
    data_key = state.data_key(**own)
    st.caption(f"Training data: **{own['spec']}** at {own['resolution']} px, as recorded in the checkpoint.")
    widgets.chain_note(model, own["spec"])
    folder = held_out_ui(own)
    shown, metric, k, n, show, seed = settings_ui()
    request = str(model.path)  # once searched, setting changes recompute only what they affect
    if st.button("Find nearest training images", type="primary", icon=":material/search:", key="mem_go"):
        st.session_state[RUN_KEY] = request
    if st.session_state.get(RUN_KEY) == request:
        results_ui(model, data_key, folder, shown, metric, k, n, show, seed)
    else:
        st.caption("Press the button. Afterwards every setting applies at once; results are cached, so going back to "
                   "earlier settings is instant.")
