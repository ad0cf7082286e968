"""GLIDE's job options (torch-free): the diffusion family's fields and checks (sampler, steps, guidance,
eta, samples; `upsample_steps` set by the preset), at the stages' own sizes and memory (sizes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..diffusion.options import DiffusionOptions
from . import sizes


@dataclass(frozen=True)
class GlideOptions(DiffusionOptions):
    FAMILY: ClassVar[str] = "glide"

    def used_size(self, spec, preset) -> tuple[int, int]:
        return sizes.used_size(preset)

    def job_bytes(self, spec, preset) -> int:
        return sizes.job_bytes(self, spec, preset)
