"""Presets: one YAML file per model set in configs/, read by one loader.

A preset says its `family` (guided when absent: the presets written before families existed).
A diffusion preset names its components (`target` from t2i/families/diffusion/components.py's
registry, `params`, `weights`) and its noise schedule; nothing is imported from a path in YAML.
A gan preset names its generator and text encoder the same way (t2i/families/gan/components.py).
A guided preset names its generator (a weights entry from configs/weights.yaml, or an architecture file for
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
from .families import DEFAULT_FAMILY, FAMILIES
from .families.diffusion.glide_sizes import upsampler_steps
from .families.gan.options import UNTRAINED_TARGETS
from .paths import CONFIG_DIR

GENERATOR_KINDS = ("vqgan", "biggan")
DEFAULT_PRESET = "vqgan_imagenet_f16_16384"
OFFLINE_DEFAULT = "shapes"  # the first of the built-in presets (trained here), when nothing is downloaded


@dataclass(frozen=True)
class PerceptorRef:
    model: str
    pretrained: str | None = None  # None: random weights (untrained presets only)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained or 'random'}"


@dataclass(frozen=True)
class Component:
    """One part of a diffusion preset: a registry name, its parameters, its weights (a file or a
    folder; "builtin:..." for the ones trained here; None for untrained presets)."""

    target: str
    params: dict = field(default_factory=dict)
    weights: str | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    generator_kind: str = ""     # guided: vqgan | biggan
    weights: str | None = None   # guided: entry in configs/weights.yaml; None when untrained
    arch: Path | None = None     # guided: architecture file (taming YAML or BigGAN JSON) for random weights
    perceptors: tuple[PerceptorRef, ...] = ()
    defaults: dict = field(default_factory=dict)
    cutouts: dict = field(default_factory=dict)
    generator_options: dict = field(default_factory=dict)  # e.g. BigGAN truncation
    untrained: bool = False
    sketch: str | None = None    # t2i/engine/sketch.py weights: a job without an init image starts from it
    init_weight: float = 0.0     # holds the latent near its start (MSE); 0 lets guidance move it freely
    family: str = DEFAULT_FAMILY
    components: dict = field(default_factory=dict)   # diffusion: role -> Component
    scheduler: dict = field(default_factory=dict)    # diffusion: the training noise schedule (diffusers config)
    fixed_size: bool = False     # diffusion: the model draws at its own size only
    post: tuple[str, ...] = ()   # upscalers run after the image is made (names of configs/weights.yaml entries)

    @property
    def models_label(self) -> str:
        if self.family != "guided":
            return " + ".join(c.target if c.target in WEIGHTLESS_TARGETS else f"{c.target}({c.weights or 'random'})"
                              for c in self.components.values())
        return f"{self.weights or self.arch.stem} + {' + '.join(p.label for p in self.perceptors)}"


def _parse(name: str, raw: dict) -> Preset:
    family = raw.get("family", DEFAULT_FAMILY)
    if family not in FAMILIES:
        raise PresetError(f"preset {name}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "diffusion":
        return _parse_diffusion(name, raw)
    if family == "gan":
        return _parse_gan(name, raw)
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
                  generator_options=gen, untrained=untrained, sketch=raw.get("sketch"), init_weight=init_weight,
                  post=_post(name, raw))


def _post(name: str, raw: dict) -> tuple[str, ...]:
    post = raw.get("post") or []
    if isinstance(post, str):
        post = [post]
    if not isinstance(post, list) or not all(isinstance(p, str) and p for p in post):
        raise PresetError(f"preset {name}: post must be a list of upscaler names, got {raw.get('post')!r}")
    return tuple(post)


DIFFUSION_ROLES = ("unet", "text", "codec")
OPTIONAL_ROLES = ("upsampler",)   # GLIDE's second stage (base 64px, then the text-conditional upsampler)


def _parse_diffusion(name: str, raw: dict) -> Preset:
    comps = raw.get("components") or {}
    if not set(DIFFUSION_ROLES) <= set(comps) <= set(DIFFUSION_ROLES + OPTIONAL_ROLES):
        raise PresetError(f"preset {name}: components must be {', '.join(DIFFUSION_ROLES)} "
                          f"(and optionally {', '.join(OPTIONAL_ROLES)})")
    components = {}
    for role in DIFFUSION_ROLES + OPTIONAL_ROLES:
        if role not in comps:
            continue
        c = comps[role] or {}
        if "target" not in c:
            raise PresetError(f"preset {name}: components.{role}.target is required")
        components[role] = Component(str(c["target"]), dict(c.get("params") or {}), c.get("weights"))
    untrained = bool(raw.get("untrained", False))
    trained = [c for c in components.values() if c.weights]
    needs_weights = [c for c in components.values() if c.target not in WEIGHTLESS_TARGETS]
    if untrained != ("untrained" in name) or (untrained and trained) or \
            (not untrained and any(not c.weights for c in needs_weights)):
        raise PresetError(f"preset {name}: random weights are allowed only in presets named '*untrained*' "
                          "with `untrained: true`, and such presets must not name trained weights")
    defaults = dict(raw.get("defaults") or {})
    if "upsampler" in components:
        # A second stage's steps count in the job's progress (DiffusionOptions.total_steps).
        defaults["upsample_steps"] = upsampler_steps(components["upsampler"].params)
    if "samplers" in raw:
        # The samplers that are correct for this model (DiffusionOptions.parse refuses the others).
        defaults["samplers"] = tuple(raw["samplers"])
    return Preset(name=name, description=str(raw.get("description", "")), family="diffusion",
                  untrained=untrained, defaults=defaults, components=components,
                  scheduler=dict(raw.get("scheduler") or {}), fixed_size=bool(raw.get("fixed_size", False)),
                  post=_post(name, raw))


GAN_ROLES = ("generator", "text")


def _parse_gan(name: str, raw: dict) -> Preset:
    """A gan preset: a generator (`gan-int-cls`) and a text encoder, named as t2i/families/gan/components.py's
    REGISTRY names them (checked when it is built: the registry imports torch, this module must not); the
    DCGAN draws 64x64 only (fixed_size), so the spec's size defaults to it."""
    comps = raw.get("components") or {}
    if set(comps) != set(GAN_ROLES):
        raise PresetError(f"preset {name}: components must be {', '.join(GAN_ROLES)}")
    components = {}
    for role in GAN_ROLES:
        c = comps[role] or {}
        if "target" not in c:
            raise PresetError(f"preset {name}: components.{role}.target is required")
        components[role] = Component(str(c["target"]), dict(c.get("params") or {}), c.get("weights"))
    untrained = bool(raw.get("untrained", False))
    random_parts = [c for c in components.values() if not c.weights or c.target in UNTRAINED_TARGETS]
    if untrained != ("untrained" in name) or (untrained and any(c.weights for c in components.values())) or \
            (not untrained and random_parts):
        raise PresetError(f"preset {name}: random weights (and the untrained text encoders: "
                          f"{', '.join(UNTRAINED_TARGETS)}) are allowed only in presets named '*untrained*' with "
                          "`untrained: true`, and such presets must not name trained weights")
    defaults = {"width": 64, "height": 64, **(raw.get("defaults") or {})}
    return Preset(name=name, description=str(raw.get("description", "")), family="gan", untrained=untrained,
                  defaults=defaults, components=components, fixed_size=True, post=_post(name, raw))


# Components with nothing to train (the pixel "codec" of a pixel-space model).
WEIGHTLESS_TARGETS = ("pixels",)


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
