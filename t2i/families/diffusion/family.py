"""The diffusion family's registry entry and preset parser: a UNet (pixel or latent space) sampled by a
diffusers scheduler, its components built by name (components.py)."""

from __future__ import annotations

from dataclasses import replace

from ...errors import PresetError
from ..record import Family, components_plan, lazy_build, text_component_weights
from ..preset import Preset, check_random_weights, components, label
from ..glide.sizes import GLIDE_TARGETS, UPSAMPLER_TARGETS
from .options import DiffusionOptions

ROLES = ("unet", "text", "codec")
WEIGHTLESS_TARGETS = ("pixels",)  # components with nothing to train (the pixel "codec" of a pixel-space model)


def parse_preset(preset: Preset, raw: dict) -> Preset:
    """Components by registry name, the training noise schedule (`scheduler:`, inline or `from:`), the
    samplers correct for the model (`samplers:`, DiffusionOptions.parse refuses the others)."""
    glide = [c["target"] for c in (raw.get("components") or {}).values()
             if isinstance(c, dict) and c.get("target") in GLIDE_TARGETS + UPSAMPLER_TARGETS]
    if glide:
        raise PresetError(f"preset {preset.name}: {glide[0]} is GLIDE's: say `family: glide`")
    preset = replace(preset, components=components(preset.name, raw, ROLES),
                     scheduler=dict(raw.get("scheduler") or {}))
    check_random_weights(preset, weightless=WEIGHTLESS_TARGETS)
    return replace(preset, defaults=samplers(preset.defaults, raw), models_label=label(preset, WEIGHTLESS_TARGETS))


def samplers(defaults: dict, raw: dict) -> dict:
    return {**defaults, "samplers": tuple(raw["samplers"])} if "samplers" in raw else defaults


DIFFUSION = Family(
    name=DiffusionOptions.FAMILY,
    options=DiffusionOptions,
    parse_preset=parse_preset,
    weights=components_plan,
    build=lazy_build("t2i.families.diffusion.pipeline"),
    blurb="diffusion (a denoising UNet)",
    gif_caption="the denoising",
    min_side=16,  # small trained-here diffusion models work at 32x32 (digits)
    text_weights=text_component_weights,
    bench_reference="t2i.bench.reference:diffusion_reference_steps",
    reference_how="diffusers-pipeline-style loop, CFG as one batch of 2, fp32, one job",
    # One UNet call with guidance: 2.9 s (ldm-text2im-large-256) against a guided step's 8.7 s on the
    # CPU, 21 ms (tiny, 32x32) against 40 ms (tiny guided, 64x64): BENCHMARKS.md
    step_cost=0.4,
)
