"""Training the shapes world's CLIP from scratch.

The model is open_clip's own CLIP class built from configs/models/shapes-clip.json, so the engine
loads it exactly like a downloaded open_clip checkpoint. Contrastive loss with the model's learnable
temperature; images are lightly augmented (shifts, scale, noise; never flipped, since position is
an attribute) and every caption brings a hard negative that differs in one attribute, so the
gradients the engine later follows point at colour, shape, size and position.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import shapes
from ..engine.perceptor import register_model_configs
from ..paths import MODEL_CONFIG_DIR

MODEL = "shapes-clip"
ATTRIBUTES = {"shape": shapes.SHAPES, "colour": tuple(shapes.COLOURS), "position": shapes.POSITIONS,
              "size": shapes.SIZES}


def build(seed: int = 0):
    register_model_configs(MODEL_CONFIG_DIR)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=None)
    return model, open_clip.get_tokenizer(MODEL)


def hard_negative(scene: shapes.Scene, rng: random.Random) -> shapes.Scene:
    """The same scene with one attribute of one shape changed (position kept free of clashes)."""
    for _ in range(20):
        i = rng.randrange(len(scene.shapes))
        name = rng.choice(list(ATTRIBUTES))
        value = rng.choice([v for v in ATTRIBUTES[name] if v != getattr(scene.shapes[i], name)])
        changed = list(scene.shapes)
        changed[i] = dataclasses.replace(changed[i], **{name: value})
        if len({s.position for s in changed}) == len(changed):
            return dataclasses.replace(scene, shapes=tuple(changed))
    return scene


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # Small shifts and zooms keep "left" on the left; noise and contrast make the encoder robust to
    # the textured, imperfect images the optimisation produces.
    n = x.shape[0]
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.12
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3
    x = (x - 0.5) * contrast + 0.5
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.15
    return x.clamp(0, 1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def sample(rng: random.Random, n: int, split: str = "train"):
    scenes = [shapes.sample_scene(rng, split) for _ in range(n)]
    images = np.stack([np.asarray(shapes.render(s)) for s in scenes])
    texts = [rng.choice(shapes.captions(s)) for s in scenes]
    negatives = [rng.choice(shapes.captions(hard_negative(s, rng))) for s in scenes]
    return images, texts, negatives


def train(steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True,
          model=None):
    """Returns the trained model and the loss of every step."""
    if model is None:
        model, tokenizer = build(seed)
    else:
        tokenizer = open_clip.get_tokenizer(MODEL)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training the shapes CLIP", disable=not progress):
        images, texts, negatives = sample(rng, batch_size)
        image_f = model.encode_image(normalise(augment(to_tensor(images), gen)), normalize=True)
        text_f = model.encode_text(tokenizer(texts + negatives), normalize=True)
        scale = model.logit_scale.exp()
        labels = torch.arange(batch_size)
        # Images choose among all captions, hard negatives included; captions choose among images.
        loss = (F.cross_entropy(scale * image_f @ text_f.T, labels)
                + F.cross_entropy(scale * text_f[:batch_size] @ image_f.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature at most 100, as CLIP does
        losses.append(float(loss.detach()))
    return model.eval(), losses


@torch.no_grad()
def retrieval_accuracy(model, n: int = 200, seed: int = 1) -> float:
    """Text-to-image top-1 on held-out attribute combinations: each caption must pick its own image
    among n held-out images."""
    tokenizer = open_clip.get_tokenizer(MODEL)
    pairs = shapes.heldout_captions(n, seed=seed)
    images = np.stack([np.asarray(shapes.render(scene)) for scene, _ in pairs])
    image_f = model.encode_image(normalise(to_tensor(images)), normalize=True)
    text_f = model.encode_text(tokenizer([caption for _, caption in pairs]), normalize=True)
    return float(((text_f @ image_f.T).argmax(1) == torch.arange(len(pairs))).float().mean())
