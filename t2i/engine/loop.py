"""The optimisation loop: a JobSpec and built models in, frames and a final image out.

Reads top to bottom: init latent, then per step decode -> cutouts -> embed -> loss -> Adam step ->
clamp, a frame every `save_every` steps. It knows nothing of queues or pages; callers watch progress
through `on_step` and stop a run by returning True from it (checked between steps).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..errors import Cancelled, OutOfMemory
from ..spec import MAX_SEED, JobSpec, decode_image
from .cutouts import CutoutConfig, make_cutouts
from .models import Models
from .prompts import Target, guidance_loss


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


def run(spec: JobSpec, models: Models, on_step: Callable[[Step], bool | None] | None = None) -> Result:
    try:
        return _optimise(spec, models, on_step)
    except torch.OutOfMemoryError:
        w, h = models.generator.fit_size(spec.width, spec.height)
        raise OutOfMemory(f"out of {models.device.type.upper()} memory at {w}x{h} with {spec.cutn} cutouts: "
                          "lower the size or the cutouts") from None


def _optimise(spec: JobSpec, models: Models, on_step) -> Result:
    seed = spec.seed if spec.seed is not None else secrets.randbelow(MAX_SEED + 1)
    gen = torch.Generator(device=models.device).manual_seed(seed)
    generator = models.generator
    width, height = generator.fit_size(spec.width, spec.height)
    init_image = decode_image(spec.init_image) if spec.init_image else None

    with torch.enable_grad():
        latent = generator.init_latent(width, height, gen, init_image)
        targets = make_targets(models, spec)
        cut_cfgs = [CutoutConfig(cut_size=p.input_size, cutn=spec.cutn, **models.preset.cutouts)
                    for p in models.perceptors]
        opt = torch.optim.Adam(latent, lr=spec.lr)
        frames, frame_steps, losses = [], [], []
        start = time.monotonic()

        for i in range(spec.iterations):
            image = generator.decode(latent)
            frame = None
            if i % spec.save_every == 0:
                frame = to_pil(image)
                frames.append(frame)
                frame_steps.append(i)
            loss = sum(guidance_loss(p.encode_image(make_cutouts(image, cfg, gen)), ts)
                       for p, cfg, ts in zip(models.perceptors, cut_cfgs, targets))
            reg = generator.reg_loss(latent)
            if reg is not None:
                loss = loss + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            generator.clamp_(latent)
            losses.append(float(loss.detach()))
            if on_step and on_step(Step(i + 1, spec.iterations, losses[-1], frame, i if frame else None,
                                        time.monotonic() - start)):
                raise Cancelled(f"stopped after {i + 1} of {spec.iterations} steps")

    with torch.no_grad():
        final = to_pil(generator.decode(latent))
    frames.append(final)
    frame_steps.append(spec.iterations)
    return Result(final, frames, frame_steps, seed, width, height, losses)
