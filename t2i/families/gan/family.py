"""The gan family's registry entry and preset parser: a text-conditioned generator (GAN-INT-CLS) and
its text encoder, named as components.py's REGISTRY names them (checked when built: the registry
imports torch)."""

from __future__ import annotations

from dataclasses import replace

from ..record import Family, components_plan, lazy_build, text_component_weights
from ..preset import RANDOM_WEIGHTS, Preset, check_random_weights, components, label
from .options import SIZE, UNTRAINED_TARGETS, GanOptions

ROLES = ("generator", "text")


def parse_preset(preset: Preset, raw: dict) -> Preset:
    """The DCGAN draws 64x64 only (fixed_size), so the spec's size defaults to it."""
    preset = replace(preset, components=components(preset.name, raw, ROLES), fixed_size=True,
                     defaults={"width": SIZE, "height": SIZE, **preset.defaults})
    check_random_weights(preset, random=UNTRAINED_TARGETS, message=RANDOM_WEIGHTS.replace(
        "random weights", f"random weights (and the untrained text encoders: {', '.join(UNTRAINED_TARGETS)})", 1))
    return replace(preset, models_label=label(preset))


GAN = Family(
    name=GanOptions.FAMILY,
    options=GanOptions,
    parse_preset=parse_preset,
    weights=components_plan,
    build=lazy_build("t2i.families.gan.pipeline"),
    blurb="GAN (one forward pass of a text-conditioned generator)",
    gif_caption="a walk through the noise",
    text_weights=text_component_weights,
    reference_how="none: a step is one generator call for the whole batch, as users would write it",
    step_cost=0.03,  # one generator call: 1.3 ms (flowers-gan, 64x64) against a tiny guided step's 40 ms
)
