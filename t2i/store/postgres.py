"""PostgreSQL backend (psycopg 3): several hosts share one queue.

Claims lock the chosen row with FOR UPDATE SKIP LOCKED, so concurrent executors never wait on each
other nor take the same job. Submits and requeues NOTIFY, so idle executors wake at once.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager

import psycopg

from .schema import POSTGRES
from .sql import SQLStore

CHANNEL = "t2i_jobs"


class PostgresStore(SQLStore):
    NOW = "extract(epoch from clock_timestamp())::double precision"
    CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    LIKE = "ILIKE"

    def __init__(self, url: str):
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        self._lock = threading.RLock()
        self._listener = None
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction():
            # One migrator at a time when several hosts start together.
            self.conn.execute("SELECT pg_advisory_xact_lock(7423001)")
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self.conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            for script in POSTGRES[version:]:
                self.conn.execute(script)
            if row is None:
                self.conn.execute("INSERT INTO schema_version VALUES (%s)", (len(POSTGRES),))
            else:
                self.conn.execute("UPDATE schema_version SET version = %s", (len(POSTGRES),))

    def _sql(self, sql: str) -> str:
        return super()._sql(sql).replace("?", "%s")

    def _execute(self, sql: str, params: tuple = ()):
        with self._lock:
            return self.conn.execute(self._sql(sql), params)

    @contextmanager
    def transaction(self):
        with self._lock, self.conn.transaction():
            yield

    def _notify(self) -> None:
        self.conn.execute(f"NOTIFY {CHANNEL}")

    def listen(self) -> None:
        if self._listener is None:
            self._listener = psycopg.connect(self.url, autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may be available (a NOTIFY) or timeout seconds pass."""
        self.listen()
        for _ in self._listener.notifies(timeout=timeout, stop_after=1):
            break

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.conn.close()


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
