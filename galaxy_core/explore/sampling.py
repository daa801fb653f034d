"""Sampling to files and the model card as text: shared by ``galaxygan`` and the app."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from galaxy_core.errors import DataError, GalaxyGanError
from galaxy_core.io.atomic import atomic_write_json
from galaxy_core.io.render import display_note, make_grid, save_png, to_rgb

if TYPE_CHECKING:  # annotations only: printing a model card needs no torch
    from galaxy_core.models.pretrained import Pretrained


def provenance(model: Pretrained, *, seed: int | None = None, latents_file: str | None = None) -> dict:
    """What is needed to regenerate an image and find the model again.

    Returns
    -------
    dict
        ``checkpoint`` (name), ``checkpoint_path`` (absolute path of its JSON), ``checkpoint_id``
        (short hash), ``checkpoint_sha256`` (hash of its tensor file, from the model card),
        ``run`` (the run folder it was trained in, as recorded at training time, or None for a
        checkpoint without training provenance), ``step`` (training step of the weights),
        ``arch``, ``seed`` or ``latents_file``, ``references`` (for a chained model, the name and
        id of each checkpoint it runs after, by role, e.g. ``stage1``), ``software`` (name and
        version) and ``created`` (local time, ISO 8601).
    """
    from galaxy_core import __version__

    training = model.meta.get("training") or {}
    return {
        "checkpoint": model.name,
        "checkpoint_path": str(Path(model.path).resolve()),
        "checkpoint_id": model.id,
        "checkpoint_sha256": model.meta.get("tensors_sha256"),
        "run": training.get("run"),
        "step": training.get("step"),
        "arch": model.meta["arch"],
        "seed": seed,
        "latents_file": latents_file,
        "references": {role: {"checkpoint": ref.name, "checkpoint_id": ref.id} for role, ref in model.refs.items()},
        "software": f"Galaxy GAN Studio {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def fits_skip_reason(model: Pretrained, *, requested: bool = True) -> str | None:
    """Why no FITS cube is written for ``model`` (None when one is).

    A FITS cube holds fluxes, so it is written only for a model trained on physical data with
    an invertible stretch (the ``asinh`` of :mod:`galaxy_core.io.stretch`).

    Parameters
    ----------
    model : Pretrained
        The generator and its model card.
    requested : bool
        False when the user turned FITS off (``--no-fits``).
    """
    if not requested:
        return "FITS output was turned off (--no-fits)"
    data = model.meta.get("data") or {}
    stretch_type = (model.stretch or {}).get("type")
    if model.family.data_kind == "grid":
        return (f"{model.name} draws grids of cell classes ({data.get('name')}: occupancy and size class per cell), "
                "not images of flux; PNG files only")
    if not model.physical:
        return (f"{model.name} was trained on display images ({data.get('name')}, channels "
                f"{'/'.join(model.channels)}), not on flux-calibrated data, so its samples are colours, "
                "not fluxes; PNG files only")
    if stretch_type != "asinh":
        return (f"{model.name} was trained with the {stretch_type or 'unrecorded'} normalisation, which cannot "
                "be inverted to flux (only asinh can); PNG files only")
    return None


def save_samples(model: Pretrained, *, out_dir: Path, n: int, seed: int = 0,
                 latents_file: str | None = None, labels_file: str | None = None, fits: bool = True) -> list[Path]:
    """Write a PNG grid, one PNG per image, the latents, a JSON record and (physical data) FITS.

    Image ``i`` comes from latent ``i`` of ``model.latents(seed, n)`` (or row ``i`` of the latent
    file), so any image can be regenerated from the record. A conditional model's image also
    depends on its class label: label ``i % num_classes`` unless ``labels_file`` gives them;
    the labels used are written to ``labels.npy`` (and listed in ``samples.json``), so
    ``latents.npy`` + ``labels.npy`` (any rows of both) regenerate the same images.

    Parameters
    ----------
    model : Pretrained
        The generator.
    out_dir : Path
        Output folder (created).
    n : int
        Number of images (ignored with ``latents_file``).
    seed : int
        Seed of the latents.
    latents_file : str, optional
        ``.npy`` file of (n, z_dim) latents to use instead of the seed.
    labels_file : str, optional
        ``.npy`` file of (n,) integer class labels in ``[0, num_classes)`` for a conditional
        model, one per image (per latent row with ``latents_file``).
    fits : bool
        Write ``samples.fits`` when the model's data is physical (see :func:`fits_skip_reason`).

    Returns
    -------
    list of Path
        The files written. ``samples.json`` records the checkpoint (path, hash, run, step), the
        seed or latent file, the truncation ``psi`` and ``noise_mode`` used, the ``files``
        written, and either ``fits`` (the cube's name) or ``fits_skipped`` (why not).

    Raises
    ------
    DataError
        ``latents_file`` cannot be read, is not a numeric ``.npy`` of (n, z_dim) latents for
        this model, holds none, or holds NaN or infinite values; ``labels_file`` cannot be read,
        is not a 1-D integer ``.npy`` of one label per image in range, or is given for an
        unconditional model (all checked before anything is written or generated).
    GalaxyGanError
        ``n`` < 1 without a latents file, or ``out_dir`` holds files named as this function names its outputs (``sample_0000.png``,
        ``grid.png``, ...) but no ``samples.json``: they were not written by an earlier
        sampling, so they are left alone and nothing is written.

    Notes
    -----
    Sampling again into a folder of an earlier sampling replaces that run: its files that the
    new run does not overwrite (images beyond the new count, stage grids, a FITS cube) are
    removed once the new files are written, so the folder never mixes two runs' images under
    one ``samples.json``. Other files in the folder are not touched.
    """
    z = _read_latents(latents_file, model) if latents_file else None  # bad input fails before anything is made
    if z is None and n < 1:
        raise GalaxyGanError(f"-n {n}: need at least one image")
    if z is not None:
        n = len(z)
    labels = sample_labels(model, n, labels_file)
    earlier = _earlier_outputs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if z is None:
        z = model.latents(seed, n).numpy()
    stages = model.generate_stages(z, labels=labels, psi=SAMPLE_PSI,
                                   noise_mode=SAMPLE_NOISE)  # {stage: (n, C, H, W)}, final last
    x = list(stages.values())[-1]
    rgb = to_rgb(x, model.channels)
    written = []
    grid = out_dir / "grid.png"
    save_png(grid, make_grid(rgb), scale=2 if model.resolution <= 32 else 1)
    written.append(grid)
    if len(stages) > 1:  # a chained model: every stage's grid too, for side-by-side comparison
        for name, xs in stages.items():
            p = out_dir / f"grid_{name}.png"
            save_png(p, make_grid(to_rgb(xs, model.channels)), scale=max(1, x.shape[-1] // xs.shape[-1]))
            written.append(p)
    for i, im in enumerate(rgb):
        p = out_dir / f"sample_{i:04d}.png"
        save_png(p, im)
        written.append(p)
    np.save(out_dir / "latents.npy", z)
    written.append(out_dir / "latents.npy")
    if labels is not None:
        np.save(out_dir / "labels.npy", labels)
        written.append(out_dir / "labels.npy")
    record = {**provenance(model, seed=None if latents_file else seed, latents_file=latents_file),
              "count": n, "psi": SAMPLE_PSI, "noise_mode": SAMPLE_NOISE,
              **({} if labels is None else {"labels": labels.tolist(), "labels_file": labels_file,
                                             "labels_rule": None if labels_file else
                                             f"image i has label i % {model.num_classes}"}),
              "display": display_note(model.channels, model.stretch),
              "channels": model.channels, "stages": list(stages)}
    skipped = fits_skip_reason(model, requested=fits)
    if skipped is None:
        p = out_dir / "samples.fits"
        write_samples_fits(p, model, x, seed=-1 if latents_file else seed, latents_file=latents_file,
                           labels=labels)
        written.append(p)
        record["fits"] = p.name
    else:
        record["fits_skipped"] = skipped
    written.append(out_dir / "samples.json")
    record["files"] = [w.name for w in written]
    atomic_write_json(out_dir / "samples.json", record)
    for stale in earlier - {w.name for w in written}:  # the earlier run's files not overwritten
        (out_dir / stale).unlink(missing_ok=True)
    return written


SAMPLE_PSI = 1.0  # no truncation: samples show the model as trained
SAMPLE_NOISE = "const"  # per-pixel noise inputs fixed, so a seed always gives the same image
_OUTPUT_NAME = re.compile(r"(sample_\d{4,}\.png|grid(_\w+)?\.png|samples\.fits|latents\.npy|labels\.npy|samples\.json)")


def sample_labels(model: Pretrained, n: int, labels_file: str | None = None) -> np.ndarray | None:
    """(n,) int64 class labels for ``n`` images of a conditional model, None for an unconditional one.

    From ``labels_file`` (a ``.npy`` of integers in ``[0, num_classes)``, one per image), else
    ``i % num_classes`` for image ``i``.

    Raises
    ------
    DataError
        The file cannot be read, is not a 1-D integer array of ``n`` labels, holds a label out
        of range, or is given for an unconditional model.
    """
    k = int(model.num_classes)
    if labels_file is None:
        return (np.arange(n) % k).astype(np.int64) if k else None
    if not k:
        raise DataError(f"{labels_file}: {model.name} is unconditional; it takes no class labels")
    from galaxy_core.explore.export import read_npy

    try:
        a = read_npy(Path(labels_file).read_bytes(), name=str(labels_file))
    except OSError as e:
        raise DataError(f"{labels_file}: cannot read the labels ({e.strerror or e})") from e
    except ValueError as e:
        raise DataError(str(e)) from e
    if a.ndim != 1 or len(a) != n or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{labels_file}: need a 1-D integer array of {n} labels (one per image), "
                        f"got {a.dtype} {a.shape}")
    if len(a) and (a.min() < 0 or a.max() >= k):
        raise DataError(f"{labels_file}: labels must lie in [0, {k - 1}] for {model.name} ({k} classes), "
                        f"got {a.min()} .. {a.max()}")
    return a.astype(np.int64)


def _read_latents(path: str, model: Pretrained) -> np.ndarray:
    """(n, z_dim) float32 latents of a ``.npy`` file (:func:`galaxy_core.explore.export.load_latents`);
    DataError naming the file where it cannot be read or holds no usable latents."""
    from galaxy_core.explore.export import load_latents

    try:
        return load_latents(Path(path).read_bytes(), z_dim=model.z_dim, name=str(path))
    except OSError as e:
        raise DataError(f"{path}: cannot read the latents ({e.strerror or e})") from e
    except ValueError as e:
        raise DataError(str(e)) from e


def _earlier_outputs(out_dir: Path) -> set[str]:
    """Names of the files in ``out_dir`` that an earlier :func:`save_samples` wrote (see its
    Notes); GalaxyGanError where such names are there without that run's ``samples.json``."""
    if not out_dir.is_dir():
        return set()
    names = {p.name for p in out_dir.iterdir() if p.is_file() and _OUTPUT_NAME.fullmatch(p.name)}
    if names and "samples.json" not in names:
        raise GalaxyGanError(f"{out_dir}: holds {len(names)} file(s) named like sampling outputs "
                              f"({', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}) but no samples.json, "
                              "so they were not written by an earlier sampling; choose another folder")
    if not names:
        return names
    record = out_dir / "samples.json"
    try:
        earlier = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and str(earlier.get("software", "")).startswith("Galaxy GAN Studio")
            and isinstance(earlier.get("files"), list)):
        raise GalaxyGanError(f"{record}: is not the record of an earlier sampling, so the files beside it are left "
                             "alone; choose another folder")
    return names & ({str(f) for f in earlier["files"]} | {"samples.json"})  # only what that run wrote


def write_samples_fits(path: Path, model: Pretrained, x: np.ndarray, *, seed: int,
                       latents_file: str | None = None, psi: float = 1.0, noise_mode: str = "const",
                       labels: np.ndarray | None = None, latents: np.ndarray | None = None,
                       styles: np.ndarray | None = None) -> None:
    """Write model-range images ``x`` (n, C, H, W) in [-1, 1] as a flux cube with provenance cards.

    ``seed`` is -1 for images not drawn from a seed: from a latent file (named in ``LATENTS``)
    or from ``latents`` (n, z_dim) given here, which are then written into the ``CATALOG``
    table (column ``z``, row i = image i) so the cube says how to make its images again;
    ``styles`` (n, num_ws, w_dim), a StyleGAN's per-layer w of each image, likewise (column
    ``ws``).
    ``labels`` (n,): a conditional model's class labels (column ``label``). ``psi`` and
    ``noise_mode`` are those the images were generated with (``PSI``, ``NOISE``). A chained
    model's cards name each checkpoint it runs after (``REF <ROLE>``, with its id).
    """
    from galaxy_core.io.fits import write_fits_cube

    flux = model.to_flux(x).astype(np.float32)
    data = model.meta["data"]
    cards = {
        "CKPT": model.name,
        "CKPTID": model.id,
        "ARCH": model.meta["arch"],
        "SEED": seed,
        "PSI": (float(psi), "truncation towards the mean latent (1 = none)"),
        "NOISE": (noise_mode, "per-pixel noise inputs"),
        "GENERATD": "synthetic image from a GAN, not an observation",
        "STRETCH": "asinh (inverted to flux)",
    }
    if latents_file:
        cards["LATENTS"] = (Path(latents_file).name, "file of the latents (row i = image i)")
    elif latents is not None:
        cards["LATENTS"] = ("CATALOG z", "the latents: column z of table CATALOG (row i = image i)")
    elif styles is not None:
        cards["LATENTS"] = ("CATALOG ws", "styles w+: column ws of table CATALOG (row i = image i)")
    for role, ref in model.refs.items():
        cards[f"REF {role}"] = f"{ref.name} {ref.id}"  # the checkpoint this model runs after, and its id
    if data.get("zero_point") is not None:
        cards["ZP"] = data["zero_point"]
    table = None
    if labels is not None or latents is not None or styles is not None:
        from astropy.table import Table

        table = Table({"image": np.arange(len(x), dtype=np.int64)})
        if latents is not None:
            z = np.asarray(latents, np.float32)
            if z.shape != (len(x), model.z_dim):
                raise ValueError(f"latents must be ({len(x)}, {model.z_dim}) for {len(x)} images, got {z.shape}")
            table["z"] = z
            table["z"].description = "latent z the image was generated from"
        if styles is not None:
            ws = np.asarray(styles, np.float32)
            if ws.ndim != 3 or len(ws) != len(x):
                raise ValueError(f"styles must be ({len(x)}, num_ws, w_dim) for {len(x)} images, got {ws.shape}")
            table["ws"] = ws
            table["ws"].description = "per-layer styles w (num_ws, w_dim) the image was synthesised from"
        if labels is not None:  # a conditional model's image depends on its label too
            table["label"] = np.asarray(labels, np.int64)
            names = ", ".join(f"{i} {c}" for i, c in enumerate(model.class_names))
            table["label"].description = f"class label the image was generated with ({names})"
            cards["LABELS"] = ("CATALOG", "per-image class labels: binary table HDU")
    write_fits_cube(path, flux, bands=model.channels, header_cards=cards, bunit=model.flux_unit, table=table,
                    pixel_scale_arcsec=data.get("pixel_scale_arcsec"))


def fits_bytes(model: Pretrained, x: np.ndarray, *, seed: int, latents: np.ndarray | None = None,
               labels: np.ndarray | None = None, styles: np.ndarray | None = None) -> bytes:
    """The FITS cube of :func:`write_samples_fits` as bytes (for a download button)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "samples.fits"
        write_samples_fits(p, model, x, seed=seed, latents=latents, labels=labels, styles=styles)
        return p.read_bytes()


def training_time_text(training: dict) -> str:
    """A card's training time, each clock named: ``18.0 min wall time, 9.9 min CPU time``.

    Parameters
    ----------
    training : dict
        The card's ``training`` table: ``wall_time_s`` (seconds from start to the saved step,
        which a machine shared with other jobs stretches) and ``cpu_time_s`` (CPU seconds of the
        training process, all its threads; cards written before it was recorded have none).

    Returns
    -------
    str
        The wall time, then the CPU time where the card records it; "wall time not recorded"
        for a card without either.
    """
    wall, cpu = training.get("wall_time_s"), training.get("cpu_time_s")
    parts = [f"{wall / 60:.1f} min wall time" if wall is not None else "wall time not recorded"]
    if cpu is not None:
        parts.append(f"{cpu / 60:.1f} min CPU time")
    return ", ".join(parts)


FEATURE_EXTRACTOR = "feature_extractor"  # meta["kind"] of the galaxy encoder's card (metrics.features.KIND)


def model_card_lines(meta: dict) -> list[str]:
    """A checkpoint's description as readable lines.

    A generator's card (``kind`` "gan") gives its architecture, training data, training and
    metrics; the galaxy encoder's (``kind`` "feature_extractor", written by
    :mod:`galaxy_core.metrics.encoder_training`) is described by :func:`feature_extractor_lines`.
    """
    if meta.get("kind") == FEATURE_EXTRACTOR:
        return feature_extractor_lines(meta)
    d, tr, m = meta.get("data", {}), meta.get("training", {}), meta.get("model", {})
    lines = [
        f"architecture: {meta.get('arch')}  ({', '.join(f'{k}={v}' for k, v in m.items() if k != 'arch')})",
        f"data: {d.get('name')} — {d.get('count')} images, {d.get('resolution')}px, channels {d.get('channels')}, "
        f"{d.get('kind')}",
    ]
    if d.get("stretch"):
        lines.append(f"stretch: {d['stretch'].get('type')} (flux-preserving: {d['stretch'].get('flux_preserving')})")
    if tr:
        ips = tr.get("images_per_s")
        lines.append(f"training: {tr.get('step')} steps, {tr.get('kimg', 0):.1f} kimg, {tr.get('epochs', 0):.1f} epochs "
                     f"on {tr.get('device')}; {training_time_text(tr)}" + (f" ({ips:.0f} img/s)" if ips else ""))
    for k, v in (meta.get("metrics") or {}).items():
        lines.append(f"metric {k}: {v:.4g}" if isinstance(v, (int, float)) else f"metric {k}: {v}")
    if meta.get("note"):
        lines.append(f"note: {meta['note']}")
    return lines


def feature_extractor_lines(meta: dict) -> list[str]:
    """The galaxy encoder's card as readable lines: what it is, what it was trained on, how,
    its held-out R^2 per regressed parameter, its soundness figures and its references.

    Parameters
    ----------
    meta : dict
        A card written by :func:`galaxy_core.metrics.encoder_training.train_encoder`: ``name``,
        ``description``, ``references``, ``model``, ``training`` (``data``, ``objective``,
        ``config``, ``seed``, ``hardware``, ``seconds``), ``r2_heldout`` (``unaugmented``,
        ``augmented``: parameter -> R^2 on the held-out ``sim`` images) and ``soundness``.
    """
    tr, m = meta.get("training") or {}, meta.get("model") or {}
    lines = [f"{meta.get('name') or meta.get('arch')}: feature extractor (architecture {meta.get('arch')}: "
             f"{', '.join(f'{k}={v}' for k, v in m.items() if k != 'arch')})"]
    if meta.get("description"):
        lines.append(f"what: {meta['description']}")
    for name, d in (tr.get("data") or {}).items():
        bands = f", {'/'.join(d['channels'])}" if d.get("channels") else ""
        size = f", {d['resolution']} px" if d.get("resolution") else ""
        lines.append(f"trained on {name}: {d.get('train')} of {d.get('count')} images{bands}{size}; "
                     f"{d.get('heldout')} held out, {d.get('heldout_rule')}")
    if tr:
        cfg, hw = tr.get("config") or {}, tr.get("hardware") or {}
        seconds = (tr.get("seconds") or {}).get("training")
        took = f"; {seconds / 60:.1f} min wall time" if seconds is not None else ""
        threads = hw.get("torch_threads")
        where = (f" on {hw['device']} ({hw.get('processor')}, {threads} thread{'' if threads == 1 else 's'})"
                 if hw.get("device") else "")
        lines.append(f"training: {cfg.get('steps')} steps, seed {tr.get('seed')}, {tr.get('objective')}{took}{where}")
    r2 = meta.get("r2_heldout") or {}
    for view, what in (("unaugmented", "the images as they are; their dx, dy span only +-0.5 px, so those two say "
                                       "little"), ("augmented", "one flipped, turned and shifted view of each")):
        if r2.get(view):
            lines.append(f"held-out R^2 on sim ({what}): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in r2[view].items()))
    sound = meta.get("soundness") or {}
    if sound:
        fid = ", ".join(f"{k} {v:.3g}" for k, v in (sound.get("fid_train_vs_heldout") or {}).items())
        lines.append(f"soundness: FID of training vs held-out images {fid}; trivial baselines (noise, blobs, "
                     f"shuffled pixels) at least {sound.get('min_baseline_over_heldout')} times that; disturbance curves "
                     f"{'rise monotonically' if sound.get('monotonic') else 'do NOT all rise monotonically'}")
    for ref in meta.get("references") or []:
        lines.append(f"reference: {ref}")
    return lines
