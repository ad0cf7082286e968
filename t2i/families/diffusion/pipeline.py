"""The diffusion family: a text-conditioned UNet denoises noise into an image, one scheduler step at a time.

Per job: its noisy sample x_t (num_samples rows), its own scheduler instance (the sampler it asked
for, with that sampler's state), its conditioning and its generator. One step of a batch is one UNet
call for every job's rows at their own timesteps (cond and uncond rows for classifier-free guidance),
then each job's scheduler step with its own generator, so a job's image does not depend on its
batch-mates. Components (UNet, text encoder, codec) are built by name from the preset
(components.py); the loop is ours, not a diffusers pipeline's, because jobs join and leave batches,
report previews and stop on cancel.

Prompt parts: the positive parts, joined, are the condition; the negative parts, joined, replace the
unconditional branch of guidance (a "negative prompt"); with none, it is the model's null condition.
Guidance scale 0 samples unconditionally, 1 conditionally without guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from ...spec import JobSpec, round_size
from ...assets.untrained import UNTRAINED_SEED
from ..base import Finished, StepOut
from ..preset import Preset
from ..shared import finished, grid, weights_plan
from .components import build_component, scheduler_config
from .options import DiffusionOptions

def _options(spec: JobSpec) -> DiffusionOptions:
    """The job's options, typed as this family's."""
    return cast(DiffusionOptions, spec.options)



def make_scheduler(sampler: str, config: dict):
    """A fresh scheduler of the job's sampler over the preset's training schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    if sampler == "ddpm":
        return DDPMScheduler.from_config(config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    if sampler == "plms":
        # PLMS as the LDM paper samples (crowsonkb's, CompVis/latent-diffusion#51): its first step takes two
        # model calls at the first timestep, so it has steps + 1 timesteps (options.total_steps counts them).
        return PNDMScheduler.from_config(config, skip_prk_steps=True)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


@dataclass
class DiffusionJob:
    spec: JobSpec
    gen: torch.Generator
    scheduler: Any                  # a diffusers scheduler of the job's sampler
    x: torch.Tensor                 # (num_samples, C, h, w): x_t, then the clean sample
    cond: torch.Tensor | None       # (num_samples, L, D) rows the UNet sees with the prompt
    uncond: torch.Tensor | None     # ... and without it (the null or the negative prompt)
    index: int = 0                  # scheduler steps done

    @property
    def t(self) -> torch.Tensor:
        return self.scheduler.timesteps[self.index]


@dataclass
class DiffusionPipeline:
    preset: Preset
    unet: torch.nn.Module
    text: torch.nn.Module
    codec: torch.nn.Module
    schedule: dict                  # the diffusers scheduler config of the training noise schedule
    device: torch.device

    @classmethod
    def build(cls, preset, device="cpu", random_weights: bool = False) -> "DiffusionPipeline":
        """The one place that decides where a diffusion preset's weights come from."""
        random_weights, hint = weights_plan(preset, random_weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            parts = {role: build_component(role, c, hint, random_weights) for role, c in preset.components.items()}
        device = torch.device(device)
        return cls(preset, parts["unet"].to(device), parts["text"].to(device), parts["codec"].to(device),
                   scheduler_config(preset, hint, random_weights), device)

    # --- sizes and words ----------------------------------------------------------------------
    @property
    def factor(self) -> int:
        """Pixels per latent cell times the UNet's downsampling: sizes are multiples of it."""
        return self.codec.factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def used_size(self, spec: JobSpec) -> tuple[int, int]:
        if self.preset.fixed_size:
            side = self.unet.config.sample_size * self.codec.factor
            return side, side
        return round_size(spec.width, spec.height, self.factor)

    def describe(self, spec: JobSpec) -> str:
        return spec.options.describe(spec, *self.used_size(spec))

    # --- the contract -------------------------------------------------------------------------
    def start(self, spec: JobSpec, gen: torch.Generator) -> DiffusionJob:
        o = _options(spec)
        n = o.num_samples
        scheduler = make_scheduler(o.sampler, self.schedule)
        scheduler.set_timesteps(o.steps, device=self.device)
        w, h = self.used_size(spec)
        shape = (n, self.unet.config.in_channels, h // self.codec.factor, w // self.codec.factor)
        x = torch.randn(shape, generator=gen, device=self.device) * scheduler.init_noise_sigma
        positive = ", ".join(p.text for p in spec.parts if p.weight > 0)
        negative = ", ".join(p.text for p in spec.parts if p.weight < 0)
        with torch.no_grad():
            cond = self.text.encode([positive]).float().expand(n, -1, -1) if positive and o.guidance > 0 else None
            uncond = None
            if o.guidance != 1 or not positive:
                uncond = (self.text.encode([negative]).float().expand(n, -1, -1) if negative
                          else self.text.null(n).float().to(self.device))
        return DiffusionJob(spec, gen, scheduler, x, cond, uncond)

    @torch.no_grad()
    def step(self, jobs: list[DiffusionJob], frames: list[bool], amp) -> list[StepOut]:
        eps = self._noise_predictions(jobs, amp)
        outs = []
        for job, e, want in zip(jobs, eps, frames):
            frame = self._preview(self._x0(job, e)) if want else None
            job.x = job.scheduler.step(e, job.t, job.x, **_step_kwargs(job)).prev_sample
            job.index += 1
            outs.append(StepOut(None, frame))
        return outs

    def _noise_predictions(self, jobs: list[DiffusionJob], amp) -> list[torch.Tensor]:
        """One UNet call for every job's cond and uncond rows; per job the guided estimate (of the
        noise, or of whatever the schedule's prediction_type says: guidance is linear in any of them)."""
        xs, ts, states, spans = [], [], [], []
        for job in jobs:
            x_in = job.scheduler.scale_model_input(job.x, job.t)
            rows = [r for r in (job.cond, job.uncond) if r is not None]
            for r in rows:
                xs.append(x_in)
                ts.append(job.t.expand(len(x_in)))
                states.append(r)
            spans.append(len(rows))
        with amp():
            out = self.unet(torch.cat(xs), torch.cat(ts), encoder_hidden_states=torch.cat(states)).sample
        out = out.float()
        eps, at = [], 0
        for job, k in zip(jobs, spans):
            n = len(job.x)
            parts = out[at:at + k * n].split(n)
            at += k * n
            if job.cond is not None and job.uncond is not None:
                c, u = parts
                eps.append(u + _options(job.spec).guidance * (c - u))
            else:
                eps.append(parts[0])
        return eps

    def _x0(self, job: DiffusionJob, out: torch.Tensor) -> torch.Tensor:
        """The clean sample the current model output implies (what the preview shows)."""
        kind = job.scheduler.config.prediction_type
        if kind == "sample":
            return out
        a = job.scheduler.alphas_cumprod.to(self.device)[job.t].float()
        if kind == "v_prediction":
            return a.sqrt() * job.x - (1 - a).sqrt() * out
        return (job.x - (1 - a).sqrt() * out) / a.sqrt()

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(z).clamp(0, 1)

    def _preview(self, z: torch.Tensor) -> torch.Tensor:
        return grid(self._images(z))

    @torch.no_grad()
    def finish(self, jobs: list[DiffusionJob]) -> list[Finished]:
        return [finished(self._images(job.x)) for job in jobs]


def _step_kwargs(job: DiffusionJob) -> dict:
    return step_kwargs(_options(job.spec).sampler, job.gen, _options(job.spec).eta)


def step_kwargs(sampler: str, gen: torch.Generator, eta: float) -> dict:
    """What a sampler's scheduler step takes: the job's own generator (PLMS draws nothing and takes
    none), and DDIM's eta."""
    if sampler == "plms":
        return {}
    return {"generator": gen, "eta": eta} if sampler == "ddim" else {"generator": gen}


def build(preset, device="cpu", random_weights: bool = False) -> DiffusionPipeline:
    return DiffusionPipeline.build(preset, device, random_weights)
