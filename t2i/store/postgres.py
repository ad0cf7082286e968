"""PostgreSQL backend (psycopg 3): several hosts share one queue.

Claims lock the chosen row with FOR UPDATE SKIP LOCKED, so concurrent executors never wait on each
other nor take the same job. Submits and requeues NOTIFY, so idle executors wake at once.

The connection outlives the server's: a restart, a failover or an idle timeout closes it, and the
next call reopens it with backoff (for up to RECONNECT_SECONDS, then StoreUnavailable). A call is sent
again on a new connection only when it cannot have been applied: reads, the check that precedes each
write (an empty query), a transaction's BEGIN with its first statement (nothing is committed before
COMMIT), and heartbeats (extending a lease twice is harmless). A write whose connection dies while it
is in flight is reported, not repeated: it may have been applied.

Round trips are what a queue on PostgreSQL spends its time on (scripts/bench_queue.py), so a
transaction runs in pipeline mode: BEGIN goes out with its first statement, and the statements whose
results nobody reads before the end go out with the COMMIT (complete(): 2 round trips, not 5). A
statement's error then surfaces at the next read or at the COMMIT; the transaction is rolled back
all the same.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from .errors import StoreError, StoreUnavailable, first_line
from .schema import AFTER, POSTGRES
from .sql import SQLStore

CHANNEL = "t2i_jobs"
CONNECT_TIMEOUT = 5        # seconds for one connection attempt (an unreachable host)
RECONNECT_SECONDS = 5.0    # how long one call keeps reopening a lost connection before giving up
# Server-side failures that are the store's, not a bug (SQLSTATE class or code): one line each.
FAULTS = {"53": "the database server is out of resources (disk or memory)",
          "25006": "the database is read-only (a standby?)",
          "57014": "the statement was cancelled"}


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the PostgreSQL database"
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"


class PostgresStore(SQLStore):
    NOW = "extract(epoch from clock_timestamp())::double precision"
    CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    LIMITS_LOCK = "SELECT pg_advisory_xact_lock(7423002)"  # one quota check at a time, across hosts
    LIKE = "ILIKE"

    def __init__(self, url: str, *, create: bool = True):
        # create: the database itself must exist (created by its administrator); its tables are made here.
        self.url = url
        self._lock = threading.RLock()  # one connection, shared by an executor's threads or a web app's sessions
        self._depth = 0
        self._pipe: psycopg.Pipeline | None = None  # the open transaction's pipeline, once it began
        self._pipe_exit = None                      # and the context that leaves it
        self._pending = False                       # statements sent in it whose results were not read
        self._listener = None
        self.conn = self._connect()  # one try: a wrong password or port is one line at once
        self._migrate()

    # --- connections ------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"cannot connect to the job database {safe_url(self.url)}: {_reason(e)}") from None
        except psycopg.Error as e:  # a malformed URL (an unknown option, a port that is not a number)
            raise StoreError(f"--db {safe_url(self.url)}: {first_line(e)}") from None

    def _fault(self, e: psycopg.Error) -> StoreError | None:
        """The store's own failure as one line, or None for a bug (left as it is)."""
        if self.conn.broken or self.conn.closed:
            return StoreUnavailable(f"lost the connection to the job database {safe_url(self.url)}: {_reason(e)}")
        code = getattr(e, "sqlstate", None) or ""
        reason = FAULTS.get(code) or FAULTS.get(code[:2])
        return StoreError(f"the job database {safe_url(self.url)} cannot be used: {reason}") if reason else None

    def _attempt(self, fn, *, replay: bool):
        """fn(conn) on a live connection: a lost one is reopened with backoff, and fn is run again
        only when `replay` (it cannot have been applied). Caller holds self._lock."""
        deadline = time.monotonic() + RECONNECT_SECONDS
        delay = 0.05
        while True:
            if self.conn.closed or self.conn.broken:
                try:
                    self.conn = self._connect()
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 1.0)
                    continue
            try:
                return fn(self.conn)
            except psycopg.Error as e:
                fault = self._fault(e)
                if fault is None:
                    raise
                if not (replay and isinstance(fault, StoreUnavailable)) or time.monotonic() > deadline:
                    raise fault from e

    def _migrate(self) -> None:
        with self.transaction():
            # One migrator at a time when several hosts start together.
            self._execute("SELECT pg_advisory_xact_lock(7423001)")
            self._execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._one("SELECT version FROM schema_version")
            version = row[0] if row else 0
            if version > len(POSTGRES):
                raise StoreError(f"{safe_url(self.url)} was made by a newer t2i (schema version {version}; this "
                                 f"one knows {len(POSTGRES)}): upgrade t2i")
            for number, script in enumerate(POSTGRES[version:], version + 1):
                for statement in filter(str.strip, script.split(";")):  # a pipeline takes one at a time
                    self._execute(statement)
                if number in AFTER:
                    getattr(self, AFTER[number])()
            if row is None:
                self._execute("INSERT INTO schema_version VALUES (?)", (len(POSTGRES),))
            else:
                self._execute("UPDATE schema_version SET version = ?", (len(POSTGRES),))

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    def _execute(self, sql: str, params: tuple = ()):
        sql = self._sql(sql)
        with self._lock:
            if self._depth:
                if self._pipe is None:  # the transaction's first statement: BEGIN goes out with it
                    return self._attempt(lambda c: self._begin(c, sql, params), replay=True)
                self._pending = True  # sent with the next read, or with the COMMIT
                return self._attempt(lambda c: c.execute(sql, params), replay=False)
            if sql.lstrip()[:6].upper() != "SELECT":
                self._attempt(lambda c: c.execute(""), replay=True)  # a dead connection is found before the write
            return self._attempt(lambda c: c.execute(sql, params), replay=sql.lstrip()[:6].upper() == "SELECT")

    def _execute_idempotent(self, sql: str, params: tuple = ()):
        """A write that may be applied twice (a heartbeat): sent again on a new connection, so it needs
        no check before it (one round trip, not two)."""
        with self._lock:
            if self._depth:
                return self._execute(sql, params)
            sql = self._sql(sql)
            return self._attempt(lambda c: c.execute(sql, params), replay=True)

    def _rowcount(self, sql, params=()) -> int:
        cursor = self._execute(sql, params)
        with self._lock:
            if self._pipe is not None and self._pending:  # the count comes with the statement's result
                self._pipe.sync()
                self._pending = False
        return cursor.rowcount

    def _begin(self, conn: psycopg.Connection, sql: str, params: tuple):
        """Pipeline mode, BEGIN and the transaction's first statement, in one round trip."""
        context = conn.pipeline()
        pipe = context.__enter__()
        try:
            conn.execute("BEGIN")
            cursor = conn.execute(sql, params)
            pipe.sync()
        except BaseException as e:
            _end(conn, context, e)
            raise
        self._pipe, self._pipe_exit, self._pending = pipe, context, False
        return cursor

    @contextmanager
    def transaction(self):
        with self._lock:
            if self._depth:  # nested: part of the outer transaction
                yield
                return
            self._depth = 1
            try:
                yield
                if self._pipe is not None:
                    self.conn.execute("COMMIT")
                    context, self._pipe = self._pipe_exit, None
                    context.__exit__(None, None, None)  # sends what is pending; any statement's error is raised here
            except BaseException as e:
                if self._pipe is not None:
                    self._pipe = None
                    _end(self.conn, self._pipe_exit, e)
                fault = self._fault(e) if isinstance(e, psycopg.Error) else None
                if fault is None:
                    raise
                raise fault from e
            finally:
                self._depth, self._pipe, self._pipe_exit, self._pending = 0, None, None, False

    def _notify(self) -> None:
        # A repeated wake-up is harmless; in a transaction it is sent on commit.
        self._execute_idempotent(f"NOTIFY {CHANNEL}")

    def listen(self) -> None:
        if self._listener is None or self._listener.closed or self._listener.broken:
            self._listener = self._connect()
            try:
                self._listener.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as e:
                raise StoreUnavailable(f"cannot listen on the job database {safe_url(self.url)}: {_reason(e)}") from e

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may be available (a NOTIFY) or timeout seconds pass."""
        self.listen()
        try:
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            # The listening connection was lost (a restart, a failover): listen again on the next call.
            # A wake-up may have been missed meanwhile, so return now and let the caller look for work.
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.conn.close()


def _end(conn: psycopg.Connection, context, error: BaseException) -> None:
    """Leave pipeline mode (`context`: what conn.pipeline() returned) after `error` and roll the
    transaction back, if the connection still lives."""
    try:
        context.__exit__(type(error), error, error.__traceback__)
        if not (conn.closed or conn.broken):
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the connection is gone, and the transaction with it; the first error is the one to report


def _reason(e: psycopg.Error) -> str:
    """psycopg's connection message without its preamble: "password authentication failed for user
    "x"", "Connection refused", "terminating connection due to administrator command"."""
    line = first_line(e)
    for sep in ("FATAL:", "failed:"):
        if sep in line:
            line = line.rsplit(sep, 1)[1].strip()
    return line


def create_database(admin_url: str, name: str) -> str:
    """Create a database (tests, benchmarks); returns its URL."""
    from urllib.parse import urlsplit

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(admin_url)._replace(path=f"/{name}").geturl()


def drop_database(admin_url: str, name: str, attempts: int = 50) -> None:
    """Drop a database whose clients are closing. A plain DROP first: WITH (FORCE) refuses when an
    autovacuum worker happens to be in it, while a plain DROP waits that worker out."""
    import time

    with psycopg.connect(admin_url, autocommit=True) as admin:
        for _ in range(attempts):
            try:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)  # our own sessions are still closing
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_database(admin_url: str, prefix: str):
    """A database named `prefix` + a random suffix for the block's duration (tests, benchmarks);
    yields its URL and drops it afterwards, whatever happened."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    try:
        yield create_database(admin_url, name)
    finally:
        drop_database(admin_url, name)
