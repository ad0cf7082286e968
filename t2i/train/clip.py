"""Training the shapes world's CLIP from scratch.

The model is open_clip's own CLIP class built from configs/models/shapes-clip.json (a small
ModifiedResNet image tower: a CNN whose attention pooling keeps where things are; a ViT of the same
cost learned position at chance level here), so the engine loads it exactly like a downloaded
open_clip checkpoint. The text tower takes any string (open_clip's BPE tokenizer). Contrastive loss
with the model's learnable temperature; images are lightly augmented (shifts, scale, noise; never
flipped, since position is an attribute). Negatives that shape the gradients the engine later follows:

- every caption brings a hard-negative caption that differs in one attribute, and half of the images
  bring the render of such a changed scene, so colour, shape, size and position each decide a match;
- the other half bring a cluttered copy (the same render with stray blobs of colour): guidance
  otherwise finds that a mess of colours containing the right shape scores as well as the clean
  shape, and draws messes.
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
from ..assets.fp16 import fp16_state_dict
from .schedule import one_cycle

MODEL = "shapes-clip"
STEPS = 800
ATTRIBUTES = {"shape": shapes.SHAPES, "colour": tuple(shapes.COLOURS), "position": shapes.POSITIONS,
              "size": shapes.SIZES}


def tokenizer():
    return open_clip.get_tokenizer(MODEL)


def build(seed: int = 0):
    register_model_configs(MODEL_CONFIG_DIR)
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL, pretrained=None)
    return model, tokenizer()


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


def clutter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x (n, 3, H, W) in [0, 1] with one to three smooth blobs of random colour painted over it."""
    n, _, h, w = x.shape
    for _ in range(int(torch.randint(1, 4, (), generator=gen))):
        field = F.interpolate(torch.rand(n, 1, 4, 4, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
        mask = (field > 0.75).float()  # a few smooth islands of about a sixth of the image
        colour = torch.rand(n, 3, 1, 1, generator=gen)
        x = x * (1 - mask) + colour * mask
    return x


def sample(rng: random.Random, n: int, split: str = "train"):
    """images, captions, one hard-negative caption per image, and renders of the hard-negative
    scenes of the first half of the images (the other half's negative images are cluttered copies,
    made in `train`)."""
    scenes = [shapes.sample_scene(rng, split) for _ in range(n)]
    changed = [hard_negative(s, rng) for s in scenes]
    images = np.stack([np.asarray(shapes.render(s)) for s in scenes])
    texts = [rng.choice(shapes.captions(s)) for s in scenes]
    negatives = [rng.choice(shapes.captions(c)) for c in changed]
    changed_images = np.stack([np.asarray(shapes.render(c)) for c in changed[:n // 2]])
    return images, texts, negatives, changed_images


def train(steps: int = STEPS, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True,
          model=None):
    """Returns the trained model and the loss of every step."""
    model, tokenize = build(seed) if model is None else (model, tokenizer())
    # channels_last: the CNN image tower trains about 1.2x faster so on the CPU (oneDNN); the
    # returned model is back in the default layout.
    model.visual.to(memory_format=torch.channels_last)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = one_cycle(opt, lr, steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training the shapes CLIP", disable=not progress):
        images, texts, negatives, changed_images = sample(rng, batch_size)
        x = to_tensor(images)
        x = augment(torch.cat([x, to_tensor(changed_images), clutter(x[len(changed_images):], gen)]), gen)
        x = x.contiguous(memory_format=torch.channels_last)
        image_f = model.encode_image(normalise(x), normalize=True)
        text_f = model.encode_text(tokenize(texts + negatives), normalize=True)
        scale = model.logit_scale.exp()
        labels = torch.arange(batch_size)
        # Images choose among all captions, hard negatives included; captions choose among all
        # images, negative images included.
        loss = (F.cross_entropy(scale * image_f[:batch_size] @ text_f.T, labels)
                + F.cross_entropy(scale * text_f[:batch_size] @ image_f.T, labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # temperature at most 100, as CLIP does
        losses.append(float(loss.detach()))
    model.visual.to(memory_format=torch.contiguous_format)
    return model.eval(), losses


def save(model, path) -> None:
    """An open_clip state dict, the file open_clip's `pretrained=` loads (fp16: half the committed size)."""
    torch.save(fp16_state_dict(model), path)


def heldout_scenes() -> list[shapes.Scene]:
    """Every held-out combination on every background, once (no jitter): distinct images, so a
    caption's own image is the only right answer."""
    return [shapes.Scene((shapes.Shape(*combo),), bg) for combo in shapes.COMBOS["heldout"] for bg in shapes.BACKGROUNDS]


def _encode_heldout(model) -> tuple[list[shapes.Scene], torch.Tensor]:
    scenes = heldout_scenes()
    images = np.stack([np.asarray(shapes.render(scene)) for scene in scenes])
    return scenes, model.encode_image(normalise(to_tensor(images)), normalize=True)


@torch.no_grad()
def retrieval_accuracy(model) -> float:
    """Text-to-image top-1 on held-out attribute combinations: each canonical caption must pick its
    own image among all held-out images."""
    scenes, image_f = _encode_heldout(model)
    tokenize = tokenizer()
    text_f = model.encode_text(tokenize([shapes.canonical_caption(s) for s in scenes]), normalize=True)
    return float(((text_f @ image_f.T).argmax(1) == torch.arange(len(scenes))).float().mean())


@torch.no_grad()
def attribute_accuracy(model) -> dict[str, float]:
    """Per attribute, how often the held-out image's canonical caption beats the same caption with
    only that attribute changed (zero-shot attribute classification on unseen combinations)."""
    scenes, image_f = _encode_heldout(model)
    tokenize = tokenizer()
    out = {}
    for name, values in ATTRIBUTES.items():
        captions = [shapes.canonical_caption(dataclasses.replace(scene, shapes=(
                        dataclasses.replace(scene.shapes[0], **{name: v}),)))
                    for scene in scenes for v in values]
        text_f = model.encode_text(tokenize(captions), normalize=True).view(len(scenes), len(values), -1)
        picked = (text_f @ image_f[:, :, None]).squeeze(2).argmax(1)  # (scenes,) index into values
        truth = torch.tensor([values.index(getattr(scene.shapes[0], name)) for scene in scenes])
        out[name] = float((picked == truth).float().mean())
    return out
