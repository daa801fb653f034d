"""Galaxy GAN Studio: the Streamlit app.

Run with ``make run`` (or ``streamlit run app.py``; .streamlit/config.toml binds it to
127.0.0.1). Pages live in ``pages/`` and are registered, in order, in :mod:`studio_ui.nav`;
the checkpoint picker in the sidebar is shared by every page through ``st.session_state``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from studio_ui import nav, widgets

ASSETS = Path(__file__).resolve().parent / "studio_ui" / "assets"


def sidebar_ui() -> None:
    with widgets.error_boundary("Listing checkpoints"):
        widgets.checkpoint_picker_ui()
    st.caption("Runs entirely on this machine; nothing is downloaded.")


def main() -> None:
    st.set_page_config(page_title="Galaxy GAN Studio", page_icon=str(ASSETS / "icon.svg"), layout="wide",
                       initial_sidebar_state="expanded")
    st.logo(str(ASSETS / "logo.svg"), size="large", icon_image=str(ASSETS / "icon.svg"))
    page = st.navigation(nav.sections(nav.available()), position="sidebar", expanded=True)
    with st.sidebar:
        sidebar_ui()
    page.run()


if __name__ == "__main__":
    main()
