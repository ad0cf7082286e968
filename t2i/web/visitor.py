"""Who a request comes from: the visitor's key (a cookie) and the client address (for the limits).

The visitor's identity is a random key in an HttpOnly cookie, set by the web server on the first page
load (VisitorCookie, an ASGI middleware that webapp.py's `app` installs). It is never in an address,
so a link copied from any page hands over nothing; pages script cannot read it (HttpOnly), and the
database keeps only a hash of it (visitor_of), so the jobs table does not hold credentials either.

Limits bind to the client address instead, which a visitor cannot rotate for free: the peer address
of the connection, or, when the operator names a trusted proxy's header (T2I_TRUSTED_PROXY_HEADER,
e.g. X-Forwarded-For, or Forwarded for RFC 7239's form), the right-most entry in it, which is the one
that proxy added, with or without a port. Anything to its left was written by the client and is
ignored. An entry that names no client refuses the limited actions rather than sharing one quota
(client_address says why). IPv6 addresses count per /64 network: one subscriber usually holds a whole
/64 and can pick any address in it.

Nothing here imports Streamlit: t2i/web/common.py feeds it st.context's cookies, headers and peer.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets

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

class AddressUnreadable(ValueError):
    """The trusted proxy's header is there but its right-most entry names no client: str(e) is the
    visitor's one line, `reason` a short fixed phrase (the log says each reason once), `value` the entry."""

    def __init__(self, reason: str, value: str):
        super().__init__("the address your connection comes from cannot be read, so submitting and voting are "
                         "off for now; the operator has been told")
        self.reason, self.value = reason, value


_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]{1,64}")   # RFC 7239 obfnode: the proxy's own token for a client
_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]{1,64}")   # node-port: a number or an obfuscated one
MAX_ENTRY = 256   # longer than any node the grammar allows; a longer entry is refused unread


def _address(text: str) -> str | None:
    """The limit key of one address: an IPv4 address as it is, an IPv6 one as its /64; None if unparsable."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _node(text: str) -> str:
    """The limit key of one node as a proxy writes it (X-Forwarded-For's entries and RFC 7239's `for=`
    alike): "203.0.113.7", "203.0.113.7:4711", "2001:db8::1", "[2001:db8::1]:443", "_hidden" (an
    obfuscated identifier: the proxy's stable name for one client, kept as the key). AddressUnreadable
    for "unknown" (the proxy did not know the client) and for anything else."""
    if len(text) > MAX_ENTRY:
        raise AddressUnreadable("an entry longer than any address", text[:40] + "...")
    if text.lower() == "unknown":
        raise AddressUnreadable('the proxy wrote "unknown" for the client', text)
    if _OBFUSCATED.fullmatch(text):
        return text
    host, port = text, None
    if text.startswith("["):   # an IPv6 address in brackets, maybe with a port
        close = text.find("]")
        host, rest = text[1:close], text[close + 1:] if close > 0 else ""
        if close < 0 or (rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:]))):
            raise AddressUnreadable("a bracketed address that does not close or has no port after it", text)
    elif text.count(":") == 1:   # IPv4 with a port; a bare IPv6 address has two colons or more
        host, port = text.split(":")
        if not _PORT.fullmatch(port):
            raise AddressUnreadable("a port that is not a number", text)
    if _OBFUSCATED.fullmatch(host):   # "_hidden:_port"
        return host
    found = _address(host)
    if found is None:
        raise AddressUnreadable("an entry that is not an IP address", text)
    return found


def _split(value: str, sep: str) -> list[str]:
    """value cut at `sep` outside double quotes (RFC 7239 quoted-string, with backslash escapes); one
    pass, so a hostile header costs time linear in its length. A quote left open is refused: the proxy
    appends ", for=..." to what the client sent, so a client's open quote would swallow the proxy's
    comma, and `for=9.9.9.9;x="` + `, for=<real>` would read as the client's chosen 9.9.9.9."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise AddressUnreadable("a quoted string left open", value[-40:])
    parts.append("".join(current))
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _forwarded_for(element: str) -> str:
    """The `for=` node of one RFC 7239 element ("for=192.0.2.60;proto=http;by=203.0.113.43")."""
    fors = []
    for pair in _split(element, ";"):
        name, eq, value = pair.strip().partition("=")
        if not eq:
            raise AddressUnreadable("a Forwarded element that is not name=value pairs", element.strip())
        if name.strip().lower() == "for":
            fors.append(_unquote(value.strip()))
    if len(fors) != 1:
        raise AddressUnreadable("a Forwarded element without exactly one for=", element.strip())
    return fors[0]


def proxy_address(header_values: list[str], trusted_header: str) -> str | None:
    """The limit key the trusted proxy's header names: its right-most entry, the one that proxy added
    (anything to its left was written by the client or by proxies we do not know). `Forwarded` is read
    as RFC 7239 (elements, then `for=`); any other header as X-Forwarded-For (a list of nodes). None
    when the request carries no entry at all; AddressUnreadable when the right-most one names no client."""
    rfc7239 = trusted_header.strip().lower() == "forwarded"
    # X-Forwarded-For has no quoting: a plain split, so nothing a client writes can hide the proxy's comma.
    entries = [e for value in header_values for e in (_split(value, ",") if rfc7239 else value.split(","))
               if e.strip()]
    if not entries:
        return None
    return _node((_forwarded_for(entries[-1]) if rfc7239 else entries[-1]).strip())


def client_address(peer: str | None, header_values: list[str], trusted_header: str | None) -> str:
    """The address limits are keyed on.

    peer: the connection's remote address (None for loopback, as Streamlit reports it).
    header_values: every value of the trusted header in the request, in order (empty when none).
    trusted_header: the header the operator's proxy sets, or None (then headers are never read:
    without a proxy a client could write any address into them).

    A request without the header is a direct connection (a health check, the operator on the host):
    the peer. A header whose right-most entry cannot be read raises AddressUnreadable instead of
    falling back to the peer: behind the proxy the peer is the proxy itself, so every such visitor
    would share one quota (one of them could spend it for all, silently), and the entry left of it
    is the client's own writing. Refusing the limited actions (submit, vote) until the operator fixes
    the proxy is the only answer that neither merges visitors nor trusts what a client wrote."""
    if trusted_header:
        found = proxy_address(header_values, trusted_header)
        if found is not None:
            return found
    found = _address(peer.strip().strip("[]")) if isinstance(peer, str) else None
    return found or LOCAL


_logged_reasons: set[str] = set()


def log_unreadable(error: AddressUnreadable, log) -> bool:
    """Tell the operator about an unreadable proxy header once per reason (a fixed set of phrases,
    so the set stays small however many requests come): a flood of such requests is one line each
    kind, not one per request. True when this call logged."""
    if error.reason in _logged_reasons:
        return False
    _logged_reasons.add(error.reason)
    log.warning("the trusted proxy header's right-most entry %r is %s: submits and votes from such requests "
                "are refused until the proxy sends an address (%s)", error.value, error.reason, PROXY_HEADER_ENV)
    return True


def trusted_header() -> str | None:
    return os.environ.get(PROXY_HEADER_ENV, "").strip() or None


# --- setting the cookie ----------------------------------------------------------------------------

def _request_cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The visitor's key from the request's Cookie headers, or None. Split by hand, in one pass:
    http.cookies' parser is quadratic in backslashes in the Pythons without the fix of CVE-2024-7592
    (3.11.7 here: 16 KB of them took 4 s), and this runs on the server's event loop, so one such
    header stalled every session. Our key is 43 URL-safe characters, never quoted or escaped."""
    for name, value in headers:
        if name.lower() == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, sep, found = pair.partition("=")
                if sep and key.strip() == COOKIE and valid_key(found.strip()):
                    return found.strip()
    return None


def _https(scope: dict) -> bool:
    """Whether the page was loaded over TLS: directly, or (with a trusted proxy) as the proxy says:
    X-Forwarded-Proto, or the `proto=` of the right-most element when the proxy writes RFC 7239's
    Forwarded (the one it added; a client's own elements are left of it)."""
    if scope.get("scheme") == "https":
        return True
    header = trusted_header()
    if not header:
        return False
    headers = scope.get("headers", [])
    for name, value in headers:
        if name.lower() == b"x-forwarded-proto" and value.decode("latin-1").strip().lower() == "https":
            return True
    if header.lower() != "forwarded":
        return False
    values = [value.decode("latin-1") for name, value in headers if name.lower() == b"forwarded"]
    try:
        elements = [e for value in values for e in _split(value, ",") if e.strip()]
        pairs = [p.strip().partition("=") for p in _split(elements[-1], ";")] if elements else []
    except AddressUnreadable:
        return False
    return any(n.strip().lower() == "proto" and _unquote(v.strip()).lower() == "https" for n, _, v in pairs)


def set_cookie_header(key: str, secure: bool) -> bytes:
    # HttpOnly: page scripts cannot read it. SameSite=Lax: sent when the visitor follows a link to the
    # app (so a shared link still opens their own session), never with other sites' requests.
    attributes = f"{COOKIE}={key}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
    return (attributes + ("; Secure" if secure else "")).encode()


def _unescaped_cookies(scope: dict) -> dict:
    """The request with every cookie that holds a backslash left out. The server behind this
    middleware (Starlette's cookie_parser, for every request and the WebSocket) unquotes cookies with
    http.cookies._unquote, quadratic in backslashes in Pythons without the fix of CVE-2024-7592: a
    60 KB Cookie header held the event loop, and so every session and the health check, for 50 s.
    No cookie of ours (the visitor key, Streamlit's XSRF token) holds one."""
    headers = scope.get("headers", [])
    if not any(name.lower() == b"cookie" and b"\\" in value for name, value in headers):
        return scope
    kept = [(name, b";".join(p for p in value.split(b";") if b"\\" not in p) if name.lower() == b"cookie" else value)
            for name, value in headers]
    return {**scope, "headers": kept}


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
        if scope["type"] in ("http", "websocket"):
            scope = _unescaped_cookies(scope)
        if scope["type"] != "http" or not _navigation(scope) or _request_cookie(scope.get("headers", [])):
            await self.app(scope, receive, send)
            return
        cookie = set_cookie_header(new_key(), _https(scope))

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
