"""Prompt targets and the guidance loss.

A target is a unit embedding with a weight and a stop. The loss is the squared spherical distance
between cutout embeddings and each target; a negative weight pushes away; once the distance crosses
`stop` the target stops pulling (its gradient is cut but its value is still reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class _ReplaceGrad(torch.autograd.Function):
    """Forward as the first argument, backward as the second."""

    @staticmethod
    def forward(ctx, forward_value, backward_value):
        ctx.shape = backward_value.shape
        return forward_value

    @staticmethod
    def backward(ctx, grad):
        return None, grad.sum_to_size(ctx.shape)


replace_grad = _ReplaceGrad.apply


@dataclass
class Target:
    embed: torch.Tensor  # (1, D), unit norm
    weight: float = 1.0
    stop: float = -math.inf
    label: str = ""


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance / 2 between unit vectors (broadcasting over leading dims)."""
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def target_loss(image_embeds: torch.Tensor, target: Target) -> torch.Tensor:
    dists = spherical_distance(image_embeds[:, None, :], target.embed[None, :, :])
    dists = dists * math.copysign(1.0, target.weight)
    stop = torch.full_like(dists, target.stop if math.isfinite(target.stop) else -math.inf)
    return abs(target.weight) * replace_grad(dists, torch.maximum(dists, stop)).mean()


def guidance_loss(image_embeds: torch.Tensor, targets: list[Target]) -> torch.Tensor:
    return torch.stack([target_loss(image_embeds, t) for t in targets]).sum()


@torch.no_grad()
def similarity(image_embeds: torch.Tensor, target: Target) -> float:
    """Mean cosine similarity of the embeddings to the target (for reports and tests)."""
    return float((image_embeds @ target.embed.T).mean())
