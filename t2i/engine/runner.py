"""The Runner: jobs of one preset run as a batch, whatever their family; the executor talks to it only.

It owns what every family shares: slots (one per job: its spec, seed, generator, state, step count,
frames and metrics), jobs joining and leaving between steps, the frame cadence (`save_every`),
timing, autocast, post-steps and results. The maths lives in the preset's pipeline
(t2i/families/base.py).

Post-steps: a job's upscalers (spec.upscale, t2i/upscale/) run after its family's steps, one per
step boundary, each one more step of the job's progress with the upscaled image as its frame. The
family's pipelines do not know of them. A job in its post-steps leaves the family's batched step and
runs its upscaler beside it, so its batch-mates wait for at most one upscaler per step; one that
runs out of memory there fails alone (its Step carries the error), since the others' state is not
at fault.

    runner = Runner(pipeline)
    runner.add(name, spec)        # starts the job from its own seed; it takes part from the next step
    steps = runner.step()         # {name: Step} for every unfinished job
    generation = runner.result(name)
    runner.remove(name)

`run(spec, pipeline)` is one job as a batch of one; `run_batches(specs, pipeline, batch)` many.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .. import upscale
from ..errors import Cancelled, OutOfMemory
from ..families.base import Finished, Pipeline
from ..service.memory import MAX_FRAMES
from ..spec import MAX_SEED, JobSpec

PRECISIONS = ("fp32", "bf16")


@dataclass
class Step:
    step: int                   # steps done
    total: int
    loss: float | None          # the family's metric (None: diffusion has none)
    frame: Image.Image | None   # set every save_every steps
    frame_step: int | None      # the step count the frame shows
    elapsed: float
    error: Exception | None = None  # set when a post-step failed: this job alone ends with it


@dataclass
class Generation:
    """A finished job: the final image, its frames, and the figures the PNG and the pages show."""

    image: Image.Image
    frames: list[Image.Image]
    frame_steps: list[int]
    seed: int
    width: int
    height: int
    losses: list[float] = field(default_factory=list)
    samples: list[Image.Image] = field(default_factory=list)  # each sample of a several-sample job
    upscaled_from: tuple[int, int] | None = None  # the size the family made, when upscalers enlarged it


@dataclass
class Slot:
    spec: JobSpec
    seed: int
    gen: torch.Generator
    state: Any                  # the pipeline's own per-job state (start's result)
    total: int                  # the family's steps and the post-steps
    post: list = field(default_factory=list)  # the job's Upscalers, in order
    step: int = 0
    frames: list = field(default_factory=list)
    frame_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)
    stride: int = 1             # frames kept for the GIF: every stride-th of those save_every makes
    finished: Finished | None = None  # the family's Finished once its steps are over; upscaled by the post-steps
    made: Image.Image | None = None   # the family's image, before any post-step
    failed: bool = False        # a post-step raised (its Step says why)

    @property
    def done(self) -> bool:
        return self.step >= self.total or self.failed

    @property
    def family_total(self) -> int:
        return self.total - len(self.post)

    @property
    def in_post(self) -> bool:
        return self.step >= self.family_total

    def keep(self, frame: Image.Image, step: int) -> None:
        """Keep a frame for the GIF, at most MAX_FRAMES of them: at the cap every second one goes and
        only every second one is taken from then on, so a long job's GIF still runs from the first
        step to the end without its frames piling up in memory (the executor has already written
        each frame to the store as progress)."""
        if step % (self.spec.save_every * self.stride):
            return
        self.frames.append(frame)
        self.frame_steps.append(step)
        if len(self.frames) >= MAX_FRAMES:
            self.frames, self.frame_steps = self.frames[::2], self.frame_steps[::2]
            self.stride *= 2


def to_pil(image: torch.Tensor) -> Image.Image:
    return TF.to_pil_image(image[0].detach().clamp(0, 1).float().cpu())


class Runner:
    def __init__(self, pipeline: Pipeline, precision: str = "fp32", upscalers: Callable | None = None):
        """`upscalers(name, device)` gives a loaded Upscaler (default: t2i.upscale.load, cached per
        process)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.pipeline = pipeline
        self.precision = precision
        self.upscalers = upscalers or upscale.load
        self.slots: dict[object, Slot] = {}
        self.key: str | None = None

    def __len__(self) -> int:
        return len(self.slots)

    # What a caller driving jobs through the Runner (the executor) asks, so that it needs neither the
    # pipeline nor the slots.
    @property
    def device(self):
        return self.pipeline.device

    @property
    def preset(self):
        return self.pipeline.preset

    def specs(self) -> list[JobSpec]:
        """The specs of the jobs in the batch, in the order they joined."""
        return [s.spec for s in self.slots.values()]

    def spec(self, name) -> JobSpec:
        return self.slots[name].spec

    def done(self, name) -> bool:
        """Whether the job has taken all its steps (its result is ready)."""
        return self.slots[name].done

    def out_of_memory(self) -> OutOfMemory:
        """The one line for a batch step that ran out of memory, naming the load of the batch's first job."""
        return out_of_memory(self.pipeline, next(iter(self.slots.values())).spec)

    def accepts(self, spec: JobSpec) -> bool:
        return self.key is None or spec.batch_key == self.key

    def add(self, name, spec: JobSpec) -> Slot:
        """Start a job (everything random from its own seed); it takes part from the next step on."""
        if not self.accepts(spec):
            raise ValueError(f"job {name} does not fit this batch ({spec.batch_key} vs {self.key})")
        # Upscalers are loaded first: a missing or broken file fails the job before it has cost anything.
        post = [self.upscalers(n, self.pipeline.device) for n in spec.upscale]
        seed = spec.seed if spec.seed is not None else secrets.randbelow(MAX_SEED + 1)
        gen = torch.Generator(device=self.pipeline.device).manual_seed(seed)
        slot = Slot(spec, seed, gen, self.pipeline.start(spec, gen), spec.total_steps, post)
        self.key = self.key or spec.batch_key
        self.slots[name] = slot
        return slot

    def remove(self, name) -> Slot:
        slot = self.slots.pop(name)
        if not self.slots:
            self.key = None
        return slot

    def step(self) -> dict:
        """One step of every unfinished job: the family's step for those still in it, one upscaler
        for those past it; returns {name: Step}."""
        result = {n: self._post_step(s) for n, s in self.slots.items() if not s.done and s.in_post}
        names = [n for n, s in self.slots.items() if not s.done and not s.in_post and n not in result]
        slots = [self.slots[n] for n in names]
        if not slots:
            return result
        want = [s.step % s.spec.save_every == 0 for s in slots]
        outs = self.pipeline.step([s.state for s in slots], want, self.autocast)
        now = time.monotonic()
        for name, s, out in zip(names, slots, outs):
            frame = to_pil(out.frame) if out.frame is not None else None
            if frame is not None:
                s.keep(frame, s.step)
            frame_step = s.step if frame is not None else None
            if out.metric is not None:
                s.losses.append(out.metric)
            s.step += 1
            result[name] = Step(s.step, s.total, out.metric, frame, frame_step, now - s.start)
        return result

    def _finish(self, s: Slot) -> Finished:
        if s.finished is None:
            (s.finished,) = self.pipeline.finish([s.state])
            s.made = s.finished.image  # the GIF ends on it: frames keep the size the family made
        return s.finished

    def _post_step(self, s: Slot) -> Step:
        """The job's next upscaler on its image (and on each sample of a several-sample job, which
        the CLI writes one by one)."""
        finished, upscaler = self._finish(s), s.post[s.step - s.family_total]
        error = None
        try:
            finished.image = upscaler(finished.image)
            finished.samples = [upscaler(sample) for sample in finished.samples]
        except Exception as e:  # noqa: BLE001 - an upscaler's fault is this job's, not its batch-mates'
            s.failed, error = True, self._post_out_of_memory(s, upscaler) if out_of_memory_error(e) else e
        s.step += 1
        if error is not None:
            return Step(s.step, s.total, None, None, None, time.monotonic() - s.start, error)
        return Step(s.step, s.total, None, finished.image, s.step - 1, time.monotonic() - s.start)

    def _post_out_of_memory(self, s: Slot, upscaler) -> OutOfMemory:
        width, height = self._finish(s).image.size
        return OutOfMemory(f"out of {self.pipeline.device.type.upper()} memory at {upscaler.describe(width, height)}, "
                           f"after {self.pipeline.describe(s.spec)}: lower the size, or choose a smaller upscaler "
                           f"or {upscale.NONE}")

    def result(self, name) -> Generation:
        """The finished job's final image (upscaled when it has post-steps), frames and figures."""
        s = self.slots[name]
        final = self._finish(s)
        width, height = self.pipeline.used_size(s.spec)
        made = None
        if s.post:  # the image is the family's size times every upscaler's scale
            made, factor = (width, height), math.prod(u.scale for u in s.post)
            width, height = width * factor, height * factor
        return Generation(final.image, [*s.frames, s.made], [*s.frame_steps, s.family_total], s.seed, width, height,
                          s.losses, final.samples, made)

    def autocast(self):
        # bf16 for the heavy forward passes; the pipeline keeps its state and losses in fp32.
        return torch.autocast(self.pipeline.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def run(spec: JobSpec, pipeline, on_step: Callable[[Step], bool | None] | None = None,
        precision: str = "fp32") -> Generation:
    """One job, a batch of one. `on_step` returning True stops it between steps (Cancelled)."""
    runner = Runner(pipeline, precision)
    try:
        runner.add(0, spec)
        while not runner.slots[0].done:
            step = runner.step()[0]
            if step.error:
                raise step.error
            if on_step and on_step(step):
                raise Cancelled(f"stopped after {step.step} of {step.total} steps")
        return runner.result(0)
    except torch.OutOfMemoryError:
        raise out_of_memory(pipeline, spec) from None


def run_batches(specs: list[JobSpec], pipeline, batch: int = 16, precision: str = "fp32") -> Iterator[Generation]:
    """Many jobs to completion, `batch` at a time (jobs that share a batch_key); yields each
    Generation in the order of `specs`, the one `run` would give up to floating-point noise."""
    for start in range(0, len(specs), batch):
        group = specs[start:start + batch]
        runner = Runner(pipeline, precision)
        try:
            for i, spec in enumerate(group):
                runner.add(i, spec)
            while not all(slot.done for slot in runner.slots.values()):
                for step in runner.step().values():
                    if step.error:
                        raise step.error
        except torch.OutOfMemoryError:
            raise out_of_memory(pipeline, group[0]) from None
        for i in range(len(group)):
            yield runner.result(i)


def out_of_memory_error(error: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator a RuntimeError of its own (when the kernel
    refuses the allocation rather than killing the process)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(error))


def out_of_memory(pipeline: Pipeline, spec: JobSpec) -> OutOfMemory:
    return OutOfMemory(f"out of {pipeline.device.type.upper()} memory at {pipeline.describe(spec)}: "
                       f"lower {spec.options.LIGHTER}")
