"""Tiled inference: a network that enlarges an image run on pieces of it, so that its activations
stay bounded whatever the image's size (a 64-feature x4 ESRGAN on a whole 1024x1024 image holds
gigabytes of features; on 256x256 tiles, a few hundred megabytes).

Each output tile is computed from its input tile plus `overlap` pixels of context on every side
(clipped at the image's edges, where the network pads as it would on the whole image) and then
cropped back: for a network whose receptive field reaches no further than `overlap` the result is
the whole-image result; for deeper ones (ESRGAN's reaches far) the context keeps seams invisible,
as the big UIs' tilers do.
"""

from __future__ import annotations

from typing import Callable

import torch


def tiled(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], scale: int, tile: int,
          overlap: int) -> torch.Tensor:
    """fn applied to (1, C, H, W) `x` tile by tile: (1, C', H*scale, W*scale), float32 on the CPU
    (the whole output is assembled there, never on the device)."""
    _, _, height, width = x.shape
    out = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            t, l = max(top - overlap, 0), max(left - overlap, 0)
            y = fn(x[..., t:min(bottom + overlap, height), l:min(right + overlap, width)])
            if out is None:
                out = torch.empty((1, y.shape[1], height * scale, width * scale), dtype=torch.float32)
            out[..., top * scale:bottom * scale, left * scale:right * scale] = \
                y[..., (top - t) * scale:(bottom - t) * scale, (left - l) * scale:(right - l) * scale].float().cpu()
            del y  # the tile's output goes before the next tile's activations come
    return out
