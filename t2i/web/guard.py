"""What a public page may show to whom: the operator's session, shortened errors, spreadsheet-safe cells.

The operator is recognised by a token only: T2I_OPERATOR_TOKEN in the web app's environment, given
once as `?operator=TOKEN` in any page's address. Not by address: behind a TLS proxy on the same host
every visitor arrives from 127.0.0.1. Without the variable nobody is the operator on the web (the
shell's `python -m t2i jobs` shows everything).
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

OPERATOR_PARAM = "operator"
OPERATOR_ENV = "T2I_OPERATOR_TOKEN"
SHORT_ERROR_CHARS = 80
# OWASP's CSV injection advice: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def check_operator() -> bool:
    """Called by webapp.py before any page: a session that presents the token is the operator's until
    it ends. The parameter is removed from the address at once, so it stays out of the browser's
    history, bookmarks and screenshots (the session remembers it across sidebar links)."""
    given = st.query_params.get(OPERATOR_PARAM)
    if given is not None:
        del st.query_params[OPERATOR_PARAM]
        token = os.environ.get(OPERATOR_ENV, "")
        # compare_digest: the time taken does not tell a guesser how much of the token was right.
        st.session_state["operator"] = bool(token) and hmac.compare_digest(given.encode(), token.encode())
    return is_operator()


def is_operator() -> bool:
    # Unsetting the variable (and restarting) ends every operator session.
    return bool(os.environ.get(OPERATOR_ENV)) and bool(st.session_state.get("operator"))


def short_error(error: str | None, full: bool = False) -> str:
    """A job's error for a page: whole for the operator (or the job's own submitter), else its first
    line cut short. Errors can name paths, hosts and library internals that visitors need not see."""
    if not error or full:
        return error or ""
    line = error.splitlines()[0] if error.strip() else ""
    return line if len(line) <= SHORT_ERROR_CHARS else line[:SHORT_ERROR_CHARS - 3] + "..."


def csv_safe(value):
    """A table cell that a spreadsheet opening the page's CSV export reads as text, never as a formula
    (`=HYPERLINK(...)` in a prompt): a single quote in front, as OWASP advises. Non-text is unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
