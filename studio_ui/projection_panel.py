"""The Latent Explorer's "Project a real galaxy" panel (StyleGAN checkpoints).

Draws the target choice (a stamp of the checkpoint's training data, or an uploaded PNG/JPG/TIFF
or FITS stamp), the settings, a progress bar with a live loss curve while
:func:`galaxy_core.explore.projection.project` runs, and the result: target, reconstruction and
residual side by side, the fit of the reconstruction shown (its pixel MSE and χ², measured on it),
the loss curve per term and the downloads, among them the one that regenerates the reconstruction
exactly (ws with the optimised noise maps). What the target's checks found (another pixel scale,
an enlarged image, a grey image copied into R, G, B) is shown with the target and the result. The
result stays in the session (:data:`PROJ_KEY`) so the interpolation can start from it (:data:`USE_KEY`).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from galaxy_core.explore import evaluation as ev
from galaxy_core.explore import projection, style
from galaxy_core.explore.export import npy_bytes, png_with_record, space_npz_bytes
from galaxy_core.io.render import make_grid, to_rgb
from galaxy_core.metrics import plots
from galaxy_core.models.pretrained import Pretrained
from studio_ui import state, widgets

PROJ_KEY = "le_projection"    # session state: the last projection (its result, target and checkpoint)
USE_KEY = "le_use_projected"  # session state: the projected galaxy starts the interpolation
RESIDUAL_SPAN = 0.5  # model-range residual shown black (-) to white (+)
CHI2_WEIGHT = 0.002  # the chi^2 term's weight when switched on (chi^2 ~ 10 vs pixel MSE ~ 0.02)


def projected(model: Pretrained) -> dict | None:
    """The last projection, when it was made with this checkpoint."""
    proj = st.session_state.get(PROJ_KEY)
    return proj if proj is not None and proj["checkpoint_id"] == model.id else None


@st.cache_data(max_entries=16, show_spinner="Preparing the uploaded stamp…")
def _uploaded_target(data: bytes, name: str, model_key: tuple, index: int = 0) -> projection.ProjectionTarget:
    """Usable image ``index`` of an uploaded file as a target, with the names of the file's usable
    images (``samples.fits#2``: image 2 of the file)."""
    import tempfile
    from pathlib import Path

    model = state.cached_model(model_key)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "upload"
        folder.mkdir()
        (folder / Path(name).name).write_bytes(data)
        return projection.target_from_file(folder, model=model, index=index)


def _training_data_key(model: Pretrained) -> tuple:
    own = ev.training_data(model.meta)
    return state.data_key(**own)


def target_ui(model: Pretrained) -> projection.ProjectionTarget | None:
    """The real galaxy to project (its image in the model's range (C, H, W), label, notes and
    warnings, which are shown here); None until chosen."""
    own = ev.training_data(model.meta)
    source = st.segmented_control("Real galaxy from", ["training", "upload"], default="training", key="le_pj_src",
                                  required=True, format_func={"training": f"Training data ({own['spec']})",
                                                              "upload": "Upload a stamp (PNG, JPG, FITS)"}.get)
    if source == "training":
        data = state.dataset(_training_data_key(model))
        index = int(st.number_input(f"Stamp number (0 – {len(data) - 1})", 0, len(data) - 1, 0, key="le_pj_index",
                                    help="The stamp of the data this checkpoint was trained on."))
        target = projection.target_from_dataset(data, index, model=model)
    else:
        kinds = ["fits", "fit", "fz"] if model.physical else ["png", "jpg", "jpeg", "tif", "tiff"]
        unit = f" in {model.flux_unit}" if model.physical and model.flux_unit else ""
        f = st.file_uploader(f"A {'/'.join(model.channels)} stamp{unit}; centre-cropped and resized to "
                             f"{model.resolution} px", type=kinds, key="le_pj_upload",
                             help="Flux data (FITS) for a model trained on fluxes, an image file for one trained "
                                  "on 8-bit images (a grey one is copied into R, G and B). Bands the file names "
                                  "(BAND1..n cards, or a band in the file name) and its BUNIT must be the model's; "
                                  f"more than {projection.CLIP_LIMIT:.0%} of its pixels outside the model's range "
                                  "is refused.")
        if f is None:
            return None
        target = _uploaded_target(f.getvalue(), f.name, state.model_cache_key(model))
        if len(target.names) > 1:  # a FITS cube of several images (samples.fits): choose one
            names = target.names
            index = st.selectbox("Image in the file", range(len(names)), format_func=names.__getitem__,
                                 key="le_pj_upload_index",
                                 help="The file holds several images (an images × bands × height × width cube, as "
                                      "the sampler writes samples.fits); #i is the image's place in the file, and "
                                      "blank ones are left out.")
            if index:
                target = _uploaded_target(f.getvalue(), f.name, state.model_cache_key(model), index)
    if target.clipped > 0.001:
        st.caption(f"{target.clipped:.1%} of the stamp's pixels lie outside the model's range and were clipped.")
    target_notes_ui(target.notes, target.warnings)
    return target


def target_notes_ui(notes, warnings) -> None:
    """What was done to the target (info) and what may make its fit poor (warnings)."""
    for note in notes:
        st.info(note, icon=":material/info:")
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")


def projection_settings_ui(model: Pretrained) -> dict:
    c1, c2, c3, c4 = st.columns([2, 2, 2, 3])
    steps = c1.slider("Steps", 5, 1000, 200, step=5, key="le_pj_steps",
                      help="Adam steps, each a forward and backward pass of the generator (and of the encoder when the "
                           "feature weight is above 0); the loss curve shows when more stop helping.")
    space = c2.radio("Into", ["w", "w+"], horizontal=True, key="le_pj_space",
                     help="w: one style vector for every layer (stays on the model's manifold); w+: one per layer "
                          "(Abdal et al. 2019), closer fits that edit less cleanly.")
    usable = len(model.channels) in (1, 3)
    fw = c3.number_input("Feature weight", 0.0, 10.0, 0.1 if usable else 0.0, 0.05, key="le_pj_fw", disabled=not usable,
                         help="Weight of 1 − cosine similarity of galaxy-encoder features (the pixel MSE has weight 1).")
    chi2 = False
    if model.physical:
        chi2 = c4.toggle("Add χ² of the residual in flux units", key="le_pj_chi2",
                         help=f"Weight {CHI2_WEIGHT}: reduced χ² with the noise of the stamp's outer ring; it weighs "
                              "faint outskirts by signal-to-noise. It is reported either way.")
    return {"steps": int(steps), "space": space, "feature_weight": float(fw) if usable else 0.0,
            "chi2_weight": CHI2_WEIGHT if chi2 else 0.0}


def run_projection(model: Pretrained, chosen: projection.ProjectionTarget, settings: dict) -> None:
    """Project with a progress bar and a live loss curve; keep the result in the session."""
    target, label = chosen.image, chosen.label
    bar = st.progress(0.0, text="Starting the projection…")
    live = st.empty()
    totals: list[float] = []
    every = max(1, settings["steps"] // 40)  # about 40 redraws of the live curve

    def progress(step: int, steps: int, total: float) -> None:
        totals.append(total)
        bar.progress(step / steps, text=f"Step {step} of {steps} · loss {total:.4g}")
        if step % every == 0 or step == steps:
            live.plotly_chart(plots.lines(range(1, step + 1), {"loss": totals}, title="Loss (live)", x_title="step",
                                          y_title="weighted loss", log_y=True, height=240), key=f"le_pj_live_{step}")

    res = projection.project(model, target, space=settings["space"], steps=settings["steps"],
                             feature_weight=settings["feature_weight"], chi2_weight=settings["chi2_weight"],
                             extractor="galaxy" if settings["feature_weight"] > 0 else None, progress=progress)
    bar.empty()
    live.empty()
    const = style.synthesize(model, res.ws[None])[0]  # what ws alone gives: the checkpoint's constant noise
    st.session_state[PROJ_KEY] = {"checkpoint_id": model.id, "label": f"projected {label}", "target_label": label,
                                  "target": target, "target_notes": chosen.notes, "target_warnings": chosen.warnings,
                                  "space": res.space, "latent": res.latent, "ws": res.ws,
                                  "reconstruction": res.reconstruction, "residual": res.residual,
                                  "losses": res.losses, "final": res.final, "chi2": res.chi2, "settings": settings,
                                  "npz": projection.projection_npz(res, model=model),
                                  "const_noise_change": float(np.abs(const - res.reconstruction).max())}
    st.session_state.pop(USE_KEY, None)  # a new galaxy: the user decides again


def projection_result_ui(model: Pretrained, proj: dict, *, current_label: str | None = None) -> None:
    """The projection's result; its target's notes and warnings too when the target chosen now
    (``current_label``, whose notes :func:`target_ui` shows) is another one."""
    target, recon, resid = proj["target"], proj["reconstruction"], proj["residual"]
    rgb = to_rgb(np.stack([target, recon]), model.channels)
    resid_rgb = widgets.residual_rgb(resid, span=RESIDUAL_SPAN)[None]
    scale = widgets.display_scale(model.resolution) * 2
    name = f"{model.name}_projected_{proj['space'].replace('+', 'plus')}"
    final = proj["final"]
    record = widgets.record_for(model, target=proj["target_label"], projection=proj["settings"],
                                latent=np.asarray(proj["latent"]).tolist(), pixel_mse=final["pixel"],
                                chi2=proj["chi2"], target_notes=list(proj["target_notes"] + proj["target_warnings"]),
                                noise_maps=f"optimised per-layer noise maps, not in this record: {name}.npz holds them "
                                           "with ws (galaxy_core.explore.projection.render_projection); the latent "
                                           "alone renders with the checkpoint's constant noise")
    pngs = [png_with_record(im, record, scale=scale) for im in (rgb[0], rgb[1], resid_rgb[0])]
    if proj["target_label"] != current_label:
        target_notes_ui(proj["target_notes"], proj["target_warnings"])
    cols = st.columns(4)
    widgets.show_image(pngs[0], f"Target: {proj['target_label']}. {widgets.stretch_note(model)}", where=cols[0])
    widgets.show_image(pngs[1], f"Reconstruction in {proj['space']} (optimised noise maps); same display.",
                       where=cols[1])
    widgets.show_image(pngs[2], "Residual target − reconstruction, mean over bands in model range: mid-grey = 0, "
                       f"black −{RESIDUAL_SPAN:g}, white +{RESIDUAL_SPAN:g}.", where=cols[2])
    with cols[3]:
        st.metric("Pixel MSE (model range)", f"{final['pixel']:.4g}", border=True,
                  help="mean((target − reconstruction)²) of the reconstruction shown, over bands and pixels.")
        if proj["chi2"] is not None:
            st.metric("Reduced χ² (flux units)", f"{proj['chi2']:.3g}", border=True,
                      help="mean((f_target − f_model)² / σ²) of the reconstruction shown, with σ per band from the "
                           "stamp's outer ring; about 1 when the residual is noise.")
    steps = range(1, len(proj["losses"]) + 1)
    series = {k: [r[k] for r in proj["losses"]] for k in ("total", "pixel", "feature")}
    if proj["settings"]["feature_weight"] == 0:
        series.pop("feature")
    if proj["chi2"] is not None:
        series["chi2 / 100"] = [r["chi2"] / 100 for r in proj["losses"]]
    st.plotly_chart(plots.lines(steps, series, title="Projection loss", x_title="step", y_title="loss (log scale)",
                                log_y=True, height=280), key="le_pj_curve")
    st.caption("Total = pixel MSE + feature weight × (1 − encoder cosine)"
               + (" + χ² weight × χ²" if proj["settings"]["chi2_weight"] else "")
               + ", measured at the noisy w of each step before its update (noise on w decays over the first "
                 "three quarters); the figures beside the images are those of the reconstruction shown.")
    items = [
        ("ws + noise maps (.npz): exact", proj["npz"], f"{name}.npz", "application/octet-stream"),
        (f"Latent {proj['space']} (.npz)",  # never a bare .npy: a w would pass for a z of the same size
         space_npz_bytes(f"projected latent {proj['space']}", **{proj["space"].replace("+", "_plus"):
                                                                  np.asarray(proj["latent"])[None]},
                         checkpoint_id=np.array(model.id)),
         f"{name}_{proj['space'].replace('+', '_plus')}.npz", "application/octet-stream"),
        ("Styles ws (.npy)", npy_bytes(np.asarray(proj["ws"])[None]), f"{name}_ws.npy", "application/octet-stream"),
        ("Reconstruction (PNG)", pngs[1], f"{name}.png", "image/png"),
        ("Target | reconstruction | residual (PNG)",
         png_with_record(make_grid(np.concatenate([rgb, resid_rgb]), ncols=3), record, scale=scale),
         f"{name}_panel.png", "image/png"),
    ]
    fits = widgets.fits_images_download(model, recon[None], file_name=f"{name}.fits")
    widgets.download_row(items + ([fits] if fits else []), key="le_pj_dl")
    st.caption(f"Only **{name}.npz** regenerates the reconstruction exactly: it holds ws together with the "
               "optimised noise maps and the checkpoint id "
               "(`galaxy_core.explore.projection.render_projection(model, path)`). The latent `.npz` and the "
               "ws `.npy` files alone re-render with the checkpoint's constant noise, which changes this reconstruction by "
               f"up to {proj['const_noise_change']:.2g} in model range (fine texture).")
    st.button("Use as interpolation key", key="le_pj_use", icon=":material/linear_scale:", type="primary",
              on_click=lambda: st.session_state.__setitem__(USE_KEY, True),
              help="The interpolation above then starts at this galaxy (in w) and runs through its keys. The "
                   "strip uses the checkpoint's constant noise, not the optimised noise maps.")


def projection_ui(model: Pretrained) -> None:
    st.subheader(":material/center_focus_strong: Project a real galaxy")
    st.caption("Find the w (or per-layer w+) whose image matches a real stamp: Adam on w and the noise maps, "
               "pixel + galaxy-encoder feature loss, noise regularisation (Karras et al. 2020, appendix D).")
    with widgets.error_boundary("Projecting the galaxy"):
        chosen = target_ui(model)
        settings = projection_settings_ui(model)
        if chosen is None:
            st.caption("Upload a stamp to project.")
            return
        if st.button("Project", key="le_pj_go", icon=":material/play_arrow:"):
            run_projection(model, chosen, settings)
        proj = projected(model)
        if proj is not None:
            projection_result_ui(model, proj, current_label=chosen.label)
        else:
            preview = png_with_record(to_rgb(chosen.image[None], model.channels)[0],
                                      widgets.record_for(model, target=chosen.label),
                                      scale=2 * widgets.display_scale(model.resolution))
            widgets.show_image(preview, f"Target: {chosen.label}. {widgets.stretch_note(model)}")
