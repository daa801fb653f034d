"""``galaxygan evaluate`` on a shipped checkpoint: every file of the report, with sane numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from galaxy_core.metrics.report import evaluate_checkpoint
from galaxy_core.paths import checkpoints_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    summary = evaluate_checkpoint(checkpoints_dir() / "dcgan_hdf32.json", report_dir=out, n=96,
                                  extractors=("galaxy", "pix8"), n_queries=16, png=True)
    return out, summary


def test_report_files_and_names(report):
    out, summary = report
    for name in ("summary.json", "metrics.csv", "morphology_real.csv", "morphology_generated.csv",
                 "memorisation_cosine.html", "nearest_matches.png", "nearest_matches.csv", "morphology_ellipticity.html"):
        assert (out / name).exists(), name
    assert summary["png_note"] is None and (out / "memorisation_l1.png").stat().st_size > 1000
    rows = {r["metric"]: r for r in csv.DictReader((out / "metrics.csv").open())}
    # metric names record the extractor and the sample size; extractors never share a name
    assert {"fid_galaxy_96v96", "kid_galaxy_96v96", "fid_pix8_96v96", "mifid_galaxy_96v96",
            "recall_galaxy_96v96"} <= set(rows)
    assert json.loads((out / "summary.json").read_text())["checkpoint_id"] == summary["checkpoint_id"]


def test_generated_is_further_from_real_than_the_real_floor(report):
    _, summary = report
    fm = summary["features"]["galaxy"]
    assert fm["generated"]["fid_galaxy_96v96"] > fm["floor"]["fid_galaxy_96v96"] > 0
    # a 1,500-step CPU model is still clearly better than noise: within 20x of the real floor
    assert fm["fid_ratio_to_floor"] < 20
    mem = summary["memorisation"]["cosine"]
    assert 0 <= mem["fraction_flagged"] <= 1
    # hdf has no held-out images, so the report gives the statistics but no verdict
    assert summary["memorised"] is None and "indicative only" in summary["memorised_note"]


def test_cli_evaluate_reports_bad_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "galaxy_core.cli", "evaluate", str(tmp_path / "none.json"),
                        "--report", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "none.json" in r.stderr and "Traceback" not in r.stderr


def test_record_in_card_keeps_tensors_valid(report, tmp_path):
    import shutil

    from galaxy_core.metrics.report import record_in_card
    from galaxy_core.io.checkpoint import load_checkpoint

    _, summary = report
    for ext in (".json", ".safetensors"):
        shutil.copy(checkpoints_dir() / f"dcgan_hdf32{ext}", tmp_path / f"m{ext}")
    meta = record_in_card(tmp_path / "m.json", summary, command="galaxygan evaluate m.json")
    assert meta["metrics"]["fid_galaxy_96v96"] == summary["features"]["galaxy"]["generated"]["fid_galaxy_96v96"]
    assert meta["evaluation"]["real_vs_real_floor"]["fid_galaxy_96v96"] > 0
    assert "fid_pix8_256" in meta["metrics"]  # the live metric from training is kept
    _, reloaded = load_checkpoint(tmp_path / "m.json")  # tensor hash still matches
    assert reloaded["evaluation"]["n"] == 96
