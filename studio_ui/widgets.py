"""Widgets shared by the pages: ``*_ui()`` functions draw and return plain values.

Also the pieces every page uses the same way: the error boundary (a clear message instead of a
traceback), image panels that state their stretch, and downloads that carry provenance.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import streamlit as st

from galaxy_core.config import MAX_SEED
from galaxy_core.errors import GalaxyGanError
from galaxy_core.explore.export import npy_bytes, png_with_record
from galaxy_core.explore.sampling import fits_bytes, fits_skip_reason, provenance
from galaxy_core.io.render import display_note, make_grid
from galaxy_core.models.pretrained import Pretrained
from galaxy_core.paths import confine, workspace_root
from studio_ui import state

log = logging.getLogger("galaxygan.studio")


# ------------------------------------------------------------------------------ page frame


@contextmanager
def error_boundary(what: str = "This step") -> Iterator[None]:
    """Show errors of the enclosed block as a message on the page, never as a traceback.

    Project errors (bad file, incompatible checkpoint, invalid config) already say what was
    wrong with which file; other errors are reported with their type and logged in full on the
    server for whoever runs the app.
    """
    try:
        yield
    except GalaxyGanError as e:
        st.error(str(e), icon=":material/error:")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        log.warning("%s failed: %s: %s", what, type(e).__name__, e)
        st.error(f"{what} failed: {e}", icon=":material/error:")
    except Exception as e:  # a bug: still no traceback in the page
        log.exception("%s failed unexpectedly", what)
        st.error(f"{what} failed unexpectedly ({type(e).__name__}: {e}). The server log has the details.",
                 icon=":material/bug_report:")


def page_header(title: str, blurb: str) -> None:
    st.title(title)
    st.caption(blurb)


# -------------------------------------------------------------------------- checkpoint picker


def checkpoint_picker_ui() -> str | None:
    """Sidebar selectbox over shipped and run checkpoints; the choice is shared by all pages."""
    refs = state.find_checkpoints()
    if not refs:
        st.warning("No checkpoints found. Train one on the Train page, or put NAME.json + "
                   "NAME.safetensors in the checkpoints folder.", icon=":material/warning:")
        st.session_state.pop(state.CHECKPOINT_KEY, None)
        return None
    labels = {r.path: r.label for r in refs}
    current = st.session_state.get(state.CHECKPOINT_KEY)
    if current not in labels:  # first visit, or the chosen file went away
        st.session_state[state.CHECKPOINT_KEY] = refs[0].path
    return st.selectbox("Checkpoint", list(labels), format_func=labels.get, key=state.CHECKPOINT_KEY,
                        help="Shipped models and the checkpoints of your training runs. "
                             "Home, Latent explorer, Evaluation and Memorisation use the checkpoint chosen "
                             "here; Style mixing starts from it (when it is a StyleGAN) and has its own picker; "
                             "Sky composer picks its position and galaxy models on the page.")


def require_model(check: Callable[[Pretrained], bool], message: str) -> Pretrained | None:
    """The selected model if ``check`` accepts it; otherwise show ``message`` and return None."""
    model = state.selected_model()
    if not check(model):
        st.info(message, icon=":material/info:")
        return None
    return model


def model_badge(model: Pretrained) -> None:
    """One line naming the model every image on the page comes from."""
    d = model.meta.get("data", {})
    st.caption(f"**{model.name}** · {model.meta.get('arch')} · {model.resolution} px · "
               f"{'/'.join(model.channels)} · trained on {d.get('name')} · checkpoint id `{model.id}`")


# ------------------------------------------------------------------------------------ inputs


def seed_ui(label: str, *, key: str, default: int = 0, help: str | None = None) -> int:
    """A seed box (0 .. 2^31 - 1)."""
    st.session_state.setdefault(key, default)  # a callback may set it (e.g. "new samples")
    return int(st.number_input(label, min_value=0, max_value=2**31 - 1, step=1, key=key, help=help))


def parse_seeds(text: str) -> list[int]:
    """``"3, 14 15"`` -> ``[3, 14, 15]``; raises ValueError naming a bad entry."""
    items = [s for s in re.split(r"[,\s;]+", text.strip()) if s]
    seeds = []
    for s in items:
        if not s.isdigit():
            raise ValueError(f"seed {s!r} is not a non-negative whole number")
        if int(s) > MAX_SEED:
            raise ValueError(f"seed {s} is too large (at most 2**63 - 1 = {MAX_SEED})")
        seeds.append(int(s))
    return seeds


def workspace_path_ui(label: str, *, key: str, placeholder: str = "", must_exist: bool = True,
                      help: str | None = None) -> Path | None:
    """A path box confined to the workspace; returns the resolved path or None (with a message)."""
    text = st.text_input(label, key=key, placeholder=placeholder,
                         help=help or f"A path inside the workspace {workspace_root()} (relative or absolute).")
    if not text.strip():
        return None
    try:
        path = confine(text)
    except GalaxyGanError as e:
        st.error(str(e), icon=":material/block:")
        return None
    if must_exist and not path.exists():
        st.error(f"{text}: no such file or folder in the workspace {workspace_root()}", icon=":material/error:")
        return None
    return path


# ------------------------------------------------------------------------------------ images


def display_scale(resolution: int) -> int:
    """Nearest-neighbour enlargement so small stamps are shown at a readable size."""
    return 4 if resolution <= 32 else 2 if resolution <= 64 else 1


def stretch_note(model: Pretrained) -> str:
    return f"Display: {display_note(model.channels, model.stretch)}."


def grid_png(rgb: np.ndarray, record: dict, *, ncols: int | None = None, scale: int = 1) -> bytes:
    """A grid of (N, H, W, 3) images as PNG bytes with the provenance record embedded."""
    return png_with_record(make_grid(rgb, ncols=ncols), record, scale=scale)


def record_for(model: Pretrained, *, seed: int | None = None, **extra) -> dict:
    """Provenance of an image from ``model`` (checkpoint name and hash, seed) plus ``extra``."""
    return {**provenance(model, seed=seed), "channels": model.channels,
            "display": display_note(model.channels, model.stretch), **extra}


def download_row(items: list[tuple[str, bytes | Callable[[], bytes], str, str]], *, key: str) -> None:
    """Download buttons in a row that wraps: (label, data, file name, mime type).

    ``data`` may be a callable, which Streamlit runs only when the button is clicked: use it
    for archives that take longer to build than the page takes to draw.
    """
    with st.container(horizontal=True, gap="small"):
        for i, (label, data, name, mime) in enumerate(items):
            st.download_button(label, data, file_name=name, mime=mime, key=f"{key}_{i}",
                               icon=":material/download:", on_click="ignore")


def latents_download(z: np.ndarray, name: str) -> tuple[str, bytes, str, str]:
    return ("Latents (.npy)", npy_bytes(z), name, "application/octet-stream")


def labels_download(labels: np.ndarray | None, name: str) -> list[tuple[str, bytes, str, str]]:
    """The class labels of a conditional model's images as a download item (``[]`` for None):
    with the latents they regenerate the images (``galaxygan sample --latents ... --labels ...``)."""
    if labels is None:
        return []
    return [("Labels (.npy)", npy_bytes(np.asarray(labels, np.int64)), name, "application/octet-stream")]


def fits_download(model: Pretrained, z: np.ndarray, *, seed: int | None, file_name: str,
                  labels: np.ndarray | None = None) -> tuple[str, Callable[[], bytes], str, str] | None:
    """A download item for the fluxes of the images of latents ``z`` (n, z_dim) as a FITS cube.

    Only for models trained on physical data with an invertible stretch; None otherwise (show
    :func:`fits_note` to say why). The cube is generated when the button is clicked, with the
    checkpoint and seed in its header; latents not drawn from one seed (``seed`` None: paths,
    walks) are written into its ``CATALOG`` table instead, with a conditional model's
    ``labels`` (n,) (default ``i % num_classes``, as :meth:`Pretrained.generate`).
    """
    if fits_skip_reason(model) is not None:
        return None
    z = np.array(z, dtype=np.float32, copy=True)
    if labels is None and model.num_classes:
        labels = np.arange(len(z), dtype=np.int64) % model.num_classes

    def build() -> bytes:
        x = model.generate(z, labels=labels)
        if seed is None:
            return fits_bytes(model, x, seed=-1, latents=z, labels=labels)
        return fits_bytes(model, x, seed=int(seed), labels=labels)

    return ("Fluxes (FITS)", build, file_name, "application/fits")


def fits_images_download(model: Pretrained, x: np.ndarray, *, file_name: str,
                         styles: np.ndarray | None = None) -> tuple[str, Callable[[], bytes], str, str] | None:
    """Like :func:`fits_download` for images already made (model range (n, C, H, W)), such as
    a StyleGAN's images from styles or a projection's reconstruction (seed recorded as -1);
    ``styles`` (n, num_ws, w_dim), the styles they were synthesised from, go into the cube's
    ``CATALOG`` table."""
    if fits_skip_reason(model) is not None:
        return None
    x = np.array(x, dtype=np.float32, copy=True)
    ws = None if styles is None else np.array(styles, dtype=np.float32, copy=True)
    return ("Fluxes (FITS)", lambda: fits_bytes(model, x, seed=-1, styles=ws), file_name, "application/fits")


def stage_images_ui(stages: dict[str, np.ndarray], record: dict, *, resolution: int, ncols: int | None = None,
                    what: str = "") -> dict[str, bytes]:
    """Every stage of a chained model side by side (``{stage: uint8 (n, H, W, 3)}``), each shown
    at the size the final stage is; returns the PNG of each stage (with ``record`` embedded)."""
    out = {}
    scale = display_scale(resolution)
    for col, (stage, rgb) in zip(st.columns(len(stages)), stages.items()):
        s_scale = max(1, scale * resolution // rgb.shape[1])
        out[stage] = grid_png(rgb, record, ncols=ncols, scale=s_scale)
        show_image(out[stage], f"{stage}: {rgb.shape[1]} px, PNG enlarged ×{s_scale}{what}", where=col)
    return out


def chain_note(model: Pretrained, data_name: str | None = None) -> None:
    """For a chained model, one caption naming its stages and saying which one is measured."""
    if not model.refs:
        return
    stages = " → ".join(f"{role} {ref.name} ({ref.resolution} px)" for role, ref in model.refs.items())
    against = f" against {data_name} at {model.resolution} px" if data_name else ""
    st.caption(f"Chained model: {stages} → {model.name} ({model.resolution} px). Everything measured here uses the "
               f"final {model.resolution} px stage{against}; the earlier stage is shown beside it.")


def fits_note(model: Pretrained) -> None:
    """One caption saying why there is no FITS download for ``model`` (nothing for band models)."""
    reason = fits_skip_reason(model)
    if reason is not None:
        st.caption(f"No FITS download: {reason}.")


def residual_rgb(residual: np.ndarray, *, span: float = 0.5) -> np.ndarray:
    """A residual (C, H, W) in model range as a grey image: the mean over bands, mid-grey at 0,
    black at ``-span`` and white at ``+span`` (clipped beyond). Returns uint8 (H, W, 3)."""
    r = np.clip(np.asarray(residual, np.float64).mean(axis=0) / span, -1.0, 1.0)
    grey = np.round((r + 1.0) * 127.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def show_image(data: bytes, caption: str, *, where=st) -> None:
    """Show PNG/GIF bytes exactly as encoded (no JPEG re-encoding of small galaxy stamps)."""
    fmt = "PNG" if data[:4] == b"\x89PNG" else "auto"
    where.image(data, caption=caption, output_format=fmt)


class StageProgress:
    """One ``st.progress`` bar for a computation in named stages, each with its own progress.

    ``stage(i, name)`` returns a ``progress(done, total)`` callback for stage ``i`` of ``n``;
    cached stages simply never call it.
    """

    def __init__(self, n_stages: int, *, where=st):
        self.n = n_stages
        self.bar = where.progress(0.0, text="Starting…")

    def stage(self, i: int, name: str) -> Callable[[int, int], None]:
        self.bar.progress(i / self.n, text=name)

        def update(done: int, total: int) -> None:
            frac = (i + (done / total if total else 1.0)) / self.n
            self.bar.progress(min(frac, 1.0), text=f"{name} ({done}/{total})")

        return update

    def done(self) -> None:
        self.bar.empty()
