"""Sampling to files and the model card as text: shared by ``galaxygan`` and the app."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from galaxy_core.io.atomic import atomic_write_json
from galaxy_core.io.render import display_note, make_grid, save_png, to_rgb
from galaxy_core.models.pretrained import Pretrained


def provenance(model: Pretrained, *, seed: int | None = None, latents_file: str | None = None) -> dict:
    """What is needed to regenerate an image: checkpoint name and hash, seed or latent file."""
    return {
        "checkpoint": model.name,
        "checkpoint_id": model.id,
        "arch": model.meta["arch"],
        "seed": seed,
        "latents_file": latents_file,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_samples(model: Pretrained, *, out_dir: Path, n: int, seed: int = 0,
                 latents_file: str | None = None, fits: bool = True) -> list[Path]:
    """Write a PNG grid, one PNG per image, the latents, a JSON record and (physical data) FITS.

    Image ``i`` comes from latent ``i`` of ``model.latents(seed, n)`` (or row ``i`` of the latent
    file), so any image can be regenerated from the record.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if latents_file:
        z = np.load(latents_file)
        n = len(z)
    else:
        z = model.latents(seed, n).numpy()
    x = model.generate(z)  # (n, C, H, W) in [-1, 1]
    rgb = to_rgb(x, model.channels)
    written = []
    grid = out_dir / "grid.png"
    save_png(grid, make_grid(rgb), scale=2 if model.resolution <= 32 else 1)
    written.append(grid)
    for i, im in enumerate(rgb):
        p = out_dir / f"sample_{i:04d}.png"
        save_png(p, im)
        written.append(p)
    np.save(out_dir / "latents.npy", z)
    written.append(out_dir / "latents.npy")
    record = {**provenance(model, seed=None if latents_file else seed, latents_file=latents_file),
              "count": n, "display": display_note(model.channels, model.stretch),
              "channels": model.channels}
    if fits and model.physical and model.stretch and model.stretch.get("type") == "asinh":
        from galaxy_core.io.fits import write_fits_cube

        flux = model.to_flux(x).astype(np.float32)
        data = model.meta["data"]
        cards = {
            "CKPT": model.name,
            "CKPTID": model.id,
            "ARCH": model.meta["arch"],
            "SEED": -1 if latents_file else seed,
            "GENERATD": "synthetic image from a GAN, not an observation",
            "STRETCH": "asinh (inverted to flux)",
        }
        if data.get("zero_point") is not None:
            cards["ZP"] = data["zero_point"]
        if data.get("pixel_scale_arcsec") is not None:
            cards["PIXSCALE"] = data["pixel_scale_arcsec"]
        p = out_dir / "samples.fits"
        write_fits_cube(p, flux, bands=model.channels, header_cards=cards)
        written.append(p)
        record["fits"] = p.name
    atomic_write_json(out_dir / "samples.json", record)
    written.append(out_dir / "samples.json")
    return written


def model_card_lines(meta: dict) -> list[str]:
    """A checkpoint's description as readable lines."""
    d, tr, m = meta.get("data", {}), meta.get("training", {}), meta.get("model", {})
    lines = [
        f"architecture: {meta.get('arch')}  ({', '.join(f'{k}={v}' for k, v in m.items() if k != 'arch')})",
        f"data: {d.get('name')} — {d.get('count')} images, {d.get('resolution')}px, channels {d.get('channels')}, "
        f"{d.get('kind')}",
    ]
    if d.get("stretch"):
        lines.append(f"stretch: {d['stretch'].get('type')} (flux-preserving: {d['stretch'].get('flux_preserving')})")
    if tr:
        wall = tr.get("wall_time_s") or 0
        ips = tr.get("images_per_s")
        lines.append(f"training: {tr.get('step')} steps, {tr.get('kimg', 0):.1f} kimg, {tr.get('epochs', 0):.1f} epochs, "
                     f"{wall / 60:.1f} min on {tr.get('device')}" + (f" ({ips:.0f} img/s)" if ips else ""))
    for k, v in (meta.get("metrics") or {}).items():
        lines.append(f"metric {k}: {v:.4g}" if isinstance(v, (int, float)) else f"metric {k}: {v}")
    if meta.get("note"):
        lines.append(f"note: {meta['note']}")
    return lines
