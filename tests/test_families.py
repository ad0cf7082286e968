"""The contract every family keeps, checked on every tiny preset of every family (real classes,
random weights): batch invariance, determinism, frame cadence, cancel, out-of-memory, used size."""

import io
import math

import numpy as np
import pytest
import torch

from t2i.engine import Runner, run, run_batches
from t2i.errors import Cancelled, OutOfMemory
from t2i.families import FAMILIES, family, option_names
from t2i.presets import all_presets, get_preset
from t2i.spec import make_spec

TINY = [name for name, p in all_presets().items() if p.untrained]
STEPS = 6
# `pipelines` (conftest.py): each tiny preset built once per session.


def spec(name, prompt, seed, steps=STEPS, **kw):
    p = get_preset(name)
    fields = {family(p.family).steps_field: steps, "save_every": 2, "seed": seed}
    if "cutn" in option_names(p.family):
        fields["cutn"] = 4
    fields.update(kw)
    return make_spec(prompt, name, family=p.family, defaults=p.defaults, **fields)


def pixels(image):
    return np.asarray(image, dtype=np.float32)


def png(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_every_family_has_a_tiny_preset():
    assert {get_preset(n).family for n in TINY} == set(FAMILIES) == {"guided", "diffusion", "glide", "gan"}


@pytest.mark.parametrize("name", TINY)
def test_a_job_alone_equals_the_job_inside_a_batch_whose_members_come_and_go(pipelines, name):
    pipe = pipelines(name)
    target = spec(name, "a red circle", 7)
    alone = run(target, pipe)

    runner = Runner(pipe)
    runner.add("early", spec(name, "a blue square", 1, steps=2))
    runner.add("target", target)
    joined = False
    while not runner.slots["target"].done:
        steps = runner.step()
        if "early" in runner.slots and runner.slots["early"].done:
            runner.remove("early")  # a finished job leaves between steps...
        if steps["target"].step == 3 and not joined:
            runner.add("late", spec(name, "a green triangle", 3))  # ...and a queued one joins
            joined = True
    together = runner.result("target")

    assert joined and set(runner.slots) == {"target", "late"}
    assert together.seed == alone.seed == 7 and together.frame_steps == alone.frame_steps
    assert np.abs(pixels(together.image) - pixels(alone.image)).mean() < 0.5  # of 255
    np.testing.assert_allclose(together.losses, alone.losses, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_same_seed_same_bytes_and_another_seed_differs(pipelines, name):
    pipe = pipelines(name)
    a, b, c = (run(spec(name, "a red circle", seed, steps=3), pipe) for seed in (42, 42, 43))
    assert png(a.image) == png(b.image) and [png(f) for f in a.frames] == [png(f) for f in b.frames]
    assert a.losses == b.losses
    assert png(a.image) != png(c.image)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("steps,save_every", [(5, 2), (4, 10)])
def test_frames_every_k_steps_plus_the_final_one(pipelines, name, steps, save_every):
    seen = []
    job = spec(name, "a cat", 0, steps=steps, save_every=save_every)
    result = run(job, pipelines(name), on_step=seen.append)
    # Steps of a later stage (GLIDE's upsampler) count too.
    steps = job.total_steps
    assert result.frame_steps == [*range(0, steps, save_every), steps]
    assert len(result.frames) == math.ceil(steps / save_every) + 1
    assert [s.step for s in seen] == list(range(1, steps + 1)) and all(s.total == steps for s in seen)
    assert [s.frame_step for s in seen if s.frame is not None] == result.frame_steps[:-1]
    assert all(f.size == result.image.size for f in result.frames)


@pytest.mark.parametrize("name", TINY)
def test_cancel_between_steps(pipelines, name):
    seen = []

    def on_step(step):
        seen.append(step.step)
        return step.step == 3

    job = spec(name, "a cat", 0)
    with pytest.raises(Cancelled, match=f"after 3 of {job.total_steps} steps"):
        run(job, pipelines(name), on_step)
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("name", TINY)
def test_out_of_memory_becomes_one_line_naming_the_load(pipelines, name, monkeypatch):
    pipe = pipelines(name)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(pipe), "step", exhausted)
    s = spec(name, "a cat", 0)
    for runner in (run, lambda sp, p: list(run_batches([sp, sp], p))):
        with pytest.raises(OutOfMemory) as e:
            runner(s, pipe)
        message = str(e.value)
        assert message == f"out of CPU memory at {pipe.describe(s)}: lower {s.options.LIGHTER}"
        assert "\n" not in message and f"{pipe.used_size(s)[0]}x{pipe.used_size(s)[1]}" in message


@pytest.mark.parametrize("name", TINY)
def test_the_used_size_is_reported(pipelines, name):
    pipe = pipelines(name)
    s = spec(name, "a cat", 0, steps=1, width=70, height=66)
    result = run(s, pipe)
    assert (result.width, result.height) == pipe.used_size(s)
    assert result.image.size == (result.width, result.height)
    assert result.width <= 70 and result.height <= 66
