"""The latent space of a taming VQ autoencoder, as a latent diffusion model sees it.

Encoding stops before quantisation (quant_conv(encoder(x)), the continuous latent CompVis's
VQ-regularised LDMs diffuse in) and multiplies by `scale`, chosen per model so that latents of
training images have about unit standard deviation (LDM's "scale_factor"): the noise schedule
assumes unit-variance data, and a latent far from it is either drowned early or barely noised.
Decoding undoes the scale, snaps every position to the nearest codebook entry (as CompVis's
VQ-regularised LDMs decode: the decoder was only trained on codebook vectors) and runs the decoder.
Images are in [0, 1] on both sides; taming's [-1, 1] stays inside.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .vqgan import TamingVQ, build_taming, load_taming


class VQLatentCodec(nn.Module):
    def __init__(self, model: TamingVQ, scale: float = 1.0):
        super().__init__()
        if model.gumbel:
            # A Gumbel VQ's quant_conv output is logits over codes, not a point in code space.
            raise ValueError("VQLatentCodec: Gumbel VQ models have no continuous code-space latent")
        self.model = model.eval().requires_grad_(False)
        self.scale = float(scale)
        self.factor = model.factor
        self.channels = int(model.codebook.shape[1])

    @torch.no_grad()
    def encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [0, 1] -> (n, C, H/f, W/f) pre-quantisation latent (before `scale`)."""
        return self.model.quant_conv(self.model.encoder(images * 2 - 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_unscaled(images) * self.scale

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> nearest codebook entry per position, in code space (unscaled)."""
        h = (z / self.scale).movedim(1, 3)
        codebook = self.model.codebook
        d = h.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * h @ codebook.T
        return codebook[d.argmin(-1)].movedim(3, 1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, C, h, w) scaled latent -> (n, 3, h*f, w*f) image in [0, 1]."""
        return self.model.decode(self.quantize(z)).add(1).div(2).clamp(0, 1)


@torch.no_grad()
def measure_scale(codec: VQLatentCodec, images: torch.Tensor, batch: int = 64) -> float:
    """1 / std of the unscaled latents of `images` (training renders in [0, 1]): unit-std latents."""
    z = torch.cat([codec.encode_unscaled(images[i:i + batch]) for i in range(0, len(images), batch)])
    return float(1.0 / z.float().std())


def load_vq_codec(config_yaml: Path, ckpt: Path, scale: float, download_hint: str = "") -> VQLatentCodec:
    """A trained taming model (a missing file is WeightsMissing, as for the guided presets)."""
    return VQLatentCodec(load_taming(config_yaml, ckpt, download_hint=download_hint), scale)


def build_vq_codec(config_yaml: Path, scale: float = 1.0) -> VQLatentCodec:
    """Random weights of the config's architecture (untrained presets)."""
    return VQLatentCodec(build_taming(config_yaml), scale)
