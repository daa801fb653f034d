"""Sky Composer page, run headless with ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from galaxy_core.paths import checkpoints_dir

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.slow
def test_sky_composer_composes_detects_scores_and_offers_downloads():
    assert (checkpoints_dir() / "realism_hdf.json").exists(), "the shipped realism scorer is missing"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/sky_composer.py").run()
    _clean(at)
    from galaxy_core.sky.pipeline import SkyConfig  # the shipped defaults are preselected

    assert Path(at.selectbox(key="sky_galaxies").value).name == Path(SkyConfig().galaxies).name
    offered = {Path(o).stem for o in at.selectbox(key="sky_galaxies").options}
    assert "sky_e2e_dcgan128" not in offered and "stackgan_sim128" not in offered  # no 128 px pictures per cell
    assert {"fastgan_hdf32_w16", "dcgan_sim64"} <= offered
    assert Path(at.selectbox(key="sky_positions").value).name == Path(SkyConfig().positions).name
    at.selectbox(key="sky_positions").set_value("random").run()
    at.selectbox(key="sky_galaxies").set_value("stamps").run()
    at.select_slider(key="sky_size").set_value(256).run()
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Galaxies placed"]) > 5  # 0.11 of the 256 cells of a 256 px sky: ~28
    assert 0 <= float(metrics["Completeness"]) <= 1 and 0 <= float(metrics["Purity"]) <= 1
    assert 0 <= float(metrics["Realism score"]) <= 1
    assert len(at.get("plotly_chart")) == 1
    import json

    traces = {t.get("name", "").split(" (")[0]: t for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert {"placed", "detected galaxy", "detected, nothing placed there", "detected faint source or star",
            "missed galaxy"} <= set(traces)
    assert traces["detected faint source or star"]["visible"] == "legendonly"  # shown on a click of the legend
    n_placed = len(traces["placed"]["x"])
    assert len(traces["detected galaxy"]["x"]) + len(traces["missed galaxy"]["x"]) == n_placed
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["PNG", "FITS + truth table", "Truth CSV"]
    first = metrics["Galaxies placed"]
    at.toggle(key="sky_overlay").set_value(False).run()
    _clean(at)
    assert "Completeness" not in {m.label for m in at.metric}
    assert {m.label: m.value for m in at.metric}["Galaxies placed"] == first  # same seed, same sky
