"""Training the shapes world's sketch net (t2i/engine/sketch.py): caption -> rough 64x64 image.

It learns from the trained shapes CLIP's normalised text embeddings of the training captions (every
phrasing, one- and two-shape scenes; held-out attribute combinations never appear), so at run time
it reads the same embedding the guidance aims at. Loss: the VQGAN's (t2i/train/losses.py), L1 + MSE
against the render with shape pixels weighted up. A regression draws the
average of what a caption allows, so the sketch is soft-edged; guidance then refines it. Three phases:
`train` (batch 8, peak learning rate 2e-3), `refine` (batch 16, 5e-4), which is what made the
sketches' shape right, and `refine` again with canonical targets (every shape at its anchor, without
the sampler's offsets), which is what made the VQGAN's encoding of them keep the shape (issue 29).
"""

from __future__ import annotations

import random

import torch

from ..data import shapes
from ..engine.sketch import CHANNELS, SketchNet
from .losses import foreground_weights, weighted_reconstruction_loss
from .schedule import optimise
from .threads import torch_threads

# More, smaller steps draw shapes better at the same cost: 4400 x 8 against 2200 x 16, held-out
# shape 76% / 62% against 73% / 56% on two seeds' CLIPs (BENCHMARKS.md); 1100 x 32 drew 52%.
# READER: the MLP that reads the embedding (t2i/engine/sketch.py); it took the sketches' shape from
# 76% to 91% on ShapesBench's captions (issue 29, BENCHMARKS.md) for a few thousand parameters.
STEPS, BATCH, READER = 4400, 8, 256
# refine: 1500 more steps at batch 16 took the sketches' shape to 100% (issue 29, BENCHMARKS.md).
REFINE_STEPS, REFINE_BATCH, REFINE_LR = 1500, 16, 5e-4


@torch.no_grad()
def _embed(clip, tokenizer, texts: list[str]) -> torch.Tensor:
    return clip.encode_text(tokenizer(texts), normalize=True)


def train(clip, tokenizer, steps: int = STEPS, batch_size: int = BATCH, lr: float = 2e-3, seed: int = 0,
          progress: bool = True, channels: tuple[int, ...] = CHANNELS, reader: int = READER):
    """clip: the trained shapes CLIP (open_clip model; frozen here). Returns the net and every step's loss."""
    with torch_threads():  # one thread: the same bytes on any machine (t2i/train/threads.py)
        torch.manual_seed(seed)
        net = SketchNet(embed_dim=clip.text_projection.shape[1], channels=channels, reader=reader)
        clip.eval()
        losses = _fit(net, clip, tokenizer, random.Random(seed), steps, batch_size, lr,
                      "training the shapes sketch net", progress)
    return net, losses


def refine(net: SketchNet, clip, tokenizer, steps: int = REFINE_STEPS, batch_size: int = REFINE_BATCH,
           lr: float = REFINE_LR, seed: int = 0, progress: bool = True, canonical: bool = False) -> list[float]:
    """A further phase of `train`'s loss at twice the batch and a quarter of the peak learning rate,
    from the net as the preset serves it (fp16-rounded). Changes the net in place; returns every
    step's loss. Issue 29 (BENCHMARKS.md), ShapesBench's captions at seeds 0 and 1:
    - after `train`, the sketches showed the asked shape 94% / 89%; after this phase, 100% / 100%;
    - but small squares came back round 7 / 4 times in ten from the VQGAN's encoding (a job's step 0):
      a regression onto renders jittered by up to 1.3 pixels draws the average, soft corners that fall
      inside one 4x4 cell. `canonical`: the targets drawn at the anchors (the same captions), so each
      caption has one right image and the net draws its corners."""
    with torch_threads():
        rng = random.Random(seed * 1000 + (31 if canonical else 29))
        return _fit(net, clip, tokenizer, rng, steps, batch_size, lr,
                    f"refining the shapes sketch net{' on canonical targets' if canonical else ''}", progress,
                    jitter=not canonical)


def _fit(net: SketchNet, clip, tokenizer, rng: random.Random, steps: int, batch_size: int, lr: float, desc: str,
         progress: bool, jitter: bool = True) -> list[float]:
    """`optimise` on fresh batches of the world; leaves the net frozen, in eval mode."""
    # channels_last: these small convolutions train about 1.4x faster so on the CPU (oneDNN), the
    # largest share of train-demo's time budget; the net goes back to the default layout after.
    net.to(memory_format=torch.channels_last).train().requires_grad_(True)

    def step_loss() -> torch.Tensor:
        images, texts = shapes.batch(rng, batch_size, jitter=jitter)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        return weighted_reconstruction_loss(net(_embed(clip, tokenizer, texts)) - x, foreground_weights(x))

    losses = optimise(net.parameters(), step_loss, steps, lr, 0.01, desc, progress)
    net.to(memory_format=torch.contiguous_format).eval().requires_grad_(False)
    return losses


@torch.no_grad()
def heldout_accuracy(net: SketchNet, clip, n: int = 100, seed: int = 0) -> dict[str, float]:
    """Per attribute, how often the checker finds the caption in the sketch of a held-out caption
    (combinations the net never saw): what guidance starts from."""
    from torchvision.transforms.functional import to_pil_image

    from ..data import checker
    from .clip import tokenizer

    pairs = shapes.heldout_captions(n, seed=seed)
    sketches = net(_embed(clip, tokenizer(), [caption for _, caption in pairs]))
    verdicts = [checker.score(to_pil_image(image), scene.shapes[0]) for (scene, _), image in zip(pairs, sketches)]
    return {k: sum(v[k] for v in verdicts) / len(verdicts) for k in checker.ATTRIBUTES}
