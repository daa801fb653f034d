"""Memory of reading FITS images: ``read_fits_images`` / ``read_fits_image`` against reading the
file into memory with astropy and converting it to float32, the way they read before.

Peak heap (``tracemalloc``, which counts numpy's allocations; the pages of a memory-mapped file
are the kernel's cache, not the process's heap) of reading a ``(N, 3, H, W)`` cube as
``galaxygan sample`` writes it, a ``(3, H, W)`` image, and a scaled 16-bit cube (``BSCALE``,
``BZERO``: astropy cannot memory-map those, so both ways read them into memory). Each figure is a
ratio to the size of what is returned; the baseline is measured in the same run on the same files.

    python benchmarks/bench_fits_read.py [--n 200] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from astropy.io import fits

from galaxy_core.io.fits import read_fits_image, read_fits_images


def in_memory(path: Path) -> np.ndarray:
    """The baseline: astropy's in-memory read, then a native float32 copy."""
    with fits.open(path, memmap=False) as hdul:
        return np.asarray(hdul[0].data, dtype=np.float32).copy()


def peak(read) -> tuple[float, int]:
    """(peak heap bytes, bytes returned) of ``read()``."""
    tracemalloc.start()
    out = read()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrays = out if isinstance(out, list) else [out]
    held = sum(getattr(a, "data", a).nbytes for a in arrays)
    return top, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="images in the cube")
    ap.add_argument("--size", type=int, default=256, help="image side (px)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        cube = rng.normal(size=(args.n, 3, args.size, args.size)).astype(">f4")
        files["(N, 3, H, W) float32 cube"] = (Path(tmp) / "cube.fits", read_fits_images, cube)
        side = args.size * 8
        image = rng.normal(size=(3, side, side)).astype(">f4")
        files[f"(3, {side}, {side}) float32 image"] = (Path(tmp) / "image.fits", read_fits_image, image)
        scaled = fits.PrimaryHDU((cube[: max(args.n // 4, 1)] * 1000).astype(np.int16))
        scaled.header["BSCALE"], scaled.header["BZERO"] = 0.001, 0.5
        files["(N/4, 3, H, W) scaled int16 cube"] = (Path(tmp) / "scaled.fits", read_fits_images, scaled)
        print(f"{'file':36s} {'MiB':>7s} {'baseline':>9s} {'now':>7s}  (peak heap / bytes returned)")
        for name, (path, reader, data) in files.items():
            (data if isinstance(data, fits.PrimaryHDU) else fits.PrimaryHDU(data)).writeto(path)
            base, held_base = peak(lambda: in_memory(path))
            now, held = peak(lambda: reader(path))
            assert held == held_base, (held, held_base)
            print(f"{name:36s} {path.stat().st_size / 2**20:7.1f} {base / held:8.2f}x {now / held:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
