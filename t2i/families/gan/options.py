"""The gan family's job options (torch-free): frames of the noise walk, samples per job, noise scale.

A GAN job is one forward pass per frame: its `steps` are the frames of a loop through the noise (slerp
between noise vectors, back to the first), so the job has progress and a GIF; the result is the
loop's first (and last) image. `noise_scale` multiplies the noise (below 1 draws nearer the noise
distribution's centre, the generator's most typical images, as truncation does; above 1 wilder ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...checks import given, real, whole
from ..options import FLOAT, FormField

SIZE = 64                           # the DCGAN draws 64x64 only
SAMPLES_RANGE = (1, 64)
NOISE_SCALE_RANGE = (0.0, 2.0)
MAX_FRAMES = 256                    # a longer walk adds nothing the GIF (64 frames at most) can show
DEFAULTS = dict(steps=16, num_samples=1, noise_scale=1.0)
# Text encoders with nothing learned (components.py): presets.py allows them in '*untrained*' presets only.
UNTRAINED_TARGETS = ("random-text",)

# Memory per job: a job holds its noise keys and one embedding; a step holds the generator's
# activations for its samples (no gradients). Bytes per channel-pixel of the generator's layer outputs
# (each ConvTranspose, BatchNorm and ReLU output counted as a tensor), and a floor for the job's
# bookkeeping. An upper bound, not a fit: 64 samples of the full-width generator (ngf 64) raised peak
# RSS by 21 MiB on the CPU against 107 MiB estimated (activations are freed layer by layer).
PER_ACTIVATION = 3 * FLOAT
JOB_FLOOR = 8 * 2**20


@dataclass(frozen=True)
class GanOptions:
    steps: int
    num_samples: int
    noise_scale: float

    FAMILY: ClassVar[str] = "gan"
    LIGHTER: ClassVar[str] = "the number of samples"
    FORM: ClassVar[tuple[FormField, ...]] = (FormField("steps", "Frames", "int", step=4,
                      help="frames of the GIF: a loop through the noise, back to the image the job makes"),
            FormField("num_samples", "Samples", "int", step=1, help="1..64 images of the prompt, shown as a grid"),
            FormField("noise_scale", "Noise scale", "float", step=0.1,
                      help="below 1: more typical images (as truncation); 0: one image per prompt; above 1: wilder"))

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "GanOptions":
        d = {**DEFAULTS, **defaults}
        return cls(steps=whole("steps", given(raw, d, "steps"), 1, min(limits.max_iterations, MAX_FRAMES)),
                   num_samples=whole("num_samples", given(raw, d, "num_samples"), *SAMPLES_RANGE),
                   noise_scale=real("noise_scale", given(raw, d, "noise_scale"), *NOISE_SCALE_RANGE))

    def batch_key(self, spec) -> str:
        # Every job of a preset has the same shapes through the generator (64x64; samples are rows).
        return f"{spec.preset}|{SIZE}x{SIZE}"

    def total_steps(self, spec) -> int:
        return self.steps

    def describe(self, spec, width: int = SIZE, height: int = SIZE) -> str:
        samples = f", {self.num_samples} samples" if self.num_samples > 1 else ""
        noise = f", noise x{self.noise_scale:g}" if self.noise_scale != 1 else ""
        return f"{width}x{height}, {self.steps} frames{samples}{noise}"

    def used_size(self, spec, preset) -> tuple[int, int]:
        return SIZE, SIZE

    def job_bytes(self, spec, preset) -> int:
        ngf = generator_width(preset)
        # ConvTranspose outputs at 4, 8, 16, 32 px (8, 4, 2, 1 x ngf channels), then 3 at 64 px.
        per_sample = sum(ngf * m * side * side for m, side in ((8, 4), (4, 8), (2, 16), (1, 32))) + 3 * SIZE * SIZE
        return int(JOB_FLOOR + PER_ACTIVATION * self.num_samples * per_sample)


def generator_width(preset) -> int:
    """The generator's ngf from the preset's params (the architecture its weights are loaded into);
    the port's 64 when they do not say."""
    return int(preset.components["generator"].params.get("ngf", 64))
