"""The guided family's model building: a preset in, a generator and its perceptors out, on one device.

The one place that decides where weights come from: the downloaded files for trained presets (a
missing file is WeightsMissing), random weights for untrained presets (seeded, so every process
builds the same model), or random weights of the real architecture for benchmarks.
"""

from __future__ import annotations

import torch

from ...assets import weights as W
from ...engine.biggan import BigGANGenerator, build_biggan, load_biggan
from ...engine.perceptor import load_perceptor, register_model_configs
from ...engine.sketch import load_sketch
from ...engine.vqgan import VQGANGenerator, build_taming, load_taming
from ...paths import MODEL_CONFIG_DIR, clip_cache_dir, resolve_weights_file
from ..preset import Preset
from ...assets.untrained import UNTRAINED_SEED
from .pipeline import GuidedPipeline
from .preset import Parts, parts


def load_generator_weights(entry: W.WeightsEntry, hint: str = ""):
    hint = hint or f"python -m t2i download {entry.name}"
    if entry.kind == "taming":
        return load_taming(entry.path(".yaml"), entry.path(".ckpt"), download_hint=hint)
    if entry.kind == "biggan":
        return load_biggan(entry.directory, download_hint=hint)
    raise ValueError(f"weights {entry.name}: unknown kind {entry.kind!r}")


def _generator(preset: Preset, g: Parts, random_weights: bool):
    if random_weights:
        net = build_taming(g.arch) if g.kind == "vqgan" else build_biggan(g.arch)
    else:
        net = load_generator_weights(W.entry(str(g.weights)), hint=W.download_command(preset.name))
    if g.kind == "vqgan":
        return VQGANGenerator(net, **g.options)
    return BigGANGenerator(net, **g.options)


def build(preset: Preset, device="cpu", random_weights: bool = False) -> GuidedPipeline:
    """random_weights=True builds the real architecture untrained (benchmarks need no download)."""
    register_model_configs(MODEL_CONFIG_DIR)
    random_weights = random_weights or preset.untrained
    if not random_weights:
        W.require(preset)  # one clear message before any loading starts
    g = parts(preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        generator = _generator(preset, g, random_weights)
        perceptors = [load_perceptor(ref.model, None if random_weights else resolve_weights_file(str(ref.pretrained)),
                                     clip_cache_dir(),
                                     device=device, download_hint=W.download_command(preset.name))
                      for ref in g.perceptors]
    sketch = None
    if g.sketch and not random_weights:
        sketch = load_sketch(resolve_weights_file(g.sketch), device=device,
                             download_hint=W.download_command(preset.name))
    device = torch.device(device)
    if device.type == "cuda":
        _tune_for_gpu(generator)
    return GuidedPipeline(preset, generator.to(device), perceptors, device, sketch)


def _tune_for_gpu(generator) -> None:
    """TF32 for the fp32 matmuls and convolutions that remain under bf16 autocast, and channels_last
    for the convolutional generators (the layout tensor cores prefer)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    generator.to(memory_format=torch.channels_last)
