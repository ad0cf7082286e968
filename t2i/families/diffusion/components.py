"""The diffusion family's parts, built by name: a preset's `components` name a `target` from REGISTRY
(never a Python path from YAML), its `params`, and its `weights` (a file or folder; None for untrained
presets, which get random weights of the same classes).

    unet   "diffusers-unet"     diffusers UNet2DConditionModel: weights = a save_pretrained folder,
                                or params.config = a JSON config under configs/models/ (untrained)
    text   "char-clip-text"     the digits world's char-level CLIP text tower (t2i/engine/charclip.py)
           "open-clip-tokens"   an open_clip model's per-token text states (t2i/engine/clip_tokens.py)
           "ldm-bert"           CompVis LDM's LDMBert (diffusers) + BertTokenizer: weights = a release folder
                                holding bert/ and tokenizer/; params.config + params.tokenizer (committed
                                under configs/models/) for random weights
    codec  "pixels"             pixel space: the UNet's output is the image in [-1, 1]
           "taming-latents"     a taming VQGAN's latent space (t2i/engine/vq_codec.py); params: config
                                (taming YAML), scale, or scale_file (the trainer's codec.json:
                                scale, principal basis, mean)
           "diffusers-vae"      a diffusers AutoencoderKL (CompVis LDM's KL-f8: the release's "vqvae/"):
                                weights = a save_pretrained folder, or params.config (random weights)

A text component has `encode(prompts) -> (n, L, D)` states and `null(n)` (the unconditional states
the model was trained with); a codec has `channels`, `factor` and `decode(z) -> (n, 3, H, W)` in
[0, 1]. Every loader turns a missing or broken file into one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import overload

import torch

from ...errors import BrokenWeights, WeightsMissing, load_failure
from ...paths import CONFIG_DIR, component_weights, resolve_weights_file


@overload
def _path(ref: str, hint: str) -> Path: ...
@overload
def _path(ref: None, hint: str) -> None: ...
def _path(ref: str | None, hint: str) -> Path | None:
    if ref is None:
        return None
    path = component_weights(ref)
    if not path.exists():
        raise WeightsMissing(f"missing {path}: run `{hint}`")
    return path


def _config_file(name: str) -> Path:
    return Path(resolve_weights_file(name)) if name.startswith("builtin:") else CONFIG_DIR / name


def _from_pretrained(cls, folder: Path, what: str, hint: str, **kwargs):
    """cls.from_pretrained(folder), refusing anything but a complete match in one line naming the folder."""
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails in its parser's own way
        # (OSError, struct.error, UnpicklingError, safetensors' errors, KeyError on a foreign config...)
        first = load_failure(e)
        raise BrokenWeights(f"{folder} does not load as {what} ({first}): run `{hint}`") from None
    # from_pretrained initialises missing tensors at random with only a warning; a model with random
    # parts must never pass for a trained one.
    wrong = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if wrong:
        kind, keys = next(iter(wrong.items()))
        example = sorted(str(k) for k in keys)[0]
        raise BrokenWeights(f"{folder}: {len(keys)} {kind.replace('_', ' ')} (e.g. {example}): run `{hint}`")
    return model


def _diffusers_model(cls, params: dict, weights: Path | None, what: str, hint: str):
    if weights is None:
        return cls.from_config(json.loads(_config_file(params["config"]).read_text()))
    # fp16 on disk for the models trained here; computed in fp32 (bf16 under the Runner's autocast).
    # low_cpu_mem_usage needs `accelerate`, which we do not install.
    return _from_pretrained(cls, weights, what, hint, torch_dtype=torch.float32, low_cpu_mem_usage=False)


def unet(params: dict, weights: Path | None, hint: str):
    from diffusers import UNet2DConditionModel

    return _diffusers_model(UNet2DConditionModel, params, weights, "a diffusers UNet", hint)


def char_clip_text(params: dict, weights: Path | None, hint: str):
    from ...engine.charclip import CharClipText, build_char_clip, load_char_clip

    return CharClipText(build_char_clip(**params) if weights is None else load_char_clip(weights))


def open_clip_tokens(params: dict, weights: Path | None, hint: str):
    from ...engine.clip_tokens import load_clip_tokens

    return load_clip_tokens(params["model"], None if weights is None else str(weights), device="cpu")


class LDMBertText(torch.nn.Module):
    """LDMBert's token states, tokenised exactly as diffusers' LDMTextToImagePipeline does (padded to
    77 tokens, truncated); the unconditional branch is the empty prompt's states, as it was trained."""

    MAX_LENGTH = 77

    def __init__(self, bert, tokenizer):
        super().__init__()
        self.bert, self.tokenizer = bert, tokenizer

    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.MAX_LENGTH, truncation=True,
                             return_tensors="pt").input_ids
        return self.bert(ids.to(self.bert.device), return_dict=True).last_hidden_state

    def null(self, n: int) -> torch.Tensor:
        return self.encode([""]).expand(n, -1, -1)


def ldm_bert(params: dict, weights: Path | None, hint: str):
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from transformers import BertTokenizer

    if weights is None:
        bert = LDMBertModel(LDMBertConfig(**json.loads(_config_file(params["config"]).read_text())))
        return LDMBertText(bert, BertTokenizer.from_pretrained(_config_file(params["tokenizer"]), local_files_only=True))
    for part in ("bert", "tokenizer"):
        if not (weights / part).is_dir():
            raise WeightsMissing(f"missing {weights / part}: run `{hint}`")
    bert = _from_pretrained(LDMBertModel, weights / "bert", "an LDMBert text encoder", hint,
                            local_files_only=True, dtype=torch.float32)
    try:
        tokenizer = BertTokenizer.from_pretrained(weights / "tokenizer", local_files_only=True)
    except Exception as e:  # noqa: BLE001 - the tokenizers backend raises its own types for a bad vocab
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BrokenWeights(f"{weights / 'tokenizer'} does not load as a BERT tokenizer ({first}): run `{hint}`") \
            from None
    # Without its vocab.txt the tokenizer still loads, with the special tokens only (every word [UNK]):
    # the vocabulary must be the one the text encoder embeds.
    if len(tokenizer) != bert.config.vocab_size:
        raise BrokenWeights(f"{weights / 'tokenizer'}: {len(tokenizer)} tokens, but {weights / 'bert'} embeds "
                            f"{bert.config.vocab_size}: run `{hint}`")
    return LDMBertText(bert, tokenizer)


class PixelCodec(torch.nn.Module):
    """Pixel-space diffusion: the sample is the image in [-1, 1] (grey models are shown as RGB)."""

    factor = 1

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        image = (z.float().clamp(-1, 1) + 1) / 2
        return image.expand(-1, 3, -1, -1) if self.channels == 1 else image


def pixels(params: dict, weights: Path | None, hint: str):
    return PixelCodec(int(params.get("channels", 3)))


def taming_latents(params: dict, weights: Path | None, hint: str):
    from ...engine.vq_codec import VQLatentCodec, build_vq_codec, load_vq_codec

    config = _config_file(params["config"])
    if weights is None:
        if "scale_file" in params:  # a trained preset's latent: random VQGAN, the trainer's projection
            return VQLatentCodec(build_vq_codec(config).model, **_codec(params, hint))
        return build_vq_codec(config, float(params.get("scale", 1.0)), params.get("channels"))
    if not config.is_file():
        raise WeightsMissing(f"missing {config}: run `{hint}`")
    return load_vq_codec(config, weights, **_codec(params, hint))


class VAECodec(torch.nn.Module):
    """A diffusers AutoencoderKL's latent space, decoded as diffusers' LDMTextToImagePipeline does:
    z / scaling_factor, decode, [-1, 1] to [0, 1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode(z.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (image.float() / 2 + 0.5).clamp(0, 1)


def diffusers_vae(params: dict, weights: Path | None, hint: str):
    from diffusers import AutoencoderKL

    return VAECodec(_diffusers_model(AutoencoderKL, params, weights, "a diffusers AutoencoderKL", hint))


def _codec(params: dict, hint: str) -> dict:
    """The latent's scale (unit-variance latents) and projection: a number, or `scale_file`, the
    trainer's codec.json (scale, principal basis and mean, measured on the training data)."""
    from ...engine.vq_codec import codec_params

    if "scale_file" not in params:
        return {"scale": float(params["scale"])}
    path = _path(params["scale_file"], hint)
    try:
        return codec_params(path)
    except ValueError as e:
        raise BrokenWeights(f"{e}: run `{hint}`") from None


REGISTRY = {"diffusers-unet": unet, "char-clip-text": char_clip_text, "open-clip-tokens": open_clip_tokens,
            "ldm-bert": ldm_bert, "pixels": pixels, "taming-latents": taming_latents, "diffusers-vae": diffusers_vae}
ROLES = {"unet": ("diffusers-unet",), "text": ("char-clip-text", "open-clip-tokens", "ldm-bert"),
         "codec": ("pixels", "taming-latents", "diffusers-vae")}


def build_component(role: str, component, hint: str, random_weights: bool = False):
    """One component of a preset (t2i.presets.Component), by its registry name."""
    if component.target not in ROLES[role]:
        raise ValueError(f"components.{role}: unknown target {component.target!r}; "
                         f"known: {', '.join(ROLES[role])}")
    weights = None if random_weights else _path(component.weights, hint)
    params = component.params
    if random_weights and component.target == "diffusers-unet" and "config" not in params and component.weights:
        # A trained preset's architecture is the config.json saved beside its weights (the bench builds
        # random weights of the real architecture).
        params = {**params, "config": str(component_weights(component.weights) / "config.json")}
    return REGISTRY[component.target](params, weights, hint).eval().requires_grad_(False)


def scheduler_config(preset, hint: str, random_weights: bool = False) -> dict:
    """The training noise schedule: a scheduler folder saved by the trainer or downloaded (`from:`), or
    inline. `config:` is a committed copy of the `from:` folder's file, read with random weights (the
    bench), which must run without the download."""
    cfg = dict(preset.scheduler)
    source = cfg.pop("from", None)
    copy = cfg.pop("config", None)
    if random_weights and copy is not None:
        cfg = {**json.loads(_config_file(copy).read_text()), **cfg}
    elif source is not None:
        folder = _path(source, hint)
        try:
            cfg = {**json.loads((folder / "scheduler_config.json").read_text()), **cfg}
        except (OSError, ValueError) as e:
            raise BrokenWeights(f"{folder}/scheduler_config.json does not load ({type(e).__name__}): run `{hint}`") \
                from None
    return cfg
