"""The executor: claims jobs from the store, runs the engine, writes progress, frames and results back.

One executor per GPU (or CPU); several share a store. Jobs run in batches through the Runner, whatever their family: the
executor claims a job, then, at every step boundary, more queued jobs with the same batch key (the
family decides: preset and size, plus cutouts for guided jobs) up to the batch size; a finished job leaves and a waiting one joins. Per job, exactly as if it ran alone:
progress, frames, cancel and fencing. A heartbeat thread keeps every running job's lease alive;
progress writes (at most every PROGRESS_EVERY seconds) also tell whether a cancel was asked. A job
that raises is failed with a one-line reason and the executor goes on. SIGTERM/SIGINT stop at the
next step boundary: jobs go back to the queue, or are finished when nearly done; the process exits 0.

A failing store (a full disk, a read-only database, a database server restarting) is the store's
fault, never the job's: the executor logs one line (then ever more rarely: t2i/store/retry.py),
backs off and tries again, keeps computing its jobs and holding their leases where the store allows,
and writes their results once it can. A job's frames are thinned as they come (t2i/service/frames.py:
at most MAX_FRAMES stored, fewer written while writes fail). A stop request while the store fails
waits up to a lease for the store to take the jobs back, so they spend no attempt; a second request
stops waiting. Only an SQLite file that was deleted or replaced under it stops it
(EXIT_STORE_GONE), with one line.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import torch

from ..engine.runner import Runner
from ..errors import OutOfMemory, T2IError
from ..output import render
from ..presets import get_preset
from ..spec import JobSpec, SpecError
from ..store import Beat, Job, Lease, Result, StoreError, StoreGone, open_store
from ..store.retry import StoreTrouble
from .frames import FrameThinning
from .leases import Heartbeat
from .memory import Admission, estimate
from .models import BatchSizer, ModelCache, free_memory
from .visitor_text import for_visitor

log = logging.getLogger("t2i.executor")
PROGRESS_EVERY = 0.5  # seconds between progress writes (frames are written as they come)
SEEN_EVERY = 5.0      # seconds between "executor alive" records while nothing changes
LISTENING_POLL = 30.0  # idle polls while wake-ups are reliable (store.wakeups_reliable()): they are a safety net
MIN_LEASE = 3.0       # below this a heartbeat (every lease/3) cannot keep up with a busy database
EXIT_STORE_GONE = 3   # the database file was deleted or replaced: writing on would lose every result


@dataclass
class ExecutorConfig:
    db: str
    device: str = "cpu"
    worker_id: str = ""
    lease: float = 60.0          # seconds a claim lasts without a heartbeat
    poll: float = 0.5            # first idle wait; doubles up to max_poll
    max_poll: float = 5.0
    once: bool = False           # exit when the queue is empty
    max_jobs: int | None = None  # exit after this many jobs
    keep_frames: bool = False    # keep progress frames after the GIF is written
    cache_size: int = 1          # presets whose models stay loaded
    finish_fraction: float = 0.9  # on SIGTERM, a job this far along is finished rather than requeued
    batch: str = "auto"          # jobs optimised together: a number, or "auto"
    precision: str = "fp32"      # "bf16": autocast the forward passes (GPUs)
    memory_budget: int | None = None  # bytes this executor may use (process included); None: what the device has free

    def __post_init__(self):
        # Checked here, for every way of starting an executor: a lease of 0 (or nan) let two executors
        # take each other's jobs back on every sweep.
        if not MIN_LEASE <= self.lease < float("inf"):
            raise ValueError(f"--lease {self.lease:g}: must be at least {MIN_LEASE:g} seconds (a heartbeat renews it "
                             "every third of it)")
        if not 0 < self.poll < float("inf"):
            raise ValueError(f"--poll {self.poll:g}: must be a number of seconds above 0")
        if self.max_jobs is not None and self.max_jobs < 1:
            raise ValueError(f"--max-jobs {self.max_jobs}: must be at least 1 (leave it out for no limit)")
        if self.cache_size < 1:
            raise ValueError(f"--cache-size {self.cache_size}: must be at least 1")
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def load_of(spec: dict) -> str:
    """A job's load in words ("64x64 with 8 cutouts"), from its stored spec without building models:
    the sweep names it when the job's executor kept dying under it."""
    job = JobSpec.from_dict(spec)
    return job.describe(*job.options.used_size(job, get_preset(job.preset)))


def failure_message(error: BaseException) -> str:
    """One line a user can act on, as visitors may read it (a job's error is shown on public pages):
    without the server's paths, which go to the log (visitor_text.for_visitor)."""
    return for_visitor(_failure_line(error))


def _failure_line(error: BaseException) -> str:
    """Internals get their type and first line, never a traceback."""
    if isinstance(error, (T2IError, SpecError)):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):  # outside the loop, e.g. while loading models
        return "out of device memory while preparing the job: try again later or use a smaller preset"
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"internal error ({type(error).__name__}{': ' + first if first else ''}); the operator's log has details"


class Executor:
    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.store = open_store(cfg.db)  # the service start: creates an SQLite file that is not there yet
        self.cache = ModelCache(cfg.device, cfg.cache_size)
        self.sizer = BatchSizer(cfg.batch, cfg.device)
        self.admission = Admission(cfg.device, cfg.memory_budget)  # memory: claim only what fits (t2i/service/memory.py)
        self.stopping = threading.Event()
        # A stop while the store fails waits up to a lease for it to take the jobs back uncharged.
        self.trouble = StoreTrouble(self.stopping, cfg.poll, stop_patience=cfg.lease)
        self.done = 0
        self._seen_job, self._seen_at = None, -float("inf")

    def request_stop(self, *_args) -> None:
        if self.stopping.is_set():  # the second request: do not wait for a failing store
            log.info("second stop request: not waiting for the store any longer")
            self.trouble.give_up.set()
            return
        log.info("stop requested: finishing at the next step boundary")
        self.stopping.set()

    def _seen(self, job_id: int | None) -> None:
        """Record this executor as alive: at once when its current job changes, else at most every
        SEEN_EVERY seconds (it is called on every step, and pages read it on a one-minute scale)."""
        now = time.monotonic()
        if job_id == self._seen_job and now - self._seen_at < SEEN_EVERY:
            return
        self._seen_job, self._seen_at = job_id, now
        self.trouble.optional(lambda: self.store.worker_seen(self.cfg.worker_id, host=socket.gethostname(),
                                                       device=self.cfg.device, job_id=job_id))

    def run(self) -> int:
        log.info("executor %s on %s, store %s", self.cfg.worker_id, self.cfg.device, self.cfg.db.split("@")[-1])
        if removed := self.trouble.optional(self.store.clean_blobs, default=0):  # what crashed writers left
            log.info("removed %d blobs no job refers to", removed)
        delay = self.cfg.poll
        try:
            while not self.stopping.is_set():
                try:
                    job = self._next_job()
                except StoreGone:
                    raise
                except StoreError as error:  # the store's fault: wait and look again
                    self.trouble.failed(error)
                    self.trouble.pause()
                    continue
                if job is None:
                    if self.cfg.once:
                        break
                    self._seen(None)
                    self.trouble.optional(lambda: self.store.wait_for_work(delay))
                    reliable = self.trouble.optional(self.store.wakeups_reliable, default=False)
                    delay = min(delay * 2, max(self.cfg.max_poll, LISTENING_POLL) if reliable else self.cfg.max_poll)
                    continue
                delay = self.cfg.poll
                self.done += len(self.process(job))
                if self.cfg.max_jobs and self.done >= self.cfg.max_jobs:
                    break
        except StoreGone as error:
            log.error("%s; stopping", error)
            return EXIT_STORE_GONE
        self._seen(None)
        log.info("executor %s exiting after %d jobs", self.cfg.worker_id, self.done)
        return 0

    def _next_job(self) -> Job | None:
        self.store.listen()
        requeued, ended = self.store.sweep(describe=load_of)
        if requeued or ended:
            log.info("sweep: %d expired jobs requeued, %d failed or cancelled", requeued, ended)
        job = self.store.claim(self.cfg.worker_id, self.cfg.lease)
        self.trouble.ok()
        return job


    def process(self, first: Job) -> dict[int, str]:
        """Run a batch that starts with `first` and takes in compatible queued jobs at step
        boundaries until none is left running; returns each job's end state (for logs and tests)."""
        outcomes: dict[int, str] = {}
        heart = Heartbeat(self.cfg, self.store, self.trouble)
        heart.start()
        active: dict[int, tuple[Lease, dict]] = {}
        try:
            if (spec := self._read(first, outcomes)) is None:
                return outcomes
            try:
                batch = Runner(self.cache.get(spec.preset), self.cfg.precision)
            except Exception as error:  # noqa: BLE001 - e.g. missing weights: only this job fails
                self._fail(first.lease, error, outcomes)
                return outcomes
            self._admit(batch, first, spec, heart, active, outcomes)
            if first.alone:  # the store adds nothing to it either; asking every step would be wasted
                log.info("job %s runs alone: its executor died while it ran in a batch", first.id)
            while active:
                while not first.alone and (room := self._room(batch, active, outcomes)):
                    jobs = self.trouble.optional(lambda: self.store.claim_many(
                        self.cfg.worker_id, self.cfg.lease, room, batch_key=batch.key), default=[])
                    for job in jobs:
                        if (spec := self._read(job, outcomes)) is not None:
                            self._admit(batch, job, spec, heart, active, outcomes)
                    if len(jobs) < room:  # the queue has no more of this key (or the store failed)
                        break
                if not active:
                    break
                self._seen(next(iter(active)))
                self.sizer.before_step(batch.device)
                try:
                    steps = batch.step()
                except Exception as error:  # noqa: BLE001 - cannot be pinned on one job: all fail
                    if isinstance(error, torch.OutOfMemoryError):
                        self.sizer.shrink(len(active))
                        error = batch.out_of_memory()
                        self.cache.clear()
                    for job_id, (lease, _) in list(active.items()):
                        self._fail(lease, error, outcomes)
                        self._leave(batch, job_id, heart, active)
                    break
                self.sizer.observe(len(active), batch.device)
                for job_id, step in steps.items():
                    lease, state = active[job_id]
                    if step.error is not None:  # a post-step (upscaler) failed: this job alone
                        self._fail(lease, step.error, outcomes, clear=False)
                        free_memory()
                    elif self._on_step(lease, step, heart, state):
                        outcomes[job_id] = self._stopped(lease, heart, state)
                    elif batch.done(job_id):
                        outcomes[job_id] = self._complete(lease, batch.spec(job_id), batch.preset, batch.result(job_id))
                    else:
                        continue
                    self._leave(batch, job_id, heart, active)
                    log.info("job %s: %s", job_id, outcomes[job_id])
        finally:
            heart.stop()
        return outcomes

    def _room(self, batch: Runner, active: dict, outcomes: dict) -> int:
        """How many more jobs to claim now (in one claim_many): below the batch size, below what
        --max-jobs leaves, and as many more of the largest running job's size as memory admission
        says fit, counted one at a time (room() answers for one more). Each claimed job is still
        checked by admit(); one that does not fit goes back to the queue."""
        if self.stopping.is_set():
            return 0
        want = self.sizer.size - len(active)
        if self.cfg.max_jobs:
            want = min(want, self.cfg.max_jobs - self.done - len(outcomes) - len(active))
        preset, running = batch.preset, batch.specs()
        largest = [max(running, key=lambda spec: estimate(spec, preset).job)] if running else []
        room = 0
        while room < want and self.admission.room(running + largest * room, preset):
            room += 1
        return room

    def _read(self, job: Job, outcomes: dict) -> JobSpec | None:
        """The claimed job's spec, read once: its images are references to uploads, loaded now (a
        failing store is waited out, not the job's fault). None: it cannot be read (an unreadable
        image, a preset gone), and the job has failed with one line."""
        log.info("job %s claimed (attempt %d): %r", job.id, job.attempts, job.prompt[:80])
        try:
            return JobSpec.from_dict(job.spec, load=self._upload)
        except Exception as error:  # noqa: BLE001 - only this job fails
            self._fail(job.lease, error, outcomes)
            return None

    def _admit(self, batch: Runner, job: Job, spec: JobSpec, heart: Heartbeat, active: dict, outcomes: dict) -> None:
        try:
            # Memory: a job that can never fit here fails with one line (TooLarge); one that does not
            # fit beside the running jobs goes back to the queue until one of them leaves.
            if not self.admission.admit(batch.specs(), spec, batch.preset):
                log.info("job %s: no memory for it beside %d running jobs; back to the queue", job.id, len(active))
                self.trouble.must(lambda: self.store.release(job.lease), f"job {job.id}")
                return
            batch.add(job.id, spec)
        except Exception as error:  # noqa: BLE001 - e.g. a missing upscaler: only this job fails
            self._fail(job.lease, error, outcomes)
            return
        heart.add(job.lease)
        active[job.id] = (job.lease, {"cancel": False, "last": 0.0, "frames": FrameThinning()})

    def _upload(self, sha256: str) -> bytes | None:
        return self.trouble.must(lambda: self.store.upload(sha256), f"image {sha256[:12]}")

    def _leave(self, batch: Runner, job_id: int, heart: Heartbeat, active: dict) -> None:
        lease, _ = active.pop(job_id)
        heart.remove(lease)
        batch.remove(job_id)

    def _fail(self, lease: Lease, error: BaseException, outcomes: dict, clear: bool = True) -> None:
        """`clear`: drop the cached models after running out of memory (not when the batch that
        holds them goes on: an upscaler ran out on its own, t2i/engine/runner.py)."""
        if clear and isinstance(error, (OutOfMemory, torch.OutOfMemoryError)):
            self.cache.clear()
        elif not isinstance(error, (T2IError, SpecError)):
            log.error("job %s raised", lease.job_id, exc_info=error)
        failed = self.trouble.must(lambda: self.store.fail(lease, failure_message(error)), f"job {lease.job_id}")
        outcomes[lease.job_id] = _ended(failed, "failed")
        log.info("job %s: %s (%s)", lease.job_id, outcomes[lease.job_id], _failure_line(error))  # paths kept

    def _on_step(self, lease: Lease, step, heart: Heartbeat, state: dict) -> bool:
        """Between steps: write progress and frames; True stops this job."""
        if heart.lost(lease):
            return True
        if self.stopping.is_set() and step.step < self.cfg.finish_fraction * step.total:
            return True
        if step.frame is not None and not self._write_frame(lease, step, state["frames"]):
            return True
        now = time.monotonic()
        if now - state["last"] >= PROGRESS_EVERY or step.frame is not None or step.step == step.total:
            state["last"] = now
            beat = self.trouble.optional(lambda: self.store.progress(lease, step.step, step.loss),
                                  default=Beat(alive=True, cancel_requested=False))
            if not beat.alive or beat.cancel_requested:
                state["cancel"] = beat.alive
                return True
        return False

    def _write_frame(self, lease: Lease, step, frames: FrameThinning) -> bool:
        """Store the step's frame if the thinning wants it (t2i/service/frames.py); False: the lease is lost."""
        if not frames.wanted():
            return True
        png = render.image_png(step.frame)
        written = self.trouble.optional(lambda: self.store.add_frame(lease, step.frame_step, png))
        if written is None:  # the store failed: ask it less often
            frames.failed()
        elif written and (drop := frames.written(step.frame_step)):
            self.trouble.optional(lambda: self.store.drop_frames(lease, drop))
        return written is not False

    def _stopped(self, lease: Lease, heart: Heartbeat, state: dict) -> str:
        if heart.lost(lease):
            return "lease lost: wrote nothing more"
        what = f"job {lease.job_id}"
        if state["cancel"]:
            return _ended(self.trouble.must(lambda: self.store.finish_cancelled(lease), what), "cancelled")
        if self.stopping.is_set():
            return _ended(self.trouble.must(lambda: self.store.release(lease), what), "released back to the queue")
        return "lease lost"

    def _complete(self, lease: Lease, spec: JobSpec, preset, result) -> str:
        params = render.parameters(spec, result, preset)
        stored = Result(job_id=lease.job_id, gif=render.gif_bytes(result.frames),
                        png=render.png_bytes(result.image, params), thumbnail=render.thumbnail_bytes(result.image),
                        parameters=params, width=result.width, height=result.height, seed=result.seed,
                        created_at=0.0)
        done = self.trouble.must(lambda: self.store.complete(lease, stored, keep_frames=self.cfg.keep_frames),
                          f"job {lease.job_id}")
        return _ended(done, "done")

    def close(self) -> None:
        self.store.close()


def _ended(written: bool | None, outcome: str) -> str:
    """A job's end state from its final write: True written, False fenced off, None the store failed."""
    return {True: outcome, False: "lease lost", None: "left running: the store failed"}[written]
