"""After the chaos: drain the queue, then check the store's invariants.

    every job done, failed with one line, or cancelled (nothing queued or running once drained)
    exactly once: a done job has its one result, a failed or cancelled one none; no job claimed more
        times than its max_attempts; no job ended twice by the executors (their logs name each end
        written) nor ended otherwise than its status says
    no result without its job
    every job a submit acknowledged is in the store

Why SQL here and not through the JobStore: the contract answers per job (result(job_id)), and "a
result whose job is gone" is exactly what it cannot be asked. These are read-only monitoring queries
over the whole tables, as scripts/simulate_fleet.py reads PostgreSQL's catalog.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

from t2i.store import StoreError

JOBS = "SELECT id, status, error, attempts, max_attempts FROM jobs"
RESULTS = "SELECT job_id FROM results"
ORPHANS = "SELECT r.job_id FROM results r LEFT JOIN jobs j ON j.id = r.job_id WHERE j.id IS NULL"


def drain(store, deadline_s: float) -> float | None:
    """Seconds until nothing is queued or running (the executors keep working), or None at the deadline."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            counts = store.counts()
            if counts["queued"] == 0 and counts["running"] == 0:
                return time.monotonic() - start
        except StoreError:
            pass  # a fault's after-effect: look again
        time.sleep(0.5)  # polling the queue's state, not synchronising
    return None


def rows(url: str) -> tuple[list[tuple], list[int], list[int]]:
    """(jobs, result job ids, orphan result ids), read in one read-only transaction."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(f"file:{url[len('sqlite:///'):]}?mode=ro", uri=True, timeout=60)
        try:
            return (conn.execute(JOBS).fetchall(), [r[0] for r in conn.execute(RESULTS)],
                    [r[0] for r in conn.execute(ORPHANS)])
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return (conn.execute(JOBS).fetchall(), [r[0] for r in conn.execute(RESULTS)],
                [r[0] for r in conn.execute(ORPHANS)])


def _some(ids) -> str:
    ids = sorted(ids)
    return f"{len(ids)} (e.g. {ids[:5]})"


def invariants(url: str, acknowledged: list[int], logged: dict[int, list[str]] | None = None) -> tuple[Counter, list[str]]:
    """(jobs per status, problems). `logged`: job id -> the ends the executors logged writing."""
    jobs, results, orphans = rows(url)
    statuses = Counter(status for _, status, *_ in jobs)
    per_job = Counter(results)
    problems = []
    unfinished = [i for i, status, *_ in jobs if status not in ("done", "failed", "cancelled")]
    if unfinished:
        problems.append(f"jobs neither done, failed nor cancelled after the drain: {_some(unfinished)}")
    done_without = [i for i, status, *_ in jobs if status == "done" and per_job[i] != 1]
    if done_without:
        problems.append(f"done jobs without exactly one result: {_some(done_without)}")
    stray = [i for i, status, *_ in jobs if status != "done" and per_job[i]]
    if stray:
        problems.append(f"results of jobs not done: {_some(stray)}")
    bad_errors = [i for i, status, error, *_ in jobs if status == "failed" and (not error or "\n" in error.strip())]
    if bad_errors:
        problems.append(f"failed jobs without a one-line error: {_some(bad_errors)}")
    over = [i for i, _, _, attempts, most in jobs if attempts > most]
    if over:
        problems.append(f"jobs claimed more often than their max_attempts: {_some(over)}")
    if orphans:
        problems.append(f"results without their job: {_some(orphans)}")
    status_of = {i: status for i, status, *_ in jobs}
    twice = [i for i, ends in (logged or {}).items() if len(ends) > 1]
    if twice:
        problems.append(f"jobs ended by more than one write (executors' logs): {_some(twice)}")
    other = [i for i, ends in (logged or {}).items() if ends and ends[-1] != status_of.get(i)]
    if other:
        problems.append(f"jobs whose logged end is not their status: {_some(other)}")
    lost = set(acknowledged) - {i for i, *_ in jobs}
    if lost:
        problems.append(f"acknowledged jobs missing from the store: {_some(lost)}")
    return statuses, problems


def failure_reasons(url: str, top: int = 5) -> list[tuple[str, int]]:
    """The most common errors of failed jobs (what the executors said), for the table."""
    jobs, _, _ = rows(url)
    return Counter((error or "")[:100] for _, status, error, *_ in jobs if status == "failed").most_common(top)
