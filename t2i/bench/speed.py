"""`python -m t2i bench`: speed and memory of the Runner on a preset's real architecture, any family.

Weights are random (built from the preset's architecture), so no download is needed; the speed and
memory of a step do not depend on the weights' values. Reports job-steps/s for batches of B jobs
(--batch 1,2,4,...), the FLOPs of one job-step as torch counts them (so achieved FLOP/s can be set
against the device's peak), and with --reference the loop users would write, one job at a time, on
the same models (t2i/bench/reference.py), as a ratio. Not a test: figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from importlib import import_module

import torch

from ..engine import Runner
from ..families import build_pipeline, family, option_names
from ..presets import get_preset
from ..spec import make_spec

WARMUP_STEPS = 2


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU (max allocated)"
    # ru_maxrss is KiB on Linux: the whole process, models and Python included.
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (whole process)"


def _synced_clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _specs(preset, batch: int, iterations: int, size, cutn, stage: int = 0, cache: int | None = None) -> list:
    """Jobs for the bench. stage 1 (a preset with an upsampler stage): one base step, so that the
    warm-up steps carry every job into the upsampler and the timed steps are its own. `cache`: the
    diffusion family's step caching interval (None: the preset's default)."""
    width, height = size or (None, None)
    steps = {family(preset.family).steps_field: 1 if stage else iterations}
    if "cutn" in option_names(preset.family):
        steps["cutn"] = cutn
    if cache is not None:
        steps["cache"] = cache  # make_spec refuses it, in one line, for a family without it
    return [make_spec(f"a painting of a lighthouse in a storm, take {i}", preset.name, family=preset.family,
                      width=width, height=height, save_every=iterations, seed=i, defaults=preset.defaults, **steps)
            for i in range(batch)]


def _flops_per_job_step(models, spec, precision: str) -> float:
    """Matmul/conv FLOPs of one step of one job (guided: forward and backward), as counted by torch. The
    first step makes a frame (step 0): the second is counted, so a latent model's decode is not."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = Runner(models, precision)
    batch.add(0, spec)
    batch.step()
    with FlopCounterMode(display=False) as counter:
        batch.step()
    return float(counter.get_total_flops())


def _frame_seconds(models, spec, precision: str, stage: int = 0) -> tuple[float, float]:
    """Seconds of one job's step without a frame and with one (the preview a latent model decodes every
    save_every steps), through the pipeline contract."""
    batch = Runner(models, precision)
    batch.add(0, spec)
    for _ in range(1 + stage):
        batch.step()  # warm-up (and step 0's frame); stage 1: the base step, then the upsampler's first
    job, times = batch.slots[0].state, []
    for frame in (False, True):
        start = _synced_clock(models.device)
        models.step([job], [frame], batch.autocast)
        times.append(_synced_clock(models.device) - start)
    return times[0], times[1]


def _bench_batch(models, preset, batch_size: int, steps: int, size, cutn, precision: str, stage: int = 0,
                 cache: int | None = None, stagger: bool = False):
    """Job-steps/s of `batch_size` jobs optimised together, and the peak memory. `stagger`: the jobs join
    one per step, as in continuous batching (each at its own point of its steps, so with step caching
    at its own phase of full and cached steps), instead of all at once."""
    device = models.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch = Runner(models, precision)
    iterations = steps + WARMUP_STEPS + (batch_size if stagger else 0)
    for i, spec in enumerate(_specs(preset, batch_size, iterations, size, cutn, stage, cache)):
        batch.add(i, spec)
        if stagger:
            batch.step()
    for _ in range(WARMUP_STEPS):
        batch.step()
    start = _synced_clock(device)
    for _ in range(steps):
        batch.step()
    seconds = _synced_clock(device) - start
    return batch_size * steps / seconds, seconds / steps, _peak_memory(device)


def _bench_reference(models, spec, steps: int):
    module, _, name = str(family(spec.family).bench_reference).partition(":")
    reference_steps = getattr(import_module(module), name)
    device = models.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    marks = []
    mark = lambda: marks.append(_synced_clock(device))  # noqa: E731
    reference_steps(models, spec, steps + WARMUP_STEPS, mark)
    seconds = marks[-1] - marks[WARMUP_STEPS - 1]
    return steps / seconds, _peak_memory(device)


def bench(preset_name: str, device: str = "cpu", steps: int = 10, size=None, cutn=None, precision: str = "fp32",
          batches=(1,), reference: bool = False, plot: str | None = None, frames: bool = True,
          cache: int | tuple[int, ...] | None = None, stagger: bool = False, rounds: int = 1) -> list[str]:
    """`cache`: the diffusion family's step caching interval; several (a tuple): one table of them against
    each other instead, run `rounds` times in turn (the median kept), so that a shared machine's load
    falls on every interval alike and their ratios hold within the run."""
    preset = get_preset(preset_name)
    models = build_pipeline(preset, device=device, random_weights=True)
    if isinstance(cache, tuple):
        return _cache_table(models, preset, steps, size, cutn, precision, batches, cache, stagger, rounds)
    lines = []
    # A preset of two stages (GLIDE's base, then its upsampler) gets a table per stage.
    stages = 2 if "upsampler" in preset.components else 1
    for stage in range(stages):
        if stage:
            lines += ["", f"stage {stage + 1}: the upsampler (jobs carried into it by the warm-up steps)"]
        lines += _bench_stage(models, preset, device, steps, size, cutn, precision, batches, reference, plot,
                              frames, stage, cache, stagger)
    return lines


def _bench_stage(models, preset, device, steps, size, cutn, precision, batches, reference, plot, frames,
                 stage, cache=None, stagger=False) -> list[str]:
    spec = _specs(preset, 1, steps + WARMUP_STEPS, size, cutn, stage, cache)[0]
    # A full step's FLOPs even with step caching: achieved GFLOP/s is then the uncached-equivalent rate.
    flops = _flops_per_job_step(models, _specs(preset, 1, steps + WARMUP_STEPS, size, cutn, stage,
                                               None if cache is None else 0)[0], precision)
    where = torch.cuda.get_device_name(models.device) if models.device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        f"preset {preset.name} ({preset.models_label}), random weights of the real architecture",
        f"device {models.device} ({where}), torch {torch.__version__}, {precision}",
        f"{models.describe(spec)}: {steps} timed steps after {WARMUP_STEPS} warm-up; "
        f"{flops / 1e9:.2f} GFLOP per job-step (counted{', uncached' if cache is not None else ''})"
        + (", jobs joining one per step" if stagger else ""),
        "",
        "| jobs in batch | job-steps/s | ms per batch step | achieved GFLOP/s | peak memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    if frames:
        plain, framed = _frame_seconds(models, spec, precision, stage)
        lines[3:3] = [f"one job's step: {plain * 1000:.0f} ms without a frame, {framed * 1000:.0f} ms with one "
                      f"(a frame costs {(framed - plain) * 1000:.0f} ms, made every save_every steps)"]
    rates = {}
    for b in batches:
        rate, step_seconds, peak = _bench_batch(models, preset, b, steps, size, cutn, precision, stage, cache, stagger)
        rates[b] = rate
        lines.append(f"| {b} | {rate:.3f} | {step_seconds * 1000:.1f} | {rate * flops / 1e9:.1f} | {peak} |")
    if plot and len(rates) > 1:
        from .plot import scaling_plot

        scaling_plot(sorted(rates.items()), f"{preset.name}, {models.describe(spec)}, "
                                            f"{precision}, {models.device}").save(plot)
        lines.append(f"plot written to {plot}")
    record = family(preset.family)
    if reference and record.bench_reference is None:
        # e.g. GLIDE's release samples one prompt at a time with its CFG pair in one call: the batch of 1 above.
        lines += ["", f"reference loop: {record.reference_how}"]
    elif reference:
        ref_rate, ref_peak = _bench_reference(models, spec, steps)
        lines += ["", f"reference loop ({record.reference_how}): {ref_rate:.3f} steps/s, peak memory {ref_peak}"]
        for b, rate in rates.items():
            lines.append(f"ratio to the reference, {b} job(s) in batch: {rate / ref_rate:.2f}x job-steps/s")
    return lines


def _cache_table(models, preset, steps, size, cutn, precision, batches, caches, stagger, rounds) -> list[str]:
    """Job-steps/s per step caching interval and batch size, each the median of `rounds` runs taken in
    turn, with the ratio to the first interval (give 0 first: against no caching)."""
    spec = _specs(preset, 1, steps + WARMUP_STEPS, size, cutn, 0, caches[0])[0]
    rates: dict[tuple[int, int], list[float]] = {}
    peaks: dict[tuple[int, int], str] = {}
    for _ in range(rounds):
        for b in batches:
            for c in caches:
                rate, _, peaks[b, c] = _bench_batch(models, preset, b, steps, size, cutn, precision, 0, c, stagger)
                rates.setdefault((b, c), []).append(rate)
    median = {k: statistics.median(v) for k, v in rates.items()}
    lines = [f"preset {preset.name} ({preset.models_label}), random weights of the real architecture",
             f"device {models.device}, torch {torch.__version__}, {precision}; {models.describe(spec)}; "
             f"{steps} timed steps after {WARMUP_STEPS} warm-up, median of {rounds} rounds in turn"
             + ("; jobs joining one per step" if stagger else "; jobs starting together"),
             "", f"| jobs in batch | cache interval | job-steps/s | ms per batch step | vs cache {caches[0]} | peak memory |",
             "| --- | --- | --- | --- | --- | --- |"]
    for b in batches:
        for c in caches:
            rate = median[b, c]
            lines.append(f"| {b} | {c} | {rate:.3f} | {b / rate * 1000:.1f} | {rate / median[b, caches[0]]:.2f}x "
                         f"| {peaks[b, c]} |")
    return lines
