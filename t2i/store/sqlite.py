"""SQLite backend: one file, WAL, for one host (never put it on a network filesystem).

Writers take the lock up front (BEGIN IMMEDIATE) and wait for it (busy_timeout); a lock still held
after that is retried with backoff, so "database is locked" never reaches a user.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import T2IError
from .schema import SQLITE
from .sql import SQLStore

BUSY_TIMEOUT_MS = 10_000
LOCKED_RETRY_SECONDS = 120.0


class StoreBusy(T2IError):
    """The database stayed locked for too long."""


def _locked(e: Exception) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


class SQLiteStore(SQLStore):
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: single statements commit at once; transaction() groups several.
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                    check_same_thread=False)
        self._lock = threading.RLock()  # one connection, possibly shared by an executor's threads
        self._depth = 0
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", f"busy_timeout = {BUSY_TIMEOUT_MS}",
                       "foreign_keys = ON"):
            self._retry(lambda p=pragma: self.conn.execute(f"PRAGMA {p}"))
        self._migrate()

    def _retry(self, fn):
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _locked(e) or self._depth or time.monotonic() > deadline:
                    if _locked(e):
                        raise StoreBusy("the job database is busy; try again in a moment") from e
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    def _migrate(self) -> None:
        with self.transaction():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(SQLITE[version:], version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")

    def _execute(self, sql: str, params: tuple = ()):
        with self._lock:
            sql = self._sql(sql)
            if self._depth:
                return self.conn.execute(sql, params)
            return self._retry(lambda: _Fetched(self.conn.execute(sql, params)))

    @contextmanager
    def transaction(self):
        with self._lock:
            if self._depth:  # nested: part of the outer transaction
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._retry(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            self._depth = 1
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def close(self) -> None:
        self.conn.close()


class _Fetched:
    """A cursor's rows read at once, so that a retried statement is never half-consumed."""

    def __init__(self, cursor):
        # With RETURNING, rowcount is only known (and the statement only commits) once rows are read.
        self._rows = cursor.fetchall() if cursor.description else []
        self.rowcount = cursor.rowcount

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return self._rows
