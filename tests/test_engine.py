"""The optimisation loop on tiny real models (open_clip, taming, BigGAN classes with random weights)."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from t2i.engine import run, run_batches
from t2i.families import build_pipeline
from t2i.errors import OutOfMemory, WeightsMissing
from t2i.presets import get_preset
from t2i.spec import make_spec


def spec_for(preset, prompt, **kw):
    return make_spec(prompt, preset, defaults=get_preset(preset).defaults, **kw)


def clean_similarity(models, image, text):
    """Similarity of the whole image (no augmentation) to a text, by the first perceptor."""
    p = models.perceptors[0]
    x = TF.to_tensor(image.resize((p.input_size, p.input_size), Image.BICUBIC))[None]
    with torch.no_grad():
        return float(p.encode_image(x) @ p.encode_text([text]).T)


def png(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_falls_and_prompt_similarity_rises(tiny_models, seed):
    spec = spec_for("tiny-vqgan-untrained", "a red circle", iterations=30, cutn=16, lr=0.1, seed=seed, save_every=30)
    result = run(spec, tiny_models)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    before = clean_similarity(tiny_models, result.frames[0], "a red circle")
    after = clean_similarity(tiny_models, result.image, "a red circle")
    assert after > before + 0.01


def test_negative_prompt_pushes_away(tiny_models):
    spec = spec_for("tiny-vqgan-untrained", "a blue square:-1", iterations=30, cutn=16, lr=0.3, seed=0, save_every=30)
    result = run(spec, tiny_models)
    before = clean_similarity(tiny_models, result.frames[0], "a blue square")
    after = clean_similarity(tiny_models, result.image, "a blue square")
    assert after < before - 0.01
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])  # loss is negated distance


def test_stop_cuts_the_pull_once_reached(tiny_models):
    # A stop above every reachable distance means the target never pulls: the latent stays put.
    spec = spec_for("tiny-vqgan-untrained", "a red circle:1:5", iterations=3, seed=0, save_every=1)
    result = run(spec, tiny_models)
    frames = [np.asarray(f) for f in result.frames]
    assert all(np.array_equal(frames[0], f) for f in frames)


# test_families checks the frame cadence (5 steps every 2, 4 every 10), same-seed determinism and
# cancelling on every tiny preset, this one included; here only what it does not: a step count the
# cadence divides, and the losses.
def test_frames_every_k_steps_plus_final_when_k_divides_the_steps(tiny_models):
    iterations, save_every = 8, 4
    steps = []
    spec = spec_for("tiny-vqgan-untrained", "a cat", iterations=iterations, save_every=save_every, seed=0)
    result = run(spec, tiny_models, on_step=lambda s: steps.append(s))
    assert len(result.frames) == math.ceil(iterations / save_every) + 1
    assert result.frame_steps == [*range(0, iterations, save_every), iterations]
    assert [s.step for s in steps] == list(range(1, iterations + 1))
    assert [s.frame_step for s in steps if s.frame is not None] == result.frame_steps[:-1]
    assert len(result.losses) == iterations and all(math.isfinite(x) for x in result.losses)


def test_random_seed_is_chosen_and_reported(tiny_models):
    result = run(spec_for("tiny-vqgan-untrained", "a cat", iterations=1), tiny_models)
    assert 0 <= result.seed < 2**63


def test_size_is_rounded_to_the_generator_factor(tiny_models):
    result = run(spec_for("tiny-vqgan-untrained", "a cat", iterations=1, width=70, height=66, seed=0), tiny_models)
    assert (result.width, result.height) == (68, 64) and result.image.size == (68, 64)


def test_init_image_is_encoded_to_the_latent(tiny_models):
    left = Image.new("RGB", (64, 64), (255, 0, 0))
    right = Image.new("RGB", (64, 64), (0, 0, 255))
    first = [run(spec_for("tiny-vqgan-untrained", "a cat", iterations=1, seed=0, init_image=png(im)),
                 tiny_models).frames[0] for im in (left, right)]
    generator = tiny_models.generator
    with torch.no_grad():
        x = TF.to_tensor(left)[None] * 2 - 1
        expected = generator.decode([generator.model.encode_latent(x)])
    assert np.array_equal(np.asarray(first[0]), np.asarray(TF.to_pil_image(expected[0])))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))


def test_unquantised_warmup_decodes_the_continuous_latent_only_early_in_each_job(tiny_models):
    from t2i.engine.vqgan import VQGANGenerator, vector_quantize

    model = tiny_models.generator.model
    generator = VQGANGenerator(model, unquantised_warmup=0.5)
    z = torch.randn(2, model.codebook.shape[1], 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        quantised = model.decode(vector_quantize(z.movedim(1, 3), model.codebook).movedim(3, 1)).add(1).div(2).clamp(0, 1)
        continuous = model.decode(z).add(1).div(2).clamp(0, 1)
        # Two jobs of one batch: the first still warming up, the second past the warm-up.
        mixed = generator.decode([z], torch.tensor([0.2, 0.5]))
        final = generator.decode([z])  # results are always quantised
    assert not torch.allclose(quantised, continuous)
    assert torch.allclose(mixed[0], continuous[0], atol=1e-5) and torch.allclose(mixed[1], quantised[1], atol=1e-5)
    assert not torch.allclose(mixed[0], quantised[0], atol=1e-3)
    assert torch.allclose(final, quantised, atol=1e-5)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="unquantised_warmup"):
            VQGANGenerator(model, unquantised_warmup=bad)
    with pytest.raises(ValueError):  # a preset's YAML may hold any scalar
        VQGANGenerator(model, unquantised_warmup="half")


def test_image_prompt_adds_a_target(tiny_models):
    target = Image.new("RGB", (40, 40), (0, 200, 0))
    spec = spec_for("tiny-vqgan-untrained", "a cat:0.1", iterations=25, lr=0.3, cutn=16, seed=0,
                    image_prompts=[png(target)])
    result = run(spec, tiny_models)
    p = tiny_models.perceptors[0]
    with torch.no_grad():
        goal = p.encode_pil(target)
        sims = [float(p.encode_pil(im) @ goal.T) for im in (result.frames[0], result.image)]
    assert sims[1] > sims[0]


@pytest.mark.parametrize("preset", ["tiny-gumbel-untrained", "tiny-biggan-untrained", "tiny-ensemble-untrained"])
def test_other_generators_and_perceptor_ensembles_optimise(pipelines, preset):
    models = pipelines(preset)
    weights_before = [t.clone() for t in models.generator.state_dict().values()]
    result = run(spec_for(preset, "a red circle", iterations=20, cutn=16, lr=0.2, seed=0), models)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    # The generator is frozen: only its inputs move.
    assert all(torch.equal(a, b) for a, b in zip(weights_before, models.generator.state_dict().values()))
    if preset == "tiny-biggan-untrained":
        assert (result.width, result.height) == (32, 32)
    if preset == "tiny-ensemble-untrained":
        assert len(models.perceptors) == 2 and models.perceptors[0].input_size != models.perceptors[1].input_size


def test_untrained_presets_build_the_same_weights_every_time():
    a = build_pipeline(get_preset("tiny-vqgan-untrained"))
    b = build_pipeline(get_preset("tiny-vqgan-untrained"))
    for x, y in zip(a.generator.state_dict().values(), b.generator.state_dict().values()):
        assert torch.equal(x, y)
    for x, y in zip(a.perceptors[0].state_dict().values(), b.perceptors[0].state_dict().values()):
        assert torch.equal(x, y)


def test_trained_preset_without_weights_names_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("T2I_CHECKPOINTS", str(tmp_path))
    with pytest.raises(WeightsMissing) as e:
        build_pipeline(get_preset("vqgan_imagenet_f16_16384"))
    message = str(e.value)
    assert "\n" not in message
    assert str(tmp_path / "vqgan_imagenet_f16_16384.yaml") in message
    assert "python -m t2i download vqgan_imagenet_f16_16384" in message


@pytest.mark.parametrize("runner", [run, lambda spec, models: list(run_batches([spec, spec], models))],
                         ids=["run", "run_batches"])
def test_out_of_memory_becomes_one_actionable_line(tiny_models, monkeypatch, runner):
    def exhausted(latent, progress=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tiny_models.generator, "decode", exhausted)
    with pytest.raises(OutOfMemory) as e:
        runner(spec_for("tiny-vqgan-untrained", "a cat", iterations=2, width=128, height=96, cutn=64), tiny_models)
    assert str(e.value) == "out of CPU memory at 128x96 with 64 cutouts: lower the size or the cutouts"


def test_run_batches_gives_the_images_of_single_runs_in_order(tiny_models):
    specs = [spec_for("tiny-vqgan-untrained", prompt, iterations=3, seed=i)
             for i, prompt in enumerate(["a red circle", "a blue square", "a green triangle"])]
    results = list(run_batches(specs, tiny_models, batch=2))  # a batch of two, then one of one
    assert [r.seed for r in results] == [0, 1, 2]
    for spec, result in zip(specs, results):
        alone = np.asarray(run(spec, tiny_models).image, dtype=np.int16)
        assert np.abs(np.asarray(result.image, dtype=np.int16) - alone).max() <= 2  # floating-point noise only
