"""Sketches: a small network that turns a perceptor's text embedding into a job's starting image.

CLIP guidance from a blank start has to find the whole layout by gradient descent, and with the
small shapes CLIP it rarely does: from a plain grey start, ShapesBench stayed near 58% through some
thirty variants of optimiser, parameterisation, augmentations and CLIP training (BENCHMARKS.md);
large shapes end as multi-coloured collages at guidance losses far above that of the right image.
A sketch net, trained on the same captioned images as the perceptor (t2i/train/sketch.py) and
conditioned on that perceptor's normalised text embedding, draws a rough picture of the prompt
once per job. The engine then treats it exactly like an uploaded init image (the generator encodes
it) and guidance refines it, held near its start by the preset's `init_weight`.

A preset names its sketch file with `sketch:`; a job with its own init image ignores the sketch.
The checkpoint is `{"config": {...SketchNet arguments}, "state_dict": ...}` (fp16 on disk).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsMissing
from ..assets.fp16 import fp16_state_dict

SIZE = 64  # side of the sketch; the generator's init path resizes it to the job's size
# A 4x4 seed and four x2 upsamplings. The 64x64 stage has 16 channels: at 32 it cost twice the
# training time for no better sketches.
CHANNELS = (128, 96, 64, 32, 16)


class _Up(nn.Module):
    """x2 nearest upsampling, two 3x3 convolutions, and a FiLM (scale, shift) from the embedding at
    every scale: the embedding then decides colour and shape near the pixels, not only through the
    4x4 seed."""

    def __init__(self, cin: int, cout: int, embed_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.film = nn.Linear(embed_dim, 2 * cout)

    def forward(self, x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.norm1(self.conv1(F.interpolate(x, scale_factor=2, mode="nearest"))))
        scale, shift = self.film(embed).chunk(2, dim=1)
        h = self.norm2(self.conv2(x)) * (1 + scale[..., None, None]) + shift[..., None, None]
        return x + F.silu(h)


class SketchNet(nn.Module):
    """(B, embed_dim) unit text embeddings -> (B, 3, 64, 64) images in [0, 1]."""

    def __init__(self, embed_dim: int = 64, channels: tuple[int, ...] = CHANNELS, reader: int = 0):
        super().__init__()
        if len(channels) != 5:
            raise ValueError("a sketch net has 5 channel counts: a 4x4 seed and four x2 upsamplings to 64x64")
        self.config = {"embed_dim": embed_dim, "channels": list(channels)} | ({"reader": reader} if reader else {})
        # reader: an MLP between the embedding and every layer that reads it. In the shapes CLIP's unit
        # embedding the shape word is a small direction (nearest centroid 67%, a linear probe 98%:
        # BENCHMARKS.md, issue 29), and FiLM's linear maps weigh it by its size; two non-linear layers
        # on the embedding scaled to unit-variance entries can make it as large as colour or place.
        self.read = nn.Sequential(nn.Linear(embed_dim, reader), nn.SiLU(), nn.Linear(reader, reader), nn.SiLU()) \
            if reader else None
        width = reader or embed_dim
        self.seed = nn.Linear(width, channels[0] * 16)
        self.ups = nn.ModuleList(_Up(channels[i], channels[i + 1], width) for i in range(4))
        self.out = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, embed: torch.Tensor) -> torch.Tensor:
        if self.read is not None:
            embed = self.read(embed * embed.shape[1] ** 0.5)
        x = self.seed(embed).view(len(embed), -1, 4, 4)
        for up in self.ups:
            x = up(x, embed)
        return torch.sigmoid(self.out(x))


def save_sketch(net: SketchNet, path: Path) -> None:
    torch.save({"config": net.config, "state_dict": fp16_state_dict(net)}, path)  # load_sketch: back to fp32


def load_sketch(path: str | Path, device="cpu", download_hint: str = "") -> SketchNet:
    if not os.path.isfile(path):
        raise WeightsMissing(f"sketch weights {path} are missing" + (f": run `{download_hint}`" if download_hint else ""))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = SketchNet(**ckpt["config"])
    net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return net.eval().requires_grad_(False).to(device)


@torch.no_grad()
def sketch_image(net: SketchNet, text_embeds: torch.Tensor, weights: list[float]):
    """The starting image (PIL, 64x64) for a prompt: its positive-weight parts' embeddings, weighted,
    summed and renormalised (what the net was trained on: one caption's unit embedding). None when
    no part has a positive weight: there is nothing to draw towards."""
    from torchvision.transforms.functional import to_pil_image

    w = torch.tensor([max(0.0, x) for x in weights], device=text_embeds.device, dtype=text_embeds.dtype)
    if not bool(w.any()):
        return None
    embed = F.normalize((w[:, None] * text_embeds).sum(0, keepdim=True), dim=-1)
    return to_pil_image(net(embed.to(next(net.parameters()).device))[0].float().cpu())
