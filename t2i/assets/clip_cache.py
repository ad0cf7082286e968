"""Where open_clip weights live on disk: whether a (model, pretrained) pair is already local, and
fetching it through open_clip's own downloader.

Kept apart from the engine, with open_clip imported only when a pretrained *tag* must be looked
up: listing which presets are ready (every page does) must not import torch for a preset whose
CLIP is a plain file, such as the built-in shapes CLIP.
"""

from __future__ import annotations

import os
from pathlib import Path


def cached_weights(model_name: str, pretrained: str, cache_dir: Path) -> Path | None:
    """The local file open_clip would load for (model, tag), or None when it is not downloaded."""
    if os.path.isfile(pretrained):
        return Path(pretrained)
    if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return None  # a file that is not there (yet)
    import open_clip  # only for tags: a page asking about a file reference should not import torch

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {model_name}; "
                         f"known: {', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none'}")
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/model/" means open_clip's default name
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir))
            if isinstance(hit, str):
                return Path(hit)
    if cfg.get("url"):
        path = Path(cache_dir) / os.path.basename(cfg["url"])
        if path.is_file():
            return path
    return None


def download_weights(model_name: str, pretrained: str, cache_dir: Path) -> Path:
    """Fetch through open_clip's own downloader into cache_dir."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    return Path(open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache_dir)))
