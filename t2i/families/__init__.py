"""Generator families: one contract (t2i/families/base.py), several ways to make an image.

    guided     a latent optimised by Adam until CLIPs see the prompt (VQGAN / BigGAN)
    diffusion  a denoising UNet sampled by a diffusers scheduler (pixel or latent space)
    gan        a text-conditioned GAN generator (GAN-INT-CLS): one forward pass per frame

This module is torch-free: it maps a family name to its Options (what pages, the CLI and the queue
need) and, on demand, to the module whose `build(preset, device, random_weights)` makes its pipeline
(imported only by whoever builds models).
"""

from __future__ import annotations

from importlib import import_module

from .diffusion.options import DiffusionOptions
from .gan.options import GanOptions
from .guided.options import GuidedOptions

OPTIONS = {o.FAMILY: o for o in (GuidedOptions, DiffusionOptions, GanOptions)}
FAMILIES = tuple(OPTIONS)
DEFAULT_FAMILY = "guided"
_BUILDERS = {"guided": "t2i.families.guided.build", "diffusion": "t2i.families.diffusion.pipeline",
             "gan": "t2i.families.gan.pipeline"}


def options_class(family: str):
    if family not in OPTIONS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return OPTIONS[family]


def option_names(family: str) -> tuple[str, ...]:
    from dataclasses import fields

    return tuple(f.name for f in fields(options_class(family)))




def build_pipeline(preset, device="cpu", random_weights: bool = False):
    """The preset's family pipeline with its models on `device` (random_weights: the real
    architecture untrained, for benchmarks)."""
    return import_module(_BUILDERS[preset.family]).build(preset, device, random_weights)
