"""The captioned shapes world (t2i.data.shapes) and its procedural checker (t2i.data.checker)."""

import random
import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from t2i.data.checker import judge, score
from t2i.data.shapes import (
    ALL_COMBOS,
    BACKGROUNDS,
    COLOURS,
    COMBOS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    Shape,
    attributes,
    batch,
    captions,
    heldout_captions,
    render,
    sample_scene,
    split_of,
    without_jitter,
)

ATTRS = ("shape", "colour", "position", "size")
NOISY_MIN_ACCURACY = 0.98  # per attribute, Gaussian noise sigma 10/255 then a 1-px Gaussian blur


def words(text):
    return re.findall(r"[a-z]+", text.lower())


def every_scene():
    """Every single-shape combination on every background (240 x 3), no jitter."""
    return [Scene((Shape(*combo),), bg) for combo in ALL_COMBOS for bg in BACKGROUNDS]


@pytest.fixture(scope="module")
def renders():
    return [(scene, render(scene)) for scene in every_scene()]


def degrade(img, rng):
    a = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 10.0, (*img.size[::-1], 3))
    noisy = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    return noisy.filter(ImageFilter.GaussianBlur(1))


# --------------------------------------------------------------------------- data


def test_batch_is_deterministic_per_seed():
    a_img, a_txt = batch(random.Random(3), 16)
    b_img, b_txt = batch(random.Random(3), 16)
    c_img, c_txt = batch(random.Random(4), 16)
    assert a_img.shape == (16, 64, 64, 3) and a_img.dtype == np.uint8
    assert len(a_txt) == 16 and all(isinstance(t, str) and t for t in a_txt)
    assert np.array_equal(a_img, b_img) and a_txt == b_txt
    assert not np.array_equal(a_img, c_img) and a_txt != c_txt


def test_a_batch_without_jitter_draws_the_same_captions_with_every_shape_at_its_anchor():
    jittered, texts = batch(random.Random(3), 16)
    anchored, same = batch(random.Random(3), 16, jitter=False)
    assert same == texts and not np.array_equal(jittered, anchored)
    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(4)]
    assert any(s.dx or s.dy for scene in scenes for s in scene.shapes)
    for scene in scenes:
        plain = without_jitter(scene)
        assert all(s.dx == s.dy == 0 for s in plain.shapes) and plain.background == scene.background
        assert [s.combo for s in plain.shapes] == [s.combo for s in scene.shapes]


def test_render_is_deterministic_sized_and_pure_inside():
    scene = Scene((Shape("circle", "red", "centre", "large"),), "white")
    a, b = np.asarray(render(scene)), np.asarray(render(scene))
    assert np.array_equal(a, b)
    assert render(scene, size=32).size == (32, 32) and render(scene).mode == "RGB"
    assert tuple(a[32, 32]) == COLOURS["red"] and tuple(a[1, 1]) == BACKGROUNDS["white"]


def test_vocabularies_are_distinct_and_backgrounds_far_from_colours():
    for bg in BACKGROUNDS.values():
        for c in COLOURS.values():
            assert np.linalg.norm(np.subtract(bg, c, dtype=float)) > 100
    assert not set(BACKGROUNDS) & set(COLOURS)
    vocab = [*SHAPES, *COLOURS, *POSITIONS, *SIZES]
    assert len(vocab) == len(set(vocab))


def test_captions_name_every_attribute_of_every_shape():
    rng = random.Random(0)
    two = 0
    for _ in range(300):
        scene = sample_scene(rng)
        positions = [s.position for s in scene.shapes]
        assert len(set(positions)) == len(positions)
        two += len(scene.shapes) == 2
        caps = captions(scene)
        assert len(caps) >= 4 and len(set(caps)) == len(caps)
        assert any(scene.background in words(c) for c in caps)
        for cap in caps:
            w = words(cap)
            for s in scene.shapes:
                assert {s.colour, s.shape, s.size, s.position} <= set(w), (cap, s)
            if len(scene.shapes) == 2:
                assert " and " in cap
            else:  # a single-shape caption names nothing else from the vocabularies
                assert {x for x in w if x in COLOURS} == {scene.shapes[0].colour}
                assert {x for x in w if x in SHAPES} == {scene.shapes[0].shape}
                assert {x for x in w if x in SIZES} == {scene.shapes[0].size}
                assert {x for x in w if x in POSITIONS} == {scene.shapes[0].position}
    assert 100 < two < 200  # both kinds of scene are drawn


def test_two_shape_scenes_draw_both_shapes_apart_and_inside_the_image():
    rng = random.Random(2)
    pairs = [sc for sc in (sample_scene(rng) for _ in range(200)) if len(sc.shapes) == 2]
    assert len(pairs) > 50
    for scene in pairs:
        a, b = (s.box() for s in scene.shapes)
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]  # boxes disjoint
        img = np.asarray(render(scene))
        for s in scene.shapes:
            x0, y0, x1, y1 = s.box()
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            centre = img[int((y0 + y1) / 2 * 64), int((x0 + x1) / 2 * 64)]
            assert tuple(centre) == COLOURS[s.colour]


def test_scene_rejects_shared_positions():
    with pytest.raises(ValueError):
        Scene((Shape("circle", "red", "left", "small"), Shape("square", "blue", "left", "small")), "white")


# --------------------------------------------------------------------------- split


def test_heldout_split_is_about_15_percent_and_covers_all_values_in_train():
    held = COMBOS["heldout"]
    assert 0.10 <= len(held) / len(ALL_COMBOS) <= 0.20
    assert set(held) | set(COMBOS["train"]) == set(ALL_COMBOS) and not set(held) & set(COMBOS["train"])
    for i, values in enumerate((SHAPES, COLOURS, POSITIONS, SIZES)):
        assert {c[i] for c in COMBOS["train"]} == set(values)
    assert all(split_of(Shape(*c)) == "heldout" for c in held)
    assert split_of(Shape(*held[0], dx=0.01)) == "heldout"  # jitter does not change the split


def test_train_scenes_never_use_heldout_combinations():
    rng = random.Random(1)
    held = set(COMBOS["heldout"])
    for _ in range(2000):
        for s in sample_scene(rng).shapes:
            assert s.combo not in held
    scenes = [sample_scene(rng, split="heldout") for _ in range(50)]
    assert all(len(sc.shapes) == 1 and sc.shapes[0].combo in held for sc in scenes)


def test_heldout_captions_are_heldout_canonical_and_deterministic():
    pairs = heldout_captions(60, seed=0)
    assert pairs == heldout_captions(60, seed=0) and pairs != heldout_captions(60, seed=1)
    assert len(pairs) == 60
    assert {sc.shapes[0].combo for sc, _ in pairs} == set(COMBOS["heldout"])  # 60 >= 36: all of them
    for scene, cap in pairs:
        (s,) = scene.shapes
        assert split_of(s) == "heldout"
        assert cap.startswith(f"a {s.size} {s.colour} {s.shape} ")
        assert cap.endswith(f" on a {scene.background} background")
        assert s.position in words(cap)


# --------------------------------------------------------------------------- checker


def test_checker_is_exact_on_every_clean_render(renders):
    failures = [
        (scene, judged)
        for scene, img in renders
        if (judged := judge(img)) != attributes(scene.shapes[0])
    ]
    assert failures == []  # 100% of 720 (240 combinations x 3 backgrounds)


def test_checker_survives_noise_and_blur(renders):
    rng = np.random.default_rng(0)
    correct = dict.fromkeys(ATTRS, 0)
    for scene, img in renders:
        for k, ok in score(degrade(img, rng), scene.shapes[0]).items():
            correct[k] += ok
    accuracy = {k: v / len(renders) for k, v in correct.items()}
    assert all(a >= NOISY_MIN_ACCURACY for a in accuracy.values()), accuracy


def test_checker_reports_none_without_a_shape():
    for bg in BACKGROUNDS:
        assert set(judge(render(Scene((Shape("circle", "red", "left", "small"),), bg)))) == set(ATTRS)
        blank = Image.new("RGB", (64, 64), BACKGROUNDS[bg])
        assert judge(blank) == dict.fromkeys(ATTRS, "none")
    scored = score(Image.new("RGB", (64, 64), (0, 0, 0)), Shape("circle", "red", "left", "small"))
    assert scored == dict.fromkeys(ATTRS, False)


def test_checker_tells_wrong_attributes():
    scene = Scene((Shape("triangle", "blue", "top", "small"),), "grey")
    assert score(render(scene), Shape("circle", "orange", "bottom", "large")) == dict.fromkeys(ATTRS, False)


def test_captions_agree_with_the_checker_on_sampled_scenes():
    """Jittered train scenes: the words of a random caption are what the checker sees drawn."""
    rng = random.Random(5)
    for _ in range(150):
        scene = sample_scene(rng, max_shapes=1)
        cap = rng.choice(captions(scene))
        w = words(cap)
        named = {
            "colour": next(x for x in w if x in COLOURS),
            "shape": next(x for x in w if x in SHAPES),
            "size": next(x for x in w if x in SIZES),
            "position": next(x for x in w if x in POSITIONS),
        }
        assert judge(render(scene)) == named, (cap, scene)
