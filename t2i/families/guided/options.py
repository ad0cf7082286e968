"""The guided family's job options (torch-free): Adam steps, cutouts and learning rate."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import FormField, given, real, whole

MAX_ITERATIONS = 5000
CUTN_RANGE = (1, 256)
LR_RANGE = (1e-5, 10.0)
DEFAULTS = dict(iterations=300, cutn=32, lr=0.1)


@dataclass(frozen=True)
class GuidedOptions:
    iterations: int
    cutn: int
    lr: float

    FAMILY = "guided"
    LIGHTER = "the size or the cutouts"
    FORM = (FormField("iterations", "Iterations", "int", step=10),
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
