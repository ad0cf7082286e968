"""The web app's entry point: `streamlit run webapp.py`. Pages live in t2i/web/ (layout only)."""

import streamlit as st

from t2i.web.common import visitor_id
from t2i.web.guard import check_operator

st.set_page_config(page_title="t2i", layout="wide")
visitor_id()  # before any page: keeps ?v= in the URL whichever page the sidebar opens
check_operator()  # before any page: ?operator=TOKEN works on every page's address, then leaves it
st.navigation([
    st.Page("t2i/web/generate.py", title="Generate", default=True),
    st.Page("t2i/web/gallery.py", title="Previous inferences"),
    st.Page("t2i/web/vote.py", title="Vote"),
    st.Page("t2i/web/leaderboard.py", title="Leaderboard"),
    st.Page("t2i/web/queue_page.py", title="Queue"),
]).run()
