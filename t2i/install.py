"""Installing a preset's weights: fetch every file it needs (t2i/download.py does one file), then prove
them by building the preset through the real loaders. Apart from weights.py because it builds
models, and the pipelines that build them read weights.py."""

from __future__ import annotations

from pathlib import Path

from .download import fetch
from .paths import checkpoints_dir, clip_cache_dir
from .presets import all_presets
from .weights import WeightsEntry, entry, is_builtin


def fetch_entry(e: WeightsEntry, progress: bool = True) -> list[Path]:
    return [fetch(urls, checkpoints_dir() / rel, progress=progress) for rel, urls in e.files.items()]


def download(name: str, progress: bool = True, verify: bool = True) -> list[str]:
    """Fetch a preset's weights (or one weights entry's) and prove them by loading. Returns lines to print."""
    from .families import build_pipeline
    from .clip_cache import download_weights

    presets = all_presets()
    if name in presets:
        preset = presets[name]
        if preset.untrained:
            return [f"{name}: untrained preset, nothing to download"]
        if is_builtin(preset):
            return [f"{name}: built in (checkpoints/); `python -m t2i train-demo` makes it again"]
        fetched = fetch_entry(entry(preset.weights), progress)
        for ref in preset.perceptors:
            fetched.append(download_weights(ref.model, ref.pretrained, clip_cache_dir()))
        if verify:
            build_pipeline(preset, device="cpu")
        return [f"{name}: {len(fetched)} files present and loaded"]
    e = entry(name)
    fetched = fetch_entry(e, progress)
    if verify:
        from .families.guided.build import load_generator_weights

        load_generator_weights(e)
    return [f"{name}: {len(fetched)} files present and loaded"]
