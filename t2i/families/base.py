"""The contract every family's pipeline implements; the Runner (t2i/engine/runner.py) is its only caller.

A pipeline is built once per preset and device (`build(preset, device, random_weights)`) and then
serves any number of jobs, several at a time:

    state = pipeline.start(spec, gen)        a job's own state (latent, optimiser or scheduler,
                                             conditioning), every random draw from `gen`
    outs  = pipeline.step(states, frames, amp)
                                             one step of every job in the batch, in one model call
                                             where the family allows; per job a StepOut: its metric
                                             (a loss, or None where there is none) and, where
                                             frames[i] is True, a preview image (1, 3, H, W) in [0, 1]
    final = pipeline.finish(states)          per job a Finished: the family's final image (a grid
                                             for several samples) and each sample; post-steps
                                             (upscalers) are the Runner's, applied after this
    pipeline.describe(spec)                  the job's load in words, for one-line errors
    pipeline.used_size(spec)                 the size the job is made at, (width, height)

Rules every pipeline keeps (tests/test_families.py checks them on every tiny preset):
- a job's result does not depend on its batch-mates (beyond floating-point noise): each job's random
  draws come from its own generator, and nothing mixes rows across jobs;
- `step` may be given any subset of started jobs, in any order; jobs join and leave between steps;
- `amp()` is the Runner's autocast context: wrap the heavy forward passes in it, keep optimiser
  state, losses and scheduler arithmetic in fp32;
- the same seed gives the same bytes on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


@dataclass
class StepOut:
    metric: float | None     # the family's loss, or None (diffusion has none to show)
    frame: Any = None        # torch.Tensor (1, 3, H, W) in [0, 1] when a frame was asked for


@dataclass
class Finished:
    image: Any                                   # PIL.Image: the result (a grid for several samples)
    samples: list = field(default_factory=list)  # PIL.Images, when the job made several


class Pipeline(Protocol):
    preset: Any
    device: Any

    def used_size(self, spec) -> tuple[int, int]: ...

    def describe(self, spec) -> str: ...

    def start(self, spec, gen) -> Any: ...

    def step(self, states: list, frames: list[bool], amp: Callable) -> list[StepOut]: ...

    def finish(self, states: list) -> list[Finished]: ...
