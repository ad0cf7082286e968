"""Turning a run into files: the animated GIF of the frames and the PNG that carries its parameters.

The PNG carries its parameters twice: under `parameters` in AUTOMATIC1111's text form (t2i/output/infotext.py),
which other tools (image browsers, sites, A1111's "PNG Info") read, and under `t2i` as the complete
JSON object (prompt, seed, preset, family, size, the family's options, versions), so an image found on
disk says exactly how to make it again.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from importlib import metadata

import imageio.v3 as iio
import numpy as np
from PIL import Image, PngImagePlugin

from .. import __version__
from ..errors import T2IError
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


# The most text read from one PNG: its `t2i` and `parameters` chunks together, counted as stored and
# as inflated. Ours hold a few KB; a visitor's file may claim anything, and all of it would be parsed
# in a page's thread (README, "Open a PNG"). Other text chunks are skipped unread.
MAX_PNG_TEXT_BYTES = 64 * 1024
# Chunks walked at most: libpng writes 8 KB IDAT chunks, so this covers 512 MB of image data, far past
# the upload cap; a file of millions of empty chunks stops here instead of looping over all of them.
MAX_PNG_CHUNKS = 65536
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_KEY_BYTES = 80  # a text chunk's keyword is 1 to 79 Latin-1 bytes and a NUL


class PngTextError(T2IError):
    """A PNG's parameters are past what is read (MAX_PNG_TEXT_BYTES); the message says so in one line."""


def _json_object(text) -> dict | None:
    try:
        found = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # RecursionError: "[[[[..." past the interpreter's depth
        return None
    return found if isinstance(found, dict) else None


def _too_much(key: str) -> PngTextError:
    return PngTextError(f"This PNG's `{key}` text is over {MAX_PNG_TEXT_BYTES // 1024} KB (ours hold a few KB): "
                        "not read.")


def _inflate(data: bytes, budget: int, key: str) -> bytes | None:
    """A compressed text's bytes, never more than `budget` of them (a zTXt of a few KB may inflate to
    gigabytes); None when the stream is broken or cut short."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, budget + 1)
    except zlib.error:
        return None
    if len(out) > budget:
        raise _too_much(key)
    return out if inflater.eof else None


def _stored_text(kind: bytes, key: str, body: bytes, budget: int) -> tuple[bytes, str] | None:
    """The text bytes of a tEXt, zTXt or iTXt chunk (`body`: what follows its keyword's NUL) and their
    encoding; None when broken (Pillow skips such chunks too)."""
    if kind == b"tEXt":
        return body, "latin-1"
    if kind == b"zTXt":
        inflated = _inflate(body[1:], budget, key) if body[:1] == b"\0" else None
        return None if inflated is None else (inflated, "latin-1")
    compressed, method, rest = body[:1], body[1:2], body[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    if compressed == b"\1":
        text = _inflate(text, budget, key) if method == b"\0" else None
    return None if text is None else (text, "utf-8")


def png_chunks(png: bytes, limit: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, data length) of each whole chunk of a PNG, in order, after the signature (which
    the caller has checked); the chunk is png[offset:offset + 12 + length] (length, type, data, CRC).
    A file cut short ends at its last whole chunk; at most `limit` chunks are walked."""
    pos = len(PNG_SIGNATURE)
    for _ in itertools.count() if limit is None else range(limit):
        if pos + 12 > len(png):
            return
        length, kind = struct.unpack_from(">I4s", png, pos)
        if pos + 12 + length > len(png):
            return
        yield kind, pos, length
        pos += 12 + length


def png_text(png: bytes, keys: tuple[str, ...] = (JSON_KEY, PARAMETERS_KEY)) -> dict[str, str] | None:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG under `keys`, by walking its chunks: no pixel is
    decoded. None when the bytes are no PNG. Raises PngTextError past MAX_PNG_TEXT_BYTES.

    Why not Pillow: `Image.open(...).text` loads the whole image to find text placed after the pixel
    data (measured: 563 MB for a 420 KB 12000x12000 PNG), `.info` misses such text, and a large enough
    image is refused as a decompression bomb before any text is read."""
    if not png.startswith(PNG_SIGNATURE):
        return None
    found, used = {}, 0
    for kind, pos, length in png_chunks(png, MAX_PNG_CHUNKS):
        start, end = pos + 8, pos + 8 + length
        if kind == b"IEND":
            break
        if kind not in TEXT_CHUNKS:
            continue
        key, nul, _ = png[start:start + _KEY_BYTES].partition(b"\0")
        name = key.decode("latin-1")
        if not nul or name not in keys:
            continue
        if used + length > MAX_PNG_TEXT_BYTES:
            raise _too_much(name)
        data = png[start:end]
        if zlib.crc32(kind + data) != struct.unpack_from(">I", png, end)[0]:
            continue  # damaged: as if absent
        stored = _stored_text(kind, name, data[len(key) + 1:], MAX_PNG_TEXT_BYTES - used)
        if stored is None:
            continue
        used += max(length, len(stored[0]))
        try:
            found[name] = stored[0].decode(stored[1])  # a later chunk of the same key wins, as in Pillow
        except UnicodeDecodeError:
            continue  # an iTXt that is no UTF-8: Pillow skips it too
    return found


def read_parameters(png: bytes) -> dict | None:
    """The parameters a PNG carries: our JSON (under `t2i`; under `parameters` in files made before
    issue 19), else the `parameters` text of another tool (A1111's infotext, parse_infotext's dict).
    None when the file is no PNG or has neither chunk; PngTextError (one line) when its text is over
    MAX_PNG_TEXT_BYTES. Reads the text chunks only: the pixels are never decoded (png_text)."""
    text = png_text(png)
    if text is None:
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
