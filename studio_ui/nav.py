"""The studio's navigation: one registry of pages, in the order users meet them.

A page is a file in ``pages/`` plus one :class:`PageSpec` line below. Pages that later issues
bring with their model families (Style Mixing, Sky Composer) are already listed at their place
in the order; a listed page whose file does not exist yet is left out of the menu, so adding
``pages/style_mixing.py`` is all it takes to make it appear between Latent Explorer and
Evaluation. A page that needs a particular kind of checkpoint checks it itself with
:func:`studio_ui.widgets.require_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

APP_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PageSpec:
    file: str        # relative to the app root, e.g. "pages/home.py"
    title: str       # shown in the menu and the browser tab
    icon: str        # a Material icon, ":material/name:"
    section: str     # menu section header
    default: bool = False

    @property
    def url_path(self) -> str:
        """The page's URL: its file name, e.g. ``/latent_explorer`` (see :func:`ensure_app`)."""
        return Path(self.file).stem


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/home.py", "Home", ":material/home:", "Studio", default=True),
    PageSpec("pages/train.py", "Train", ":material/model_training:", "Studio"),
    PageSpec("pages/latent_explorer.py", "Latent Explorer", ":material/explore:", "Explore"),
    PageSpec("pages/style_mixing.py", "Style Mixing", ":material/palette:", "Explore"),
    PageSpec("pages/sky_composer.py", "Sky Composer", ":material/grain:", "Explore"),
    PageSpec("pages/evaluation.py", "Evaluation", ":material/query_stats:", "Evaluate"),
    PageSpec("pages/memorisation.py", "Memorisation", ":material/content_copy:", "Evaluate"),
)


def available(specs: tuple[PageSpec, ...] = PAGES, *, root: Path = APP_ROOT) -> list[PageSpec]:
    """The registered pages whose files exist, in registry order."""
    return [p for p in specs if (root / p.file).is_file()]


def sections(specs: list[PageSpec]) -> dict[str, list[st.Page]]:
    """``st.navigation`` input: section header -> pages, sections in order of first use."""
    out: dict[str, list[st.Page]] = {}
    for p in specs:
        page = st.Page(p.file, title=p.title, icon=p.icon, url_path=p.url_path, default=p.default)
        out.setdefault(p.section, []).append(page)
    return out


def _legacy_pages_mode() -> bool:
    """True while Streamlit runs a file of ``pages/`` directly (its pre-``st.navigation`` mode).

    A fresh server whose first request is for a page URL (say ``/train``) starts in that mode
    because a ``pages/`` folder exists; ``st.navigation`` switches it off for good. The flag is
    Streamlit's own (``PagesManager.uses_pages_directory``); if a future release moves it, the
    check answers False, which is the normal case.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return False
    return bool(getattr(PagesManager, "uses_pages_directory", False))


def ensure_app() -> None:
    """Call at the top of every page: runs the app entry if the page was started on its own.

    Normally ``app.py`` runs first and this does nothing. When Streamlit executed the page file
    directly (see :func:`_legacy_pages_mode`), this runs the entry instead, which registers the
    navigation, draws the sidebar and runs the requested page (found by its URL, the file name),
    then ends the outer run.
    """
    if not _legacy_pages_mode():
        return
    import app  # the entry script; its folder is on sys.path while a script runs

    app.main()
    st.stop()


def page_file(title: str) -> str | None:
    """File of the available page with this title (for ``st.switch_page``), or None."""
    return next((p.file for p in available() if p.title == title), None)
