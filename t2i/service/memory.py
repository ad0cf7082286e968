"""Memory admission: what a job needs, what a device has free, and whether one more job fits.

A job's peak memory is estimated before anything is built: the family decides the job's own part
(`Options.job_bytes(spec, preset)`, from the preset's architecture files and the job's options,
fitted to measured peaks: BENCHMARKS.md, "Memory per job"), and the fixed part is the process
(PyTorch and the libraries, RUNTIME_BYTES) plus the preset's weight files.

    estimate(spec, preset)                 Estimate(fixed, job)
    check_submit(spec, preset, budget)     raises TooLarge with one line naming the largest size that fits
    Admission(device, budget)              the executor's questions: room for one more? could it ever run?

Two budgets, because the web app does not know the executors' devices:
- at submit, `T2I_MAX_JOB_MEMORY` (e.g. "20GB"): the most one job may need on the largest executor.
  Default: this machine's total RAM less MARGIN (the web app and a CPU executor usually share it);
  an operator whose executors have larger GPUs sets it to that GPU's memory.
- in an executor, the device itself: RAM available (/proc/meminfo MemAvailable) on the CPU, free
  CUDA memory plus what PyTorch's allocator holds unused on a GPU; or a fixed `memory_budget`.

This module is torch-free except where it asks CUDA what is free.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import T2IError

GIB = 2**30
GB = 10**9
RUNTIME_BYTES = int(0.85 * GIB)  # a fresh process after importing torch, open_clip, taming, diffusers (RSS)
MARGIN = 0.15                    # estimates are fits: admit only what fits with this much to spare
ENV_BUDGET = "T2I_MAX_JOB_MEMORY"
MAX_FRAMES = 64                  # frames a job keeps for its GIF (the Runner thins them at this cap)


class TooLarge(T2IError):
    """A job needs more memory than any executor here has; the message says what the preset can make."""


@dataclass(frozen=True)
class Estimate:
    fixed: int  # the process and the preset's models: paid once per executor and preset
    job: int    # this job's own peak on top (a step's activations, its state)

    @property
    def total(self) -> int:
        return self.fixed + self.job


def estimate(spec, preset) -> Estimate:
    return Estimate(RUNTIME_BYTES + model_bytes(preset),
                    spec.options.job_bytes(spec, preset) + frame_bytes(spec, preset) + post_bytes(spec, preset))


def post_bytes(spec, preset) -> int:
    """The job's upscalers (post-steps, t2i/upscale/), run after its steps on what it made: the grid of
    its samples (t2i/service/caps.py), then each sample. Counted on top of the steps' peak, though the
    two never meet: an upper bound, kept simple."""
    if not spec.upscale:
        return 0
    from ..upscale import post_bytes as upscaling
    from .caps import grid_size, samples

    cell = spec.options.used_size(spec, preset)
    return upscaling(spec.upscale, *grid_size(samples(spec), cell), samples(spec), cell)


def frame_bytes(spec, preset) -> int:
    """The frames kept for the GIF (RGB, one grid of every sample), twice: gif_bytes stacks a copy."""
    width, height = spec.options.used_size(spec, preset)
    return 2 * (MAX_FRAMES + 1) * 3 * width * height * getattr(spec.options, "num_samples", 1)


def model_bytes(preset) -> int:
    """The preset's weight files as found on disk (fp16 files grow to fp32 when loaded: counted twice
    over, which errs on the safe side for the small ones here)."""
    from ..paths import component_weights, resolve_weights_file
    from ..assets.weights import entry, plan

    p = plan(preset)
    paths = [component_weights(ref) for ref in p.models]
    paths += [Path(resolve_weights_file(ref)) for _, ref in p.clip if ref]
    paths += [Path(resolve_weights_file(ref)) for _, ref in p.files]
    for name in p.entries:
        try:
            weights = entry(name)
            paths += [weights.base / f for f in weights.files]
        except T2IError:
            pass
    # Files, each once: a component may name a folder that holds others' (LDM's text encoder names the
    # release's root, with bert/ and tokenizer/ beside unet/ and vqvae/).
    files = set()
    for path in paths:
        if path.is_dir():
            files.update(f.resolve() for f in path.rglob("*") if f.is_file() and ".cache" not in f.parts)
        elif path.exists():
            files.add(path.resolve())
    return 2 * sum(f.stat().st_size for f in files)


# --- words and numbers ---------------------------------------------------------------------------

def gb(n: float) -> str:
    """Bytes in the unit people read free memory in: "17 GB", "5.5 GB", "0.3 GB"."""
    value = n / GB
    return f"{value:.0f} GB" if value >= 10 else f"{value:.1f} GB" if value >= 0.1 else f"{n / 10**6:.0f} MB"


def parse_bytes(text: str) -> int:
    """"20GB", "20 GiB", "512M", "2e10" -> bytes (GB = 10**9, GiB = 2**30; a bare number is bytes)."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(text))
    if not match:
        raise ValueError(f"{ENV_BUDGET}={text!r}: give a size like 20GB or 24GiB")
    number, prefix, binary = match.groups()
    power = " kmgt".index(prefix.lower() or " ")
    value = float(number) * (1024 if binary else 1000) ** power
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{ENV_BUDGET}={text!r}: must be a size above 0")
    return int(value)


def meminfo(field: str) -> int:
    """A /proc/meminfo figure in bytes (Linux); 0 where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) * 1024
    except OSError:
        pass
    return 0


def submit_budget() -> int:
    """What one job may need at most, as the submitting side knows it (see the module's docstring)."""
    configured = os.environ.get(ENV_BUDGET, "").strip()
    if configured:
        return parse_bytes(configured)
    return int(meminfo("MemTotal") * (1 - MARGIN)) or 2**62


# --- submit: refuse what no executor could run ----------------------------------------------------

def largest_side(spec, preset, budget: int, hi: int | None = None) -> int | None:
    """The largest square side (a multiple of the preset's size step, within the sides make_spec
    accepts) whose estimate fits `budget` with the job's other options; None when even the smallest
    does not."""
    from ..families import family
    from ..spec import SIDE_RANGE

    hi = SIDE_RANGE[1] if hi is None else hi
    fixed = RUNTIME_BYTES + model_bytes(preset)
    step = max(1, spec.options.used_size(spec.with_(width=1, height=1), preset)[0])
    lowest = family(preset.family).min_side
    best, side = None, -(-lowest // step) * step
    while side <= hi:
        if fixed + estimate(spec.with_(width=side, height=side), preset).job > budget:
            break  # estimates grow with the side: nothing larger fits either
        best, side = side, side + step
    return best


def check_submit(spec, preset, budget: int | None = None, max_side: int | None = None) -> Estimate:
    """The job's estimate, or TooLarge when it exceeds `budget` (default submit_budget())."""
    budget = submit_budget() if budget is None else budget
    need = estimate(spec, preset)
    if need.total <= budget:
        return need
    width, height = spec.options.used_size(spec, preset)
    load = spec.describe(width, height)
    head = f"{preset.name} needs about {gb(need.total)} at {load}"
    smaller = spec.options.used_size(spec.with_(width=1, height=1), preset)
    if smaller == (width, height):  # the size is the model's own: only the other options can change
        raise TooLarge(f"{head}; jobs here get at most {gb(budget)}: lower {spec.options.LIGHTER}")
    side = largest_side(spec, preset, budget, max_side)
    if side is None:
        raise TooLarge(f"{head}; jobs here get at most {gb(budget)} and even the smallest size needs more: "
                       f"lower {spec.options.LIGHTER}")
    raise TooLarge(f"{head}; the largest it makes here is {side}x{side}")


# --- executors: admission into a running batch ----------------------------------------------------

class Admission:
    """An executor's memory questions. `budget` (bytes, process included) makes it deterministic;
    without one the device is asked: MemAvailable on the CPU, free CUDA memory on a GPU.

    Between steps a batch holds only its jobs' state; its activations come back at every step. So one
    more job fits when the running jobs' and the new job's `job` parts, with MARGIN, fit what is free
    now (the process and its models already loaded), or, under a budget, what the budget leaves
    after the fixed part."""

    def __init__(self, device: str = "cpu", budget: int | None = None, margin: float = MARGIN):
        self.device, self.budget, self.margin = str(device), budget, margin
        self.cuda = self.device.startswith("cuda")
        self._held: tuple[int, int] | None = None  # (running jobs, bytes) of a job sent back for want of room

    def capacity(self) -> int:
        """The most a lone job may need here: the budget, or the device's total memory."""
        if self.budget is not None:
            return self.budget
        if self.cuda:
            import torch

            return torch.cuda.mem_get_info(torch.device(self.device))[1]
        return meminfo("MemTotal") or 2**62

    def free(self, fixed: int) -> int:
        """Bytes the batch's jobs may use between them at the next step."""
        if self.budget is not None:
            return self.budget - fixed
        if self.cuda:
            import torch

            device = torch.device(self.device)
            unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return torch.cuda.mem_get_info(device)[0] + unused
        return meminfo("MemAvailable")

    def never(self, need: Estimate) -> bool:
        """True when the job alone exceeds this executor: it can only fail."""
        return need.fixed + need.job * (1 + self.margin) > self.capacity()

    def fits(self, running: list[Estimate], new: Estimate) -> bool:
        """Room for `new` beside `running` (the batch's jobs, of one preset)."""
        jobs = sum(e.job for e in running) + new.job
        return jobs * (1 + self.margin) <= self.free(new.fixed)

    def room(self, running_specs: list, preset) -> bool:
        """Before claiming: would one more job like the largest running one (or like the one last
        sent back, until a job leaves) fit? Jobs of one batch key are of one size, so this is
        usually exact; a diffusion job of more samples is checked again once claimed (admit)."""
        if not running_specs:
            return True
        running = [estimate(s, preset) for s in running_specs]
        if self._held is not None and len(running) >= self._held[0]:
            candidate = self._held[1]
        else:
            self._held, candidate = None, max(e.job for e in running)
        return self.fits(running, Estimate(running[0].fixed, candidate))

    def admit(self, running_specs: list, spec, preset) -> bool:
        """Whether a claimed job starts now: True when it fits beside the running jobs (a first job
        always starts, if it fits this executor at all); False when it does not fit now (the executor
        gives it back to the queue, and claims no more until a job leaves); TooLarge (one line)
        when it could never run here."""
        need = estimate(spec, preset)
        if self.never(need):
            raise TooLarge(self.refusal(spec, preset, need))
        running = [estimate(s, preset) for s in running_specs]
        if not running or self.fits(running, need):
            return True
        self._held = (len(running), need.job)
        return False

    def refusal(self, spec, preset, need: Estimate) -> str:
        """The one line a job that can never run here fails with."""
        where = "this executor's budget" if self.budget is not None else \
            f"this executor's {'GPU' if self.cuda else 'RAM'}"
        width, height = spec.options.used_size(spec, preset)
        return (f"{preset.name} needs about {gb(need.fixed + need.job)} at "
                f"{spec.describe(width, height)}; {where} has {gb(self.capacity())}: "
                f"lower {spec.options.LIGHTER}")


def size_note(preset, budget: int | None = None, max_side: int | None = None) -> str:
    """For the Generate form: the sizes the preset makes here, with its default options (budget:
    default submit_budget())."""
    from ..spec import make_spec

    budget = submit_budget() if budget is None else budget

    spec = make_spec("x", preset.name, family=preset.family, defaults=preset.defaults)
    smallest = spec.options.used_size(spec.with_(width=1, height=1), preset)
    if smallest == spec.options.used_size(spec.with_(width=4096, height=4096), preset):
        return f"{preset.name} draws at {smallest[0]}x{smallest[1]} only."
    side = largest_side(spec, preset, budget, max_side)
    if side is None:
        return f"{preset.name} needs more memory than jobs here get ({gb(budget)}) even at its smallest size."
    return (f"Largest size here: {side}x{side} with the preset's default options, or about as many pixels "
            "in another shape.")
