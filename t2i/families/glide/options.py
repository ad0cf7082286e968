"""GLIDE's job options (torch-free): the diffusion family's fields and checks (sampler, steps, guidance,
eta, samples; `upsample_steps` set by the preset), at the stages' own sizes and memory (sizes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import SpecError
from ..diffusion.options import DiffusionOptions
from ..options import FormField
from . import sizes


@dataclass(frozen=True)
class GlideOptions(DiffusionOptions):
    FAMILY: ClassVar[str] = "glide"
    # Step caching (the diffusion family's deepcache.py) works on diffusers' UNet blocks; GLIDE's ADM UNet
    # is not one, so the option is not offered.
    FORM: ClassVar[tuple[FormField, ...]] = tuple(f for f in DiffusionOptions.FORM if f.name != "cache")

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> DiffusionOptions:
        options = super().parse(raw, limits, defaults)
        if options.cache > 1:
            raise SpecError("cache", "step caching is not available for GLIDE presets (their UNet is not a "
                                     "diffusers one): use 0")
        return options

    def used_size(self, spec, preset) -> tuple[int, int]:
        return sizes.used_size(preset)

    def job_bytes(self, spec, preset) -> int:
        return sizes.job_bytes(self, spec, preset)
