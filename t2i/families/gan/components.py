"""The gan family's parts, built by name: a preset's `components` name a `target` from REGISTRY (never a
Python path from YAML), its `params` and its `weights` (a file; None for untrained presets).

    generator  "gan-int-cls"   t2i/engine/gan_int_cls.py's Generator; params: embed_dim (default 1024),
                               ngf (64), noise_dim (100), projected_dim (128), affine (false: the
                               port's; true adds text-conditioned affines per layer), whiten (false;
                               true: the embedding is ZCA-whitened by buffers in the file) = the architecture the
                               weights file (the port's, DataParallel's `module.` keys accepted, or ours
                               in fp16) is loaded into, strictly
    text       "random-text"   UNTRAINED: a prompt's hashed character n-grams projected by a fixed random
                               matrix; deterministic and torch-seeded, so an untrained preset is the
                               same in every process. params: dim (256), buckets (4096), seed (0)

               "char-clip"     a CharCLIP trained here (t2i/engine/charclip.py; the flowers world's
                               caption encoder): its unit text embedding; weights: its .pt file

A text component has `dim` and `encode(prompts) -> (n, dim)`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ...errors import PresetError, WeightsMissing
from ...paths import component_weights


class RandomText(torch.nn.Module):
    """UNTRAINED text encoder: a prompt's character 1- to 3-grams (lower-cased, spaces around words),
    hashed into `buckets` counts (blake2b, not Python's salted hash(), so every process agrees),
    L2-normalised and projected by a fixed N(0, 1) matrix: prompts sharing n-grams get nearby
    embeddings, which is all an untrained generator or a smoke-test training needs."""

    NGRAMS = (1, 2, 3)

    def __init__(self, dim: int = 256, buckets: int = 4096, seed: int = 0):
        super().__init__()
        self.dim, self.buckets = dim, buckets
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("matrix", torch.randn(buckets, dim, generator=gen), persistent=False)

    def bag(self, prompt: str) -> torch.Tensor:
        text = f" {' '.join(prompt.lower().split())} "
        counts = torch.zeros(self.buckets)
        for n in self.NGRAMS:
            for i in range(len(text) - n + 1):
                digest = hashlib.blake2b(text[i:i + n].encode(), digest_size=8).digest()
                counts[int.from_bytes(digest, "little") % self.buckets] += 1
        return counts / counts.norm().clamp_min(1e-8)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        bags = torch.stack([self.bag(p) for p in prompts]).to(self.matrix.device)
        return bags @ self.matrix


def gan_int_cls(params: dict, weights: Path | None, hint: str):
    from ...engine.gan_int_cls import Generator, init_weights, load_generator, settle

    config = _config(params, ("embed_dim", "ngf", "noise_dim", "projected_dim", "affine", "whiten", "polar"),
                     "gan-int-cls")
    if weights is None:
        generator = Generator(**config)
        init_weights(generator)
        return settle(generator)
    return load_generator(weights, **config)


def random_text(params: dict, weights: Path | None, hint: str):
    return RandomText(**_config(params, ("dim", "buckets", "seed"), "random-text"))


class CharClipEmbedding(torch.nn.Module):
    """A trained CharCLIP's sentence embedding, (n, dim): what the GAN was trained on."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.dim = clip, clip.dim

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(list(prompts)).float()


def char_clip(params: dict, weights: Path | None, hint: str):
    from ...engine.charclip import build_char_clip, load_char_clip

    if weights is None:  # random weights of the trained encoder's architecture (the bench)
        return CharClipEmbedding(build_char_clip(**params))
    return CharClipEmbedding(load_char_clip(weights, hint=hint))


REGISTRY = {
    "generator": {"gan-int-cls": gan_int_cls},
    "text": {"random-text": random_text, "char-clip": char_clip},
}


def _config(params: dict, names: tuple[str, ...], target: str) -> dict:
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise PresetError(f"{target}: unknown params {', '.join(unknown)} (it takes {', '.join(names)})")
    return {k: int(v) for k, v in params.items()}


def build_component(role: str, component, hint: str, random_weights: bool):
    """The component's module on the CPU, eval mode, no gradients."""
    builders = REGISTRY[role]
    if component.target not in builders:
        raise PresetError(f"components.{role}.target must be one of {', '.join(builders)}, got {component.target!r}")
    weights = None
    if component.weights and not random_weights:
        weights = component_weights(component.weights)
        if not weights.exists():
            raise WeightsMissing(f"missing {weights}: run `{hint}`")
    module = builders[component.target](dict(component.params), weights, hint)
    return module.eval().requires_grad_(False)
