"""Perceptor: an open_clip model that embeds text and cutouts into one unit-norm space.

Weights come from open_clip's own cache, kept under checkpoints/clip, and are resolved to a local
file before the model is built, so loading never reaches for the network: an absent file is a
WeightsMissing error naming the download command.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from ..assets.clip_cache import cached_weights
from ..errors import WeightsMissing

_registered_dirs: set[str] = set()


def register_model_configs(path: Path) -> None:
    """Make open_clip aware of our own architecture files (tiny test models)."""
    key = str(Path(path).resolve())
    if key not in _registered_dirs:
        open_clip.add_model_config(Path(path))
        _registered_dirs.add(key)


class Perceptor(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, tokenizer, mean, std, name: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [0, 1] at input_size -> (B, D) unit vectors."""
        return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)

    @torch.no_grad()
    def encode_pil(self, image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        x = TF.to_tensor(TF.center_crop(TF.resize(image, self.input_size), self.input_size))
        return self.encode_image(x[None].to(self.device))


@contextlib.contextmanager
def _quiet_random_init(active: bool):
    # open_clip warns on the root logger when it builds random weights; for untrained presets that
    # is the intent, and their names already say so.
    root = logging.getLogger()
    level = root.level
    if active:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def load_perceptor(model_name: str, pretrained: str | None, cache_dir: Path, device="cpu",
                   download_hint: str = "") -> Perceptor:
    """Build an open_clip model. pretrained=None means random weights (untrained presets only)."""
    kwargs = {}
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    if pretrained is not None:
        path = cached_weights(model_name, pretrained, cache_dir)
        if path is None:
            where = pretrained if os.sep in pretrained else f"{model_name}/{pretrained} in {cache_dir}"
            raise WeightsMissing(f"CLIP weights {where} are missing"
                                 + (f": run `{download_hint}`" if download_hint else ""))
        cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if not os.path.isfile(pretrained) else {}
        kwargs["force_quick_gelu"] = bool(cfg.get("quick_gelu", False))
        mean, std = cfg.get("mean", mean), cfg.get("std", std)
        pretrained = str(path)
    with _quiet_random_init(pretrained is None):
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device, **kwargs)
    tokenizer = open_clip.get_tokenizer(model_name)
    return Perceptor(model, tokenizer, mean, std, name=model_name).to(device)
