"""An exponential moving average of a network's weights, what the trainers of the offline worlds
sample from (the flowers GAN, shapes-ldm's UNet).

Written here rather than taken from torch: `torch.optim.swa_utils.AveragedModel` keeps BatchNorm's
running statistics only through a separate `update_bn` pass over data, where copying the live
network's is what GAN practice does (and costs nothing); the warm-up is TensorFlow's
ExponentialMovingAverage with num_updates.
"""

from __future__ import annotations

import copy

import torch


class Ema:
    """An exponential moving average of a network's parameters (Karras et al.; Yazici et al. 2019 for
    GANs); buffers (BatchNorm's running statistics) are copied from the live network. Sampling from
    the average smooths the step-to-step oscillation of training."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): the decay grows as
        # (1 + n) / (10 + n) up to `decay`, so early averages are not dominated by the random start
        # (at 0.999, 500 steps in, the start would still weigh 0.6).
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for mine, theirs in zip(self.net.parameters(), net.parameters()):
            mine.lerp_(theirs, 1 - decay)
        for mine, theirs in zip(self.net.buffers(), net.buffers()):
            mine.copy_(theirs)
