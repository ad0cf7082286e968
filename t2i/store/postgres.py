"""PostgreSQL backend (psycopg 3): several hosts share one queue.

Claims lock the chosen row with FOR UPDATE SKIP LOCKED, so concurrent executors never wait on each
other nor take the same job. Submits and requeues NOTIFY, so idle executors wake at once.

The connection outlives the server's: a restart, a failover or an idle timeout closes it, and the
next call reopens it with backoff (for up to RECONNECT_SECONDS, then StoreUnavailable). A call is sent
again on a new connection only when it cannot have been applied: reads, and the check that precedes
each write or transaction (an empty query, or the BEGIN); or when applying it twice is harmless
(heartbeats, wake-ups), which then needs no check first. A write whose connection dies while it is in
flight is reported, not repeated: it may have been applied.

Round trips are what a queue spends its time on (scripts/bench_queue.py, BENCHMARKS.md): complete()
is one statement of data-modifying CTEs (sql.py), sent after the check like any write. Tried and
left out: transactions in pipeline mode (complete() in 2 round trips instead of 5 was no faster on the
2-core machine: the server still woke once per statement, 6.9 times per complete() against 4.9), and
prepare_threshold=0 (psycopg prepares a statement on its fifth use anyway: the executors' statements
are prepared within the first seconds).

Behind PgBouncer in transaction mode (docs/SCALING.md): statements are never prepared server-side
(prepare_threshold=None: the next transaction may run on a server connection that never saw the
PREPARE, and Debian's PgBouncer 1.18 cannot track them), and the store keeps no session state
(advisory locks are the transaction's). LISTEN needs a session of its own, so it goes direct to
PostgreSQL ($T2I_LISTEN_DB, default the store's URL), once per host (t2i/store/waker.py).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from . import waker as host_waker
from .errors import StoreError, StoreUnavailable, first_line
from .schema import AFTER, POSTGRES
from .sql import SQLStore

CHANNEL = "t2i_jobs"
CONNECT_TIMEOUT = 5        # seconds for one connection attempt (an unreachable host)
RECONNECT_SECONDS = 5.0    # how long one call keeps reopening a lost connection before giving up
# A server that answers but cannot take a connection now: starting up, shutting down or recovering
# (a restart), out of disk ("could not write init file") or of connection slots. libpq reports these
# at connect time as text only (no SQLSTATE), so they are told by their words. Opening a store waits
# for such a server up to STARTUP_WAIT seconds: an executor restarted during a fault would otherwise exit.
BUSY_SERVER = ("the database system is starting up", "the database system is shutting down",
               "the database system is in recovery mode", "could not write init file",
               "sorry, too many clients already", "No space left on device")
STARTUP_WAIT = 60.0
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
    WRITABLE_CTES = True  # complete() in one statement (sql.py)

    def __init__(self, url: str, *, create: bool = True):
        # create: the database itself must exist (created by its administrator); its tables are made here.
        self.url = url
        self._lock = threading.RLock()  # one connection, shared by an executor's threads or a web app's sessions
        self._depth = 0
        self._waker: host_waker.HostWaker | None = None
        self._wakes = 0  # jobs this transaction has for idle executors: one NOTIFY at its commit
        self.conn = self._first_connection()
        self._migrate()

    # --- connections ------------------------------------------------------------------------
    def _first_connection(self) -> psycopg.Connection:
        """One try (a wrong password, port or database name is one line at once), except while the
        server answers that it is busy (BUSY_SERVER): then again, with backoff, for STARTUP_WAIT."""
        deadline, delay = time.monotonic() + STARTUP_WAIT, 0.1
        while True:
            try:
                return self._connect()
            except StoreUnavailable as e:
                if not any(words in str(e) for words in BUSY_SERVER) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _connect(self) -> psycopg.Connection:
        try:
            return _connect(self.url)
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
                self.conn.execute(script)
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
            if self._depth:  # inside a transaction: a lost connection took the transaction with it
                return self._attempt(lambda c: c.execute(sql, params), replay=False)
            if sql.lstrip()[:6].upper() != "SELECT":
                self._attempt(lambda c: c.execute(""), replay=True)  # a dead connection is found before the write
            return self._attempt(lambda c: c.execute(sql, params), replay=sql.lstrip()[:6].upper() == "SELECT")

    @contextmanager
    def transaction(self):
        with self._lock:
            if self._depth:  # nested: part of the outer transaction
                yield
                return
            tx = self._attempt(_begin, replay=True)  # BEGIN finds (and replaces) a dead connection
            self._depth, self._wakes = 1, 0
            try:
                yield
                if self._wakes:  # delivered at the commit, so nobody wakes before the jobs are there
                    self._attempt(lambda c: c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(self._wakes))),
                                  replay=False)
            except BaseException as e:
                try:
                    tx.__exit__(type(e), e, e.__traceback__)
                except psycopg.Error:
                    pass  # the connection is gone, and the transaction with it; the first error is the one to report
                raise
            else:
                try:
                    tx.__exit__(None, None, None)
                except psycopg.Error as e:
                    fault = self._fault(e)
                    if fault is None:
                        raise
                    raise fault from e
            finally:
                self._depth = 0

    def _execute_idempotent(self, sql: str, params: tuple = ()):
        """A write that may be applied twice (a heartbeat): sent again on a new connection, so it needs
        no check before it (one round trip, not two)."""
        with self._lock:
            if self._depth:
                return self._execute(sql, params)
            sql = self._sql(sql)
            return self._attempt(lambda c: c.execute(sql, params), replay=True)

    def _notify(self, count: int = 1) -> None:
        if count < 1:
            return
        with self._lock:
            if self._depth:
                self._wakes += count
                return
            # a repeated wake-up is harmless: resent after a lost connection
            self._attempt(lambda c: c.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(count))), replay=True)

    def listen(self) -> None:
        if self._waker is None:
            listen_url = os.environ.get("T2I_LISTEN_DB") or self.url
            self._waker = host_waker.HostWaker(listen_url, CHANNEL, _connect)
        self._waker.relay_if_none()  # a flock attempt: cheap enough before every claim

    def wakeups_reliable(self) -> bool:
        self.listen()
        return self._waker.listening()

    def wait_for_work(self, timeout: float) -> None:
        """Block until the host's relay passes on a wake-up meant for this executor, or timeout
        seconds pass (t2i/store/waker.py)."""
        self.listen()
        self._waker.wait(timeout, self._claim_started)

    def close(self) -> None:
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        self.conn.close()


def _connect(url: str) -> psycopg.Connection:
    """A connection that works directly and through PgBouncer in transaction mode (see the top)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, prepare_threshold=None)


def _begin(conn: psycopg.Connection):
    tx = conn.transaction()
    tx.__enter__()
    return tx


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
