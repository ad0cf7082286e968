"""SQLite backend: one file, WAL, for one host (never put it on a network filesystem).

Each unit of work (a statement, or a transaction) runs on a connection of its own from a small pool,
so threads (the web app's sessions, an executor's heartbeat) never share one connection's lock: in
WAL mode a reader does not wait for a writer, and one held write lock freezes no page. Writers take
the lock up front (BEGIN IMMEDIATE) and wait for it (busy_timeout); a lock still held after that is
retried with backoff, so "database is locked" never reaches a user.

Opening reads before it writes: a file of another application is refused before its journal mode is
touched, and the schema version is read before a write lock is taken (nothing to migrate: no lock).
The opened file's identity (st_dev, st_ino) is kept; once the file at the path is another one (or
none), every call raises StoreGone rather than writing into a file nobody will read again.
"""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from .errors import NotOurs, StoreBusy, StoreError, StoreGone, StoreMissing
from .schema import AFTER, SQLITE
from .sql import SQLStore

BUSY_TIMEOUT_MS = 10_000
LOCKED_RETRY_SECONDS = 120.0
IDLE_CONNECTIONS = 8  # kept open for reuse; a burst of threads opens more and closes them after use

# SQLite's primary result codes that are the store's failures, not a bug: one line each.
FAULTS = {
    "SQLITE_FULL": "the disk holding it is full",
    "SQLITE_READONLY": "it is read-only",
    "SQLITE_IOERR": "it could not be read or written (I/O error)",
    "SQLITE_CANTOPEN": "it cannot be opened",
    "SQLITE_PERM": "it may not be written (permission denied)",
    "SQLITE_CORRUPT": "it is damaged",
    "SQLITE_NOMEM": "SQLite ran out of memory",
}


def _code(e: sqlite3.Error) -> str:
    """SQLITE_READONLY for SQLITE_READONLY_DBMOVED and the like."""
    name = getattr(e, "sqlite_errorname", None) or ""
    return "_".join(name.split("_")[:2])


def _locked(e: Exception) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def _check_path(path: str, create: bool) -> None:
    """Refuse what cannot be a job database before SQLite opens (and perhaps creates) anything."""
    if not path or path == ":memory:":
        raise StoreError("--db sqlite:///PATH needs a file path (executors and pages share one file)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not create:
            raise StoreMissing(f"no job database at {path}") from None
        return
    except OSError as e:
        raise StoreError(f"cannot use {path} as the job database: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is a directory; --db needs a database file, e.g. sqlite:///{path.rstrip('/')}/t2i.db")
    if not stat.S_ISREG(st.st_mode):
        raise StoreError(f"{path} is not a regular file; --db needs a database file")


class SQLiteStore(SQLStore):
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = str(path)
        _check_path(self.path, create)
        if create:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the folder of {self.path}: {e.strerror}") from None
        mode = "rwc" if create else "rw"
        self._uri = f"file:{quote(os.path.abspath(self.path))}?mode={mode}"
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._tx = threading.local()  # the connection of this thread's open transaction
        self._closed = False
        self._identity = None
        conn = self._run(self._connect)
        try:
            self._identity = self._file_identity()
            self._run(lambda: self._inspect(conn))
        except BaseException:
            conn.close()
            raise
        self._idle.append(conn)
        self._migrate()

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: single statements commit at once; transaction() groups several.
        conn = sqlite3.connect(self._uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        for pragma in ("synchronous = NORMAL", f"busy_timeout = {BUSY_TIMEOUT_MS}", "foreign_keys = ON"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _file_identity(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreGone(f"the job database {self.path} was deleted while in use; restart to open a new "
                            "one (whatever is written meanwhile would be lost)") from None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        if self._identity is not None and self._file_identity() != self._identity:
            raise StoreGone(f"the job database {self.path} was replaced by another file while in use; restart "
                            "to open the file now at that path")

    @contextmanager
    def _connection(self):
        """A connection for one unit of work, after checking the file is still the one opened."""
        if self._closed:
            raise StoreError("the job store was closed")
        self._check_file()
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._run(self._connect)
        keep = True
        try:
            yield conn
        except StoreError as error:
            # A connection opened while the file could not be written stays read-only (SQLite falls back
            # to a read-only descriptor): after a failure, the next unit of work opens a fresh one.
            keep = isinstance(error, StoreBusy)
            raise
        finally:
            with self._pool_lock:
                if keep and not self._closed and len(self._idle) < IDLE_CONNECTIONS and not conn.in_transaction:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    # --- opening ----------------------------------------------------------------------------
    def _inspect(self, conn: sqlite3.Connection) -> None:
        """Reads only: is this our database (or an empty file)? Then WAL, which persists in the file."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        foreign = tables - {"sqlite_sequence"}
        if (version == 0 and foreign) or (version and "jobs" not in tables):
            shown = ", ".join(sorted(foreign)[:5])
            raise NotOurs(f"{self.path} is not a t2i job database (it holds other tables: {shown}); "
                          "point --db at another file")
        if version > len(SQLITE):
            raise NotOurs(f"{self.path} was made by a newer t2i (schema version {version}; this one knows "
                          f"{len(SQLITE)}): upgrade t2i")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")

    def _migrate(self) -> None:
        latest = len(SQLITE)
        if self._one("PRAGMA user_version")[0] == latest:
            return  # the common case: no write lock taken, so a busy writer elsewhere does not block opening
        with self.transaction():
            version = self._one("PRAGMA user_version")[0]  # another process may have migrated meanwhile
            for number, script in enumerate(SQLITE[version:], version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._execute(statement)
                if number in AFTER:
                    getattr(self, AFTER[number])()
                self._execute(f"PRAGMA user_version = {number}")

    # --- statements and transactions ----------------------------------------------------------
    def _fault(self, e: sqlite3.Error) -> StoreError | None:
        """The store's own failure as one line, or None for a bug (left as it is)."""
        if _locked(e):
            return StoreBusy("the job database is busy; try again in a moment")
        if getattr(e, "sqlite_errorname", "") == "SQLITE_READONLY_DBMOVED":
            return StoreGone(f"the job database {self.path} was moved or deleted while in use; restart to open "
                             "the file now at that path")
        if _code(e) == "SQLITE_NOTADB":
            return NotOurs(f"{self.path} is not a t2i job database (not an SQLite file at all); point --db at "
                           "another file")
        reason = FAULTS.get(_code(e))
        return StoreError(f"the job database {self.path} cannot be used: {reason}") if reason else None

    def _run(self, fn, *, retry_locked: bool = True):
        """fn() with a lock still held after busy_timeout retried with backoff, and SQLite's failures
        turned into StoreError (one line)."""
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.Error as e:
                if retry_locked and _locked(e) and time.monotonic() < deadline:
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                fault = self._fault(e)
                if fault is None:
                    raise
                raise fault from e

    def _execute(self, sql: str, params: tuple = ()):
        sql = self._sql(sql)
        conn = getattr(self._tx, "conn", None)
        if conn is not None:  # part of this thread's transaction: its lock is held, nothing to wait for
            return self._run(lambda: _Fetched(conn.execute(sql, params)), retry_locked=False)
        with self._connection() as conn:
            return self._run(lambda: _Fetched(conn.execute(sql, params)))

    @contextmanager
    def transaction(self):
        if getattr(self._tx, "conn", None) is not None:  # nested: part of the outer transaction
            yield
            return
        with self._connection() as conn:
            self._run(lambda: conn.execute("BEGIN IMMEDIATE"))
            self._tx.conn = conn
            try:
                yield
                self._run(lambda: conn.execute("COMMIT"), retry_locked=False)
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite rolls back on its own when it cannot; the first error is the one to report
                raise
            finally:
                self._tx.conn = None

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Fetched:
    """A cursor's rows read at once, so that a retried statement is never half-consumed and a
    failure shows up inside the store, where it is turned into one line."""

    def __init__(self, cursor):
        # With RETURNING, rowcount is only known (and the statement only commits) once rows are read.
        self._rows = cursor.fetchall() if cursor.description else []
        self.rowcount = cursor.rowcount

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return self._rows
