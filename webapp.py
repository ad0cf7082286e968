"""The web app's entry point: `streamlit run webapp.py`. Pages live in t2i/web/ (layout only).

This file is read twice. `streamlit run` imports it as a module to find `app`, the server: Streamlit's
own (an st.App) with one middleware that gives each new browser its visitor key as an HttpOnly cookie
(t2i/web/visitor.py). Each session then runs it as its script (`__main__`): the pages.
"""

import streamlit as st

if __name__ == "__main__":  # a session's script run
    from t2i.web.common import visitor_id
    from t2i.web.guard import check_operator

    st.set_page_config(page_title="t2i", layout="wide")
    visitor_id()  # before any page: drops an old ?v= from the address, which no longer means anyone
    check_operator()  # before any page: ?operator=TOKEN works on every page's address, then leaves it
    st.navigation([
        st.Page("t2i/web/generate.py", title="Generate", default=True),
        st.Page("t2i/web/gallery.py", title="Previous inferences"),
        st.Page("t2i/web/vote.py", title="Vote"),
        st.Page("t2i/web/leaderboard.py", title="Leaderboard"),
        st.Page("t2i/web/queue_page.py", title="Queue"),
    ]).run()
else:  # imported by `streamlit run webapp.py` (or an ASGI server: `uvicorn webapp:app`)
    from starlette.middleware import Middleware

    from t2i.api.app import NoDelay, PathGuard, routes
    from t2i.web.visitor import VisitorCookie

    # The HTTP API (t2i/api/) answers under /api/ on the same server and port as the pages.
    app = st.App(__file__, middleware=[Middleware(NoDelay), Middleware(VisitorCookie), Middleware(PathGuard)],
                 routes=routes())
