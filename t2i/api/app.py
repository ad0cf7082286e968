"""The API application and how it rides on the web app's own server (webapp.py's st.App).

    create_app() -> FastAPI       every router of the API with one error handling (errors.install),
                                  its OpenAPI schema at /api/openapi.json and its docs at /api/docs
    routes() -> list              what webapp.py passes to st.App(routes=...): one route that hands
                                  every request under PREFIXES to the API application
    PathGuard                     webapp.py's middleware: API paths Streamlit would refuse, in JSON
    NoDelay                       webapp.py's middleware: TCP_NODELAY on the server's sockets (no_delay)

Why one route of our own and not Starlette's Mount: a Mount strips its prefix, so the schema's paths
would read /v1/jobs under a server of /api, and a second API (AUTOMATIC1111's /sdapi/v1/...) would
need a second application with a schema of its own. This route keeps the paths whole, so one
application serves every prefix and one schema describes them all. Another router joins by being
included in create_app and its prefix added to PREFIXES.

Bodies are bounded here, before FastAPI reads them: a declared length over MAX_BODY is refused at
once, and a body without one (chunked) is counted as it arrives (413 either way, nothing read
further). A body that is not JSON is refused by its content type (415).
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from ..spec import MAX_IMAGE_BYTES, MAX_IMAGE_PROMPTS
from . import errors

PREFIXES = ("/api/", "/sdapi/")   # ours, and AUTOMATIC1111's (a1111.py)
# The largest honest body: an init image and every image prompt at the spec's byte limit, base64
# (4/3), plus the rest of the JSON.
MAX_BODY = (1 + MAX_IMAGE_PROMPTS) * (MAX_IMAGE_BYTES * 4 // 3 + 4) + 64 * 1024
WITH_BODY = ("POST", "PUT", "PATCH")


def create_app() -> FastAPI:
    from .a1111 import router as a1111
    from .jobs import router as jobs
    from .reads import router as reads

    app = FastAPI(title="t2i", version="1", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json",
                  description="The t2i queue over HTTP: submit jobs, follow them live (server-sent events), "
                              "fetch their images. Send an API key as 'Authorization: Bearer <key>' "
                              "(or as the HTTP Basic password); `python -m t2i keys create NAME` makes one.")
    errors.install(app)
    app.include_router(jobs)
    app.include_router(reads)
    app.include_router(a1111)
    _describe_keys(app)
    return app


def _describe_keys(app: FastAPI) -> None:
    """The schema names how a key is sent (so the docs page offers to send one), once for every
    operation: caller() reads the header itself, so any router's routes take a key the same way."""
    from fastapi.openapi.utils import get_openapi

    def schema():
        if app.openapi_schema is None:
            made = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            made.setdefault("components", {})["securitySchemes"] = {
                "key": {"type": "http", "scheme": "bearer", "description": "an API key (`keys create NAME`)"},
                "basic": {"type": "http", "scheme": "basic", "description": "any user name, the key as password"}}
            made["security"] = [{"key": []}, {"basic": []}, {}]   # {}: anonymous, as T2I_API_ANONYMOUS allows
            app.openapi_schema = made
        return app.openapi_schema
    app.openapi = schema


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _refusal(status: int, line: str):
    return errors.answer(status, line)


def _json_type(value: bytes | None) -> bool:
    kind = (value or b"").split(b";")[0].strip().lower()
    return kind == b"application/json" or kind.endswith(b"+json")


class ApiRoute(BaseRoute):
    """Every request whose path starts with one of `prefixes`, handed to `app` unchanged."""

    def __init__(self, app, prefixes=PREFIXES):
        self.app, self.prefixes = app, tuple(prefixes)
        self.path = prefixes[0]   # st.App checks user routes' paths against its reserved ones

    def matches(self, scope):
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name, /, **params):
        from starlette.routing import NoMatchFound

        raise NoMatchFound(name, params)

    async def handle(self, scope, receive, send):
        started = time.perf_counter()

        async def timed(message):
            # Server-Timing (a standard header browsers' tools show): the server's own time to the
            # answer's start, without the network; scripts/bench_api.py reports it.
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)

        if scope["method"] in WITH_BODY:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, timed)
                return
            receive = self._counted(receive)
        await self.app(scope, receive, timed)

    @staticmethod
    def _refusal(scope):
        length = _header(scope, b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            return _refusal(400, "Content-Length is not a number")
        if declared is not None and declared > MAX_BODY:
            return _refusal(413, f"the body is {declared:,} bytes; at most {MAX_BODY:,} are taken")
        has_body = (declared or 0) > 0 or _header(scope, b"transfer-encoding") is not None
        if has_body and not _json_type(_header(scope, b"content-type")):
            return _refusal(415, "send the body as JSON (Content-Type: application/json)")
        return None

    @staticmethod
    def _counted(receive):
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    # HTTPException: FastAPI passes it on from its body reading (anything else becomes a 400)
                    raise HTTPException(413, f"the body is over {MAX_BODY:,} bytes, the most taken")
            return message
        return counted


def no_delay() -> int:
    """TCP_NODELAY on this process's listening TCP sockets (Linux hands it on to the connections they
    accept) and on its open ones; returns how many. Why: Streamlit binds its server socket itself
    (socket.socket(family) with protocol 0), and asyncio sets TCP_NODELAY only on sockets whose
    protocol is IPPROTO_TCP, so every answer on a kept-alive connection held its body back until the
    client's delayed ACK of the headers: 44 ms for each request after a connection's first
    (BENCHMARKS.md, "The HTTP API"). Through /proc/self/fd because the server keeps its socket to itself."""
    import os
    import socket

    changed = 0
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:   # not Linux: nothing to do
        return 0
    for fd in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(fd)) as s:
                if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    changed += 1
        except OSError:   # closed meanwhile, or not a TCP socket
            continue
    return changed


class PathGuard:
    """ASGI middleware (webapp.py's, which run before Streamlit's): an API path that Streamlit's path
    check would refuse (a traversal, a null byte: its PathSecurityMiddleware answers a plain-text
    "Bad Request") is refused here first, as the API refuses everything, in one JSON line. The decision
    stays Streamlit's (streamlit.path_security), so the two cannot disagree on which paths are unsafe."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(PREFIXES):
            from streamlit.path_security import is_unsafe_path_pattern

            if is_unsafe_path_pattern(scope["path"].lstrip("/")):
                await _refusal(400, "the address holds a path pattern that is refused ('..', a drive, "
                                    "a null byte)")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class NoDelay:
    """ASGI middleware (webapp.py's): no_delay() once, at the first request, when the server's socket
    is listening (the pages and the API both answer on it)."""

    def __init__(self, app):
        self.app, self.done = app, False

    async def __call__(self, scope, receive, send):
        if not self.done and scope["type"] in ("http", "websocket"):
            self.done = True
            no_delay()
        await self.app(scope, receive, send)


_app: FastAPI | None = None


def routes() -> list:
    """webapp.py's st.App(routes=...): the API on the web app's own server and port."""
    global _app
    if _app is None:
        _app = create_app()
    return [ApiRoute(_app)]
