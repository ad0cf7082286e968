"""`python -m t2i bench`: steps/s and peak memory of the engine loop on a preset's real architecture.

Weights are random (built from the preset's architecture file), so no download is needed; the speed
and memory of a step do not depend on the weights' values. Not a test: figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import platform
import resource
import time

import torch

from .engine import build_models, run
from .presets import get_preset
from .spec import make_spec

WARMUP_STEPS = 2


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU (max allocated)"
    # ru_maxrss is KiB on Linux: the whole process, models and Python included.
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (whole process)"


def bench(preset_name: str, device: str = "cpu", steps: int = 10, size=None, cutn=None) -> list[str]:
    preset = get_preset(preset_name)
    models = build_models(preset, device=device, random_weights=True)
    width, height = size or (None, None)
    spec = make_spec("a painting of a lighthouse in a storm", preset.name, width=width, height=height,
                     cutn=cutn, iterations=steps + WARMUP_STEPS, save_every=steps + WARMUP_STEPS, seed=0,
                     defaults=preset.defaults)
    if models.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(models.device)
    marks = {}

    def on_step(step):
        if models.device.type == "cuda":
            torch.cuda.synchronize(models.device)
        marks[step.step] = time.perf_counter()

    result = run(spec, models, on_step)
    seconds = marks[spec.iterations] - marks[WARMUP_STEPS]
    rate = steps / seconds
    where = torch.cuda.get_device_name(models.device) if models.device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return [
        f"preset {preset.name} ({preset.models_label}), random weights of the real architecture",
        f"device {models.device} ({where}), torch {torch.__version__}",
        f"{result.width}x{result.height}, {spec.cutn} cutouts, {steps} timed steps after {WARMUP_STEPS} warm-up",
        f"{rate:.3f} steps/s ({seconds / steps * 1000:.1f} ms/step)",
        f"peak memory {_peak_memory(models.device)}",
    ]
