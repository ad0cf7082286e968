"""What every page shares: the store, the visitor's id, and text that is never rendered as markup."""

from __future__ import annotations

import uuid

import streamlit as st

from t2i.store import default_url, open_store

VISITOR_PARAM = "v"


@st.cache_resource
def _store(url: str):
    return open_store(url)


def store():
    return _store(default_url())


def visitor_id() -> str:
    """A random id per visitor, kept in the session (page switches) and in the URL (?v=..., reloads
    and bookmarks); no cookie needed. Sidebar links drop query parameters, so it is written back on
    every run (webapp.py calls this before any page)."""
    vid = st.session_state.get("visitor_id") or st.query_params.get(VISITOR_PARAM)
    if not vid or len(vid) != 32 or not all(c in "0123456789abcdef" for c in vid):
        vid = uuid.uuid4().hex
    st.session_state["visitor_id"] = vid
    if st.query_params.get(VISITOR_PARAM) != vid:
        st.query_params[VISITOR_PARAM] = vid
    return vid


def plain(text: str) -> None:
    """User text (prompts, errors) as literal text: st.text never interprets markdown or HTML."""
    st.text(text)
