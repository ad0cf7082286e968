"""The guided family's registry entry: a latent optimised by Adam until CLIPs see the prompt."""

from __future__ import annotations

from ..record import Family, lazy_build
from .options import GuidedOptions
from .preset import parse_preset, text_weights, weights_plan

GUIDED = Family(
    name=GuidedOptions.FAMILY,
    options=GuidedOptions,
    parse_preset=parse_preset,
    weights=weights_plan,
    build=lazy_build("t2i.families.guided.build"),
    blurb="guided (a latent optimised until a CLIP sees the prompt)",
    gif_caption="the optimisation",
    takes_images=True,
    steps_field="iterations",
    text_weights=text_weights,
    bench_reference="t2i.bench.reference:guided_reference_steps",
    reference_how="per-cutout Python loop + kornia, fp32, one job",
    step_cost=1.0,  # the unit: decode, cutouts, each perceptor, one backward (8.7 s at 300x300 on the CPU)
)
