"""Putting work on the queue: validate like every other entry point, then insert.

Used by `python -m t2i submit` and the web pages. A rejected input raises SpecError or PresetError
before anything touches the store, so nothing half-made is left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import T2IError
from .memory import check_submit
from .presets import get_preset
from .spec import Limits, make_spec
from .store import JobStore


class QueueLimit(T2IError):
    """A per-visitor or global queue limit was reached; the message says what to do."""


@dataclass(frozen=True)
class SubmitPolicy:
    """Limits for public submitters (the web page); the operator's shell has none."""

    max_active_per_submitter: int = 3   # queued + running at once
    max_per_minute: int = 10
    max_queued: int = 500               # the whole queue

    @classmethod
    def from_env(cls) -> "SubmitPolicy":
        """T2I_MAX_ACTIVE_PER_VISITOR, T2I_MAX_PER_MINUTE, T2I_MAX_QUEUED."""
        d = cls()
        return cls(int(os.environ.get("T2I_MAX_ACTIVE_PER_VISITOR", d.max_active_per_submitter)),
                   int(os.environ.get("T2I_MAX_PER_MINUTE", d.max_per_minute)),
                   int(os.environ.get("T2I_MAX_QUEUED", d.max_queued)))

    def check(self, store: JobStore, submitter: str) -> None:
        if store.counts()["queued"] >= self.max_queued:
            raise QueueLimit(f"the queue is full ({self.max_queued} jobs waiting); please try again in a few minutes")
        if store.active_jobs(submitter) >= self.max_active_per_submitter:
            raise QueueLimit(f"you already have {self.max_active_per_submitter} jobs queued or running; "
                             "wait for one to finish or cancel one")
        if store.submitted_since(submitter, 60) >= self.max_per_minute:
            raise QueueLimit(f"at most {self.max_per_minute} submissions a minute; please wait a moment")


def submit_job(store: JobStore, prompt, preset: str, *, priority: int = 0, submitter: str | None = None,
               limits: Limits = Limits(), policy: SubmitPolicy | None = None, max_attempts: int = 3,
               **fields) -> int:
    """fields: the common ones (width, height, save_every, seed, init_image, image_prompts) and the
    preset's family's options (iterations, cutn, lr | sampler, steps, guidance, ...), raw.

    Validation first (the fields, then the memory the job needs: t2i/memory.py), then the policy
    (when given, for a submitter), then one insert."""
    p = get_preset(preset)
    spec = make_spec(prompt, p.name, family=p.family, limits=limits, defaults=p.defaults, **fields)
    check_submit(spec, p, limits.max_job_memory, limits.max_side)
    if policy is not None:
        policy.check(store, submitter or "anonymous")
    return store.submit(spec.to_dict(), batch_key=spec.batch_key, total=spec.total_steps, priority=priority,
                        submitter=submitter, max_attempts=max_attempts)
