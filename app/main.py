"""G2RL Workbench: compare runs by pass@k, training dynamics and exploration geometry.

Run from the repository root: ``streamlit run app/main.py`` (it binds to
127.0.0.1, see ``.streamlit/config.toml``; ``--server.address 0.0.0.0`` to share).
The data comes from MLflow through :mod:`analysis` only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `streamlit run` adds it; AppTest and other runners may not
    sys.path.insert(0, str(HERE))

import sidebar

st.set_page_config(page_title="G2RL Workbench", page_icon=":material/explore:", layout="wide")

pages = st.navigation([
    st.Page("app_pages/overview.py", title="Overview", icon=":material/table_chart:", default=True),
    st.Page("app_pages/passk.py", title="pass@k", icon=":material/target:"),
    st.Page("app_pages/dynamics.py", title="Training dynamics", icon=":material/show_chart:"),
    st.Page("app_pages/geometry.py", title="Exploration geometry", icon=":material/scatter_plot:"),
    st.Page("app_pages/samples.py", title="Samples", icon=":material/list:"),
])
sidebar.remember(sidebar.render())
pages.run()
