"""The built-in shapes models: trainers reduce their losses, the committed files load through the
real loaders, and the shapes preset draws what a caption asks for (judged by the procedural checker)."""

import numpy as np
import pytest
import torch

from t2i.data import checker
from t2i.engine import build_models, run
from t2i.engine.vqgan import load_taming
from t2i.paths import BUILTIN_DIR
from t2i.presets import get_preset
from t2i.spec import make_spec
from t2i.train import clip as clip_training
from t2i.train import vqgan as vqgan_training

SHAPES_DIR = BUILTIN_DIR / "shapes"
trained = pytest.mark.skipif(not (SHAPES_DIR / "shapes-vqgan.ckpt").is_file(),
                             reason="run `python -m t2i train-demo` to make the built-in weights")


def test_a_few_clip_training_steps_reduce_the_contrastive_loss():
    _, losses = clip_training.train(steps=40, batch_size=16, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


def test_a_few_vqgan_training_steps_reduce_the_reconstruction_loss(tmp_path):
    model, losses = vqgan_training.train(steps=30, batch_size=4, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    vqgan_training.save(model, tmp_path / "m.yaml", tmp_path / "m.ckpt")
    loaded = load_taming(tmp_path / "m.yaml", tmp_path / "m.ckpt")  # the taming file format, real loader
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_hard_negatives_change_exactly_one_attribute():
    import random

    from t2i.data import shapes

    rng = random.Random(0)
    for _ in range(200):
        scene = shapes.sample_scene(rng)
        negative = clip_training.hard_negative(scene, rng)
        diffs = [(a, b) for s, t in zip(scene.shapes, negative.shapes)
                 for a, b in zip(shapes.attributes(s).values(), shapes.attributes(t).values()) if a != b]
        assert len(diffs) == 1


@trained
def test_committed_shapes_models_load_and_the_clip_retrieves_held_out_images():
    models = build_models(get_preset("shapes"))
    assert models.generator.factor == 4 and models.perceptors[0].input_size == 64
    assert clip_training.retrieval_accuracy(models.perceptors[0].model, n=60) > 0.3


@trained
@pytest.mark.xfail(strict=True, reason="ShapesBench targets not met yet (colour 25% at n=20, BENCHMARKS.md): "
                                       "the committed models draw textured green blobs; flips to XPASS when fixed")
@pytest.mark.parametrize("caption,colour", [("a large red circle in the centre", "red"),
                                            ("a large blue square in the centre", "blue")])
def test_shapes_preset_draws_the_asked_colour(caption, colour):
    models = build_models(get_preset("shapes"))
    spec = make_spec(caption, "shapes", seed=0, defaults=get_preset("shapes").defaults)
    assert checker.judge(run(spec, models).image)["colour"] == colour
