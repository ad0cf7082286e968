"""Putting work on the queue: validate like every other entry point, then insert.

Used by `python -m t2i submit` and the web pages. A rejected input raises SpecError or PresetError
before anything touches the store, so nothing half-made is left behind; a limit reached raises
QueueLimit, and the store checked it in the insert's own transaction, so nothing was inserted.

    submit_job(store, prompt, preset, ...)        one job
    submit_group(store, prompt, presets, ...)     one prompt and seed for 2 to 4 presets (compare presets)
    submit_batch(store, prompt, preset, seeds, ...)   one job per seed, all or none (an AUTOMATIC1111 batch)
"""

from __future__ import annotations

import inspect
import os
import random
from dataclasses import dataclass

from ..errors import SpecError, T2IError
from ..families import DEFAULT_FAMILY, FAMILIES, option_names
from . import caps
from .memory import check_submit
from ..presets import get_preset
from ..spec import Limits, make_spec
from ..store import GroupItem, JobStore
from ..store.base import Quota, QuotaReached


class QueueLimit(T2IError):
    """A per-address or global queue limit was reached; the message says what to do."""


@dataclass(frozen=True)
class SubmitPolicy:
    """Limits for public submitters (the web page), per client address (t2i/web/visitor.py: a visitor
    id costs nothing to replace, an address does); the operator's shell has none."""

    # queued + running at once; 4 so that a compare group of 4 presets (GROUP_SIZE) fits an idle address
    max_active_per_address: int = 4
    max_per_minute: int = 10
    max_queued: int = 500             # the whole queue
    # images (init image, image prompts) of the address's jobs queued, running or submitted in the
    # last 24 hours, each distinct image counted once (t2i/store/uploads.py)
    max_upload_bytes_per_address: int = 100 * 2**20
    # estimated work of the address's queued and running jobs (their steps still to run times their
    # family's cost per step, a guided step costing 1): two of the longest guided jobs (MAX_ITERATIONS),
    # or four of 2500 steps. With the claims' turns (t2i/store/sql_claims.py) it bounds how long one
    # address's jobs can keep executors from the others'.
    max_work_per_address: float = 10_000

    @classmethod
    def from_env(cls) -> "SubmitPolicy":
        """T2I_MAX_ACTIVE_PER_ADDRESS (formerly T2I_MAX_ACTIVE_PER_VISITOR), T2I_MAX_PER_MINUTE, T2I_MAX_QUEUED,
        T2I_MAX_UPLOAD_BYTES_PER_ADDRESS, T2I_MAX_WORK_PER_ADDRESS."""
        d = cls()
        active = os.environ.get("T2I_MAX_ACTIVE_PER_ADDRESS") or os.environ.get("T2I_MAX_ACTIVE_PER_VISITOR")
        return cls(int(active or d.max_active_per_address),
                   int(os.environ.get("T2I_MAX_PER_MINUTE", d.max_per_minute)),
                   int(os.environ.get("T2I_MAX_QUEUED", d.max_queued)),
                   max_upload_bytes_per_address=int(os.environ.get("T2I_MAX_UPLOAD_BYTES_PER_ADDRESS",
                                                                   d.max_upload_bytes_per_address)),
                   max_work_per_address=float(os.environ.get("T2I_MAX_WORK_PER_ADDRESS", d.max_work_per_address)))

    @property
    def quota(self) -> Quota:
        return Quota(max_active=self.max_active_per_address, max_per_minute=self.max_per_minute,
                     max_queued=self.max_queued, max_upload_bytes=self.max_upload_bytes_per_address,
                     max_work=self.max_work_per_address, step_cost=step_cost)

    def message(self, reached: QuotaReached, jobs: int = 1) -> str:
        """The line for a refused submission of `jobs` jobs (a compare group counts each of its jobs)."""
        if reached.bound == "work":
            return self._work_message(reached, "this group" if jobs > 1 else "this job")
        if jobs > 1 and reached.bound in ("active", "per_minute"):
            return {"active": f"your address may have {self.max_active_per_address} jobs queued or running and "
                              f"this group adds {jobs}; wait for one to finish or cancel one, or compare fewer presets",
                    "per_minute": f"at most {self.max_per_minute} submissions a minute, and a group of {jobs} "
                                  f"counts {jobs}; please wait a moment"}[reached.bound]
        messages = {
            "queued": f"the queue is full ({self.max_queued} jobs waiting); please try again in a few minutes",
            "active": f"your address already has {self.max_active_per_address} jobs queued or running; "
                      "wait for one to finish or cancel one",
            "per_minute": f"at most {self.max_per_minute} submissions a minute; please wait a moment",
            "upload_bytes": f"your address's images of the last 24 hours would pass "
                            f"{self.max_upload_bytes_per_address / 2**20:g} MB; reuse an image already sent "
                            "(each counts once) or wait for older jobs to age out"}
        return messages[reached.bound]

    def _work_message(self, reached: QuotaReached, what: str) -> str:
        budget = f"your address's {_units(self.max_work_per_address)} units of work (a unit: one guided step)"
        if reached.asked > self.max_work_per_address:
            return f"{what} alone needs {_units(reached.asked)} units, over {budget}; ask for fewer steps"
        return (f"your queued and running jobs already hold {_units(reached.held)} of {budget} and {what} needs "
                f"{_units(reached.asked)}; wait for one to finish, cancel one, or ask for fewer steps")


def _units(work: float) -> str:
    return f"{work:,.0f}" if work >= 10 else f"{work:.2g}"


def step_cost(spec: dict) -> float:
    """A stored job's work per step: its family's (Family.step_cost). A spec of a family unknown here
    (written by another version of t2i) costs what the dearest family's step does."""
    known = FAMILIES.get(spec.get("family") or DEFAULT_FAMILY)
    return known.step_cost if known else max(f.step_cost for f in FAMILIES.values())


def _validated(prompt, preset: str, limits: Limits, fields: dict) -> GroupItem:
    """One job's input checked as every entry point checks it: the fields (make_spec), what it would
    really make and whether its upscalers' files are here (t2i/service/caps.py), then the memory the
    job needs (t2i/service/memory.py). Returns what the store inserts."""
    p = get_preset(preset)
    spec = make_spec(prompt, p.name, family=p.family, limits=limits, defaults=p.defaults, post=p.post, **fields)
    caps.check(spec, p)
    check_submit(spec, p, limits.max_job_memory, limits.max_side)
    return GroupItem(spec.to_dict(), spec.batch_key, spec.total_steps, tuple(spec.uploads()))


def submit_job(store: JobStore, prompt, preset: str, *, priority: int = 0, submitter: str | None = None,
               address: str | None = None, limits: Limits = Limits(), policy: SubmitPolicy | None = None,
               max_attempts: int = 3, **fields) -> int:
    """fields: the common ones (width, height, save_every, seed, init_image, image_prompts, upscale:
    default the preset's post-steps) and the preset's family's options (iterations, cutn, lr | sampler, steps, guidance, ...), raw.

    Validation first (the fields, then the memory the job needs: t2i/service/memory.py), then one insert;
    with a policy, the policy's limits for `address` are checked in the insert's transaction (a
    submission without an address counts against "anonymous"). The images are stored once each, by
    their hash, in that same transaction; the spec refers to them."""
    item = _validated(prompt, preset, limits, fields)
    job = dict(batch_key=item.batch_key, total=item.total, priority=priority, submitter=submitter,
               max_attempts=max_attempts, uploads=list(item.uploads))
    if policy is None:
        return store.submit(item.spec, **job)
    try:
        return store.submit_limited(item.spec, address=address or "anonymous", quota=policy.quota, **job)
    except QuotaReached as reached:
        raise QueueLimit(policy.message(reached)) from None


def submit_batch(store: JobStore, prompt, preset: str, seeds: list[int], *, submitter: str | None = None,
                 address: str | None = None, limits: Limits = Limits(), policy: SubmitPolicy | None = None,
                 **fields) -> list[int]:
    """One job per seed, otherwise alike, each validated as submit_job validates one, queued all or
    none in one transaction (no compare group: each is a job of its own). With a policy its limits
    count every job (QueueLimit, nothing inserted). Why separate jobs rather than the family's
    samples: each image is then remade alone by its own seed, whatever family the preset is."""
    items = [_validated(prompt, preset, limits, {**fields, "seed": seed}) for seed in seeds]
    if policy is not None and len(items) > policy.max_active_per_address:   # would never fit: say so, not "wait"
        raise QueueLimit(f"your address may have {policy.max_active_per_address} jobs queued or running and "
                         f"each image is a job: ask for at most {policy.max_active_per_address} images at once")
    if policy is None:
        return store.submit_group(items, submitter=submitter, grouped=False)
    try:
        return store.submit_group(items, submitter=submitter, address=address or "anonymous",
                                  quota=policy.quota, grouped=False)
    except QuotaReached as reached:
        raise QueueLimit(_batch_message(policy, reached, len(items))) from None


def _batch_message(policy: SubmitPolicy, reached: QuotaReached, jobs: int) -> str:
    if jobs == 1:
        return policy.message(reached)
    if reached.bound == "work":
        return policy._work_message(reached, f"these {jobs} images")
    return {"active": f"your address may have {policy.max_active_per_address} jobs queued or running and this "
                      f"request adds {jobs} (a job per image); wait for one to finish or cancel one, or ask for "
                      "fewer images",
            "per_minute": f"at most {policy.max_per_minute} submissions a minute, and each of these {jobs} images "
                          "counts one; please wait a moment"}.get(reached.bound) or policy.message(reached, jobs)


# --- compare groups ---------------------------------------------------------------------------

GROUP_SIZE = (2, 4)   # presets in one compare group: fewer compares nothing; more do not fit a page's row
GROUP_SEED_RANGE = 2**32  # a seed picked for a group: short enough to read and type back
# make_spec's own fields (size, seed, images, upscale...): they apply to every preset of a group.
COMMON_FIELDS = tuple(n for n, p in inspect.signature(make_spec).parameters.items()
                      if p.kind is p.KEYWORD_ONLY and n not in ("family", "limits", "defaults", "post"))


def _blank(value) -> bool:
    return value is None or value == "" or value == () or value == []


def _check_presets(presets) -> list[str]:
    """2 to 4 distinct preset names, or SpecError("presets", ...)."""
    names = [str(p).strip() for p in presets or ()]
    low, high = GROUP_SIZE
    if not low <= len(names) <= high:
        raise SpecError("presets", f"compare {low} to {high} presets, got {len(names)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpecError("presets", f"each preset once, got {', '.join(repeated)} more than once")
    return names


def submit_group(store: JobStore, prompt, presets: list[str], *, seed=None, priority: int = 0,
                 submitter: str | None = None, address: str | None = None, limits: Limits = Limits(),
                 policy: SubmitPolicy | None = None, max_attempts: int = 3, rng: random.Random | None = None,
                 **fields) -> list[int]:
    """One prompt and seed for 2 to 4 distinct presets, as one compare group (store.submit_group:
    every job's group_id is the first one's id). Returns the job ids in the group's order.

    Each preset's job is validated exactly as submit_job validates one. `fields`: the common ones
    (COMMON_FIELDS: width, height, save_every, images, upscale) go to every preset; a family's option
    (iterations, steps, sampler, ...) goes to the presets of the families that have an option of
    that name, and the others keep their preset's defaults. An option no chosen family has is refused
    with one line, as make_spec refuses one for a single job. A message about one preset's job names
    the preset. No seed: one is picked here, so every preset starts from the same one.

    The group is inserted in a random order (rng), which the page's labels A-D follow: the order the
    visitor chose the presets in does not tell which image is which. With a policy, the policy's
    limits count every job of the group (QueueLimit, nothing inserted, when it does not fit)."""
    names = _check_presets(presets)
    families = {name: get_preset(name).family for name in names}   # PresetError for an unknown one
    own = {name: set(option_names(family)) for name, family in families.items()}
    for field, value in fields.items():
        if field not in COMMON_FIELDS and not _blank(value) and not any(field in o for o in own.values()):
            raise SpecError(field, f"does not apply to any chosen preset's family "
                                   f"({', '.join(sorted(set(families.values())))})")
    if _blank(seed):
        seed = (rng or random.SystemRandom()).randrange(GROUP_SEED_RANGE)
    items = []
    for name in names:
        mine = {k: v for k, v in fields.items() if k in COMMON_FIELDS or k in own[name]}
        try:
            items.append(_validated(prompt, name, limits, {**mine, "seed": seed}))
        except SpecError as e:
            if e.field == "prompt":   # the same for every preset
                raise
            named = SpecError(name, str(e))   # which preset's job the field does not fit
            named.field = e.field
            raise named from None
    (rng or random.SystemRandom()).shuffle(items)
    job = dict(priority=priority, submitter=submitter, max_attempts=max_attempts)
    if policy is None:
        return store.submit_group(items, **job)
    # A group larger than the address's whole allowance would never fit: say so, not "wait".
    if len(items) > policy.max_active_per_address:
        raise QueueLimit(f"your address may have {policy.max_active_per_address} jobs queued or running; "
                         f"compare at most {policy.max_active_per_address} presets")
    try:
        return store.submit_group(items, address=address or "anonymous", quota=policy.quota, **job)
    except QuotaReached as reached:
        raise QueueLimit(policy.message(reached, jobs=len(items))) from None
