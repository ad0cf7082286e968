"""GLIDE presets' sizes and memory per job, torch-free (the options module and the pages use them).

The base model draws at its own size (64x64 for the release); a preset with an `upsampler` stage ends
at the upsampler's size (256x256). Neither takes other sizes.
"""

from __future__ import annotations

GLIDE_TARGETS = ("glide-base",)
UPSAMPLER_TARGETS = ("glide-upsample",)
RELEASE_SIZES = {"glide-base": 64, "glide-upsample": 256}

# Memory per job: what one model call adds per UNet row and output pixel (fp32, no gradients), fitted to
# peak RSS on the CPU with random weights of the release's architectures (BENCHMARKS.md, "GLIDE"):
# base at 64x64, 2 and 8 rows: +251 / +874 MiB; upsampler at 256x256, 1 and 2 rows: +633 / +1211 MiB.
PER_PIXEL = {"glide-base": 26.6e3, "glide-upsample": 9.3e3}
JOB_FLOOR = 64 * 2**20


def space_timesteps(num_timesteps: int, spacing: str) -> list[int]:
    """The original timesteps kept by a respacing: "100" (evenly), "10,10,3,2,2" (per section), "fast27"."""
    if spacing == "fast27":
        # The release's 27-step upsampler spacing, which avoids the very noisiest step.
        kept = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
        return sorted(kept - {num_timesteps - 1} | {num_timesteps - 3})
    counts = [int(c) for c in spacing.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    taken: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        taken += [start + round(stride * j) for j in range(count)]
        start += size
    return sorted(set(taken))


def upsampler_steps(params: dict) -> int:
    """Steps of an upsampler stage with these params: its respacing's length ("fast27" in the release)."""
    return len(space_timesteps(1000, str(params.get("respacing", "fast27"))))


def stage_sizes(preset) -> list[int]:
    """The side of each stage's output: [64] or [64, 256] for the release."""
    roles = ["unet"] + (["upsampler"] if "upsampler" in preset.components else [])
    return [int(preset.components[r].params.get("image_size", RELEASE_SIZES[preset.components[r].target]))
            for r in roles]


def used_size(preset) -> tuple[int, int]:
    side = stage_sizes(preset)[-1]
    return side, side


def job_bytes(options, spec, preset) -> int:
    """The larger stage's activations: the base stage runs cond and uncond rows (options.rows), the
    upsampler one row per sample."""
    roles = ["unet"] + (["upsampler"] if "upsampler" in preset.components else [])
    peaks = []
    for role, side in zip(roles, stage_sizes(preset)):
        rows = options.rows(spec) if role == "unet" else options.num_samples
        peaks.append(PER_PIXEL[preset.components[role].target] * rows * side * side)
    return int(JOB_FLOOR + max(peaks))
