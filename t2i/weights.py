"""Weights on disk: which files a preset needs, whether they are present, and fetching them.

Files live under checkpoints/ (or $T2I_CHECKPOINTS) at the paths configs/weights.yaml gives; CLIP
weights live in open_clip's own cache under checkpoints/clip. Nothing here builds models (the
pipelines import this module): t2i/install.py fetches a preset's files and proves them by building.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .errors import PresetError, WeightsMissing
from .paths import (BUILTIN_PREFIX, builtin_dir, checkpoints_dir, clip_cache_dir, component_weights, resolve_weights_file,
                    weights_registry)
from .presets import Preset, all_presets


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    kind: str                      # taming | biggan
    files: dict[str, list[str]]    # path under checkpoints/ -> mirror URLs
    builtin: bool = False          # committed in the repository, made by `train-demo`

    @property
    def base(self) -> Path:
        return builtin_dir() if self.builtin else checkpoints_dir()

    def path(self, suffix: str) -> Path:
        """The file with this suffix (".yaml", ".ckpt", "config.json", ...)."""
        return self.base / next(f for f in self.files if f.endswith(suffix))

    @property
    def directory(self) -> Path:
        return (self.base / next(iter(self.files))).parent


def registry(path: Path | None = None) -> dict[str, WeightsEntry]:
    raw = OmegaConf.to_container(OmegaConf.load(path or weights_registry()), resolve=True)
    return {name: WeightsEntry(name, e["kind"], {f: list(u) for f, u in e["files"].items()}, bool(e.get("builtin")))
            for name, e in raw.items()}


def entry(name: str) -> WeightsEntry:
    reg = registry()
    if name not in reg:
        raise PresetError(f"no preset or weights named {name!r} (see `python -m t2i presets` and {weights_registry()})")
    return reg[name]


def is_builtin(preset: Preset) -> bool:
    """Trained here and committed (made again by `train-demo`), rather than downloaded."""
    if preset.untrained:
        return False
    if preset.family == "diffusion":
        return all(c.weights.startswith(BUILTIN_PREFIX) for c in preset.components.values() if c.weights)
    return entry(preset.weights).builtin


def download_command(preset_name: str) -> str:
    try:
        preset = all_presets().get(preset_name)
        if preset is not None and is_builtin(preset):
            return "python -m t2i train-demo"
    except PresetError:
        pass
    return f"python -m t2i download {preset_name}"


def _missing_generator_files(preset: Preset) -> list[str]:
    if preset.family == "diffusion":
        paths = [component_weights(c.weights) for c in preset.components.values() if c.weights]
        return [str(p) for p in paths if not p.exists()]
    e = entry(preset.weights)
    return [str(e.base / f) for f in e.files if not (e.base / f).is_file()]


def missing_files(preset: Preset) -> list[str]:
    """Human-readable names of the files this preset still needs (empty: ready to run)."""
    from .clip_cache import cached_weights

    if preset.untrained:
        return []
    missing = _missing_generator_files(preset)
    for ref in preset.perceptors:
        if cached_weights(ref.model, resolve_weights_file(ref.pretrained), clip_cache_dir()) is None:
            missing.append(f"CLIP {ref.label} (in {clip_cache_dir()})")
    if preset.sketch and not Path(resolve_weights_file(preset.sketch)).is_file():
        missing.append(f"sketch {resolve_weights_file(preset.sketch)}")
    return missing


def require(preset: Preset) -> None:
    missing = missing_files(preset)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise WeightsMissing(f"preset {preset.name} needs {missing[0]}{more}: run `{download_command(preset.name)}`")


def is_ready(preset: Preset) -> bool:
    """Whether the preset can run now. The generator's files are checked first: asking open_clip
    whether a CLIP is cached imports open_clip and torch (seconds), which a page listing presets
    should not pay for presets whose generator is not even downloaded."""
    return preset.untrained or (not _missing_generator_files(preset) and not missing_files(preset))


def ready_presets() -> list[str]:
    """Presets that can run now, best first: the default when its weights are present, other
    downloaded ones, the built-in shapes set, then the untrained ones."""
    from .presets import DEFAULT_PRESET, OFFLINE_DEFAULT

    presets = all_presets()
    trained = [n for n, p in presets.items() if not p.untrained and is_ready(p)]
    trained.sort(key=lambda n: (n != DEFAULT_PRESET, is_builtin(presets[n]), n != OFFLINE_DEFAULT, n))
    return trained + [n for n, p in presets.items() if p.untrained]


def default_preset() -> str:
    """The preset to use when none is named: the first ready one."""
    return ready_presets()[0]
