"""Turning a run into files: the animated GIF of the frames and the PNG that carries its parameters.

The PNG carries its parameters twice: under `parameters` in AUTOMATIC1111's text form (t2i/output/infotext.py),
which other tools (image browsers, sites, A1111's "PNG Info") read, and under `t2i` as the complete
JSON object (prompt, seed, preset, family, size, the family's options, versions), so an image found on
disk says exactly how to make it again.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict
from importlib import metadata

import imageio.v3 as iio
import numpy as np
from PIL import Image, PngImagePlugin

from .. import __version__
from .infotext import parse_infotext, to_infotext
from ..store.uploads import ref

PARAMETERS_KEY = "parameters"  # A1111's text; before issue 19 our JSON
JSON_KEY = "t2i"
_VERSIONED = ("torch", "open_clip_torch", "taming-transformers-rom1504", "pytorch-pretrained-biggan", "diffusers")


def versions() -> dict[str, str]:
    found = {"t2i": __version__}
    for dist in _VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def parameters(spec, result, preset) -> dict:
    """What the PNG records: enough to repeat the run. Images are noted by their SHA-256 (the key of
    their upload in the job database), never embedded."""
    return {
        "prompt": spec.prompt, "preset": spec.preset, "family": spec.family, "models": preset.models_label,
        "untrained": preset.untrained, "seed": result.seed,
        "size": [result.width, result.height], "requested_size": [spec.width, spec.height],
        # the post-steps, and the size the family made before them (the PNG is `size`)
        "upscale": list(spec.upscale), "generated_size": list(result.upscaled_from or (result.width, result.height)),
        **asdict(spec.options), "save_every": spec.save_every,
        "init_image": spec.init_image is not None, "image_prompts": len(spec.image_prompts),
        "init_image_sha256": ref(spec.init_image)["upload"] if spec.init_image is not None else None,
        "image_prompts_sha256": [ref(b)["upload"] for b in spec.image_prompts],
        "versions": versions(),
    }


def png_bytes(image: Image.Image, params: dict) -> bytes:
    info = PngImagePlugin.PngInfo()
    # As A1111 writes it: tEXt when the text is Latin-1, else iTXt (UTF-8).
    info.add_text(PARAMETERS_KEY, to_infotext(params))
    info.add_itxt(JSON_KEY, json.dumps(params, ensure_ascii=False, sort_keys=True))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _json_object(text) -> dict | None:
    try:
        found = json.loads(text)
    except (TypeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def read_parameters(png: bytes) -> dict | None:
    """The parameters a PNG carries: our JSON (under `t2i`; under `parameters` in files made before
    issue 19), else the `parameters` text of another tool (A1111's infotext, parse_infotext's dict).
    None when the file is no readable image or has neither chunk."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            text = dict(getattr(im, "text", None) or {})
    except (OSError, ValueError, SyntaxError):  # not an image, or a truncated or broken one
        return None
    for key in (JSON_KEY, PARAMETERS_KEY):
        found = _json_object(text.get(key))
        if found is not None:
            return found
    infotext = text.get(PARAMETERS_KEY)
    return parse_infotext(infotext) if isinstance(infotext, str) and infotext.strip() else None


def gif_bytes(frames: list[Image.Image], fps: float = 10.0, hold_last: float = 1.0) -> bytes:
    """Animated GIF; the last frame is held a little longer so the result is visible.

    Pillow merges identical consecutive frames into one (adding their durations), so a run whose
    image stood still for a while has fewer GIF frames than `frames`, but the same running time.
    """
    size = frames[-1].size
    arrays = [np.asarray(f.convert("RGB").resize(size)) for f in frames]
    durations = [1000 / fps] * (len(arrays) - 1) + [1000 * hold_last]
    # Pillow writes a lone frame through a path that takes one number, not a list.
    duration = durations if len(durations) > 1 else durations[0]
    return iio.imwrite("<bytes>", np.stack(arrays), extension=".gif", duration=duration, loop=0)


def thumbnail_bytes(image: Image.Image, side: int = 160) -> bytes:
    """A small JPEG for gallery grids, so pages never load full images to list them."""
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def image_png(image: Image.Image) -> bytes:
    """A progress frame as PNG (no metadata)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


GRID_PADDING = 2   # pixels between and around the samples of a grid (families/shared.py's `grid` draws it)


def grid_layout(n: int) -> tuple[int, int]:
    """(columns, rows) of a grid of n samples: near-square, as families/shared.py's `grid` draws it with
    make_grid (for the diffusion, glide and gan families)."""
    columns = min(n, math.ceil(math.sqrt(n)))
    return columns, math.ceil(n / columns)


def split_grid(image: Image.Image, n: int, cell: tuple[int, int], padding: int = GRID_PADDING) -> list[Image.Image]:
    """The n samples of a grid image whose samples were cell = (width, height) pixels when the grid
    was made, in row-major order, the grid maybe enlarged since as a whole by an integer factor
    (an upscaler post-step). [] when the image's size fits no such layout (then there is no
    telling where the samples are). Torch-free: the pages split what the families drew."""
    if n < 2:
        return []
    columns, rows = grid_layout(n)
    made = (columns * (cell[0] + padding) + padding, rows * (cell[1] + padding) + padding)
    factor = image.width // made[0]
    if factor < 1 or image.size != (factor * made[0], factor * made[1]):
        return []
    samples = []
    for k in range(n):
        x = factor * (padding + (k % columns) * (cell[0] + padding))
        y = factor * (padding + (k // columns) * (cell[1] + padding))
        samples.append(image.crop((x, y, x + factor * cell[0], y + factor * cell[1])))
    return samples


def grid_samples(png: bytes, params: dict) -> list[Image.Image]:
    """Each sample of a several-sample result (params: its parameters, num_samples and the size each
    sample was made at, `generated_size`, else `size`); [] for a single image or a PNG that is no
    such grid."""
    n = params.get("num_samples")
    cell = params.get("generated_size") or params.get("size")
    if not isinstance(n, int) or n < 2 or not (isinstance(cell, list) and len(cell) == 2):
        return []
    try:
        with Image.open(io.BytesIO(png)) as im:
            image = im.convert("RGB")
    except (OSError, ValueError, SyntaxError):
        return []
    return split_grid(image, n, (int(cell[0]), int(cell[1])))
