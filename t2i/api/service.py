"""The API's side of the service layer: the process's store, submitting for a caller, a job as JSON.

    store()                                  the store of $T2I_DB, opened once per process
    submit_for(caller, prompt, preset, **fields) -> Placed
                                             one job through t2i/service/queue.py's submit_job with the
                                             pages' limits, memory admission and quota (the caller's
                                             address), owned by the caller's key
    group_for(caller, prompt, presets, **fields) -> list[Placed]
    job_state(job, caller) -> dict           status, progress, place and estimate, error, parameters, links

The routes of any router (the project's own, the AUTOMATIC1111 one) call these, so the same limits
apply however a job arrives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..service.compare import HIDDEN, blind_groups, blind_text
from ..service.jobview import progress
from ..service.queue import QueueLimit, SubmitPolicy, submit_group, submit_job
from ..service.visitor_text import for_visitor
from ..spec import Limits
from ..store import Job, default_url, open_store
from ..store.base import QuotaReached

PREFIX = "/api/v1"
_opened: dict = {}
_lock = threading.Lock()


def store():
    """The store of $T2I_DB, opened on first use and shared by every request of this process (its
    connections reopen themselves after a database restart, as the pages' shared store does)."""
    url = default_url()
    with _lock:
        if url not in _opened:
            _opened[url] = open_store(url)
        return _opened[url]


def forget_store() -> None:
    """Drop the opened store (its SQLite file was deleted or replaced: StoreGone): the next request
    opens the one now at the URL, as the pages' shared store does."""
    with _lock:
        for opened in _opened.values():
            try:
                opened.close()
            except Exception:  # noqa: BLE001 - closing a store whose file is gone may fail too; it is dropped anyway
                pass
        _opened.clear()


@dataclass(frozen=True)
class Placed:
    id: int
    position: int | None

    def as_json(self) -> dict:
        return {"id": self.id, "position": self.position, "links": links(self.id)}


def links(job_id: int) -> dict:
    base = f"{PREFIX}/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "png": f"{base}/png", "gif": f"{base}/gif",
            "frame": f"{base}/frame", "cancel": f"{base}/cancel"}


def submit_for(caller, prompt, preset: str, **fields) -> Placed:
    """One job for `caller` (t2i.api.auth.Caller), validated and limited as the Generate page's:
    SpecError, PresetError, TooLarge, QueueLimit (the errors module maps each to its status)."""
    db = store()
    new = submit_job(db, prompt, preset, submitter=caller.submitter, address=caller.address,
                     limits=Limits.from_env(), policy=SubmitPolicy.from_env(), **fields)
    return Placed(new, db.queue_position(new))


def group_for(caller, prompt, presets: list[str], **fields) -> list[Placed]:
    """A compare group (2 to 4 presets, one prompt and seed) for `caller`, limited as the page's."""
    db = store()
    ids = submit_group(db, prompt, presets, submitter=caller.submitter, address=caller.address,
                       limits=Limits.from_env(), policy=SubmitPolicy.from_env(), **fields)
    return [Placed(i, db.queue_position(i)) for i in ids]


def retry_for(caller, job_id: int) -> Placed:
    """Queue a failed or cancelled job again for `caller`: the new job counts against the caller's
    address's limits like any submission (QueueLimit). ValueError (one line) for a job that cannot be retried."""
    db, policy = store(), SubmitPolicy.from_env()
    try:
        new = db.retry_limited(job_id, address=caller.address, quota=policy.quota)
    except QuotaReached as reached:
        raise QueueLimit(policy.message(reached)) from None
    return Placed(new, db.queue_position(new))


def voter_of(caller) -> str:
    """Who votes (and whose compare groups are still blind): the key's submitter, else the address."""
    return caller.submitter if caller is not None and caller.submitter else f"anonymous-{caller.address}"


def blind(job: Job, caller) -> bool:
    """A compare group's job whose preset the caller may not see yet (t2i/service/compare.py: until
    the caller votes on the group), as on every page."""
    return job.group_id is not None and bool(blind_groups(store(), voter_of(caller), [job.group_id]))


def job_state(job: Job, caller=None, position: int | None = None) -> dict:
    """A job as the API shows it. The error line is the visitor's (paths cut); `mine` says whether
    the caller owns it (cancel, retry). A blind group's job names no preset and shows no parameters."""
    seen = progress(job)
    hidden = caller is not None and blind(job, caller)
    error = for_visitor(job.error) if job.error else None
    return {"id": job.id, "status": job.status, "prompt": job.prompt, "preset": HIDDEN if hidden else job.preset,
            "step": job.step, "total": job.total, "loss": job.loss,
            "position": position, "elapsed": seen.elapsed, "remaining": seen.remaining,
            "error": blind_text(error, job.preset) if hidden else error,
            "cancel_requested": job.cancel_requested, "group_id": job.group_id, "retry_of": job.retry_of,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "mine": bool(caller is not None and caller.owns(job.submitter)),
            "parameters": None if hidden else job.spec, "links": links(job.id)}
