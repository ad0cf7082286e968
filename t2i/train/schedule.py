"""The learning-rate schedule every trainer of the offline worlds uses, and the optimisation loop the
diffusion-era trainers (digits CLIP, classifier and DDPM; the shapes LDM) share."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle to `lr`, warming up over the first tenth of the steps. torch's OneCycleLR divides by
    zero when the warm-up is exactly one step (`--clip-steps 10`), so then it warms up over two."""
    pct_start = 0.1 if 0.1 * steps != 1 else 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)


def optimise(params: Iterable[torch.nn.Parameter], step_loss: Callable[[], torch.Tensor], steps: int, lr: float,
             weight_decay: float, desc: str, progress: bool = True, clip_norm: float | None = None,
             after_step: Callable[[], None] | None = None) -> list[float]:
    """AdamW under one_cycle for `steps` steps of `step_loss()` (which draws its own batch); the
    gradient norm clipped to clip_norm when given; after_step (an EMA update) after each step.
    Returns every step's loss."""
    params = list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = one_cycle(opt, lr, steps)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    return losses
