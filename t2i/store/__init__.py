"""The job store: one JobStore contract (base.py), SQLite and PostgreSQL behind one URL.

    open_store("sqlite:///t2i.db")              the default, created on first use (one host)
    open_store("postgresql://user@host/db")     several hosts
"""

from __future__ import annotations

import os

from .base import FINISHED, STATUSES, Beat, Job, JobStore, Lease, Result

DEFAULT_URL = "sqlite:///t2i.db"


def default_url() -> str:
    """$T2I_DB, else t2i.db in the working directory."""
    return os.environ.get("T2I_DB") or DEFAULT_URL


def open_store(url: str | None = None) -> JobStore:
    url = url or default_url()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"--db {url!r}: use sqlite:///path/to/t2i.db or postgresql://user:password@host/dbname")


__all__ = ["Beat", "FINISHED", "Job", "JobStore", "Lease", "Result", "STATUSES", "default_url", "open_store"]
