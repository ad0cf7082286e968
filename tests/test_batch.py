"""Batches of guided jobs: compatibility, precision, step counts (batch invariance for every family is
in test_families.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.engine import run
from t2i.engine import Runner
from t2i.presets import get_preset
from t2i.spec import make_spec


def spec(prompt, seed, preset="tiny-vqgan-untrained", **kw):
    fields = dict(iterations=12, cutn=8, save_every=4, seed=seed)
    fields.update(kw)
    return make_spec(prompt, preset, defaults=get_preset(preset).defaults, **fields)


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
