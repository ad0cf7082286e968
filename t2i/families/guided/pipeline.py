"""The guided family: a generator's latent optimised by Adam until CLIP perceptors see the prompt.

Per job: its latent, prompt targets (per perceptor), Adam state and step count; the random draws
(initial codes, cutouts, augmentations) come from the job's generator. One step of a batch decodes
every latent at once, cuts every job's cutouts in one `grid_sample`, runs each perceptor once on all
of them, and backpropagates the sum of per-job losses (each reaches only its own latent).
Models are built by t2i/families/guided/build.py, the one place that
decides where the generator's and the perceptors' weights come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from ...engine.cutouts import CutoutConfig, make_cutouts_batch
from ...engine.perceptor import Perceptor
from ...engine.prompts import Target, guidance_loss
from ...engine.sketch import SketchNet, sketch_image
from ...engine.runner import to_pil
from ...spec import JobSpec, decode_image
from ..base import Finished, StepOut
from ..preset import Preset
from .options import GuidedOptions
from .preset import parts

def _options(spec: JobSpec) -> GuidedOptions:
    """The job's options, typed as this family's."""
    return cast(GuidedOptions, spec.options)



@dataclass
class GuidedJob:
    spec: JobSpec
    gen: torch.Generator                    # the job's own: cutouts and augmentations draw from it
    latent: list[torch.Tensor]
    targets: list[list[Target]]             # per perceptor: text parts first, then image prompts
    opt: torch.optim.Optimizer
    anchor: list[torch.Tensor] | None       # the starting latent, when the preset's init_weight holds it
    step: int = 0


@dataclass
class GuidedPipeline:
    preset: Preset
    generator: torch.nn.Module
    perceptors: list[Perceptor]
    device: torch.device
    sketch: SketchNet | None = None  # draws a job's start from the first perceptor's text embedding

    @property
    def factor(self) -> int:
        return self.generator.factor

    def used_size(self, spec: JobSpec) -> tuple[int, int]:
        return self.generator.fit_size(spec.width, spec.height)

    def describe(self, spec: JobSpec) -> str:
        return spec.options.describe(spec, *self.used_size(spec))

    def targets(self, spec: JobSpec) -> list[list[Target]]:
        """Per perceptor: one target per text part, then one per image prompt (weight 1)."""
        images = [decode_image(_loaded(b)) for b in spec.image_prompts]
        targets = []
        for p in self.perceptors:
            text = p.encode_text([part.text for part in spec.parts])
            ts = [Target(text[i:i + 1], part.weight, part.stop, part.text) for i, part in enumerate(spec.parts)]
            ts += [Target(p.encode_pil(im), 1.0, label=f"image prompt {i}") for i, im in enumerate(images, 1)]
            targets.append(ts)
        return targets

    def start(self, spec: JobSpec, gen: torch.Generator) -> GuidedJob:
        targets = self.targets(spec)
        init = decode_image(_loaded(spec.init_image)) if spec.init_image else None
        if init is None and self.sketch is not None:
            text = targets[0][:len(spec.parts)]
            init = sketch_image(self.sketch, torch.cat([t.embed for t in text]), [t.weight for t in text])
        with torch.enable_grad():
            latent = self.generator.init_latent(*self.used_size(spec), gen, init)
        anchor = [t.detach().clone() for t in latent] if parts(self.preset).init_weight > 0 else None
        return GuidedJob(spec, gen, latent, targets, torch.optim.Adam(latent, lr=_options(spec).lr), anchor)

    def step(self, jobs: list[GuidedJob], frames: list[bool], amp) -> list[StepOut]:
        gens = [j.gen for j in jobs]
        cut_cfgs = [CutoutConfig(cut_size=p.input_size, cutn=_options(jobs[0].spec).cutn, **parts(self.preset).cutouts)
                    for p in self.perceptors]
        with torch.enable_grad():
            latent = [torch.cat(parts) for parts in zip(*(j.latent for j in jobs))]
            progress = torch.tensor([j.step / _options(j.spec).iterations for j in jobs], device=self.device)
            with amp():
                images = self.generator.decode(latent, progress)
            losses = [torch.zeros((), device=images.device) for _ in jobs]
            for k, (p, cfg) in enumerate(zip(self.perceptors, cut_cfgs)):
                with amp():
                    embeds = p.encode_image(make_cutouts_batch(images, cfg, gens))
                embeds = embeds.float().view(len(jobs), cfg.cutn, -1)
                for b, j in enumerate(jobs):
                    losses[b] = losses[b] + guidance_loss(embeds[b], j.targets[k])
            for b, j in enumerate(jobs):
                losses[b] = losses[b] + self._regularisers(j)
            for j in jobs:
                j.opt.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
        outs = []
        for b, j in enumerate(jobs):
            frame = images[b:b + 1].detach() if frames[b] else None
            j.opt.step()
            self.generator.clamp_(j.latent)
            j.step += 1
            outs.append(StepOut(float(losses[b].detach()), frame))
        return outs

    def _regularisers(self, job: GuidedJob) -> torch.Tensor:
        """The generator's own (BigGAN keeps its noise in range) and the pull towards the start."""
        total = torch.zeros((), device=self.device)
        reg = self.generator.reg_loss(job.latent)
        if reg is not None:
            total = total + reg
        if job.anchor is not None:
            drift = sum((z - z0).pow(2).mean() for z, z0 in zip(job.latent, job.anchor))
            total = total + parts(self.preset).init_weight * drift
        return total

    def finish(self, jobs: list[GuidedJob]) -> list[Finished]:
        with torch.no_grad():
            return [Finished(to_pil(self.generator.decode(j.latent).float())) for j in jobs]


def _loaded(image) -> bytes:
    """An image's bytes: the executor loads uploads before a job starts (JobSpec.from_dict with `load`)."""
    if not isinstance(image, bytes):
        raise ValueError(f"{image!r} was not loaded from the store")
    return image
