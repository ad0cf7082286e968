"""Cutouts: many augmented crops of one image, made as batched tensor ops on the image's device.

Every cutout is one affine map (scale, offset, rotation, flip) plus a smooth corner jitter applied to
a shared sampling grid; all cutouts are then drawn with a single `grid_sample`, so the cost does not
grow with a Python loop over cutouts. Colour jitter and noise are per-cutout broadcasts.

Presets choose the augmentation set: a flip makes "on the left" and "on the right" the same image to
the perceptor, so a preset whose prompts talk about position leaves it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENTS = ("flip", "affine", "perspective", "colour", "noise")


@dataclass(frozen=True)
class CutoutConfig:
    cut_size: int
    cutn: int
    cut_pow: float = 1.0        # >1 favours small cutouts, <1 large ones
    min_scale: float = 0.25     # smallest cutout side as a fraction of the image's shorter side
    augments: tuple[str, ...] = AUGMENTS
    rotate_deg: float = 10.0
    perspective: float = 0.08   # corner displacement, in cutout half-widths
    colour: float = 0.1
    noise: float = 0.1

    def __post_init__(self):
        unknown = set(self.augments) - set(AUGMENTS)
        if unknown:
            raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {', '.join(AUGMENTS)}")


def _uniform(n, lo, hi, gen, device, shape=()):
    return torch.rand((n, *shape), generator=gen, device=device) * (hi - lo) + lo


def _base_grid(size: int, device, dtype) -> torch.Tensor:
    # Pixel centres in [-1, 1], matching grid_sample(align_corners=False).
    coords = (torch.arange(size, device=device, dtype=dtype) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([gx, gy], dim=-1)  # (S, S, 2) as (x, y)


def sampling_grids(cfg: CutoutConfig, height: int, width: int, gen: torch.Generator,
                   device, dtype=torch.float32) -> torch.Tensor:
    """(cutn, S, S, 2) grids in the image's normalised coordinates."""
    n, aug = cfg.cutn, cfg.augments
    local = _base_grid(cfg.cut_size, device, dtype).expand(n, -1, -1, -1)  # in [-1, 1]^2

    if "perspective" in aug:
        # Bilinear blend of four random corner shifts: a smooth, homography-like warp.
        corners = _uniform(n, -cfg.perspective, cfg.perspective, gen, device, (4, 2))
        u = (local[..., :1] + 1) / 2
        v = (local[..., 1:] + 1) / 2
        weights = torch.cat([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], dim=-1)  # (n,S,S,4)
        local = local + torch.einsum("nhwk,nkc->nhwc", weights, corners)
    if "flip" in aug:
        sign = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0).to(dtype)
        local = local * torch.stack([sign, torch.ones_like(sign)], -1)[:, None, None, :]
    if "affine" in aug:
        angle = _uniform(n, -1, 1, gen, device) * math.radians(cfg.rotate_deg)
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        x, y = local[..., 0], local[..., 1]
        local = torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)

    # Square cutouts in pixels: the half-extent in normalised units differs per axis.
    side = min(height, width)
    scale = torch.rand(n, generator=gen, device=device).pow(cfg.cut_pow) * (1 - cfg.min_scale) + cfg.min_scale
    half = torch.stack([scale * side / width, scale * side / height], dim=-1)  # (n, 2)
    centre = (torch.rand(n, 2, generator=gen, device=device) * 2 - 1) * (1 - half)
    return local * half[:, None, None, :] + centre[:, None, None, :]


def colour_and_noise(cuts: torch.Tensor, cfg: CutoutConfig, gen: torch.Generator) -> torch.Tensor:
    n, device = cuts.shape[0], cuts.device
    if "colour" in cfg.augments:
        c = cfg.colour
        brightness = _uniform(n, -c, c, gen, device, (1, 1, 1))
        contrast = _uniform(n, 1 - c, 1 + c, gen, device, (1, 1, 1))
        saturation = _uniform(n, 1 - c, 1 + c, gen, device, (1, 1, 1))
        grey = cuts.mean(dim=1, keepdim=True)
        cuts = grey + (cuts - grey) * saturation
        mean = cuts.mean(dim=(1, 2, 3), keepdim=True)
        cuts = (cuts - mean) * contrast + mean + brightness
    if "noise" in cfg.augments:
        strength = _uniform(n, 0, cfg.noise, gen, device, (1, 1, 1))
        cuts = cuts + strength * torch.randn(cuts.shape, generator=gen, device=device, dtype=cuts.dtype)
    return cuts.clamp(0, 1)


def make_cutouts(image: torch.Tensor, cfg: CutoutConfig, gen: torch.Generator) -> torch.Tensor:
    """image (1, 3, H, W) in [0, 1] -> (cutn, 3, S, S) in [0, 1], differentiable w.r.t. image.

    `gen` must live on image.device; the same generator state gives the same cutouts.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, 3, H, W), got {tuple(image.shape)}")
    return make_cutouts_batch(image, cfg, [gen])


def make_cutouts_batch(images: torch.Tensor, cfg: CutoutConfig, gens: list[torch.Generator]) -> torch.Tensor:
    """images (B, 3, H, W) -> (B * cutn, 3, S, S): image b's cutouts drawn from gens[b] alone, so a
    job's cutouts do not depend on its batch-mates.

    All cutouts of all images come from one grid_sample: each image's cutn grids are stacked along
    the output's height, so the images are sampled in place, never copied per cutout.
    """
    if images.dim() != 4 or images.shape[0] != len(gens):
        raise ValueError(f"expected (B, 3, H, W) images and B generators, got {tuple(images.shape)}, {len(gens)}")
    # Bilinear sampling aliases when a cutout pixel covers many image pixels; one area
    # downsample of the whole image bounds that footprint to about two pixels.
    limit = 2 * cfg.cut_size
    if min(images.shape[-2:]) > limit:
        factor = limit / min(images.shape[-2:])
        images = F.interpolate(images, scale_factor=factor, mode="area", recompute_scale_factor=False)
    b, c, h, w = images.shape
    n, size = cfg.cutn, cfg.cut_size
    grids = torch.stack([sampling_grids(cfg, h, w, g, images.device, images.dtype) for g in gens])  # (B,n,S,S,2)
    cuts = F.grid_sample(images, grids.view(b, n * size, size, 2), mode="bilinear", padding_mode="reflection",
                         align_corners=False)                       # (B, 3, n*S, S)
    cuts = cuts.view(b, c, n, size, size).transpose(1, 2)           # (B, n, 3, S, S)
    return torch.cat([colour_and_noise(cuts[i], cfg, g) for i, g in enumerate(gens)])
