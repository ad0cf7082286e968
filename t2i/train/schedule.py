"""The learning-rate schedule every shapes-world trainer uses."""

from __future__ import annotations

import torch


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycle to `lr`, warming up over the first tenth of the steps. torch's OneCycleLR divides by
    zero when the warm-up is exactly one step (`--clip-steps 10`), so then it warms up over two."""
    pct_start = 0.1 if 0.1 * steps != 1 else 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
