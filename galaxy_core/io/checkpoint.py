"""Checkpoints: ``NAME.safetensors`` (tensors only) + ``NAME.json`` (config, data, provenance).

Tensor keys are prefixed by the network they belong to: ``G.``, ``D.``, ``G_ema.``; resumable
checkpoints also hold optimiser moments (``opt_G.state.<i>.<name>``), the random generator state
(``rng.torch``) and the fixed sample latents (``fixed_z``). Non-tensor optimiser state
(hyper-parameters) lives in the JSON. Loading rebuilds the networks from the JSON through the
model registry; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from galaxy_core.errors import CheckpointError
from galaxy_core.io.atomic import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:  # torch is imported where tensors are handled: reading a model card needs none
    import torch

FORMAT = "galaxygan-checkpoint/1"


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` of a checkpoint given as ``NAME``, ``NAME.json`` or
    ``NAME.safetensors`` (a dot in NAME is kept: ``my_model.v2`` -> ``my_model.v2.json``)."""
    from galaxy_core.paths import with_suffix_of

    known = (".json", ".safetensors")
    return with_suffix_of(path, ".safetensors", known), with_suffix_of(path, ".json", known)


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able rest."""
    import torch

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_optimizer`: a state dict for ``Optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    head = prefix + ".state."
    for key, value in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _pending(st_path: Path) -> Path:
    """Where the next tensor file waits until its JSON is written (``NAME.safetensors.next``)."""
    return st_path.with_name(st_path.name + ".next")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and metadata so that a crash at any moment leaves a usable pair.

    Three atomic steps: the tensors go to ``NAME.safetensors.next``; the JSON, which records
    their SHA-256, replaces ``NAME.json``; ``.next`` is renamed over ``NAME.safetensors``.
    Killed before the JSON, the old pair is intact (the stray ``.next`` is ignored and
    replaced next time); killed after it, :func:`load_checkpoint` finds the tensors the JSON
    names in ``.next`` and completes the rename.
    """
    from safetensors.torch import save

    st_path, js_path = checkpoint_paths(path)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta = dict(meta, format=FORMAT, tensors_sha256=hashlib.sha256(blob).hexdigest())
    pending = _pending(st_path)
    atomic_write_bytes(pending, blob)
    atomic_write_json(js_path, meta)
    os.replace(pending, st_path)
    return js_path


def _finish_interrupted_save(st_path: Path, sha256: str) -> bytes | None:
    """The tensors a JSON names when a save was killed between its JSON and its last rename.

    Returns their bytes (and completes the rename where the folder is writable), or None when
    there is no pending file or it is not the one the JSON names.
    """
    pending = _pending(st_path)
    if not pending.is_file():
        return None
    try:
        blob = pending.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(blob).hexdigest() != sha256:
        return None
    try:
        os.replace(pending, st_path)
    except OSError:  # a read-only folder: the pair is still read correctly from .next
        pass
    return blob


class NotACheckpointError(CheckpointError):
    """A file that is not a galaxygan model card plus its matching tensor file."""


class NonFiniteTensorError(CheckpointError):
    """A checkpoint tensor holds NaN or infinite values (a diverged run)."""


def _not_a_checkpoint(path: Path, why: str, fix: str = "") -> NotACheckpointError:
    return NotACheckpointError(f"Not a galaxygan checkpoint: {path} {why}" + (f"; {fix}" if fix else ""))


_FIX_PAIR = "a checkpoint is NAME.json (model card) + NAME.safetensors written by galaxygan train or export"


def read_meta(path: str | os.PathLike) -> dict:
    """Read a checkpoint's JSON (model card) without loading tensors.

    Parameters
    ----------
    path : path
        ``NAME.json``, ``NAME.safetensors`` or ``NAME``.

    Returns
    -------
    dict
        The model card.

    Raises
    ------
    NotACheckpointError
        The file is missing, not text, not JSON, not a JSON object or of another format; the
        message starts with "Not a galaxygan checkpoint:" and names the file.
    CheckpointError
        A card field galaxygan reads has the wrong type (see :func:`check_card`).
    """
    _, js_path = checkpoint_paths(path)
    if not js_path.exists():
        raise _not_a_checkpoint(js_path, "not found (the model card NAME.json is missing)", _FIX_PAIR)
    if js_path.is_dir():
        raise _not_a_checkpoint(js_path, "is a folder", _FIX_PAIR)
    try:
        text = js_path.read_bytes().decode("utf-8")
    except OSError as e:
        raise CheckpointError(f"{js_path}: cannot read the checkpoint description ({e.strerror})") from e
    except UnicodeDecodeError:
        raise _not_a_checkpoint(js_path, "is binary data, not a JSON model card (a pickle or a tensor file "
                                "saved under a .json name?)", _FIX_PAIR) from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise _not_a_checkpoint(js_path, f"is not valid JSON (corrupt description: {e})", _FIX_PAIR) from e
    if not isinstance(meta, dict):
        raise _not_a_checkpoint(js_path, f"holds a JSON {type(meta).__name__}, not a model card object",
                                _FIX_PAIR)
    if meta.get("format") is None and meta.get("kind") == "realism":  # the sky's realism scorer (NAME.json + .npz)
        raise _not_a_checkpoint(
            js_path, f"is a realism scorer ({meta.get('version')}, written by galaxygan sky realism-fit), not a "
            "model", "it scores composed skies (galaxygan sky experiments --scorer); a model is NAME.json + "
            "NAME.safetensors written by galaxygan train or export")
    if meta.get("format") != FORMAT:
        raise _not_a_checkpoint(
            js_path, f"has format {meta.get('format')!r}, not {FORMAT!r}",
            "it was written by another program or version; retrain or convert it")
    digest = meta.get("tensors_sha256")
    if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                   and all(c in "0123456789abcdef" for c in digest)):
        raise _not_a_checkpoint(js_path, f"has a malformed tensors_sha256 {digest!r}", _FIX_PAIR)
    check_card(meta, js_path)
    return meta


# Card fields galaxygan reads, with the JSON types they must have where present.
_CARD_FIELDS = {
    "kind": (str,), "arch": (str,), "model": (dict,), "data": (dict,), "training": (dict,),
    "config": (dict,), "engine": (dict,), "optimizer": (dict,),
    "metrics": (dict, type(None)), "best": (dict, type(None)), "note": (str, type(None)),
}
_DATA_FIELDS = {"kind": (str,), "name": (str, type(None)), "stretch": (dict, type(None))}
_JSON_NAMES = {str: "a string", dict: "a JSON object", type(None): "null"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_card(meta: dict, path: str | os.PathLike) -> None:
    """Check the structure of the model-card fields galaxygan reads (where present).

    ``kind``, ``arch`` and ``note`` must be strings; ``model``, ``data``, ``training``,
    ``config``, ``engine`` and ``optimizer`` JSON objects (``metrics`` and ``best`` may be
    null); in ``data``, ``channels`` a list of strings, ``kind`` a string and ``stretch`` an
    object or null.

    Raises
    ------
    CheckpointError
        A field of the wrong type; the message starts with ``path`` and names the field.
    """
    def bad(field: str, value, allowed) -> CheckpointError:
        want = allowed if isinstance(allowed, str) else " or ".join(_JSON_NAMES[t] for t in allowed)
        return CheckpointError(f"{path}: malformed model card: {field} must be {want}, not {_short(value)}; "
                               "restore the NAME.json galaxygan wrote, or fix that field")

    for key, allowed in _CARD_FIELDS.items():
        if key in meta and not isinstance(meta[key], allowed):
            raise bad(repr(key), meta[key], allowed)
    model = meta.get("model")
    if isinstance(model, dict) and "arch" in model and not isinstance(model["arch"], str):
        raise bad("model.arch", model["arch"], (str,))
    data = meta.get("data")
    if not isinstance(data, dict):
        return
    for key, allowed in _DATA_FIELDS.items():
        if key in data and not isinstance(data[key], allowed):
            raise bad(f"data.{key}", data[key], allowed)
    channels = data.get("channels")
    if "channels" in data and not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
        raise bad("data.channels", channels, "a list of channel names (strings)")


def find_nonfinite(tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Names of floating-point tensors holding NaN or infinite values, with how many they hold.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        Any tensors (integer and boolean tensors cannot be non-finite and are skipped).

    Returns
    -------
    dict of str to int
        ``name -> number of non-finite elements``, in the mapping's order; empty when all are finite.
    """
    import torch

    bad = {}
    for name, t in tensors.items():
        if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex()):
            n = int(t.numel() - torch.isfinite(t).sum().item())
            if n:
                bad[name] = n
    return bad


def check_finite(tensors: Mapping[str, torch.Tensor], *, where: str | os.PathLike = "checkpoint") -> None:
    """Refuse tensors holding NaN or infinite values, naming each one.

    Call it before saving (a diverged run must not overwrite a good ``last``) and after loading.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        E.g. a checkpoint's tensors (``G.main.0.weight``, ``opt_G.state.0.exp_avg``, ...).
    where : str or path
        The file (or what is being saved) to name in the message.

    Raises
    ------
    NonFiniteTensorError
        At least one floating-point tensor holds NaN or +/-inf; the message names up to five
        of them with their counts and how to recover.
    """
    bad = find_nonfinite(tensors)
    if not bad:
        return
    shown = ", ".join(f"{k} ({n} of {tensors[k].numel()} values)" for k, n in list(bad.items())[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise NonFiniteTensorError(
        f"{where}: non-finite (NaN or infinite) values in tensor(s) {shown}{more}; the training "
        "diverged: use an earlier checkpoint, or resume with a lower learning rate")


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True,
                    finite: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(tensors, meta)``; checks the tensor file matches the JSON's hash.

    Parameters
    ----------
    path : path
        ``NAME.json``, ``NAME.safetensors`` or ``NAME``.
    verify : bool
        Compare the tensor file with the SHA-256 recorded in the JSON.
    finite : bool
        Refuse tensors holding NaN or infinite values (see :func:`check_finite`).

    Raises
    ------
    NotACheckpointError
        The description is not a galaxygan model card, the tensor file is missing, truncated or
        not safetensors, or does not match the description's hash.
    NonFiniteTensorError
        A floating-point tensor holds NaN or infinite values (named in the message).
    """
    st_path, js_path = checkpoint_paths(path)
    meta = read_meta(js_path)
    recorded = meta.get("tensors_sha256")
    blob = None
    if st_path.is_file():
        try:
            blob = st_path.read_bytes()  # read once: hashed, then parsed
        except OSError as e:
            raise CheckpointError(f"{st_path}: cannot read tensors ({e.strerror})") from e
    digest = None if blob is None else hashlib.sha256(blob).hexdigest()
    if recorded and digest != recorded:  # missing or other tensors: a save killed before its last rename?
        finished = _finish_interrupted_save(st_path, recorded)
        if finished is not None:
            blob, digest = finished, recorded
    if blob is None:
        raise _not_a_checkpoint(js_path, f"has no tensor file: {st_path.name} is missing",
                                "copy NAME.safetensors next to NAME.json (both files are the checkpoint)")
    if verify and recorded:
        if digest != recorded:
            raise _not_a_checkpoint(
                st_path, f"does not match {js_path.name}: tensors do not match the recorded SHA-256 "
                f"({len(blob)} bytes; truncated, an interrupted write or an edited file)",
                "use the pair as galaxygan wrote it, or an earlier checkpoint")
    from safetensors.torch import load

    try:
        tensors = load(blob)
    except Exception as e:  # safetensors raises its own error type for a bad header or size
        raise _not_a_checkpoint(st_path, f"is not a complete safetensors file ({len(blob)} bytes: {e})",
                                _FIX_PAIR) from e
    if finite:
        check_finite(tensors, where=st_path)
    return tensors, meta


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.`` with the prefix removed (a module's state dict)."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def update_card(path: str | os.PathLike, updates: dict) -> dict:
    """Merge ``updates`` into a checkpoint's JSON (atomically); tensors are untouched.

    ``metrics`` is merged key by key; other keys are replaced. The tensor hash stays valid.
    """
    _, js_path = checkpoint_paths(path)
    meta = read_meta(js_path)
    for key, value in updates.items():
        if key == "metrics":
            meta.setdefault("metrics", {}).update(value)
        else:
            meta[key] = value
    atomic_write_json(js_path, meta)
    return meta


def checkpoint_id(path: str | os.PathLike) -> str:
    """Short content hash that identifies a checkpoint (recorded with every generated image)."""
    _, js_path = checkpoint_paths(path)
    meta = read_meta(js_path)
    return (meta.get("tensors_sha256") or hashlib.sha256(js_path.read_bytes()).hexdigest())[:12]
