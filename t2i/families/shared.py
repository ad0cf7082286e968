"""What several families' pipelines share: the grid of a job's samples (and of several jobs' images, the
benches' sheets), a job's Finished (the grid and each sample), and the build-time weights check.

A leaf of the pipelines: diffusion, GLIDE and gan import it; it imports none of them.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.utils import make_grid

from ..assets import weights as W
from ..engine.runner import to_pil
from ..output.render import GRID_PADDING, grid_layout
from .base import Finished
from .preset import Preset


def grid(images: torch.Tensor) -> torch.Tensor:
    """Samples side by side in a near-square grid, (1, 3, H, W); one sample is itself. The layout is
    render's (grid_layout, GRID_PADDING), which the gallery splits the PNG by."""
    if len(images) == 1:
        return images
    columns, _ = grid_layout(len(images))
    return make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=0.0)[None]


def grid_of(images: list[Image.Image]) -> Image.Image:
    """PIL images of one size (several jobs' results) laid out as one job's samples are, by `grid`:
    the benches' sheets of example images."""
    import numpy as np

    stacked = torch.stack([torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1) for image in images])
    return to_pil(grid(stacked.float() / 255))


def finished(images: torch.Tensor) -> Finished:
    """A job of len(images) samples in [0, 1]: the grid, and each sample when there are several."""
    samples = [to_pil(images[i:i + 1]) for i in range(len(images))] if len(images) > 1 else []
    return Finished(to_pil(grid(images)), samples)


def weights_plan(preset: Preset, random_weights: bool) -> tuple[bool, str]:
    """Whether the preset is built with random weights, and the command that fetches its files; a
    trained preset's missing files are one clear message before any loading starts."""
    random_weights = random_weights or preset.untrained
    if not random_weights:
        W.require(preset)
    return random_weights, W.download_command(preset.name)
