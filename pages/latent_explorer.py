"""Latent Explorer: interpolation strips between seeds or uploaded latents, and walks along
principal directions of the latent space."""

from __future__ import annotations

import numpy as np
import streamlit as st

from galaxy_core.explore.directions import (Directions, activation_pca, default_layer, latent_pca, layer_names,
                                            walk, walk_grid)
from galaxy_core.explore.export import frames_zip, load_latents, npy_bytes, png_with_record
from galaxy_core.explore.interpolate import gif_bytes, interpolation_path, key_frames
from galaxy_core.io.render import make_grid
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

PCA_SAMPLES = 1000   # latents sampled to find directions
N_SLIDERS = 5        # directions with a slider
WALK_STEPS = 7       # columns of the grid walk


# ------------------------------------------------------------------------------ interpolation


def key_inputs_ui(model: Pretrained) -> tuple[str, str | list]:
    """Draw the key-latent inputs; returns ("Seeds", text) or ("Uploaded .npy", files), unparsed.

    Parsing happens after every control of the section is drawn, so a typo here never removes
    (and so never resets) the frame count or interpolation method below.
    """
    source = st.segmented_control("Key latents from", ["Seeds", "Uploaded .npy"], default="Seeds", key="le_source",
                                  required=True)
    if source == "Seeds":
        return source, st.text_input("Seeds (two or more, separated by commas)", value="1, 2, 3", key="le_seeds")
    files = st.file_uploader(f"Latent files: ({model.z_dim},) or (n, {model.z_dim}) float arrays",
                             type=["npy"], accept_multiple_files=True, key="le_upload")
    return source, list(files or [])


def parse_keys(model: Pretrained, source: str, value: str | list) -> tuple[np.ndarray, list[str]] | None:
    """Key latents ((K, z_dim), labels) from :func:`key_inputs_ui`'s values; None (with a message)
    when there are fewer than two; raises ValueError naming a bad seed or file."""
    if source == "Seeds":
        seeds = widgets.parse_seeds(value)
        if len(seeds) < 2:
            st.warning("Enter at least two seeds.", icon=":material/warning:")
            return None
        z = np.concatenate([state.seed_latents(model, s, 1) for s in seeds])
        return z, [f"seed {s}" for s in seeds]
    rows, labels = [], []
    for f in value:
        z = load_latents(f.getvalue(), z_dim=model.z_dim, name=f.name)
        rows.append(z)
        labels += [f"{f.name}[{i}]" for i in range(len(z))]
    if len(labels) < 2:
        st.info("Upload files holding at least two latents in total (for example the latents.npy "
                "downloaded from Home).", icon=":material/upload_file:")
        return None
    return np.concatenate(rows), labels


def path_controls_ui() -> tuple[str, int, int]:
    """Interpolation method, frames and animation speed; fixed bounds, so other inputs never reset them."""
    c1, c2, c3 = st.columns(3)
    method = c1.radio("Interpolation", ["slerp", "lerp"], horizontal=True, key="le_method",
                      help="slerp follows the sphere (keeps the norm of Gaussian latents); lerp the straight line.")
    frames = c2.slider("Frames", 2, 64, 16, key="le_frames",
                       help="Raised to the number of key latents when there are more keys than frames.")
    fps = c3.slider("Animation speed (frames/s)", 2, 24, 8, key="le_fps")
    return method, frames, fps


@st.cache_data(max_entries=32, show_spinner=False)
def _strip_files(rgb: np.ndarray, z: np.ndarray, what: str, scale: int, fps: int, name: str, *,
                 _record: dict) -> dict[str, bytes]:
    """Encoded strip, GIF and latents; cached by everything but the record's time stamp
    (``what`` names the checkpoint and keys)."""
    record = _record
    strip = png_with_record(make_grid(rgb, ncols=min(len(rgb), 8)), record, scale=scale)
    gif = gif_bytes(rgb, fps=fps, scale=max(scale, 2))
    return {"strip": strip, "gif": gif, "npy": npy_bytes(z)}


def interpolation_ui(model: Pretrained) -> None:
    st.subheader(":material/linear_scale: Interpolation")
    source, value = key_inputs_ui(model)
    method, frames, fps = path_controls_ui()
    with widgets.error_boundary("Reading the key latents"):
        keys = parse_keys(model, source, value)
        if keys is None:
            return
        z_keys, labels = keys
        if frames < len(z_keys):
            st.caption(f"{len(z_keys)} key latents need at least {len(z_keys)} frames; using {len(z_keys)}.")
            frames = len(z_keys)
        z = interpolation_path(z_keys, frames, method=method)  # (frames, z_dim)
        rgb = state.render(model, z)
        scale = widgets.display_scale(model.resolution)
        record = widgets.record_for(model, keys=labels, method=method, frames=frames,
                                    key_frames=key_frames(len(z_keys), frames))
        name = f"{model.name}_{method}_{frames}f"
        files = _strip_files(rgb, z, f"{model.id} {labels}", scale, fps, name, _record=record)
        left, right = st.columns([3, 1])
        widgets.show_image(files["strip"], f"{method} through {', '.join(labels)} in {frames} frames (read left "
                           f"to right, top to bottom). {widgets.stretch_note(model)}", where=left)
        widgets.show_image(files["gif"], f"Animation at {fps} frames/s, forwards and back; same display.",
                           where=right)
        items = [
            ("Strip (PNG)", files["strip"], f"{name}_strip.png", "image/png"),
            ("Animation (GIF)", files["gif"], f"{name}.gif", "image/gif"),
            ("Latents (.npy)", files["npy"], f"{name}_latents.npy", "application/octet-stream"),
            ("Every frame + record (zip)",  # built when clicked
             lambda: frames_zip(rgb, z, record=record, extra={f"{name}_strip.png": files["strip"],
                                                               f"{name}.gif": files["gif"]}),
             f"{name}.zip", "application/zip"),
        ]
        fits = widgets.fits_download(model, z, seed=None, file_name=f"{name}.fits")
        widgets.download_row(items + ([fits] if fits else []), key="le_dl")


# ---------------------------------------------------------------------------------- directions


@st.cache_data(max_entries=16, show_spinner="Finding principal directions…")
def _directions(model_key: tuple[str, int], source: str, layer: str | None, k: int) -> Directions:
    model = state.cached_model(model_key)
    z = model.latents(987_654, PCA_SAMPLES).numpy()
    if source == "z":
        return latent_pca(z, k=k)
    return activation_pca(model.G, z, layer=layer, k=k)


def direction_controls_ui(model: Pretrained) -> tuple[str, str | None, int]:
    """(source "activations" or "z", layer or None, start seed)."""
    c1, c2, c3 = st.columns([2, 2, 1])
    source = c1.radio("Directions from", ["activations", "z"], horizontal=True, key="le_dir_source",
                      format_func={"activations": "a generator layer (GANSpace)", "z": "sampled latents z"}.get,
                      help="GANSpace: PCA of a layer's activations, regressed back to z (Härkönen et al. 2020).")
    layer = None
    if source == "activations":
        names, modules = layer_names(model.G), dict(model.G.named_modules())
        layer = c2.selectbox("Layer", names, index=names.index(default_layer(model.G)), key="le_layer",
                             format_func=lambda n: f"{n} ({type(modules[n]).__name__})",
                             help="Module whose output is analysed; the first block's activation works well.")
    with c3:
        seed = widgets.seed_ui("Start seed", key="le_walk_seed", default=7)
    return source, layer, seed


def sliders_ui(d: Directions) -> np.ndarray:
    coeffs = np.zeros(len(d))
    cols = st.columns(min(N_SLIDERS, len(d)))
    for i, col in enumerate(cols):
        coeffs[i] = col.slider(f"PC {i + 1} ({d.explained[i]:.0%} of variance)", -3.0, 3.0, 0.0, 0.25,
                               key=f"le_pc{i}", help="Step along the direction, in standard deviations of the "
                               "sampled latents projected on it")
    return coeffs


def directions_ui(model: Pretrained) -> None:
    st.subheader(":material/explore: Principal directions")
    source, layer, seed = direction_controls_ui(model)
    d = _directions(state.model_cache_key(model), source, layer, N_SLIDERS)
    coeffs = sliders_ui(d)
    z0 = state.seed_latents(model, seed, 1)[0]
    z = walk(z0, d, coeffs)
    scale = widgets.display_scale(model.resolution)
    record = widgets.record_for(model, seed=seed, directions=d.source, coefficients_std=coeffs.tolist(),
                                latent=z.tolist())
    single = png_with_record(state.render(model, z[None])[0], record, scale=scale * 2)
    grid_z = walk_grid(z0, d, components=list(range(len(d))), steps=WALK_STEPS, base_coeffs=coeffs)
    grid_rgb = state.render(model, grid_z)
    grid_record = widgets.record_for(model, seed=seed, directions=d.source, base_coefficients_std=coeffs.tolist(),
                                     layout="row i = PC i+1, columns from -3 to +3 std around the sliders")
    grid = png_with_record(make_grid(grid_rgb, ncols=WALK_STEPS), grid_record, scale=scale)
    c1, c2 = st.columns([1, 2], gap="large")
    widgets.show_image(single, f"Seed {seed} moved by the sliders. {widgets.stretch_note(model)}", where=c1)
    widgets.show_image(grid, f"Grid walk: row i varies PC i from −3σ to +3σ around the sliders ({d.source}). "
                       f"{widgets.stretch_note(model)}", where=c2)
    items = [
        ("This image (PNG)", single, f"{model.name}_seed{seed}_walk.png", "image/png"),
        ("Its latent (.npy)", npy_bytes(z[None]), f"{model.name}_seed{seed}_walk.npy", "application/octet-stream"),
        ("Grid + every frame (zip)",  # built when clicked
         lambda: frames_zip(grid_rgb, grid_z, record=grid_record, prefix="walk", extra={"grid.png": grid}),
         f"{model.name}_seed{seed}_walk.zip", "application/zip"),
    ]
    fits = widgets.fits_download(model, grid_z, seed=None, file_name=f"{model.name}_seed{seed}_walk.fits")
    widgets.download_row(items + ([fits] if fits else []), key="le_walk_dl")
    widgets.fits_note(model)


widgets.page_header("Latent Explorer", "Move through the generator's latent space: interpolate between galaxies "
                    "and walk along its principal directions.")
with widgets.error_boundary("Exploring the latent space"):
    model = state.selected_model()
    widgets.model_badge(model)
    interpolation_ui(model)
    st.divider()
    directions_ui(model)
