"""What a person watching a job sees, computed from the stored job (kept out of the pages for tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..store import Job


@dataclass
class JobProgress:
    fraction: float
    elapsed: float | None     # seconds since the job started
    remaining: float | None   # estimate from the pace so far
    label: str


def progress(job: Job, now: float | None = None) -> JobProgress:
    now = time.time() if now is None else now
    fraction = job.step / job.total if job.total else 0.0
    if job.status != "running" or job.started_at is None:
        end = job.finished_at if job.finished_at and job.started_at else None
        elapsed = end - job.started_at if end else None
        return JobProgress(1.0 if job.status == "done" else fraction, elapsed, None, job.status)
    elapsed = max(0.0, now - job.started_at)
    remaining = elapsed * (job.total - job.step) / job.step if job.step else None
    label = f"step {job.step} of {job.total}, {elapsed:.0f} s elapsed"
    if remaining is not None:
        label += f", about {remaining:.0f} s to go"
    return JobProgress(fraction, elapsed, remaining, label)


def describe(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
