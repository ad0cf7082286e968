"""The gan family: a text-conditioned generator (GAN-INT-CLS) draws 64x64 images in one forward pass.

A job's steps are the frames of a loop through the noise: per sample, KEYS noise vectors drawn from the
job's generator, visited in order and back to the first by spherical interpolation (slerp keeps each
point at the norm a Gaussian vector of that dimension has, where a straight line would pass through
low-norm, atypical noise). Step i draws the point i/steps of the way round; the job's image is the
loop's start, which is also where it ends, so the GIF loops seamlessly. Every step makes its images
whether or not its frame is kept: each step then costs one generator call, so progress and the
bench's job-steps/s measure the forward pass (a 64x64 DCGAN call is milliseconds).

Prompt parts combine as GAN-INT's manifold interpolation does: the embedding is the parts' weighted
sum over the positive weights' total, so "red | yellow" is the midpoint the generator was trained
on, and a negative part moves away from its embedding. One generator call serves the whole batch;
the generator runs in eval mode (BatchNorm on running statistics), so no row depends on another.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import torch

from ...assets import weights as W
from ...errors import PresetError
from ...spec import JobSpec
from ...assets.untrained import UNTRAINED_SEED
from ..base import Finished, StepOut
from ..preset import Preset
from ..shared import finished, grid
from .components import build_component
from .options import SIZE, GanOptions

KEYS = 3  # noise vectors a loop visits: enough to wander, few enough that each is seen for a while

def _options(spec: JobSpec) -> GanOptions:
    """The job's options, typed as this family's."""
    return cast(GanOptions, spec.options)



def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b; a straight line where they are (anti)parallel."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)[..., None]
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6
    wa = torch.where(near, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / sin.where(~near, 1.0))
    wb = torch.where(near, torch.full_like(sin, t), torch.sin(t * omega) / sin.where(~near, 1.0))
    return wa * a + wb * b


def loop_point(keys: torch.Tensor, fraction: float) -> torch.Tensor:
    """The point `fraction` (0..1) of the way round the loop keys[0] -> keys[1] -> ... -> keys[0];
    keys (K, n, dim)."""
    k = len(keys)
    position = (fraction % 1.0) * k
    i = int(position) % k
    return slerp(keys[i], keys[(i + 1) % k], position - int(position))


@dataclass
class GanJob:
    spec: JobSpec
    embed: torch.Tensor     # (num_samples, d): the prompt's embedding, one row per sample
    keys: torch.Tensor      # (KEYS, num_samples, noise_dim), already times noise_scale
    index: int = 0          # frames drawn


@dataclass
class GanPipeline:
    preset: Preset
    generator: torch.nn.Module
    text: torch.nn.Module
    device: torch.device

    factor = SIZE  # the CLI's "multiples of" note; the size is fixed anyway

    @classmethod
    def build(cls, preset, device="cpu", random_weights: bool = False) -> "GanPipeline":
        """The one place that decides where a gan preset's weights come from."""
        random_weights = random_weights or preset.untrained
        hint = W.download_command(preset.name)
        if not random_weights:
            W.require(preset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            parts = {role: build_component(role, c, hint, random_weights) for role, c in preset.components.items()}
        generator, text = parts["generator"], parts["text"]
        if text.dim != generator.embed_dim:
            raise PresetError(f"preset {preset.name}: the text encoder makes {text.dim}-dim embeddings, the "
                              f"generator takes {generator.embed_dim}")
        device = torch.device(device)
        return cls(preset, generator.to(device), text.to(device), device)

    def used_size(self, spec: JobSpec) -> tuple[int, int]:
        return SIZE, SIZE

    def describe(self, spec: JobSpec) -> str:
        return spec.options.describe(spec, SIZE, SIZE)

    def start(self, spec: JobSpec, gen: torch.Generator) -> GanJob:
        n = _options(spec).num_samples
        keys = torch.randn((KEYS, n, self.generator.noise_dim), generator=gen, device=self.device)
        return GanJob(spec, self.embedding(spec).expand(n, -1), keys * _options(spec).noise_scale)

    @torch.no_grad()
    def embedding(self, spec: JobSpec) -> torch.Tensor:
        """(1, d): the parts' weighted sum over the total of the positive weights (all of them when
        every part is negative)."""
        parts = spec.parts
        embeds = self.text.encode([p.text for p in parts]).float().to(self.device)
        weights = torch.tensor([p.weight for p in parts], device=self.device)
        total = weights.clamp_min(0).sum()
        total = total if total > 0 else weights.abs().sum()
        return (weights[:, None] * embeds).sum(0, keepdim=True) / total

    @torch.no_grad()
    def step(self, jobs: list[GanJob], frames: list[bool], amp) -> list[StepOut]:
        zs = [loop_point(job.keys, job.index / _options(job.spec).steps) for job in jobs]
        images = self._draw(torch.cat([j.embed for j in jobs]), torch.cat(zs), amp)
        outs = []
        for job, rows, want in zip(jobs, images.split([len(z) for z in zs]), frames):
            job.index += 1
            outs.append(StepOut(None, grid(rows) if want else None))
        return outs

    def _draw(self, embed: torch.Tensor, z: torch.Tensor, amp) -> torch.Tensor:
        with amp():
            x = self.generator(embed, z)
        return (x.float() + 1) / 2

    @torch.no_grad()
    def finish(self, jobs: list[GanJob]) -> list[Finished]:
        return [finished(self._draw(job.embed, job.keys[0], nullcontext)) for job in jobs]


def build(preset, device="cpu", random_weights: bool = False):
    return GanPipeline.build(preset, device, random_weights)
