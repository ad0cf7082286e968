"""GLIDE presets in the diffusion family: the 64px base model with classifier-free guidance, then (glide-256)
the text-conditional upsampler, as two stages of one job.

Per job: its sample x (num_samples rows), its stage (0 base, 1 upsampler), the step within the stage,
its tokens and its generator. A step of a batch is one base-model call for every job in stage 0 (cond
and uncond rows) and one upsampler call for every job in stage 1, then each job's ancestral (or DDIM)
update with its own generator, so a job's image does not depend on its batch-mates.

Guidance as the release does it: the conditional rows' eps is replaced by uncond + s * (cond - uncond)
and their own learned variance channels are kept; the unconditional rows only serve the guidance (the
release samples them too and throws them away). The upsampler runs without guidance on the prompt's
tokens, from noise scaled by the preset's temperature (0.997), on the base image quantised to 8 bits.
Frames of the base stage are shown at the final size, so the job's GIF shows both stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import torch
import torch.nn.functional as F

from ...errors import BrokenWeights, WeightsMissing
from ...paths import CONFIG_DIR, component_weights
from ...spec import JobSpec
from ...assets.untrained import UNTRAINED_SEED
from ..base import Finished, StepOut
from ..diffusion.components import PixelCodec
from ..preset import Preset
from ..shared import finished, grid, weights_plan
from .diffusion import GlideDiffusion
from .load import load
from .model import Text2ImUNet, glide_base, glide_upsample
from .options import GlideOptions
from .tokenizer import FILES as TOKENIZER_FILES
from .tokenizer import GlideTokenizer

KINDS = {"glide-base": ("base", glide_base), "glide-upsample": ("upsample", glide_upsample)}
PIXELS = PixelCodec(3)  # GLIDE draws in pixel space: [-1, 1] to [0, 1], as the pixels codec does
STAND_IN_BPE = "models/tiny-glide"  # the byte-level vocabulary of tiny-glide-untrained


@lru_cache(maxsize=32)
def diffusion(schedule: str, respacing: str) -> GlideDiffusion:
    """The respaced diffusion of a stage (cached: jobs with the same step count share its tables)."""
    return GlideDiffusion(schedule, 1000, respacing)

def _options(spec: JobSpec) -> GlideOptions:
    """The job's options, typed as this family's."""
    return cast(GlideOptions, spec.options)



@dataclass
class GlideJob:
    spec: JobSpec
    gen: torch.Generator
    x: torch.Tensor                   # (num_samples, 3, s, s) x_t of the current stage
    tokens: torch.Tensor              # (rows, text_ctx): cond rows, then uncond rows (base stage)
    mask: torch.Tensor
    cond_rows: int                    # num_samples when the prompt conditions the base stage, else 0
    stage: int = 0
    index: int = 0                    # step within the stage
    low_res: torch.Tensor | None = None  # the base image for the upsampler, in [-1, 1]


class GlideStage:
    """One network with its diffusion: base (guided) or upsampler."""

    def __init__(self, model: Text2ImUNet, schedule: str, respacing: str | None, temperature: float = 1.0):
        self.model, self.schedule, self.respacing, self.temperature = model, schedule, respacing, temperature
        self.size = model.image_size

    def diffusion(self, steps: int) -> GlideDiffusion:
        return diffusion(self.schedule, self.respacing or str(steps))


@dataclass
class GlidePipeline:
    preset: Preset
    stages: list[GlideStage]
    tokenizer: GlideTokenizer
    device: torch.device

    @classmethod
    def build(cls, preset, device="cpu", random_weights: bool = False) -> "GlidePipeline":
        """The one place that decides where a GLIDE preset's weights come from."""
        random_weights, hint = weights_plan(preset, random_weights)
        tokenizer, own = _tokenizer(preset.components["text"], hint, random_weights)
        roles = ["unet"] + (["upsampler"] if "upsampler" in preset.components else [])
        defaults = {"unet": ("squaredcos_cap_v2", None, 1.0), "upsampler": ("linear", "fast27", 0.997)}
        stages = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            for role in roles:
                c = preset.components[role]
                kind, make = KINDS[c.target]
                params = dict(c.params)
                schedule, respacing, temperature = defaults[role]
                schedule = params.pop("schedule", schedule)
                respacing = params.pop("respacing", respacing)
                temperature = float(params.pop("temperature", temperature))
                if own:  # (a stand-in tokenizer's vocabulary says nothing of the model's)
                    params.setdefault("vocab_size", tokenizer.vocab_size)
                if params.get("text_ctx", tokenizer.text_ctx) != tokenizer.text_ctx:
                    raise ValueError(f"preset {preset.name}: {role}.text_ctx differs from the tokenizer's")
                params["text_ctx"] = tokenizer.text_ctx
                if random_weights:
                    model = make(**params)
                else:
                    path = component_weights(c.weights)
                    try:
                        model = load(path, kind, **params)
                    except BrokenWeights as e:  # (a subclass of WeightsMissing: caught first)
                        raise BrokenWeights(f"{e}: run `{hint}`") from None
                    except WeightsMissing:
                        raise WeightsMissing(f"missing {path}: run `{hint}`") from None
                stages.append(GlideStage(model.eval().requires_grad_(False).to(device), schedule, respacing,
                                         temperature))
        return cls(preset, stages, tokenizer, torch.device(device))

    # --- sizes and words ----------------------------------------------------------------------
    def used_size(self, spec: JobSpec) -> tuple[int, int]:
        side = self.stages[-1].size
        return side, side

    @property
    def factor(self) -> int:
        return self.stages[-1].size

    def describe(self, spec: JobSpec) -> str:
        return spec.options.describe(spec, *self.used_size(spec))

    # --- the contract -------------------------------------------------------------------------
    def start(self, spec: JobSpec, gen: torch.Generator) -> GlideJob:
        o = _options(spec)
        n = o.num_samples
        size = self.stages[0].size
        x = torch.randn((n, 3, size, size), generator=gen, device=self.device)
        positive = ", ".join(p.text for p in spec.parts if p.weight > 0)
        negative = ", ".join(p.text for p in spec.parts if p.weight < 0)
        texts = []
        if positive and o.guidance > 0:
            texts.append(positive)
        if o.guidance != 1 or not positive:
            texts.append(negative)  # "" is the release's unconditional input: all padding
        pairs = [self.tokenizer.batch(t, n, self.device) for t in texts]
        tokens = torch.cat([p[0] for p in pairs])
        mask = torch.cat([p[1] for p in pairs])
        return GlideJob(spec, gen, x, tokens, mask, n if positive and o.guidance > 0 else 0)

    @torch.no_grad()
    def step(self, jobs: list[GlideJob], frames: list[bool], amp) -> list[StepOut]:
        outs = {}
        # Grouped before any job moves on: a job finishing its base stage waits for the next step.
        groups = [[i for i, job in enumerate(jobs) if job.stage == stage] for stage in range(len(self.stages))]
        for stage, group in enumerate(groups):
            if group:
                for i, out in zip(group, self._step_stage(stage, [jobs[i] for i in group],
                                                          [frames[i] for i in group], amp)):
                    outs[i] = out
        return [outs[i] for i in range(len(jobs))]

    def _step_stage(self, stage: int, jobs: list[GlideJob], frames: list[bool], amp) -> list[StepOut]:
        net = self.stages[stage]
        xs, ts, tokens, masks, lows, spans = [], [], [], [], [], []
        for job in jobs:
            d = net.diffusion(_options(job.spec).steps)
            t = d.timestep_map[len(d) - 1 - job.index]
            rows = len(job.tokens) // len(job.x) if stage == 0 else 1
            tok, msk = (job.tokens, job.mask) if stage == 0 else self._upsampler_tokens(job)
            xs += [job.x] * rows
            ts.append(t.expand(len(job.x) * rows))
            tokens.append(tok)
            masks.append(msk)
            if stage:
                lows.append(job.low_res)
            spans.append(rows)
        extra = {"low_res": torch.cat(lows)} if stage else {}
        with amp():
            out = net.model(torch.cat(xs), torch.cat(ts).to(self.device), torch.cat(tokens), torch.cat(masks),
                            **extra)
        out = out.float()
        results, at = [], 0
        for job, rows, want in zip(jobs, spans, frames):
            n = len(job.x)
            parts = out[at:at + rows * n].split(n)
            at += rows * n
            model_out = self._guided(job, parts) if stage == 0 else parts[0]
            d = net.diffusion(_options(job.spec).steps)
            t = torch.full((n,), len(d) - 1 - job.index, device=self.device, dtype=torch.long)
            p = d.p_mean_variance(model_out, job.x, t, clip_denoised=True)
            job.x = self._update(job, d, p, model_out, t)
            frame = self._preview(p["pred_xstart"]) if want else None
            job.index += 1
            if job.index == len(d) and job.stage + 1 < len(self.stages):
                self._next_stage(job)
            results.append(StepOut(None, frame))
        return results

    def _guided(self, job: GlideJob, parts: tuple) -> torch.Tensor:
        """The release's classifier-free guidance: guided eps, the conditional rows' own variance."""
        if len(parts) == 1:
            return parts[0]
        cond, uncond = parts
        eps_c, var_c = cond.split(3, dim=1)
        eps_u = uncond[:, :3]
        return torch.cat([eps_u + _options(job.spec).guidance * (eps_c - eps_u), var_c], dim=1)

    def _update(self, job: GlideJob, d: GlideDiffusion, p: dict, model_out: torch.Tensor, t: torch.Tensor):
        noise = torch.randn(job.x.shape, generator=job.gen, device=self.device)
        last = bool(t[0] == 0)  # no noise is added at the final step
        if _options(job.spec).sampler == "ddim" and job.stage == 0:
            # guided-diffusion's ddim_sample: eps re-derived from the clipped x0, eta-scaled noise.
            x0 = p["pred_xstart"]
            eps = (d._at(d.sqrt_recip_alphas_cumprod, t, job.x) * job.x - x0) / d._at(d.sqrt_recipm1_alphas_cumprod,
                                                                                        t, job.x)
            ab = d._at(d.alphas_cumprod, t, job.x)
            ab_prev = d._at(d.alphas_cumprod_prev, t, job.x)
            sigma = _options(job.spec).eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
            mean = x0 * ab_prev.sqrt() + torch.sqrt(1 - ab_prev - sigma ** 2) * eps
            return mean if last else mean + sigma * noise
        return p["mean"] if last else p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise

    def _next_stage(self, job: GlideJob) -> None:
        """Base done: the upsampler starts from temperature-scaled noise, conditioned on the 8-bit base image."""
        up = self.stages[job.stage + 1]
        job.low_res = ((job.x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        job.x = torch.randn((len(job.x), 3, up.size, up.size), generator=job.gen, device=self.device) * up.temperature
        job.stage += 1
        job.index = 0

    def _upsampler_tokens(self, job: GlideJob) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(job.x)
        if job.cond_rows:
            return job.tokens[:n], job.mask[:n]
        return self.tokenizer.batch("", n, self.device)

    def _preview(self, x0: torch.Tensor) -> torch.Tensor:
        side = self.stages[-1].size
        images = PIXELS.decode(x0)
        if images.shape[-1] != side:
            images = F.interpolate(images, size=(side, side), mode="nearest")
        return grid(images)

    @torch.no_grad()
    def finish(self, jobs: list[GlideJob]) -> list[Finished]:
        return [finished(PIXELS.decode(job.x)) for job in jobs]


def _tokenizer(component, hint: str, random_weights: bool) -> tuple[GlideTokenizer, bool]:
    """The release's BPE files: `weights` (encoder.json under checkpoints/, vocab.bpe beside it), or
    params.files (a folder of configs/: the tiny preset's byte-level vocabulary made here). Random
    weights of a downloadable preset (the bench) tokenise with the tiny vocabulary when the release's
    files are absent: any token ids below its size drive the real architecture alike. Returns the
    tokenizer and whether it is the preset's own."""
    if not component.weights:
        return GlideTokenizer(CONFIG_DIR / component.params["files"], int(component.params.get("text_ctx", 8)),
                              hint), True
    folder = component_weights(component.weights).parent
    text_ctx = int(component.params.get("text_ctx", 128))
    if random_weights and not all((folder / name).is_file() for name in TOKENIZER_FILES):
        return GlideTokenizer(CONFIG_DIR / STAND_IN_BPE, text_ctx, hint), False
    return GlideTokenizer(folder, text_ctx, hint), True


def build(preset, device="cpu", random_weights: bool = False) -> GlidePipeline:
    return GlidePipeline.build(preset, device, random_weights)
