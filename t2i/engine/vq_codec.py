"""The latent space of a taming VQ autoencoder, as a latent diffusion model sees it.

Encoding stops before quantisation (quant_conv(encoder(x)), the continuous latent CompVis's
VQ-regularised LDMs diffuse in), optionally keeps only its leading principal axes (`basis`, see
below), and multiplies by `scale`, chosen so that latents of training images have about unit
standard deviation (LDM's "scale_factor"): the noise schedule assumes unit-variance data, and a
latent far from it is either drowned early or barely noised. Decoding undoes the scale and the
projection, snaps every position to the nearest codebook entry (as CompVis's VQ-regularised LDMs
decode: the decoder was only trained on codebook vectors) and runs the decoder. Images are in
[0, 1] on both sides; taming's [-1, 1] stays inside.

Why a basis: a small VQGAN's latent can fill few of its channels. The shapes VQGAN's 32-channel
latent has per-position principal stds 1.79, 0.82, 0.058, 0.028, ... (99.7% of the variance in two
axes). Diffused as 32 channels, 30 of them are near-constant: a small UNet spends its training
learning to pass their noise through (epsilon MSE still 0.08 at t=950 after 600 steps) and sampling
diverges. Projected onto the leading axes (mean removed), nothing the decoder needs is lost: the
nearest code is recomputed from the full-width reconstruction, and on held-out renders the checker
reads the same attributes from 2, 4 or 32 axes. basis=None keeps every channel as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .vqgan import TamingVQ, build_taming, load_taming


class VQLatentCodec(nn.Module):
    """encode: images (n, 3, H, W) in [0, 1] -> z (n, channels, H/f, W/f); decode: the reverse."""

    def __init__(self, model: TamingVQ, scale: float = 1.0, basis: torch.Tensor | None = None,
                 mean: torch.Tensor | None = None):
        super().__init__()
        if model.gumbel:
            # A Gumbel VQ's quant_conv output is logits over codes, not a point in code space.
            raise ValueError("VQLatentCodec: Gumbel VQ models have no continuous code-space latent")
        self.model = model.eval().requires_grad_(False)
        self.scale = float(scale)
        self.factor = model.factor
        width = int(model.codebook.shape[1])
        if basis is not None:
            basis = torch.as_tensor(basis, dtype=torch.float32)
            if basis.ndim != 2 or basis.shape[1] != width:
                raise ValueError(f"VQLatentCodec: basis must be (k, {width}), got {tuple(basis.shape)}")
            mean = torch.zeros(width) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
            if mean.shape != (width,):
                raise ValueError(f"VQLatentCodec: mean must have {width} entries, got {tuple(mean.shape)}")
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("mean", mean, persistent=False)
        self.channels = width if basis is None else int(basis.shape[0])

    @torch.no_grad()
    def encode_code_space(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [0, 1] -> (n, C, H/f, W/f) pre-quantisation latent (full width, unscaled)."""
        return self.model.quant_conv(self.model.encoder(images * 2 - 1))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Code-space latent -> unscaled diffusion latent (the basis coordinates, or h itself)."""
        if self.basis is None:
            return h
        return torch.einsum("kc,nchw->nkhw", self.basis, h - self.mean.view(1, -1, 1, 1))

    def unproject(self, u: torch.Tensor) -> torch.Tensor:
        if self.basis is None:
            return u
        return torch.einsum("kc,nkhw->nchw", self.basis, u) + self.mean.view(1, -1, 1, 1)

    def encode_unscaled(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_code_space(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_unscaled(images) * self.scale

    @torch.no_grad()
    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> nearest codebook entry per position, in code space."""
        h = self.unproject(z / self.scale).movedim(1, 3)
        codebook = self.model.codebook
        d = h.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * h @ codebook.T
        return codebook[d.argmin(-1)].movedim(3, 1)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, channels, h, w) scaled latent -> (n, 3, h*f, w*f) image in [0, 1]."""
        return self.model.decode(self.quantize(z)).add(1).div(2).clamp(0, 1)


@torch.no_grad()
def principal_basis(h: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading k principal axes of code-space latents h (n, C, h, w), over every position.
    Returns (basis (k, C), mean (C,), std of every axis (C,)); each axis's sign is fixed (its
    largest entry positive) so the same latents always give the same basis."""
    v = h.movedim(1, 3).reshape(-1, h.shape[1]).double()
    mean = v.mean(0)
    cov = (v - mean).T @ (v - mean) / (len(v) - 1)
    var, axes = torch.linalg.eigh(cov)  # ascending
    var, axes = var.flip(0).clamp_min(0), axes.flip(1).T
    sign = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * sign
    return axes[:k].float(), mean.float(), var.sqrt().float()


def codec_params(path: Path) -> dict:
    """codec.json (written by a trainer) -> keyword arguments of load_vq_codec: scale, basis, mean."""
    try:
        meta = json.loads(Path(path).read_text())
        scale = float(meta["scale"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a codec file with a numeric 'scale' ({exc})") from None
    basis = meta.get("basis")
    return {"scale": scale, "basis": None if basis is None else torch.tensor(basis),
            "mean": None if meta.get("mean") is None else torch.tensor(meta["mean"])}


def load_vq_codec(config_yaml: Path, ckpt: Path, scale: float, basis=None, mean=None,
                  download_hint: str = "") -> VQLatentCodec:
    """A trained taming model (a missing file is WeightsMissing, as for the guided presets)."""
    return VQLatentCodec(load_taming(config_yaml, ckpt, download_hint=download_hint), scale, basis, mean)


def build_vq_codec(config_yaml: Path, scale: float = 1.0, channels: int | None = None) -> VQLatentCodec:
    """Random weights of the config's architecture (untrained presets). channels: keep only the first
    `channels` code-space axes (to match a UNet with fewer input channels); None keeps all."""
    model = build_taming(config_yaml)
    basis = None if channels is None else torch.eye(int(model.codebook.shape[1]))[:channels]
    return VQLatentCodec(model, scale, basis)
