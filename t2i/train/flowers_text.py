"""The flowers world's text encoder: a CharCLIP (t2i/engine/charclip.py) trained contrastively on the
world's captions and 64x64 RGB renders, and its held-out retrieval figures.

The seed (GAN-INT-CLS) conditioned on Reed et al.'s 1024-dim char-CNN-RNN embeddings; ours are
256-dim (a bidirectional LSTM over characters), enough for a world of six attributes.

Captions name a subset of a scene's attributes ("a flower with thin white petals surrounding a
yellow cluster of stamen" says nothing of the count), so the plain CLIP target (only the diagonal is
a match) would push a caption away from the other images it describes just as well. Here caption i
matches image j whenever every attribute the caption names (flowers.parse_caption) is image j's, and
the target mass is shared among the matches, in both directions. Images get light augmentation
(shifts of two pixels, brightness, noise); flips and turns are harmless for flowers but add nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data import flowers
from ..engine.charclip import CharCLIP, build_char_clip, matched_infonce, save_char_clip
from .schedule import optimise
from .threads import torch_threads

STEPS = 300
BATCH = 64
LR = 2e-3
MAX_LENGTH = 96  # the longest template filled in is 78 characters
CONFIG = {"dim": 256, "char_dim": 32, "hidden": 128, "layers": 1, "image_width": 16, "max_length": MAX_LENGTH,
          "channels": 3, "image_size": flowers.SIZE}


def to_float(images) -> torch.Tensor:
    """uint8 (n, 3, 64, 64) -> float in [0, 1] (what the image tower takes)."""
    return torch.as_tensor(np.asarray(images)).float().div(255)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(n, 2, generator=gen) - 0.5) * (4 / flowers.SIZE)  # up to 2 px each way
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                      align_corners=False)
    x = x * (0.85 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen))
    return (x + torch.randn(x.shape, generator=gen) * 0.03).clamp(0, 1)


def match_matrix(captions: list[str], scenes: list[flowers.Scene]) -> torch.Tensor:
    """float (n_captions, n_scenes): 1 where every attribute the caption names is the scene's."""
    named = [flowers.parse_caption(c) for c in captions]
    return torch.tensor([[float(flowers.consistent(m or {}, s)) for s in scenes] for m in named])


# What a GAN's auxiliary classifier (TAC-GAN) reads from an image: the attributes FlowersBench judges.
ATTRIBUTES = (("colour", tuple(flowers.PETAL_COLOURS)), ("centre", tuple(flowers.CENTRE_COLOURS)),
              ("petals", flowers.PETAL_COUNTS))
CLASSES = tuple(len(values) for _, values in ATTRIBUTES)
BLIND = (False, False, True)  # a petal count does not depend on colour (its head may read grey images)


def attribute_labels(named: list[dict]) -> torch.Tensor:
    """long (n, len(ATTRIBUTES)): each attribute's class index, -1 where a record does not name it."""
    return torch.tensor([[values.index(m[k]) if k in m else -1 for k, values in ATTRIBUTES] for m in named])


def gan_extras(captions: list[str], scenes: list[flowers.Scene]) -> dict[str, torch.Tensor]:
    """What the flowers GAN's optional terms read beside a batch (t2i/train/gan_data.captioned):
    `match` for the semantic term; `true` (every scene's attributes) and `asked` (what each caption
    names: G is only held to those) for the auxiliary classifier."""
    named = [flowers.parse_caption(c) or {} for c in captions]
    return {"match": match_matrix(captions, scenes),
            "true": attribute_labels([s.attributes() for s in scenes]), "asked": attribute_labels(named)}


# Which attribute a hard negative changes, when the caption names it: the count most often, the one
# D learns last (a random wrong caption nearly always differs in colour already).
HARD_ODDS = {"petals": 2.0, "colour": 1.0, "centre": 1.0}


def hard_negatives(captions: list[str], scenes: list[flowers.Scene]) -> list[str]:
    """For each caption, the same caption with one judged attribute it names changed to a value that
    keeps the flower a train-split combination (held-out combinations never appear, not even as text).
    A caption naming none of them gets the canonical caption of the changed scene. Every draw comes
    from the scene's own seed, so a batch's negatives follow the trainer's generator."""
    out = []
    for text, scene in zip(captions, scenes):
        rng = np.random.default_rng([scene.seed, 26])
        named = flowers.parse_caption(text) or {}
        names = [a for a in HARD_ODDS if a in named] or list(HARD_ODDS)
        odds = np.array([HARD_ODDS[a] for a in names])
        f = scene.flower
        while True:
            attribute = names[int(rng.choice(len(names), p=odds / odds.sum()))]
            values = dict(ATTRIBUTES)[attribute]
            value = values[int(rng.integers(len(values)))]
            combo = {"colour": f.colour, "centre": f.centre, "petals": f.petals} | {attribute: value}
            if value != getattr(f, attribute) and combo["colour"] != combo["centre"] and \
                    flowers.split_of((combo["colour"], combo["centre"], combo["petals"])) == "train":
                break
        negative = flowers.changed_caption(text, attribute, value)
        if negative is None:
            changed = dataclasses.replace(scene, flower=dataclasses.replace(f, **{attribute: value}))
            negative = flowers.canonical_caption(changed)
        out.append(negative)
    return out


def contrastive_loss(model: CharCLIP, images: torch.Tensor, captions: list[str], match: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE against `match` (captions x images, each caption's own image included)."""
    return matched_infonce(model.logits(images, captions), match)


def train(steps: int = STEPS, seed: int = 0, out_path: str | os.PathLike | None = None, batch: int = BATCH,
          progress: bool = True, config: dict | None = None) -> tuple[CharCLIP, list[float]]:
    """A CharCLIP trained on fresh batches of the world's train split (one thread: the same weights
    on every run on one machine); saved to out_path (fp16, charclip's format) when given."""
    rng = np.random.default_rng([seed, 18])
    gen = torch.Generator().manual_seed(seed * 1000 + 18)
    with torch_threads():
        torch.manual_seed(seed * 1000 + 18)  # the initial weights
        model = build_char_clip(**(config or CONFIG))

        def step_loss():
            images, captions, scenes = flowers.sample(batch, rng, "train")
            return contrastive_loss(model, augment(to_float(images), gen), captions, match_matrix(captions, scenes))

        losses = optimise(model.parameters(), step_loss, steps, LR, 0.01, "flowers text encoder", progress)
    model.eval().requires_grad_(False)
    if out_path is not None:
        save_char_clip(model, out_path)
    return model, losses


@torch.no_grad()
def retrieval_accuracy(model: CharCLIP, n: int = 480, seed: int = 12345) -> dict:
    """On n single-flower held-out scenes (every held-out combination equally often):
    caption_to_image, the fraction of canonical captions ("this flower has five pink petals and a
    yellow center") whose closest of the n images has their petal colour, centre colour and count;
    any_template, the same for a random template's caption (closest image consistent with what it
    names); zero_shot, the fraction of images whose closest canonical caption among all 195
    (colour, centre, count) combinations names their own."""
    scenes = flowers.heldout_scenes(n, seed)
    with torch_threads():
        images = model.encode_image(to_float(np.stack([flowers.render(s).transpose(2, 0, 1) for s in scenes])))
        canonical = model.encode_text([flowers.canonical_caption(s) for s in scenes])
        combos = [s.flower.combo for s in scenes]
        nearest = (canonical @ images.T).argmax(1).tolist()
        caption_to_image = float(np.mean([combos[j] == combos[i] for i, j in enumerate(nearest)]))
        rng = np.random.default_rng(seed)
        texts = [flowers.caption(s, int(rng.integers(len(flowers.TEMPLATES))), rng) for s in scenes]
        nearest = (model.encode_text(texts) @ images.T).argmax(1).tolist()
        any_template = float(np.mean([flowers.consistent(flowers.parse_caption(t), scenes[j])
                                      for t, j in zip(texts, nearest)]))
        every = [flowers.Scene(flowers.Flower(c, z, k, "round", "small")) for c, z, k in flowers.ALL_COMBOS]
        prompts = model.encode_text([flowers.canonical_caption(s) for s in every])
        named = (images @ prompts.T).argmax(1).tolist()
        zero_shot = float(np.mean([flowers.ALL_COMBOS[j] == combos[i] for i, j in enumerate(named)]))
    return {"caption_to_image": caption_to_image, "any_template": any_template, "zero_shot": zero_shot}


if __name__ == "__main__":  # python -m t2i.train.flowers_text [steps] [out]: train once, report figures
    import sys
    start = time.perf_counter()
    model, losses = train(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS,
                          out_path=sys.argv[2] if len(sys.argv) > 2 else None)
    print(f"trained in {time.perf_counter() - start:.0f} s; loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}")
    print(retrieval_accuracy(model))
