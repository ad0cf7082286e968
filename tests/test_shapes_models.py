"""The built-in shapes models: trainers reduce their losses, the committed files load through the
real loaders, and the shapes preset draws what a caption asks for (judged by the procedural checker)."""

import numpy as np
import pytest
import torch

from t2i.data import checker
from t2i.engine import run
from t2i.engine.vqgan import load_taming
from t2i.paths import BUILTIN_DIR
from t2i.presets import get_preset
from t2i.spec import make_spec
from t2i.train import clip as clip_training
from t2i.train import vqgan as vqgan_training

SHAPES_DIR = BUILTIN_DIR / "shapes"
trained = pytest.mark.skipif(not (SHAPES_DIR / "shapes-vqgan.ckpt").is_file(),
                             reason="run `python -m t2i train-demo` to make the built-in weights")


@pytest.mark.trains
def test_a_few_clip_training_steps_reduce_the_contrastive_loss():
    _, losses = clip_training.train(steps=40, batch_size=16, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


@pytest.mark.trains
def test_a_few_vqgan_training_steps_reduce_the_reconstruction_loss(tmp_path):
    # Images differ a lot in how much shape they hold, so compare means over ten steps.
    model, losses = vqgan_training.train(steps=60, batch_size=8, progress=False)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    vqgan_training.save(model, tmp_path / "m.yaml", tmp_path / "m.ckpt")
    loaded = load_taming(tmp_path / "m.yaml", tmp_path / "m.ckpt")  # the taming file format, real loader
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_clutter_paints_over_part_of_an_image_and_is_seeded():
    x = torch.full((4, 3, 64, 64), 0.5)
    a = clip_training.clutter(x, torch.Generator().manual_seed(1))
    b = clip_training.clutter(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    changed = (a != x).any(dim=1).float().mean(dim=(1, 2))  # per image, fraction of pixels painted
    assert ((changed > 0.02) & (changed < 0.9)).all()


def test_vqgan_training_weights_the_foreground():
    import random

    from t2i.train import losses

    full = vqgan_training.images(random.Random(0), 6)
    w = losses.foreground_weights(full)
    assert w.min() == 1 and w.max() == losses.FOREGROUND_WEIGHT
    # Every render has a shape (a few percent of its pixels) and mostly background.
    share = (w > 1).float().mean(dim=(1, 2, 3))
    assert ((share > 0.01) & (share < 0.5)).all()


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
def test_committed_shapes_models_load_and_the_clip_retrieves_held_out_images(pipelines):
    models = pipelines("shapes")
    assert models.generator.factor == 4 and models.perceptors[0].input_size == 64
    clip = models.perceptors[0].model
    assert clip_training.retrieval_accuracy(clip) > 0.5
    attributes = clip_training.attribute_accuracy(clip)
    assert min(attributes["colour"], attributes["position"], attributes["size"]) > 0.9
    assert attributes["shape"] > 0.6


@trained
def test_the_committed_sketch_net_draws_held_out_captions(pipelines):
    """Its own drawings of captions it never saw, judged by the checker: what guidance starts from."""
    from t2i.train import sketch as sketch_training

    models = pipelines("shapes")
    accuracy = sketch_training.heldout_accuracy(models.sketch, models.perceptors[0].model, n=36)
    assert min(accuracy["colour"], accuracy["position"], accuracy["size"]) >= 0.9, accuracy
    assert accuracy["shape"] >= 0.5, accuracy


@pytest.mark.slow
@trained
@pytest.mark.parametrize("caption,colour", [("a large red circle in the centre", "red"),
                                            ("a large blue square in the centre", "blue")])
def test_shapes_preset_draws_the_asked_colour(pipelines, caption, colour):
    models = pipelines("shapes")
    spec = make_spec(caption, "shapes", seed=0, defaults=get_preset("shapes").defaults)
    assert checker.judge(run(spec, models).image)["colour"] == colour


@trained
def test_shapesbench_reports_what_the_checker_said_of_each_image():
    from t2i.bench.shapes import ATTRIBUTES, report, shapesbench

    result = shapesbench("shapes", n=3, iterations=2, progress=False)
    assert result["n"] == 3 and len(result["examples"]) == 3
    for attribute in ATTRIBUTES:
        right = sum(verdict[attribute] for _, _, verdict in result["examples"])
        assert result["accuracy"][attribute] == right / 3
    assert set(result["clip_attributes"]) == set(clip_training.ATTRIBUTES)
    lines = report(result)
    assert any("retrieval" in line for line in lines) and any("zero-shot" in line for line in lines)
    assert set(result["sketch"]) == set(ATTRIBUTES) and any("sketches" in line for line in lines)


def test_shapesbench_writes_its_first_images_as_the_readmes_sheet(tmp_path):
    from PIL import Image

    from t2i.cli import main

    assert main(["shapesbench", "--n", "3", "--iterations", "1", "--quiet", "--sheet", str(tmp_path / "s.png")]) == 0
    sheet = Image.open(tmp_path / "s.png")
    assert sheet.size[0] > 64 and sheet.size[1] >= 64  # three 64x64 images in the families' grid
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 3 and all(line.endswith(")") and ("(right)" in line or "(wrong: " in line) for line in lines)


@trained
def test_shapesbench_tabulates_the_asked_shape_against_the_drawn_one():
    from t2i.bench.shapes import report, shapesbench
    from t2i.data.shapes import SHAPES

    result = shapesbench("shapes", n=4, iterations=2, progress=False)
    table = result["confusion"]
    assert set(table) == set(SHAPES) and all(set(row) == {*SHAPES, "none"} for row in table.values())
    assert sum(sum(row.values()) for row in table.values()) == 4
    # The diagonal is exactly the captions whose shape the checker found.
    assert sum(table[s][s] for s in SHAPES) == sum(verdict["shape"] for _, _, verdict in result["examples"])
    for s in SHAPES:
        assert sum(table[s].values()) == result["asked"].count(s)
    # The sketches' own table is over the same captions, and the report prints both.
    assert sum(sum(row.values()) for row in result["sketch_confusion"].values()) == 4
    lines = report(result)
    assert sum(line.startswith("| asked \\ drawn | circle | square | triangle | none |") for line in lines) == 2
    assert any(line.startswith("shape, sketch -> result: right -> right") for line in lines)


def test_the_confusion_table_counts_each_pair_in_its_cell():
    from t2i.bench.shapes import confusion, confusion_lines

    table = confusion(["circle", "circle", "square", "triangle"], ["circle", "square", "none", "triangle"])
    assert table["circle"] == {"circle": 1, "square": 1, "triangle": 0, "none": 0}
    assert table["square"] == {"circle": 0, "square": 0, "triangle": 0, "none": 1}
    assert table["triangle"]["triangle"] == 1
    lines = confusion_lines(table)
    assert lines[2] == "| circle | 1 | 1 | 0 | 0 | 1/2 |" and lines[3] == "| square | 0 | 0 | 0 | 1 | 0/1 |"



def test_the_trainers_schedule_works_for_every_step_count():
    """torch's OneCycleLR divides by zero when its warm-up is exactly one step: `train-demo
    --clip-steps 10` once crashed after the other models' minutes of training."""
    from t2i.train.schedule import one_cycle

    for steps in range(1, 41):
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        schedule = one_cycle(opt, 0.01, steps)
        rates = []
        for _ in range(steps):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        assert all(0 < r <= 0.01 + 1e-12 for r in rates), steps
