"""Putting work on the queue: validate like every other entry point, then insert.

Used by `python -m t2i submit` and the web pages. A rejected input raises SpecError or PresetError
before anything touches the store, so nothing half-made is left behind.
"""

from __future__ import annotations

from .presets import get_preset
from .spec import Limits, make_spec
from .store import JobStore


def submit_job(store: JobStore, prompt, preset: str, *, priority: int = 0, submitter: str | None = None,
               limits: Limits = Limits(), max_attempts: int = 3, **fields) -> int:
    """fields: width, height, iterations, cutn, lr, save_every, seed, init_image, image_prompts (raw)."""
    p = get_preset(preset)
    spec = make_spec(prompt, p.name, limits=limits, defaults=p.defaults, **fields)
    return store.submit(spec.to_dict(), priority=priority, submitter=submitter, max_attempts=max_attempts)
