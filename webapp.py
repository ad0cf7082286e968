"""The web app's entry point: `streamlit run webapp.py`. Pages live in t2i/web/."""

import streamlit as st

st.set_page_config(page_title="t2i", layout="wide")
st.navigation([st.Page("t2i/web/queue_page.py", title="Queue", default=True)]).run()
