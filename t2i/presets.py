"""Presets: one YAML file per model set in configs/, read by one loader.

A preset says its `family` (guided when absent: the presets written before families existed) and names
its components, each `{target, params, weights}` (t2i/families/preset.py): a target is a registry
name of the family's (nothing is imported from a path in YAML). Here are the keys every preset has
(description, defaults, untrained, post, fixed_size); the family's record (t2i/families/) parses the
rest: which roles it needs, its own keys (a diffusion preset's noise schedule, a guided preset's
cutouts), its models in words. A preset with random weights must say `untrained` in its name and set
`untrained: true`; every family refuses any other combination, so random weights never stand in for
missing downloads.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from .errors import PresetError
from .families import DEFAULT_FAMILY, FAMILIES, option_names
from .families.preset import Component, Preset
from .paths import CONFIG_DIR

DEFAULT_PRESET = "vqgan_imagenet_f16_16384"
OFFLINE_DEFAULT = "shapes"  # the first of the built-in presets (trained here), when nothing is downloaded

__all__ = ["Component", "DEFAULT_PRESET", "OFFLINE_DEFAULT", "Preset", "all_presets", "current_family", "get_preset"]


def _parse(name: str, raw: dict) -> Preset:
    """The keys every preset has; then its family's parser checks its components and reads its own keys."""
    family = raw.get("family", DEFAULT_FAMILY)
    if family not in FAMILIES:
        raise PresetError(f"preset {name}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    preset = Preset(name=name, description=str(raw.get("description", "")), family=family,
                    defaults=dict(raw.get("defaults") or {}), untrained=bool(raw.get("untrained", False)),
                    post=_post(name, raw), fixed_size=bool(raw.get("fixed_size", False)))
    return FAMILIES[family].parse_preset(preset, raw)


def current_family(stored: str, preset) -> str:
    """The family a stored job runs as: the preset's, where the job was stored before the preset's
    family had a folder of its own (GLIDE's presets were diffusion ones) and the two families' options
    have the same fields; else the stored one."""
    try:
        current = getattr(all_presets().get(preset), "family", stored)
    except (PresetError, TypeError):
        return stored
    if current != stored and set(option_names(current)) == set(option_names(stored)):
        return current
    return stored


def _post(name: str, raw: dict) -> tuple[str, ...]:
    post = raw.get("post") or []
    if isinstance(post, str):
        post = [post]
    if not isinstance(post, list) or not all(isinstance(p, str) and p for p in post):
        raise PresetError(f"preset {name}: post must be a list of upscaler names, got {raw.get('post')!r}")
    return tuple(post)


@lru_cache(maxsize=None)
def _load_dir(config_dir: Path) -> dict[str, Preset]:
    presets = {}
    for path in sorted(config_dir.glob("*.yaml")):
        if path.name == "weights.yaml":
            continue
        presets[path.stem] = _parse(path.stem, OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    return presets


def all_presets(config_dir: Path = CONFIG_DIR) -> dict[str, Preset]:
    return _load_dir(Path(config_dir))


def get_preset(name: str, config_dir: Path = CONFIG_DIR) -> Preset:
    presets = all_presets(config_dir)
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; see `python -m t2i presets` ({', '.join(presets)})")
    return presets[name]
