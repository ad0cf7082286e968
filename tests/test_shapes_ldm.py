"""shapes-ldm's parts: CLIP token states, the VQ latent codec, and the trainer (tiny UNets, real classes)."""

import random

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from t2i.engine.clip_tokens import ClipTokenStates, load_clip_tokens
from t2i.engine.vq_codec import VQLatentCodec, build_vq_codec, codec_params, load_vq_codec, principal_basis
from t2i.errors import WeightsMissing
from t2i.paths import BUILTIN_DIR, MODEL_CONFIG_DIR
from t2i.train import shapes_ldm
from t2i.train.denoiser import denoiser_loss

SHAPES_DIR = BUILTIN_DIR / "shapes"
trained = pytest.mark.skipif(not (SHAPES_DIR / "shapes-vqgan.ckpt").is_file(),
                             reason="run `python -m t2i train-demo` to make the built-in weights")

# A UNet of the real class, small enough to train in a second: attention at the lower level only.
TINY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=[32, 32],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                 attention_head_dim=[1, 1], cross_attention_dim=64, norm_num_groups=8,
                 conv_in_kernel=1, conv_out_kernel=1)


@pytest.fixture(scope="module")
def clip_tokens():
    return load_clip_tokens("shapes-clip", str(SHAPES_DIR / "shapes-clip.pt"))


@pytest.fixture(scope="module")
def vq():
    return load_vq_codec(SHAPES_DIR / "shapes-vqgan.yaml", SHAPES_DIR / "shapes-vqgan.ckpt", 1.0).model


def renders(n: int, seed: int = 0) -> torch.Tensor:
    images, _ = shapes_ldm.render_scenes(random.Random(seed), n)
    return images


# --------------------------------------------------------------------------- token states


@trained
def test_token_states_have_one_state_per_token_and_follow_the_prompt(clip_tokens):
    states = clip_tokens.encode(["a small red circle on the left", "a large blue square at the top"])
    assert states.shape == (2, clip_tokens.length, clip_tokens.dim) == (2, 32, 64)
    assert not torch.allclose(states[0], states[1], atol=1e-3)
    assert torch.equal(clip_tokens.null(3), torch.zeros(3, 32, 64))


@trained
def test_the_end_of_text_state_projected_is_open_clips_own_text_embedding(clip_tokens):
    prompts = ["a small red circle on the left", "on a grey background, a large green triangle at the bottom"]
    tokens = clip_tokens.tokens(prompts)
    pooled = clip_tokens.pooled(tokens, clip_tokens.encode_tokens(tokens))
    reference = clip_tokens.model.encode_text(tokens)
    assert pooled.shape == reference.shape == (2, 64)
    torch.testing.assert_close(pooled, reference, rtol=1e-5, atol=1e-5)


def test_token_states_of_a_random_tiny_clip_and_a_missing_file():
    tokens = load_clip_tokens("tiny-clip", None)  # pretrained None: random weights, context 77
    assert isinstance(tokens, ClipTokenStates)
    assert tokens.encode(["a red circle"]).shape == (1, 77, tokens.dim)
    with pytest.raises(WeightsMissing, match="missing"):
        load_clip_tokens("shapes-clip", "/nonexistent/shapes-clip.pt")


# --------------------------------------------------------------------------- codec


@trained
def test_full_width_codec_round_trip_is_tamings_own_quantised_reconstruction(vq):
    codec = VQLatentCodec(vq, scale=2.5)
    x = renders(4)
    z = codec.encode(x)
    assert z.shape == (4, 32, 16, 16) and codec.channels == 32 and codec.factor == 4
    out = codec.decode(z)
    with torch.no_grad():
        taming = vq.decode(vq.encode_latent(x * 2 - 1)).add(1).div(2).clamp(0, 1)
    torch.testing.assert_close(out, taming)
    assert float((out - x).abs().mean()) < 0.05


@trained
def test_a_principal_basis_codec_keeps_the_codes_and_the_picture(vq):
    full = VQLatentCodec(vq)
    h = full.encode_code_space(renders(32))
    basis, mean, axis_std = principal_basis(h, 4)
    torch.testing.assert_close(basis @ basis.T, torch.eye(4), atol=1e-5, rtol=0)
    assert bool((axis_std[:-1] >= axis_std[1:]).all())
    codec = VQLatentCodec(vq, scale=1.5, basis=basis, mean=mean)
    x = renders(6, seed=1)
    z = codec.encode(x)
    assert z.shape == (6, 4, 16, 16) and codec.channels == 4
    agree = (codec.quantize(z) == full.quantize(full.encode(x))).all(1).float().mean()
    assert agree > 0.97
    assert float((codec.decode(z) - x).abs().mean()) < 0.05


def test_an_untrained_codec_has_the_requested_channels():
    codec = build_vq_codec(MODEL_CONFIG_DIR / "shapes-vqgan.yaml", scale=2.0, channels=4)
    z = codec.encode(torch.rand(2, 3, 64, 64))
    assert z.shape == (2, 4, 16, 16)
    image = codec.decode(torch.randn(2, 4, 16, 16))
    assert image.shape == (2, 3, 64, 64) and 0 <= float(image.min()) and float(image.max()) <= 1


# --------------------------------------------------------------------------- training


def _fixed_loss(unet, scheduler, latents, cond, null) -> float:
    with torch.no_grad():
        return float(np.mean([denoiser_loss(unet, scheduler, latents, cond, null, torch.Generator().manual_seed(s),
                                            p_uncond=0.0) for s in range(4)]))


@pytest.mark.trains
@trained
def test_a_few_dozen_steps_reduce_the_denoising_loss_and_repeat_exactly(clip_tokens, vq):
    images, captions = shapes_ldm.render_scenes(random.Random(0), 8)
    h, tokens = shapes_ldm.latent_cache(VQLatentCodec(vq), clip_tokens, images, captions)
    scheduler = DDPMScheduler(**shapes_ldm.scheduler_config())

    def run():
        unet = shapes_ldm.build_unet(TINY_UNET, seed=0)
        codec, _ = shapes_ldm.fit_codec(vq, h, unet.config.in_channels)
        latents = codec.project(h) * codec.scale
        cond, null = clip_tokens.encode_tokens(tokens[:, 0]), clip_tokens.null(8)
        before = _fixed_loss(unet, scheduler, latents, cond, null)
        model, losses = shapes_ldm.train(unet, scheduler, clip_tokens, latents, tokens, steps=40, batch=8,
                                         lr=3e-3, ema_decay=0.0, progress=False)
        return before, _fixed_loss(model, scheduler, latents, cond, null), model, losses

    before, after, model, losses = run()
    assert after < 0.7 * before
    _, _, again, losses_again = run()  # seeded throughout: the same weights, bit for bit
    assert losses == losses_again
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.trains
@trained
def test_train_shapes_ldm_writes_loadable_files_and_an_interrupted_save_changes_nothing(tmp_path):
    figures = shapes_ldm.train_shapes_ldm(tmp_path, steps=3, scenes=16, batch=4, unet_config=TINY_UNET,
                                          progress=False)
    out = tmp_path / "shapes-ldm"
    unet = UNet2DConditionModel.from_pretrained(out / "unet", torch_dtype=torch.float32)
    scheduler = DDPMScheduler.from_pretrained(out / "scheduler")
    params = codec_params(out / "codec.json")
    assert unet.config.in_channels == 4 and unet.dtype == torch.float32
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.clip_sample is False
    assert params["scale"] == figures["scale"] > 0 and params["basis"].shape == (4, 32)
    codec = load_vq_codec(SHAPES_DIR / "shapes-vqgan.yaml", SHAPES_DIR / "shapes-vqgan.ckpt", **params)
    assert codec.encode(renders(2)).shape == (2, 4, 16, 16)

    before = _snapshot(out)

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shapes_ldm.train_shapes_ldm(tmp_path, seed=1, steps=3, scenes=16, batch=4, unet_config=TINY_UNET,
                                    progress=False, on_written=interrupt)
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["codec.json", "scheduler", "unet"]
    # Uninterrupted, the other seed's files do replace them (so the comparison above means something).
    shapes_ldm.train_shapes_ldm(tmp_path, seed=1, steps=3, scenes=16, batch=4, unet_config=TINY_UNET,
                                progress=False)
    assert _snapshot(out) != before
