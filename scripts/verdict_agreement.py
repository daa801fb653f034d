"""The memorisation verdict of each shipped galaxy model, three ways: API, report, app page.

For every shipped checkpoint of a galaxy model (not the position models, the encoder or the
realism scorer) the same question is asked through the three ways a user can ask it, with the
same generated samples (seed, count) and the same held-out reference:

* **API**: :func:`galaxy_core.metrics.memorisation.memorisation_check` on
  :func:`galaxy_core.explore.evaluation.generated_sample` and
  :func:`galaxy_core.explore.evaluation.held_out_sample`;
* **report**: :func:`galaxy_core.metrics.report.evaluate_checkpoint` (what
  ``galaxygan evaluate CKPT --queries N`` runs), memorisation section only;
* **page**: the Memorisation page of the app, driven headless with Streamlit's ``AppTest``.

Each gives the verdict (memorising / not / no verdict), the number of flagged samples and the
excess p-value of the default distance (galaxy-encoder cosine); the API row also gives the
held-out reference's distance ratio (held-out / training median nearest-training distance,
about 1 for new images of the same data). Checkpoints trained on ``sim``
get freshly simulated held-out galaxies; the others have no independent real images, so all
three ways must say "no verdict". Prints one row per checkpoint and exits 1 on any
disagreement.

    python scripts/verdict_agreement.py --n 64
    python scripts/verdict_agreement.py --n 32 --only dcgan_sim64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/memorisation.py"
PAGE_SAMPLE_COUNTS = (16, 32, 64, 128, 256)  # the page's "Generated samples" choices


def galaxy_checkpoints() -> list[Path]:
    """Shipped generator checkpoints whose samples are galaxy images (not sky grids)."""
    from galaxy_core.models.pretrained import list_checkpoints, load_pretrained
    from galaxy_core.paths import checkpoints_dir

    return [p for p in list_checkpoints(checkpoints_dir()) if load_pretrained(p).family.data_kind != "grid"]


def _row(memorised, n_flagged, p, ratio=None) -> dict:
    return {"memorised": memorised, "n_flagged": n_flagged, "p": p, "ratio": ratio}


def api_verdict(checkpoint: Path, *, n: int, seed: int = 0) -> dict:
    """Verdict through the API: ``{"memorised": bool | None, "n_flagged", "p"}``."""
    from galaxy_core.explore import evaluation as ev
    from galaxy_core.metrics.memorisation import DEFAULT_DISTANCE, memorisation_check
    from galaxy_core.models.pretrained import load_pretrained

    model = load_pretrained(checkpoint)
    own = ev.training_data(model.meta)
    train = ev.open_reference(**own)
    _, fake = ev.generated_sample(model, n, seed=seed)
    held, about = ev.held_out_sample(model.meta, train, n)
    mem = memorisation_check(fake, train, held_out=held, held_out_about=about, distances=(DEFAULT_DISTANCE,))
    main = mem["results"][DEFAULT_DISTANCE]
    rep = main["report"]
    return _row(mem["memorised"], None if rep is None else rep["n_flagged"], None if rep is None else rep["excess_p"],
                main["reference_ratio"])


def report_verdict(checkpoint: Path, *, n: int, seed: int = 0) -> dict:
    """Verdict through the evaluation report (memorisation section, no evidence distances)."""
    from galaxy_core.metrics.report import evaluate_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        summary = evaluate_checkpoint(checkpoint, report_dir=tmp, n=max(n, 2), extractors=(), morphology=False,
                                      n_queries=n, evidence=(), seed=seed, png=False)
    cos = summary["memorisation"]["distances"]["cosine"]
    return _row(summary["memorised"], cos.get("n_flagged"), cos.get("excess_p"))


def page_verdict(checkpoint: Path, *, n: int, seed: int = 0, timeout: float = 600) -> dict:
    """Verdict as the Memorisation page shows it (headless Streamlit ``AppTest``)."""
    from streamlit.testing.v1 import AppTest

    if n not in PAGE_SAMPLE_COUNTS:
        raise ValueError(f"the page offers {PAGE_SAMPLE_COUNTS} generated samples, not {n}")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout).run()
    at.selectbox(key="checkpoint").set_value(str(checkpoint)).run()
    at.switch_page(PAGE).run()
    at.select_slider(key="mem_n").set_value(n)
    at.multiselect(key="mem_evidence").set_value([])
    at.number_input(key="mem_seed").set_value(seed)
    at.button(key="mem_go").click().run()
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    if problems:
        raise RuntimeError(f"the Memorisation page failed for {checkpoint.name}: {problems}")
    metrics = {m.label: m.value for m in at.metric}
    if "Flagged as suspects" not in metrics:
        if not any(i.value.startswith("No verdict") for i in at.info):
            raise RuntimeError(f"the Memorisation page showed neither a verdict nor 'No verdict' for {checkpoint.name}")
        return _row(None, None, None)
    flagged = int(metrics["Flagged as suspects"].split(" of ")[0])
    memorised = bool(at.warning) and any(w.value.startswith("Memorising") for w in at.warning)
    return _row(memorised, flagged, float(metrics["Excess p-value"]))


def agree(rows: dict[str, dict]) -> bool:
    """Same verdict and flagged count everywhere; p-values agree to the page's 2 digits."""
    ref = rows["api"]
    for r in rows.values():
        if r["memorised"] != ref["memorised"] or r["n_flagged"] != ref["n_flagged"]:
            return False
        if ref["p"] is not None and abs(r["p"] - ref["p"]) > 0.05 * ref["p"] + 1e-12:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, choices=PAGE_SAMPLE_COUNTS, help="generated samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="checkpoint names (default: every shipped galaxy model)")
    args = ap.parse_args(argv)
    paths = [p for p in galaxy_checkpoints() if not args.only or p.stem in args.only]
    print(f"{'checkpoint':20s} {'way':7s} {'verdict':12s} {'flagged':>8s} {'p':>9s} {'s':>6s} {'ref ratio':>9s}")
    ok = True
    for path in paths:
        rows = {}
        for way, fn in (("api", api_verdict), ("report", report_verdict), ("page", page_verdict)):
            t0 = time.perf_counter()
            rows[way] = fn(path, n=args.n, seed=args.seed)
            r = rows[way]
            word = {None: "no verdict", True: "memorising", False: "not"}[r["memorised"]]
            flagged = "-" if r["n_flagged"] is None else f"{r['n_flagged']}/{args.n}"
            p = "-" if r["p"] is None else f"{r['p']:.2g}"
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
            print(f"{path.stem:20s} {way:7s} {word:12s} {flagged:>8s} {p:>9s} {time.perf_counter() - t0:6.1f} "
                  f"{ratio:>9s}", flush=True)
        same = agree(rows)
        ok &= same
        print(f"{path.stem:20s} {'agree' if same else 'DISAGREE'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
