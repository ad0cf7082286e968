"""The diffusion family's job options (torch-free): sampler, steps, guidance scale, samples per job."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import SpecError
from ..options import FormField, choice, given, real, whole

SAMPLERS = ("ddpm", "ddim", "dpm++")   # ancestral, DDIM (eta), DPM-Solver++ (2nd-order multistep)
MAX_STEPS = 1000                      # the training schedule's length
GUIDANCE_RANGE = (0.0, 30.0)          # 0: unconditional, 1: conditional without guidance
ETA_RANGE = (0.0, 1.0)
SAMPLES_RANGE = (1, 64)
DEFAULTS = dict(sampler="ddim", steps=50, guidance=3.0, eta=0.0, num_samples=1)


@dataclass(frozen=True)
class DiffusionOptions:
    sampler: str
    steps: int
    guidance: float
    eta: float
    num_samples: int

    FAMILY = "diffusion"
    LIGHTER = "the size or the number of samples"
    FORM = (FormField("sampler", "Sampler", "choice", choices=SAMPLERS,
                      help="ddpm: ancestral; ddim: deterministic at eta 0; dpm++: good images in few steps"),
            FormField("steps", "Steps", "int", step=10),
            FormField("guidance", "Guidance scale", "float", step=0.5,
                      help="0: ignore the prompt; 1: conditional, no guidance; higher: follow the prompt harder"),
            FormField("num_samples", "Samples", "int", step=1, help="1..64 images of the prompt, shown as a grid"))

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "DiffusionOptions":
        d = {**DEFAULTS, **defaults}
        sampler = choice("sampler", given(raw, d, "sampler"), SAMPLERS)
        eta = real("eta", given(raw, d, "eta"), *ETA_RANGE)
        if eta and sampler != "ddim":
            raise SpecError("eta", f"applies to the ddim sampler only, not {sampler}")
        return cls(sampler=sampler,
                   steps=whole("steps", given(raw, d, "steps"), 1, min(limits.max_iterations, MAX_STEPS)),
                   guidance=real("guidance", given(raw, d, "guidance"), *GUIDANCE_RANGE),
                   eta=eta,
                   num_samples=whole("num_samples", given(raw, d, "num_samples"), *SAMPLES_RANGE))

    def batch_key(self, spec) -> str:
        # One UNet call takes any mix of samplers, steps, guidance and sample counts; only the
        # image shape must agree.
        return f"{spec.preset}|{spec.width}x{spec.height}"

    def total_steps(self, spec) -> int:
        return self.steps

    def describe(self, spec, width: int, height: int) -> str:
        guidance = f", CFG {self.guidance:g}" if self.guidance != 1 else ""
        samples = f", {self.num_samples} samples" if self.num_samples > 1 else ""
        return f"{width}x{height}, {self.steps} {self.sampler.upper()} steps{guidance}{samples}"
