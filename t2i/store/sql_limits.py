"""The public limits, checked in the transaction that writes: submit_limited and vote_limited. A mixin
of SQLStore (t2i/store/sql.py), which gives it `transaction`, `submit`, `vote`, the statement helpers
and the backend's LIMITS_LOCK."""

from __future__ import annotations

import json

from .base import Quota, QuotaReached, VoteQuota
from .uploads import UPLOAD_WINDOW, Upload


class LimitedWrites:
    # --- public limits: checked in the transaction that writes -------------------------------
    # Check, then insert, as two statements let concurrent submitters all pass the check (12 threads
    # got 7 to 10 jobs past a limit of 3). Here both happen in one transaction that holds the write
    # lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: LIMITS_LOCK, an advisory lock), so the next one
    # counts what this one wrote.
    def _limits_lock(self) -> None:
        if self.LIMITS_LOCK:
            self._execute(self.LIMITS_LOCK)

    def _count(self, sql: str, params: tuple) -> int:
        return int(self._one(sql, params)[0])

    def submit_limited(self, spec: dict, *, address: str, quota: Quota, batch_key: str, total: int,
                       priority: int = 0, max_attempts: int = 3, submitter: str | None = None,
                       uploads: list[Upload] = ()) -> int:
        with self.transaction():
            self._limits_lock()
            self._check_quota(address, quota, uploads, 1, [(spec, total)])
            job_id = self.submit(spec, batch_key=batch_key, total=total, priority=priority,
                                 max_attempts=max_attempts, submitter=submitter, uploads=uploads, address=address)
        return job_id

    def retry_limited(self, job_id: int, *, address: str, quota: Quota) -> int:
        """retry(), for a public caller (the API): the new job counts against the address's quota,
        checked in the insert's transaction as submit_limited checks it. QuotaReached: nothing written."""
        with self.transaction():
            self._limits_lock()
            job = self.get(job_id)
            if job is not None and "prompt" in job.spec:   # else retry() refuses it with its own line
                self._check_quota(address, quota, [], 1, [(job.spec, job.total)])
            return self.retry(job_id, address=address)

    def _check_quota(self, address: str, quota: Quota, uploads: list[Upload], jobs: int,
                     work: list[tuple[dict, int]] = ()) -> None:
        """QuotaReached when adding `jobs` jobs (and these uploads; `work`: their (spec, total steps))
        would pass one of the bounds; inside the caller's transaction, after _limits_lock."""
        checks = [("queued", quota.max_queued, "SELECT COUNT(*) FROM jobs WHERE status = 'queued'", ()),
                  ("active", quota.max_active,
                   "SELECT COUNT(*) FROM jobs WHERE address = ? AND status IN ('queued', 'running')", (address,)),
                  ("per_minute", quota.max_per_minute,
                   "SELECT COUNT(*) FROM jobs WHERE address = ? AND created_at > {now} - 60", (address,))]
        for bound, limit, sql, params in checks:
            if self._count(sql, params) + jobs > limit:
                raise QuotaReached(bound, limit)
        if quota.max_upload_bytes is not None and uploads:
            self._check_upload_bytes(address, uploads, quota.max_upload_bytes)
        if quota.max_work is not None and quota.step_cost is not None and work:
            self._check_work(address, quota, work)

    def _check_work(self, address: str, quota: Quota, new: list[tuple[dict, int]]) -> None:
        """The address's queued and running jobs' steps still to run, each times its cost per step,
        plus the new jobs' whole: over max_work, refused. At most max_active specs are read."""
        rows = self._all("SELECT spec, total - step FROM jobs WHERE address = ? AND status IN ('queued', 'running')",
                         (address,))
        held = sum(quota.step_cost(json.loads(spec)) * max(int(left), 0) for spec, left in rows)
        asked = sum(quota.step_cost(spec) * total for spec, total in new)
        if held + asked > quota.max_work:
            raise QuotaReached("work", quota.max_work, held=held, asked=asked)

    def _check_upload_bytes(self, address: str, uploads: list[Upload], limit: int) -> None:
        """The address's images: the distinct uploads of its jobs queued, running or submitted in the
        last UPLOAD_WINDOW, each counted once however many jobs use it, plus this submission's
        others. Only a submission that adds images to that set can be refused."""
        held = dict(self._all(
            "SELECT u.sha256, u.size FROM uploads u WHERE u.sha256 IN (SELECT ju.sha256 FROM job_uploads ju "
            "JOIN jobs j ON j.id = ju.job_id WHERE j.address = ? AND "
            "(j.status IN ('queued', 'running') OR j.created_at > {now} - ?))", (address, UPLOAD_WINDOW)))
        new = {u.sha256: len(u.data) for u in uploads if u.sha256 not in held}
        if new and sum(held.values()) + sum(new.values()) > limit:
            raise QuotaReached("upload_bytes", limit)

    def vote_limited(self, voter: str, address: str, left_job: int, right_job: int, choice: str,
                     quota: VoteQuota) -> bool:
        lo, hi = sorted((left_job, right_job))
        with self.transaction():
            self._limits_lock()
            if self._count("SELECT COUNT(*) FROM votes WHERE voter = ? AND job_lo = ? AND job_hi = ?", (voter, lo, hi)):
                return False  # this visitor's first vote stands, whatever the address's quota
            if self._count("SELECT COUNT(*) FROM votes WHERE address = ? AND job_lo = ? AND job_hi = ?",
                           (address, lo, hi)) >= quota.max_per_pair:
                raise QuotaReached("pair", quota.max_per_pair)
            if self._count("SELECT COUNT(*) FROM votes WHERE address = ? AND created_at > {now} - 60",
                           (address,)) >= quota.max_per_minute:
                raise QuotaReached("votes_per_minute", quota.max_per_minute)
            if not self.vote(voter, left_job, right_job, choice):
                return False
            self._execute("UPDATE votes SET address = ? WHERE voter = ? AND job_lo = ? AND job_hi = ?",
                          (address, voter, lo, hi))
        return True

    def full_pairs(self, address: str, at_least: int) -> set[tuple[int, int]]:
        return {(int(a), int(b)) for a, b in self._all(
            "SELECT job_lo, job_hi FROM votes WHERE address = ? GROUP BY job_lo, job_hi HAVING COUNT(*) >= ?",
            (address, at_least))}
