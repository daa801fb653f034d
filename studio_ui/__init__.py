"""Shared pieces of the Streamlit studio (``app.py`` and ``pages/``).

``nav``       the page registry: order, titles, icons and sections of the navigation
``state``     cached model loading and image generation (``st.cache_resource``/``st.cache_data``)
``widgets``   ``*_ui()`` functions that draw widgets and return plain values, image panels,
              downloads and the error boundary every page runs inside

Figures come from :mod:`galaxy_core.metrics.plots` (shared with ``galaxygan evaluate``). Nothing
here computes model maths: that lives in :mod:`galaxy_core`, which never imports streamlit.
"""
