"""A corpus of what a hostile visitor brings: PNGs for "Open a PNG" and option values for a submit.

Used by the chaos run (scripts/chaos.py) and open to any test. Each PNG case is a name and a function
returning the file's bytes (built here, byte by byte, so no case needs a fixture file or decodes
pixels to be made); each option case is a name and the fields a page would pass to submit_job. Every
case is something the service must refuse (with one line) or read in bounded time and memory:

    hostile_pngs()        {name: () -> bytes}
    hostile_options()     {name: {"prompt": ..., "preset": ..., **fields}}
    typing_problems(d)    what of read_parameters' dict gets past the Generate page's form filling
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from functools import lru_cache

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Just under 64 KB: the size the issue's stall was found at (about 30 s of regex), and the cap on
# what is read of a PNG's text that the fix documents; a parser must take this much in linear time.
TEXT_BYTES = 64 * 1024 - 100


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int = 1, height: int = 1, *, text: dict[str, str] | None = None, itxt: dict[str, str] | None = None,
        idat: bytes | None = None, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG with text chunks before its pixels; `idat` the compressed rows (default: zero rows of a
    small image; a large image's rows come from zero_rows)."""
    row = 1 + math.ceil(width * depth / 8) * (3 if colour == 2 else 1)
    pixels = idat if idat is not None else zlib.compress(b"\0" * (row * height))
    out = [PNG_SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    for key, value in (text or {}).items():
        out.append(chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    for key, value in (itxt or {}).items():
        out.append(chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8", "surrogatepass")))
    out += [chunk(b"IDAT", pixels), chunk(b"IEND", b"")]
    return b"".join(out)


@lru_cache(maxsize=4)
def zero_rows(width: int, height: int, channels: int) -> bytes:
    """The zlib stream of `height` zero rows (filter byte 0, black pixels), compressed row by row so
    that the raw rows are never in memory at once."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels)
    return b"".join(z.compress(row) for _ in range(height)) + z.flush()


def _json_png(record) -> bytes:
    return png(itxt={"t2i": json.dumps(record)})


def hostile_pngs() -> dict:
    """name -> a function returning the PNG's bytes."""
    line = "a" * TEXT_BYTES
    return {
        "64 KB parameters line without a colon": lambda: png(text={"parameters": line}),
        "1 MB parameters line without a colon": lambda: png(text={"parameters": "a" * 2**20}),
        "64 KB of 'a ' words then a pair": lambda: png(text={"parameters": "a " * (TEXT_BYTES // 2) + "x: 1"}),
        "64 KB of commas after a key": lambda: png(text={"parameters": "Steps: " + "," * TEXT_BYTES}),
        "64 KB of '\\\"' in a quoted value": lambda: png(text={"parameters": 'Steps: "' + '\\"' * (TEXT_BYTES // 2)}),
        "12000x12000 pixels (about 420 KB)": lambda: png(12000, 12000, colour=2, text={"parameters": "a cat, Steps: 5"},
                                                         idat=zero_rows(12000, 12000, 3)),
        "decompression bomb (20000x20000)": lambda: png(20000, 20000, text={"parameters": "a cat"}, idat=b"x\x9c"),
        "upscale: 5": lambda: _json_png({"prompt": "a cat", "upscale": 5}),
        "size: 5": lambda: _json_png({"prompt": "a cat", "size": 5}),
        "requested_size: a string": lambda: _json_png({"prompt": "a cat", "requested_size": "64x64"}),
        "seed: a list": lambda: _json_png({"prompt": "a cat", "seed": [1, 2]}),
        "prompt: a number": lambda: _json_png({"prompt": 5}),
        "lone surrogate in the prompt": lambda: png(itxt={"t2i": '{"prompt": "a \\ud800 cat"}'}),
        "lone surrogate in infotext": lambda: png(itxt={"parameters": "a \ud800 cat\nSteps: 5, Seed: 1, Size: 64x64"}),
        "JSON nested 30000 deep": lambda: png(itxt={"t2i": "[" * 30_000 + "]" * 30_000}),
        "a 60000-digit seed": lambda: png(text={"parameters": "a cat\nSteps: 5, Seed: " + "9" * 60_000 + ", Size: 1x1"}),
        "not a PNG": lambda: b"GIF89a" + b"\0" * 100,
        "empty file": lambda: b"",
        "truncated PNG": lambda: png(text={"parameters": "a cat, Steps: 5"})[:40],
    }


# Options that may be accepted once cleaned (make_spec drops a lone surrogate from a prompt, as it
# drops other characters no font draws): the stored job must hold no such text.
CLEANED = {"lone surrogate in the prompt"}


def hostile_options() -> dict:
    """name -> the fields of a submit (prompt and preset included), each to be refused with one line
    (or, the CLEANED ones, accepted without the hostile text)."""
    guided = dict(prompt="a cat", preset="tiny-vqgan-untrained", iterations=2, cutn=2)
    gan = dict(prompt="a cat", preset="tiny-gan-untrained", steps=2)
    return {
        "width 10**9": {**guided, "width": 10**9},
        "height 1e309": {**guided, "height": "1e309"},
        "width NaN": {**guided, "width": float("nan")},
        "width a list": {**guided, "width": [64, 64]},
        "width a dict": {**guided, "width": {"a": 1}},
        "negative iterations": {**guided, "iterations": -5},
        "iterations NaN": {**guided, "iterations": "nan"},
        "iterations 10**12": {**guided, "iterations": 10**12},
        "cutn 10**12": {**guided, "cutn": 10**12},
        "lr inf": {**guided, "lr": float("inf")},
        "seed 2**70": {**guided, "seed": 2**70},
        "save_every 0": {**guided, "save_every": 0},
        "unknown field": {**guided, "bogus": 1},
        "another family's field": {**guided, "guidance": 3},
        "steps a string": {**gan, "steps": "many"},
        "num_samples 10**6": {**gan, "num_samples": 10**6},
        "overlong prompt (100000 chars)": {**guided, "prompt": "a cat " * 16_667},
        "prompt of 10000 parts": {**guided, "prompt": "a | " * 10_000},
        "prompt a number": {**guided, "prompt": 5},
        "prompt None": {**guided, "prompt": None},
        "empty prompt": {**guided, "prompt": "   "},
        "lone surrogate in the prompt": {**guided, "prompt": "a \ud800 cat"},
        "upscale 5": {**guided, "upscale": 5},
        "unknown upscaler": {**guided, "upscale": "x" * 1000},
        "unknown preset": {**guided, "preset": "no-such-preset" + "x" * 500},
        "preset a number": {**guided, "preset": 5},
    }


def _encodable(value) -> bool:
    try:
        str(value).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def typing_problems(params, offered: list[str] | None = None) -> list[str]:
    """What the Generate page's form would get from read_parameters' answer that it could not take. The
    page fills its form through refill.form_values, which leaves each wrongly typed field out and names
    it; a problem is what gets past that: an error raised, a value that is not text or is no UTF-8
    (the page cannot send it to the browser), a note of more than one line. None has none."""
    if params is None:
        return []
    from t2i.assets.weights import ready_presets
    from t2i.service.refill import form_values

    try:
        filled = form_values(params, offered or ready_presets(), None)
    except Exception as e:  # noqa: BLE001 - whatever escapes reaches the page's callback
        return [f"form_values raised {type(e).__name__}: {str(e)[:80]}"]
    problems = [f"{key} is {value!r:.40}" for key, value in filled.values.items()
                if not isinstance(value, str) or not _encodable(value)]
    note = filled.note()
    if note is not None and ("\n" in note or not _encodable(note)):
        problems.append(f"the note is not one line of text: {note!r:.60}")
    return problems
