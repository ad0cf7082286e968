"""What every page shares: the store, the visitor's id, and text that is never rendered as markup.

The store is opened once per process and shared by every session (its connections reopen themselves
after a database restart). A store that fails ends the page with one line instead of a traceback:
"the database is not reachable, retrying" while a database server cannot be reached (the page tries
again by itself), "the service cannot take jobs right now" when the store fails otherwise (a full
disk, a read-only or deleted SQLite file).
"""

from __future__ import annotations

import functools
import logging
import time

import streamlit as st

from t2i.errors import SpecError, T2IError
from t2i.store import StoreError, StoreGone, StoreUnavailable, default_url, open_store
from t2i.web.visitor import COOKIE, LOCAL, PROXY_HEADER_ENV, AddressUnreadable, log_unreadable, new_key, trusted_header
from t2i.web.visitor import valid_key, visitor_of
from t2i.web.visitor import client_address as address_of

VISITOR_PARAM = "v"
RETRY_SECONDS = 5  # a page that found the database unreachable reruns itself this often
UNREACHABLE = "the database is not reachable, retrying"
CANNOT_TAKE_JOBS = "the service cannot take jobs right now; please try again later"
log = logging.getLogger("t2i.web")


@st.cache_resource(show_spinner=False)
def _store(url: str):
    return open_store(url)  # the service start: creates an SQLite file that is not there yet


class _Guarded:
    """The shared store, whose every call ends the page with one line when the store fails."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def guarded(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except StoreError as error:
                store_failed(error)
        return guarded


def store():
    try:
        return _Guarded(_store(default_url()))
    except StoreError as error:  # not cached: the next run tries to open it again
        store_failed(error)
    except (T2IError, SpecError) as error:  # a --db/$T2I_DB the store refuses: the operator's to fix
        log.error("cannot open the job store: %s", error)
        st.error(CANNOT_TAKE_JOBS)
        st.stop()


def store_failed(error: StoreError) -> None:
    """Show the store's failure as one line and end this run of the page."""
    log.warning("the job store failed: %s", error)
    if isinstance(error, StoreGone):
        _store.clear()  # the file at the path is another one now: the next run opens that
    if isinstance(error, StoreUnavailable):
        st.warning(UNREACHABLE)
        _rerun_later()
    else:
        st.error(CANNOT_TAKE_JOBS)
    st.stop()


def _rerun_later() -> None:
    """Rerun the page after RETRY_SECONDS, without holding this session's thread meanwhile."""
    started = time.monotonic()

    @st.fragment(run_every=RETRY_SECONDS)
    def retry():
        if time.monotonic() - started >= RETRY_SECONDS / 2:  # not on the fragment's first, immediate run
            st.rerun(scope="app")

    retry()


def visitor_id() -> str:
    """The visitor's id: a hash of the key in their HttpOnly cookie (t2i/web/visitor.py), which the
    server sets on the first page load. It is never in an address, so no link hands it over; an old
    `?v=` link's id is dropped from the address unread. Without the cookie (cookies blocked, or a
    server without webapp.py's middleware) the key is this session's alone: "your jobs" last until
    the tab is reloaded or closed. webapp.py calls this before any page."""
    if VISITOR_PARAM in st.query_params:
        del st.query_params[VISITOR_PARAM]
    vid = st.session_state.get("visitor_id")
    if vid is None:
        key = st.context.cookies.get(COOKIE)
        kept = valid_key(key)
        vid = visitor_of(key if kept else new_key())
        st.session_state.update(visitor_id=vid, visitor_kept=kept)
    return vid


_warned_proxy = False


def client_address() -> str:
    """The address this session's limits are keyed on (t2i/web/visitor.py): the peer's, or the one the
    operator's trusted proxy header names. A header that names no client ends the page with one line
    (the limited action is refused, see visitor.client_address) and is logged once per reason."""
    global _warned_proxy
    header = trusted_header()
    values = st.context.headers.get_all(header) if header else []
    peer = st.context.ip_address
    try:
        address = address_of(peer if isinstance(peer, str) else None, values, header)
    except AddressUnreadable as error:
        log_unreadable(error, log)
        st.error(str(error))
        st.stop()
    if address == LOCAL and not header and not _warned_proxy and st.context.headers.get("X-Forwarded-For"):
        _warned_proxy = True  # every visitor shares one address's limits until the operator says which header
        log.warning("requests come through a proxy on this host: set %s (e.g. X-Forwarded-For) so that limits "
                    "apply per visitor's address, not to everyone at once", PROXY_HEADER_ENV)
    return address


def plain(text: str) -> None:
    """User text (prompts, errors) as literal text: st.text never interprets markdown or HTML."""
    st.text(text)
