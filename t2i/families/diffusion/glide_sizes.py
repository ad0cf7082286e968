"""GLIDE presets' sizes and memory per job, torch-free (the options module and the pages use them).

The base model draws at its own size (64x64 for the release); a preset with an `upsampler` stage ends
at the upsampler's size (256x256). Neither takes other sizes.
"""

from __future__ import annotations

GLIDE_TARGETS = ("glide-base",)
UPSAMPLER_TARGETS = ("glide-upsample",)
RELEASE_SIZES = {"glide-base": 64, "glide-upsample": 256}

# Memory per job, per UNet row and output pixel (fp32 activations of the ADM UNet without gradients),
# a first estimate from the base model's skip connections: 192 channels x 4 levels; refined by
# scripts/measure_memory.py like the other families.
PER_ROW_PIXEL = 192 * 4 * 4 * 4.0
JOB_FLOOR = 64 * 2**20


def is_glide(preset) -> bool:
    return preset.components["unet"].target in GLIDE_TARGETS


def stage_sizes(preset) -> list[int]:
    """The side of each stage's output: [64] or [64, 256] for the release."""
    roles = ["unet"] + (["upsampler"] if "upsampler" in preset.components else [])
    return [int(preset.components[r].params.get("image_size", RELEASE_SIZES[preset.components[r].target]))
            for r in roles]


def used_size(preset) -> tuple[int, int]:
    side = stage_sizes(preset)[-1]
    return side, side


def job_bytes(options, spec, preset) -> int:
    side = max(stage_sizes(preset))
    return int(JOB_FLOOR + PER_ROW_PIXEL * options.rows(spec) * side * side)
