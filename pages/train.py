"""Train: start a run from a config-built form, and watch runs live.

Training runs as a separate, detached process (``galaxygan train``); this page only writes the
config, starts the process and reads run folders, so reloading the page or closing the tab
never stops a run.
"""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import streamlit as st

from galaxy_core.config import Config, load_config
from galaxy_core.errors import GalaxyGanError
from galaxy_core.io.render import display_note
from galaxy_core.metrics import plots
from galaxy_core.metrics.fid import parse_metric_name
from galaxy_core.models.family import config_fields
from galaxy_core.models.registry import get_arch, known_archs
from galaxy_core.paths import configs_dir, runs_dir
from galaxy_core.io.checkpoint import read_meta
from galaxy_core.train.launch import launch_training, resume_run, stop_run
from galaxy_core.train.live import split_record_keys
from galaxy_core.train.run import RunFolder, list_runs, unique_run_name
from studio_ui import nav, state, widgets

nav.ensure_app()  # first request for this URL on a fresh server: run the app entry instead

RUN_KEY = "train_run"
STARTED_KEY = "train_started"
RENEW_NAME_KEY = "train_renew_name"  # set by a start: the run name box gets a fresh default
ACTIVE_STATES = ("running", "starting")
REFRESH_ACTIVE_S = 2.0  # monitor refresh while a run is starting or running
REFRESH_IDLE_S = 5.0    # otherwise: still notices runs started elsewhere (galaxygan train) within seconds
CLASSROOM = "dcgan_hdf32"
STATE_BADGE = {"running": ("green", ":material/play_circle:"), "starting": ("blue", ":material/hourglass_top:"),
               "finished": ("violet", ":material/check_circle:"), "stopped": ("orange", ":material/stop_circle:"),
               "failed": ("red", ":material/error:"), "unknown": ("gray", ":material/help:")}
DATASETS = {"hdf": "hdf — Hubble deep field galaxies (RGB)", "sim": "sim — simulated SDSS-like g/r/i galaxies",
            "folder": "A folder or FITS file in the workspace"}


# --------------------------------------------------------------------------------- new run


def presets() -> dict[str, Path]:
    """The training presets this form can start: every ``configs/*.toml`` that is a training
    config (not, e.g., the Sky Composer's ``[sky]`` file) on a dataset the form offers (hdf, sim
    or a folder; the position models' grid datasets train from the command line)."""
    return {p.stem: p for p in sorted(configs_dir().glob("*.toml")) if _preset_kind(p, p.stat().st_mtime_ns) == "form"}


def command_line_presets() -> list[str]:
    """Training presets the form leaves to the command line (grid datasets)."""
    return [p.stem for p in sorted(configs_dir().glob("*.toml")) if _preset_kind(p, p.stat().st_mtime_ns) == "cli"]


@functools.lru_cache(maxsize=128)
def _preset_kind(path: Path, mtime_ns: int) -> str | None:
    """"form" (a training config on a dataset the form offers), "cli" (a training config on
    a grid dataset) or None (not a training config); read once per file version, not on
    every rerun of the page."""
    import tomllib

    from galaxy_core.data.sources import BUILTIN

    try:
        if not set(tomllib.loads(path.read_text())) <= {"data", "augment", "model", "train", "log"}:
            return None
        dataset = load_config(path).data.dataset
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, GalaxyGanError):
        return None
    return "form" if dataset in DATASETS or dataset not in BUILTIN else "cli"


def preset_label(name: str, path: Path) -> str:
    first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
    tag = "Classroom · " if name == CLASSROOM else ""
    return f"{tag}{name}" + (f" — {first[:70]}" if first else "")


def nearest(options: list[int], value: int) -> int:
    """The option closest to ``value`` (so a preset's odd value still fits a slider)."""
    return min(options, key=lambda o: abs(o - value))


def run_name_ok(name: str) -> str:
    """A run name safe as a folder name (letters, digits, ``.``, ``-``, ``_``)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.")
    if not clean:
        raise GalaxyGanError("give the run a name (letters, digits, '-', '_' or '.')")
    return clean


def data_ui(cfg: Config, k: str) -> dict | None:
    d = cfg.data
    default = d.dataset if d.dataset in ("hdf", "sim") else "folder"
    choice = st.radio("Dataset", list(DATASETS), index=list(DATASETS).index(default), format_func=DATASETS.get,
                      key=f"{k}_dataset", horizontal=False)
    out = {"dataset": choice}
    path = None
    if choice == "folder":
        path = widgets.workspace_path_ui("Folder or FITS file", key=f"{k}_folder", placeholder="data/my_galaxies")
        if path is None:
            st.caption("JPG/PNG/TIFF/FITS images, searched recursively, prepared and cached on first use.")
        else:
            out["dataset"] = str(path)
    # Every widget below is drawn whatever the path box holds, so a typo there resets none of them.
    c1, c2 = st.columns(2)
    out["resolution"] = c1.selectbox("Resolution (px)", [32, 64, 128], index=[32, 64, 128].index(d.resolution)
                                     if d.resolution in (32, 64, 128) else 1, key=f"{k}_res")
    out["crop"] = c2.slider("Centre crop (fraction)", 0.3, 1.0, float(d.crop), 0.05, key=f"{k}_crop")
    if choice == "sim":
        out["count"] = st.number_input("Simulated galaxies", 100, 100_000, int(d.count), 100, key=f"{k}_count",
                                       help="Simulated once and cached; 10,000 take a few minutes.")
    if choice == "hdf":
        out["neighbours"] = st.selectbox(
            "Neighbours in each stamp", ["keep", "sky"], index=["keep", "sky"].index(d.neighbours),
            key=f"{k}_neighbours", format_func={"keep": "keep them (the field as it is)",
                                                "sky": "replace them with sky (isolated galaxies)"}.get,
            help="Other detected sources around each galaxy: kept, or replaced by source-free sky from "
                 "elsewhere in the field, for a model that draws one galaxy per stamp (the sky composer "
                 "places neighbours itself).")
    else:
        out["neighbours"] = "keep"  # an option of the built-in hdf only
    if choice != "hdf":
        out["normalisation"] = st.selectbox(
            "Physical data normalisation", ["asinh", "minmax"], index=["asinh", "minmax"].index(d.normalisation),
            key=f"{k}_norm", format_func={"asinh": "asinh (invertible, flux-preserving)",
                                          "minmax": "per-image min-max (not flux-preserving)"}.get)
    return None if choice == "folder" and path is None else out


def data_channels(data: dict) -> list[str]:
    """Channels of the chosen training data, in array order (a folder is prepared, and cached, to know)."""
    if data["dataset"] == "hdf":
        from galaxy_core.data.hdf import CHANNELS

        return list(CHANNELS)
    if data["dataset"] == "sim":
        from galaxy_core.data.sim import BANDS

        return list(BANDS)
    ds = state.dataset(state.data_key(data["dataset"], resolution=int(data["resolution"]), crop=float(data["crop"]),
                                      normalisation=data.get("normalisation", "asinh")))
    return list(ds.channels)


def finetune_check(init_meta: dict, channels: list[str]) -> tuple[str | None, str | None]:
    """(error, warning) for fine-tuning the checkpoint ``init_meta`` on data with ``channels``.

    Different numbers of bands cannot work (the first and last layers would not fit): an error.
    The same number of differently named bands (R/G/B vs g/r/i) trains, but the model must
    relearn what each channel means: a warning.
    """
    want = list((init_meta.get("data") or {}).get("channels") or [])
    n_model = int(init_meta["model"].get("num_bands", len(want) or 0))
    if n_model and len(channels) != n_model:
        return (f"The checkpoint makes {n_model}-band images ({'/'.join(want) or '?'}); this data has "
                f"{len(channels)} band(s) ({'/'.join(channels)}). Fine-tuning needs the same bands: choose data "
                "with the checkpoint's bands, or train from scratch."), None
    if want and want != channels:
        return None, (f"The checkpoint was trained on {'/'.join(want)}; this data is {'/'.join(channels)}. The "
                      "number of bands fits, but the channels mean different things, so the model has to relearn "
                      "its colours.")
    return None, None


def model_ui(cfg: Config, k: str, init_meta: dict | None) -> dict:
    model = dict(cfg.model)
    if init_meta is not None:
        st.caption("Fine-tuning keeps the checkpoint's architecture:")
        st.code(", ".join(f"{a}={b}" for a, b in init_meta["model"].items()), language=None)
        return {key: v for key, v in init_meta["model"].items() if key not in ("resolution", "num_bands")}
    archs = known_archs()
    arch = st.selectbox("Architecture", archs, index=archs.index(cfg.arch) if cfg.arch in archs else 0,
                        key=f"{k}_arch", help=get_arch(cfg.arch).description)
    if arch != cfg.arch:
        model = {}  # another family: start from its own defaults
    model["arch"] = arch
    # The form is built from the family's documented config fields; what the data decides
    # (resolution, bands) is not asked.
    family = get_arch(arch)
    fields = [f for f in config_fields(family.config_cls) if f["name"] not in family.data_fields]
    cols = st.columns(3)
    for i, f in enumerate(fields):
        model[f["name"]] = field_widget(cols[i % 3], f, model.get(f["name"], f["default"]), key=f"{k}_{arch}_{f['name']}")
    return model


def field_widget(col, f: dict, value, *, key: str):
    """One widget for one documented config field, by the type of its default."""
    label, doc = f["name"], f["doc"] or None
    if isinstance(f["default"], bool):
        return col.checkbox(label, value=bool(value), key=key, help=doc)
    if isinstance(f["default"], int):
        return int(col.number_input(label, value=int(value), step=1, key=key, help=doc))
    if isinstance(f["default"], float):
        return float(col.number_input(label, value=float(value), format="%g", key=key, help=doc))
    return col.text_input(label, value=str(value), key=key, help=doc)


def optimiser_ui(cfg: Config, k: str) -> dict:
    t = cfg.train
    c1, c2 = st.columns(2)
    out = {"steps": c1.number_input("Steps (generator updates)", 10, 1_000_000, t.steps, 50, key=f"{k}_steps"),
           "batch_size": c2.select_slider("Batch size", [8, 16, 32, 64, 128, 256],
                                          value=nearest([8, 16, 32, 64, 128, 256], t.batch_size),
                                          key=f"{k}_batch")}
    c1, c2 = st.columns(2)
    out["lr_g"] = c1.number_input("Learning rate G", 1e-6, 1e-1, t.lr_g, format="%.5f", step=1e-5, key=f"{k}_lrg")
    out["lr_d"] = c2.number_input("Learning rate D", 1e-6, 1e-1, t.lr_d, format="%.5f", step=1e-5, key=f"{k}_lrd")
    c1, c2 = st.columns(2)
    out["loss"] = c1.selectbox("Loss", ["bce", "hinge"], index=["bce", "hinge"].index(t.loss), key=f"{k}_loss",
                               format_func={"bce": "non-saturating (BCE)", "hinge": "hinge"}.get)
    out["label_smoothing"] = c2.slider("One-sided label smoothing", 0.0, 0.45, float(t.label_smoothing), 0.05,
                                       key=f"{k}_ls", help="Real targets become 1 − value.")
    out["device"] = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"], index=0, key=f"{k}_device")
    return out


def augment_ui(cfg: Config, k: str, *, grid: bool = False) -> dict:
    """The classic augmentations; ``grid``: the model trains on grids of cell classes (a position
    model), which only flips and quarter turns move exactly, so no extra rotation is offered."""
    a = cfg.augment
    c1, c2, c3 = st.columns(3)
    out = {"flip_h": c1.checkbox("Flip ↔", a.flip_h, key=f"{k}_fh"),
           "flip_v": c2.checkbox("Flip ↕", a.flip_v, key=f"{k}_fv"),
           "rot90": c3.checkbox("Rotate 90°", a.rot90, key=f"{k}_r90")}
    if grid:  # the engine refuses augment.rotate on grid data (train.kinds.GridKind)
        out["rotate"] = "none"
        st.caption("No extra rotation for a position model: its grids hold one size class per cell, and a turn by "
                   "other than a multiple of 90° cannot resample them without dropping, copying or inventing "
                   "galaxies. Flips and quarter turns move whole cells exactly.")
        return out
    out["rotate"] = st.selectbox("Extra rotation", ["none", "45", "any"], index=["none", "45", "any"].index(a.rotate),
                                 key=f"{k}_rot",
                                 format_func={"none": "none", "45": "45° steps", "any": "any angle"}.get)
    return out


def logging_ui(cfg: Config, k: str) -> dict:
    lg = cfg.log
    c1, c2 = st.columns(2)
    return {"sample_every": c1.number_input("Sample grid every (steps)", 1, 100_000, lg.sample_every, key=f"{k}_se"),
            "eval_every": c2.number_input("Live FID every (steps, 0 = off)", 0, 100_000, lg.eval_every, key=f"{k}_ee"),
            "checkpoint_every": lg.checkpoint_every}


def init_ui(k: str) -> tuple[str | None, dict | None]:
    start = st.radio("Start from", ["scratch", "checkpoint"], key=f"{k}_start", horizontal=True,
                     format_func={"scratch": "Scratch", "checkpoint": "Fine-tune a checkpoint"}.get)
    if start == "scratch":
        return None, None
    refs = state.find_checkpoints()
    if not refs:
        st.warning("No checkpoints to fine-tune from.")
        return None, None
    labels = {r.path: r.label for r in refs}
    path = st.selectbox("Checkpoint to start from", list(labels), format_func=labels.get, key=f"{k}_init")
    return path, read_meta(path)


def new_run_ui() -> None:
    """The form; starts a run and selects it in the monitor."""
    st.subheader(":material/add_circle: New run")
    options = presets()
    if not options:
        st.error(f"No config presets in {configs_dir()}.")
        return
    names = list(options)
    preset = st.selectbox("Preset", names, index=names.index(CLASSROOM) if CLASSROOM in names else 0,
                          format_func=lambda n: preset_label(n, options[n]), key="train_preset",
                          help="The classroom preset (small DCGAN, hdf, 32 px) shows galaxies within minutes "
                               "on a laptop CPU. The position models' presets ("
                               + ", ".join(command_line_presets()) + ") train on grid datasets from the command "
                               "line: galaxygan train configs/NAME.toml")
    cfg = load_config(options[preset])
    k = f"tr_{preset}"
    init_path, init_meta = init_ui(k)
    with st.expander("Data", expanded=True, icon=":material/dataset:"):
        data = data_ui(cfg, k)
    blocked = data is None
    if init_meta is not None and data is not None:
        if data["resolution"] != init_meta["model"]["resolution"]:
            st.warning(f"The checkpoint makes {init_meta['model']['resolution']} px images; "
                       f"resolution set to {init_meta['model']['resolution']} px.")
            data["resolution"] = init_meta["model"]["resolution"]
        with widgets.error_boundary("Checking the data's bands"):
            blocked = True  # stays blocked if the data cannot be read
            error, warning = finetune_check(init_meta, data_channels(data))
            if error:
                st.error(error, icon=":material/block:")
            else:
                blocked = False
                if warning:
                    st.warning(warning, icon=":material/warning:")
    with st.expander("Model", icon=":material/account_tree:"):
        model = model_ui(cfg, k, init_meta)
    with st.expander("Optimisation", expanded=True, icon=":material/tune:"):
        train = optimiser_ui(cfg, k)
    with st.expander("Augmentation", icon=":material/flip:"):
        arch = model.get("arch") or (init_meta or {}).get("arch") or cfg.arch
        augment = augment_ui(cfg, k, grid=arch in known_archs() and get_arch(arch).data_kind == "grid")
    with st.expander("Logging and live evaluation", icon=":material/monitoring:"):
        log = logging_ui(cfg, k)
    if st.session_state.pop(RENEW_NAME_KEY, False) or not st.session_state.get(f"{k}_name"):
        st.session_state[f"{k}_name"] = unique_run_name(preset)  # a fresh default, also after each start
    name = st.text_input("Run name", key=f"{k}_name",
                         help="The run's folder name under the runs folder (the default is unique: time to the "
                              "millisecond and a random suffix).")
    if st.button("Start training", type="primary", icon=":material/rocket_launch:", width="stretch",
                 disabled=blocked, key="train_start"):
        values = cfg.to_dict()
        for section, changes in (("data", data), ("train", train), ("augment", augment), ("log", log)):
            values[section].update(changes or {})
        values["model"] = model
        start_run(values, name, init_path)
    if STARTED_KEY in st.session_state:  # stays until the next start: the page reruns as the monitor refreshes
        st.success(st.session_state[STARTED_KEY], icon=":material/rocket_launch:")


def start_run(values: dict, name: str, init_path: str | None) -> None:
    run_dir = runs_dir() / run_name_ok(name)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()  # exclusive: two starts with one name cannot share a folder
    except FileExistsError:
        raise GalaxyGanError(f"a run named {run_dir.name!r} already exists in {run_dir.parent}; "
                             "choose another name (or resume that run in the monitor)") from None
    try:
        pid = launch_training(values, run_dir, init=init_path)
    except GalaxyGanError:
        _remove_if_empty(run_dir)
        raise
    st.session_state[RUN_KEY] = str(run_dir)  # the monitor shows the new run
    st.session_state[STARTED_KEY] = (f"Started **{run_dir.name}** (process {pid}). "
                                     "It keeps running if you close this tab.")
    st.session_state[RENEW_NAME_KEY] = True  # the next run gets a fresh default name (set before its box is drawn)
    st.rerun()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when nothing was written
    except OSError:
        pass


# --------------------------------------------------------------------------------- monitor


def run_row(run: RunFolder) -> dict:
    st_ = run.read_status() or {}
    recs = run.read_metrics()
    last = recs[-1] if recs else {}
    return {"run": run.root.name, "state": run.effective_state(), "step": st_.get("step", 0),
            "of": st_.get("total"), "loss D": last.get("loss_D"), "loss G": last.get("loss_G"),
            "images/s": last.get("images_per_s"),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(st_["started"])) if st_.get("started") else ""}


def runs_table_ui(runs: list[RunFolder]) -> None:
    rows = [run_row(r) for r in runs]
    st.dataframe(rows, hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 250),
                 column_config={"run": st.column_config.TextColumn(width="medium", pinned=True),
                                "loss D": st.column_config.NumberColumn(format="%.3f"),
                                "loss G": st.column_config.NumberColumn(format="%.3f"),
                                "images/s": st.column_config.NumberColumn(format="%.0f")})


def run_picker_ui(runs: list[RunFolder]) -> RunFolder:
    paths = [str(r.root) for r in runs]
    if st.session_state.get(RUN_KEY) not in paths:
        st.session_state[RUN_KEY] = paths[0]
    path = st.selectbox("Run", paths, format_func=lambda p: Path(p).name, key=RUN_KEY)
    return RunFolder(path)


def _open_checkpoint(path: str) -> None:
    st.session_state[state.CHECKPOINT_KEY] = path


def controls_ui(run: RunFolder, run_state: str, status: dict) -> None:
    """Stop / resume / continue buttons for the chosen run."""
    cols = st.columns(3, vertical_alignment="bottom")
    if run_state in ("running", "starting"):
        if cols[0].button("Stop", icon=":material/stop:", key="train_stop", width="stretch",
                          help="Saves the last checkpoint and ends the run as 'stopped'."):
            stop_run(run.root)
            st.toast(f"Asked {run.root.name} to stop; it saves its last checkpoint first.")
    elif run.checkpoint("last").exists():
        total = int(status.get("total") or 0)
        if run_state == "finished":
            more = cols[1].number_input("Continue to step", total + 1, 10_000_000, total * 2 or 100,
                                        key=f"train_more_{run.root.name}_{total}")
            if cols[0].button("Continue", icon=":material/fast_forward:", key="train_continue", width="stretch"):
                resume_run(run.root, overrides=[f"train.steps={int(more)}"])
                st.toast(f"Continuing {run.root.name} to step {int(more)}")
        elif cols[0].button("Resume", icon=":material/play_arrow:", key="train_resume", width="stretch",
                            help="Continue from the last checkpoint."):
            resume_run(run.root)
            st.toast(f"Resumed {run.root.name}")
    ckpt = run.checkpoint("best") if run.checkpoint("best").exists() else run.checkpoint("last")
    if ckpt.exists() and nav.page_file("Latent Explorer"):
        if cols[2].button("Explore this model", icon=":material/explore:", key="train_explore", width="stretch",
                          on_click=_open_checkpoint, args=(str(ckpt),)):
            st.switch_page(nav.page_file("Latent Explorer"))


def progress_ui(run: RunFolder, run_state: str, status: dict, records: list[dict]) -> None:
    color, icon = STATE_BADGE.get(run_state, STATE_BADGE["unknown"])
    st.badge(run_state, icon=icon, color=color)
    step, total = int(status.get("step") or 0), int(status.get("total") or 0)
    ips = records[-1].get("images_per_s") if records else None
    text = f"step {step:,} of {total:,}"
    if run_state == "starting":
        text = (f"starting: resuming at step {step:,} of {total:,}" if step else f"starting: step 0 of {total:,}")
    if ips and run_state == "running" and total > step:
        batch = records[-1]["kimg"] * 1000 / max(records[-1]["step"], 1)
        left = (total - step) * batch / ips
        text += f" · {ips:.0f} images/s · about " + (f"{left / 60:.1f} min left" if left >= 60 else f"{left:.0f} s left")
    st.progress(min(step / total, 1.0) if total else 0.0, text=text)
    holder = run.lock_holder()
    if holder and holder.get("pid"):  # {} while the holder is writing its record
        beat = holder.get("heartbeat")
        age = f"; heartbeat {max(0.0, time.time() - beat):.0f} s ago" if isinstance(beat, (int, float)) else ""
        st.caption(f"Written by process {holder.get('pid')} on {holder.get('host')}{age}.")
    if run_state == "failed":
        st.error(f"The run failed: {status.get('message') or 'the process ended without a final status'}")
        log = run.root / "process.log"
        if log.exists():
            with st.expander("Process log (last lines)"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-25:]), language=None)


def curves_ui(records: list[dict]) -> None:
    if not records:
        st.info("No metrics yet: the first record is written after the first few steps.",
                icon=":material/hourglass_top:")
        return
    steps = [r["step"] for r in records]
    losses = sorted({k for r in records for k in r if k.startswith("loss_")})
    x = "training step (generator updates)"
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.lines(steps, {k: [r.get(k) for r in records] for k in losses}, title="Losses",
                                  x_title=x, y_title="loss (nats per sample; hinge: unitless)"), key="ch_loss")
    c2.plotly_chart(plots.lines(steps, {"D(x) real": [r.get("D_x") for r in records],
                                          "D(G(z)) generated": [r.get("D_G_z") for r in records]},
                                  title="Discriminator output", x_title=x, y_title="mean D output (probability)"),
                    key="ch_d")
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.lines(steps, {"throughput": [r.get("images_per_s") for r in records]},
                                  title="Training speed", x_title=x, y_title="images per second (img/s)"), key="ch_ips")
    quality, statistics = split_record_keys(records)
    with c2:
        if not quality:
            st.info("No live quality metric in this run (live FID is off or not computed yet).")
        for key in quality:
            series_chart(st, records, key, title=f"Live quality: {key}", x_title=x,
                         y_title=f"{metric_unit(key)} (lower is better)", chart_key=f"ch_{key}")
    if statistics:
        with st.expander(f"Other training statistics ({', '.join(statistics)})"):
            cols = st.columns(2)
            for i, key in enumerate(statistics):
                series_chart(cols[i % 2], records, key, title=key, x_title=x, y_title="value",
                             chart_key=f"ch_stat_{key}")


def series_chart(where, records: list[dict], key: str, *, title: str, x_title: str, y_title: str,
                 chart_key: str) -> None:
    """One record key against the step, over the records that hold a number for it."""
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    where.plotly_chart(plots.lines([p[0] for p in pts], {key: [p[1] for p in pts]}, title=title, x_title=x_title,
                                   y_title=y_title), key=chart_key)


def metric_unit(key: str) -> str:
    """Unit of a live metric from its name (``fid_pix8_256``: squared feature units)."""
    parsed = parse_metric_name(key)
    kind = parsed.metric if parsed else key
    return {"fid": "squared feature units", "fd": "squared feature units", "kid": "kernel units"}.get(kind, "value")


def grid_note(run: RunFolder) -> str:
    """How the run's sample grids were rendered: from its checkpoint, else from its config."""
    try:
        data = read_meta(run.checkpoint("last"))["data"]
        return display_note(data["channels"], data.get("stretch"))
    except (GalaxyGanError, KeyError, OSError):
        pass
    try:
        dataset = load_config(run.config_path).data.dataset
    except GalaxyGanError:
        dataset = None
    if dataset == "hdf":
        return display_note(["R", "G", "B"], None)
    if dataset == "sim":
        return display_note(["g", "r", "i"], {"type": "asinh"})
    return "the training data's bands mapped to RGB as in the model card (shown once a checkpoint is saved)"


def sample_grid_ui(run: RunFolder) -> None:
    grids = run.sample_grids()
    if not grids:
        st.info("The first sample grid appears when training starts.", icon=":material/hourglass_top:")
        return
    steps = [s for s, _ in grids]
    key, follow = f"grid_step_{run.root.name}", f"grid_latest_{run.root.name}"
    if st.session_state.get(key) not in steps or st.session_state.get(key) == st.session_state.get(follow):
        st.session_state[key] = steps[-1]  # follow the newest grid unless the user went back
    st.session_state[follow] = steps[-1]
    step = st.select_slider("Sample grid at step", steps, key=key, format_func=lambda s: f"{s:,}") \
        if len(steps) > 1 else steps[0]
    path = dict(grids)[step]
    widgets.show_image(path.read_bytes(), f"Fixed latents at step {step:,}. Display: {grid_note(run)}.")


def active_runs(runs: list[RunFolder]) -> frozenset[str]:
    """Names of the runs starting or running (by status, process and lock)."""
    return frozenset(r.root.name for r in runs if r.effective_state() in ACTIVE_STATES)


def monitor_ui(active_before: frozenset[str] = frozenset()) -> None:
    """The runs table and the chosen run, redrawn from the run folders on every refresh.

    ``active_before`` is the set of active runs when the page was drawn; when it changes (a run
    started elsewhere, or one ended) the whole page is redrawn so the refresh rate follows.
    """
    runs = list_runs(runs_dir())
    if active_runs(runs) != active_before:
        st.rerun()  # a run started or ended: redraw the page so the refresh interval follows
    st.subheader(":material/monitoring: Runs")
    if not runs:
        st.info(f"No runs yet in {runs_dir()}. Start one with the form, or with galaxygan train.",
                icon=":material/info:")
        return
    with widgets.error_boundary("Reading the runs"):
        runs_table_ui(runs)
        run = run_picker_ui(runs)
        status = run.read_status() or {}
        run_state = run.effective_state()
        records = run.read_metrics()
        progress_ui(run, run_state, status, records)
        controls_ui(run, run_state, status)
        curves_ui(records)
        sample_grid_ui(run)


widgets.page_header("Train", "Train a GAN in a background process and watch it learn. Runs keep going when you "
                    "reload the page or close the tab.")
left, right = st.columns([2, 3], gap="large")
with left, st.container(border=True):
    with widgets.error_boundary("Starting the run"):
        new_run_ui()
with right:
    live = st.toggle("Live refresh", value=True, key="train_live",
                     help=f"Follow the run folders: redraw every {REFRESH_ACTIVE_S:.0f} s while a run is starting or "
                          f"running, every {REFRESH_IDLE_S:.0f} s otherwise (to notice runs started elsewhere).")
    active = active_runs(list_runs(runs_dir()))
    every = (REFRESH_ACTIVE_S if active else REFRESH_IDLE_S) if live else None
    st.fragment(monitor_ui, run_every=every)(active)
