import json

import pytest
import torch

from galaxy_core.errors import CheckpointError
from galaxy_core.io.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    unflatten_optimizer,
)


def _trained_adam():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
    return net, opt


def test_optimizer_state_round_trip(tmp_path):
    net, opt = _trained_adam()
    tensors, meta = flatten_optimizer("opt", opt)
    save_checkpoint(tmp_path / "c", tensors, {"optimizer": meta})
    t2, m2 = load_checkpoint(tmp_path / "c.json")
    opt2 = torch.optim.Adam(net.parameters(), lr=5.0)
    opt2.load_state_dict(unflatten_optimizer("opt", t2, m2["optimizer"]))
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 1e-3
    for idx in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(a["state"][idx][k]), torch.as_tensor(b["state"][idx][k]))


def test_files_are_safetensors_and_json(tmp_path):
    save_checkpoint(tmp_path / "m", {"G.w": torch.ones(2, 2)}, {"arch": "dcgan"})
    assert (tmp_path / "m.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "galaxygan-checkpoint/1" and len(meta["tensors_sha256"]) == 64
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_mismatched_or_missing_files_are_reported(tmp_path):
    save_checkpoint(tmp_path / "m", {"G.w": torch.ones(2)}, {"arch": "dcgan"})
    save_checkpoint(tmp_path / "other", {"G.w": torch.zeros(2)}, {"arch": "dcgan"})
    (tmp_path / "m.safetensors").write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "m.json")
    with pytest.raises(CheckpointError, match="not found"):
        read_meta(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="something-else"):
        read_meta(tmp_path / "bad.json")
