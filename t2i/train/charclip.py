"""Contrastive training of CharCLIP (t2i/engine/charclip.py) on the digits world, and its evaluation.

Symmetric InfoNCE with the model's learnable temperature. A batch of 128 holds about 13 images of each
digit, so the plain CLIP target (only the diagonal is a match) would push apart captions that mean
the same digit; here every pair whose labels agree shares the target mass. The text embeddings of
all phrasings of one digit then meet, which is what the DDPM conditioned on them needs. Images get
light augmentation (shifts of a pixel, contrast, noise); never a flip (a flipped 2 is no digit).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data import digits
from ..engine.charclip import CharCLIP, build_char_clip, matched_infonce
from .schedule import optimise

STEPS = 120
BATCH = 128
LR = 2e-3
CONFIG = {"dim": 64, "char_dim": 32, "hidden": 128, "layers": 1, "image_width": 16}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(n, 2, generator=gen) - 0.5) * (2 / 16)  # up to a pixel each way
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    x = x * (0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
    return (x + torch.randn(x.shape, generator=gen) * 0.05).clamp(0, 1)


def contrastive_loss(model: CharCLIP, images: torch.Tensor, captions: list[str], labels: torch.Tensor) -> torch.Tensor:
    return matched_infonce(model.logits(images, captions), (labels[:, None] == labels[None]).float())


def train_char_clip(steps: int = STEPS, seed: int = 0, data: digits.Sampler | None = None, batch: int = BATCH,
                    progress: bool = True, config: dict | None = None) -> tuple[CharCLIP, list[float]]:
    """A CharCLIP trained on fresh batches from `data` (the digits world's train split by default)."""
    data = data or digits.sampler("train")
    rng = np.random.default_rng([seed, 1])
    gen = torch.Generator().manual_seed(seed * 1000 + 1)
    torch.manual_seed(seed * 1000 + 1)  # the initial weights
    model = build_char_clip(**(config or CONFIG))

    def step_loss():
        images, labels, captions = data(batch, rng)
        return contrastive_loss(model, augment(digits.to_float(images), gen), captions, torch.from_numpy(labels))

    losses = optimise(model.parameters(), step_loss, steps, LR, 0.01, "CharCLIP", progress)
    return model.eval().requires_grad_(False), losses


@torch.no_grad()
def retrieval_accuracy(model: CharCLIP, n: int = 1000, seed: int = 12345) -> dict:
    """On held-out ("test" split) renders: zero_shot, the fraction of images whose closest of the 10
    canonical prompts asks for their digit; caption_to_image, the fraction of random captions (all
    templates) whose closest image shows their digit; template_agreement, the fraction of
    (template, digit) captions whose closest canonical prompt asks for the same digit."""
    rng = np.random.default_rng(seed)
    images, labels, captions = digits.sample(n, rng, "test")
    img = model.encode_image(digits.to_float(images))
    prompts = model.encode_text(list(digits.PROMPTS))
    zero_shot = float(((img @ prompts.T).argmax(1).numpy() == labels).mean())
    caption_to_image = float((labels[(model.encode_text(captions) @ img.T).argmax(1).numpy()] == labels).mean())
    every = [digits.caption(d, rng, t) for d in range(10) for t in range(len(digits.TEMPLATES))]
    asked = np.repeat(np.arange(10), len(digits.TEMPLATES))
    agreement = float(((model.encode_text(every) @ prompts.T).argmax(1).numpy() == asked).mean())
    return {"zero_shot": zero_shot, "caption_to_image": caption_to_image, "template_agreement": agreement}
