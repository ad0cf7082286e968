"""A guided preset's parts (torch-free): its generator, perceptors and sketch net as components, the
cutouts and the pull towards the start as its own settings; the family's preset parser and weights plan.

    components:
      generator: {target: vqgan | biggan, weights: <configs/weights.yaml entry>,
                  params: {arch: <architecture file under configs/>, ...generator options}}
      perceptor: {target: open-clip, params: {model: ViT-B-32}, weights: openai}   # a pretrained tag or file
      perceptor-2: ...                                                             # an ensemble: more of them
      sketch: {target: sketch-net, weights: builtin:shapes/shapes-sketch.pt}      # optional
    cutouts: {cut_pow: ..., min_scale: ..., augments: [...]}
    init_weight: 20.0

The flat form older presets use (`generator: {kind, weights, arch, ...}`, `perceptors: [{model,
pretrained}]`, `sketch:`) is read into the same components.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import PresetError
from ...paths import CONFIG_DIR
from ..record import WeightsPlan
from ..preset import Preset, check_random_weights, components

GENERATOR_KINDS = ("vqgan", "biggan")
PERCEPTOR = "open-clip"
SKETCH = "sketch-net"
_PERCEPTOR_ROLE = re.compile(r"perceptor(?:-(\d+))?$")


@dataclass(frozen=True)
class PerceptorRef:
    model: str
    pretrained: str | None = None  # None: random weights (untrained presets only)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained or 'random'}"


@dataclass(frozen=True)
class Parts:
    """What the guided builder, pipeline and options read of a preset."""

    kind: str                           # vqgan | biggan
    weights: str | None                 # the generator's configs/weights.yaml entry; None when untrained
    arch: Path                          # its architecture file (taming YAML or BigGAN JSON)
    options: dict                       # the generator's options (BigGAN truncation, init_fill, ...)
    perceptors: tuple[PerceptorRef, ...]
    sketch: str | None                  # t2i/engine/sketch.py weights: a job without an init image starts from it
    cutouts: dict                       # the cutouts' augmentations
    init_weight: float                  # holds the latent near its start (MSE); 0 lets guidance move it freely


def parts(preset: Preset) -> Parts:
    gen = preset.components["generator"]
    options = {k: v for k, v in gen.params.items() if k != "arch"}
    sketch = preset.components.get("sketch")
    return Parts(gen.target, gen.weights, CONFIG_DIR / gen.params["arch"], options, perceptors(preset),
                 sketch.weights if sketch else None, dict(preset.settings.get("cutouts") or {}),
                 float(preset.settings.get("init_weight", 0.0)))


def perceptors(preset: Preset) -> tuple[PerceptorRef, ...]:
    """The perceptor roles in order: perceptor, perceptor-2, perceptor-3, ..."""
    roles = sorted((int(m[1] or 1), role) for role in preset.components if (m := _PERCEPTOR_ROLE.match(role)))
    return tuple(PerceptorRef(str(preset.components[r].params["model"]), preset.components[r].weights)
                 for _, r in roles)


def _flat(name: str, raw: dict) -> dict:
    """The older flat form as components."""
    gen = dict(raw.get("generator") or {})
    comps = {"generator": {"target": gen.pop("kind", None), "weights": gen.pop("weights", None), "params": gen}}
    for i, p in enumerate(raw.get("perceptors") or [], 1):
        comps["perceptor" if i == 1 else f"perceptor-{i}"] = {
            "target": PERCEPTOR, "params": {"model": p["model"]}, "weights": p.get("pretrained")}
    if raw.get("sketch"):
        comps["sketch"] = {"target": SKETCH, "weights": raw["sketch"]}
    return comps


def parse_preset(preset: Preset, raw: dict) -> Preset:
    name = preset.name
    comps = raw.get("components") or _flat(name, raw)
    perceptor_roles = tuple(r for r in comps if _PERCEPTOR_ROLE.match(r))
    found = components(name, {"components": comps}, ("generator",), perceptor_roles + ("sketch",))
    if found["generator"].target not in GENERATOR_KINDS:
        raise PresetError(f"preset {name}: generator.kind must be one of {', '.join(GENERATOR_KINDS)}")
    if "arch" not in found["generator"].params:
        raise PresetError(f"preset {name}: generator.arch (architecture file) is required")
    if not perceptor_roles:
        raise PresetError(f"preset {name}: at least one perceptor is required")
    if any(found[r].target != PERCEPTOR or "model" not in found[r].params for r in perceptor_roles):
        raise PresetError(f"preset {name}: a perceptor is {{target: {PERCEPTOR}, params: {{model: ...}}}}")
    if preset.untrained and "sketch" in found:
        raise PresetError(f"preset {name}: an untrained preset cannot name trained sketch weights")
    preset = replace(preset, components=found)
    check_random_weights(preset)
    try:
        init_weight = float(raw.get("init_weight", 0.0))
    except (TypeError, ValueError):
        init_weight = math.nan
    if not init_weight >= 0:
        raise PresetError(f"preset {name}: init_weight must be a number >= 0, got {raw.get('init_weight')!r}")
    settings = {"cutouts": dict(raw.get("cutouts") or {}), "init_weight": init_weight}
    g = parts(replace(preset, settings=settings))
    label = f"{g.weights or g.arch.stem} + {' + '.join(p.label for p in g.perceptors)}"
    return replace(preset, settings=settings, models_label=label)


def weights_plan(preset: Preset) -> WeightsPlan:
    g = parts(preset)
    return WeightsPlan(entries=(g.weights,) if g.weights else (),
                       clip=tuple((p.model, p.pretrained) for p in g.perceptors),
                       files=(("sketch", g.sketch),) if g.sketch else ())


def text_weights(preset: Preset) -> list[str]:
    """The perceptors' weights: a world trained here is read from them (t2i/service/guide.py)."""
    return [p.pretrained for p in perceptors(preset) if p.pretrained]

