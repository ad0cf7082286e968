"""What an executor keeps between jobs: the built pipelines of its last presets (ModelCache) and how
many compatible jobs it runs as one batch (BatchSizer)."""

from __future__ import annotations

import gc
from collections import OrderedDict

import torch

from .. import upscale
from ..families import build_pipeline
from ..presets import get_preset


class ModelCache:
    """Built pipelines by preset, so consecutive jobs with the same preset do not reload."""

    def __init__(self, device: str, size: int):
        self.device, self.size = device, max(1, size)
        self._models: OrderedDict[str, object] = OrderedDict()

    def get(self, preset_name: str):
        if preset_name in self._models:
            self._models.move_to_end(preset_name)
            return self._models[preset_name]
        while len(self._models) >= self.size:
            self._models.popitem(last=False)
            free_memory()
        pipeline = build_pipeline(get_preset(preset_name), device=self.device)
        self._models[preset_name] = pipeline
        return pipeline

    def clear(self) -> None:
        self._models.clear()
        upscale.clear()
        free_memory()


class BatchSizer:
    """How many compatible jobs run as one batch: fixed (--batch N), or "auto": on a GPU, from the
    memory one step took per job and the memory still free; on the CPU a small constant, since
    batching buys little there."""

    CPU_AUTO = 4
    GPU_MAX = 32
    HEADROOM = 0.8

    def __init__(self, setting: str, device: str):
        self.fixed = None if str(setting) == "auto" else max(1, int(setting))
        self.cuda = torch.device(device).type == "cuda"
        self.size = self.fixed or (1 if self.cuda else self.CPU_AUTO)
        self._base = 0

    def before_step(self, device: torch.device) -> None:
        if self.cuda and not self.fixed:
            torch.cuda.reset_peak_memory_stats(device)
            self._base = torch.cuda.memory_allocated(device)

    def observe(self, active: int, device: torch.device) -> None:
        if not self.cuda or self.fixed:
            return
        per_job = max(1, (torch.cuda.max_memory_allocated(device) - self._base) // active)
        free, _ = torch.cuda.mem_get_info(device)
        self.size = max(1, min(self.GPU_MAX, active + int(self.HEADROOM * free // per_job)))

    def shrink(self, active: int) -> None:
        """After running out of memory with `active` jobs: half as many from now on."""
        self.size = max(1, active // 2)
        if self.fixed:
            self.fixed = self.size


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
