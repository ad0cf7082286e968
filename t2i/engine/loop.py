"""Running one job: a JobSpec and built models in, frames and a final image out.

The step itself (decode -> cutouts -> embed -> loss -> Adam step -> clamp, a frame every
`save_every` steps) lives in batch.py, shared with batches of many jobs. This module knows nothing of
queues or pages; callers watch progress through `on_step` and stop a run by returning True from it
(checked between steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..errors import Cancelled, OutOfMemory
from ..spec import JobSpec, decode_image
from .models import Models
from .prompts import Target


@dataclass
class Step:
    step: int                   # optimisation steps done
    total: int
    loss: float
    frame: Image.Image | None   # set every save_every steps
    frame_step: int | None      # the step count the frame shows
    elapsed: float


@dataclass
class Result:
    image: Image.Image
    frames: list[Image.Image]
    frame_steps: list[int]
    seed: int
    width: int
    height: int
    losses: list[float] = field(default_factory=list)


def to_pil(image: torch.Tensor) -> Image.Image:
    return TF.to_pil_image(image[0].detach().clamp(0, 1).float().cpu())


def make_targets(models: Models, spec: JobSpec) -> list[list[Target]]:
    """Per perceptor: one target per text part, then one per image prompt (weight 1)."""
    parts = spec.parts
    images = [decode_image(b) for b in spec.image_prompts]
    targets = []
    for p in models.perceptors:
        text = p.encode_text([part.text for part in parts])
        ts = [Target(text[i:i + 1], part.weight, part.stop, part.text) for i, part in enumerate(parts)]
        ts += [Target(p.encode_pil(im), 1.0, label=f"image prompt {i}") for i, im in enumerate(images, 1)]
        targets.append(ts)
    return targets


def run(spec: JobSpec, models: Models, on_step: Callable[[Step], bool | None] | None = None,
        precision: str = "fp32") -> Result:
    """One job: a batch of one (t2i/engine/batch.py holds the loop: decode, cut, encode, loss, step)."""
    from .batch import BatchRun

    batch = BatchRun(models, precision)
    try:
        batch.add(0, spec)
        while not batch.slots[0].done:
            step = batch.step()[0]
            if on_step and on_step(step):
                raise Cancelled(f"stopped after {step.step} of {spec.iterations} steps")
        return batch.result(0)
    except torch.OutOfMemoryError:
        raise out_of_memory(models, spec) from None


def run_batches(specs: list[JobSpec], models: Models, batch: int = 16, precision: str = "fp32") -> Iterator[Result]:
    """Many jobs to completion, `batch` optimised together at a time (jobs that share a batch_key);
    yields each Result in the order of `specs`. A job's image is the one `run` would give, up to
    floating-point noise."""
    from .batch import BatchRun

    for start in range(0, len(specs), batch):
        group = specs[start:start + batch]
        jobs = BatchRun(models, precision)
        try:
            for i, spec in enumerate(group):
                jobs.add(i, spec)
            while not all(slot.done for slot in jobs.slots.values()):
                jobs.step()
        except torch.OutOfMemoryError:
            raise out_of_memory(models, group[0]) from None
        for i in range(len(group)):
            yield jobs.result(i)


def out_of_memory(models: Models, spec: JobSpec) -> OutOfMemory:
    w, h = models.generator.fit_size(spec.width, spec.height)
    return OutOfMemory(f"out of {models.device.type.upper()} memory at {w}x{h} with {spec.cutn} cutouts: "
                       "lower the size or the cutouts")
