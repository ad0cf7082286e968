"""The diffusion family's parts, built by name: a preset's `components` name a `target` from REGISTRY
(never a Python path from YAML), its `params`, and its `weights` (a file or folder; None for untrained
presets, which get random weights of the same classes).

    unet   "diffusers-unet"     diffusers UNet2DConditionModel: weights = a save_pretrained folder,
                                or params.config = a JSON config under configs/models/ (untrained)
    text   "char-clip-text"     the digits world's char-level CLIP text tower (t2i/engine/charclip.py)
           "open-clip-tokens"   an open_clip model's per-token text states (t2i/engine/clip_tokens.py)
    codec  "pixels"             pixel space: the UNet's output is the image in [-1, 1]
           "taming-latents"     a taming VQGAN's latent space (t2i/engine/vq_codec.py); params: config
                                (taming YAML), scale, or scale_file (the trainer's codec.json:
                                scale, principal basis, mean)

A text component has `encode(prompts) -> (n, L, D)` states and `null(n)` (the unconditional states
the model was trained with); a codec has `channels`, `factor` and `decode(z) -> (n, 3, H, W)` in
[0, 1]. Every loader turns a missing or broken file into one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import BrokenWeights, WeightsMissing
from ...paths import CONFIG_DIR, component_weights, resolve_weights_file


def _path(ref: str | None, hint: str) -> Path | None:
    if ref is None:
        return None
    path = component_weights(ref)
    if not path.exists():
        raise WeightsMissing(f"missing {path}: run `{hint}`")
    return path


def _config_file(name: str) -> Path:
    return Path(resolve_weights_file(name)) if name.startswith("builtin:") else CONFIG_DIR / name


def unet(params: dict, weights: Path | None, hint: str):
    from diffusers import UNet2DConditionModel

    if weights is None:
        config = json.loads(_config_file(params["config"]).read_text())
        return UNet2DConditionModel.from_config(config)
    try:
        # fp16 on disk for the models trained here; computed in fp32 (bf16 under the Runner's autocast).
        # low_cpu_mem_usage needs `accelerate`, which we do not install.
        model, info = UNet2DConditionModel.from_pretrained(weights, torch_dtype=torch.float32, low_cpu_mem_usage=False,
                                                           output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise BrokenWeights(f"{weights} does not load as a diffusers UNet ({first}): run `{hint}`") from None
    # from_pretrained initialises missing tensors at random with only a warning; a model with random
    # parts must never pass for a trained one.
    wrong = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if wrong:
        kind, keys = next(iter(wrong.items()))
        raise BrokenWeights(f"{weights}: {len(keys)} {kind.replace('_', ' ')} (e.g. {sorted(keys)[0]}): run `{hint}`")
    return model


def char_clip_text(params: dict, weights: Path | None, hint: str):
    from ...engine.charclip import CharClipText, build_char_clip, load_char_clip

    return CharClipText(build_char_clip(**params) if weights is None else load_char_clip(weights))


def open_clip_tokens(params: dict, weights: Path | None, hint: str):
    from ...engine.clip_tokens import load_clip_tokens

    return load_clip_tokens(params["model"], None if weights is None else str(weights), device="cpu")


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
            "pixels": pixels, "taming-latents": taming_latents}
ROLES = {"unet": ("diffusers-unet",), "text": ("char-clip-text", "open-clip-tokens"),
         "codec": ("pixels", "taming-latents")}


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
        params = {**params, "config": f"{component.weights.rstrip('/')}/config.json"}
    return REGISTRY[component.target](params, weights, hint).eval().requires_grad_(False)


def scheduler_config(preset, hint: str) -> dict:
    """The training noise schedule: a scheduler folder saved by the trainer (`from:`), or inline."""
    cfg = dict(preset.scheduler)
    source = cfg.pop("from", None)
    if source is not None:
        folder = _path(source, hint)
        try:
            cfg = {**json.loads((folder / "scheduler_config.json").read_text()), **cfg}
        except (OSError, ValueError) as e:
            raise BrokenWeights(f"{folder}/scheduler_config.json does not load ({type(e).__name__}): run `{hint}`") \
                from None
    return cfg
