"""What the Generate page tells a visitor about a preset: its family, what it is good at, its speed on
this host, and, for the worlds trained here (shapes, digits, flowers), the words it knows and three
prompts it draws well.

Torch-free. The worlds' words come from the world modules' own tables (t2i/data/), never retyped:
shapes and flowers (numpy and Pillow only) and digit_words (the digits world's captions, kept apart
from its torch renderer).
A preset belongs to a world when its text side (its family's `text_weights`: a guided preset's
perceptors, another's text component) has built-in weights in that world's folder (`builtin:shapes/...`).
"""

from __future__ import annotations

import re
import statistics
import string
from dataclasses import dataclass
from functools import lru_cache

from . import jobview
from ..data import digit_words, flowers, shapes
from ..families import family
from ..paths import BUILTIN_PREFIX
from ..presets import Preset
from ..spec import _split_part, cut_prompt

# One line per preset whose description says more than a visitor needs; others use their description.
GOOD_AT = {
    "shapes": "one or two coloured circles, squares or triangles at a place, small or large (64x64)",
    "shapes-ldm": "one or two coloured circles, squares or triangles at a place, small or large (64x64)",
    "digits": "a single handwritten-style digit, 0 to 9 (32x32 grey)",
    "flowers-gan": "a flower of a petal colour, centre colour and petal count (64x64)",
    "vqgan_imagenet_f16_16384": "scenes, objects and styles in general; painterly textures",
    "vqgan_imagenet_f16_1024": "scenes, objects and styles in general, coarser than the 16384-code model",
    "vqgan_gumbel_f8_8192": "photographic scenes and objects with finer detail",
    "wikiart_16384": "paintings: art styles, brushwork, portraits and landscapes",
    "glide-base-64": "everyday objects and scenes as small photographs (64x64)",
    "glide-256": "everyday objects and scenes as photographs (256x256)",
    "ldm-text2im-large-256": "general scenes, objects and styles (256x256)",
}
UNTRAINED = "nothing: random weights, for tests and smoke runs"
STOP_WORDS = frozenset("a an the and or of with in on at to by for from is are it its this that these those".split())
SPEED_WINDOW = 500  # finished jobs looked at (the store lists the latest ones, all presets together)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@dataclass(frozen=True)
class World:
    name: str
    vocabulary: dict[str, tuple[str, ...]]  # heading -> words, as the page lists them
    known: frozenset[str]                   # every word its captions use
    examples: tuple[str, ...]               # three captions of the world's own


@dataclass(frozen=True)
class Guide:
    preset: str
    family: str          # the family's blurb
    good_at: str
    world: World | None  # None: not a world trained here (any words are fine)


@dataclass(frozen=True)
class Speed:
    jobs: int            # finished jobs of the preset the medians come from
    per_job: float       # median seconds from start to finish
    per_step: float      # median seconds per step

    def describe(self) -> str:
        return (f"about {jobview.describe(self.per_job)} a job ({self.per_step:.2g} s a step; "
                f"median of {self.jobs} finished job{'s' if self.jobs != 1 else ''})")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------- the worlds

def _shapes() -> World:
    # Train-split combinations only (what the models saw), each example a new shape, colour and place.
    picked, used = [], set()
    for combo in shapes.COMBOS["train"]:
        if len(picked) < 3 and not used & set(combo[:3]):
            picked.append(combo)
            used |= set(combo[:3])
    examples = tuple(shapes.captions(shapes.Scene((shapes.Shape(*c),), "white"))[0] for c in picked)
    known = set()
    for i, combo in enumerate(shapes.ALL_COMBOS):
        background = list(shapes.BACKGROUNDS)[i % len(shapes.BACKGROUNDS)]
        for caption in shapes.captions(shapes.Scene((shapes.Shape(*combo),), background)):
            known.update(_words(caption))
    two = shapes.Scene((shapes.Shape(*picked[0]), shapes.Shape(*picked[1])), "black")
    known.update(w for c in shapes.captions(two) for w in _words(c))  # "and"
    return World("shapes", {"colours": tuple(shapes.COLOURS), "shapes": shapes.SHAPES,
                            "positions": tuple(shapes.POSITION_PHRASES.values()), "sizes": shapes.SIZES,
                            "backgrounds": tuple(shapes.BACKGROUNDS)}, frozenset(known), examples)


def _digits() -> World:
    words, templates = digit_words.DIGIT_WORDS, digit_words.TEMPLATES
    numerals = tuple(str(d) for d in range(len(words)))
    known = set(words) | set(numerals) | {"a", "an"}  # {a}/{an}: the article of the word or numeral
    for template in templates:
        known.update(w for literal, *_ in string.Formatter().parse(template) for w in _words(literal))

    def fill(template: str, digit: int) -> str:
        return template.format(w=words[digit], d=numerals[digit])

    # Templates without an article field: filled here without digits._article.
    plain = [t for t in templates if "{a}" not in t and "{an}" not in t and len(t) > 3]
    examples = (fill(plain[0], 7), fill(plain[1], 3), fill(plain[-1], 5))
    return World("digits", {"digits (words)": words, "digits (numerals)": numerals}, frozenset(known), examples)


def _flowers() -> World:
    shape_words = flowers._SHAPE_WORDS  # noqa: SLF001 - the synonyms its captions use, kept there
    known = set(flowers.PETAL_COLOURS) | set(flowers.CENTRE_COLOURS) | set(flowers.NUMBER_WORDS.values())
    known |= {w for ws in shape_words.values() for w in ws} | set(flowers.SIZES)
    train = flowers.COMBOS["train"]
    for count in (1, 2):  # one flower or two: "this flower has", "these two flowers have"
        scene = flowers.Scene(flowers.Flower(*train[0], "round", "small"), count=count)
        known.update(w for c in flowers.captions(scene) for w in _words(c))
    picks = [(train[0], "round", "large", 0), (train[len(train) // 2], "pointed", "small", 6),
             (train[-1], "thin", "large", 3)]
    examples = tuple(flowers.caption(flowers.Scene(flowers.Flower(colour, centre, petals, shape, size)), template)
                     for (colour, centre, petals), shape, size, template in picks)
    return World("flowers", {"petal colours": tuple(flowers.PETAL_COLOURS),
                             "centre colours": tuple(flowers.CENTRE_COLOURS),
                             "petal counts": tuple(flowers.NUMBER_WORDS.values()),
                             "petal shapes": tuple(w for ws in shape_words.values() for w in ws),
                             "sizes": flowers.SIZES}, frozenset(known), examples)


_WORLDS = {"shapes": _shapes, "digits": _digits, "flowers": _flowers}


@lru_cache(maxsize=None)
def world(name: str) -> World:
    return _WORLDS[name]()


def world_of(preset: Preset) -> str | None:
    """The world trained here whose text side the preset uses, or None."""
    for ref in family(preset.family).text_weights(preset):
        if isinstance(ref, str) and ref.startswith(BUILTIN_PREFIX):
            folder = ref[len(BUILTIN_PREFIX):].split("/")[0]
            if folder in _WORLDS:
                return folder
    return None


# --------------------------------------------------------------------------- what the page asks

def good_at(preset: Preset) -> str:
    if preset.untrained:
        return UNTRAINED
    if preset.name in GOOD_AT:
        return GOOD_AT[preset.name]
    # The description's first clause: "VQGAN ImageNet f16, 16384 codes, steered by ..." -> up to " - ".
    first = re.split(r" - |; |\(", preset.description, maxsplit=1)[0].strip(" ,.")
    return first or "no description"


def guide(preset: Preset) -> Guide:
    name = world_of(preset)
    return Guide(preset.name, family(preset.family).blurb, good_at(preset),
                 world(name) if name else None)


def examples(preset: Preset) -> tuple[str, ...]:
    g = guide(preset)
    return g.world.examples if g.world else ()


def unknown_words(preset: Preset, prompt: str) -> list[str]:
    """The prompt's words that the preset's world never saw in a caption (each once, in order);
    empty for presets outside the worlds. The prompt syntax (`|` between parts, `:weight:stop`
    after one) and articles and prepositions are not words of the prompt."""
    name = world_of(preset)
    if name is None:
        return []
    known = world(name).known
    # Only what a submit keeps (cut_prompt: the prompt limit) is read, so a pasted megabyte costs what
    # a full prompt does and the words named are those that would reach the model. A dict keeps them
    # once, in order, in linear time (a list's `in` made a page of distinct words quadratic).
    kept, _ = cut_prompt(prompt)
    out: dict[str, None] = {}
    for raw in kept.split("|"):
        text, _, _ = _split_part(raw)
        for w in _words(text):
            if w not in known and w not in STOP_WORDS:
                out.setdefault(w)
    return list(out)


def speed(store, preset: str, window: int = SPEED_WINDOW) -> Speed | None:
    """Medians over the preset's finished jobs among the latest `window` finished ones (the store has
    no per-preset query of durations); None when there are none."""
    times = [(p.elapsed, job.total) for job in store.jobs(status="done", limit=window) if job.preset == preset
             for p in [jobview.progress(job)] if p.elapsed is not None]
    if not times:
        return None
    return Speed(len(times), statistics.median(t for t, _ in times),
                 statistics.median(t / max(n, 1) for t, n in times))
