"""The flowers world: procedural Oxford-102-like flowers with captions, the data of the GAN-INT-CLS family.

This module owns the vocabularies (petal colours, centre colours, petal counts and shapes, sizes,
backgrounds), the scene record (`Flower`, `Scene`), the renderer (`render`, any size: 64x64 for the
GAN, 256x256 for an upscaler), the captions in the style of the Oxford-102 descriptions (`captions`,
`caption`, with which attributes each one names), the fixed held-out combinations (`HELDOUT`,
`split_of`) and the batch sampler (`sample`).

Geometry (fractions of the side): a flower's radius (petal length) is 26% (small) or 40% (large); its
centre disc is 28% of that radius. A single flower sits near the middle (jitter up to 4%). Two-flower
scenes show the same species twice: the described flower (its own size) up-left and a second one,
half as large, down-right, drawn first and 12% of the side away; the checker judges the larger one.
Petals start at the flower's centre; each has its own small angle, length and brightness jitter.

Held out: 15% of the (petal colour, centre colour, petal count) combinations (SHA-256 of the combo,
as the shapes world does), never rendered by the "train" split; every pair of values still appears
in train, so the held-out split asks for new combinations, never for an unseen colour or count.

`render` has no randomness of its own: every random choice (including the background texture's seed)
is drawn by the sampler from the caller's numpy Generator and stored in the Scene, so a Scene gives
the same pixels at any size, everywhere.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
PETAL_COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (240, 120, 185), "red": (215, 30, 40), "yellow": (245, 215, 35), "white": (245, 245, 240),
    "purple": (140, 60, 195), "orange": (245, 135, 20), "blue": (55, 95, 230)}
CENTRE_COLOURS: dict[str, tuple[int, int, int]] = {
    "yellow": (240, 200, 25), "brown": (125, 70, 30), "orange": (240, 125, 20), "white": (240, 240, 235),
    "black": (25, 20, 20), "green": (75, 160, 45)}
PETAL_COUNTS = (4, 5, 6, 7, 8)
PETAL_SHAPES = ("round", "pointed", "thin")
SIZES = ("small", "large")
RADIUS = {"small": 0.26, "large": 0.40}
CENTRE_FRACTION = 0.28  # the centre disc's radius over the flower's
BACKGROUNDS = ("foliage", "dark", "green")
_PLAIN = {"dark": (22, 28, 20), "green": (40, 95, 45)}
_LEAF_GREENS = ((30, 80, 35), (45, 110, 40), (60, 125, 50), (35, 95, 60), (70, 115, 40))
_FOLIAGE_BASE = (28, 62, 30)
NUMBER_WORDS = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
SPLITS = ("train", "heldout")
HELDOUT_PER_MILLE = 150
JITTER = 0.04  # a single flower's largest offset from the middle, fraction of the side
PAIR_GAP = 0.12  # the least distance between two flowers' petal circles, fraction of the side
_SUPER = 4  # supersampling: drawn at 4x and box-averaged (anti-aliased edges, pure interiors)

# Each petal shape's half-width along the petal, u = distance from the flower's centre / length.
_HALF_WIDTH = {
    "round": lambda u: 0.30 * 2 * np.sqrt(u * (1 - u)),
    "pointed": lambda u: 0.30 * 2.6 * u ** 0.6 * (1 - u),
    "thin": lambda u: 0.10 * 2 * np.sqrt(u * (1 - u)),
}


@dataclass(frozen=True)
class Flower:
    """The species: what captions describe and the checker reads."""
    colour: str
    centre: str
    petals: int
    shape: str
    size: str

    def __post_init__(self):
        if self.colour not in PETAL_COLOURS:
            raise ValueError(f"unknown petal colour {self.colour!r}")
        if self.centre not in CENTRE_COLOURS:
            raise ValueError(f"unknown centre colour {self.centre!r}")
        if self.centre == self.colour:
            raise ValueError(f"a {self.colour} flower never has a {self.centre} centre (indistinguishable)")
        if self.petals not in PETAL_COUNTS:
            raise ValueError(f"petal count must be one of {PETAL_COUNTS}, got {self.petals!r}")
        if self.shape not in PETAL_SHAPES:
            raise ValueError(f"unknown petal shape {self.shape!r}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}")

    @property
    def combo(self) -> tuple[str, str, int]:
        """(petal colour, centre colour, petal count): what the held-out split is made of."""
        return (self.colour, self.centre, self.petals)


@dataclass(frozen=True)
class Scene:
    """One image: the flower, how many (1 or 2), the background and every random draw of the render."""
    flower: Flower
    count: int = 1
    background: str = "foliage"
    dx: float = 0.0  # offset of the (first) flower from its place, fraction of the side
    dy: float = 0.0
    rotation: float = 0.0  # radians
    seed: int = 0  # petal jitter, background texture, the second flower's turn

    def __post_init__(self):
        if self.count not in (1, 2):
            raise ValueError("a scene has one or two flowers")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")

    def attributes(self) -> dict:
        """Every captionable attribute: colour, centre, petals, shape, size, count."""
        f = self.flower
        return {"colour": f.colour, "centre": f.centre, "petals": f.petals, "shape": f.shape,
                "size": f.size, "count": self.count}

    def placements(self) -> list[tuple[float, float, float]]:
        """(x, y, radius) of each flower, fractions of the side; the described (larger) one last."""
        r = RADIUS[self.flower.size]
        if self.count == 1:
            return [(0.5 + self.dx, 0.5 + self.dy, r)]
        # Up-left and down-right along the diagonal, 1.5 radii (both together) + 12% of the side apart:
        # the flowers never touch (the checker groups pixels 5% apart). The pair is centred, unless
        # that would cut the first flower (a large one sits at its own radius from the corner and the
        # second one is cut instead).
        d = (1.5 * r + PAIR_GAP) / math.sqrt(2)
        p = max(r, 0.5 - d / 2)
        return [(p + d + self.dx / 2, p + d + self.dy / 2, r / 2), (p + self.dx / 2, p + self.dy / 2, r)]


# --------------------------------------------------------------------------- rendering


def _petal_outline(shape: str, n: int = 24) -> np.ndarray:
    """(2n, 2) points of a petal of length 1 along +x from the origin."""
    u = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, n))  # denser near the base and the tip
    w = _HALF_WIDTH[shape](u)
    return np.concatenate([np.stack([u, w], 1), np.stack([u[::-1], -w[::-1]], 1)])


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * factor)))) for c in rgb)


def _background(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator, big: int) -> None:
    if scene.background != "foliage":
        draw.rectangle((0, 0, big, big), fill=_PLAIN[scene.background])
        return
    # Leaves: overlapping green ellipses in a few shades (a texture like the photos' foliage).
    draw.rectangle((0, 0, big, big), fill=_FOLIAGE_BASE)
    for _ in range(40):
        cx, cy = rng.uniform(-0.1, 1.1, 2) * big
        a, b = rng.uniform(0.04, 0.14) * big, rng.uniform(0.015, 0.05) * big
        t = rng.uniform(0, math.pi)
        angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        pts = np.stack([a * np.cos(angles), b * np.sin(angles)], 1) @ np.array(
            [[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        draw.polygon([tuple(p) for p in pts + (cx, cy)], fill=_LEAF_GREENS[int(rng.integers(len(_LEAF_GREENS)))])


def _flower(draw: ImageDraw.ImageDraw, f: Flower, x: float, y: float, r: float, rotation: float,
            rng: np.random.Generator) -> None:
    outline = _petal_outline(f.shape)
    base = PETAL_COLOURS[f.colour]
    step = 2 * math.pi / f.petals
    for k in range(f.petals):
        angle = rotation + k * step + rng.uniform(-0.08, 0.08) * step
        length = r * rng.uniform(0.92, 1.0)
        rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        pts = outline * length @ rot + (x, y)
        draw.polygon([tuple(p) for p in pts], fill=_shade(base, rng.uniform(0.9, 1.03)))
    rc = r * CENTRE_FRACTION
    # The petals' bases join in a ring around the centre (a corolla): a flower is one patch even
    # with thin petals around a centre as dark or green as the background.
    rb = 1.3 * rc
    draw.ellipse((x - rb, y - rb, x + rb, y + rb), fill=base)
    centre = CENTRE_COLOURS[f.centre]
    draw.ellipse((x - rc, y - rc, x + rc, y + rc), fill=centre)
    # Stamen: a few specks a shade off the centre colour (texture; the checker takes a median).
    for _ in range(6):
        a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.7) * rc
        s = rc * 0.18
        px, py = x + d * math.cos(a), y + d * math.sin(a)
        draw.ellipse((px - s, py - s, px + s, py + s), fill=_shade(centre, 0.88 if sum(centre) > 200 else 1.6))


def render(scene: Scene, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size, 3) RGB: the scene drawn at `size` pixels square (the same picture at any size)."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"render size must be an integer >= 8, got {size!r}")
    big = size * _SUPER
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng([scene.seed, 7])
    _background(draw, scene, rng, big)
    for i, (x, y, r) in enumerate(scene.placements()):
        turn = scene.rotation + (rng.uniform(0, 2 * math.pi) if i == 0 and scene.count == 2 else 0.0)
        _flower(draw, scene.flower, x * big, y * big, r * big, turn, rng)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


# --------------------------------------------------------------------------- captions

_SHAPE_WORDS = {"round": ("rounded", "round"), "pointed": ("pointed", "pointy"), "thin": ("thin", "narrow")}

# Fields: {n} the petal count as a word; {colour}; {centre}; {shape}; {size}; {this} "this flower" /
# "these two flowers"; {a} "a flower" / "two flowers"; {has} / {is} agreeing with them.
TEMPLATES = (
    "{this} {has} {n} {colour} petals and a {centre} center",
    "a flower with {shape} {colour} petals surrounding a {centre} cluster of stamen",
    "the petals are {shape} and {colour}, the center is {centre}",
    "{this} {has} {n} {shape} {colour} petals with a {centre} center",
    "{a} with {n} {colour} petals",
    "{this} {is} {colour} with {n} {shape} petals and a {centre} middle",
    "a {size} {colour} flower with {n} petals and a {centre} center",
    "{n} {colour} petals surround the {centre} center of {this}",
    "{this} {has} {colour} petals that are {shape}, and a {centre} center",
    "{a} with {n} {shape} petals that are {colour}",
    "a {colour} flower with a {centre} center",
    "{this} {is} {size} with {n} {colour} petals around a {centre} pistil",
    "the {centre} center is surrounded by {n} {colour} petals",
    "{this} {has} {n} petals that are {colour} and a {centre} center",
    "{a} with {colour} petals and a {centre} center",
    "{n} {shape} petals, {colour}, around a {centre} center",
)
_FIELD_ATTRIBUTE = {"n": "petals", "colour": "colour", "centre": "centre", "shape": "shape", "size": "size",
                    "this": "count", "a": "count", "has": "count", "is": "count"}


def mentioned(template: int) -> frozenset[str]:
    """The attributes (Scene.attributes keys) TEMPLATES[template] names."""
    fields = {f for _, f, _, _ in string.Formatter().parse(TEMPLATES[template]) if f}
    return frozenset(_FIELD_ATTRIBUTE[f] for f in fields)


def caption(scene: Scene, template: int, rng: np.random.Generator | None = None) -> str:
    """TEMPLATES[template] filled in for the scene (a random synonym of the petal shape when rng is given)."""
    f = scene.flower
    two = scene.count == 2
    shape = _SHAPE_WORDS[f.shape][int(rng.integers(2)) if rng is not None else 0]
    text = TEMPLATES[template].format(
        n=NUMBER_WORDS[f.petals], colour=f.colour, centre=f.centre, shape=shape, size=f.size,
        this="these two flowers" if two else "this flower", a="two flowers" if two else "a flower",
        has="have" if two else "has", **{"is": "are" if two else "is"})  # `is` is a keyword
    return _AN.sub("an ", text)  # "an orange center"


def _template_regex(template: str) -> re.Pattern:
    alternatives = {
        "n": NUMBER_WORDS.values(), "colour": PETAL_COLOURS, "centre": CENTRE_COLOURS,
        "shape": [w for ws in _SHAPE_WORDS.values() for w in ws], "size": SIZES,
        "this": ("this flower", "these two flowers"), "a": ("a flower", "two flowers"),
        "has": ("has", "have"), "is": ("is", "are")}
    out = ""
    for literal, field, _, _ in string.Formatter().parse(template):
        out += re.escape(literal)
        if field:
            out += f"(?P<{field}>" + "|".join(map(re.escape, alternatives[field])) + ")"
    return re.compile(out)


_AN = re.compile(r"\ba (?=[aeiou])")
_REGEXES = tuple(_template_regex(t) for t in TEMPLATES)
_SHAPE_OF = {w: s for s, ws in _SHAPE_WORDS.items() for w in ws}
_NUMBER_OF = {w: n for n, w in NUMBER_WORDS.items()}


def _match(text: str) -> re.Match | None:
    """The template's match of a caption of ours ("an" read as "a"), or None."""
    text = re.sub(r"\ban\b", "a", text.strip().lower())
    return next((m for regex in _REGEXES if (m := regex.fullmatch(text))), None)


def parse_caption(text: str) -> dict | None:
    """The attributes a caption of ours names ({"colour": "pink", "petals": 5, ...}; keys as in
    Scene.attributes), or None when it is no caption of TEMPLATES. Agreement words ("has"/"have")
    give the flower count."""
    if (m := _match(text)) is None:
        return None
    out = {}
    for field, value in m.groupdict().items():
        if field == "n":
            out["petals"] = _NUMBER_OF[value]
        elif field == "shape":
            out["shape"] = _SHAPE_OF[value]
        elif field in ("this", "a", "has", "is"):
            out["count"] = 2 if value in ("these two flowers", "two flowers", "have", "are") else 1
        else:
            out[field] = value
    return out


def changed_caption(text: str, attribute: str, value) -> str | None:
    """A caption of ours with the word naming `attribute` ("petals", "colour" or "centre") replaced by
    `value`'s, the rest untouched (a hard negative: it differs in that attribute only); None when the
    caption is not ours or does not name the attribute."""
    field = next(f for f, a in _FIELD_ATTRIBUTE.items() if a == attribute)  # "petals" is {n}
    if (m := _match(text)) is None or m.groupdict().get(field) is None:
        return None
    word = NUMBER_WORDS[value] if attribute == "petals" else value
    return _AN.sub("an ", m.string[:m.start(field)] + word + m.string[m.end(field):])


def consistent(named: dict, scene: Scene) -> bool:
    """Whether every attribute in `named` (parse_caption's answer) is the scene's."""
    attrs = scene.attributes()
    return all(attrs[k] == v for k, v in named.items())


def captions(scene: Scene) -> list[str]:
    """The scene in every template (first synonyms)."""
    return [caption(scene, t) for t in range(len(TEMPLATES))]


def canonical_caption(scene: Scene) -> str:
    """'this flower has {n} {colour} petals and a {centre} center': names the three judged attributes."""
    return caption(scene, 0)


# --------------------------------------------------------------------------- splits


def _combo_hash(combo: tuple[str, str, int]) -> int:
    digest = hashlib.sha256("|".join(("flowers-v1", combo[0], combo[1], str(combo[2]))).encode()).digest()
    return int.from_bytes(digest[:8], "big")


ALL_COMBOS: tuple[tuple[str, str, int], ...] = tuple(
    (c, z, n) for c in PETAL_COLOURS for z in CENTRE_COLOURS for n in PETAL_COUNTS if c != z)
HELDOUT: tuple[tuple[str, str, int], ...] = tuple(
    c for c in ALL_COMBOS if _combo_hash(c) % 1000 < HELDOUT_PER_MILLE)
COMBOS = {"train": tuple(c for c in ALL_COMBOS if c not in HELDOUT), "heldout": HELDOUT}


def split_of(combo: Flower | tuple[str, str, int]) -> str:
    """'train' or 'heldout' for a (petal colour, centre colour, petal count); fixed forever."""
    combo = combo.combo if isinstance(combo, Flower) else tuple(combo)
    return "heldout" if combo in HELDOUT else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown flowers split {split!r}: use one of {', '.join(SPLITS)}")


# --------------------------------------------------------------------------- sampling


def _rng(gen: np.random.Generator | int) -> np.random.Generator:
    return gen if isinstance(gen, np.random.Generator) else np.random.default_rng(gen)


def sample_scene(gen: np.random.Generator | int, split: str = "train", max_flowers: int = 2) -> Scene:
    """A random scene whose (petal colour, centre colour, petal count) belongs to `split`."""
    _check_split(split)
    rng = _rng(gen)
    colour, centre, petals = COMBOS[split][int(rng.integers(len(COMBOS[split])))]
    flower = Flower(colour, centre, int(petals), PETAL_SHAPES[int(rng.integers(3))], SIZES[int(rng.integers(2))])
    count = 2 if max_flowers >= 2 and rng.random() < 0.25 else 1
    dx, dy = (round(float(v), 3) for v in rng.uniform(-JITTER, JITTER, 2))
    return Scene(flower, count, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], dx, dy,
                 round(float(rng.uniform(0, 2 * math.pi / petals)), 4), int(rng.integers(2**31)))


def sample(n: int, gen: np.random.Generator | int, split: str = "train", size: int = SIZE,
           max_flowers: int = 2) -> tuple[np.ndarray, list[str], list[Scene]]:
    """n random scenes of `split`: images uint8 (n, 3, size, size), one random caption each (any
    template; parse_caption says what it names), and the scenes (Scene.attributes() is the record)."""
    _check_split(split)
    rng = _rng(gen)
    images = np.empty((n, 3, size, size), np.uint8)
    texts, scenes = [], []
    for i in range(n):
        scene = sample_scene(rng, split, max_flowers)
        images[i] = render(scene, size).transpose(2, 0, 1)
        texts.append(caption(scene, int(rng.integers(len(TEMPLATES))), rng))
        scenes.append(scene)
    return images, texts, scenes


def heldout_scenes(n: int, seed: int = 0) -> list[Scene]:
    """n single-flower held-out scenes, cycling through every held-out combination (seeded order)
    before repeating one; deterministic. The evaluation set of text encoders and generators."""
    rng = np.random.default_rng([seed, 11])
    order = [HELDOUT[i] for i in rng.permutation(len(HELDOUT))]
    out = []
    for i in range(n):
        colour, centre, petals = order[i % len(order)]
        s = sample_scene(rng, "heldout", max_flowers=1)
        out.append(Scene(Flower(colour, centre, petals, s.flower.shape, s.flower.size), 1, s.background,
                         s.dx, s.dy, s.rotation, s.seed))
    return out
