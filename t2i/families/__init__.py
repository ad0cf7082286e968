"""Generator families: one contract (t2i/families/base.py), several ways to make an image.

    guided     a latent optimised by Adam until CLIPs see the prompt (VQGAN / BigGAN)
    diffusion  a denoising UNet sampled by a diffusers scheduler (pixel or latent space)
    glide      OpenAI's GLIDE: its base UNet and upsampler with their own respaced diffusion
    gan        a text-conditioned GAN generator (GAN-INT-CLS): one forward pass per frame

A family is one folder and one entry here: its `Family` record (t2i/families/record.py) answers
everything the rest of the service asks of it (Options, preset parser, weights plan, what the pages
show, how its steps are named) and builds its pipeline on demand (`build`, which imports torch only
when called). This module is torch-free; nothing outside t2i/families/ compares a family's name.
"""

from __future__ import annotations

from dataclasses import fields

from .diffusion.family import DIFFUSION
from .record import Family
from .gan.family import GAN
from .glide.family import GLIDE
from .guided.family import GUIDED
from .preset import DEFAULT_FAMILY

FAMILIES: dict[str, Family] = {f.name: f for f in (GUIDED, DIFFUSION, GLIDE, GAN)}


def family(name: str) -> Family:
    """The registered family of that name; ValueError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def options_class(name: str) -> type:
    return family(name).options


def option_names(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(options_class(name)))


def gif_caption(name: str | None) -> str:
    """What a result's GIF shows, by the family its PNG parameters name (guided when none: older results)."""
    known = FAMILIES.get(name or DEFAULT_FAMILY)
    return known.gif_caption if known else "the frames"


def build_pipeline(preset, device="cpu", random_weights: bool = False):
    """The preset's family pipeline with its models on `device` (random_weights: the real
    architecture untrained, for benchmarks)."""
    return family(preset.family).build(preset, device, random_weights)


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "build_pipeline", "family", "gif_caption", "option_names", "options_class"]
