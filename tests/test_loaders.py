"""Loaders: tiny models of the real classes saved in the real file formats and loaded back."""

import argparse
import json
import math

import pytest
import torch
import yaml

from t2i.engine.biggan import BigGANGenerator, build_biggan, load_biggan
from t2i.assets.clip_cache import cached_weights
from t2i.engine.perceptor import load_perceptor, register_model_configs
from t2i.engine.vqgan import TamingVQ, VQGANGenerator, load_taming, read_taming_config
from t2i.errors import WeightsMissing
from t2i.paths import MODEL_CONFIG_DIR

DDCONFIG = {"double_z": False, "z_channels": 32, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
LOSS = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0, "disc_weight": 0.8,
                   "codebook_weight": 1.0}}


def vq_params(gumbel=False):
    params = {"embed_dim": 32 if gumbel else 16, "n_embed": 64, "ddconfig": DDCONFIG, "lossconfig": LOSS}
    if gumbel:
        params.update(kl_weight=1e-8, temperature_scheduler_config={
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1, "lr_start": 0.9, "lr_max": 0.9, "lr_min": 1e-6}})
    return params


def lightning_ckpt(state_dict):
    # What a taming training run saves: Lightning bookkeeping around the state_dict, including
    # pickled objects that torch's safe loader refuses unless allowed (t2i/engine/vqgan.py's LIGHTNING_SAFE).
    return {"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.0.8", "state_dict": state_dict,
            "optimizer_states": [], "lr_schedulers": [], "hparams": argparse.Namespace(base_lr=4.5e-6)}


def random_vq(gumbel=False, seed=1):
    torch.manual_seed(seed)
    p = vq_params(gumbel)
    model = TamingVQ(DDCONFIG, p["n_embed"], p["embed_dim"], gumbel=gumbel)
    for t in model.state_dict().values():  # make every tensor distinctive, buffers included
        if t.is_floating_point():
            t.copy_(torch.randn_like(t))
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("gumbel", [False, True], ids=["VQModel", "GumbelVQ"])
def test_taming_yaml_and_lightning_ckpt_load_identical(tmp_path, gumbel):
    target = "GumbelVQ" if gumbel else "VQModel"
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(
        {"model": {"base_learning_rate": 4.5e-6, "target": f"taming.models.vqgan.{target}", "params": vq_params(gumbel)}}))
    source = random_vq(gumbel)
    state = dict(source.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)  # training-only, must be ignored
    state["loss.logvar"] = torch.zeros(())
    torch.save(lightning_ckpt(state), tmp_path / "last.ckpt")

    loaded = load_taming(tmp_path / "model.yaml", tmp_path / "last.ckpt")
    assert loaded.gumbel is gumbel
    assert_same_weights(source, loaded)
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = loaded.encode_latent(x)
        assert z.shape == (1, vq_params(gumbel)["embed_dim"], 8, 8)
        # Latents are codebook entries, so decode(encode(x)) is what taming's VQModel.forward gives.
        vectors = z.flatten(2).transpose(1, 2)[0]
        assert (vectors[:, None, :] == loaded.codebook[None]).all(-1).any(1).all()
        assert loaded.decode(z).shape == (1, 3, 32, 32)


def test_net2net_checkpoint_first_stage_keys(tmp_path):
    first_stage = {"target": "taming.models.vqgan.VQModel", "params": vq_params()}
    cfg = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": {
        "cond_stage_key": "depth", "first_stage_config": first_stage,
        "cond_stage_config": {"target": "taming.models.vqgan.VQModel", "params": vq_params()},
        "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                               "params": {"vocab_size": 64, "block_size": 32, "n_layer": 1, "n_head": 1, "n_embd": 8}}}}}
    (tmp_path / "net2net.yaml").write_text(yaml.safe_dump(cfg))
    source, cond = random_vq(seed=2), random_vq(seed=3)
    state = {f"first_stage_model.{k}": v for k, v in source.state_dict().items()}
    state.update({f"cond_stage_model.{k}": v for k, v in cond.state_dict().items()})
    state["transformer.tok_emb.weight"] = torch.randn(64, 8)
    torch.save({"state_dict": state}, tmp_path / "net2net.ckpt")

    loaded = load_taming(tmp_path / "net2net.yaml", tmp_path / "net2net.ckpt")
    assert_same_weights(source, loaded)


def test_taming_missing_and_mismatched_files(tmp_path):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"target": "taming.models.vqgan.VQModel",
                                                               "params": vq_params()}}))
    with pytest.raises(WeightsMissing, match=r"missing .*m\.ckpt: run `python -m t2i download x`"):
        load_taming(tmp_path / "m.yaml", tmp_path / "m.ckpt", download_hint="python -m t2i download x")
    state = random_vq().state_dict()
    del state["decoder.conv_out.weight"]
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    with pytest.raises(RuntimeError, match="decoder.conv_out.weight"):
        load_taming(tmp_path / "m.yaml", tmp_path / "m.ckpt")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model": {"target": "some.Other", "params": {}}}))
    with pytest.raises(ValueError, match="unsupported model target 'some.Other'"):
        read_taming_config(tmp_path / "bad.yaml")


def test_architecture_files_have_the_published_factors():
    expected = {"vqgan_f16_16384": (16, 16384, False), "vqgan_f16_1024": (16, 1024, False),
                "vqgan_gumbel_f8_8192": (8, 8192, True), "tiny-vqgan": (4, 64, False), "tiny-gumbel": (4, 64, True)}
    for name, (factor, n_embed, gumbel) in expected.items():
        cfg = read_taming_config(MODEL_CONFIG_DIR / f"{name}.yaml")
        assert 2 ** (len(cfg["ddconfig"]["ch_mult"]) - 1) == factor
        assert (cfg["n_embed"], cfg["gumbel"]) == (n_embed, gumbel)


def test_vqgan_generator_rounds_size_and_clamps_to_codebook_range():
    gen = VQGANGenerator(random_vq())
    assert gen.fit_size(70, 101) == (68, 100)
    latent = gen.init_latent(32, 16, torch.Generator().manual_seed(0))
    assert latent[0].shape == (1, 16, 4, 8) and latent[0].requires_grad
    with torch.no_grad():
        latent[0].mul_(100)
    gen.clamp_(latent)
    assert torch.all(latent[0] <= gen.z_max + 1e-6) and torch.all(latent[0] >= gen.z_min - 1e-6)
    image = gen.decode(latent)
    assert image.shape == (1, 3, 16, 32) and image.min() >= 0 and image.max() <= 1


def test_open_clip_tiny_model_saved_and_loaded_by_path(tmp_path):
    register_model_configs(MODEL_CONFIG_DIR)
    torch.manual_seed(4)
    source = load_perceptor("tiny-clip", None, tmp_path)
    torch.save(source.model.state_dict(), tmp_path / "tiny-clip.pt")
    torch.manual_seed(5)  # a different random init, so equality proves the file was loaded
    loaded = load_perceptor("tiny-clip", str(tmp_path / "tiny-clip.pt"), tmp_path)
    assert_same_weights(source.model, loaded.model)
    assert loaded.input_size == 32
    text = loaded.encode_text(["a red circle", "ein roter Kreis 🔴"])
    assert text.shape == (2, 32) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_open_clip_tag_resolves_only_from_the_local_cache(tmp_path):
    assert cached_weights("ViT-B-32", "openai", tmp_path) is None
    with pytest.raises(WeightsMissing, match=r"ViT-B-32/openai .*run `python -m t2i download p`"):
        load_perceptor("ViT-B-32", "openai", tmp_path, download_hint="python -m t2i download p")
    # open_clip's URL download lands at cache_dir/<basename>; a file there counts as present.
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    assert cached_weights("ViT-B-32", "openai", tmp_path) == tmp_path / "ViT-B-32.pt"
    with pytest.raises(ValueError, match="no pretrained tag 'nope'"):
        cached_weights("ViT-B-32", "nope", tmp_path)


def test_biggan_config_and_weights_load_identical(tmp_path):
    config = json.loads((MODEL_CONFIG_DIR / "tiny-biggan.json").read_text())
    torch.manual_seed(6)
    source = build_biggan(MODEL_CONFIG_DIR / "tiny-biggan.json")
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    torch.manual_seed(7)
    loaded = load_biggan(tmp_path)
    assert_same_weights(source, loaded)

    state = source.state_dict()
    del state["embeddings.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        load_biggan(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsMissing, match="pytorch_model.bin"):
        load_biggan(tmp_path)


def test_biggan_generator_is_frozen_and_optimises_its_inputs():
    gen = BigGANGenerator(build_biggan(MODEL_CONFIG_DIR / "tiny-biggan.json"), truncation=0.8)
    assert gen.fit_size(300, 300) == (32, 32)
    noise, classes = gen.init_latent(32, 32, torch.Generator().manual_seed(0))
    assert noise.abs().max() <= 2.0 * 0.8 + 1e-6 and classes.shape == (1, 10)
    image = gen.decode([noise, classes])
    loss = image.mean() + gen.reg_loss([noise, classes])
    loss.backward()
    assert noise.grad is not None and classes.grad is not None and math.isfinite(float(noise.grad.norm()))
    assert all(p.grad is None and not p.requires_grad for p in gen.model.parameters())
    with pytest.raises(ValueError, match="init images need a generator with an encoder"):
        gen.init_latent(32, 32, torch.Generator(), init_image=object())
