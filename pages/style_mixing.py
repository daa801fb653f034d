"""Style Mixing: a grid of StyleGAN galaxies where each cell takes the column galaxy's styles at
chosen layers and the row galaxy's everywhere else (Karras et al. 2019, Fig. 3)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from galaxy_core.errors import CheckpointError
from galaxy_core.explore.export import npy_bytes, png_with_record
from galaxy_core.explore.sampling import fits_skip_reason
from galaxy_core.explore.style import LAYER_RANGES, layer_label, layer_mask, layers, mixing_fits_bytes, mixing_grid_rgb
from galaxy_core.io.checkpoint import read_meta
from galaxy_core.models.pretrained import Pretrained
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

ARCH = "stylegan"
RANGE_HELP = ("coarse = 4-8 px (orientation, size, bulge), middle = 16-32 px (arms, bars, disc), "
              "fine = 64 px and up (colour, knots, texture)")


# ------------------------------------------------------------------------------------ inputs


def stylegan_checkpoints() -> list[state.CheckpointRef]:
    """Shipped and run checkpoints whose architecture is StyleGAN."""
    out = []
    for ref in state.find_checkpoints():
        try:
            if read_meta(ref.path).get("arch") == ARCH:
                out.append(ref)
        except CheckpointError:
            continue
    return out


def checkpoint_ui() -> Pretrained | None:
    """A StyleGAN checkpoint (the sidebar's when it is one)."""
    refs = stylegan_checkpoints()
    if not refs:
        st.info("No StyleGAN checkpoint found: train one with a configs/stylegan_*.toml config on the Train "
                "page, or put one in the checkpoints folder.", icon=":material/info:")
        return None
    labels = {r.path: r.label for r in refs}
    if st.session_state.get("sm_checkpoint") not in labels:
        side = state.selected_path()
        st.session_state["sm_checkpoint"] = side if side in labels else refs[0].path
    path = st.selectbox("StyleGAN checkpoint", list(labels), format_func=labels.get, key="sm_checkpoint",
                        help="Only StyleGAN checkpoints have per-layer styles to mix.")
    return state.load_model(path)


def seeds_ui() -> tuple[list[int], list[int], str | None]:
    """(row seeds, column seeds, what is wrong with them or None); never raises, so the
    widgets drawn after it keep their state while a seed box holds a typo."""
    c1, c2 = st.columns(2)
    texts = (c1.text_input("Row seeds (their styles fill the unselected layers)", value="1, 2, 3, 4, 5", key="sm_rows"),
             c2.text_input("Column seeds (their styles go to the selected layers)", value="6, 7, 8, 9, 10",
                           key="sm_cols"))
    try:
        rows, cols = (widgets.parse_seeds(t) for t in texts)
    except ValueError as e:
        return [], [], str(e)
    if not rows or not cols:
        return rows, cols, "Enter at least one row seed and one column seed."
    return rows, cols, None


def mask_ui(model: Pretrained) -> tuple[np.ndarray, float, str]:
    """(mask over the styled layers (True = from the column galaxy), psi, noise mode)."""
    c1, c2, c3 = st.columns([2, 1, 1])
    ranges = c1.segmented_control("Layers taken from the column galaxy", list(LAYER_RANGES), default=["coarse"],
                                  selection_mode="multi", key="sm_range", help=RANGE_HELP)
    psi = c2.slider("Truncation ψ", 0.0, 1.5, 1.0, 0.05, key="sm_psi",
                    help="Pull every w towards the mean w (0 = the average galaxy, 1 = none).")
    noise = c3.radio("Noise", ["const", "none"], horizontal=True, key="sm_noise",
                     help="Per-pixel noise: the checkpoint's fixed maps, or none. (Fresh random noise would "
                          "differ between a cell and its row and column galaxies, so the grid would mix noise as "
                          "well as styles.)")
    mask = layer_mask(model, list(ranges or []))
    with st.expander("Expert: per-layer mask"):
        expert = st.toggle("Choose layers one by one", key="sm_expert")
        names = [layer_label(model, i) for i in range(len(mask))]
        if not expert or any(n not in names for n in st.session_state.get("sm_layers", [None])):
            # follow the ranges until the toggle is on, so the one-by-one choice starts from them
            st.session_state["sm_layers"] = [n for n, m in zip(names, mask) if m]
        picked = st.multiselect("Layers from the column galaxy", names, key="sm_layers", disabled=not expert)
        if expert:
            mask = np.array([n in picked for n in names])
    return mask, psi, noise


# ----------------------------------------------------------------------------------- compute


@st.cache_data(max_entries=64, show_spinner=False)
def _grid(model_key: tuple[str, int], rows: tuple[int, ...], cols: tuple[int, ...], mask: tuple[bool, ...],
          psi: float, noise: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes | None]:
    """(grid RGB uint8, row+column z (R+K, z_dim), cell styles (R, K, num_ws, w_dim), the images
    as a FITS flux cube for band models trained with the asinh stretch, else None)."""
    model = state.cached_model(model_key)
    z = np.concatenate([model.latents(s, 1).numpy() for s in rows + cols])
    rgb, mix = mixing_grid_rgb(model, z[: len(rows)], z[len(rows):], mask=np.array(mask), psi=psi,
                               noise_mode=noise, channels=model.channels)
    cube = None
    if fits_skip_reason(model) is None:
        cube = mixing_fits_bytes(model, mix, row_seeds=rows, column_seeds=cols, psi=psi, noise_mode=noise)
    return rgb, z, mix.ws, cube


def grid_ui(model: Pretrained, rows: list[int], cols: list[int], mask: np.ndarray, psi: float, noise: str) -> None:
    rgb, z, ws, cube = _grid(state.model_cache_key(model), tuple(rows), tuple(cols), tuple(bool(m) for m in mask),
                       float(psi), noise)
    table = layers(model)
    chosen = [layer_label(model, i) for i in np.flatnonzero(mask)]
    record = widgets.record_for(model, row_seeds=rows, column_seeds=cols, psi=psi, noise_mode=noise,
                                column_layers=[int(i) for i in np.flatnonzero(mask)],
                                layers=[f"{n} ({r} px)" for n, r, _ in table],
                                layout="top row: column galaxies; left column: row galaxies; cell (i, j): "
                                       "column j's styles at column_layers, row i's elsewhere")
    png = png_with_record(rgb, record, scale=widgets.display_scale(model.resolution))
    what = ", ".join(chosen) if chosen else "no layers (every cell is its row galaxy)"
    widgets.show_image(png, f"Top row: column seeds {cols}; left: row seeds {rows}. Each cell takes the column "
                       f"galaxy's styles at {what}, the row galaxy's elsewhere; ψ = {psi:g}, noise {noise}. "
                       f"{widgets.stretch_note(model)}")
    name = f"{model.name}_mix_{'-'.join(map(str, rows))}_x_{'-'.join(map(str, cols))}"
    files = [
        ("Grid (PNG)", png, f"{name}.png", "image/png"),
        ("Row then column latents z (.npy)", npy_bytes(z), f"{name}_z.npy", "application/octet-stream"),
        ("Cell styles w+ (.npy)", npy_bytes(ws), f"{name}_ws.npy", "application/octet-stream"),
    ]
    if cube is not None:  # rows, columns, then the cells, in flux units with band names
        files.append(("Images in flux (FITS)", cube, f"{name}.fits", "application/fits"))
    widgets.download_row(files, key="sm_dl")


widgets.page_header("Style Mixing", "Swap the styles of chosen generator layers between galaxies: coarse layers "
                    "set the overall shape, middle ones the structure, fine ones colour and texture.")
with widgets.error_boundary("Mixing styles"):
    model = checkpoint_ui()
    if model is not None:
        widgets.model_badge(model)
        rows, cols, seed_problem = seeds_ui()
        mask, psi, noise = mask_ui(model)  # drawn whatever the seed boxes hold, so a typo resets none of it
        if seed_problem:
            st.warning(seed_problem, icon=":material/warning:")
        else:
            grid_ui(model, rows, cols, mask, psi, noise)
