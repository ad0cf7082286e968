"""GAN-INT-CLS: the losses' terms, training of each type, resume, atomic checkpoints, the port's checkpoint
layout, the gan family's options and presets. Tiny real networks on the CPU, seconds each."""

import math

import numpy as np
import pytest
import torch

from t2i.engine import run
from t2i.engine.gan_int_cls import Discriminator, Generator, init_weights, load_generator, read_state
from t2i.errors import BrokenWeights, PresetError, SpecError, T2IError
from t2i.families import build_pipeline
from t2i.presets import all_presets, get_preset
from t2i.spec import make_spec
from t2i.train.gan import TYPES, GanConfig, d_losses, g_losses, save_atomic, train
from t2i.train.gan_data import shapes_source

EMBED = 16
TINY = dict(ngf=4, ndf=4, batch_size=6, diter=2)


def nets(config=GanConfig(**TINY)):
    torch.manual_seed(0)
    g, d = Generator(EMBED, config.ngf), Discriminator(EMBED, config.ndf, batch_norm=config.type != "wgan-gp")
    init_weights(g), init_weights(d)
    return g, d


def batch(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 64, 64, generator=gen) * 2 - 1, torch.randn(n, EMBED, generator=gen),
            torch.randn(n, 100, generator=gen))


# --- the paper's two terms ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_the_mismatched_text_term_enters_the_discriminators_loss_only_with_cls(kind):
    g, d = nets()
    real, embed, z = batch()
    other = torch.randn(6, EMBED, generator=torch.Generator().manual_seed(9))

    def total(cls, wrong):
        terms = d_losses(GanConfig(type=kind, cls=cls, **TINY), g, d, real, embed, wrong, z,
                         torch.Generator().manual_seed(1))
        return terms, terms["total"].item()

    with_a, a = total(True, embed.roll(1, 0))
    _, b = total(True, other)
    without, c = total(False, embed.roll(1, 0))
    _, e = total(False, other)
    assert "wrong" in with_a and a != b                 # real image + mismatched text is scored as fake
    assert "wrong" not in without and c == e            # cls off: the mismatched texts change nothing
    assert ("gp" in with_a) == (kind == "wgan-gp")


@pytest.mark.parametrize("kind", TYPES)
def test_the_interpolation_term_enters_the_generators_loss_only_with_int(kind):
    g, d = nets()
    real, embed, z = batch()
    z_int = torch.randn(6, 100, generator=torch.Generator().manual_seed(3))

    def total(interpolate, partner):
        terms = g_losses(GanConfig(type=kind, int=interpolate, **TINY), g, d, real, embed, z, partner, z_int)
        return terms, terms["total"].item()

    on, a = total(True, embed.roll(2, 0))
    _, b = total(True, -embed)
    off, c = total(False, embed.roll(2, 0))
    _, e = total(False, -embed)
    assert "int" in on and a != b and math.isfinite(on["int"].item())
    assert "int" not in off and c == e
    assert {"adv", "fm", "l1"} <= set(off)


# --- training --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TYPES)
def test_a_few_steps_of_each_type_with_cls_and_int_stay_finite_and_move_the_generator(tmp_path, kind):
    config = GanConfig(type=kind, cls=True, int=True, minibatch=kind == "gan", **TINY)
    result = train(shapes_source(EMBED), tmp_path, epochs=1, steps_per_epoch=3, config=config, progress=False)
    assert result.step == 3 and len(result.history) == 3
    assert all(math.isfinite(v) for row in result.history for v in row.values())
    assert {"d_wrong", "g_int", "g_fm", "g_l1"} <= set(result.history[0])
    torch.manual_seed(config.seed)
    fresh = Generator(EMBED, config.ngf)
    init_weights(fresh)
    assert not torch.equal(fresh.netG[0].weight, result.generator.netG[0].weight)
    if kind == "wgan":  # the critic's weights stay clipped
        assert all(p.abs().max() <= config.clip for p in result.discriminator.parameters())
    assert (tmp_path / "samples" / "epoch-001.png").is_file() and (tmp_path / "losses.png").is_file()


def test_resume_continues_from_the_saved_step_as_the_uninterrupted_run(tmp_path):
    config = GanConfig(**TINY)
    whole = train(shapes_source(EMBED), tmp_path / "whole", epochs=2, steps_per_epoch=2, config=config, progress=False)
    first = train(shapes_source(EMBED), tmp_path / "cut", epochs=1, steps_per_epoch=2, config=config, progress=False)
    resumed = train(shapes_source(EMBED), tmp_path / "cut", epochs=2, steps_per_epoch=2, config=config, progress=False)
    assert first.step == 2 and resumed.step == 4 and resumed.history[:2] == first.history
    assert resumed.history == whole.history
    for (k, a), b in zip(whole.generator.state_dict().items(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(T2IError) as e:
        train(shapes_source(EMBED), tmp_path / "cut", epochs=3, steps_per_epoch=2,
              config=GanConfig(**{**TINY, "type": "wgan"}), progress=False)
    assert "type='gan'" in str(e.value) and "\n" not in str(e.value)


def test_a_failed_checkpoint_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(Exception):
        save_atomic({"step": 2, "w": lambda: None}, path)  # a lambda cannot be pickled: the write fails midway
    kept = torch.load(path, weights_only=True)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_saved_fp16_generator_loads_back_to_fp32_and_draws_as_trained(tmp_path):
    result = train(shapes_source(EMBED), tmp_path, epochs=1, steps_per_epoch=1, config=GanConfig(**TINY),
                   progress=False)
    loaded = load_generator(tmp_path / "generator.pt", embed_dim=EMBED, ngf=TINY["ngf"])
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    _, embed, z = batch()
    with torch.no_grad():
        assert torch.allclose(loaded(embed, z), result.generator.eval()(embed, z), atol=2e-2)


# --- the port's checkpoints --------------------------------------------------------------------------

def test_the_networks_have_the_ports_state_dict_layout():
    g, d = Generator(), Discriminator()
    gk, dk = g.state_dict(), d.state_dict()
    assert gk["projection.0.weight"].shape == (128, 1024) and "projection.1.running_var" in gk
    assert gk["netG.0.weight"].shape == (228, 512, 4, 4) and gk["netG.12.weight"].shape == (64, 3, 4, 4)
    assert dk["netD_1.0.weight"].shape == (64, 3, 4, 4) and "netD_1.3.running_mean" in dk
    assert dk["projector.projection.0.weight"].shape == (128, 1024)
    assert dk["netD_2.0.weight"].shape == (1, 512 + 128, 4, 4)
    images = torch.zeros(2, 3, 64, 64)
    score, features = d.eval()(images, torch.zeros(2, 1024))
    assert score.shape == (2,) and features.shape == (2, 512, 4, 4)
    assert g.eval()(torch.zeros(2, 1024), torch.zeros(2, 100, 1, 1)).shape == (2, 3, 64, 64)


def test_a_data_parallel_generator_checkpoint_loads_and_draws_as_the_plain_one(tmp_path):
    g, _ = nets()
    for m in g.modules():  # non-trivial running statistics, so the buffers' loading is tested too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    torch.save(g.state_dict(), tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in g.state_dict().items()}, tmp_path / "parallel.pth")
    plain = load_generator(tmp_path / "plain.pth", embed_dim=EMBED, ngf=4)
    parallel = load_generator(tmp_path / "parallel.pth", embed_dim=EMBED, ngf=4)
    _, embed, z = batch()
    with torch.no_grad():
        assert torch.equal(plain(embed, z), parallel(embed, z))
        assert torch.equal(plain(embed, z), g.eval()(embed, z))


def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_first_key(tmp_path):
    g, d = nets()
    torch.save(g.state_dict(), tmp_path / "g.pth")
    torch.save(d.state_dict(), tmp_path / "d.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    cases = [("g.pth", dict(embed_dim=EMBED, ngf=8), "mis-shaped key(s), the first netG.0.weight"),
             ("g.pth", dict(embed_dim=32, ngf=4), "mis-shaped key(s), the first projection.0.weight"),
             ("d.pth", dict(embed_dim=EMBED, ngf=4), "missing key(s), the first netG.0.weight"),
             ("junk.pth", dict(embed_dim=EMBED, ngf=4), "is not a readable checkpoint")]
    for name, config, words in cases:
        with pytest.raises(BrokenWeights) as e:
            load_generator(tmp_path / name, **config)
        assert words in str(e.value) and "\n" not in str(e.value) and name in str(e.value)
    extra = {**g.state_dict(), "netG.99.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(BrokenWeights, match="1 unexpected key\\(s\\), the first netG.99.weight"):
        load_generator(tmp_path / "extra.pth", embed_dim=EMBED, ngf=4)
    assert set(read_state(tmp_path / "g.pth")) == set(g.state_dict())


# --- the family --------------------------------------------------------------------------------------

NAME = "tiny-gan-untrained"


def gan_spec(prompt="a red flower", **kw):
    p = get_preset(NAME)
    return make_spec(prompt, NAME, family="gan", defaults=p.defaults, **kw)


@pytest.mark.parametrize("field,value,words", [
    ("num_samples", 0, "num_samples: must be between 1 and 64, got 0"),
    ("num_samples", 65, "num_samples: must be between 1 and 64, got 65"),
    ("num_samples", "two", "num_samples: must be a whole number, got 'two'"),
    ("noise_scale", 2.5, "noise_scale: must be between 0 and 2, got 2.5"),
    ("noise_scale", "nan", "noise_scale: must be between 0 and 2, got 'nan'"),
    ("steps", 0, "steps: must be between 1 and 256, got 0"),
    ("cutn", 8, "cutn: does not apply to gan presets"),
    ("guidance", 3, "guidance: does not apply to gan presets"),
])
def test_bad_options_are_one_line(field, value, words):
    with pytest.raises(SpecError) as e:
        gan_spec(**{field: value})
    assert str(e.value).startswith(words) and "\n" not in str(e.value)


def test_the_options_load_and_size():
    spec = gan_spec(num_samples=64, noise_scale="0.5", steps=12, width=300, height=200)
    assert (spec.options.num_samples, spec.options.noise_scale, spec.total_steps) == (64, 0.5, 12)
    assert spec.options.used_size(spec, get_preset(NAME)) == (64, 64)
    assert spec.describe(64, 64) == "64x64, 12 frames, 64 samples, noise x0.5"
    assert gan_spec().batch_key == gan_spec(num_samples=3).batch_key  # samples are rows of one call
    assert gan_spec().width == 64 and gan_spec().options.steps == 8  # the preset's defaults


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline(get_preset(NAME))


def test_the_gif_loops_back_to_the_image_and_samples_make_a_grid(pipe):
    result = run(gan_spec(steps=6, save_every=1, seed=3, num_samples=4), pipe)
    assert result.frame_steps == [0, 1, 2, 3, 4, 5, 6] and len(result.samples) == 4
    first, last = (np.asarray(f, dtype=np.float32) for f in (result.frames[0], result.frames[-1]))
    assert np.abs(first - last).max() <= 1 and np.abs(first - np.asarray(result.frames[3], np.float32)).mean() > 1
    assert result.image.size == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)  # 2x2 samples, padding 2


def test_prompt_parts_mix_embeddings_as_manifold_interpolation(pipe):
    e = {p: pipe.embedding(gan_spec(p)) for p in ("a red flower", "a yellow flower")}
    assert torch.allclose(pipe.embedding(gan_spec("a red flower | a yellow flower")),
                          0.5 * (e["a red flower"] + e["a yellow flower"]), atol=1e-6)
    assert torch.allclose(pipe.embedding(gan_spec("a red flower:3 | a yellow flower:-1")),
                          (3 * e["a red flower"] - e["a yellow flower"]) / 3, atol=1e-6)
    zero = run(gan_spec(noise_scale=0, seed=1, steps=2), pipe).image
    assert np.asarray(zero).tobytes() == np.asarray(run(gan_spec(noise_scale=0, seed=2, steps=2), pipe).image).tobytes()


def write(tmp_path, name, text):
    (tmp_path / f"{name}.yaml").write_text(text)
    return all_presets(tmp_path)


def test_presets_refuse_random_parts_outside_untrained_presets_and_mismatched_dims(tmp_path):
    body = "family: gan\ncomponents:\n  generator: {target: gan-int-cls, weights: /nowhere/g.pt}\n" \
           "  text: {target: random-text}\n"
    with pytest.raises(PresetError, match="random-text"):
        write(tmp_path, "trained-gan", body)
    (tmp_path / "trained-gan.yaml").unlink()
    presets = write(tmp_path, "odd-gan-untrained", "family: gan\nuntrained: true\ncomponents:\n"
                    "  generator: {target: gan-int-cls, params: {embed_dim: 32, ngf: 4}}\n"
                    "  text: {target: random-text, params: {dim: 16}}\n")
    with pytest.raises(PresetError, match="makes 16-dim embeddings, the generator takes 32"):
        build_pipeline(presets["odd-gan-untrained"])


def test_the_flowers_world_feeds_the_trainer_through_captioned(tmp_path):
    from t2i.data import flowers
    from t2i.families.gan.components import RandomText
    from t2i.train.gan_data import captioned

    source = captioned(lambda seed, n: flowers.sample(n, seed)[:2], RandomText(EMBED).encode)
    images, embeds = source(3, torch.Generator().manual_seed(0))
    again, _ = source(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 64, 64) and embeds.shape == (3, EMBED) and torch.equal(images, again)
    result = train(source, tmp_path, epochs=1, steps_per_epoch=1, config=GanConfig(**TINY), progress=False)
    assert all(math.isfinite(v) for v in result.history[0].values())
