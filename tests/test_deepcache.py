"""Step caching (t2i/families/diffusion/deepcache.py) on the real diffusers UNet classes at tiny sizes:
the full path is the plain UNet, the shallow path is the UNet's own shallow branch, interval 1 is no
caching, caching skips what it says, and a cached job keeps its own state while others come and go."""

import numpy as np
import pytest
import torch

from t2i.engine import Runner, run
from t2i.families.diffusion import deepcache
from t2i.output.infotext import parse_infotext, to_infotext
from t2i.output.render import parameters
from t2i.presets import get_preset
from t2i.spec import SpecError, make_spec

# The diffusers-UNet tiny presets: pixel space, over a VQGAN's latents, and the LDM release's classes
# (cross-attention in the first down block and the last up block, so the shallow path's attention runs).
PRESETS = ["tiny-diffusion-untrained", "tiny-ldm-untrained", "tiny-ldm-text2im-untrained"]


def spec(name, seed=7, steps=7, prompt="a red circle", **kw):
    p = get_preset(name)
    return make_spec(prompt, name, family=p.family, defaults=p.defaults, steps=steps, seed=seed, save_every=2, **kw)


def pixels(image):
    return np.asarray(image, dtype=np.float32)


def unet_inputs(unet, rows=3):
    c = unet.config
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, c.in_channels, c.sample_size, c.sample_size, generator=gen)
    t = torch.tensor([999, 500, 20][:rows])
    states = torch.randn(rows, 5, c.cross_attention_dim, generator=gen)
    return x, t, states


@pytest.mark.parametrize("name", PRESETS)
def test_the_full_path_is_the_plain_unet_and_the_shallow_path_its_own_shallow_branch(pipelines, name):
    unet = pipelines(name).unet
    assert deepcache.unsupported(unet) is None
    x, t, states = unet_inputs(unet)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=states).sample
        out, deep = deepcache.full(unet, x, t, states)
        # Fed the deep features of the same input, the shallow branch must give the whole UNet's output:
        # it is the same computation, not an approximation of it.
        again = deepcache.shallow(unet, x, t, states, deep)
        # ...and with features of another input it is a different one (the kept features are used).
        stale = deepcache.shallow(unet, x, t, states, deep.roll(1, 0))
    assert torch.equal(out, plain) and torch.equal(again, plain)
    assert not torch.allclose(stale, plain)
    assert unet.down_blocks[0].downsamplers is None or len(unet.down_blocks[0].downsamplers) == 1  # put back


@pytest.mark.parametrize("name", PRESETS)
def test_interval_1_is_the_uncached_job_byte_for_byte_and_interval_3_runs_a_third_of_the_deep_unet(pipelines, name):
    pipe = pipelines(name)
    calls = {"deep": 0, "shallow": 0}
    hooks = [pipe.unet.up_blocks[-2].register_forward_hook(lambda *a: calls.__setitem__("deep", calls["deep"] + 1)),
             pipe.unet.up_blocks[-1].register_forward_hook(lambda *a: calls.__setitem__("shallow", calls["shallow"] + 1))]
    try:
        off, one = run(spec(name, cache=0), pipe), run(spec(name, cache=1), pipe)
        assert calls == {"deep": 14, "shallow": 14}
        three = run(spec(name, cache=3), pipe)
    finally:
        for h in hooks:
            h.remove()
    assert np.array_equal(pixels(one.image), pixels(off.image))
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(one.frames, off.frames))
    # 7 steps at interval 3: full at steps 0, 3 and 6; the last up block runs on every step.
    assert calls == {"deep": 14 + 3, "shallow": 14 + 7}
    assert not np.array_equal(pixels(three.image), pixels(off.image))


@pytest.mark.parametrize("name", PRESETS)
def test_a_cached_job_keeps_its_own_state_while_rows_join_and_leave(pipelines, name):
    """The target's full steps are its own 0, 3, 6, whatever phase its batch-mates are at: a job with
    another interval leaves after 2 steps, one without caching joins at step 2 (a mixed batch: full and
    shallow rows in one step), and one cached at 2 joins at step 4."""
    pipe = pipelines(name)
    target = spec(name, cache=3)
    alone = run(target, pipe)
    runner = Runner(pipe)
    runner.add("early", spec(name, seed=1, steps=2, prompt="a blue square", cache=4))
    runner.add("target", target)
    while not runner.slots["target"].done:
        steps = runner.step()
        if "early" in runner.slots and runner.slots["early"].done:
            runner.remove("early")
        if steps["target"].step == 2:
            runner.add("plain", spec(name, seed=3, prompt="a green triangle", cache=0))
        if steps["target"].step == 4:
            runner.add("late", spec(name, seed=5, prompt="a yellow star", cache=2))
    together = runner.result("target")
    assert set(runner.slots) == {"target", "plain", "late"}
    assert runner.slots["target"].state.since_full == 1  # its last step (6) was full
    assert np.abs(pixels(together.image) - pixels(alone.image)).mean() < 0.5  # of 255: float noise only
    # The job that joined uncached keeps no features; the cached late one has its own rows.
    assert runner.slots["plain"].state.deep is None
    late = runner.slots["late"].state
    assert late.deep is not None and len(late.deep) == 2 * len(late.x)  # cond and uncond rows


@pytest.mark.parametrize("value,message", [
    (-1, "cache: must be between 0 and 10, got -1"),
    (11, "cache: must be between 0 and 10, got 11"),
    (2.5, "cache: must be a whole number"),
    ("often", "cache: must be a whole number, got 'often'"),
])
def test_bad_cache_values_are_one_line_naming_the_field(value, message):
    with pytest.raises(SpecError) as e:
        spec("tiny-diffusion-untrained", cache=value)
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.field == "cache"


def test_glide_refuses_caching_in_one_line_and_its_form_does_not_offer_it():
    from t2i.families import options_class

    with pytest.raises(SpecError) as e:
        spec("tiny-glide-untrained", cache=3)
    assert "cache: step caching is not available for GLIDE presets" in str(e.value) and "\n" not in str(e.value)
    assert spec("tiny-glide-untrained", cache=0).options.cache == 0
    assert "cache" not in [f.name for f in options_class("glide").FORM]
    assert "cache" in [f.name for f in options_class("diffusion").FORM]


def test_a_result_records_its_cache_interval_in_the_infotext_and_describe(pipelines):
    s = spec("tiny-diffusion-untrained", cache=3)
    text = to_infotext(parameters(s, run(s, pipelines("tiny-diffusion-untrained")), get_preset(s.preset)))
    assert "cache: 3" in text and parse_infotext(text)["cache"] == 3
    assert "cache 3" in pipelines("tiny-diffusion-untrained").describe(s)
    assert "cache" not in pipelines("tiny-diffusion-untrained").describe(spec("tiny-diffusion-untrained", cache=1))


def test_the_preset_default_applies_and_a_job_may_turn_it_off():
    p = get_preset("tiny-diffusion-untrained")
    defaults = {**p.defaults, "cache": 4}
    assert make_spec("a red circle", p.name, family=p.family, defaults=defaults).options.cache == 4
    assert make_spec("a red circle", p.name, family=p.family, defaults=defaults, cache=0).options.cache == 0


def test_the_cli_takes_cache_and_the_png_records_it(tmp_path, capsys):
    from PIL import Image

    from t2i.cli import main

    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--preset", "tiny-diffusion-untrained", "--steps", "4", "--cache", "3",
                 "--seed", "1", "--out", str(out), "--quiet"]) == 0
    (png,) = [p for p in out.glob("*.png")]
    text = Image.open(png).text["parameters"]
    assert parse_infotext(text)["cache"] == 3
    capsys.readouterr()
    assert main(["generate", "a red circle", "--preset", "tiny-diffusion-untrained", "--cache", "11",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cache: must be between 0 and 10, got 11" in err[0]
