"""The ldm-text2im-large-256 preset (CompVis LDM txt2img-f8-large) on tiny components of its real
classes (UNet2DConditionModel, LDMBert + BertTokenizer, AutoencoderKL), written in the release's folder
layout (bert/, tokenizer/, unet/, vqvae/, scheduler/) and loaded through the preset's own loaders: our
loop against diffusers' LDMTextToImagePipeline, batch invariance, bad input, broken folders. No downloads."""

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from t2i.engine import Runner, run
from t2i.errors import WeightsMissing
from t2i.families import build_pipeline
from t2i.families.diffusion.components import build_component
from t2i.paths import CONFIG_DIR, ROOT
from t2i.presets import _parse, get_preset
from t2i.spec import SpecError, make_spec

REAL = "ldm-text2im-large-256"
TINY = "tiny-ldm-text2im-untrained"
TINY_CONFIGS = {"unet": "models/tiny-ldm-text2im/unet.json", "text": "models/tiny-ldm-text2im/bert.json",
                "codec": "models/tiny-ldm-text2im/vqvae.json"}


@pytest.fixture(scope="module")
def tiny(pipelines):
    return pipelines(TINY)


def write_release(pipe, root):
    """The tiny pipeline's parts as the release stores them: .bin weights with their config.json (the
    hub's main has no .safetensors), the tokenizer's vocab.txt and config, the DDIM scheduler config."""
    from diffusers import DDIMScheduler

    pipe.unet.save_pretrained(root / "unet", safe_serialization=False)
    pipe.codec.vae.save_pretrained(root / "vqvae", safe_serialization=False)
    (root / "bert").mkdir(parents=True)
    pipe.text.bert.config.save_pretrained(root / "bert")
    torch.save(pipe.text.bert.state_dict(), root / "bert" / "pytorch_model.bin")
    (root / "tokenizer").mkdir()
    shutil.copy(CONFIG_DIR / "models/tiny-ldm-text2im/tokenizer/vocab.txt", root / "tokenizer" / "vocab.txt")
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}))
    DDIMScheduler.from_config(pipe.schedule).save_pretrained(root / "scheduler")


def release_preset(root, name="ldm-text2im-tiny-release"):
    """The real preset's YAML with the tiny architecture configs and the weights under `root`."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{REAL}.yaml"))
    for role, config in TINY_CONFIGS.items():
        raw["components"][role]["params"]["config"] = config
    raw["components"]["unet"]["weights"] = str(root / "unet")
    raw["components"]["text"]["weights"] = str(root)
    raw["components"]["codec"]["weights"] = str(root / "vqvae")
    raw["scheduler"]["from"] = str(root / "scheduler")
    return _parse(name, raw)


@pytest.fixture(scope="module")
def release(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("checkpoints") / REAL
    write_release(tiny, root)
    preset = release_preset(root)
    return root, preset, build_pipeline(preset)


def spec(preset, prompt="a red circle", **kw):
    fields = dict(steps=4, seed=0, width=64, height=64, save_every=2)
    fields.update(kw)
    return make_spec(prompt, preset.name, family="diffusion", defaults=preset.defaults, **fields)


def final_image(pipe, s) -> torch.Tensor:
    """Our loop, one job, through the pipeline contract (the Runner's generator: the seed's)."""
    job = pipe.start(s, torch.Generator().manual_seed(s.seed))
    for _ in range(s.total_steps):
        pipe.step([job], [False], contextlib.nullcontext)
    return pipe._images(job.x)


def test_the_release_layout_loads_back_identically(release, tiny):
    root, preset, pipe = release
    for a, b in ((tiny.unet, pipe.unet), (tiny.text.bert, pipe.text.bert), (tiny.codec.vae, pipe.codec.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(pipe.text.encode(["a red circle"]), tiny.text.encode(["a red circle"]))
    assert pipe.schedule["beta_schedule"] == "scaled_linear" and pipe.factor == 16 and pipe.codec.factor == 8


def test_the_null_condition_is_the_empty_prompt(release):
    text = release[2].text
    null = text.null(3)
    assert null.shape == (3, 77, 32) and torch.equal(null[2], text.encode([""])[0])
    assert not torch.equal(null[0], text.encode(["a red circle"])[0])


@pytest.mark.parametrize("sampler,guidance", [("ddim", 7.5), ("ddim", 1.0), ("ddim", 0.0), ("plms", 7.5)])
def test_our_loop_equals_diffusers_ldm_pipeline(release, sampler, guidance):
    """Same components, seed and steps: diffusers' LDMTextToImagePipeline draws its latents with its own
    generator call, so it gets ours (torch.randn of the seed's generator; DDIM's and PLMS's initial
    sigma is 1). It guides as we do (uncond + g * (cond - uncond)), skipping the unconditional branch at
    1; at 0 its guided estimate is the unconditional one, which we compute alone."""
    from diffusers import DDIMScheduler, LDMTextToImagePipeline, PNDMScheduler

    root, preset, pipe = release
    s = spec(preset, sampler=sampler, guidance=guidance, steps=5, seed=3)
    ours = final_image(pipe, s)
    scheduler = (DDIMScheduler.from_pretrained(root / "scheduler") if sampler == "ddim" else
                 PNDMScheduler.from_pretrained(root / "scheduler", skip_prk_steps=True))
    theirs_pipe = LDMTextToImagePipeline(vqvae=pipe.codec.vae, bert=pipe.text.bert, tokenizer=pipe.text.tokenizer,
                                         unet=pipe.unet, scheduler=scheduler)
    theirs_pipe.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    theirs = theirs_pipe("a red circle", height=64, width=64, num_inference_steps=5, guidance_scale=guidance,
                         eta=0.0, latents=latents, output_type="pt").images
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    # ...and through the Runner: the same image, to the uint8 rounding of the PNG
    runner_image = np.asarray(run(s, pipe).image, dtype=np.float32)
    assert np.abs(runner_image - theirs[0].permute(1, 2, 0).numpy() * 255).max() <= 1.0


def test_plms_runs_one_model_call_more_than_its_steps(release):
    s = spec(release[1], sampler="plms", steps=5)
    assert s.total_steps == 6 and len(run(s, release[2]).frame_steps) == len([0, 2, 4, 6])


def test_a_job_alone_equals_the_job_batched_with_another(release):
    preset, pipe = release[1], release[2]
    target = spec(preset, "a red circle", seed=7, sampler="plms")
    alone = np.asarray(run(target, pipe).image, dtype=np.float32)
    runner = Runner(pipe)
    runner.add("other", spec(preset, "a blue square | blurry:-1", seed=1, sampler="dpm++", guidance=3))
    runner.add("target", target)
    while not runner.slots["target"].done:
        runner.step()
    together = np.asarray(runner.result("target").image, dtype=np.float32)
    assert np.abs(together - alone).max() <= 1.0  # of 255: batched matmuls may round differently


@pytest.mark.parametrize("field,value,message", [
    ("guidance", "nan", "guidance: must be between 0 and 30"),
    ("guidance", "inf", "guidance: must be between 0 and 30"),
    ("guidance", -0.5, "guidance: must be between 0 and 30"),
    ("guidance", 31, "guidance: must be between 0 and 30"),
    ("steps", 251, "steps: must be between 1 and 250, got 251"),
    ("steps", 0, "steps: must be between 1 and 250"),
    ("sampler", "euler", "sampler: must be one of ddim, plms, dpm++, got 'euler' (a sigma-space sampler: not supported"),
    ("sampler", "ddpm", "sampler: must be one of ddim, plms, dpm++ for this preset's model, got 'ddpm'"),
    ("sampler", "k_lms", "sampler: must be one of ddpm, ddim, dpm++, plms, got 'k_lms'"),
    ("eta", 0.5, "eta: applies to the ddim sampler only, not plms"),
])
def test_bad_input_is_one_line_naming_the_field(field, value, message):
    preset = get_preset(REAL)
    kw = {field: value, **({"sampler": "plms"} if field == "eta" else {})}
    with pytest.raises(SpecError) as e:
        make_spec("a cat", REAL, family="diffusion", defaults=preset.defaults, **kw)
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.field == field


def test_the_seed_defaults_and_the_step_cap_come_from_the_preset():
    preset = get_preset(REAL)
    s = make_spec("a cat", REAL, family="diffusion", defaults=preset.defaults)
    o = s.options
    assert (s.width, s.height, o.sampler, o.steps, o.guidance, o.eta) == (256, 256, "ddim", 50, 7.5, 0.0)
    assert make_spec("a cat", REAL, family="diffusion", defaults=preset.defaults, steps=250).options.steps == 250
    # the other diffusion presets keep the family's cap
    other = get_preset("tiny-diffusion-untrained")
    assert make_spec("a cat", other.name, family="diffusion", defaults=other.defaults, steps=251).options.steps == 251


@pytest.mark.subprocess
def test_sizes_and_memory_are_known_at_submit_time_without_torch_or_weights(tmp_path):
    """Multiples of 64 px (the KL-f8 latent under the UNet's three downsamplings), read from the committed
    architecture configs: in a fresh interpreter, with no checkpoints, torch never imported."""
    code = f"""
import sys
from t2i.presets import get_preset
from t2i.spec import make_spec
p = get_preset({REAL!r})
out = []
for w, h in ((256, 256), (300, 520), (40, 100)):
    s = make_spec("a cat", p.name, family="diffusion", defaults=p.defaults, width=w, height=h)
    out.append([*s.options.used_size(s, p), s.options.job_bytes(s, p)])
print(out, "torch" in sys.modules)
"""
    env = {**os.environ, "T2I_CHECKPOINTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    sizes, torch_loaded = done.stdout.strip().rsplit(" ", 1)
    (s256, s300, s40) = json.loads(sizes)
    assert torch_loaded == "False"
    assert s256[:2] == [256, 256] and s300[:2] == [256, 512] and s40[:2] == [64, 64]
    assert s300[2] > 1.8 * s256[2] and s256[2] > 4 * s40[2]  # twice the pixels, about twice the memory


def test_the_pipeline_reports_the_rounded_size(release):
    s = spec(release[1], width=100, height=70, steps=1)
    result = run(s, release[2])
    assert release[2].used_size(s) == (96, 64) == result.image.size  # tiny: factor 16
    assert release[2].describe(s) == "96x64, 1 DDIM steps, CFG 7.5"


def test_the_committed_architecture_is_the_release(tmp_path):
    """Random weights of the committed configs have the release's parameter counts (its .bin sizes /
    4 bytes: unet 3.49 GB, bert 2.33 GB, vqvae 335 MB), counted on the meta device (no memory)."""
    preset = get_preset(REAL)
    with torch.device("meta"):
        parts = {role: build_component(role, c, "hint", random_weights=True) for role, c in preset.components.items()}
    count = {role: sum(p.numel() for p in m.parameters()) for role, m in parts.items()}
    assert count == {"unet": 872_300_484, "text": 581_994_042, "codec": 83_653_863}
    assert parts["codec"].factor == 8 and parts["codec"].channels == 4
    assert parts["unet"].config.cross_attention_dim == parts["text"].bert.config.d_model == 1280


@pytest.mark.parametrize("role,part,weights", [("unet", "unet", "diffusion_pytorch_model.bin"),
                                                ("codec", "vqvae", "diffusion_pytorch_model.bin"),
                                                ("text", "bert", "pytorch_model.bin")])
def test_a_broken_folder_is_one_line_naming_it(release, tmp_path, role, part, weights):
    root = tmp_path / REAL
    shutil.copytree(release[0], root)
    component = release_preset(root).components[role]
    state = torch.load(root / part / weights)
    del state[sorted(state)[0]]
    torch.save(state, root / part / weights)
    with pytest.raises(WeightsMissing) as e:
        build_component(role, component, "python -m t2i download ldm-text2im-large-256")
    message = str(e.value)
    assert f"{root / part}: 1 missing keys" in message and "\n" not in message and "t2i download" in message

    (root / part / weights).write_bytes((root / part / weights).read_bytes()[:1000])  # truncated
    with pytest.raises(WeightsMissing, match=f"{root / part} does not load as"):
        build_component(role, component, "hint")
    shutil.rmtree(root / part)
    with pytest.raises(WeightsMissing, match=f"missing {root / part}"):
        build_component(role, component, "hint")


def test_a_broken_tokenizer_or_a_foreign_bert_is_one_line(release, tmp_path):
    root = tmp_path / REAL
    shutil.copytree(release[0], root)
    text = release_preset(root).components["text"]
    (root / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(WeightsMissing) as e:
        build_component("text", text, "hint")
    assert str(root / "tokenizer") in str(e.value) and "\n" not in str(e.value)

    shutil.rmtree(root / "tokenizer")
    shutil.copytree(release[0] / "tokenizer", root / "tokenizer")
    config = json.loads((root / "bert" / "config.json").read_text())
    (root / "bert" / "config.json").write_text(json.dumps({**config, "d_model": 48}))  # another architecture
    with pytest.raises(WeightsMissing) as e:
        build_component("text", text, "hint")
    assert str(root / "bert") in str(e.value) and "\n" not in str(e.value)


def test_build_refuses_a_missing_release_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    with pytest.raises(WeightsMissing) as e:
        build_pipeline(get_preset(REAL))
    assert f"preset {REAL} needs" in str(e.value) and f"python -m t2i download {REAL}" in str(e.value)


def test_the_presets_listing_says_the_weights_are_missing(tmp_path, monkeypatch, capsys):
    from t2i.cli.weights import cmd_presets

    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    assert cmd_presets(None) == 0
    out = capsys.readouterr().out.split("\n")
    at = out.index(REAL)
    assert "weights missing" in out[at + 3] and f"python -m t2i download {REAL}" in out[at + 3]
    assert "64 px" in out[at + 1] and "256x256" in out[at + 1]
    assert out[out.index(TINY) + 3].strip() == "random weights (untrained)"
