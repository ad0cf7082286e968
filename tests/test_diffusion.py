"""The diffusion family: its options, its samplers and guidance, its loaders' errors (tiny real
diffusers UNets, random or briefly trained weights)."""

import io
import json
import math

import numpy as np
import pytest
import torch

from t2i.engine import Runner, run
from t2i.errors import WeightsMissing
from t2i.families.diffusion.options import DiffusionOptions
from t2i.presets import Component, get_preset
from t2i.spec import JobSpec, Limits, SpecError, make_spec

PRESET = "tiny-diffusion-untrained"


@pytest.fixture(scope="module")
def pipe(pipelines):
    return pipelines(PRESET)


def spec(prompt="a red circle", **kw):
    p = get_preset(PRESET)
    fields = dict(steps=4, seed=0, width=32, height=32)
    fields.update(kw)
    return make_spec(prompt, PRESET, family="diffusion", defaults=p.defaults, **fields)


def pixels(image):
    return np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize("field,value,message", [
    ("guidance", "nan", "guidance: must be between 0 and 30"),
    ("guidance", 31, "guidance: must be between 0 and 30"),
    ("guidance", -1, "guidance: must be between 0 and 30"),
    ("steps", 0, "steps: must be between 1 and 1000"),
    ("steps", 10**6, "steps: must be between 1 and 1000"),
    ("steps", 2.5, "steps: must be a whole number"),
    ("sampler", "euler", "sampler: must be one of ddpm, ddim, dpm++"),
    ("num_samples", 0, "num_samples: must be between 1 and 64"),
    ("num_samples", 65, "num_samples: must be between 1 and 64"),
    ("eta", 2, "eta: must be between 0 and 1"),
    ("cutn", 16, "cutn: does not apply to diffusion presets"),
    ("iterations", 100, "iterations: does not apply to diffusion presets"),
    ("width", 8, "width: must be between 16 and"),
])
def test_bad_options_are_one_line_naming_the_field(field, value, message):
    with pytest.raises(SpecError) as e:
        spec(**{field: value})
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.field == field


def test_eta_applies_to_ddim_only_and_images_do_not_apply():
    with pytest.raises(SpecError, match="eta: applies to the ddim sampler only"):
        spec(sampler="dpm++", eta=0.5)
    png = io.BytesIO()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(SpecError, match="init_image: does not apply to diffusion presets"):
        spec(init_image=png.getvalue())


def test_operator_step_cap_and_defaults_come_from_the_preset():
    s = spec(steps=None, sampler="", guidance=None)
    assert (s.options.sampler, s.options.steps, s.options.guidance, s.options.num_samples) == ("ddim", 10, 3.0, 1)
    with pytest.raises(SpecError, match="steps: must be between 1 and 50"):
        make_spec("a cat", PRESET, family="diffusion", steps=51, limits=Limits(max_iterations=50))


def test_spec_round_trips_through_its_dict_and_keys_the_batch_by_size():
    s = spec(sampler="dpm++", guidance="4.5", num_samples="9", seed=3)
    d = s.to_dict()
    assert d["family"] == "diffusion" and d["guidance"] == 4.5 and "cutn" not in d
    assert JobSpec.from_dict(json.loads(json.dumps(d))) == s
    assert s.batch_key == spec(sampler="ddpm", steps=7).batch_key == f"{PRESET}|32x32"
    assert s.batch_key != spec(width=64).batch_key
    assert s.total_steps == 4 and isinstance(s.options, DiffusionOptions)


def test_a_spec_stored_before_families_existed_reads_as_guided():
    old = {"prompt": "a cat", "preset": "tiny-vqgan-untrained", "width": 64, "height": 64, "iterations": 5,
           "cutn": 8, "lr": 0.1, "save_every": 2, "seed": 1, "init_image": None, "image_prompts": []}
    s = JobSpec.from_dict(old)
    assert s.family == "guided" and (s.options.iterations, s.options.cutn, s.options.lr) == (5, 8, 0.1)
    assert s.batch_key == "tiny-vqgan-untrained|64x64|8" and s.total_steps == 5


def test_several_samples_make_a_grid_and_each_sample_is_kept(pipe):
    result = run(spec(num_samples=5, steps=2), pipe)
    assert len(result.samples) == 5 and all(im.size == (32, 32) for im in result.samples)
    assert result.image.size == (3 * 32 + 4 * 2, 2 * 32 + 3 * 2)  # 3 columns, 2 rows, 2-pixel gaps
    assert result.frames[-1].size == result.image.size and result.losses == []
    first = pixels(result.image)[2:34, 2:34]
    np.testing.assert_array_equal(first, pixels(result.samples[0]))


def test_guidance_scale_changes_the_image(pipe):
    images = [pixels(run(spec(guidance=g), pipe).image) for g in (0, 1, 5)]
    assert np.abs(images[0] - images[1]).mean() > 0.5 and np.abs(images[1] - images[2]).mean() > 0.5


@pytest.mark.parametrize("sampler,eta,deterministic", [("ddim", 0.0, True), ("dpm++", 0.0, True),
                                                       ("ddim", 1.0, False), ("ddpm", 0.0, False)])
def test_ddim_at_eta_0_draws_nothing_after_the_start(pipe, sampler, eta, deterministic):
    """Two jobs with the same seed, one of whose generators is disturbed after the start: samplers that
    draw no noise per step give the same image, ancestral ones do not."""
    s = spec(sampler=sampler, eta=eta, steps=4)
    runner = Runner(pipe)
    runner.add("plain", s)
    runner.add("disturbed", s)
    torch.randn(100, generator=runner.slots["disturbed"].gen)
    while not runner.slots["plain"].done:
        runner.step()
    same = np.array_equal(pixels(runner.result("plain").image), pixels(runner.result("disturbed").image))
    assert same == deterministic


def test_negative_parts_replace_the_unconditional_branch(pipe):
    plain = pixels(run(spec("a red circle"), pipe).image)
    negative = pixels(run(spec("a red circle | blurry:-1"), pipe).image)
    assert np.abs(plain - negative).mean() > 0.5


def test_a_unet_folder_with_missing_keys_is_one_line_naming_it(tmp_path, pipe):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "unet"
    pipe.unet.save_pretrained(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state[next(iter(state))]
    save_file(state, weights)
    from t2i.families.diffusion.components import build_component

    with pytest.raises(WeightsMissing) as e:
        build_component("unet", Component("diffusers-unet", {}, str(folder)), "python -m t2i train-demo")
    assert str(folder) in str(e.value) and "\n" not in str(e.value) and "train-demo" in str(e.value)

    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(WeightsMissing, match="does not load as a diffusers UNet"):
        build_component("unet", Component("diffusers-unet", {}, str(folder)), "hint")
    with pytest.raises(WeightsMissing, match="missing"):
        build_component("unet", Component("diffusers-unet", {}, str(tmp_path / "nowhere")), "hint")


def test_a_unet_saved_by_save_pretrained_loads_back_identically(tmp_path, pipe):
    from t2i.families.diffusion.components import build_component

    pipe.unet.save_pretrained(tmp_path / "unet")
    loaded = build_component("unet", Component("diffusers-unet", {}, str(tmp_path / "unet")), "hint")
    for (k, a), b in zip(pipe.unet.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_unknown_component_targets_are_refused_by_name():
    from t2i.families.diffusion.components import build_component

    with pytest.raises(ValueError, match="components.text: unknown target 'os.system'"):
        build_component("text", Component("os.system"), "hint")


def test_describe_names_the_load(pipe):
    assert pipe.describe(spec(steps=50, guidance=3, num_samples=4)) == "32x32, 50 DDIM steps, CFG 3, 4 samples"
    assert pipe.describe(spec(steps=20, guidance=1, sampler="dpm++")) == "32x32, 20 DPM++ steps"
    assert math.isfinite(get_preset(PRESET).defaults["guidance"])


@pytest.mark.trains
def test_a_tiny_model_trained_on_two_images_draws_the_prompted_one():
    """A tiny real UNet trained for 150 steps (the shared objective, condition dropout included) on a
    rendered 1 and a rendered 8, conditioned by the committed digits CLIP's text tower: sampled
    through the pipeline with guidance, "one" comes out nearer the 1 and "eight" nearer the 8, each more so
    than unconditional samples are."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from t2i.data import digits
    from t2i.engine.charclip import CharClipText, load_char_clip
    from t2i.families.diffusion.components import PixelCodec
    from t2i.families.diffusion.pipeline import DiffusionPipeline
    from t2i.paths import CONFIG_DIR, resolve_weights_file
    from t2i.train.denoiser import denoiser_loss

    text = CharClipText(load_char_clip(resolve_weights_file("builtin:digits/digits-clip.pt")))
    config = json.loads((CONFIG_DIR / "models" / "tiny-unet.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config({**config, "in_channels": 1, "out_channels": 1})
    preset = get_preset(PRESET)
    scheduler = DDPMScheduler.from_config(preset.scheduler)
    rng = np.random.default_rng(0)
    renders = {"one": digits.render(1, rng), "eight": digits.render(8, rng)}
    # at 16x16 (pooled), 150 steps take a few seconds
    images = {w: torch.nn.functional.avg_pool2d(torch.tensor(im).float().div(127.5).sub(1)[None, None], 2)
              for w, im in renders.items()}
    states = {w: text.encode([w]) for w in images}
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.cat([images["one"]] * 4 + [images["eight"]] * 4)
    cond = torch.cat([states["one"]] * 4 + [states["eight"]] * 4)
    for _ in range(150):
        loss = denoiser_loss(unet, scheduler, x0, cond, text.null(8), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pipe = DiffusionPipeline(preset, unet.eval().requires_grad_(False), text, PixelCodec(1), dict(preset.scheduler),
                             torch.device("cpu"))

    def distances(prompt, guidance):
        result = run(make_spec(prompt, PRESET, family="diffusion", width=16, height=16, steps=10, guidance=guidance,
                               seed=1, num_samples=4), pipe)
        x = torch.tensor(np.stack([np.asarray(im.convert("L"), np.float32) for im in result.samples]))[:, None]
        x = x / 127.5 - 1
        return {w: float((x - im).pow(2).mean()) for w, im in images.items()}

    unconditional = distances("one", 0)
    for prompt, other in (("one", "eight"), ("eight", "one")):
        guided = distances(prompt, 3)
        assert guided[prompt] < guided[other] - 0.03, (prompt, guided)
        # ...and nearer its image, relative to the other, than the unconditional samples are
        margin, before = guided[other] - guided[prompt], unconditional[other] - unconditional[prompt]
        assert margin > before + 0.03, (prompt, guided, unconditional)
