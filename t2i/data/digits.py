"""The digits world: procedural MNIST-like images of the digits 0-9 and their captions.

Each digit is drawn once per stroke width with Pillow's scalable built-in font (a cached high-resolution
glyph, white on black, height normalised), and every render warps that glyph through its own random
affine map (rotation, scale, aspect, shear, translation) and a smooth elastic field, sampled at 64x64
and averaged down to a grey 32x32 uint8 image: an MNIST-like digit (about 20 px tall, centred). All
renders of a batch are one torch `grid_sample`, so the trainers draw fresh images every step.

Splits (held-out distortions): rotation (-15..15 degrees) and shear (-0.25..0.25) are each cut into four
equal bands; the 16 (rotation band, shear band) cells form a checkerboard. "train" draws only from the
cells where (rotation band + shear band) is even, "test" only from the odd cells. Each split still
covers the whole range of each parameter, so the test split asks a model to generalise to unseen
combinations of distortions, never to unseen digits or an extrapolated range. The ranges are
MNIST-like (MNIST centres and size-normalises its digits); wider ones (+-20 degrees, shear 0.3, five
pen widths, 2 px shifts) cost the ten-minute digits DDPM about ten points of bench accuracy.

Every random draw comes from the caller's numpy Generator, so a seed gives the same images everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .digit_words import DIGIT_WORDS, PROMPTS, TEMPLATES  # noqa: F401 - the captions' words, torch-free

SIZE = 32
SPLITS = ("train", "test")

# The glyph canvas: digits drawn 80 px tall on 128 px, then mapped onto a 64 px grid (2x the output).
_CANVAS = 128
_GLYPH_HEIGHT = 80
_FONT_SIZE = 100
STROKE_WIDTHS = (2, 3, 4)  # in font pixels at _FONT_SIZE: MNIST-like pen widths, thin to bold
_SUPER = 2  # output supersampling: 64x64 samples averaged 2x2 -> 32x32 (anti-aliasing)

ROTATION = (-15.0, 15.0)  # degrees
SHEAR = (-0.25, 0.25)
BANDS = 4
SCALE = (0.8, 1.1)
ASPECT = (0.85, 1.15)
SHIFT = 1.0  # pixels of the 32x32 image, each axis (MNIST centres its digits)
ELASTIC = 1.0  # largest elastic displacement, pixels of the 32x32 image
_ELASTIC_GRID = 4  # the coarse random field (4x4 per axis) upsampled bilinearly: smooth warps


@functools.lru_cache(maxsize=1)
def glyphs() -> np.ndarray:
    """float32 (10, len(STROKE_WIDTHS), 128, 128) in [0, 1]: each digit at each stroke width, scaled
    to a common height and centred on its bounding box."""
    font = ImageFont.load_default(size=_FONT_SIZE)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow < 10.1 or no FreeType: a bitmap font
        raise RuntimeError("the digits world needs Pillow >= 10.1 with FreeType (a scalable default font)")
    out = np.zeros((10, len(STROKE_WIDTHS), _CANVAS, _CANVAS), np.float32)
    for d in range(10):
        for j, sw in enumerate(STROKE_WIDTHS):
            big = Image.new("L", (2 * _FONT_SIZE, 2 * _FONT_SIZE), 0)
            ImageDraw.Draw(big).text((_FONT_SIZE // 2, _FONT_SIZE // 4), str(d), fill=255, font=font,
                                     stroke_width=sw, stroke_fill=255)
            crop = big.crop(big.getbbox())
            # Height fixed (MNIST's digits fill a 20 px box); widths vary per digit ("1" is narrow).
            w = max(1, round(crop.width * _GLYPH_HEIGHT / crop.height))
            crop = crop.resize((w, _GLYPH_HEIGHT), Image.Resampling.LANCZOS)
            canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
            canvas.paste(crop, ((_CANVAS - w) // 2, (_CANVAS - _GLYPH_HEIGHT) // 2))
            out[d, j] = np.asarray(canvas, np.float32) / 255
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}: use one of {', '.join(SPLITS)}")


def _rotation_and_shear(n: int, rng: np.random.Generator, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw (rotation, shear) uniformly over the split's checkerboard cells."""
    rot_band = rng.integers(0, BANDS, n)
    # The shear band is then one of the two (of four) whose parity matches the split.
    parity = 0 if split == "train" else 1
    shear_band = 2 * rng.integers(0, BANDS // 2, n) + (rot_band + parity) % 2
    u = rng.random((n, 2))
    rot = ROTATION[0] + (rot_band + u[:, 0]) * (ROTATION[1] - ROTATION[0]) / BANDS
    shear = SHEAR[0] + (shear_band + u[:, 1]) * (SHEAR[1] - SHEAR[0]) / BANDS
    return rot, shear


def split_of(rotation: float, shear: float) -> str:
    """Which split a (rotation, shear) pair belongs to (the checkerboard above)."""
    i = min(BANDS - 1, int((rotation - ROTATION[0]) / (ROTATION[1] - ROTATION[0]) * BANDS))
    j = min(BANDS - 1, int((shear - SHEAR[0]) / (SHEAR[1] - SHEAR[0]) * BANDS))
    return SPLITS[(i + j) % 2]


def render_batch(digits: np.ndarray, rng: np.random.Generator, split: str = "train") -> np.ndarray:
    """uint8 (n, 32, 32): one render per digit in `digits`, each with its own distortions."""
    _check_split(split)
    digits = np.asarray(digits, np.int64)
    if digits.ndim != 1 or (digits.size and (digits.min() < 0 or digits.max() > 9)):
        raise ValueError("digits must be a 1-D array of integers 0..9")
    n = len(digits)
    if n == 0:
        return np.zeros((0, SIZE, SIZE), np.uint8)
    width = rng.integers(0, len(STROKE_WIDTHS), n)
    rot, shear = _rotation_and_shear(n, rng, split)
    scale = rng.uniform(*SCALE, n)
    aspect = rng.uniform(*ASPECT, n)
    shift = rng.uniform(-SHIFT, SHIFT, (n, 2)) / SIZE * 2  # in [-1, 1] image coordinates
    coarse = rng.uniform(-1, 1, (n, 2, _ELASTIC_GRID, _ELASTIC_GRID)) * (ELASTIC / SIZE * 2)

    # Forward map glyph -> image: shift + R(rot) @ [[1, shear], [0, 1]] @ diag(scale * aspect, scale).
    # grid_sample wants the inverse (image point -> glyph point) as a 2x3 matrix.
    a = np.deg2rad(rot)
    cos, sin = np.cos(a), np.sin(a)
    sx, sy = scale * aspect, scale
    fwd = np.stack([np.stack([cos * sx, (cos * shear - sin) * sy], -1),
                    np.stack([sin * sx, (sin * shear + cos) * sy], -1)], -2)
    inv = np.linalg.inv(fwd)
    # Image coordinates span 32 px, the glyph canvas 128 px with the digit 80 px tall: a digit of
    # height 20 px (MNIST's box) means glyph = image * (32 / 20) * (80 / 128).
    k = SIZE / 20 * _GLYPH_HEIGHT / _CANVAS
    theta = np.concatenate([inv, -inv @ shift[:, :, None]], axis=2) * k
    m = SIZE * _SUPER
    grid = F.affine_grid(torch.from_numpy(theta).float(), [n, 1, m, m], align_corners=False)
    # Elastic: a coarse random field upsampled bilinearly, a smooth warp added to every sample point.
    field = F.interpolate(torch.from_numpy(coarse).float(), size=(m, m), mode="bilinear", align_corners=True)
    grid = grid + field.permute(0, 2, 3, 1) * k
    src = torch.from_numpy(glyphs()[digits, width][:, None])
    img = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    img = F.avg_pool2d(img, _SUPER)[:, 0]  # supersampled -> 32x32: anti-aliased like MNIST's scans
    return img.mul(255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def to_float(images) -> torch.Tensor:
    """uint8 or float images, (n, 32, 32) or (n, 1, 32, 32) -> float (n, 1, 32, 32) in [0, 1]: what the
    digits models (CharCLIP's image tower, the classifier) take."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"digit images must be (n, 32, 32) or (n, 1, 32, 32), got {tuple(x.shape)}")
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


def render(digit: int, rng: np.random.Generator, split: str = "train") -> np.ndarray:
    """uint8 (32, 32): one white-on-black render of `digit` with the split's distortions."""
    if not isinstance(digit, (int, np.integer)) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer 0..9, got {digit!r}")
    return render_batch(np.array([digit]), rng, split)[0]


def _article(word: str) -> str:
    return "an" if word[0] in "aeio8" else "a"  # "an eight", "an 8"


def caption(digit: int, rng: np.random.Generator, template: int | None = None) -> str:
    """A caption asking for `digit` in one of the TEMPLATES (random unless `template` is given)."""
    if not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer 0..9, got {digit!r}")
    t = TEMPLATES[int(rng.integers(len(TEMPLATES))) if template is None else template]
    w, d = DIGIT_WORDS[digit], str(digit)
    return t.format(w=w, d=d, a=_article(w), an=_article(d))


_TOKEN = re.compile(r"\b(" + "|".join(DIGIT_WORDS) + r")\b|(?<![0-9])([0-9])(?![0-9])")


def parse_digit(text: str) -> int | None:
    """The digit a caption asks for (a word or a lone numeral), or None when it names none, or several
    different ones."""
    found = {DIGIT_WORDS.index(w) if w else int(d) for w, d in _TOKEN.findall(text.lower())}
    return found.pop() if len(found) == 1 else None


Sampler = Callable[[int, np.random.Generator], "tuple[np.ndarray, np.ndarray, list[str]]"]


def sample(n: int, rng: np.random.Generator, split: str = "train") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n random digits: images uint8 (n, 32, 32), labels int64 (n,), captions."""
    _check_split(split)
    labels = rng.integers(0, 10, n).astype(np.int64)
    images = render_batch(labels, rng, split)
    return images, labels, [caption(int(d), rng) for d in labels]


def sampler(split: str = "train") -> Sampler:
    """`sample` bound to a split: the trainers' data source (idx.mnist_sampler is the other)."""
    _check_split(split)
    return functools.partial(sample, split=split)
