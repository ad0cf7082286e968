"""Several jobs optimised as one batch: the loop itself, for one job or many.

Shared per step: one decode of every latent, one grid_sample of every cutout and one perceptor pass
per perceptor. Per job: its latent, prompt targets, random-number generator (seeded by its seed),
Adam state and step count. Jobs join and leave between steps, and a job's result does not depend on
its batch-mates beyond floating-point noise (each job's loss reaches only its own latent).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import torch

from ..spec import MAX_SEED, JobSpec, decode_image
from .cutouts import CutoutConfig, make_cutouts_batch
from .models import Models
from .prompts import Target, guidance_loss
from .sketch import sketch_image

PRECISIONS = ("fp32", "bf16")


@dataclass
class Slot:
    spec: JobSpec
    seed: int
    gen: torch.Generator
    latent: list[torch.Tensor]
    targets: list[list[Target]]       # per perceptor
    opt: torch.optim.Optimizer
    anchor: list[torch.Tensor] | None = None  # the starting latent, when the preset's init_weight holds it
    step: int = 0
    frames: list = field(default_factory=list)
    frame_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.step >= self.spec.iterations


class BatchRun:
    def __init__(self, models: Models, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.models = models
        self.precision = precision
        self.slots: dict[object, Slot] = {}
        self.key: str | None = None
        self.cut_cfgs: list[CutoutConfig] = []

    def __len__(self) -> int:
        return len(self.slots)

    def accepts(self, spec: JobSpec) -> bool:
        return self.key is None or spec.batch_key == self.key

    def add(self, name, spec: JobSpec) -> Slot:
        """Start a job (its latent from its own seed); it takes part from the next step on."""
        from .loop import make_targets

        if not self.accepts(spec):
            raise ValueError(f"job {name} does not fit this batch ({spec.batch_key} vs {self.key})")
        models, device = self.models, self.models.device
        seed = spec.seed if spec.seed is not None else secrets.randbelow(MAX_SEED + 1)
        gen = torch.Generator(device=device).manual_seed(seed)
        width, height = models.generator.fit_size(spec.width, spec.height)
        targets = make_targets(models, spec)
        init = decode_image(spec.init_image) if spec.init_image else None
        if init is None and models.sketch is not None:
            text = targets[0][:len(spec.parts)]  # text targets come first, then image prompts
            init = sketch_image(models.sketch, torch.cat([t.embed for t in text]), [t.weight for t in text])
        with torch.enable_grad():
            latent = models.generator.init_latent(width, height, gen, init)
        anchor = [t.detach().clone() for t in latent] if models.preset.init_weight > 0 else None
        slot = Slot(spec, seed, gen, latent, targets, torch.optim.Adam(latent, lr=spec.lr), anchor)
        if self.key is None:
            self.key = spec.batch_key
            self.cut_cfgs = [CutoutConfig(cut_size=p.input_size, cutn=spec.cutn, **models.preset.cutouts)
                             for p in models.perceptors]
        self.slots[name] = slot
        return slot

    def remove(self, name) -> Slot:
        slot = self.slots.pop(name)
        if not self.slots:
            self.key = None
        return slot

    def step(self) -> dict:
        """One optimisation step of every unfinished job; returns {name: loop.Step}."""
        from .loop import Step, to_pil

        names = [n for n, s in self.slots.items() if not s.done]
        slots = [self.slots[n] for n in names]
        if not slots:
            return {}
        generator, gens = self.models.generator, [s.gen for s in slots]
        with torch.enable_grad():
            latent = [torch.cat(parts) for parts in zip(*(s.latent for s in slots))]
            progress = torch.tensor([s.step / s.spec.iterations for s in slots], device=self.models.device)
            with self._autocast():
                images = generator.decode(latent, progress)
            frames = {}
            for b, s in enumerate(slots):
                if s.step % s.spec.save_every == 0:
                    frames[b] = to_pil(images[b:b + 1])
                    s.frames.append(frames[b])
                    s.frame_steps.append(s.step)
            losses = [torch.zeros((), device=images.device) for _ in slots]
            for p, cfg, k in zip(self.models.perceptors, self.cut_cfgs, range(len(self.cut_cfgs))):
                with self._autocast():
                    embeds = p.encode_image(make_cutouts_batch(images, cfg, gens))
                embeds = embeds.float().view(len(slots), cfg.cutn, -1)
                for b, s in enumerate(slots):
                    losses[b] = losses[b] + guidance_loss(embeds[b], s.targets[k])
            for b, s in enumerate(slots):
                reg = generator.reg_loss(s.latent)
                if reg is not None:
                    losses[b] = losses[b] + reg
                if s.anchor is not None:
                    drift = sum((z - z0).pow(2).mean() for z, z0 in zip(s.latent, s.anchor))
                    losses[b] = losses[b] + self.models.preset.init_weight * drift
            for s in slots:
                s.opt.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
        out, now = {}, time.monotonic()
        for b, (name, s) in enumerate(zip(names, slots)):
            s.opt.step()
            generator.clamp_(s.latent)
            s.losses.append(float(losses[b].detach()))
            frame_step = s.step if b in frames else None
            s.step += 1
            out[name] = Step(s.step, s.spec.iterations, s.losses[-1], frames.get(b), frame_step, now - s.start)
        return out

    def result(self, name):
        """The finished job's final image, frames and figures."""
        from .loop import Result, to_pil

        s = self.slots[name]
        with torch.no_grad(), self._autocast():
            final = to_pil(self.models.generator.decode(s.latent).float())
        width, height = self.models.generator.fit_size(s.spec.width, s.spec.height)
        return Result(final, [*s.frames, final], [*s.frame_steps, s.step], s.seed, width, height, s.losses)

    def _autocast(self):
        # bf16 for the heavy forward passes; latents, Adam state and losses stay fp32.
        return torch.autocast(self.models.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
