"""Presets: one YAML file per generator + perceptor pairing in configs/, read by one loader.

A preset names its generator (a weights entry from configs/weights.yaml, or an architecture file for
untrained presets), its perceptors (open_clip model + pretrained tag; several make an ensemble), the
job defaults and the cutout augmentations. A preset with random weights must say `untrained` in its
name and set `untrained: true`; the loader refuses any other combination, so random weights never
stand in for missing downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from .errors import PresetError
from .paths import CONFIG_DIR

GENERATOR_KINDS = ("vqgan", "biggan")
DEFAULT_PRESET = "vqgan_imagenet_f16_16384"


@dataclass(frozen=True)
class PerceptorRef:
    model: str
    pretrained: str | None = None  # None: random weights (untrained presets only)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained or 'random'}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    generator_kind: str
    weights: str | None          # entry in configs/weights.yaml; None when untrained
    arch: Path                   # architecture file (taming YAML or BigGAN JSON) for random weights
    perceptors: tuple[PerceptorRef, ...]
    defaults: dict = field(default_factory=dict)
    cutouts: dict = field(default_factory=dict)
    generator_options: dict = field(default_factory=dict)  # e.g. BigGAN truncation
    untrained: bool = False
    sketch: str | None = None    # t2i/engine/sketch.py weights: a job without an init image starts from it
    init_weight: float = 0.0     # holds the latent near its start (MSE); 0 lets guidance move it freely

    @property
    def models_label(self) -> str:
        return f"{self.weights or self.arch.stem} + {' + '.join(p.label for p in self.perceptors)}"


def _parse(name: str, raw: dict) -> Preset:
    gen = dict(raw.get("generator") or {})
    kind = gen.pop("kind", None)
    if kind not in GENERATOR_KINDS:
        raise PresetError(f"preset {name}: generator.kind must be one of {', '.join(GENERATOR_KINDS)}")
    if "arch" not in gen:
        raise PresetError(f"preset {name}: generator.arch (architecture file) is required")
    perceptors = tuple(PerceptorRef(p["model"], p.get("pretrained")) for p in raw.get("perceptors") or [])
    if not perceptors:
        raise PresetError(f"preset {name}: at least one perceptor is required")
    untrained = bool(raw.get("untrained", False))
    weights = gen.pop("weights", None)
    random_parts = weights is None or any(p.pretrained is None for p in perceptors)
    if untrained != ("untrained" in name) or untrained != random_parts:
        raise PresetError(f"preset {name}: random weights are allowed only in presets named '*untrained*' "
                          "with `untrained: true`, and such presets must not name trained weights")
    try:
        init_weight = float(raw.get("init_weight", 0.0))
    except (TypeError, ValueError):
        init_weight = math.nan
    if not init_weight >= 0:
        raise PresetError(f"preset {name}: init_weight must be a number >= 0, got {raw.get('init_weight')!r}")
    if untrained and raw.get("sketch"):
        raise PresetError(f"preset {name}: an untrained preset cannot name trained sketch weights")
    return Preset(name=name, description=str(raw.get("description", "")), generator_kind=kind,
                  weights=weights, arch=CONFIG_DIR / gen.pop("arch"), perceptors=perceptors,
                  defaults=dict(raw.get("defaults") or {}), cutouts=dict(raw.get("cutouts") or {}),
                  generator_options=gen, untrained=untrained, sketch=raw.get("sketch"), init_weight=init_weight)


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
