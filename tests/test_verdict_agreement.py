"""The memorisation verdict is the same through the API, the report and the app page.

``scripts/verdict_agreement.py`` asks the three ways for every shipped galaxy model; here the
two cases that differ in kind: a ``sim`` model (fresh simulations give a held-out set and a
verdict) and an ``hdf`` model (no independent real images: no verdict anywhere).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from galaxy_core.paths import checkpoints_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def agreement():
    spec = importlib.util.spec_from_file_location("verdict_agreement", ROOT / "scripts" / "verdict_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GALAXYGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("GALAXYGAN_WORKSPACE", str(tmp_path))
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"


def _with_small_training_set(name: str, runs: Path) -> Path:
    """A copy of a shipped ``sim`` checkpoint whose card's training data is cut to 128 galaxies,
    in the runs folder (where the app lists it): the training set every way searches is then
    simulated in seconds on a fresh machine, not the minutes 10,000 galaxies take."""
    from galaxy_core.io.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(checkpoints_dir() / f"{name}.json")
    meta["config"]["data"]["count"] = 128
    meta.pop("tensors_sha256", None)
    return save_checkpoint(runs / name / "checkpoints" / "last", tensors, meta)


@pytest.mark.parametrize("name, has_verdict", [("dcgan_sim64", True), ("dcgan_hdf32", False)])
def test_api_report_and_page_give_one_verdict(agreement, runs, name, has_verdict):
    path = _with_small_training_set(name, runs) if has_verdict else checkpoints_dir() / f"{name}.json"
    rows = {way: fn(path, n=16, seed=3) for way, fn in (("api", agreement.api_verdict),
                                                         ("report", agreement.report_verdict),
                                                         ("page", agreement.page_verdict))}
    assert agreement.agree(rows), rows
    if has_verdict:
        assert isinstance(rows["api"]["memorised"], bool) and 0 <= rows["api"]["n_flagged"] <= 16
        assert 0 < rows["page"]["p"] <= 1
    else:
        assert all({k: r[k] for k in ("memorised", "n_flagged", "p")} == {"memorised": None, "n_flagged": None,
                                                                          "p": None} for r in rows.values())


def test_the_script_covers_every_shipped_galaxy_model(agreement):
    names = {p.stem for p in agreement.galaxy_checkpoints()}
    assert {"dcgan_hdf32", "dcgan_sim64", "stylegan_sim64", "fastgan_hdf64", "stackgan_sim128"} <= names
    assert not any(n.startswith("positions_") for n in names)
