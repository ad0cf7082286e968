"""Where things live on disk: the repository's configs/, and checkpoints/ (or $T2I_CHECKPOINTS for
downloads, $T2I_BUILTIN for the weights `train-demo` makes)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
MODEL_CONFIG_DIR = CONFIG_DIR / "models"


BUILTIN_DIR = ROOT / "checkpoints"  # weights trained here and committed (checkpoints/shapes/)
BUILTIN_PREFIX = "builtin:"


def builtin_dir() -> Path:
    """The committed checkpoints/, or $T2I_BUILTIN: another training of the built-in models (e.g. a
    seed sweep) is written there by `train-demo` and read from there by the presets and ShapesBench,
    and the tracked files stay as they are."""
    return Path(os.environ.get("T2I_BUILTIN") or BUILTIN_DIR)


def resolve_weights_file(name: str) -> str:
    """"builtin:shapes/x.pt" -> a path under builtin_dir(); anything else as given."""
    return str(builtin_dir() / name[len(BUILTIN_PREFIX):]) if name.startswith(BUILTIN_PREFIX) else name


def component_weights(ref: str) -> Path:
    """A diffusion component's `weights`: "builtin:..." (trained here), an absolute path, or a path under
    checkpoints/ (where `python -m t2i download` puts it)."""
    if ref.startswith(BUILTIN_PREFIX) or Path(ref).is_absolute():
        return Path(resolve_weights_file(ref))
    return checkpoints_dir() / ref


def checkpoints_dir() -> Path:
    return Path(os.environ.get("T2I_CHECKPOINTS") or ROOT / "checkpoints")


def clip_cache_dir() -> Path:
    return checkpoints_dir() / "clip"


def weights_registry() -> Path:
    """configs/weights.yaml, or $T2I_WEIGHTS_REGISTRY (e.g. an operator's own mirrors)."""
    return Path(os.environ.get("T2I_WEIGHTS_REGISTRY") or CONFIG_DIR / "weights.yaml")
