"""The JobStore contract: the job lifecycle, in one small protocol that SQLite and PostgreSQL implement.

    queued -> running -> done | failed | cancelled        (every transition is one transaction)

A claim is a lease held by (worker_id, attempt). Progress, frames and results are accepted only from
the current lease holder ("fencing"): a worker presumed dead cannot overwrite a newer attempt. An
expired lease is requeued, or failed after max_attempts, by whoever sweeps next.

Times are seconds since the epoch on the database's clock, so hosts with skewed clocks still agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from .uploads import Upload

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
VOTE_CHOICES = ("left", "right", "tie", "both_bad")
MAX_ID = 2**63 - 1                   # job ids are 64-bit integers in both backends
PRIORITIES = range(-2**31, 2**31)    # the priority column is a 32-bit INTEGER in PostgreSQL
# The batch key of a job whose executor died while it ran in a batch: "alone after a batch of 4: <key>".
# It matches no batch, so the job runs by itself next time, and a death then is its own (see sweep).
ALONE = "alone after a batch of "


@dataclass(frozen=True)
class Lease:
    """Proof of a claim. Writes carry it; the store rejects any that is not the current one."""

    job_id: int
    worker_id: str
    attempt: int


@dataclass
class Job:
    id: int
    spec: dict                 # JobSpec.to_dict()
    prompt: str
    preset: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    worker_id: str | None
    lease_expires_at: float | None
    heartbeat_at: float | None
    step: int
    total: int
    loss: float | None
    error: str | None
    cancel_requested: bool
    submitter: str | None
    retry_of: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    batch_key: str = ""        # what claim(batch_key=...) matches; ALONE... when the job must run by itself
    group_id: int | None = None  # the first job's id, for the jobs of one compare group (submit_group)

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.worker_id, self.attempts)

    @property
    def alone(self) -> bool:
        """Runs by itself: its executor died while it ran in a batch (see sweep)."""
        return self.batch_key.startswith(ALONE)


@dataclass
class Result:
    job_id: int
    gif: bytes | None          # None when loaded without the heavy columns
    png: bytes | None
    thumbnail: bytes
    parameters: dict
    width: int
    height: int
    seed: int
    created_at: float
    wins: float = 0.0          # from votes: 1 a win, 0.5 a tie
    appearances: int = 0
    gone: str | None = None    # one line when its GIF or PNG blob was deleted (t2i/store/sql_blobs.py)


@dataclass(frozen=True)
class GroupItem:
    """One job of a group for submit_group: what submit() takes for a single job."""

    spec: dict
    batch_key: str
    total: int
    uploads: tuple = ()        # Upload records, as submit(uploads=...)


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learns: whether the lease still holds, and whether a cancel was asked."""

    alive: bool
    cancel_requested: bool


@dataclass(frozen=True)
class Quota:
    """What one client address may have queued, checked in the same transaction as the insert
    (submit_limited): public pages only; the operator's shell has no quota."""

    max_active: int        # the address's queued + running jobs
    max_per_minute: int    # the address's jobs created in the last 60 s
    max_queued: int        # the whole queue's queued jobs
    # bytes of the distinct uploads of the address's jobs queued, running or submitted within
    # UPLOAD_WINDOW (t2i/store/uploads.py), this submission's new ones included; None: no bound
    max_upload_bytes: int | None = None
    # estimated work of the address's queued and running jobs, this submission's included: each job's
    # steps still to run times step_cost(its spec), a number the store does not interpret (the queue
    # gives the families' costs per step, t2i/service/queue.py); None: no bound
    max_work: float | None = None
    step_cost: Callable[[dict], float] | None = None


@dataclass(frozen=True)
class VoteQuota:
    """What one client address may vote, checked in the vote's transaction (vote_limited)."""

    max_per_pair: int      # votes on one pair of images, whoever the visitors behind the address are
    max_per_minute: int    # votes in the last 60 s


class QuotaReached(Exception):
    """A quota held: `bound` names which ("queued", "active", "per_minute", "upload_bytes", "work", "pair",
    "votes_per_minute"), `limit` is its value; for "work", `held` is what the address's jobs already
    hold and `asked` what the submission adds. Nothing was written."""

    def __init__(self, bound: str, limit: float, held: float | None = None, asked: float | None = None):
        super().__init__(f"the {bound} limit of {limit} is reached")
        self.bound, self.limit, self.held, self.asked = bound, limit, held, asked


class JobStore(Protocol):
    # --- submitting and reading -------------------------------------------------------------
    def submit(self, spec: dict, *, batch_key: str, total: int, priority: int = 0, max_attempts: int = 3,
               submitter: str | None = None, retry_of: int | None = None, uploads: list[Upload] = ()) -> int:
        """Insert a queued job; returns its id. `spec` is opaque job data (JSON) of which the store
        reads only "prompt" and "preset" (shown and filtered on by the pages); the caller says which
        batch the job fits (`batch_key`, matched by claim) and how many steps it takes (`total`).
        `uploads` are the images the spec refers to: each is stored once (by its hash; one already
        there is not written again) and linked to the job, in the insert's transaction."""

    def submit_group(self, items: list[GroupItem], *, priority: int = 0, max_attempts: int = 3,
                     submitter: str | None = None, address: str | None = None, quota: Quota | None = None,
                     grouped: bool = True) -> list[int]:
        """Insert several jobs as one group (the same prompt for several presets, say), in one
        transaction; each job's group_id is the first one's id (grouped=False: none, several
        independent jobs that must be queued all or none, as an AUTOMATIC1111 batch). Returns the ids
        in the items' order.
        With a quota (public pages), the limits count every job of the group, checked in that
        transaction like submit_limited: QuotaReached inserts none of them."""

    def group(self, group_id: int) -> list[Job]:
        """The jobs of a group, in submission order (empty for an unknown group)."""

    def upload(self, sha256: str) -> bytes | None:
        """An upload's bytes by its hash, or None. Only this loads image bytes: job listings never do."""

    def get(self, job_id: int) -> Job | None:
        """The job, or None."""

    def jobs(self, *, status: str | None = None, submitter: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first, optionally filtered."""

    def queue_position(self, job_id: int) -> int | None:
        """The job's place by priority and age (1: first); None when the job is not queued. The
        submitters' turns (claim) are not counted: another address's job may go first."""

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""

    # --- the lifecycle ----------------------------------------------------------------------
    def claim(self, worker_id: str, lease_seconds: float, batch_key: str | None = None) -> Job | None:
        """Atomically take the next queued job (with this batch_key, when given: one that fits a
        running batch): status running, attempts + 1, lease until now + lease_seconds. None when
        nothing (matching) is queued. Never gives one job to two workers. A job marked alone
        (Job.alone) is taken only by a worker that runs nothing else, and nothing joins a worker
        that runs one.

        The next job, fairly across submitters (a submitter is the client address; the shell's
        jobs, without one, are one submitter): the highest priority first; among equals, a job of
        the submitter whose latest start (of any of its jobs) is the oldest, one that never had a
        job started first of all; then the oldest job. So submitters take turns: after address A
        queued 10 jobs and B one, A's first is claimed, then B's, then A's second."""

    def claim_many(self, worker_id: str, lease_seconds: float, n: int, batch_key: str | None = None) -> list[Job]:
        """Up to n jobs claimed as claim() claims one, in one statement (one round trip), returned by
        priority, then age. All share one batch key: `batch_key` when given (taken in claim()'s
        order); else the key of the head job (the one claim() would take), and the others of that
        key follow it, even past higher-priority jobs of other keys: by priority, then other
        submitters' jobs (in claim()'s turn) before the head's submitter's. An alone head is taken by
        itself, and alone jobs follow claim()'s rule. Empty when nothing (matching) is queued, or n < 1."""

    def heartbeat(self, lease: Lease, lease_seconds: float) -> Beat:
        """Extend the lease to now + lease_seconds. alive=False when the lease was lost (swept,
        cancelled or finished): the worker must stop and write nothing more."""

    def heartbeat_all(self, worker_id: str, leases: list[Lease], lease_seconds: float) -> dict[int, Beat]:
        """heartbeat() for all of a worker's leases in one statement, each fenced on its own (job,
        worker, attempt): a Beat per job id of `leases`. A lease of another worker is not extended
        (alive=False). One lease per job: the job id is the key."""

    def progress(self, lease: Lease, step: int, loss: float | None) -> Beat:
        """Record progress (fenced); like heartbeat, says whether the lease holds and a cancel was asked."""

    def add_frame(self, lease: Lease, step: int, png: bytes) -> bool:
        """Store a progress frame (fenced; a repeated step replaces the frame). False when rejected."""

    def drop_frames(self, lease: Lease, steps: list[int]) -> int:
        """Delete the job's frames of these steps (fenced: nothing for a stale lease): a long job's
        frames thinned while it runs. Returns how many were deleted."""

    def complete(self, lease: Lease, result: Result, *, keep_frames: bool = False) -> bool:
        """Write the result and mark the job done, in one transaction (fenced; results are written
        once). Frames are dropped unless keep_frames. False when the lease is not current."""

    def fail(self, lease: Lease, error: str) -> bool:
        """Mark the job failed with a one-line reason (fenced)."""

    def release(self, lease: Lease) -> bool:
        """Give a running job back to the queue after a graceful stop: its partial frames are
        deleted and the attempt is not counted (fenced). A job whose cancel was requested ends
        cancelled instead."""

    def finish_cancelled(self, lease: Lease) -> bool:
        """The worker saw cancel_requested and stopped: mark the job cancelled (fenced)."""

    def cancel(self, job_id: int) -> str | None:
        """A queued job is cancelled at once ('cancelled'); a running one gets cancel_requested
        ('cancel_requested'); a finished one is left alone (its status is returned). None: no job."""

    def retry(self, job_id: int) -> int:
        """Queue a new job with the same spec, linked by retry_of; only for failed or cancelled jobs.
        The new job uses the same uploads (nothing is copied but the links)."""

    def sweep(self, describe: Callable[[dict], str] | None = None) -> tuple[int, int]:
        """Requeue the running jobs of every worker that let a lease expire (its heartbeat serves
        all its jobs, so it is dead for all of them); a job whose cancel was requested becomes
        cancelled. A job that died in a batch (with others of the same worker) is requeued
        uncharged and marked alone (Job.alone), since any of the batch may have killed it; a job
        that died alone is charged an attempt and, after max_attempts, fails with one line naming
        its load: describe(spec) says it in words ("64x64 with 8 cutouts"), as the store keeps job
        data opaque. Returns (requeued, failed_or_cancelled)."""

    def listen(self) -> None:
        """Subscribe to new-work wake-ups now (before the first claim) so none is missed."""

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job may be available (PostgreSQL: a NOTIFY) or timeout seconds pass."""

    # --- results ----------------------------------------------------------------------------
    def result(self, job_id: int, *, heavy: bool = True) -> Result | None:
        """The job's result; heavy=False leaves out the GIF and full PNG (gallery views)."""

    def latest_frame(self, job_id: int) -> tuple[int, bytes] | None:
        """The newest progress frame (step, png), or None."""

    def finished_since(self, seconds: float) -> int:
        """Jobs finished (done) in the last `seconds` (throughput)."""

    def frames(self, job_id: int) -> list[tuple[int, bytes]]:
        """(step, png) in step order."""

    # --- visitors, gallery, votes -----------------------------------------------------------
    def gallery(self, *, search: str | None = None, preset: str | None = None, status: str | None = "done",
                since: float | None = None, sort: str = "newest", limit: int = 24, offset: int = 0,
                presets: list[str] | None = None) -> tuple[list[dict], int]:
        """A page of jobs (id, prompt, preset, status, times, error, thumbnail, wins, appearances,
        group_id), filtered by prompt substring (case-insensitive), preset, one of `presets` (a
        family's, say; an empty list matches nothing), status and creation time, sorted
        "newest" or "preferred" (smoothed win rate); plus the number matching. Never loads GIFs."""

    def presets_in_use(self) -> list[str]:
        """Distinct presets of all jobs."""

    def vote(self, voter: str, left_job: int, right_job: int, choice: str) -> bool:
        """Record a vote (left / right / tie / both_bad) and update both images' tallies, in one
        transaction. One vote per voter and unordered pair: a second returns False and changes nothing.
        ValueError when the two are the same job or not both finished images."""

    def submit_limited(self, spec: dict, *, address: str, quota: Quota, batch_key: str, total: int,
                       priority: int = 0, max_attempts: int = 3, submitter: str | None = None,
                       uploads: list[Upload] = ()) -> int:
        """submit(), for a public page: in one transaction, check the quota against the queue and this
        client address's jobs (and their uploads), then insert the job with its address. Checks and
        insert are atomic with respect to every other submit_limited, from any thread, process or
        host. QuotaReached: nothing was inserted, no upload either."""

    def vote_limited(self, voter: str, address: str, left_job: int, right_job: int, choice: str,
                     quota: VoteQuota) -> bool:
        """vote(), for a public page: in one transaction, False when this voter already voted on the
        pair (nothing changes); QuotaReached when this client address has reached its quota on the
        pair or per minute; else the vote is recorded with its address. Atomic like submit_limited."""

    def full_pairs(self, address: str, at_least: int) -> set[tuple[int, int]]:
        """(lower id, higher id) of the pairs this address has voted on at least `at_least` times."""

    def voted_pairs(self, voter: str) -> set[tuple[int, int]]:
        """(lower id, higher id) of every pair this voter voted on."""

    def vote_records(self) -> list[dict]:
        """All votes with both sides' presets and the client address (None for votes older than
        addresses, or cast from the shell), oldest first."""

    def prompts_with_results(self, min_results: int = 2, limit: int = 20) -> list[str]:
        """Random prompts with at least min_results finished images."""

    def done_jobs(self, *, prompt: str | None = None, group: int | None = None, limit: int = 50) -> list[int]:
        """Random finished job ids, optionally of one prompt or of one group."""

    def done_groups(self, min_results: int = 2, limit: int = 20) -> list[int]:
        """Random group ids with at least min_results finished images (for same-group pairs)."""

    # --- executors --------------------------------------------------------------------------
    def worker_seen(self, worker_id: str, *, host: str, device: str, job_id: int | None) -> None:
        """Record that an executor is alive (and what it is doing)."""

    def workers(self, seen_within: float = 60.0) -> list[dict]:
        """Executors seen within the last seen_within seconds."""

    def close(self) -> None:
        """Release the connection."""
