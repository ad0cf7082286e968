"""The Upscaler: one loaded upscaling network behind one call, whatever its kind.

    upscaler = build(name, kind, path, scale, device)
    bigger = upscaler(image)      # PIL in, PIL out, `upscaler.scale` times larger (tiled: bounded memory)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..errors import BrokenWeights
from . import esrgan, srcnn
from .sizes import FACTORS


@dataclass(eq=False)
class Upscaler:
    name: str      # the weights entry
    kind: str      # esrgan | srcnn
    scale: int
    net: object    # a spandrel ImageModelDescriptor, or an SRCNN module
    tile: int      # input pixels per tile side (t2i/upscale/tiles.py)

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> Image.Image:
        if self.kind == "srcnn":
            return srcnn.upscale(image, self.net, self.scale, tile=self.tile * self.scale)
        return esrgan.upscale(image, self.net, tile=self.tile)

    def describe(self, width: int, height: int) -> str:
        """The load in words, for one-line errors: "realesrgan-x4plus on 512x512 (to 2048x2048)"."""
        return f"{self.name} on {width}x{height} (to {width * self.scale}x{height * self.scale})"


def build(name: str, kind: str, path: Path, scale: int, device="cpu", hint: str = "") -> Upscaler:
    """`scale` is what the entry's name says; an ESRGAN file's own scale (from its tensors) wins.
    `hint`: the command that fetches the file (t2i.upscale.download_command)."""
    hint = hint or f"python -m t2i download {name}"
    if kind == "srcnn":
        if scale not in FACTORS:
            raise BrokenWeights(f"upscaler {name}: an srcnn entry's name or file must say its factor "
                                f"({', '.join(f'x{f}' for f in FACTORS)}), since the file does not")
        # Tiles of the input image's pixels, as for ESRGAN: the network runs on the enlarged luma.
        return Upscaler(name, kind, scale, srcnn.load_srcnn(path, device, download_hint=hint),
                        srcnn.TILE // scale)
    net = esrgan.load_esrgan(path, device, download_hint=hint)
    return Upscaler(name, kind, int(net.scale), net, esrgan.TILE)
