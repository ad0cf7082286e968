"""The preset guide (t2i/service/guide.py): the worlds' words come from the world modules, unknown words of a
prompt, examples a world knows every word of, speed from the store's finished jobs."""

import random
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from t2i.service import guide
from t2i.data import digits, flowers, shapes
from t2i.paths import ROOT
from t2i.presets import get_preset

WORLDS = {"shapes": "shapes", "shapes-ldm": "shapes", "digits": "digits", "flowers-gan": "flowers"}


@pytest.mark.parametrize("preset,world", [*WORLDS.items(), ("tiny-vqgan-untrained", None),
                                          ("tiny-gan-untrained", None), ("vqgan_imagenet_f16_16384", None)])
def test_a_preset_belongs_to_the_world_of_its_text_side(preset, world):
    assert guide.world_of(get_preset(preset)) == world


def test_the_vocabularies_are_the_world_modules_tables():
    v = guide.world("shapes").vocabulary
    assert v["colours"] == tuple(shapes.COLOURS) and v["shapes"] == shapes.SHAPES and v["sizes"] == shapes.SIZES
    assert v["positions"] == tuple(shapes.POSITION_PHRASES.values())
    v = guide.world("digits").vocabulary
    assert v["digits (words)"] == digits.DIGIT_WORDS and v["digits (numerals)"] == tuple("0123456789")
    v = guide.world("flowers").vocabulary
    assert v["petal colours"] == tuple(flowers.PETAL_COLOURS) and v["centre colours"] == tuple(flowers.CENTRE_COLOURS)
    assert v["petal counts"] == tuple(flowers.NUMBER_WORDS.values())
    assert set(flowers.PETAL_SHAPES) <= set(v["petal shapes"])


def test_every_caption_the_worlds_write_is_known_words_only():
    """The known words are those of the worlds' own captions: any caption they make has none unknown."""
    rng = np.random.default_rng(0)
    scenes = [shapes.sample_scene(random.Random(i)) for i in range(40)]
    assert all(not guide.unknown_words(get_preset("shapes"), c) for s in scenes for c in shapes.captions(s))
    for d in range(10):
        for t in range(len(digits.TEMPLATES)):
            assert not guide.unknown_words(get_preset("digits"), digits.caption(d, rng, t))
    for i in range(20):
        scene = flowers.sample_scene(i)
        for t in range(len(flowers.TEMPLATES)):
            assert not guide.unknown_words(get_preset("flowers-gan"), flowers.caption(scene, t, rng))


@pytest.mark.parametrize("preset,prompt,unknown", [
    ("shapes", "a large red circle on the left", []),
    ("shapes", "a big red circle in the center", ["big", "center"]),
    ("shapes", "a red circle | blurry:-0.5 | a blue square at the top:0.5:0.3", ["blurry"]),
    ("shapes", "A Red CIRCLE, a red circle; a hexagon and a hexagon", ["hexagon"]),
    ("digits", "the digit seven", []),
    ("digits", "a handwritten 3 | the number 42:0.5", ["42"]),
    ("digits", "a bold eleven", ["bold", "eleven"]),
    ("flowers-gan", "this flower has five pink petals and a yellow center", []),
    ("flowers-gan", "a rose with 5 pink petals and a yellow centre", ["rose", "5", "centre"]),
    ("tiny-vqgan-untrained", "anything at all", []),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None)
def test_unknown_words(preset, prompt, unknown):
    assert guide.unknown_words(get_preset(preset), prompt) == unknown


@pytest.mark.parametrize("preset", list(WORLDS))
def test_three_examples_per_world_all_known_and_captions_of_its_own(preset):
    examples = guide.examples(get_preset(preset))
    assert len(set(examples)) == 3
    assert all(not guide.unknown_words(get_preset(preset), e) for e in examples)
    world = WORLDS[preset]
    if world == "digits":
        assert all(digits.parse_digit(e) is not None for e in examples)
    elif world == "flowers":
        assert all(flowers.parse_caption(e) is not None for e in examples)
    else:
        # Captions of combinations the shapes models trained on (not the held-out ones).
        captions = {c for combo in shapes.COMBOS["train"]
                    for c in shapes.captions(shapes.Scene((shapes.Shape(*combo),), "white"))}
        assert set(examples) <= captions


def test_presets_outside_the_worlds_have_no_examples_and_say_what_they_are():
    tiny = guide.guide(get_preset("tiny-vqgan-untrained"))
    assert tiny.world is None and tiny.good_at == guide.UNTRAINED and tiny.family.startswith("guided")
    big = guide.guide(get_preset("biggan-deep-256"))
    assert big.world is None and big.good_at == "BigGAN-deep 256x256"  # the description's first clause
    assert guide.examples(get_preset("vqgan_imagenet_f16_16384")) == ()
    assert guide.guide(get_preset("digits")).family.startswith("diffusion")
    assert guide.guide(get_preset("flowers-gan")).family.startswith("GAN")


class Jobs:
    """The one store query speed() makes."""

    def __init__(self, jobs):
        self._jobs = jobs

    def jobs(self, *, status=None, submitter=None, limit=50):
        assert status == "done"
        return self._jobs[:limit]


class Job:
    def __init__(self, preset, started, finished, total, status="done"):
        self.preset, self.started_at, self.finished_at, self.total, self.status = preset, started, finished, total, status
        self.step = total


def test_speed_with_no_finished_jobs_is_none():
    assert guide.speed(Jobs([]), "shapes") is None
    assert guide.speed(Jobs([Job("digits", 1.7e9, 1.7e9 + 10, 100)]), "shapes") is None


def test_speed_is_the_median_of_the_presets_finished_jobs():
    t = 1.7e9
    jobs = Jobs([Job("shapes", t, t + 10, 50), Job("digits", t, t + 99, 100), Job("shapes", t + 5, t + 35, 50),
                 Job("shapes", t, t + 20, 100), Job("shapes", None, None, 50)])
    pace = guide.speed(jobs, "shapes")
    assert (pace.jobs, pace.per_job, pace.per_step) == (3, 20.0, 0.2)
    assert pace.describe() == "about 20 s a job (0.2 s a step; median of 3 finished jobs)"
    assert guide.speed(jobs, "shapes", window=1).jobs == 1


@pytest.mark.subprocess
def test_the_guide_is_torch_free():
    code = ("import sys; from t2i.service import guide; from t2i.presets import get_preset; "
            "[guide.guide(get_preset(p)) for p in ('shapes', 'digits', 'flowers-gan')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_preset_of_another_name_on_a_world_gets_the_worlds_guide():
    """The world comes from the preset's weights, not its name: a copy of shapes is a shapes preset."""
    copy = replace(get_preset("shapes"), name="my-shapes")
    assert guide.world_of(copy) == "shapes" and guide.examples(copy) == guide.examples(get_preset("shapes"))
