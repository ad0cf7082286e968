"""The job store: one JobStore contract (base.py), SQLite and PostgreSQL behind one URL.

    open_store("sqlite:///t2i.db")              the default (one host)
    open_store("postgresql://user@host/db")     several hosts
    $T2I_BLOBS=/shared/t2i-blobs                frames, results and uploads as files (t2i/store/sql_blobs.py)
    $T2I_LISTEN_DB=postgresql://...             LISTEN direct when T2I_DB goes through PgBouncer (store/waker.py)

open_store(url, create=False) refuses an SQLite path where no database exists yet (the shell
commands, unless --create); the service start (executors, web app) creates it.
"""

from __future__ import annotations

import os

from .base import FINISHED, MAX_ID, PRIORITIES, STATUSES, Beat, GroupItem, Job, JobStore, Lease, Result
from .errors import NotOurs, StoreBusy, StoreError, StoreGone, StoreMissing, StoreUnavailable

DEFAULT_URL = "sqlite:///t2i.db"


def default_url() -> str:
    """$T2I_DB, else t2i.db in the working directory."""
    return os.environ.get("T2I_DB") or DEFAULT_URL


def open_store(url: str | None = None, *, create: bool = True) -> JobStore:
    """The store at `url`. create=False: an SQLite file that does not exist is refused (StoreMissing)
    instead of created. Every failure to open is a StoreError with a one-line message."""
    url = url or default_url()
    from .sql_blobs import blob_store_from_env

    blobs = blob_store_from_env()  # $T2I_BLOBS: frames, results and uploads as files; checked before connecting
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        store = SQLiteStore(url[len("sqlite:///"):], create=create)
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        store = PostgresStore(url, create=create)
    else:
        store = None
    if store is not None:
        store.blobs = blobs
        return store
    shown = url if "@" not in url else url.split("://")[0] + "://..."  # never echo a password
    raise StoreError(f"--db {shown!r}: use sqlite:///path/to/t2i.db or postgresql://user:password@host/dbname")


__all__ = ["Beat", "FINISHED", "Job", "JobStore", "Lease", "MAX_ID", "NotOurs", "PRIORITIES", "Result", "STATUSES",
           "StoreBusy", "StoreError", "StoreGone", "StoreMissing", "StoreUnavailable", "default_url", "open_store"]
