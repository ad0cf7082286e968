"""Training the shapes world's VQGAN: taming's Encoder / Decoder / VectorQuantizer2, saved in the
taming file format (YAML + a checkpoint with a `state_dict`), so the engine's real loader reads it
like any downloaded VQGAN.

Reconstruction L1 + MSE and taming's codebook/commitment loss. Three choices make a usable model
in a few CPU minutes:

- it trains on whole 64x64 renders. It once trained on 32x32 crops (a third of the cost per step),
  but then never saw a whole background or the image's border: reconstructions came back with
  tinted backgrounds and dark frames (L1 0.11-0.16), and a sketch encoded through it lost colour
  (BENCHMARKS.md); on whole images L1 is about 0.05;
- pixels that differ from the background weigh more (t2i/train/losses.py): shapes cover a few
  percent of an image, and an unweighted loss learns backgrounds long before colours;
- codes nobody uses are re-seeded from current encoder outputs now and then: a small codebook
  otherwise collapses to a few entries and the decoder cannot draw clean, saturated colours.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..data import shapes
from ..engine.vqgan import TamingVQ, read_taming_config
from ..paths import MODEL_CONFIG_DIR
from .losses import foreground_weights, weighted_reconstruction_loss
from .schedule import one_cycle

ARCH = MODEL_CONFIG_DIR / "shapes-vqgan.yaml"
RESEED_EVERY = 50
STEPS, BATCH = 1500, 8


def build(seed: int = 0) -> TamingVQ:
    torch.manual_seed(seed)
    return TamingVQ(**read_taming_config(ARCH))


def images(rng: random.Random, n: int) -> torch.Tensor:
    scenes = [shapes.sample_scene(rng, "train") for _ in range(n)]
    x = torch.from_numpy(np.stack([np.asarray(shapes.render(s)) for s in scenes]))
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1)  # taming works in [-1, 1]


def _reseed_dead_codes(model: TamingVQ, h: torch.Tensor, used: torch.Tensor, gen: torch.Generator) -> int:
    dead = (~used).nonzero().flatten()
    if len(dead):
        pool = h.movedim(1, 3).reshape(-1, h.shape[1])
        picks = torch.randint(len(pool), (len(dead),), generator=gen)
        model.quantize.embedding.weight.data[dead] = pool[picks].detach()
    return len(dead)


def train(steps: int = STEPS, batch_size: int = BATCH, lr: float = 2e-3, seed: int = 0, progress: bool = True,
          model: TamingVQ | None = None):
    """Returns the trained model and the reconstruction L1 of every step."""
    model = model or build(seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))
    schedule = one_cycle(opt, lr, steps)
    model.train().requires_grad_(True)
    n_codes = model.quantize.n_e
    used = torch.zeros(n_codes, dtype=torch.bool)
    losses = []
    for step in tqdm(range(steps), desc="training the shapes VQGAN", disable=not progress):
        x = images(rng, batch_size)
        h = model.quant_conv(model.encoder(x))
        z_q, codebook_loss, (_, _, indices) = model.quantize(h)
        rec = model.decode(z_q)
        err = rec - x
        loss = weighted_reconstruction_loss(err, foreground_weights(x)) + codebook_loss
        l1 = err.detach().abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        used[indices.flatten()] = True
        if (step + 1) % RESEED_EVERY == 0 and step + 1 < steps * 0.8:
            _reseed_dead_codes(model, h, used, gen)
            used[:] = False
        losses.append(float(l1))
    return model.eval().requires_grad_(False), losses


def save(model: TamingVQ, config_path: Path, ckpt_path: Path) -> None:
    """The taming file pair: the architecture YAML and a Lightning-style checkpoint."""
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(yaml.safe_load(ARCH.read_text()), sort_keys=False))
    torch.save({"state_dict": model.state_dict(), "global_step": 0}, ckpt_path)


@torch.no_grad()
def reconstruction_l1(model: TamingVQ, n: int = 64, seed: int = 1) -> float:
    x = images(random.Random(seed), n)
    h = model.quant_conv(model.encoder(x))
    z_q, _, _ = model.quantize(h)
    return float((model.decode(z_q) - x).abs().mean())
