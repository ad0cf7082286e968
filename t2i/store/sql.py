"""The JobStore in SQL, shared by both backends; they differ only in connection, clock and claim lock.

Statements are written with `?` placeholders and `{now}` for the database clock; a backend rewrites
them for its driver. All SQL of the project lives in t2i/store/.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager, nullcontext

from ..errors import SpecError
from .base import ALONE, FINISHED, PRIORITIES, STATUSES, Beat, GroupItem, Job, Lease, Result
from .base import Quota
from .sql_blobs import BlobRefs
from .sql_claims import claim_sql
from .sql_keys import ApiKeys
from .sql_watch import Watching
from .sql_limits import LimitedWrites
from .sql_pages import PageQueries
from .sql_upgrade import Upgrades
from .uploads import Upload

JOB_COLUMNS = ("id, spec, prompt, preset, status, priority, attempts, max_attempts, worker_id, lease_expires_at, "
               "heartbeat_at, step, total, loss, error, cancel_requested, submitter, retry_of, created_at, "
               "started_at, finished_at, batch_key, group_id")
# Fencing: a write is accepted only from the current holder of a running job's lease.
FENCE = "id = ? AND status = 'running' AND worker_id = ? AND attempts = ?"


def _job(row) -> Job:
    j = Job(*row)
    try:  # a row damaged before an upgrade (sql_upgrade.py marked it) is still listed, with no spec
        spec = json.loads(j.spec)
    except ValueError:
        spec = None
    j.spec = spec if isinstance(spec, dict) else {}
    j.cancel_requested = bool(j.cancel_requested)
    return j


def _fence(lease: Lease) -> tuple:
    return (lease.job_id, lease.worker_id, lease.attempt)


def _died_alone(spec: dict, times: int, describe) -> str:
    """The failure line of a job whose executor kept dying while it ran by itself."""
    try:  # the caller's words for the load; the job fails all the same when they cannot be had
        load = f" at {describe(spec)}" if describe else ""
    except Exception:  # noqa: BLE001
        load = ""
    return (f"the executor died while running this job alone{load} ({times} time{'s' if times != 1 else ''}): "
            "probably out of memory")


class SQLStore(PageQueries, LimitedWrites, Upgrades, ApiKeys, Watching, BlobRefs):
    NOW = "0"            # SQL expression for seconds since the epoch on the database's clock
    LIKE = "LIKE"        # case-insensitive substring match
    CLAIM_LOCK = ""      # appended to the claim's inner SELECT
    LIMITS_LOCK = ""     # serialises quota checks across connections; SQLite's BEGIN IMMEDIATE already does
    WRITABLE_CTES = False  # INSERT/UPDATE/DELETE inside WITH (PostgreSQL): complete() in one statement
    _claim_started = 0.0   # time.monotonic() when this store's last claim began

    # --- backend hooks ----------------------------------------------------------------------
    def _execute(self, sql: str, params: tuple = ()):
        raise NotImplementedError

    @contextmanager
    def transaction(self):
        raise NotImplementedError
        yield

    def _sql(self, sql: str) -> str:
        return sql.replace("{now}", self.NOW)

    def _execute_idempotent(self, sql: str, params: tuple = ()):
        """_execute for a write that may be applied twice (a heartbeat); a backend may then resend it
        after a lost connection without checking the connection first."""
        return self._execute(sql, params)

    def _one(self, sql, params=()):
        return self._execute(sql, params).fetchone()

    def _all(self, sql, params=()):
        return self._execute(sql, params).fetchall()

    def _rowcount(self, sql, params=()) -> int:
        return self._execute(sql, params).rowcount

    # --- submitting and reading -------------------------------------------------------------
    def submit(self, spec: dict, *, batch_key: str, total: int, priority: int = 0, max_attempts: int = 3,
               submitter: str | None = None, retry_of: int | None = None, uploads: list[Upload] = (),
               address: str | None = None) -> int:
        # address: submit_limited's (the jobs row and the first uploader of each new upload)
        if priority not in PRIORITIES:
            raise SpecError("priority", f"must be between {PRIORITIES[0]} and {PRIORITIES[-1]}, got {priority}")
        with self.transaction() if uploads else nullcontext():  # a job never refers to a missing upload
            self._put_uploads(uploads, submitter, address)
            row = self._one(
                "INSERT INTO jobs (spec, prompt, preset, status, priority, max_attempts, total, submitter, retry_of, "
                "batch_key, address, created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, {now}) RETURNING id",
                (json.dumps(spec), spec["prompt"], spec["preset"], priority, max_attempts, total,
                 submitter, retry_of, batch_key, address))
            for sha in dict.fromkeys(u.sha256 for u in uploads):
                self._execute("INSERT INTO job_uploads (job_id, sha256) VALUES (?, ?)", (int(row[0]), sha))
        self._notify()
        return int(row[0])

    def submit_group(self, items: list[GroupItem], *, priority: int = 0, max_attempts: int = 3,
                     submitter: str | None = None, address: str | None = None, quota: Quota | None = None,
                     grouped: bool = True) -> list[int]:
        if not items:
            raise ValueError("a group needs at least one job")
        with self.transaction():
            if quota is not None:
                self._limits_lock()
                self._check_quota(address, quota, [u for item in items for u in item.uploads], len(items),
                                  [(item.spec, item.total) for item in items])
            ids = [self.submit(item.spec, batch_key=item.batch_key, total=item.total, priority=priority,
                               max_attempts=max_attempts, submitter=submitter, uploads=item.uploads,
                               address=address) for item in items]
            if grouped:
                marks = ", ".join("?" * len(ids))
                self._execute(f"UPDATE jobs SET group_id = ? WHERE id IN ({marks})", (ids[0], *ids))
        return ids

    def group(self, group_id: int) -> list[Job]:
        return [_job(r) for r in self._all(f"SELECT {JOB_COLUMNS} FROM jobs WHERE group_id = ? ORDER BY id",
                                           (group_id,))]

    def _put_uploads(self, uploads: list[Upload], submitter: str | None, address: str | None) -> None:
        """Store the uploads not stored yet (inside the caller's transaction). Those already there
        are neither sent again nor rewritten: the first uploader stays recorded."""
        for upload in {u.sha256: u for u in uploads}.values():
            if self._one("SELECT 1 FROM uploads WHERE sha256 = ?", (upload.sha256,)) is None:
                # The blob before the row that refers to it. Without blobs the column is left out: the
                # upgrade to version 5 calls this before version 9 adds it (open_store sets blobs after).
                ref = self._upload_ref(upload.data)
                self._execute(
                    f"INSERT INTO uploads (sha256, data, size, media_type, created_at, submitter, address"
                    f"{', ref' if ref else ''}) VALUES (?, ?, ?, ?, {{now}}, ?, ?{', ?' if ref else ''}) "
                    "ON CONFLICT (sha256) DO NOTHING",
                    (upload.sha256, b"" if ref else upload.data, len(upload.data), upload.media_type, submitter,
                     address, *((ref,) if ref else ())))

    def upload(self, sha256: str) -> bytes | None:
        row = self._one("SELECT data, ref FROM uploads WHERE sha256 = ?", (sha256,))
        return self._bytes(*row) if row else None

    def _notify(self, count: int = 1) -> None:
        """Wake `count` idle executors (PostgreSQL: one NOTIFY; t2i/store/waker.py); nothing for SQLite."""

    def listen(self) -> None:
        """Start listening for new work before the first claim, so no wake-up is missed."""

    def wakeups_reliable(self) -> bool:
        """Whether a new job wakes a waiting executor now, so it may poll rarely (SQLite: never)."""
        return False

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may be available or timeout seconds pass (SQLite: the timeout)."""
        time.sleep(timeout)

    def get(self, job_id: int) -> Job | None:
        row = self._one(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def jobs(self, *, status: str | None = None, submitter: str | None = None, limit: int = 50) -> list[Job]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if submitter:
            where.append("submitter = ?")
            params.append(submitter)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(f"SELECT {JOB_COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [_job(r) for r in rows]

    def queue_position(self, job_id: int) -> int | None:
        row = self._one(
            "SELECT (SELECT COUNT(*) FROM jobs q WHERE q.status = 'queued' AND "
            "(q.priority > j.priority OR (q.priority = j.priority AND q.id < j.id))) + 1 "
            "FROM jobs j WHERE j.id = ? AND j.status = 'queued'", (job_id,))
        return int(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        found = dict(self._all("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        return {s: int(found.get(s, 0)) for s in STATUSES}

    # --- the lifecycle ----------------------------------------------------------------------
    def claim(self, worker_id: str, lease_seconds: float, batch_key: str | None = None) -> Job | None:
        jobs = self.claim_many(worker_id, lease_seconds, 1, batch_key)
        return jobs[0] if jobs else None

    def claim_many(self, worker_id: str, lease_seconds: float, n: int, batch_key: str | None = None) -> list[Job]:
        if n < 1:
            return []
        # The statement and its fair order: t2i/store/sql_claims.py.
        self._claim_started = time.monotonic()  # the host relay wakes a waiter whose claim began before a NOTIFY
        rows = self._all(*claim_sql(worker_id, lease_seconds, n, batch_key, self.CLAIM_LOCK, JOB_COLUMNS))
        return sorted((_job(r) for r in rows), key=lambda j: (-j.priority, j.id))

    def heartbeat(self, lease: Lease, lease_seconds: float) -> Beat:
        return self.heartbeat_all(lease.worker_id, [lease], lease_seconds).get(lease.job_id, Beat(False, False))

    def heartbeat_all(self, worker_id: str, leases, lease_seconds: float) -> dict[int, Beat]:
        # One UPDATE for all of a worker's leases, each fenced (id, worker, attempt); the rows it
        # returns are the leases that still hold. The id list lets both databases find the rows by
        # primary key; the (id, attempts) pairs fence each one.
        beats = {lease.job_id: Beat(alive=False, cancel_requested=False) for lease in leases}
        leases = [lease for lease in leases if lease.worker_id == worker_id]  # another worker's: not ours to extend
        if not leases:
            return beats
        ids = ", ".join("?" * len(leases))
        pairs = ", ".join(["(?, ?)"] * len(leases))
        rows = self._execute_idempotent(
            "UPDATE jobs SET lease_expires_at = {now} + ?, heartbeat_at = {now} WHERE status = 'running' "
            f"AND worker_id = ? AND id IN ({ids}) AND (id, attempts) IN (VALUES {pairs}) "
            "RETURNING id, cancel_requested",
            (lease_seconds, worker_id, *(lease.job_id for lease in leases),
             *(x for lease in leases for x in (lease.job_id, lease.attempt)))).fetchall()
        for job_id, cancel in rows:
            beats[int(job_id)] = Beat(alive=True, cancel_requested=bool(cancel))
        return beats

    def progress(self, lease: Lease, step: int, loss: float | None) -> Beat:
        row = self._one(f"UPDATE jobs SET step = ?, loss = ? WHERE {FENCE} RETURNING cancel_requested",
                        (step, loss, *_fence(lease)))
        return Beat(alive=row is not None, cancel_requested=bool(row and row[0]))

    def add_frame(self, lease: Lease, step: int, png: bytes) -> bool:
        ref = self._frame_ref(lease, step, png)  # a fenced-off row leaves it to clean_blobs()
        return self._rowcount(
            f"INSERT INTO frames (job_id, step, png, ref) SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE "
            f"{FENCE}) ON CONFLICT (job_id, step) DO UPDATE SET png = excluded.png, ref = excluded.ref",
            (lease.job_id, step, b"" if ref else png, ref, *_fence(lease))) == 1

    def drop_frames(self, lease: Lease, steps: list[int]) -> int:
        if not steps:
            return 0
        rows = [r[0] for r in self._all(
            f"DELETE FROM frames WHERE job_id = ? AND step IN ({', '.join('?' * len(steps))}) "
            f"AND EXISTS (SELECT 1 FROM jobs WHERE {FENCE}) RETURNING ref", (lease.job_id, *steps, *_fence(lease)))]
        self._forget(*rows)
        return len(rows)

    def complete(self, lease: Lease, result: Result, *, keep_frames: bool = False) -> bool:
        # Blobs first, then the row; a refused or failed write leaves them to clean_blobs() (a write
        # reported failed may have committed, and a retry of it is refused: only the sweep can tell).
        gif_ref, png_ref = self._result_refs(lease, result.gif, result.png)
        params = (lease.job_id, b"" if gif_ref else result.gif, b"" if png_ref else result.png, result.thumbnail,
                  json.dumps(result.parameters), result.width, result.height, str(result.seed), gif_ref, png_ref)
        done_set = "status = 'done', step = total, finished_at = {now}, lease_expires_at = NULL"
        columns = "job_id, gif, png, thumbnail, parameters, width, height, seed, gif_ref, png_ref, created_at"
        done = self._complete(lease, params, done_set, columns, keep_frames)
        if done and not keep_frames:
            self._forget_frames(lease.job_id)
        return done

    def _complete(self, lease: Lease, params: tuple, done_set: str, columns: str, keep_frames: bool) -> bool:
        if self.WRITABLE_CTES:
            # One statement is one transaction: the fenced UPDATE, the result and the frames' DELETE
            # all happen or none does, in one round trip instead of five (BEGIN ... COMMIT). The
            # result and the frames are keyed on `done`, so a stale lease writes nothing; a failing
            # INSERT (a result already there) undoes the UPDATE with it.
            frames = ("" if keep_frames else
                      ", f AS (DELETE FROM frames WHERE job_id IN (SELECT id FROM done))")
            row = self._one(
                f"WITH done AS (UPDATE jobs SET {done_set} WHERE {FENCE} RETURNING id), "
                f"r AS (INSERT INTO results ({columns}) SELECT done.id, ?, ?, ?, ?, ?, ?, ?, ?, ?, {{now}} FROM done)"
                f"{frames} SELECT count(*) FROM done", (*_fence(lease), *params[1:]))
            return row[0] == 1
        with self.transaction():
            if self._rowcount(f"UPDATE jobs SET {done_set} WHERE {FENCE}", _fence(lease)) != 1:
                return False
            self._execute(f"INSERT INTO results ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {{now}})", params)
            if not keep_frames:
                self._execute("DELETE FROM frames WHERE job_id = ?", (lease.job_id,))
        return True

    def _finish(self, lease: Lease, status: str, error: str | None) -> bool:
        return self._rowcount(
            f"UPDATE jobs SET status = ?, error = ?, finished_at = {{now}}, lease_expires_at = NULL WHERE {FENCE}",
            (status, error, *_fence(lease))) == 1

    def fail(self, lease: Lease, error: str) -> bool:
        return self._finish(lease, "failed", " ".join(str(error).split())[:500])

    def finish_cancelled(self, lease: Lease) -> bool:
        return self._finish(lease, "cancelled", None)

    def release(self, lease: Lease) -> bool:
        with self.transaction():
            # A cancel asked for meanwhile wins: the job ends cancelled instead of going back.
            back = self._rowcount(
                "UPDATE jobs SET status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END, "
                "finished_at = CASE WHEN cancel_requested = 1 THEN {now} ELSE NULL END, worker_id = NULL, "
                "lease_expires_at = NULL, step = 0, loss = NULL, attempts = attempts - 1, started_at = NULL "
                f"WHERE {FENCE}", _fence(lease))
            if back == 1:
                self._execute("DELETE FROM frames WHERE job_id = ?", (lease.job_id,))
                self._forget_frames(lease.job_id, lease.attempt)
        if back == 1:
            self._notify()
        return back == 1

    def cancel(self, job_id: int) -> str | None:
        with self.transaction():
            if self._rowcount("UPDATE jobs SET status = 'cancelled', finished_at = {now} "
                              "WHERE id = ? AND status = 'queued'", (job_id,)):
                return "cancelled"
            if self._rowcount("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,)):
                return "cancel_requested"
            row = self._one("SELECT status FROM jobs WHERE id = ?", (job_id,))
        return row[0] if row else None

    def retry(self, job_id: int, address: str | None = None) -> int:
        job = self.get(job_id)   # address: retry_limited's, as submit_limited's
        if job is None or job.status not in ("failed", "cancelled"):
            raise ValueError(f"job {job_id} is {job.status if job else 'unknown'}; only failed or cancelled jobs "
                             "can be retried")
        if "prompt" not in job.spec:
            raise ValueError(f"job {job_id}'s spec cannot be read ({job.error}); it cannot be retried")
        (key,) = self._one("SELECT batch_key FROM jobs WHERE id = ?", (job_id,))
        with self.transaction():  # the spec refers to the same uploads: the new job is linked to them too
            new = self.submit(job.spec, batch_key=key, total=job.total, priority=job.priority,
                              max_attempts=job.max_attempts, submitter=job.submitter, retry_of=job.id,
                              address=address)
            self._execute("INSERT INTO job_uploads (job_id, sha256) SELECT ?, sha256 FROM job_uploads WHERE job_id = ?",
                          (new, job_id))
        return new

    def sweep(self, describe=None) -> tuple[int, int]:
        # A worker's heartbeat serves all its jobs: one lease expired means the worker is gone, and all
        # its jobs are taken back now. Counting them tells a death in a batch (any of the batch may be
        # the culprit: not charged, the job runs alone next) from a death alone (charged).
        requeued = ended = 0
        with self.transaction():
            rows = self._all(
                "SELECT id, worker_id, attempts, max_attempts, cancel_requested, batch_key, spec FROM jobs "
                "WHERE status = 'running' AND worker_id IN "
                "(SELECT worker_id FROM jobs WHERE status = 'running' AND lease_expires_at < {now})")
            batch = {}
            for row in rows:
                batch[row[1]] = batch.get(row[1], 0) + 1
            for job_id, worker, attempts, max_attempts, cancel, key, spec in rows:
                lease = (job_id, worker, attempts)
                if cancel:
                    ended += self._finish(Lease(*lease), "cancelled", None)
                elif batch[worker] > 1 and not key.startswith(ALONE):
                    # Uncharged at most once: an alone job is never batched (claim), so the alone runs
                    # that follow are bounded by max_attempts.
                    requeued += self._requeue(lease, ", attempts = attempts - 1, batch_key = ?",
                                              (f"{ALONE}{batch[worker]}: {key}",))
                elif attempts >= max_attempts:
                    ended += self._finish(Lease(*lease), "failed", _died_alone(json.loads(spec), attempts, describe))
                else:
                    requeued += self._requeue(lease)
        if requeued:
            self._notify(requeued)
        return requeued, ended

    def _requeue(self, lease: tuple, also: str = "", params: tuple = ()) -> int:
        back = self._rowcount("UPDATE jobs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, "
                              f"step = 0, loss = NULL{also} WHERE {FENCE}", (*params, *lease))
        if back:  # frames of the lost attempt would mix with the next attempt's
            self._execute("DELETE FROM frames WHERE job_id = ?", (lease[0],))
            self._forget_frames(lease[0], lease[2])
        return back

    # --- results ----------------------------------------------------------------------------
    def result(self, job_id: int, *, heavy: bool = True) -> Result | None:
        heavy_cols = "gif, png, gif_ref, png_ref" if heavy else "NULL, NULL, NULL, NULL"
        row = self._one(f"SELECT job_id, {heavy_cols}, thumbnail, parameters, width, height, seed, created_at, "
                        "wins, appearances FROM results WHERE job_id = ?", (job_id,))
        if not row:
            return None
        (gif_ref, png_ref), row = row[3:5], row[:3] + row[5:]
        r = Result(*row)
        r.gif, r.png, r.thumbnail = self._bytes(r.gif, gif_ref), self._bytes(r.png, png_ref), bytes(r.thumbnail)
        if heavy and (r.gif is None or r.png is None):
            r.gone = f"the image of job {job_id} is gone: its file was deleted from the blob folder"
        r.parameters, r.seed = json.loads(r.parameters), int(r.seed)
        return r

    def latest_frame(self, job_id: int) -> tuple[int, bytes] | None:
        frames = self._frames(job_id, "DESC LIMIT 3")  # a frame whose blob a requeue took is skipped
        return frames[0] if frames else None

    def finished_since(self, seconds: float) -> int:
        return int(self._one("SELECT COUNT(*) FROM jobs WHERE status = 'done' AND finished_at > {now} - ?",
                             (seconds,))[0])

    def frames(self, job_id: int) -> list[tuple[int, bytes]]:
        return self._frames(job_id, "")


__all__ = ["SQLStore", "FINISHED"]
