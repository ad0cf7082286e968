"""User input: the JobSpec and the one place that checks it.

Every entry point (CLI now, queue and web pages later) turns raw input into a JobSpec through
`make_spec`, so the limits in ../shared/DESIGN.md live here and nowhere else. A rejected input raises
SpecError, whose message is one line naming the field; nothing has been written by then.
"""

from __future__ import annotations

import base64
import io
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace

from PIL import Image

# Limits. `Limits` lets an operator lower the caps (never raise them past the hard ones).
MAX_PROMPT_CHARS = 1000
MAX_PROMPT_PARTS = 8
WEIGHT_RANGE = (-10.0, 10.0)
STOP_RANGE = (-5.0, 5.0)  # spherical distances lie in [0, pi^2/2]; sign follows the weight
SIDE_RANGE = (64, 1024)
MAX_ITERATIONS = 5000
CUTN_RANGE = (1, 256)
MAX_SEED = 2**63 - 1
LR_RANGE = (1e-5, 10.0)
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_PROMPTS = 4


class SpecError(ValueError):
    """Bad user input. str(e) is a one-line message naming the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Limits:
    """Caps the operator may lower (e.g. a public server with small GPUs)."""

    max_side: int = SIDE_RANGE[1]
    max_iterations: int = MAX_ITERATIONS
    max_cutn: int = CUTN_RANGE[1]

    @classmethod
    def from_env(cls) -> "Limits":
        """T2I_MAX_SIDE, T2I_MAX_ITERATIONS, T2I_MAX_CUTN (the web app reads these)."""
        import os

        return cls(max_side=int(os.environ.get("T2I_MAX_SIDE", SIDE_RANGE[1])),
                   max_iterations=int(os.environ.get("T2I_MAX_ITERATIONS", MAX_ITERATIONS)),
                   max_cutn=int(os.environ.get("T2I_MAX_CUTN", CUTN_RANGE[1])))


@dataclass(frozen=True)
class PromptPart:
    text: str
    weight: float = 1.0
    stop: float = -math.inf


@dataclass(frozen=True)
class JobSpec:
    """A validated request. Images are kept as their (checked) encoded bytes."""

    prompt: str
    preset: str
    width: int
    height: int
    iterations: int
    cutn: int
    lr: float
    save_every: int
    seed: int | None = None
    init_image: bytes | None = None
    image_prompts: tuple[bytes, ...] = field(default_factory=tuple)

    @property
    def parts(self) -> list[PromptPart]:
        return parse_prompt(self.prompt)

    @property
    def batch_key(self) -> str:
        return batch_key(self.preset, self.width, self.height, self.cutn)

    def to_dict(self) -> dict:
        """JSON-safe form (images base64) for the queue and the PNG metadata."""
        d = asdict(self)
        d["init_image"] = _b64(self.init_image) if self.init_image else None
        d["image_prompts"] = [_b64(b) for b in self.image_prompts]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "JobSpec":
        d = dict(d)
        d["init_image"] = base64.b64decode(d["init_image"]) if d.get("init_image") else None
        d["image_prompts"] = tuple(base64.b64decode(b) for b in d.get("image_prompts") or ())
        return cls(**d)

    def with_(self, **changes) -> "JobSpec":
        return replace(self, **changes)


def batch_key(preset: str, width: int, height: int, cutn: int) -> str:
    """Jobs with equal keys can share a batch: their latents and cutouts have the same shapes."""
    return f"{preset}|{width}x{height}|{cutn}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- prompt -------------------------------------------------------------------------------------

# "inf" and "nan" count as numbers here so that they reach the range checks and are rejected there.
_NUMBER = re.compile(r"^\s*[-+]?((\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|inf|nan)\s*$", re.IGNORECASE)
_KEPT_FORMAT_CHARS = {"\u200c", "\u200d"}  # zero-width (non-)joiners build emoji and Indic words


def clean_text(text: str) -> str:
    """Whitespace collapsed, control characters dropped (they never reach a model or a page)."""
    text = "".join(" " if ch in "\t\n\r" else ch for ch in text)
    text = "".join(ch for ch in text if ch in _KEPT_FORMAT_CHARS
                   or unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    return " ".join(text.split())


def _split_part(raw: str) -> tuple[str, float, float]:
    # Parse numbers from the right only, so text containing ':' ("4:3 photo", "a: b") stays text.
    pieces = raw.split(":")
    if len(pieces) >= 3 and _NUMBER.match(pieces[-1]) and _NUMBER.match(pieces[-2]):
        return ":".join(pieces[:-2]), float(pieces[-2]), float(pieces[-1])
    if len(pieces) >= 2 and _NUMBER.match(pieces[-1]):
        return ":".join(pieces[:-1]), float(pieces[-1]), -math.inf
    return raw, 1.0, -math.inf


def parse_prompt(prompt: str) -> list[PromptPart]:
    """`text[:weight[:stop]]` parts separated by `|`. Raises SpecError on bad parts."""
    raw_parts = prompt.split("|")
    if len(raw_parts) > MAX_PROMPT_PARTS:
        raise SpecError("prompt", f"at most {MAX_PROMPT_PARTS} '|'-separated parts, got {len(raw_parts)}")
    parts = []
    for i, raw in enumerate(raw_parts, 1):
        text, weight, stop = _split_part(raw)
        text = clean_text(text)
        if not text:
            raise SpecError("prompt", f"part {i} has no text")
        if not (WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]) or math.isnan(weight):
            raise SpecError("prompt", f"part {i} weight {weight:g} is outside [{WEIGHT_RANGE[0]:g}, {WEIGHT_RANGE[1]:g}]")
        if stop != -math.inf and not (STOP_RANGE[0] <= stop <= STOP_RANGE[1]):
            raise SpecError("prompt", f"part {i} stop {stop:g} is outside [{STOP_RANGE[0]:g}, {STOP_RANGE[1]:g}]")
        parts.append(PromptPart(text, weight, stop))
    if all(p.weight == 0 for p in parts):
        raise SpecError("prompt", "at least one part needs a non-zero weight")
    return parts


def clean_prompt(prompt) -> str:
    if not isinstance(prompt, str):
        raise SpecError("prompt", "must be text")
    # Clean each part but keep the separators, so the stored prompt is what was parsed.
    cleaned = "|".join(clean_text(p) for p in prompt.split("|"))
    if not cleaned.strip("| "):
        raise SpecError("prompt", "is empty")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise SpecError("prompt", f"is {len(cleaned)} characters; the limit is {MAX_PROMPT_CHARS}")
    parse_prompt(cleaned)
    return cleaned


# --- numbers ------------------------------------------------------------------------------------

def _int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise SpecError(name, f"must be a whole number, got {value!r}")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else value
    except ValueError:
        raise SpecError(name, f"must be a whole number, got {value!r}") from None
    if not isinstance(number, int):
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        else:
            raise SpecError(name, f"must be a whole number, got {value!r}")
    if not lo <= number <= hi:
        raise SpecError(name, f"must be between {lo} and {hi}, got {number}")
    return number


def _float(name: str, value, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(name, f"must be a number, got {value!r}") from None
    if not lo <= number <= hi:  # also rejects NaN
        raise SpecError(name, f"must be between {lo:g} and {hi:g}, got {value!r}")
    return number


def round_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Round a validated size down to the generator's factor (the used size is reported)."""
    return max(factor, width // factor * factor), max(factor, height // factor * factor)


# --- images -------------------------------------------------------------------------------------

def check_image(name: str, data: bytes) -> bytes:
    """Type, bytes and pixels checked before the image is decoded or stored."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise SpecError(name, "is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise SpecError(name, f"is {len(data) / 2**20:.1f} MB; the limit is {MAX_IMAGE_BYTES // 2**20} MB")
    try:
        # Image.open reads the header only, so the size check below runs before any decoding:
        # that is the decompression-bomb guard.
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            if fmt not in IMAGE_FORMATS:
                raise SpecError(name, f"must be PNG, JPEG or WebP, got {fmt}")
            if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE:
                raise SpecError(name, f"is {w}x{h}; the limit is {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}")
            im.load()
    except SpecError:
        raise
    except Exception as e:  # PIL raises many types for junk input
        raise SpecError(name, f"is not a readable image ({type(e).__name__})") from None
    return bytes(data)


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


# --- the one entry point ------------------------------------------------------------------------

DEFAULTS = dict(width=300, height=300, iterations=300, cutn=32, lr=0.1, save_every=10)


def make_spec(prompt, preset: str, *, width=None, height=None, iterations=None, cutn=None, lr=None,
              save_every=None, seed=None, init_image: bytes | None = None,
              image_prompts=(), limits: Limits = Limits(), defaults: dict | None = None) -> JobSpec:
    """Validate raw input (strings or numbers) into a JobSpec. `defaults` come from the preset."""
    d = {**DEFAULTS, **(defaults or {})}
    pick = lambda v, k: d[k] if v is None or v == "" else v  # noqa: E731
    if not isinstance(preset, str) or not preset.strip():
        raise SpecError("preset", "is empty")
    iterations = _int("iterations", pick(iterations, "iterations"), 1, min(limits.max_iterations, MAX_ITERATIONS))
    save_every = _int("save_every", pick(save_every, "save_every"), 1, MAX_ITERATIONS)
    image_prompts = tuple(image_prompts or ())
    if len(image_prompts) > MAX_IMAGE_PROMPTS:
        raise SpecError("image_prompts", f"at most {MAX_IMAGE_PROMPTS}, got {len(image_prompts)}")
    max_side = min(limits.max_side, SIDE_RANGE[1])
    return JobSpec(
        prompt=clean_prompt(prompt),
        preset=preset.strip(),
        width=_int("width", pick(width, "width"), SIDE_RANGE[0], max_side),
        height=_int("height", pick(height, "height"), SIDE_RANGE[0], max_side),
        iterations=iterations,
        cutn=_int("cutn", pick(cutn, "cutn"), CUTN_RANGE[0], min(limits.max_cutn, CUTN_RANGE[1])),
        lr=_float("lr", pick(lr, "lr"), *LR_RANGE),
        save_every=save_every,
        seed=None if seed is None or seed == "" else _int("seed", seed, 0, MAX_SEED),
        init_image=None if init_image is None else check_image("init_image", init_image),
        image_prompts=tuple(check_image(f"image_prompt {i}", b) for i, b in enumerate(image_prompts, 1)),
    )
