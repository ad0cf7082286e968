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

from ...errors import SpecError
from ...spec import JobSpec, round_size
from ...assets.untrained import UNTRAINED_SEED
from ..base import Finished, StepOut
from ..preset import Preset
from ..shared import finished, grid, weights_plan
from . import deepcache
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
    deep: torch.Tensor | None = None  # step caching (deepcache.py): the deep features of the last full step
    since_full: int = 0             # ... and the steps since it

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
        why = deepcache.unsupported(self.unet) if o.cache > 1 else None
        if why:
            raise SpecError("cache", f"step caching is not available for this preset ({why}): use 0")
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
        """One UNet call for every job's cond and uncond rows (two with step caching: the rows due for a
        full step, and the shallow branch for the others); per job the guided estimate (of the noise, or
        of whatever the schedule's prediction_type says: guidance is linear in any of them)."""
        rows = [self._rows(job) for job in jobs]
        fresh = [deepcache.is_full(_options(job.spec).cache, job.deep, job.since_full) for job in jobs]
        outs: list[torch.Tensor | None] = [None] * len(jobs)
        for wanted in (True, False):
            picked = [i for i, f in enumerate(fresh) if f == wanted]
            if not picked:
                continue
            x, t, states = (torch.cat([rows[i][k] for i in picked]) for k in range(3))
            with amp():
                if wanted:
                    out, deep = deepcache.full(self.unet, x, t, states)
                else:
                    out = deepcache.shallow(self.unet, x, t, states, torch.cat([jobs[i].deep for i in picked]))
            at = 0
            for i in picked:
                n, job = len(rows[i][0]), jobs[i]
                outs[i] = out[at:at + n].float()
                if wanted and _options(job.spec).cache > 1:
                    job.deep, job.since_full = deep[at:at + n].clone(), 0  # not a view: the batch's goes
                at += n
                job.since_full += 1
        return [self._guided(job, cast(torch.Tensor, out)) for job, out in zip(jobs, outs)]

    def _rows(self, job: DiffusionJob) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A job's UNet rows: its x_t with the condition, then with the unconditional states (when guided)."""
        x_in = job.scheduler.scale_model_input(job.x, job.t)
        states = [r for r in (job.cond, job.uncond) if r is not None]
        return torch.cat([x_in] * len(states)), job.t.expand(len(x_in) * len(states)), torch.cat(states)

    def _guided(self, job: DiffusionJob, out: torch.Tensor) -> torch.Tensor:
        if job.cond is not None and job.uncond is not None:
            c, u = out.split(len(job.x))
            return u + _options(job.spec).guidance * (c - u)
        return out

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
