"""Putting work on the queue: validate like every other entry point, then insert.

Used by `python -m t2i submit` and the web pages. A rejected input raises SpecError or PresetError
before anything touches the store, so nothing half-made is left behind; a limit reached raises
QueueLimit, and the store checked it in the insert's own transaction, so nothing was inserted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import T2IError
from .memory import check_submit
from .presets import get_preset
from .spec import Limits, make_spec
from .store import JobStore
from .store.base import Quota, QuotaReached


class QueueLimit(T2IError):
    """A per-address or global queue limit was reached; the message says what to do."""


@dataclass(frozen=True)
class SubmitPolicy:
    """Limits for public submitters (the web page), per client address (t2i/web/visitor.py: a visitor
    id costs nothing to replace, an address does); the operator's shell has none."""

    max_active_per_address: int = 3   # queued + running at once
    max_per_minute: int = 10
    max_queued: int = 500             # the whole queue
    # images (init image, image prompts) of the address's jobs queued, running or submitted in the
    # last 24 hours, each distinct image counted once (t2i/store/uploads.py)
    max_upload_bytes_per_address: int = 100 * 2**20

    @classmethod
    def from_env(cls) -> "SubmitPolicy":
        """T2I_MAX_ACTIVE_PER_ADDRESS (formerly T2I_MAX_ACTIVE_PER_VISITOR), T2I_MAX_PER_MINUTE, T2I_MAX_QUEUED,
        T2I_MAX_UPLOAD_BYTES_PER_ADDRESS."""
        d = cls()
        active = os.environ.get("T2I_MAX_ACTIVE_PER_ADDRESS") or os.environ.get("T2I_MAX_ACTIVE_PER_VISITOR")
        return cls(int(active or d.max_active_per_address),
                   int(os.environ.get("T2I_MAX_PER_MINUTE", d.max_per_minute)),
                   int(os.environ.get("T2I_MAX_QUEUED", d.max_queued)),
                   max_upload_bytes_per_address=int(os.environ.get("T2I_MAX_UPLOAD_BYTES_PER_ADDRESS",
                                                                   d.max_upload_bytes_per_address)))

    @property
    def quota(self) -> Quota:
        return Quota(max_active=self.max_active_per_address, max_per_minute=self.max_per_minute,
                     max_queued=self.max_queued, max_upload_bytes=self.max_upload_bytes_per_address)

    def message(self, reached: QuotaReached) -> str:
        messages = {
            "queued": f"the queue is full ({self.max_queued} jobs waiting); please try again in a few minutes",
            "active": f"your address already has {self.max_active_per_address} jobs queued or running; "
                      "wait for one to finish or cancel one",
            "per_minute": f"at most {self.max_per_minute} submissions a minute; please wait a moment",
            "upload_bytes": f"your address's images of the last 24 hours would pass "
                            f"{self.max_upload_bytes_per_address / 2**20:g} MB; reuse an image already sent "
                            "(each counts once) or wait for older jobs to age out"}
        return messages[reached.bound]


def submit_job(store: JobStore, prompt, preset: str, *, priority: int = 0, submitter: str | None = None,
               address: str | None = None, limits: Limits = Limits(), policy: SubmitPolicy | None = None,
               max_attempts: int = 3, **fields) -> int:
    """fields: the common ones (width, height, save_every, seed, init_image, image_prompts, upscale:
    default the preset's post-steps) and the preset's family's options (iterations, cutn, lr | sampler, steps, guidance, ...), raw.

    Validation first (the fields, then the memory the job needs: t2i/memory.py), then one insert;
    with a policy, the policy's limits for `address` are checked in the insert's transaction (a
    submission without an address counts against "anonymous"). The images are stored once each, by
    their hash, in that same transaction; the spec refers to them."""
    p = get_preset(preset)
    spec = make_spec(prompt, p.name, family=p.family, limits=limits, defaults=p.defaults, post=p.post, **fields)
    check_submit(spec, p, limits.max_job_memory, limits.max_side)
    job = dict(batch_key=spec.batch_key, total=spec.total_steps, priority=priority, submitter=submitter,
               max_attempts=max_attempts, uploads=spec.uploads())
    if policy is None:
        return store.submit(spec.to_dict(), **job)
    try:
        return store.submit_limited(spec.to_dict(), address=address or "anonymous", quota=policy.quota, **job)
    except QuotaReached as reached:
        raise QueueLimit(policy.message(reached)) from None
