"""Upscalers: networks that enlarge a finished image, run by the Runner as post-steps of a job.

An upscaler is an entry of configs/weights.yaml (or $T2I_WEIGHTS_REGISTRY) of one of these kinds:

    esrgan  an ESRGAN / Real-ESRGAN .pth (t2i/upscale/esrgan.py), loaded through spandrel, the loader
            the big UIs use; it finds the architecture and the scale from the state dict's keys
    srcnn   the 9-5-5 SRCNN of the yjn870/SRCNN-pytorch port (t2i/upscale/srcnn.py): one file per
            factor (x2, x3, x4), applied to the luma of a bicubic enlargement

    names()                    the known upscalers (torch-free: the spec, pages and the CLI list them)
    require(names)             WeightsMissing (one line, the download command, no path) for the first
                               whose file is absent or of the wrong length: checked at submit
    build(name, device)        an Upscaler (t2i/upscale/model.py): .name, .scale, upscaler(image) -> image;
                               WeightsMissing / BrokenWeights (one line) when its file is absent or broken
    load(name, device)         build(), cached per process (the Runner's post-steps use it)

This module is torch-free; the networks are in the submodules, imported by build().
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from ..errors import SpecError, WeightsMissing
from .sizes import FACTORS, KINDS, TILE, TILE_BYTES_PER_PIXEL  # noqa: F401 - the package's names

NONE = "none"         # what a user writes for "no upscaler", overriding a preset's post
MAX_UPSCALERS = 4     # post-steps per job; the final size (spec.MAX_UPSCALED_SIDE) binds long before
DEFAULT_SCALE = 4     # an esrgan entry whose name does not say its scale: ESRGAN files are mostly x4
CACHED = 4            # upscalers kept loaded per process (a Real-ESRGAN x4plus is 67 MB)

def entries() -> dict:
    """name -> WeightsEntry for every upscaler in the weights registry."""
    from ..assets.weights import registry

    return {name: e for name, e in registry().items() if e.kind in KINDS}


def names() -> list[str]:
    return list(entries())


def check(name) -> str:
    """The name if it is a known upscaler, else SpecError naming the known ones."""
    known = entries()
    if isinstance(name, str) and name.strip() in known:
        return name.strip()
    from ..checks import shown

    listed = ", ".join(known) if known else "none are configured"
    raise SpecError("upscale", f"unknown upscaler {shown(name)}; known: {listed} (or {NONE})")


def file_of(name: str) -> Path:
    """The upscaler's weights file (the entry's one file)."""
    e = entries()[name]
    return e.base / next(iter(e.files))


def is_ready(name: str) -> bool:
    """Its file is present (pages mark the others)."""
    return file_of(name).is_file()


def download_command(name: str) -> str:
    """What fetches (or, for one trained here, makes) the upscaler's file."""
    return "python -m t2i train-demo" if entries()[name].builtin else f"python -m t2i download {name}"


def require(names) -> None:
    """Every named upscaler's file is present at its listed length, else WeightsMissing for the first
    that is not. Asked at submit, so that a job is refused with the command that fixes it rather than
    queued to fail in an executor. The line names no path: a visitor reads it (the operator knows where
    checkpoints/ is, and `download` says)."""
    for name in names:
        if entries()[name].missing():
            raise WeightsMissing(f"upscaler {name} has no weights on this server (missing or incomplete): "
                                 f"run `{download_command(name)}`, or choose another upscaler or {NONE}")


_FACTOR = re.compile(r"(?:^|[^a-z0-9])x([1-8])(?![0-9])|(?:^|[^a-z0-9])([1-8])x(?![a-z0-9])", re.IGNORECASE)


def scale_hint(name: str) -> int:
    """The factor an upscaler enlarges by, torch-free, from its name or file name ("srcnn-x3",
    "RealESRGAN_x4plus", "4x-UltraSharp"): for size limits and memory estimates before the file is
    loaded. An ESRGAN file that says nothing is taken as x4 (the loaded model's own scale is what runs)."""
    e = entries().get(name)
    for text in (name, *(Path(f).stem for f in (e.files if e else ()))):
        m = _FACTOR.search(text)
        if m:
            return int(m.group(1) or m.group(2))
    return DEFAULT_SCALE


def post_bytes(names, width: int, height: int, samples: int = 1, cell: tuple[int, int] | None = None) -> int:
    """Peak bytes of running these upscalers in turn on a width x height image (torch-free, for
    t2i/service/memory.py): the largest of one tile's activations plus the images in and out (float32 while
    assembled, then 8-bit), with the weights file twice (read, then as tensors). A several-sample job's
    image is its grid, and each of its `samples` (of `cell` pixels) is upscaled too."""
    found, peak = entries(), 0
    cell = cell or (width, height)
    for name in names:
        kind, scale = found[name].kind, scale_hint(name)
        seen = scale if kind == "srcnn" else 1  # SRCNN runs on the enlarged image
        # Tiles of the grid: the largest image upscaled, so its tiles are the largest too.
        tile = min(width * seen, TILE[kind]) * min(height * seen, TILE[kind])
        pixels = width * height + (samples * cell[0] * cell[1] if samples > 1 else 0)
        weights = file_of(name).stat().st_size if file_of(name).is_file() else 0
        need = TILE_BYTES_PER_PIXEL[kind] * tile + 3 * pixels * (4 * (1 + scale * scale) + scale * scale) + 2 * weights
        peak, width, height = max(peak, need), width * scale, height * scale
        cell = (cell[0] * scale, cell[1] * scale)
    return peak


def build(name: str, device="cpu"):
    """The upscaler `name` on `device`, its file loaded and checked."""
    from .model import build as build_model

    check(name)
    return build_model(name, entries()[name].kind, file_of(name), scale_hint(name), device, download_command(name))


_cache: OrderedDict = OrderedDict()


def load(name: str, device="cpu"):
    """build(), kept for the next job: consecutive jobs with an upscaler do not reload it."""
    key = (name, str(device))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    upscaler = build(name, device)
    _cache[key] = upscaler
    while len(_cache) > CACHED:
        _cache.popitem(last=False)
    return upscaler


def clear() -> None:
    """Forget the loaded upscalers (the executor does after running out of memory)."""
    _cache.clear()
