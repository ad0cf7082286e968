"""The reconstruction loss the shapes trainers share (the VQGAN's and the sketch net's).

Shapes cover a few percent of an image; with an unweighted loss a model learns backgrounds long
before shapes and colours. So pixels that differ from the background (a render's corner pixel,
which no shape ever reaches) weigh `FOREGROUND_WEIGHT` times more, and the loss is L1 + MSE.
"""

from __future__ import annotations

import torch

FOREGROUND_WEIGHT = 4.0


def foreground_weights(x: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """(n, 1, h, w) loss weights of renders x (n, 3, h, w): FOREGROUND_WEIGHT where a pixel's summed
    channel difference from the corner pixel exceeds `threshold` (in x's units), 1 elsewhere."""
    background = x[:, :, :1, :1]
    return 1 + (FOREGROUND_WEIGHT - 1) * ((x - background).abs().sum(1, keepdim=True) > threshold).float()


def weighted_reconstruction_loss(err: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 + MSE of `err` (output - target), weighted per pixel, normalised by the mean weight."""
    return (weight * (err.abs() + err.pow(2))).mean() / weight.mean()
