"""GLIDE's registry entry and preset parser: the release's base UNet (and optionally its upsampler) with
its own respaced Gaussian diffusion, which has no diffusers equivalent."""

from __future__ import annotations

from dataclasses import replace

from ...errors import PresetError
from ..diffusion.family import WEIGHTLESS_TARGETS, samplers
from ..record import Family, components_plan, lazy_build, text_component_weights
from ..preset import Preset, check_random_weights, components, label
from .options import GlideOptions
from .sizes import GLIDE_TARGETS, UPSAMPLER_TARGETS, upsampler_steps

ROLES = ("unet", "text", "codec")
OPTIONAL_ROLES = ("upsampler",)  # the second stage: base 64px, then the text-conditional upsampler


def parse_preset(preset: Preset, raw: dict) -> Preset:
    preset = replace(preset, components=components(preset.name, raw, ROLES, OPTIONAL_ROLES))
    parts = preset.components
    if parts["unet"].target not in GLIDE_TARGETS or \
            ("upsampler" in parts and parts["upsampler"].target not in UPSAMPLER_TARGETS):
        raise PresetError(f"preset {preset.name}: a glide preset's unet is one of {', '.join(GLIDE_TARGETS)} "
                          f"and its upsampler one of {', '.join(UPSAMPLER_TARGETS)}")
    check_random_weights(preset, weightless=WEIGHTLESS_TARGETS)
    defaults = samplers(preset.defaults, raw)
    if "upsampler" in parts:
        # A second stage's steps count in the job's progress (DiffusionOptions.total_steps).
        defaults = {**defaults, "upsample_steps": upsampler_steps(parts["upsampler"].params)}
    return replace(preset, defaults=defaults, models_label=label(preset, WEIGHTLESS_TARGETS))


GLIDE = Family(
    name=GlideOptions.FAMILY,
    options=GlideOptions,
    parse_preset=parse_preset,
    weights=components_plan,
    build=lazy_build("t2i.families.glide.pipeline"),
    blurb="diffusion (a denoising UNet)",
    gif_caption="the denoising",
    min_side=16,  # it draws at its own size; the tiny preset's defaults are 32x32
    text_weights=text_component_weights,
    reference_how="the release's (one job, CFG as one batch of 2) is the 1-job row above",
    # glide-256 on the CPU: 100 base steps of about 5 s and 27 upsampler steps of about 20 s, 8.2 s a
    # step on average, as a guided step's 8.7 s (BENCHMARKS.md, "GLIDE")
    step_cost=1.0,
)
