"""The captioned shapes world: a procedural, deterministic source of (image, caption) pairs.

This module owns the vocabularies (shapes, colours, positions, sizes, backgrounds), the scene
description (`Shape`, `Scene`), the renderer (`render`), the caption templates (`captions`), the
fixed split of attribute combinations into "train" and "heldout" (`split_of`), and the samplers
(`sample_scene`, `batch`, `heldout_captions`) used to train a small CLIP / VQGAN from scratch and to
benchmark generation on combinations never seen in training (ShapesBench).

Everything is numpy + Pillow and deterministic: `render` has no randomness of its own; all variation
(which combination, background, a small position jitter) is drawn by the samplers from the
`random.Random` they are given and stored in the scene.

Geometry (fractions of the image side): a small shape is 22% of the side across, a large one 45%;
"left"/"right" put the shape's centre at x = 25% / 75% (y centred), "top"/"bottom" at y = 25% / 75%
(x centred), "centre" at (50%, 50%). A shape's centre is the centre of its bounding box (triangles
point up, base = height = the shape's extent).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Saturated and far apart in RGB (closest pair: orange/yellow, ~85 apart); none near a background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 25),
    "green": (25, 175, 40),
    "blue": (30, 70, 235),
    "yellow": (245, 225, 20),
    "purple": (140, 35, 200),
    "orange": (250, 135, 0),
    "cyan": (0, 205, 215),
    "pink": (250, 110, 195),
}

POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
SIZES: tuple[str, ...] = ("small", "large")

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
}

# Centre of a shape at each position, as (x, y) fractions of the side.
ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
EXTENT: dict[str, float] = {"small": 0.22, "large": 0.45}

POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}

JITTER = 0.02  # largest |dx|, |dy| the sampler draws, as a fraction of the side
HELDOUT_PER_MILLE = 150  # ~15% of the single-shape combinations are held out
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    position: str
    size: str
    dx: float = 0.0  # offset of the centre from its anchor, fraction of the side
    dy: float = 0.0

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")

    @property
    def combo(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.position, self.size)

    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the shape's bounding box, fractions of the side."""
        ax, ay = ANCHORS[self.position]
        cx, cy, half = ax + self.dx, ay + self.dy, EXTENT[self.size] / 2
        return (cx - half, cy - half, cx + half, cy + half)


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: str

    def __post_init__(self):
        if not 1 <= len(self.shapes) <= 2:
            raise ValueError("a scene has one or two shapes")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        if len({s.position for s in self.shapes}) != len(self.shapes):
            raise ValueError("two shapes in a scene never share a position")


def attributes(shape: Shape) -> dict[str, str]:
    """The four named attributes of a shape (what the checker judges)."""
    return {"shape": shape.shape, "colour": shape.colour, "position": shape.position, "size": shape.size}


# --------------------------------------------------------------------------- rendering


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as an RGB image `size` pixels square (anti-aliased edges, pure interiors)."""
    big = size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        x0, y0, x1, y1 = (v * big for v in s.box())
        fill = COLOURS[s.colour]
        if s.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif s.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    return img.resize((size, size), Image.Resampling.BOX)


def _boxes_overlap(a: Shape, b: Shape, margin: float = 0.02) -> bool:
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return ax0 < bx1 + margin and bx0 < ax1 + margin and ay0 < by1 + margin and by0 < ay1 + margin


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(s: Shape) -> str:  # "a large red circle"
    return f"{_article(s.size)} {s.size} {s.colour} {s.shape}"


_TEMPLATES = (
    lambda s: f"{_np(s)} {POSITION_PHRASES[s.position]}",
    lambda s: f"{_article(s.colour)} {s.colour} {s.shape}, {s.size}, {s.position}",
    lambda s: f"{_article(s.size)} {s.size} {s.shape} in {s.colour} {POSITION_PHRASES[s.position]}",
    lambda s: f"{POSITION_PHRASES[s.position]}, {_np(s)}",
    lambda s: f"{_article(s.colour)} {s.colour} {s.shape} {POSITION_PHRASES[s.position]}, {s.size}",
)


def captions(scene: Scene) -> list[str]:
    """Templated phrasings of the scene; each names colour, shape, size and position of every shape.

    Two shapes are joined with " and "; some phrasings also name the background.
    """
    out = []
    bg = f"on {_article(scene.background)} {scene.background} background"
    for t in _TEMPLATES:
        body = " and ".join(t(s) for s in scene.shapes)
        out.append(body)
        out.append(f"{body} {bg}" if t is not _TEMPLATES[3] else f"{bg}, {body}")
    return out


def canonical_caption(scene: Scene) -> str:
    """'a {size} {colour} {shape} {position phrase} on a {background} background' (and-joined)."""
    body = " and ".join(f"{_np(s)} {POSITION_PHRASES[s.position]}" for s in scene.shapes)
    return f"{body} on {_article(scene.background)} {scene.background} background"


# --------------------------------------------------------------------------- splits


def _combo_hash(combo: tuple[str, str, str, str]) -> int:
    digest = hashlib.sha256("|".join(("shapes-v1",) + combo).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_of(shape: Shape | tuple[str, str, str, str]) -> str:
    """'train' or 'heldout' for a (shape, colour, position, size) combination; fixed forever."""
    combo = shape.combo if isinstance(shape, Shape) else tuple(shape)
    return "heldout" if _combo_hash(combo) % 1000 < HELDOUT_PER_MILLE else "train"


ALL_COMBOS: tuple[tuple[str, str, str, str], ...] = tuple(
    (sh, c, p, sz) for sh in SHAPES for c in COLOURS for p in POSITIONS for sz in SIZES
)
COMBOS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    split: tuple(c for c in ALL_COMBOS if split_of(c) == split) for split in ("train", "heldout")
}


def _check_split() -> None:
    train = COMBOS["train"]
    for i, values in enumerate((SHAPES, COLOURS, POSITIONS, SIZES)):
        missing = set(values) - {c[i] for c in train}
        if missing:  # pragma: no cover - a property of the fixed hash, checked by the tests too
            raise AssertionError(f"attribute values never seen in train: {sorted(missing)}")


_check_split()


# --------------------------------------------------------------------------- sampling


def _jitter(rng: random.Random) -> float:
    return round(rng.uniform(-JITTER, JITTER), 3)


def _sample_shape(rng: random.Random, combos) -> Shape:
    sh, c, p, sz = rng.choice(combos)
    return Shape(sh, c, p, sz, _jitter(rng), _jitter(rng))


def sample_scene(rng: random.Random, split: str = "train", max_shapes: int = 2) -> Scene:
    """A random scene drawn only from `split`'s combinations.

    Train scenes have 1..max_shapes shapes (both shapes train combinations, at different positions,
    bounding boxes apart, so neither hides the other); held-out scenes always have a single shape.
    """
    if split not in COMBOS:
        raise ValueError(f"unknown split {split!r}")
    combos = COMBOS[split]
    n = 1 if split == "heldout" else rng.randint(1, max(1, min(2, max_shapes)))
    while True:  # a pair is redrawn whole until valid (about half of the draws are)
        shapes = [_sample_shape(rng, combos) for _ in range(n)]
        if n == 1 or (shapes[0].position != shapes[1].position and not _boxes_overlap(*shapes)):
            break
    return Scene(tuple(shapes), rng.choice(tuple(BACKGROUNDS)))


def batch(rng: random.Random, n: int, split: str = "train", size: int = 64,
          jitter: bool = True) -> tuple[np.ndarray, list[str]]:
    """n random scenes: uint8 images (n, size, size, 3) and one random caption per scene. jitter False:
    each image drawn at its shapes' anchors (the same draws from `rng`, so the same captions)."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    texts = []
    for i in range(n):
        scene = sample_scene(rng, split)
        images[i] = np.asarray(render(scene if jitter else without_jitter(scene), size))
        texts.append(rng.choice(captions(scene)))
    return images, texts


def without_jitter(scene: Scene) -> Scene:
    """The scene with every shape at its anchor: what its caption says, without the sampler's offsets."""
    return replace(scene, shapes=tuple(replace(s, dx=0.0, dy=0.0) for s in scene.shapes))


def heldout_captions(n: int, seed: int = 0) -> list[tuple[Scene, str]]:
    """n single-shape held-out scenes (no jitter), each with its canonical caption; deterministic.

    Cycles through every held-out combination (in a seeded order) before repeating one.
    """
    rng = random.Random(seed)
    order = list(COMBOS["heldout"])
    rng.shuffle(order)
    out = []
    for i in range(n):
        scene = Scene((Shape(*order[i % len(order)]),), rng.choice(tuple(BACKGROUNDS)))
        out.append((scene, canonical_caption(scene)))
    return out
