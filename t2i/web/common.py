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
    """A random id kept in the page's URL (?v=...), so it survives reloads and needs no cookie."""
    vid = st.query_params.get(VISITOR_PARAM)
    if not vid or len(vid) != 32 or not all(c in "0123456789abcdef" for c in vid):
        vid = uuid.uuid4().hex
        st.query_params[VISITOR_PARAM] = vid
    return vid


def plain(text: str) -> None:
    """User text (prompts, errors) as literal text: st.text never interprets markdown or HTML."""
    st.text(text)
