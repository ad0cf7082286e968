"""Failures of the store itself, as opposed to the caller's input: each is one line a user or an
operator can act on. Executors treat them as transient (back off and try again; a job's attempts
are never spent on them); pages show one line instead of a traceback.
"""

from __future__ import annotations

from ..errors import T2IError


class StoreError(T2IError):
    """The store cannot do its work now: a full disk, a read-only or damaged database, ..."""


class StoreBusy(StoreError):
    """The database stayed locked for too long."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached (a restart, a failover, the network); calls reconnect."""


class StoreGone(StoreError):
    """The SQLite file this store opened is no longer the one at its path (deleted or replaced):
    whatever is written now would be lost, so the store refuses every call."""


class StoreMissing(StoreError):
    """No database at that path, and the caller did not ask for one to be created."""


class NotOurs(StoreError):
    """The file is not a t2i job database (another application's, or not a database at all)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of a driver's message (psycopg's run over several lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]
