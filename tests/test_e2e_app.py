"""The real app in a real browser: ``streamlit run`` on a free local port, headless Chromium.

Loads every page, checks what is rendered, saves screenshots under test-output/screenshots/
(and, with ``GALAXYGAN_DOC_SCREENSHOTS=1``, the documentation copies in docs/screenshots/),
and launches a training run from the Train page, which must write its run folder, show up as
running, and stop cleanly from the Stop button.

Needs Debian's ``chromium`` (``make browser``); nothing is downloaded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from galaxy_core.paths import checkpoints_dir
from galaxy_core.config import load_config
from galaxy_core.paths import configs_dir
from galaxy_core.train.launch import launch_training, stop_run
from galaxy_core.train.run import RunFolder

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 1000}
DOC_SHOT_LIMIT = 400_000  # bytes per committed screenshot
FIRST_IMAGE_CHANGED = """src => {
    const img = document.querySelector('[data-testid=stImage] img');
    return img && img.getAttribute('src') !== src;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_env(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("e2e")
    (work / "runs").mkdir()
    env = dict(os.environ, GALAXYGAN_RUNS=str(work / "runs"), GALAXYGAN_WORKSPACE=str(ROOT),
               GALAXYGAN_CHECKPOINTS=str(checkpoints_dir()))
    return {"env": env, "runs": work / "runs", "log": work / "streamlit.log"}


@pytest.fixture(scope="module")
def server(app_env):
    """``streamlit run app.py`` on a free port of 127.0.0.1; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(app_env["log"], "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=app_env["env"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{app_env['log'].read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make browser` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def block_network(context) -> list[str]:
    """Fail every request that leaves this machine; returns the list the attempts are recorded in."""
    attempted: list[str] = []

    def handle(route):
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob") or parsed.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            attempted.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", handle)
    return attempted


@pytest.fixture
def page(browser):
    """A page whose every non-local request fails; the test fails if the app attempted any."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    attempted = block_network(context)
    pg = context.new_page()
    yield pg
    context.close()
    assert not attempted, f"the app tried to reach the network: {sorted(set(attempted))}"


def settle(pg, timeout_ms: int = 90_000) -> None:
    """Wait until the script run has finished and nothing is left loading."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    pg.wait_for_timeout(600)  # images and charts paint after the run ends
    pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def check_page(pg, title: str) -> None:
    pg.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
    for testid in ("stException", "stAlertContentError"):  # no traceback, no error message
        found = pg.locator(f'[data-testid="{testid}"]')
        assert found.count() == 0, found.first.inner_text()
    assert pg.locator('[data-testid="stSidebarNav"]').get_by_text("Memorisation").count() == 1


def screenshot(pg, output_dir: Path, name: str, *, doc: bool = True) -> None:
    shots = output_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / f"{name}.png"
    pg.mouse.move(5, 5)  # no hover tooltips in the picture
    # The app scrolls inside its main block, so grow the window to the content for a whole-page picture.
    height = pg.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    pg.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(int(height), 4000))})
    pg.wait_for_timeout(800)
    pg.screenshot(path=str(path))
    pg.set_viewport_size(VIEWPORT)
    if doc and os.environ.get("GALAXYGAN_DOC_SCREENSHOTS") == "1":
        docs = ROOT / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        _compact_png(path, docs / f"{name}.png")


def _compact_png(src: Path, dst: Path) -> None:
    """The screenshot as is if small enough, else as a palette PNG (UI colours survive 256 levels)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.save(dst, optimize=True)
        for colors in (256, 128):
            if dst.stat().st_size < DOC_SHOT_LIMIT:
                return
            small = im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            small.save(dst, optimize=True)


PAGES = [("", "Galaxy GAN Studio", "home"), ("latent_explorer", "Latent Explorer", "latent_explorer")]


@pytest.mark.parametrize("path, title, name", PAGES)
def test_page_renders(server, page, output_dir, path, title, name):
    page.goto(f"{server}/{path}")
    check_page(page, title)
    page.wait_for_selector('[data-testid="stImage"] img', timeout=90_000)
    settle(page)
    check_page(page, title)
    assert page.get_by_text("Display:").count() >= 1  # every image states its stretch
    screenshot(page, output_dir, name)


def test_no_page_reaches_the_network(server, browser):
    """Every page, loaded with the network cut off: nothing is even attempted, the tab icon is local."""
    context = browser.new_context(viewport=VIEWPORT)
    attempted = block_network(context)
    pg = context.new_page()
    try:
        for path, title in (("", "Galaxy GAN Studio"), ("train", "Train"), ("latent_explorer", "Latent Explorer"),
                            ("evaluation", "Evaluation"), ("memorisation", "Memorisation")):
            pg.goto(f"{server}/{path}")
            pg.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=90_000)
            settle(pg)
            pg.wait_for_timeout(1500)  # late requests (icons, fonts) after the first paint
        icons = pg.eval_on_selector_all("link[rel~=icon]", "els => els.map(e => e.href)")
        assert icons and all(urlparse(h).hostname in LOCAL_HOSTS or h.startswith("data:") for h in icons), icons
    finally:
        context.close()
    assert attempted == [], f"requests to the network: {sorted(set(attempted))}"


def test_home_new_samples_button_changes_the_grid(server, page):
    page.goto(server)
    page.wait_for_selector('[data-testid="stImage"] img', timeout=90_000)
    settle(page)
    before = page.locator('[data-testid="stImage"] img').first.get_attribute("src")
    page.get_by_role("button", name="New samples").click()
    page.wait_for_function(FIRST_IMAGE_CHANGED, arg=before, timeout=60_000)
    check_page(page, "Galaxy GAN Studio")


def test_evaluation_page(server, page, output_dir):
    page.goto(f"{server}/evaluation")
    check_page(page, "Evaluation")
    settle(page)
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("Morphology, real vs generated").wait_for(timeout=180_000)
    settle(page, 180_000)
    check_page(page, "Evaluation")
    page.locator('[data-testid="stPlotlyChart"]').nth(4).wait_for(timeout=60_000)  # charts paint after the run ends
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 5
    screenshot(page, output_dir, "evaluation")


def test_memorisation_page(server, page, output_dir):
    page.goto(f"{server}/memorisation")
    check_page(page, "Memorisation")
    settle(page)
    page.get_by_role("button", name="Find nearest training images").click()
    page.get_by_text("Closest samples first").wait_for(timeout=180_000)
    settle(page, 180_000)
    check_page(page, "Memorisation")
    page.locator('[data-testid="stImage"] img').nth(7).wait_for(timeout=180_000)  # panels draw after the header
    assert page.locator('[data-testid="stImage"] img').count() >= 8
    screenshot(page, output_dir, "memorisation")


def pick_option(pg, selectbox, label: str, *, tries: int = 5) -> bool:
    """Open ``selectbox`` and click its option ``label``; False if the option is not listed.

    A page that refreshes part of itself on a timer (the Train page's run list) can redraw the
    box between opening it and the click, which closes the list: the click is then retried on a
    freshly opened list instead of waiting out Playwright's default timeout on a stale one."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(tries):
        selectbox.click()
        option = pg.get_by_role("option", name=label, exact=True)
        try:  # the list paints a moment after the click: give it that moment before calling it absent
            option.wait_for(timeout=3_000)
        except PlaywrightTimeout:
            pg.keyboard.press("Escape")
            return False
        try:
            option.click(timeout=5_000)
            return True
        except PlaywrightTimeout:  # the list closed under the click: open it again
            pg.keyboard.press("Escape")
    raise AssertionError(f"option {label!r} was listed but could not be clicked in {tries} tries")


def choose_checkpoint(pg, label: str) -> None:
    """Pick a checkpoint in the sidebar's picker by its label."""
    picker = pg.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    assert pick_option(pg, picker, label), f"checkpoint {label!r} is not in the sidebar's picker"
    settle(pg)


def test_latent_explorer_projects_a_galaxy(server, page, output_dir):
    # the fine-tuned hdf StyleGAN: its training stamps are cut from the field in seconds (the sim
    # model's page test, test_app_pages, covers flux data and the chi-squared term)
    page.goto(f"{server}/latent_explorer")
    check_page(page, "Latent Explorer")
    settle(page)
    choose_checkpoint(page, "stylegan_hdf64_ft · shipped")
    page.get_by_text("Project a real galaxy").wait_for(timeout=90_000)
    settle(page)
    steps = page.locator('[data-testid="stSlider"]').filter(has_text="Steps").get_by_role("slider")
    steps.focus()
    steps.press("Home")  # the fewest steps
    settle(page)
    page.get_by_role("button", name="Project", exact=True).click()
    page.get_by_role("button", name="Use as interpolation key").wait_for(timeout=180_000)
    settle(page, 180_000)
    check_page(page, "Latent Explorer")
    captions = page.locator('[data-testid="stImage"]').all_inner_texts()
    assert sum(c.startswith(("Target:", "Reconstruction in w", "Residual target")) for c in captions) == 3, captions
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)  # charts paint after the run ends
    assert page.locator('[data-testid="stPlotlyChart"]').count() >= 1  # the loss curve
    screenshot(page, output_dir, "latent_explorer_projection")


def test_latent_explorer_shows_both_stages_of_a_chain(server, page):
    page.goto(f"{server}/latent_explorer")
    check_page(page, "Latent Explorer")
    settle(page)
    choose_checkpoint(page, "stackgan_sim128 · shipped")
    page.get_by_text("stage2: 128 px").first.wait_for(timeout=90_000)
    settle(page)
    check_page(page, "Latent Explorer")
    assert page.get_by_text("stage1: 64 px").count() >= 2 and page.get_by_text("stage2: 128 px").count() >= 2


def test_train_page_launches_a_run_that_keeps_running(server, page, output_dir, app_env):
    run = RunFolder(app_env["runs"] / "e2e-classroom")
    page.goto(f"{server}/train")
    check_page(page, "Train")
    settle(page)
    name = page.get_by_label("Run name", exact=True).and_(page.get_by_role("textbox"))
    name.fill("e2e-classroom")
    name.press("Enter")
    settle(page)
    page.get_by_text("Logging and live evaluation").click()
    live_fid = page.get_by_label("Live FID every (steps, 0 = off)")
    live_fid.fill("0")
    live_fid.press("Enter")
    settle(page)
    try:
        page.get_by_role("button", name="Start training").click()
        deadline = time.monotonic() + 120
        while run.effective_state() != "running" or not run.read_metrics():
            assert time.monotonic() < deadline, f"run did not start: {run.read_status()}"
            assert run.effective_state() != "failed", (run.root / "process.log").read_text()[-2000:]
            time.sleep(0.5)
        assert run.config_path.exists() and (run.root / "process.log").exists()
        page.locator("span.stMarkdownBadge", has_text="running").wait_for(timeout=30_000)
        page.get_by_text("Discriminator output").first.wait_for(timeout=30_000)
        check_page(page, "Train")
        screenshot(page, output_dir, "train", doc=False)  # a run seconds old; docs show a real one

        page.reload()  # a reload (or a closed tab) never stops a run
        check_page(page, "Train")
        assert run.effective_state() == "running"
        page.get_by_role("button", name="Stop").click()
        deadline = time.monotonic() + 90
        while run.effective_state() != "stopped":
            assert time.monotonic() < deadline, f"run did not stop: {run.read_status()}"
            time.sleep(0.5)
        assert run.checkpoint("last").exists()
    finally:
        stop_run(run.root, wait_s=30)


def test_train_page_follows_a_run_started_elsewhere(server, page, app_env):
    """A run started outside the app (as by galaxygan train) appears, runs and stops without a reload."""
    page.goto(f"{server}/train")
    check_page(page, "Train")
    settle(page)
    run = RunFolder(app_env["runs"] / "e2e-outside")
    cfg = load_config(configs_dir() / "dcgan_hdf32.toml", [
        "model.width=4", "train.steps=1000000", "train.batch_size=8", "train.threads=1", "train.device=cpu",
        "log.metrics_every=5", "log.sample_every=50", "log.checkpoint_every=1000000", "log.eval_every=0",
        "log.grid_size=4"])
    try:
        launch_training(cfg, run.root)
        picker = page.locator('[data-testid="stSelectbox"]', has_text="Run").last
        deadline = time.monotonic() + 60
        while True:  # the run list refreshes by itself: the new run becomes one of the picker's options
            assert time.monotonic() < deadline, "the outside run never appeared in the run picker"
            if picker.count() and pick_option(page, picker, "e2e-outside"):
                break
            page.wait_for_timeout(1000)
        page.locator("span.stMarkdownBadge", has_text="running").wait_for(timeout=120_000)
        assert run.effective_state() == "running"
        assert stop_run(run.root, wait_s=60)
        page.locator("span.stMarkdownBadge", has_text="stopped").wait_for(timeout=30_000)
        # the buttons follow the state too (drawn after the badge in the same rerun, so wait for them)
        page.get_by_role("button", name="Resume").wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Resume").count() == 1
    finally:
        stop_run(run.root, wait_s=30)
