"""Who is calling: an API key turned into a submitter, exactly as a browser's cookie is on the pages.

    caller(request) -> Caller      the one function every router uses (the AUTOMATIC1111 one too):
                                   reads the key (Bearer, or HTTP Basic with the key as the password
                                   and any user name, as AUTOMATIC1111 clients send their --api-auth)
                                   and the client address; ApiError(401) for a wrong or revoked key
    writer(request) -> Caller      caller() that may submit, cancel and vote; ApiError(401) when the
                                   request is anonymous and T2I_API_ANONYMOUS does not allow writes
    new_key() / hash_key(key)      what `python -m t2i keys create` makes and the store keeps

Keys are `t2i_` + 32 random bytes (URL-safe base64) and are stored as their SHA-256. No slow hash
(bcrypt, scrypt): those protect low-entropy passwords from guessing; a 256-bit random key cannot be
guessed however fast the hash, and a plain digest lets every request find its key with one index
probe instead of a deliberate 100 ms of CPU per request.

Limits bind to the client address (t2i/web/visitor.py: the peer, or the operator's trusted proxy
header), as on the pages; a key is the submitter, so "your jobs" and cancelling are per key. The
operator's token (T2I_OPERATOR_TOKEN, as on the pages) given as the bearer is the operator: operator
details, and cancelling anyone's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass

from fastapi import Request

from ..web.visitor import AddressUnreadable, client_address, log_unreadable, trusted_header
from .errors import ApiError, log
from .service import store

KEY_PREFIX = "t2i_"
ANONYMOUS_ENV = "T2I_API_ANONYMOUS"
ANONYMOUS_MODES = ("read", "none", "write")   # default first: reads allowed, writes need a key
OPERATOR_ENV = "T2I_OPERATOR_TOKEN"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="t2i", Basic realm="t2i"'}
MAX_CREDENTIALS = 512   # a key is 47 characters; a longer header is refused before any decoding


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """submitter: the key's (None when anonymous); address: what limits are keyed on; key_name for
    messages and logs; operator: the operator's token was given."""

    submitter: str | None
    address: str
    key_name: str | None = None
    operator: bool = False

    def owns(self, job_submitter: str | None) -> bool:
        return self.operator or (self.submitter is not None and job_submitter == self.submitter)


def anonymous_mode() -> str:
    mode = os.environ.get(ANONYMOUS_ENV, "").strip().lower() or ANONYMOUS_MODES[0]
    return mode if mode in ANONYMOUS_MODES else "none"   # a mistyped setting fails closed


def _credential(request: Request) -> str | None:
    """The key the request presents, or None. Bearer <key>, or Basic base64(user:key)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    if len(header) > MAX_CREDENTIALS:
        raise ApiError(401, "the Authorization header is too long to hold a key", CHALLENGE)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "Basic credentials are not base64 of user:key", CHALLENGE) from None
        user, colon, password = decoded.partition(":")
        if colon and password:
            return password
    raise ApiError(401, "send the API key as 'Authorization: Bearer <key>' or as the Basic password", CHALLENGE)


def _address(request: Request) -> str:
    """The limit key, as the pages compute it; a loopback peer is Streamlit's "local", so the API and
    the pages of one machine share one address's limits."""
    peer = request.client.host if request.client else None
    try:
        if peer and ipaddress.ip_address(peer.strip("[]")).is_loopback:
            peer = None
    except ValueError:
        pass
    header = trusted_header()
    values = request.headers.getlist(header) if header else []
    try:
        return client_address(peer, values, header)
    except AddressUnreadable as error:
        log_unreadable(error, log)
        raise ApiError(403, str(error)) from None


def caller(request: Request) -> Caller:
    """The caller of any API request; ApiError(401) for a key that is wrong or revoked, and for an
    anonymous request when T2I_API_ANONYMOUS is "none". Reads the store once per keyed request."""
    key = _credential(request)
    address = _address(request)
    if key is None:
        if anonymous_mode() == "none":
            raise ApiError(401, "this service needs an API key (ask its operator for one)", CHALLENGE)
        return Caller(None, address)
    token = os.environ.get(OPERATOR_ENV, "")
    # compare_digest: the time taken does not tell a guesser how much of the token was right.
    if token and hmac.compare_digest(key.encode("utf-8", "replace"), token.encode()):
        return Caller("operator", address, "operator", operator=True)
    found = store().key_by_hash(hash_key(key))
    if found is None:
        raise ApiError(401, "unknown or revoked API key", CHALLENGE)
    return Caller(found.submitter, address, found.name)


def writer(request: Request) -> Caller:
    """caller() for a request that changes something: anonymous only when T2I_API_ANONYMOUS=write."""
    who = caller(request)
    if who.submitter is None and anonymous_mode() != "write":
        raise ApiError(401, "submitting, cancelling and voting need an API key: send it as "
                            "'Authorization: Bearer <key>'", CHALLENGE)
    return who
