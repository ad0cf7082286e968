"""Weights on disk: configs/weights.yaml's entries, which of them a preset needs, and whether their
files are present (at the listed length, where the registry knows it).

Files live under checkpoints/ (or $T2I_CHECKPOINTS) at the paths configs/weights.yaml gives; CLIP
weights live in open_clip's own cache under checkpoints/clip. Nothing here builds models (the
pipelines import this module): t2i/assets/install.py fetches a preset's files and proves them by building.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import PresetError, WeightsMissing
from ..paths import (BUILTIN_PREFIX, builtin_dir, checkpoints_dir, clip_cache_dir, component_weights, resolve_weights_file, weights_registry)
from ..families import family
from ..families.record import WeightsPlan
from ..presets import Preset, all_presets


HF_ENDPOINT = "https://huggingface.co"
ENTRY_KEYS = {"kind", "files", "builtin", "repo", "revision", "endpoints"}


@dataclass(frozen=True)
class WeightsFile:
    urls: tuple[str, ...] = ()     # mirrors, tried in order (hub entries: none, the endpoints serve them)
    size: int | None = None        # bytes; None where no source confirms it (the server's length is checked then)
    sha256: str | None = None      # hex digest, where a source gives it: checked before the file takes its name


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    kind: str                      # taming | biggan | glide | esrgan | srcnn | hf
    files: dict[str, WeightsFile]  # path under checkpoints/ -> where it comes from and its length
    builtin: bool = False          # committed in the repository, made by `train-demo`
    repo: str | None = None        # hf: the hub repository; its files go to checkpoints/<name>/
    revision: str = "main"         # hf: branch, tag or commit
    endpoints: tuple[str, ...] = ()  # hf: hub endpoints tried in order

    @property
    def base(self) -> Path:
        return builtin_dir() if self.builtin else checkpoints_dir()

    def path(self, suffix: str) -> Path:
        """The file with this suffix (".yaml", ".ckpt", "config.json", ...)."""
        return self.base / next(f for f in self.files if f.endswith(suffix))

    @property
    def directory(self) -> Path:
        return (self.base / next(iter(self.files))).parent

    def hub_path(self, rel: str) -> str:
        """hf: the repository path of a file listed under checkpoints/<name>/."""
        return rel[len(self.name) + 1:]

    def hub_endpoints(self) -> list[str]:
        """$HF_ENDPOINT first when set (an operator's mirror), then the entry's own, huggingface.co by default."""
        ours = [os.environ["HF_ENDPOINT"]] if os.environ.get("HF_ENDPOINT") else []
        return list(dict.fromkeys(ours + list(self.endpoints or (HF_ENDPOINT,))))

    def problem(self, rel: str) -> str | None:
        """Why this file is not usable yet (its path, or its path and wrong length); None when present."""
        path, size = self.base / rel, self.files[rel].size
        if not path.is_file():
            return str(path)
        have = path.stat().st_size
        if size is not None and have != size:
            return f"{path} ({have} bytes, should be {size})"
        return None

    def missing(self) -> list[str]:
        return [p for p in map(self.problem, self.files) if p]


_PARSED: dict[Path, tuple[tuple[int, int], dict[str, WeightsEntry]]] = {}


def registry(path: Path | None = None) -> dict[str, WeightsEntry]:
    """configs/weights.yaml (or $T2I_WEIGHTS_REGISTRY); a malformed entry is one line naming it.

    Parsed once per version of the file (its mtime and size): the Generate page asks for every size
    its memory check tries, and re-reading the YAML each time was 85% of a page load."""
    source = Path(path or weights_registry())
    try:
        stat = source.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = None  # OmegaConf.load below says what is wrong with the path
    cached = _PARSED.get(source)
    if cached is not None and version is not None and cached[0] == version:
        return dict(cached[1])
    raw = OmegaConf.to_container(OmegaConf.load(source), resolve=True) or {}
    parsed = {name: _entry(name, e, source) for name, e in raw.items()}
    if version is not None:
        _PARSED[source] = (version, parsed)
    return dict(parsed)


def _entry(name: str, raw, source) -> WeightsEntry:
    def bad(what: str):
        return PresetError(f"{source}: entry {name}: {what}")

    if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict) or not raw["files"] or "kind" not in raw:
        raise bad("needs `kind` and a non-empty `files` mapping")
    if set(raw) - ENTRY_KEYS:
        raise bad(f"unknown keys {sorted(set(raw) - ENTRY_KEYS)}")
    hub = raw["kind"] == "hf"
    if hub and not raw.get("repo"):
        raise bad("kind hf needs `repo` (the hub repository)")
    files = {}
    for rel, spec in raw["files"].items():
        if isinstance(spec, list):  # the older form: a plain list of mirror URLs, length unknown
            spec = {"urls": spec}
        if not isinstance(spec, dict) or set(spec) - {"urls", "size", "sha256"}:
            raise bad(f"file {rel}: give `urls` (a list), `size` (bytes, or null where unknown) and optionally `sha256`")
        urls, size, sha256 = spec.get("urls") or [], spec.get("size"), spec.get("sha256")
        if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls) or (hub and urls):
            raise bad(f"file {rel}: `urls` must be a list of URLs" + (" (none for kind hf)" if hub else ""))
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise bad(f"file {rel}: size must be a number of bytes or null, got {size!r}")
        if sha256 is not None and (hub or not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha256))):
            raise bad(f"file {rel}: sha256 must be 64 hex digits" + (" (none for kind hf)" if hub else ""))
        # Hub files are listed by their repository path and kept under checkpoints/<name>/, so every
        # entry's `files` is keyed the same way: by the path under checkpoints/.
        files[f"{name}/{rel}" if hub else rel] = WeightsFile(tuple(urls), size, sha256 and str(sha256).lower())
    return WeightsEntry(name, str(raw["kind"]), files, bool(raw.get("builtin")), raw.get("repo"),
                        str(raw.get("revision") or "main"), tuple(raw.get("endpoints") or ()))


def entry(name: str) -> WeightsEntry:
    reg = registry()
    if name not in reg:
        raise PresetError(f"no preset or weights named {name!r} (see `python -m t2i presets` and {weights_registry()})")
    return reg[name]


def plan(preset: Preset) -> WeightsPlan:
    """The preset's weights as its family names them (t2i/families/record.py's WeightsPlan)."""
    return family(preset.family).weights(preset)


def is_builtin(preset: Preset) -> bool:
    """Trained here and committed (made again by `train-demo`), rather than downloaded."""
    if preset.untrained:
        return False
    p = plan(preset)
    return all(entry(name).builtin for name in p.entries) and all(ref.startswith(BUILTIN_PREFIX) for ref in p.models)


# --- which files a preset needs: the one place that maps a preset to configs/weights.yaml entries ---

def _downloaded(ref) -> bool:
    """A reference to a path under checkpoints/ (not built in, not absolute)."""
    return isinstance(ref, str) and bool(ref) and not ref.startswith(BUILTIN_PREFIX) and not Path(ref).is_absolute()


def _covering(ref: str, reg: dict[str, WeightsEntry]) -> tuple[list[WeightsEntry], bool]:
    """(entries holding `ref`: the one listing that file, else those with files in that folder; exact?)."""
    ref = ref.strip("/")
    exact = [e for e in reg.values() if not e.builtin and ref in e.files]
    if exact:
        return exact, True
    return [e for e in reg.values() if not e.builtin and any(f.startswith(ref + "/") for f in e.files)], False


def _get(reg: dict[str, WeightsEntry], name: str) -> WeightsEntry:
    return reg[name] if name in reg else entry(name)  # entry() says which registry lacks it


def _resolve(preset: Preset, reg: dict[str, WeightsEntry]) -> tuple[list[WeightsEntry], list[str]]:
    """(the entries the preset's files come from, in order; named paths no entry covers). Paths under
    checkpoints/ that the preset names (component weights, a schedule's `from:`) must be covered by an
    entry; path-like params (a tokenizer folder) count only when one covers them, since most params
    are not weights (a config under configs/, a model name)."""
    p = plan(preset)
    chosen = {name: _get(reg, name) for name in p.entries}
    uncovered = []
    named = [ref for ref in p.models + p.needed if _downloaded(ref)]
    refs = [(ref, *_covering(ref, reg)) for ref in dict.fromkeys(named + [v for v in p.params if _downloaded(v)])]
    # Files first, then folders: a folder holding files of several entries (glide/ holds the base
    # model's files and the upsampler's) is covered by an entry already chosen for a file in it,
    # so a base-only preset does not fetch the upsampler for its tokenizer folder.
    for ref, found, _ in sorted(refs, key=lambda r: not r[2]):
        if not found and ref in named:
            uncovered.append(ref)
        elif found and not any(e.name in chosen for e in found):
            chosen.update((e.name, e) for e in found)
    for name in preset.post:  # upscalers the preset runs after each image
        chosen.setdefault(name, _get(reg, name))
    return list(chosen.values()), uncovered


def needed_entries(preset: Preset) -> list[WeightsEntry]:
    """The configs/weights.yaml entries a preset's weights come from (what `download` fetches): those its
    plan names, those covering its paths under checkpoints/, and its post-step upscalers. A named path
    no entry covers is one line naming it."""
    if preset.untrained:
        return []
    entries, uncovered = _resolve(preset, registry())
    if uncovered:
        raise PresetError(f"preset {preset.name}: {uncovered[0]} is in no entry of {weights_registry()} "
                          "(add one with its mirrors, or put the file there yourself)")
    return entries


def download_command(preset_name: str) -> str:
    try:
        preset = all_presets().get(preset_name)
        if preset is not None and is_builtin(preset):
            return "python -m t2i train-demo"
    except PresetError:
        pass
    return f"python -m t2i download {preset_name}"


def _missing_weights(preset: Preset) -> list[str]:
    """The preset's weight files (not CLIP's) that are absent or of the wrong length, torch-free."""
    reg = registry()
    entries, uncovered = _resolve(preset, reg)
    # Paths no entry lists: built in, absolute, or put under checkpoints/ by hand.
    p = plan(preset)
    refs = [ref for ref in p.models + p.needed if not _downloaded(ref)]
    direct = [str(path) for path in map(component_weights, refs + uncovered) if not path.exists()]
    return direct + [path for e in entries for path in e.missing()]


def missing_files(preset: Preset) -> list[str]:
    """Human-readable names of the files this preset still needs (empty: ready to run)."""
    from .clip_cache import cached_weights

    if preset.untrained:
        return []
    missing = _missing_weights(preset)
    p = plan(preset)
    for model, pretrained in p.clip:
        if cached_weights(model, resolve_weights_file(pretrained or ""), clip_cache_dir()) is None:
            missing.append(f"CLIP {model}/{pretrained or 'random'} (in {clip_cache_dir()})")
    for what, ref in p.files:
        if not Path(resolve_weights_file(ref)).is_file():
            missing.append(f"{what} {resolve_weights_file(ref)}")
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
    return preset.untrained or (not _missing_weights(preset) and not missing_files(preset))


def ready_presets() -> list[str]:
    """Presets that can run now, best first: the default when its weights are present, other
    downloaded ones, the built-in shapes set, then the untrained ones."""
    from ..presets import DEFAULT_PRESET, OFFLINE_DEFAULT

    presets = all_presets()
    trained = [n for n, p in presets.items() if not p.untrained and is_ready(p)]
    trained.sort(key=lambda n: (n != DEFAULT_PRESET, is_builtin(presets[n]), n != OFFLINE_DEFAULT, n))
    return trained + [n for n, p in presets.items() if p.untrained]


def default_preset() -> str:
    """The preset to use when none is named: the first ready one."""
    return ready_presets()[0]
