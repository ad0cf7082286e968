"""Batches: a job's result must not depend on its batch-mates (beyond floating-point noise)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.engine import run
from t2i.families import build_pipeline
from t2i.engine import Runner
from t2i.presets import get_preset
from t2i.spec import make_spec


def spec(prompt, seed, preset="tiny-vqgan-untrained", **kw):
    fields = dict(iterations=12, cutn=8, save_every=4, seed=seed)
    fields.update(kw)
    return make_spec(prompt, preset, defaults=get_preset(preset).defaults, **fields)


def png(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def pixels(image):
    return np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize("preset", ["tiny-vqgan-untrained", "tiny-biggan-untrained", "tiny-ensemble-untrained"])
def test_a_job_alone_and_inside_a_changing_batch_gives_the_same_image(preset):
    models = build_pipeline(get_preset(preset))
    target = spec("a red circle", 7, preset)
    alone = run(target, models)

    init = Image.new("RGB", (64, 64), (0, 0, 200))
    batch = Runner(models)
    batch.add("early", spec("a blue square", 1, preset, iterations=5))
    batch.add("target", target)
    joined = False
    while not batch.slots["target"].done:
        steps = batch.step()
        if "early" in batch.slots and batch.slots["early"].done:
            batch.remove("early")  # a finished job leaves between steps...
        if steps["target"].step == 3 and not joined:
            extra = {} if preset == "tiny-biggan-untrained" else {"init_image": png(init)}
            batch.add("late", spec("a green triangle", 3, preset, **extra))  # ...and a queued one joins
            joined = True
    together = batch.result("target")

    assert len(batch) == 2 and joined
    assert together.seed == alone.seed == 7
    np.testing.assert_allclose(together.losses, alone.losses, rtol=1e-4, atol=1e-5)
    assert np.abs(pixels(together.image) - pixels(alone.image)).mean() < 0.5  # of 255
    assert together.frame_steps == alone.frame_steps


def test_batch_accepts_only_compatible_jobs(tiny_models):
    batch = Runner(tiny_models)
    batch.add(1, spec("a", 1))
    assert batch.accepts(spec("b", 2)) and not batch.accepts(spec("c", 3, width=128))
    with pytest.raises(ValueError, match="does not fit this batch"):
        batch.add(2, spec("c", 3, cutn=4))
    assert spec("a", 1).batch_key == "tiny-vqgan-untrained|64x64|8"
    batch.remove(1)
    assert batch.accepts(spec("c", 3, width=128))  # an empty batch takes any job


def test_bf16_runs_and_stays_close_to_fp32(tiny_models):
    s = spec("a red circle", 5, iterations=6)
    full = run(s, tiny_models, precision="fp32")
    half = run(s, tiny_models, precision="bf16")
    assert all(np.isfinite(half.losses))
    assert abs(half.losses[0] - full.losses[0]) < 0.05
    with pytest.raises(ValueError, match="precision must be one of"):
        run(s, tiny_models, precision="fp8")


def test_every_job_in_a_batch_steps_once_per_batch_step(tiny_models):
    batch = Runner(tiny_models)
    for i in range(4):
        batch.add(i, spec(f"job {i}", i, iterations=3 + i))
    counts = {i: 0 for i in range(4)}
    while any(not s.done for s in batch.slots.values()):
        for name, step in batch.step().items():
            counts[name] += 1
            assert step.step == counts[name]
    assert counts == {0: 3, 1: 4, 2: 5, 3: 6}
    assert all(isinstance(batch.result(i).image, Image.Image) for i in range(4))
    assert torch.is_grad_enabled()
