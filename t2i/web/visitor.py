"""Who a request comes from: the visitor's key (a cookie) and the client address (for the limits).

The visitor's identity is a random key in an HttpOnly cookie, set by the web server on the first page
load (VisitorCookie, an ASGI middleware that webapp.py's `app` installs). It is never in an address,
so a link copied from any page hands over nothing; pages script cannot read it (HttpOnly), and the
database keeps only a hash of it (visitor_of), so the jobs table does not hold credentials either.

Limits bind to the client address instead, which a visitor cannot rotate for free: the peer address
of the connection, or, when the operator names a trusted proxy's header (T2I_TRUSTED_PROXY_HEADER,
e.g. X-Forwarded-For), the right-most address in it, which is the one that proxy added. Anything to
its left was written by the client and is ignored. IPv6 addresses count per /64 network: one
subscriber usually holds a whole /64 and can pick any address in it.

Nothing here imports Streamlit: t2i/web/common.py feeds it st.context's cookies, headers and peer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from http.cookies import SimpleCookie

COOKIE = "t2i_key"
COOKIE_MAX_AGE = 400 * 86400       # the longest a browser keeps a cookie (Chrome caps Max-Age at 400 days)
PROXY_HEADER_ENV = "T2I_TRUSTED_PROXY_HEADER"
LOCAL = "local"                    # Streamlit reports no address for loopback peers (127.0.0.1, ::1)
_KEY = re.compile(r"[A-Za-z0-9_-]{43}")   # secrets.token_urlsafe(32)


def new_key() -> str:
    return secrets.token_urlsafe(32)


def valid_key(key: object) -> bool:
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def visitor_of(key: str) -> str:
    """The visitor id stored with jobs and votes: a hash of the key, never the key itself."""
    return hashlib.sha256(f"t2i-visitor:{key}".encode()).hexdigest()[:32]


# --- the client address --------------------------------------------------------------------------

def _address(text: str) -> str | None:
    """The limit key of one address: an IPv4 address as it is, an IPv6 one as its /64; None if unparsable."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(peer: str | None, header_values: list[str], trusted_header: str | None) -> str:
    """The address limits are keyed on.

    peer: the connection's remote address (None for loopback, as Streamlit reports it).
    header_values: every value of the trusted header in the request, in order (empty when none).
    trusted_header: the header the operator's proxy sets, or None (then headers are never read:
    without a proxy a client could write any address into them)."""
    if trusted_header:
        # The proxy appends the address it saw to whatever the client sent: the right-most entry.
        entries = [e for value in header_values for e in value.split(",") if e.strip()]
        if entries:
            found = _address(entries[-1])
            if found:
                return found
    found = _address(peer) if isinstance(peer, str) else None
    return found or LOCAL


def trusted_header() -> str | None:
    return os.environ.get(PROXY_HEADER_ENV, "").strip() or None


# --- setting the cookie ----------------------------------------------------------------------------

def _request_cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header from the client: treat as no key
                continue
            if COOKIE in jar and valid_key(jar[COOKIE].value):
                return jar[COOKIE].value
    return None


def _https(scope: dict) -> bool:
    """Whether the page was loaded over TLS: directly, or (with a trusted proxy) as the proxy says."""
    if scope.get("scheme") == "https":
        return True
    if trusted_header():
        for name, value in scope.get("headers", []):
            if name.lower() == b"x-forwarded-proto" and value.decode("latin-1").strip().lower() == "https":
                return True
    return False


def set_cookie_header(key: str, secure: bool) -> bytes:
    # HttpOnly: page scripts cannot read it. SameSite=Lax: sent when the visitor follows a link to the
    # app (so a shared link still opens their own session), never with other sites' requests.
    attributes = f"{COOKIE}={key}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
    return (attributes + ("; Secure" if secure else "")).encode()


def _navigation(scope: dict) -> bool:
    """A browser loading a page (Accept: text/html), not its scripts, styles and images."""
    return any(n.lower() == b"accept" and b"text/html" in v.lower() for n, v in scope.get("headers", []))


class VisitorCookie:
    """ASGI middleware: a page load without a valid key gets a new one with its answer.

    Only page loads (not the scripts and images fetched alongside, which would otherwise each set a
    different key), whatever the answer (a 304 for a cached page too). The browser then opens the
    app's WebSocket with the cookie, where st.context.cookies reads it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _navigation(scope) or _request_cookie(scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        cookie = set_cookie_header(new_key(), _https(scope))

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
