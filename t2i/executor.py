"""The executor: claims jobs from the store, runs the engine, writes progress, frames and results back.

One executor per GPU (or CPU); several share a store. While a job runs, a heartbeat thread keeps its
lease alive; progress writes (at most every PROGRESS_EVERY seconds) also tell whether a cancel was
asked. A job that raises is failed with a one-line reason and the executor takes the next one.
SIGTERM/SIGINT stop at the next step boundary: the job goes back to the queue, or is finished when
nearly done, and the process exits 0.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import torch

from . import render
from .engine import Models, build_models, run
from .errors import Cancelled, OutOfMemory, T2IError
from .presets import get_preset
from .spec import JobSpec, SpecError
from .store import Job, Lease, Result, open_store

log = logging.getLogger("t2i.executor")
PROGRESS_EVERY = 0.5  # seconds between progress writes (frames are written as they come)


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

    def __post_init__(self):
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ModelCache:
    """Built models by preset, so consecutive jobs with the same preset do not reload."""

    def __init__(self, device: str, size: int):
        self.device, self.size = device, max(1, size)
        self._models: OrderedDict[str, Models] = OrderedDict()

    def get(self, preset_name: str) -> Models:
        if preset_name in self._models:
            self._models.move_to_end(preset_name)
            return self._models[preset_name]
        while len(self._models) >= self.size:
            self._models.popitem(last=False)
            free_memory()
        models = build_models(get_preset(preset_name), device=self.device)
        self._models[preset_name] = models
        return models

    def clear(self) -> None:
        self._models.clear()
        free_memory()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Heartbeat(threading.Thread):
    """Extends the lease every lease/3 seconds on its own connection; notices a lost lease."""

    def __init__(self, cfg: ExecutorConfig, lease: Lease):
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.cfg, self.lease = cfg, lease
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        store = open_store(self.cfg.db)
        try:
            while not self._stop_event.wait(self.cfg.lease / 3):
                try:
                    if not store.heartbeat(self.lease, self.cfg.lease).alive:
                        self.lost.set()
                        return
                except Exception:  # a transient database error: the next beat may succeed
                    log.exception("heartbeat for job %s failed", self.lease.job_id)
        finally:
            store.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def failure_message(error: BaseException) -> str:
    """One line a user can act on; internals get their type and first line, never a traceback."""
    if isinstance(error, (T2IError, SpecError)):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):  # outside the loop, e.g. while loading models
        return "out of device memory while preparing the job: try again later or use a smaller preset"
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"internal error ({type(error).__name__}{': ' + first if first else ''}); the operator's log has details"


class Executor:
    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.store = open_store(cfg.db)
        self.cache = ModelCache(cfg.device, cfg.cache_size)
        self.stopping = threading.Event()
        self.done = 0

    def request_stop(self, *_args) -> None:
        log.info("stop requested: finishing at the next step boundary")
        self.stopping.set()

    def _seen(self, job_id: int | None) -> None:
        try:
            self.store.worker_seen(self.cfg.worker_id, host=socket.gethostname(), device=self.cfg.device,
                                   job_id=job_id)
        except Exception:
            log.exception("could not record this executor as seen")

    def run(self) -> int:
        log.info("executor %s on %s, store %s", self.cfg.worker_id, self.cfg.device, self.cfg.db.split("@")[-1])
        delay = self.cfg.poll
        self.store.listen()
        while not self.stopping.is_set():
            requeued, ended = self.store.sweep()
            if requeued or ended:
                log.info("sweep: %d expired jobs requeued, %d failed or cancelled", requeued, ended)
            job = self.store.claim(self.cfg.worker_id, self.cfg.lease)
            if job is None:
                if self.cfg.once:
                    break
                self._seen(None)
                self.store.wait_for_work(delay)
                delay = min(delay * 2, self.cfg.max_poll)
                continue
            delay = self.cfg.poll
            self.process(job)
            self.done += 1
            if self.cfg.max_jobs and self.done >= self.cfg.max_jobs:
                break
        self._seen(None)
        log.info("executor %s exiting after %d jobs", self.cfg.worker_id, self.done)
        return 0

    def process(self, job: Job) -> str:
        """Run one claimed job to its end state; returns that state for logs and tests."""
        lease = job.lease
        log.info("job %s claimed (attempt %d): %r", job.id, lease.attempt, job.prompt[:80])
        self._seen(job.id)
        heart = Heartbeat(self.cfg, lease)
        heart.start()
        state = {"cancel": False, "last": 0.0}
        try:
            spec = JobSpec.from_dict(job.spec)
            models = self.cache.get(spec.preset)
            result = run(spec, models, lambda step: self._on_step(lease, step, heart, state))
            outcome = self._complete(lease, spec, models, result)
        except Cancelled:
            outcome = self._stopped(lease, heart, state)
        except Exception as error:  # noqa: BLE001 - every failure becomes the job's reason
            if isinstance(error, (OutOfMemory, torch.OutOfMemoryError)):
                self.cache.clear()
            elif not isinstance(error, (T2IError, SpecError)):
                log.exception("job %s raised", job.id)
            outcome = "failed" if self.store.fail(lease, failure_message(error)) else "lease lost"
        finally:
            heart.stop()
        log.info("job %s: %s", job.id, outcome)
        return outcome

    def _on_step(self, lease: Lease, step, heart: Heartbeat, state: dict) -> bool:
        """Between steps: write progress and frames; True stops the run."""
        if heart.lost.is_set():
            return True
        if self.stopping.is_set() and step.step < self.cfg.finish_fraction * step.total:
            return True
        if step.frame is not None and not self.store.add_frame(lease, step.frame_step, render.image_png(step.frame)):
            return True
        now = time.monotonic()
        if now - state["last"] >= PROGRESS_EVERY or step.frame is not None or step.step == step.total:
            state["last"] = now
            beat = self.store.progress(lease, step.step, step.loss)
            if not beat.alive or beat.cancel_requested:
                state["cancel"] = beat.alive
                return True
        return False

    def _stopped(self, lease: Lease, heart: Heartbeat, state: dict) -> str:
        if heart.lost.is_set():
            return "lease lost: wrote nothing more"
        if state["cancel"]:
            return "cancelled" if self.store.finish_cancelled(lease) else "lease lost"
        if self.stopping.is_set():
            return "released back to the queue" if self.store.release(lease) else "lease lost"
        return "stopped"

    def _complete(self, lease: Lease, spec: JobSpec, models: Models, result) -> str:
        params = render.parameters(spec, result, models.preset)
        stored = Result(job_id=lease.job_id, gif=render.gif_bytes(result.frames),
                        png=render.png_bytes(result.image, params), thumbnail=render.thumbnail_bytes(result.image),
                        parameters=params, width=result.width, height=result.height, seed=result.seed,
                        created_at=0.0)
        return "done" if self.store.complete(lease, stored, keep_frames=self.cfg.keep_frames) else "lease lost"

    def close(self) -> None:
        self.store.close()
