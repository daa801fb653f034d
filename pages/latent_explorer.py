"""Latent Explorer: interpolation strips between seeds, uploaded latents or a projected real
galaxy, and walks along principal directions of the latent space.

Every family gets interpolation and principal directions; a chained model (DCGAN -> StackGAN)
shows each stage side by side. A StyleGAN (a family with a ``w`` latent space) also gets the
projection of a real galaxy into w / w+ and GANSpace directions in w applied to chosen layers.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from galaxy_core.explore import style
from galaxy_core.explore.directions import (Directions, activation_pca, default_layer, edit_grid, edit_ws, latent_pca,
                                            layer_names, w_pca, walk, walk_grid)
from galaxy_core.explore.export import frames_zip, load_latents, npy_bytes, png_with_record, space_npz_bytes
from galaxy_core.explore.interpolate import gif_bytes, interpolation_path, key_frames, styles_path
from galaxy_core.io.render import make_grid
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, projection_panel, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

PCA_SAMPLES = 1000   # latents sampled to find directions in z / a layer
W_PCA_SAMPLES = 10_000  # latents mapped to w for GANSpace (a fraction of a second at 128-d)
N_SLIDERS = 5        # directions with a slider
WALK_STEPS = 7       # columns of the grid walk
EDIT_KEY = "le_ganspace_ws"  # session state: the styles of the GANSpace image on screen


# ------------------------------------------------------------------------------ class label


def class_ui(model: Pretrained) -> int | None:
    """A conditional model's class label, held for every image on the page; None for an
    unconditional model. Without it the model would take label ``i % num_classes`` for image
    i of each batch, so a path or walk would change class from frame to frame."""
    if not model.num_classes:
        return None
    names = model.class_names
    c1, _ = st.columns([1, 2])
    label = c1.selectbox("Class label (held for every image below)", list(range(model.num_classes)),
                         format_func=lambda i: f"{i}: {names[i]}", key="le_class",
                         help="The model is conditional: each image depends on its latent and its class label. "
                              "Paths and walks keep this label, so only the latent changes along them.")
    return int(label)


def _labels(label: int | None, n: int) -> np.ndarray | None:
    """(n,) copies of ``label``, or None for an unconditional model."""
    return None if label is None else np.full(n, label, np.int64)


def _label_record(model: Pretrained, label: int | None) -> dict:
    return {} if label is None else {"label": label, "class": model.class_names[label]}


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


def parse_keys(model: Pretrained, source: str, value: str | list, *, extra: int = 0
               ) -> tuple[np.ndarray, list[str]] | None:
    """Key latents ((K, z_dim), labels) from :func:`key_inputs_ui`'s values; None (with a message)
    when there are fewer than two (counting ``extra`` keys given elsewhere); raises ValueError
    naming a bad seed or file."""
    if source == "Seeds":
        seeds = widgets.parse_seeds(value)
        if len(seeds) + extra < 2:
            st.warning("Enter at least two seeds." if not extra else "Enter at least one seed to go to.",
                       icon=":material/warning:")
            return None
        z = np.concatenate([state.seed_latents(model, s, 1) for s in seeds]) if seeds else \
            np.zeros((0, model.z_dim), np.float32)
        return z, [f"seed {s}" for s in seeds]
    rows, labels = [], []
    for f in value:
        z = load_latents(f.getvalue(), z_dim=model.z_dim, name=f.name)
        rows.append(z)
        labels += [f"{f.name}[{i}]" for i in range(len(z))]
    if len(labels) + extra < 2:
        st.info("Upload files holding at least two latents in total (for example the latents.npy "
                "downloaded from Home).", icon=":material/upload_file:")
        return None
    return (np.concatenate(rows) if rows else np.zeros((0, model.z_dim), np.float32)), labels


def path_controls_ui(model: Pretrained) -> tuple[str, int, int, str]:
    """Interpolation method, frames, animation speed and (StyleGAN) space; fixed bounds, so other
    inputs never reset them."""
    c1, c2, c3 = st.columns(3)
    space = "z"
    with c1:
        if state.has_w(model):
            forced = projection_panel.projected(model) is not None and st.session_state.get(projection_panel.USE_KEY)
            space_help = ("w: the mapping network's output, where styles are read; paths there are linear. "
                          "A projected galaxy is a point in w, so a path from it runs in w.")
            # a control that cannot be changed shows the value in use (its own key keeps the user's choice)
            space = (st.radio("Interpolate in", ["w"], horizontal=True, key="le_space_forced", disabled=True,
                              help=space_help) if forced else
                     st.radio("Interpolate in", ["z", "w"], horizontal=True, key="le_space", help=space_help))
        method_help = ("slerp follows the sphere (keeps the norm of Gaussian latents); lerp the straight line "
                       "(always lerp in w, which is not Gaussian).")
        method = (st.radio("Interpolation", ["lerp"], horizontal=True, key="le_method_w", disabled=True,
                           help=method_help) if space == "w" else
                  st.radio("Interpolation", ["slerp", "lerp"], horizontal=True, key="le_method", help=method_help))
    frames = c2.slider("Frames", 2, 64, 16, key="le_frames",
                       help="Raised to the number of key latents when there are more keys than frames.")
    fps = c3.slider("Animation speed (frames/s)", 2, 24, 8, key="le_fps")
    return method, frames, fps, space


@st.cache_data(max_entries=32, show_spinner=False)
def _strip_files(rgb: np.ndarray, z: np.ndarray, what: str, scale: int, fps: int, name: str, *,
                 _record: dict) -> dict[str, bytes]:
    """Encoded strip, GIF and latents; cached by everything but the record's time stamp
    (``what`` names the checkpoint and keys)."""
    record = _record
    strip = png_with_record(make_grid(rgb, ncols=min(len(rgb), 8)), record, scale=scale)
    gif = gif_bytes(rgb, fps=fps, scale=max(scale, 2))
    return {"strip": strip, "gif": gif, "npy": npy_bytes(z)}


def interpolation_ui(model: Pretrained, label: int | None = None) -> None:
    st.subheader(":material/linear_scale: Interpolation")
    projected = projection_panel.projected(model) if st.session_state.get(projection_panel.USE_KEY) else None
    if projected is not None:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(f"The path starts at the projected galaxy ({projected['label']}, {projected['space']}) and runs "
                   "in w through the keys below.")
        c2.button("Stop using it", key="le_unuse", icon=":material/close:",
                  on_click=lambda: st.session_state.pop(projection_panel.USE_KEY, None))
    source, value = key_inputs_ui(model)
    method, frames, fps, space = path_controls_ui(model)
    with widgets.error_boundary("Reading the key latents"):
        keys = parse_keys(model, source, value, extra=int(projected is not None))
        if keys is None:
            return
        z_keys, labels = keys
        n_keys = len(z_keys) + int(projected is not None)
        if frames < n_keys:
            st.caption(f"{n_keys} key latents need at least {n_keys} frames; using {n_keys}.")
            frames = n_keys
        if space == "w":
            keys_ws = state.mapped_ws(model, z_keys)
            if projected is not None:
                keys_ws = np.concatenate([projected["ws"][None], keys_ws])
                labels = [projected["label"], *labels]
            z = styles_path(keys_ws, frames)  # (frames, num_ws, w_dim)
            rgb = state.render_ws(model, z)
        else:
            z = interpolation_path(z_keys, frames, method=method)  # (frames, z_dim)
            rgb = state.render(model, z, _labels(label, len(z)))
        scale = widgets.display_scale(model.resolution)
        record = widgets.record_for(model, keys=labels, method=method, frames=frames, space=space,
                                    key_frames=key_frames(n_keys, frames), **_label_record(model, label))
        name = f"{model.name}_{method}_{frames}f" + ("_w" if space == "w" else "")
        files = _strip_files(rgb, z, f"{model.id} {space} {labels} {label}", scale, fps, name, _record=record)
        what = f"{method}{' in w' if space == 'w' else ''} through {', '.join(labels)} in {frames} frames"
        if label is not None:
            what += f", class {model.class_names[label]} throughout"
        left, right = st.columns([3, 1])
        if model.refs:  # a chained model: each stage's strip side by side
            with left:
                stage_png = widgets.stage_images_ui(state.render_stages(model, z, _labels(label, len(z))), record,
                                                    resolution=model.resolution, ncols=min(len(z), 8),
                                                    what=f" · {what}")
        else:
            stage_png = {}
            widgets.show_image(files["strip"], f"{what} (read left to right, top to bottom). "
                               f"{widgets.stretch_note(model)}", where=left)
        widgets.show_image(files["gif"], f"Animation at {fps} frames/s, forwards and back; same display.",
                           where=right)
        items = [
            ("Strip (PNG)", files["strip"], f"{name}_strip.png", "image/png"),
            ("Animation (GIF)", files["gif"], f"{name}.gif", "image/gif"),
            ("Latents (.npy)" if space == "z" else "Styles ws (.npy)", files["npy"], f"{name}_latents.npy",
             "application/octet-stream"),
            ("Every frame + record (zip)",  # built when clicked
             lambda: frames_zip(rgb, z.reshape(len(z), -1), record=record,
                                extra={f"{name}_strip.png": files["strip"], f"{name}.gif": files["gif"],
                                       **{f"{name}_{k}.png": v for k, v in stage_png.items()}}),
             f"{name}.zip", "application/zip"),
            *widgets.labels_download(_labels(label, len(z)), f"{name}_labels.npy"),
        ]
        if space == "w":
            fits = widgets.fits_images_download(model, style.synthesize(model, z), file_name=f"{name}.fits", styles=z)
        else:
            fits = widgets.fits_download(model, z, seed=None, file_name=f"{name}.fits", labels=_labels(label, len(z)))
        widgets.download_row(items + ([fits] if fits else []), key="le_dl")


# ---------------------------------------------------------------------------------- directions


def _direction_G(model: Pretrained):
    """The network z enters: the stage-I generator of a chain, else the model's own."""
    return model.refs["stage1"].G if "stage1" in model.refs else model.G


@st.cache_data(max_entries=16, show_spinner="Finding principal directions…")
def _directions(model_key: tuple[str, int], source: str, layer: str | None, k: int,
                label: int | None = None) -> Directions:
    model = state.cached_model(model_key)
    z = model.latents(987_654, PCA_SAMPLES).numpy()
    if source == "z":
        return latent_pca(z, k=k)
    return activation_pca(_direction_G(model), z, layer=layer, k=k, label=label)  # a conditional model's: its class


def direction_controls_ui(model: Pretrained) -> tuple[str, str | None, int]:
    """(source "activations" or "z", layer or None, start seed)."""
    c1, c2, c3 = st.columns([2, 2, 1])
    source = c1.radio("Directions from", ["activations", "z"], horizontal=True, key="le_dir_source",
                      format_func={"activations": "a generator layer (GANSpace)", "z": "sampled latents z"}.get,
                      help="GANSpace: PCA of a layer's activations, regressed back to z (Härkönen et al. 2020).")
    layer = None
    if source == "activations":
        G = _direction_G(model)
        names, modules = layer_names(G), dict(G.named_modules())
        layer = c2.selectbox("Layer" + (" of stage I" if model.refs else ""), names,
                             index=names.index(default_layer(G)), key="le_layer",
                             format_func=lambda n: f"{n} ({type(modules[n]).__name__})",
                             help="Module whose output is analysed; the first block's activation works well.")
    with c3:
        seed = widgets.seed_ui("Start seed", key="le_walk_seed", default=7)
    return source, layer, seed


def sliders_ui(d: Directions, *, prefix: str = "le_pc", what: str = "sampled latents") -> np.ndarray:
    coeffs = np.zeros(len(d))
    cols = st.columns(min(N_SLIDERS, len(d)))
    for i, col in enumerate(cols):
        coeffs[i] = col.slider(f"PC {i + 1} ({d.explained[i]:.0%} of variance)", -3.0, 3.0, 0.0, 0.25,
                               key=f"{prefix}{i}", help=f"Strength: a step along the direction, in standard "
                               f"deviations of the {what} projected on it")
    return coeffs


def directions_ui(model: Pretrained, label: int | None = None) -> None:
    st.subheader(":material/explore: Principal directions")
    source, layer, seed = direction_controls_ui(model)
    d = _directions(state.model_cache_key(model), source, layer, N_SLIDERS, label)
    coeffs = sliders_ui(d)
    z0 = state.seed_latents(model, seed, 1)[0]
    z = walk(z0, d, coeffs)
    scale = widgets.display_scale(model.resolution)
    lab = _label_record(model, label)
    record = widgets.record_for(model, seed=seed, directions=d.source, coefficients_std=coeffs.tolist(),
                                latent=z.tolist(), **lab)
    single = png_with_record(state.render(model, z[None], _labels(label, 1))[0], record, scale=scale * 2)
    grid_z = walk_grid(z0, d, components=list(range(len(d))), steps=WALK_STEPS, base_coeffs=coeffs)
    grid_rgb = state.render(model, grid_z, _labels(label, len(grid_z)))
    grid_record = widgets.record_for(model, seed=seed, directions=d.source, base_coefficients_std=coeffs.tolist(),
                                     layout="row i = PC i+1, columns from -3 to +3 std around the sliders", **lab)
    grid = png_with_record(make_grid(grid_rgb, ncols=WALK_STEPS), grid_record, scale=scale)
    stage_png = {}
    if model.refs:  # a chained model: the moved image at every stage, side by side
        stage_png = widgets.stage_images_ui(state.render_stages(model, z[None], _labels(label, 1)), record,
                                            resolution=model.resolution, what=f" · seed {seed} moved by the sliders")
    c1, c2 = st.columns([1, 2], gap="large")
    widgets.show_image(single, f"Seed {seed} moved by the sliders. {widgets.stretch_note(model)}", where=c1)
    widgets.show_image(grid, f"Grid walk: row i varies PC i from −3σ to +3σ around the sliders ({d.source}). "
                       f"{widgets.stretch_note(model)}", where=c2)
    items = [
        ("This image (PNG)", single, f"{model.name}_seed{seed}_walk.png", "image/png"),
        ("Its latent (.npy)", npy_bytes(z[None]), f"{model.name}_seed{seed}_walk.npy", "application/octet-stream"),
        ("Grid + every frame (zip)",  # built when clicked
         lambda: frames_zip(grid_rgb, grid_z, record=grid_record, prefix="walk",
                            extra={"grid.png": grid, **{f"this_image_{k}.png": v for k, v in stage_png.items()}}),
         f"{model.name}_seed{seed}_walk.zip", "application/zip"),
        *widgets.labels_download(_labels(label, 1), f"{model.name}_seed{seed}_walk_label.npy"),
    ]
    fits = widgets.fits_download(model, grid_z, seed=None, file_name=f"{model.name}_seed{seed}_walk.fits",
                                 labels=_labels(label, len(grid_z)))
    widgets.download_row(items + ([fits] if fits else []), key="le_walk_dl")
    widgets.fits_note(model)


# ------------------------------------------------------------------------- GANSpace (StyleGAN w)


@st.cache_data(max_entries=8, show_spinner="Finding GANSpace directions in w…")
def _w_directions(model_key: tuple[str, int], k: int) -> Directions:
    return w_pca(state.cached_model(model_key), n=W_PCA_SAMPLES, k=k)


def layers_ui(model: Pretrained) -> tuple[np.ndarray, str]:
    """Layers the directions act on: (mask (num_ws,), description)."""
    c1, c2 = st.columns([1, 3])
    how = c1.radio("Apply to", ["ranges", "layers"], horizontal=True, key="le_gs_how",
                   format_func={"ranges": "layer ranges", "layers": "single layers"}.get)
    table = style.layers(model)
    if how == "ranges":
        ranges = c2.multiselect("Ranges", list(style.LAYER_RANGES), default=list(style.LAYER_RANGES), key="le_gs_ranges",
                                help="coarse 4–8 px: orientation, size, bulge; middle 16–32 px: arms, discs, bars; "
                                     "fine 64 px+: colour, texture, noise (Karras et al. 2019).")
        mask = style.layer_mask(model, ranges) if ranges else np.zeros(len(table), bool)
        return mask, ", ".join(ranges) or "no layers"
    picked = c2.multiselect("Layers", list(range(len(table))), default=[0, 1], key="le_gs_layers",
                            format_func=lambda i: style.layer_label(model, i))
    mask = np.zeros(len(table), bool)
    mask[list(picked)] = True
    return mask, f"w[{', '.join(map(str, sorted(picked)))}]" if picked else "no layers"


def ganspace_ui(model: Pretrained) -> None:
    st.subheader(":material/explore: GANSpace directions in w")
    st.caption(f"Principal components of w over {W_PCA_SAMPLES:,} mapped latents (Härkönen et al. 2020), applied "
               "only to the chosen layers; the other layers keep the start image's styles.")
    d = _w_directions(state.model_cache_key(model), N_SLIDERS)
    mask, where = layers_ui(model)
    c1, _ = st.columns([1, 4])
    with c1:
        seed = widgets.seed_ui("Start seed", key="le_walk_seed", default=7)
    coeffs = sliders_ui(d, prefix="le_gs_pc", what="sampled w")
    ws0 = state.mapped_ws(model, state.seed_latents(model, seed, 1))[0]  # (num_ws, w_dim)
    ws = edit_ws(ws0, d, coeffs, mask=mask)
    st.session_state[EDIT_KEY] = {"checkpoint_id": model.id, "seed": seed, "ws": ws}
    scale = widgets.display_scale(model.resolution)
    record = widgets.record_for(model, seed=seed, directions="GANSpace w PCA", layers=np.flatnonzero(mask).tolist(),
                                coefficients_std=coeffs.tolist())
    single = png_with_record(state.render_ws(model, ws[None])[0], record, scale=scale * 2)
    grid_ws = edit_grid(ws0, d, mask=mask, components=list(range(len(d))), steps=WALK_STEPS, base_coeffs=coeffs)
    grid_rgb = state.render_ws(model, grid_ws)
    grid_record = widgets.record_for(model, seed=seed, directions="GANSpace w PCA", layers=np.flatnonzero(mask).tolist(),
                                     base_coefficients_std=coeffs.tolist(),
                                     layout="row i = PC i+1, columns from -3 to +3 std around the sliders")
    grid = png_with_record(make_grid(grid_rgb, ncols=WALK_STEPS), grid_record, scale=scale)
    c1, c2 = st.columns([1, 2], gap="large")
    widgets.show_image(single, f"Seed {seed} moved by the sliders on {where}. {widgets.stretch_note(model)}", where=c1)
    widgets.show_image(grid, f"Grid walk on {where}: row i varies PC i from −3σ to +3σ around the sliders. "
                       f"{widgets.stretch_note(model)}", where=c2)
    name = f"{model.name}_seed{seed}_ganspace"
    items = [
        ("This image (PNG)", single, f"{name}.png", "image/png"),
        ("Its styles ws (.npy)", npy_bytes(ws[None]), f"{name}_ws.npy", "application/octet-stream"),
        ("Directions in w (.npz)",
         space_npz_bytes("GANSpace directions in w", vectors=d.vectors, std=d.std, explained=d.explained,
                         checkpoint_id=np.array(model.id)),
         f"{model.name}_ganspace_directions.npz", "application/octet-stream"),
        ("Grid + every frame (zip)",  # built when clicked
         lambda: frames_zip(grid_rgb, grid_ws.reshape(len(grid_ws), -1), record=grid_record, prefix="walk",
                            extra={"grid.png": grid}),
         f"{name}.zip", "application/zip"),
    ]
    fits = widgets.fits_images_download(model, style.synthesize(model, ws[None]), file_name=f"{name}.fits",
                                        styles=ws[None])
    widgets.download_row(items + ([fits] if fits else []), key="le_gs_dl")
    widgets.fits_note(model)


widgets.page_header("Latent Explorer", "Move through the generator's latent space: interpolate between galaxies "
                    "and walk along its principal directions.")
with widgets.error_boundary("Exploring the latent space"):
    model = state.selected_model()
    widgets.model_badge(model)
    label = class_ui(model)
    interpolation_ui(model, label)
    st.divider()
    if state.has_w(model):
        projection_panel.projection_ui(model)
        st.divider()
        ganspace_ui(model)
    else:
        directions_ui(model, label)
