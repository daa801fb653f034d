"""``galaxygan``: the command line. Every command calls the same public functions as the app."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from galaxy_core.config import seed_arg
from galaxy_core.errors import GalaxyGanError
from galaxy_core.io.atomic import json_text
from galaxy_core.sky.cli import _add_sky_commands


def _cmd_data_build(args) -> int:
    from galaxy_core.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(args.name, resolution=args.resolution, crop=args.crop, count=args.count,
                      seed=args.seed, neighbours=args.neighbours, rebuild=args.rebuild, progress=True)
    _print_dataset(ds, time.perf_counter() - t0)
    return 0


def _cmd_data_prepare(args) -> int:
    from galaxy_core.data import load_dataset
    from galaxy_core.data.sources import remember_preparation

    path, held = args.path, None
    if args.held_out_fraction is not None:
        from galaxy_core.data.split import split_folder

        rec = split_folder(args.path, fraction=args.held_out_fraction, out=args.split_dir, seed=args.split_seed)
        path, held = rec["train_dir"], rec["held_out_dir"]
        n_train, n_held = len(rec["train"]), len(rec["held_out"])
        print(f"split {args.path} (seed {rec['seed']}): {n_train} training and {n_held} held-out galaxies "
              f"({100 * n_held / (n_train + n_held):.0f} % held out; each galaxy is set aside with probability "
              f"{rec['fraction']:g}, so the share is near, not exactly, {100 * rec['fraction']:g} %)"
              f"\n  training: {path}\n  held out: {held}")
    t0 = time.perf_counter()
    ds = load_dataset(path, resolution=args.resolution, crop=args.crop,
                      normalisation=args.normalisation, rebuild=args.rebuild, progress=True)
    _print_dataset(ds, time.perf_counter() - t0)
    remember_preparation(path, resolution=args.resolution, crop=args.crop, normalisation=args.normalisation)
    print(next_train_command(path, args.resolution, args.crop))
    if held is not None:
        print(f"then: galaxygan evaluate RUN/checkpoints/last.json --held-out {shlex.quote(str(held))}"
              "  (or best.json, once the run has made a live evaluation)")
    return 0


def next_train_command(path, resolution: int, crop: float) -> str:
    """The ``next:`` line of ``data prepare``: a command that trains on the folder as prepared,
    runnable from any directory (the config's full path, the folder quoted for the shell)."""
    from galaxy_core.paths import REPO_ROOT

    if resolution > 128:
        return (f"next: DCGAN trains at 32, 64 or 128 px; prepare {shlex.quote(str(path))} again with "
                "--resolution 128 (or lower) to train on it with a shipped config")
    preset = REPO_ROOT / "configs" / ("dcgan_hdf32.toml" if resolution <= 32 else "dcgan_hdf64.toml")
    return (f"next: galaxygan train {shlex.quote(str(preset))} --data {shlex.quote(str(path))}"
            f"   (resolution {resolution}, crop {crop} remembered for this folder)")


def _print_dataset(ds, seconds: float) -> None:
    m = ds.manifest
    print(f"{m['name']}: {len(ds)} images, {ds.num_bands} channels {ds.channels}, {ds.resolution}px, "
          f"{m['dtype']} ({seconds:.1f} s)")
    print(f"  folder: {ds.root}")
    skipped = m.get("skipped") or []
    if skipped:
        print(f"  skipped {len(skipped)} file(s):")
        for s in skipped[:10]:
            print(f"    {s['file']}: {s['reason']}")


def _cmd_train(args) -> int:
    from tqdm import tqdm

    from galaxy_core.config import load_config
    from galaxy_core.paths import runs_dir
    from galaxy_core.train.loop import train

    if args.resume:
        unused = [what for what, given in (("CONFIG", args.config), ("--name", args.name),
                                           ("--run-dir", args.run_dir), ("--init", args.init)) if given]
        if unused:  # each would be silently overridden by the run's own config, folder and weights
            raise GalaxyGanError(f"--resume {args.resume} continues that run with its own config.toml, folder and "
                                 f"weights; {', '.join(unused)} cannot be used with it (--set SECTION.KEY=VALUE "
                                 "changes a value, --data another dataset with --force-data)")
        run_dir = Path(args.resume)
        config_path = run_dir / "config.toml"
        if not config_path.exists():
            raise GalaxyGanError(f"{run_dir}: not a run folder (config.toml missing)")
        cfg = load_config(config_path, _data_overrides(args) + (args.set or []))  # other data: refused below
    else:
        cfg = load_config(args.config, _data_overrides(args) + (args.set or []))  # no CONFIG: the defaults
        if args.run_dir:
            run_dir = Path(args.run_dir)
        elif args.name:
            run_dir = runs_dir() / args.name
        else:
            from galaxy_core.train.distributed import agree_on
            from galaxy_core.train.run import unique_run_name

            name = unique_run_name(Path(args.config).stem if args.config else "default")
            # under torchrun every rank must check and use one folder: rank 0's new name for all
            run_dir = runs_dir() / (name if args.dry_run else agree_on(name, cfg.train.device))
    if args.dry_run:
        print(_applicable_toml(cfg), end="")
        print(_model_field_docs(cfg.arch))
        from galaxy_core.data.sources import BUILTIN, require_dataset

        if str(cfg.data.dataset) not in BUILTIN:
            require_dataset(cfg.data.dataset)  # the config is printed; a dataset that is not there fails as training would
        return 0
    from galaxy_core.paths import resolve_checkpoint

    init = str(resolve_checkpoint(args.init)) if args.init else None  # a path, or a shipped checkpoint's name
    stop = {"flag": False}

    def _on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"run folder: {run_dir}", flush=True)
    bar = None  # drawn when the loop starts: every refusal (a taken folder, other data or model) comes before

    def _bar():
        nonlocal bar
        if bar is None:
            bar = tqdm(total=cfg.train.steps, unit="step", disable=args.quiet, dynamic_ncols=True)
        return bar

    def _progress(step, total, rec):
        b = _bar()
        b.n = step
        extra = {k: f"{rec[k]:.3g}" for k in ("loss_D", "loss_G", "images_per_s") if rec.get(k) is not None}
        b.set_postfix(extra, refresh=False)
        b.refresh()

    def _should_stop() -> bool:  # polled before every step, the first time once all the checks have passed
        _bar()
        return stop["flag"]

    try:
        status = train(cfg, run_dir, resume=bool(args.resume), init_from=init, progress_fn=_progress,
                       abort_fn=_should_stop, progress=not args.quiet, force_data=args.force_data)
    finally:
        if bar is not None:
            bar.close()
    for warning in status.get("warnings", []):
        print(f"galaxygan: warning: {warning}", file=sys.stderr)
    if status.get("init"):
        ini = status["init"]
        print(f"initialised from {ini['source']}: {ini['loaded']} tensors loaded; "
              f"re-created: {', '.join(ini['recreated']) or 'none'}; new: {', '.join(ini['missing']) or 'none'}")
    print(f"{status['state']} at step {status['step']}; checkpoints in {run_dir / 'checkpoints'}")
    return 0 if status["state"] in ("finished", "stopped") else 1


def _data_overrides(args) -> list[str]:
    """``--data FOLDER``: the dataset, with the preprocessing remembered from ``data prepare``."""
    if not args.data:
        return []
    from galaxy_core.data.sources import remembered_preparation

    out = [f"data.dataset={args.data}"]
    for key, value in (remembered_preparation(args.data) or {}).items():
        out.append(f"data.{key}={value}")
    return out


def _applicable_toml(cfg) -> str:
    """The resolved config, without the keys that mean nothing for this dataset."""
    from galaxy_core.config import dataset_specific_keys, to_toml
    from galaxy_core.data.sources import is_physical_source

    d = cfg.to_dict()
    notes = []
    for key, reason in dataset_specific_keys(cfg.data).items():
        d["data"].pop(key)
        if reason not in notes:
            notes.append(reason)
    try:
        physical = is_physical_source(cfg.data.dataset)
    except OSError:
        physical = True
    if not physical:
        d["data"].pop("normalisation")
        notes.append("data.normalisation applies to flux data (sim, FITS) only")
    return to_toml(d) + "".join(f"# {n}\n" for n in notes)


def _model_field_docs(arch: str) -> str:
    """The family's model fields with their documentation, as TOML comments."""
    from galaxy_core.models.family import config_fields
    from galaxy_core.models.registry import get_arch

    family = get_arch(arch)
    lines = [f"# [model] fields of arch = {arch!r} ({family.description}):"]
    for f in config_fields(family.config_cls):
        lines.append(f"#   {f['name']} ({f['type']}, default {f['default']!r}): {f['doc']}")
    return "\n".join(lines)


def _cmd_checkpoints_verify(args) -> int:
    from galaxy_core.models.pretrained import verify_folder
    from galaxy_core.paths import checkpoints_dir

    folder = Path(args.folder) if args.folder is not None else checkpoints_dir()  # the shipped ones, from anywhere
    print(f"checking {folder}", flush=True)
    results = verify_folder(folder)
    if not results:
        raise GalaxyGanError(f"{folder}: no checkpoints (NAME.json + NAME.safetensors) found")
    for r in results:
        what = f"{r['kind'] or 'unknown'}/{r['arch']}" if r["arch"] else (r["kind"] or "unknown")
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['path']} ({what}){'' if r['ok'] else ': ' + r['problem']}")
    bad = sum(not r["ok"] for r in results)
    print(f"{len(results) - bad} of {len(results)} checkpoints verified")
    return 1 if bad else 0


def _cmd_sample(args) -> int:
    from galaxy_core.explore.sampling import fits_skip_reason, save_samples
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import resolve_checkpoint

    if args.latents and args.n is not None:
        raise GalaxyGanError(f"-n {args.n} and --latents {args.latents}: the latents file sets the count (one image "
                             "per row); give one of them")
    model = load_pretrained(resolve_checkpoint(args.checkpoint))
    written = save_samples(model, out_dir=Path(args.out), n=16 if args.n is None else args.n, seed=args.seed,
                           latents_file=args.latents, labels_file=args.labels, fits=not args.no_fits)
    for p in written:
        print(p)
    skipped = fits_skip_reason(model, requested=not args.no_fits)
    if skipped:
        print(f"note: no FITS cube written: {skipped}")
    return 0


def _cmd_info(args) -> int:
    from galaxy_core.io.checkpoint import read_meta
    from galaxy_core.paths import resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    meta = read_meta(path)
    meta.pop("optimizer", None)
    if args.json:
        print(json_text(meta, indent=2))
        return 0
    from galaxy_core.errors import CheckpointError
    from galaxy_core.explore.sampling import model_card_lines
    from galaxy_core.paths import with_suffix_of

    try:
        lines = model_card_lines(meta)
    except (TypeError, ValueError, AttributeError, KeyError) as e:  # e.g. "kimg": "many"
        card = with_suffix_of(path, ".json", (".json", ".safetensors"))
        raise CheckpointError(f"{card}: malformed model card: a field cannot be shown ({type(e).__name__}: {e}); "
                              "restore the NAME.json galaxygan wrote, or see it as is with --json") from e
    print("\n".join(lines))
    return 0


def _cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from galaxy_core.metrics.report import evaluate_checkpoint
    from galaxy_core.metrics.samples import check_sample_size
    from galaxy_core.paths import resolve_checkpoint

    check_sample_size(args.n, option="-n")  # before anything is loaded or drawn
    if args.queries is None:  # the default: 64, or all samples where there are fewer
        args.queries = min(64, args.n)
    if not args.no_memorisation:
        check_sample_size(args.queries, option="--queries", minimum=1, maximum=args.n)
    checkpoint = resolve_checkpoint(args.checkpoint)
    bar = tqdm(total=None, bar_format="{desc}", disable=args.quiet)

    def _warn(text: str) -> None:
        bar.clear()
        print(f"galaxygan: warning: {text}", file=sys.stderr, flush=True)

    try:
        summary = evaluate_checkpoint(
            checkpoint, report_dir=Path(args.report), data=args.data, held_out=args.held_out, n=args.n,
            extractors=tuple(args.extractor or ["galaxy"]), morphology=not args.no_morphology,
            memorisation=not args.no_memorisation, n_queries=args.queries, seed=args.seed, png=not args.no_png,
            evidence=tuple(args.evidence or ["l1", "ssim"]),
            step=lambda text: bar.set_description_str(f"evaluate: {text}"), warn=_warn)
    finally:
        bar.close()
    print((Path(args.report) / "metrics.csv").read_text(), end="")
    reading = (summary.get("cmd") or {}).get("reading")
    if reading:
        print(f"colour-magnitude box: {reading['sentence']}")
    mem = summary.get("memorisation")
    if mem:
        print(f"memorisation: {mem['compared']}")
        print(f"  {mem['verdict']}")
    if summary.get("png_note"):
        print(f"note: {summary['png_note']}")
    print(f"report: {args.report} ({summary['seconds']:.0f} s)")
    if args.record:
        from galaxy_core.metrics.report import record_in_card

        command = "galaxygan evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "galaxygan evaluate"
        record_in_card(checkpoint, summary, command=command)
        print(f"recorded the headline metrics in {checkpoint}")
    return 0


def _cmd_export(args) -> int:
    from galaxy_core.io.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint

    from galaxy_core.paths import check_output_stem

    check_output_stem(args.out)
    src = Path(args.source)
    if src.is_dir():
        src = src / "checkpoints" / f"{args.which}.json"
    else:
        from galaxy_core.paths import resolve_checkpoint

        src = resolve_checkpoint(src)
    existing = [p for p in checkpoint_paths(args.out) if p.exists()]
    if existing and not args.force:
        raise GalaxyGanError(f"{existing[0]}: already exists; give another --out, or --force to replace that "
                             "checkpoint")
    tensors, meta = load_checkpoint(src)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("opt_")}
    meta.pop("optimizer", None)
    meta.pop("tensors_sha256", None)
    if args.note:
        meta["note"] = args.note
    out = save_checkpoint(args.out, tensors, meta)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="galaxygan", description="Train, sample and inspect galaxy GANs.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or prepare datasets").add_subparsers(dest="data_command", required=True)
    b = data.add_parser("build", help="build a built-in dataset (hdf or sim)")
    b.add_argument("name", choices=["hdf", "sim"], help="hdf: galaxies cut out of the Hubble deep field (RGB); sim: "
                                                        "simulated SDSS-like g/r/i galaxies")
    b.add_argument("--resolution", type=int, default=64,
                   help="side of the square images in pixels: 32, 64, 128 or 256 (default %(default)s)")
    b.add_argument("--crop", type=float, default=1.0,
                   help="fraction of each stamp kept around its centre before resizing, in (0, 1]; 0.5 keeps the "
                        "central half (default %(default)s: the whole stamp)")
    b.add_argument("--count", type=int, default=None, help="sim: number of galaxies (default 10000)")
    b.add_argument("--seed", type=seed_arg, default=0, help="sim: random seed")
    b.add_argument("--neighbours", choices=["keep", "sky"], default="keep",
                   help="hdf: keep the field around each galaxy, or replace other detected sources with source-free sky")
    b.add_argument("--rebuild", action="store_true",
                   help="build the dataset again even when the cache holds one with these options")
    b.set_defaults(func=_cmd_data_build)
    pr = data.add_parser("prepare", help="prepare a folder of JPG/PNG/TIFF/FITS files (or one FITS file)")
    pr.add_argument("path", help="folder of JPG/PNG/TIFF/FITS files (searched recursively) or one FITS file")
    pr.add_argument("--resolution", type=int, default=64,
                    help="side of the square images in pixels: 32, 64, 128 or 256 (default %(default)s)")
    pr.add_argument("--crop", type=float, default=1.0,
                    help="fraction of each image kept around its centre before resizing, in (0, 1] (default "
                         "%(default)s: the whole image)")
    pr.add_argument("--normalisation", choices=["asinh", "minmax"], default="asinh",
                    help="FITS (flux) data: the invertible, flux-preserving asinh stretch or a per-image min-max "
                         "(default %(default)s)")
    pr.add_argument("--rebuild", action="store_true",
                    help="prepare again even when the cache holds this folder prepared with these options")
    pr.add_argument("--held-out-fraction", type=float, default=None, metavar="F",
                    help="first set about this fraction of the galaxies aside, never to be trained on: each is "
                         "held out with probability F, decided by its file name and the seed, so the held-out share "
                         "is near, not exactly, F; written as two folders of links, the training part is prepared")
    pr.add_argument("--split-seed", type=int, default=0, help="which held-out split (with --held-out-fraction)")
    pr.add_argument("--split-dir", default=None,
                    help="where the split folders go (default: PATH_split beside the folder)")
    pr.set_defaults(func=_cmd_data_prepare)

    t = sub.add_parser("train", help="train a model from a config file")
    t.add_argument("config", nargs="?", help="TOML or YAML config (default: built-in defaults)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    t.add_argument("--data", metavar="FOLDER",
                   help="train on your own folder of JPG/PNG/TIFF/FITS galaxies (data.dataset); the resolution, "
                        "crop and normalisation of its last `galaxygan data prepare` are used unless --set")
    t.add_argument("--name", help="run name (default: config name + time)")
    t.add_argument("--run-dir", help="run folder (default: $GALAXYGAN_RUNS/NAME)")
    t.add_argument("--resume", metavar="RUN_FOLDER", help="continue a run from its last checkpoint")
    t.add_argument("--init", metavar="CHECKPOINT", help="start from a checkpoint's weights (fine-tune)")
    t.add_argument("--force-data", action="store_true",
                   help="with --resume: continue even if the dataset differs from the run's")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser("sample", help="generate images from a checkpoint")
    s.add_argument("checkpoint", help="NAME.json (or NAME) of a checkpoint, or the name of a shipped one (dcgan_hdf32); looked for from "
                        "the working folder, the project, then the shipped checkpoints folder")
    s.add_argument("-n", type=int, default=None, help="number of images (default 16; with --latents: one per row)")
    s.add_argument("--out", required=True,
                   help="output folder: PNGs, a grid, latents.npy, samples.json and, for flux data, a FITS cube")
    s.add_argument("--seed", type=seed_arg, default=0, help="seed of the latents (default %(default)s)")
    s.add_argument("--latents", help=".npy file of (n, z_dim) latents to use instead of a seed")
    s.add_argument("--labels", help="conditional models: .npy file of (n,) class labels, one per image (default: "
                                    "image i gets label i %% classes); an earlier run's labels.npy regenerates "
                                    "its images with its latents.npy")
    s.add_argument("--no-fits", action="store_true", help="skip the FITS cube for physical data")
    s.set_defaults(func=_cmd_sample)

    i = sub.add_parser("info", help="print a checkpoint's model card")
    i.add_argument("checkpoint", help="NAME.json (or NAME) of a checkpoint, or the name of a shipped one (dcgan_hdf32); looked for from "
                        "the working folder, the project, then the shipped checkpoints folder")
    i.add_argument("--json", action="store_true", help="print the model card as stored (JSON), without the "
                                                        "optimiser state")
    i.set_defaults(func=_cmd_info)

    ev = sub.add_parser("evaluate", help="FID/KID, morphology, colour-magnitude and memorisation report")
    ev.add_argument("checkpoint", help="NAME.json (or NAME) of a checkpoint, or the name of a shipped one (dcgan_hdf32); looked for from "
                        "the working folder, the project, then the shipped checkpoints folder")
    ev.add_argument("--report", required=True, help="output folder")
    ev.add_argument("--data", help="reference dataset (default: the checkpoint's training data)")
    ev.add_argument("--held-out", metavar="FOLDER",
                    help="real images the checkpoint was not trained on (folder or FITS file): the reference for "
                         "the memorisation verdict; the training data stays the set searched")
    ev.add_argument("-n", type=int, default=500,
                    help="generated samples and real samples per split, at least 2 (default %(default)s)")
    ev.add_argument("--extractor", action="append", choices=["galaxy", "inception", "pix8"],
                    help="feature extractor (repeatable; default galaxy)")
    ev.add_argument("--queries", type=int, default=None,
                    help="generated samples searched for nearest matches (default: 64, or -n where smaller)")
    ev.add_argument("--evidence", action="append", choices=["l1", "ssim"],
                    help="distance shown beside the galaxy-encoder verdict (repeatable; default l1 and ssim)")
    ev.add_argument("--seed", type=seed_arg, default=0,
                    help="seed of the generated latents and of the real samples drawn (default %(default)s)")
    ev.add_argument("--no-morphology", action="store_true", help="leave out the morphology comparison")
    ev.add_argument("--no-memorisation", action="store_true",
                    help="leave out the nearest-training-image search and its verdict")
    ev.add_argument("--no-png", action="store_true", help="write plots as HTML only")
    ev.add_argument("--record", action="store_true",
                    help="write the headline metrics (with their real-vs-real floors) into the model card")
    ev.add_argument("--quiet", action="store_true", help="no progress line")
    ev.set_defaults(func=_cmd_evaluate)

    ck = sub.add_parser("checkpoints", help="check checkpoints").add_subparsers(dest="ck_command", required=True)
    v = ck.add_parser("verify", help="every checkpoint loads, matches its card and generates finite images")
    v.add_argument("folder", nargs="?", default=None,
                   help="folder of NAME.json + NAME.safetensors pairs, and the checkpoints/ of the run folders in "
                        "it (default: the shipped checkpoints, $GALAXYGAN_CHECKPOINTS or the project's checkpoints/)")
    v.set_defaults(func=_cmd_checkpoints_verify)

    e = sub.add_parser("export", help="copy a run's checkpoint without optimiser state")
    e.add_argument("source", help="run folder, or a checkpoint (NAME.json, or a shipped checkpoint's name)")
    e.add_argument("--which", choices=["best", "last"], default="last",
                   help="of a run folder: its last checkpoint or its best by live evaluation (default %(default)s)")
    e.add_argument("--out", required=True, help="destination NAME (writes NAME.safetensors + NAME.json)")
    e.add_argument("--note", help="free text for the model card")
    e.add_argument("--force", action="store_true", help="replace a checkpoint already at --out")
    e.set_defaults(func=_cmd_export)
    _add_sky_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GalaxyGanError as e:
        print(f"\ngalaxygan: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output left (`galaxygan info X | head`): not the user's path
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except OSError as e:  # the file system refused a path the user gave (a file where a folder goes, no permission)
        where = f"{e.filename}: " if e.filename else ""
        print(f"\ngalaxygan: error: {where}{e.strerror or e}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops cleanly itself): outputs are written atomically
        print("\ngalaxygan: interrupted; files already written are complete, nothing half-written was kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
