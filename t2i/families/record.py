"""The record a family registers (t2i/families/__init__.py): everything outside its folder may ask of it.

Torch-free. A family is one folder (t2i/families/<family>/) and one `Family` in the registry; the
pages, the queue, presets, weights, memory, infotext and the benches read this record and never
compare a family's name. Its `build` imports the family's pipeline module only when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Callable

from .options import Options
from .preset import Preset

if TYPE_CHECKING:
    from .base import Pipeline


@dataclass(frozen=True)
class WeightsPlan:
    """What a preset's weights are, by kind of reference (t2i/assets/weights.py maps them to configs/weights.yaml
    entries, checks their files, and t2i/service/memory.py counts their bytes)."""

    entries: tuple[str, ...] = ()    # configs/weights.yaml entries named directly (a guided generator)
    models: tuple[str, ...] = ()     # component weights: paths under checkpoints/ (an entry must cover
                                     # them), "builtin:..." or absolute
    needed: tuple[str, ...] = ()     # other named paths that must be there (a scheduler's `from:`)
    params: tuple[str, ...] = ()     # path-like params: counted only when an entry covers them
    clip: tuple[tuple[str, str | None], ...] = ()  # (open_clip model, pretrained tag or file) in its cache
    files: tuple[tuple[str, str], ...] = ()        # (what, file) further files (the sketch net)


def lazy_build(module: str) -> Callable[..., Any]:
    """A `build` that imports `module` (torch and the models) only when a pipeline is built."""
    def build(preset: Preset, device: Any = "cpu", random_weights: bool = False) -> Any:
        return import_module(module).build(preset, device, random_weights)
    build.__qualname__ = f"lazy_build({module!r})"
    return build


def no_text_weights(preset: Preset) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    name: str
    options: type[Options]                          # its job options (t2i/families/options.py's protocol)
    parse_preset: Callable[[Preset, dict], Preset]  # checks its roles and reads its own keys (t2i/presets.py)
    weights: Callable[[Preset], WeightsPlan]        # the weights plan
    build: Callable[..., "Pipeline"]                # (preset, device, random_weights) -> its Pipeline
    blurb: str                                      # the guide's line: "diffusion (a denoising UNet)"
    gif_caption: str                                # what a job's GIF shows: "the denoising"
    takes_images: bool = False                      # init image and image prompts
    min_side: int = 64                              # the smallest width or height a job may ask for
    steps_field: str = "steps"                      # the option infotext writes as Steps and benches set
    text_weights: Callable[[Preset], list[str]] = no_text_weights  # the guide's words: refs of its text side
    bench_reference: str | None = None              # "module:function(pipeline, spec, steps, mark)": the loop
                                                    # users would write, for `bench --reference`
    reference_how: str = ""                         # that loop in words, or what is said when there is none
    step_cost: float = 1.0                          # the work of one job-step, a guided step's being 1: the
                                                    # per-address budget of queued work (t2i/service/queue.py)


def components_plan(preset: Preset) -> WeightsPlan:
    """The weights of a preset whose components name files or folders (diffusion, GLIDE, gan): each
    component's weights, the schedule's `from:`, and the path-like params (a tokenizer folder)."""
    source = preset.scheduler.get("from")
    return WeightsPlan(models=tuple(c.weights for c in preset.components.values() if c.weights),
                       needed=(source,) if isinstance(source, str) else (),
                       params=tuple(v for c in preset.components.values() for v in c.params.values()
                                    if isinstance(v, str)))


def text_component_weights(preset: Preset) -> list[str]:
    """The `text` component's weights: a world trained here is read from them (t2i/service/guide.py)."""
    text = preset.components.get("text")
    return [text.weights] if text is not None and text.weights else []
