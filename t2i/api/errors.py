"""Every failure of the API as one JSON line with the status code that says what went wrong, never a
traceback: `{"error": "<one line>", "status": 422}`.

    ApiError(status, message)     raised by the routes (and by auth) for a refusal of their own
    install(app)                  maps everything else: the service's one-line errors, FastAPI's
                                  validation, Starlette's HTTP errors, the store's failures, and
                                  anything unexpected (500 "internal error", logged whole)

Another router (the AUTOMATIC1111 endpoints) gets the same answers by living in the same app.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import PresetError, SpecError, T2IError
from ..service.queue import QueueLimit
from ..service.ranking import VoteLimit
from ..service.visitor_text import for_visitor
from ..store import StoreError, StoreGone, StoreUnavailable

log = logging.getLogger("t2i.api")
MAX_LINE = 300   # a validation message quotes the input: cut it, the client sent it and knows it


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


def answer(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(for_visitor(message)), "status": status}, status, headers=headers)


def _validation_line(error: RequestValidationError) -> str:
    """FastAPI's list of problems as one line naming each field: "body.width: Input should be a valid integer"."""
    parts = []
    for problem in error.errors()[:3]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    more = len(error.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


# The service's own refusals and the status each means.
STATUS_OF = ((QueueLimit, 429), (VoteLimit, 429), (PresetError, 422))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError):
        return answer(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError):
        return answer(422, _validation_line(e))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        return answer(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(T2IError)
    async def refused(_: Request, e: T2IError):
        return answer(next((s for kind, s in STATUS_OF if isinstance(e, kind)), 400), str(e))

    @app.exception_handler(SpecError)
    async def bad_field(_: Request, e: SpecError):
        return answer(422, str(e))

    @app.exception_handler(StoreError)
    async def store_failed(_: Request, e: StoreError):
        log.warning("the job store failed: %s", e)
        if isinstance(e, StoreGone):
            from .service import forget_store

            forget_store()
        line = ("the database is not reachable, retry in a few seconds" if isinstance(e, StoreUnavailable)
                else "the service cannot take jobs right now; please try again later")
        return answer(503, line, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return answer(500, f"internal error ({type(e).__name__})")
