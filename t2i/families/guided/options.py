"""The guided family's job options (torch-free): Adam steps, cutouts and learning rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from ...checks import given, real, whole
from ..options import FLOAT, FormField, TamingDecoder, read_config
from .preset import parts

MAX_ITERATIONS = 5000
CUTN_RANGE = (1, 256)
LR_RANGE = (1e-5, 10.0)
DEFAULTS = dict(iterations=300, cutn=32, lr=0.1)

# Memory per job, fitted to peak RSS measured on the CPU (BENCHMARKS.md, "Memory per job"): bytes per
# decoder channel-pixel kept for the backward pass, per attention-matrix entry (fp32 scores, their
# softmax and its gradient), per perceptor activation of one cutout, and a floor (latent, Adam, frames).
PER_ACTIVATION = 90.0
PER_ATTENTION = 2.9 * FLOAT
PER_CUTOUT_UNIT = 180.0
JOB_FLOOR = 64 * 2**20


@dataclass(frozen=True)
class GuidedOptions:
    iterations: int
    cutn: int
    lr: float

    FAMILY: ClassVar[str] = "guided"
    LIGHTER: ClassVar[str] = "the size or the cutouts"
    FORM: ClassVar[tuple[FormField, ...]] = (FormField("iterations", "Iterations", "int", step=10),
            FormField("cutn", "Cutouts", "int", step=1))

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "GuidedOptions":
        d = {**DEFAULTS, **defaults}
        return cls(
            iterations=whole("iterations", given(raw, d, "iterations"), 1, min(limits.max_iterations, MAX_ITERATIONS)),
            cutn=whole("cutn", given(raw, d, "cutn"), CUTN_RANGE[0], min(limits.max_cutn, CUTN_RANGE[1])),
            lr=real("lr", given(raw, d, "lr"), *LR_RANGE))

    def batch_key(self, spec) -> str:
        # latents and cutouts of equal shapes stack; Adam's learning rate is per job
        return f"{spec.preset}|{spec.width}x{spec.height}|{self.cutn}"

    def total_steps(self, spec) -> int:
        return self.iterations

    def describe(self, spec, width: int, height: int) -> str:
        return f"{width}x{height} with {self.cutn} cutouts"

    def used_size(self, spec, preset) -> tuple[int, int]:
        g = parts(preset)
        if g.kind == "biggan":
            side = int(read_config(str(g.arch))["output_dim"])
            return side, side
        factor = TamingDecoder.of(str(g.arch)).factor
        return max(factor, spec.width // factor * factor), max(factor, spec.height // factor * factor)

    def job_bytes(self, spec, preset) -> int:
        """The generator's decode kept for the backward pass (activations, attention matrices) plus
        every perceptor's pass over this job's cutouts."""
        width, height = self.used_size(spec, preset)
        g = parts(preset)
        if g.kind == "biggan":
            activations, attention = _biggan(read_config(str(g.arch)))
        else:
            decoder = TamingDecoder.of(str(g.arch))
            activations, attention = decoder.activations(width, height), decoder.attention(width, height)
        cutouts = self.cutn * sum(_perceptor_units(p.model) for p in g.perceptors)
        return int(JOB_FLOOR + PER_ACTIVATION * activations + PER_ATTENTION * attention + PER_CUTOUT_UNIT * cutouts)


def _biggan(config: dict) -> tuple[float, float]:
    """(channel-pixels, attention entries) of a BigGAN-deep generator's forward pass: from 4x4, each
    `up` layer doubles the side; the attention layer's keys are pooled 4:1."""
    side, activations, attention = 4, 0.0, 0.0
    for i, (up, _, out) in enumerate(config["layers"]):
        side *= 2 if up else 1
        activations += 4 * config["channel_width"] * out * side * side  # a GenBlock's four convolutions
        if i == config.get("attention_layer_position"):
            attention += (side * side) ** 2 / 4
    return activations, attention


def _perceptor_units(model: str) -> float:
    """Activations of one cutout through an open_clip image tower (tokens x width x depth): our
    configs/models/<model>.json, or open_clip's own config of that name."""
    import json
    from importlib.util import find_spec

    from ...paths import MODEL_CONFIG_DIR

    path = MODEL_CONFIG_DIR / f"{model}.json"
    if not path.exists():
        spec = find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            return 0.0
        path = Path(next(iter(spec.submodule_search_locations))) / "model_configs" / f"{model}.json"
    if not path.exists():
        return 0.0
    vision = json.loads(path.read_text())["vision_cfg"]
    size, width, layers = vision["image_size"], vision["width"], vision["layers"]
    if isinstance(size, (list, tuple)):
        size = size[0]
    if isinstance(layers, (list, tuple)):  # a ModifiedResNet: its stem works at a quarter of the side
        return (size / 4) ** 2 * width * sum(layers)
    return (size / vision.get("patch_size", 16)) ** 2 * width * layers
