"""Downloadable images that carry what is needed to regenerate them.

Every PNG written here holds a ``galaxygan`` text chunk: a JSON record with the checkpoint name
and content hash, the seed (when there is one) and the latent vector. Several frames go into a
zip with one PNG and one JSON sidecar per frame, the latents as ``latents.npy`` and a
``record.json`` describing the whole set.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from galaxy_core.io.atomic import json_text

TEXT_KEY = "galaxygan"


def png_with_record(rgb: np.ndarray, record: dict, *, scale: int = 1) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG with ``record`` (JSON) in a text chunk.

    Parameters
    ----------
    rgb : ndarray, (H, W, 3), uint8
    record : dict
        JSON-serialisable provenance (see :func:`galaxy_core.explore.sampling.provenance`).
    scale : int
        Nearest-neighbour enlargement (recorded as ``display_scale``).
    """
    img = Image.fromarray(np.asarray(rgb, np.uint8))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    info = PngInfo()
    info.add_text(TEXT_KEY, json_text({**record, "display_scale": scale}, default=_json_default))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_png_record(data: bytes) -> dict | None:
    """The ``galaxygan`` record of a PNG written by :func:`png_with_record` (None if absent)."""
    with Image.open(io.BytesIO(data)) as img:
        text = getattr(img, "text", {}).get(TEXT_KEY)
    return json.loads(text) if text else None


def npy_bytes(z: np.ndarray) -> bytes:
    """A latent array as ``.npy`` file contents (float32)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(z, np.float32), allow_pickle=False)
    return buf.getvalue()


def space_npz_bytes(space: str, **arrays) -> bytes:
    """Arrays of a latent space other than z (styles w, their directions, ...) as ``.npz``
    file contents, with ``space`` (a string array) saying what they are. A file of w is never
    a ``.npy``: where z and w have the same size, a bare array of w would pass for latents z
    and be mapped a second time; :func:`read_npy` names the space of such a file instead."""
    buf = io.BytesIO()
    np.savez(buf, space=np.array(space), **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def read_npy(data: bytes, *, name: str = "array") -> np.ndarray:
    """One array from the bytes of a ``.npy`` file, without pickle.

    Raises
    ------
    ValueError
        The bytes are not a ``.npy`` file (no NumPy magic: a text or other file; a ``.npz`` of
        :func:`space_npz_bytes` is named by its space), are cut short, or hold pickled objects.
    """
    if data.startswith(b"PK"):  # a zip: perhaps a .npz of another latent space
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                space = str(npz["space"]) if "space" in npz.files else None
                held = ", ".join(f for f in npz.files if f != "space")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile):
            space, held = None, ""
        if space:
            raise ValueError(f"{name}: holds {space} ({held}), not latents z; it cannot be used as z")
        raise ValueError(f"{name}: a .npz archive{f' ({held})' if held else ''}, not a .npy array")
    if not data.startswith(b"\x93NUMPY"):
        raise ValueError(f"{name}: not a .npy file (it does not start as NumPy's .npy format does; "
                         "save arrays with numpy.save)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{name}: not a readable .npy array ({e})") from e


def load_latents(data: bytes, *, z_dim: int, name: str = "latents") -> np.ndarray:
    """Read uploaded ``.npy`` latents: ``(z_dim,)`` or ``(n, z_dim)`` -> float32 ``(n, z_dim)``.

    Raises
    ------
    ValueError
        Not a ``.npy`` array (pickled objects are refused), wrong shape, no latent at all, or
        non-finite values.
    """
    z = read_npy(data, name=name)
    if not isinstance(z, np.ndarray) or z.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a numeric array, got {getattr(z, 'dtype', type(z))}")
    z = np.atleast_2d(z).astype(np.float32)
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"{name}: latents must be ({z_dim},) or (n, {z_dim}) for this checkpoint, got {z.shape}")
    if len(z) == 0:
        raise ValueError(f"{name}: holds no latents (shape {z.shape})")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return z


def frames_zip(frames_rgb: np.ndarray, latents: np.ndarray, *, record: dict, scale: int = 1,
               extra: dict[str, bytes] | None = None, prefix: str = "frame") -> bytes:
    """Zip of frames: ``frame_000.png`` (record in a text chunk) + ``frame_000.json`` each.

    Parameters
    ----------
    frames_rgb : ndarray, (T, H, W, 3), uint8
    latents : ndarray, (T, z_dim)
        Latent of each frame (written into its record and as ``latents.npy``).
    record : dict
        Provenance shared by all frames; each frame adds ``frame`` and ``latent``.
    extra : dict, optional
        More files to add (name -> bytes), e.g. the strip PNG or the GIF.
    """
    if len(frames_rgb) != len(latents):
        raise ValueError(f"{len(frames_rgb)} frames but {len(latents)} latents")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, (im, z) in enumerate(zip(frames_rgb, latents)):
            rec = {**record, "frame": i, "latent": np.asarray(z, np.float32).tolist()}
            zf.writestr(f"{prefix}_{i:03d}.png", png_with_record(im, rec, scale=scale))
            zf.writestr(f"{prefix}_{i:03d}.json", json_text(rec, indent=1, default=_json_default))
        zf.writestr("latents.npy", npy_bytes(latents))
        zf.writestr("record.json", json_text({**record, "frames": len(latents)}, indent=1, default=_json_default))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
