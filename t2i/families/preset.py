"""A preset as every family sees it: its components (role -> target, params, weights), its job defaults
and post-steps, and the checks every family's preset parser shares.

A leaf (torch-free; it imports only the errors): t2i/presets.py reads the YAML into a Preset and hands
it to the family's record (t2i/families/<family>/family.py), whose `parse_preset` checks its roles
and reads its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PresetError

DEFAULT_FAMILY = "guided"  # the presets written before families existed say none


@dataclass(frozen=True)
class Component:
    """One part of a preset: a registry name (never a Python path), its parameters, its weights (a file
    or a folder; "builtin:..." for the ones trained here; a weights entry or a CLIP pretrained tag where
    the family says so; None for untrained presets)."""

    target: str
    params: dict = field(default_factory=dict)
    weights: str | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    family: str = DEFAULT_FAMILY
    components: dict = field(default_factory=dict)  # role -> Component
    defaults: dict = field(default_factory=dict)    # the job options' defaults (and what the preset narrows)
    untrained: bool = False
    post: tuple[str, ...] = ()   # upscalers run after the image is made (names of configs/weights.yaml entries)
    fixed_size: bool = False     # the model draws at its own size only
    scheduler: dict = field(default_factory=dict)   # a training noise schedule (diffusers config), where one is used
    settings: dict = field(default_factory=dict)    # the family's own further keys (guided: cutouts, init_weight)
    models_label: str = ""       # the models in words (PNG parameters, the bench), as the family's parser words them


def components(name: str, raw: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """`raw["components"]` as Components: every required role, optional ones where given, no others."""
    comps = raw.get("components") or {}
    if not set(required) <= set(comps) <= set(required + optional):
        more = f" (and optionally {', '.join(optional)})" if optional else ""
        raise PresetError(f"preset {name}: components must be {', '.join(required)}{more}")
    return {role: component(name, role, comps[role]) for role in required + optional if role in comps}


def component(name: str, role: str, raw) -> Component:
    raw = raw or {}
    if "target" not in raw:
        raise PresetError(f"preset {name}: components.{role}.target is required")
    return Component(str(raw["target"]), dict(raw.get("params") or {}), raw.get("weights"))


RANDOM_WEIGHTS = ("random weights are allowed only in presets named '*untrained*' with `untrained: true`, and "
                  "such presets must not name trained weights")


def check_random_weights(preset: Preset, weightless: tuple[str, ...] = (), random: tuple[str, ...] = (),
                         message: str = RANDOM_WEIGHTS) -> None:
    """Random weights never stand in for missing downloads: a preset is untrained exactly when its name
    says so, an untrained one names no weights, and a trained one names weights for every component
    except the `weightless` targets (nothing to train) and uses none of the `random` ones."""
    parts = preset.components.values()
    trained = any(c.weights for c in parts)
    random_parts = any(not c.weights and c.target not in weightless for c in parts) or \
        any(c.target in random for c in parts)
    if preset.untrained != ("untrained" in preset.name) or (preset.untrained and trained) or \
            (not preset.untrained and random_parts):
        raise PresetError(f"preset {preset.name}: {message}")


def label(preset: Preset, weightless: tuple[str, ...] = ()) -> str:
    """The components in words: "diffusers-unet(builtin:digits/unet) + pixels"."""
    return " + ".join(c.target if c.target in weightless else f"{c.target}({c.weights or 'random'})"
                      for c in preset.components.values())
