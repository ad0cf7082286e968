"""Installing a preset's weights: fetch every file it needs (t2i/assets/download.py does one file), then prove
them by building the preset through the real loaders. Apart from weights.py because it builds
models, and the pipelines that build them read weights.py."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .download import fetch, fetch_hub
from ..paths import clip_cache_dir
from ..presets import all_presets
from ..errors import BrokenWeights, PresetError
from .weights import WeightsEntry, entry, is_builtin, needed_entries, plan

UPSCALER_KINDS = ("esrgan", "srcnn")
PRESET_PARTS = ("hf", "glide")  # entries that are parts of a diffusion preset: proved by building one


def fetch_entry(e: WeightsEntry, progress: bool = True) -> list[Path]:
    """Every file of the entry in place at its listed length (a hub entry through huggingface_hub)."""
    if e.kind == "hf":
        files = {e.hub_path(rel): spec.size for rel, spec in e.files.items()}
        return fetch_hub(e.repo, files, e.base / e.name, endpoints=e.hub_endpoints(), revision=e.revision,
                         progress=progress)
    return [fetch(list(spec.urls), e.base / rel, size=spec.size, sha256=spec.sha256, progress=progress)
            for rel, spec in e.files.items()]


def download(name: str, progress: bool = True, verify: bool = True) -> list[str]:
    """Fetch a preset's weights (or one weights entry's) and prove them by loading. Returns lines to print."""
    presets = all_presets()
    if name in presets:
        return _download_preset(presets[name], progress, verify)
    e = entry(name)
    with _kept_only_if_proved([e]):
        fetched = fetch_entry(e, progress)
        if not verify:
            return [f"{name}: {len(fetched)} files present"]
        if e.kind in PRESET_PARTS:
            return [f"{name}: {len(fetched)} files present; {_prove_part(e)}"]
        prove_entry(e)
    return [f"{name}: {len(fetched)} files present and loaded"]


@contextmanager
def _kept_only_if_proved(entries):
    """Files that this run fetches are deleted again when loading them fails (BrokenWeights), so that
    running the download again fetches them anew instead of finding them present. Files that were
    there before are left alone: they may be someone's only copy."""
    paths = [x.base / rel for x in entries for rel in x.files]
    absent = [p for p in paths if not p.exists()]
    try:
        yield
    except BrokenWeights as err:
        removed = [p for p in absent if p.is_file()]
        for p in removed:
            p.unlink()
        if removed:
            raise BrokenWeights(f"{err}; removed the {len(removed)} file{'s' * (len(removed) != 1)} just downloaded "
                                f"(run again to fetch anew)") from None
        raise


def _download_preset(preset, progress: bool, verify: bool) -> list[str]:
    from .clip_cache import download_weights
    from ..families import build_pipeline

    name = preset.name
    if preset.untrained:
        return [f"{name}: untrained preset, nothing to download"]
    if is_builtin(preset):
        return [f"{name}: built in (checkpoints/); `python -m t2i train-demo` makes it again"]
    entries = needed_entries(preset)
    with _kept_only_if_proved(entries):  # needed_entries includes the upscalers
        fetched = [path for e in entries for path in fetch_entry(e, progress)]
        for model, pretrained in plan(preset).clip:
            fetched.append(download_weights(model, pretrained, clip_cache_dir()))
        if verify:
            build_pipeline(preset, device="cpu")
            for up in preset.post:  # the pipeline may build its upscalers lazily: prove them here
                prove_entry(entry(up))
    return [f"{name}: {len(fetched)} files present and loaded"]


def prove_entry(e: WeightsEntry) -> None:
    """Load one entry's files through the loader its kind names (a broken file raises BrokenWeights)."""
    if e.kind in UPSCALER_KINDS:
        from ..upscale import build

        build(e.name, "cpu")
    else:
        from ..families.guided.build import load_generator_weights

        load_generator_weights(e)


def _prove_part(e: WeightsEntry) -> str:
    """A diffusion preset's part is proved by building a preset that uses it, once all its parts are here."""
    from ..families import build_pipeline

    users = [p for p in all_presets().values() if not p.untrained and e.name in _entry_names(p)]
    ready = [p for p in users if not any(x.missing() for x in needed_entries(p))]
    if ready:
        build_pipeline(ready[0], device="cpu")
        return f"loaded as preset {ready[0].name}"
    if users:
        return f"not loaded yet: `python -m t2i download {users[0].name}` fetches the rest of a preset using it"
    return "not loaded: no preset uses it"


def _entry_names(preset) -> set[str]:
    try:
        return {x.name for x in needed_entries(preset)}
    except PresetError:  # another preset's broken reference is not this download's business
        return set()
