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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from galaxy_core.errors import CheckpointError
from galaxy_core.io.atomic import atomic_write_bytes, atomic_write_json

FORMAT = "galaxygan-checkpoint/1"


def _resolve(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and JSON-able rest."""
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


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and metadata atomically (tensors first, then the JSON that names them).

    The JSON records the SHA-256 of the tensor file, so a reader can tell the pair belongs
    together even if a crash landed between the two renames.
    """
    st_path, js_path = _resolve(path)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta = dict(meta, format=FORMAT, tensors_sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_bytes(st_path, blob)
    atomic_write_json(js_path, meta)
    return js_path


def read_meta(path: str | os.PathLike) -> dict:
    """Read a checkpoint's JSON (model card) without loading tensors."""
    _, js_path = _resolve(path)
    if not js_path.exists():
        raise CheckpointError(f"{js_path}: checkpoint description not found")
    try:
        meta = json.loads(js_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{js_path}: corrupt checkpoint description ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{js_path}: format {meta.get('format')!r} is not {FORMAT!r}; "
            "it was written by another program or version — retrain or convert it"
        )
    return meta


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``(tensors, meta)``; checks the tensor file matches the JSON's hash."""
    st_path, js_path = _resolve(path)
    meta = read_meta(js_path)
    if not st_path.exists():
        raise CheckpointError(f"{st_path}: tensor file missing (the description is {js_path})")
    blob = st_path.read_bytes()  # read once: hashed, then parsed
    if verify and meta.get("tensors_sha256"):
        if hashlib.sha256(blob).hexdigest() != meta["tensors_sha256"]:
            raise CheckpointError(f"{st_path}: tensors do not match {js_path.name} (interrupted write or edited file)")
    try:
        tensors = load(blob)
    except Exception as e:
        raise CheckpointError(f"{st_path}: cannot read tensors ({e})") from e
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
    _, js_path = _resolve(path)
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
    _, js_path = _resolve(path)
    meta = read_meta(js_path)
    return (meta.get("tensors_sha256") or hashlib.sha256(js_path.read_bytes()).hexdigest())[:12]
