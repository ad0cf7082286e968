"""User input: the JobSpec and the one place that checks it.

Every entry point (CLI, queue, web pages) turns raw input into a JobSpec through `make_spec`, so the
input limits of the project's design notes live here and nowhere else: the common fields (prompt, size, seed, frame
cadence, images) here, each family's own fields in its torch-free Options (t2i/families/), which
`make_spec` dispatches to. A rejected input raises SpecError, whose message is one line naming the
field; nothing has been written by then.
"""

from __future__ import annotations

import base64
import io
import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace

from PIL import Image

from .errors import SpecError
from .families import DEFAULT_FAMILY, family as family_of, option_names
from .families.options import Options
from .checks import shown, whole
from .store.uploads import Upload, UploadRef, ref

# Limits. `Limits` lets an operator lower the caps (never raise them past the hard ones).
MAX_PROMPT_CHARS = 1000
MAX_PROMPT_PARTS = 8
WEIGHT_RANGE = (-10.0, 10.0)
STOP_RANGE = (-5.0, 5.0)  # spherical distances lie in [0, pi^2/2]; sign follows the weight
SIDE_RANGE = (64, 1024)
MAX_ITERATIONS = 5000  # steps of any family; the operator's T2I_MAX_ITERATIONS lowers it
CUTN_RANGE = (1, 256)
MAX_SEED = 2**63 - 1
MAX_IMAGE_BYTES = 10 * 1024 * 1024
# What the upload widgets let through, above MAX_IMAGE_BYTES: the browser drops a larger file without
# telling the server, so everything between the two reaches check_image and is refused with a reason.
UPLOAD_CAP_MB = 32
MAX_IMAGE_SIDE = 4096
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_IMAGE_PROMPTS = 4
# The largest side of the image a job makes (a 1024x1024 image through one x4 upscaler): its grid of
# samples at the size the preset draws, times every upscaler's factor. The result is held, encoded and
# stored whole, and each x4 multiplies its pixels by 16. Checked where the preset's used size is known
# (t2i/service/caps.py, at submit and in `generate`): the asked size alone misjudged both ways.
MAX_UPSCALED_SIDE = 4096
# A gallery search longer than the longest prompt matches nothing, and SQLite refuses LIKE patterns
# over 50,000 bytes: longer searches are refused with a line instead.
MAX_SEARCH_CHARS = MAX_PROMPT_CHARS


@dataclass(frozen=True)
class Limits:
    """Caps the operator may lower (e.g. a public server with small GPUs)."""

    max_side: int = SIDE_RANGE[1]
    max_iterations: int = MAX_ITERATIONS
    max_cutn: int = CUTN_RANGE[1]
    # Bytes one job may need (t2i/service/memory.py estimates it); None: T2I_MAX_JOB_MEMORY, else this
    # machine's RAM less a margin. Checked where the preset is known: t2i.service.queue.submit_job.
    max_job_memory: int | None = None

    @classmethod
    def from_env(cls) -> "Limits":
        """T2I_MAX_SIDE, T2I_MAX_ITERATIONS, T2I_MAX_CUTN (the web app reads these)."""
        import os

        # max_job_memory stays None: t2i.service.memory.submit_budget() reads T2I_MAX_JOB_MEMORY where the
        # budget is used (memory builds on the spec; the spec does not import it).
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
    """A validated request: the common fields, and the family's own in `options`.

    The family's fields are read from `options` (spec.options.steps): every attribute is declared
    here, so grep and the type checker follow each read. Images are kept as their (checked) encoded
    bytes; a spec read from the store without its images (from_dict without `load`) has UploadRefs
    in their place."""

    prompt: str
    preset: str
    width: int
    height: int
    save_every: int
    options: Options                  # the family's Options (t2i/families/<family>/options.py)
    family: str = DEFAULT_FAMILY
    seed: int | None = None
    init_image: bytes | UploadRef | None = None
    image_prompts: tuple[bytes | UploadRef, ...] = field(default_factory=tuple)
    upscale: tuple[str, ...] = ()     # post-steps: upscalers (t2i/upscale/) run on the finished image, in order

    @property
    def parts(self) -> list[PromptPart]:
        return parse_prompt(self.prompt)

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share a batch (the family decides what must agree)."""
        return self.options.batch_key(self)

    @property
    def family_steps(self) -> int:
        """The steps of the family's pipeline; the post-steps follow them."""
        return self.options.total_steps(self)

    @property
    def total_steps(self) -> int:
        """What the job's progress counts to: the family's steps, then one per upscaler."""
        return self.options.total_steps(self) + len(self.upscale)

    def describe(self, width: int, height: int) -> str:
        """The job's load in words at the size it is made at, with its upscalers: "64x64, 50 DDIM
        steps, then realesrgan-x4plus"."""
        load = self.options.describe(self, width, height)
        return f"{load}, then {' and '.join(self.upscale)}" if self.upscale else load

    def to_dict(self) -> dict:
        """JSON-safe, flat form for the queue: the common fields, `family`, then the family's fields.
        Images are references to uploads ({"upload": "<sha256>"}, t2i/store/uploads.py), never
        their bytes: the store keeps those once, in `uploads()`."""
        d = {k: v for k, v in asdict(self).items() if k not in ("options", "init_image", "image_prompts")}
        d.update(asdict(self.options))
        d["init_image"] = ref(self.init_image) if self.init_image is not None else None
        d["image_prompts"] = [ref(b) for b in self.image_prompts]
        d["upscale"] = list(self.upscale)
        return d

    def uploads(self) -> list[Upload]:
        """The images to store with the job (each once); images known by reference only are stored already."""
        found = {}
        for data in (self.init_image, *self.image_prompts):
            if isinstance(data, bytes):
                upload = Upload.of(data)
                found.setdefault(upload.sha256, upload)
        return list(found.values())

    @classmethod
    def from_dict(cls, d: dict, load=None) -> "JobSpec":
        """The inverse of to_dict; a spec stored before families existed is a guided one. load(sha256)
        -> bytes | None resolves image references (the executor: JobStore.upload); without it they stay
        UploadRefs. Base64 images (specs before uploads existed) are decoded as they are."""
        d = dict(d)
        from .presets import current_family

        family = current_family(d.pop("family", None) or DEFAULT_FAMILY, d.get("preset"))
        # Fields a family added later (with a default) are absent from older jobs.
        options = family_of(family).options(**{k: d.pop(k) for k in option_names(family) if k in d})
        d["init_image"] = _image("init_image", d.get("init_image"), load)
        d["image_prompts"] = tuple(_image(f"image_prompt {i}", b, load)
                                   for i, b in enumerate(d.get("image_prompts") or (), 1))
        d["upscale"] = tuple(d.get("upscale") or ())  # specs from before post-steps have none
        return cls(options=options, family=family, **d)

    def with_(self, **changes) -> "JobSpec":
        """A copy with common or family fields changed (not re-validated: tests and benches)."""
        names = option_names(self.family)
        options = replace(self.options, **{k: v for k, v in changes.items() if k in names})
        return replace(self, options=options, **{k: v for k, v in changes.items() if k not in names})


def _image(name: str, value, load) -> bytes | UploadRef | None:
    if not value:
        return None
    if not isinstance(value, dict):
        return base64.b64decode(value)
    if load is None:
        return UploadRef(value["upload"])
    data = load(value["upload"])
    if data is None:
        raise SpecError(name, f"refers to the upload {value['upload'][:12]}..., which is not in the job database")
    return data


# --- prompt -------------------------------------------------------------------------------------

# "inf" and "nan" count as numbers here so that they reach the range checks and are rejected there.
NUMBER = re.compile(r"^\s*[-+]?((\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|inf|nan)\s*$", re.IGNORECASE)
_KEPT_FORMAT_CHARS = {"\u200c", "\u200d"}  # zero-width (non-)joiners build emoji and Indic words


def clean_text(text: str) -> str:
    """Whitespace collapsed, control characters dropped (they never reach a model or a page)."""
    text = "".join(" " if ch in "\t\n\r" else ch for ch in text)
    text = "".join(ch for ch in text if ch in _KEPT_FORMAT_CHARS
                   or unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    return " ".join(text.split())


def _split_part(raw: str) -> tuple[str, str | None, str | None]:
    """(text, weight as written, stop as written); the numbers stay text so messages can quote them."""
    # Parse numbers from the right only, so text containing ':' ("4:3 photo", "a: b") stays text.
    pieces = raw.split(":")
    if len(pieces) >= 3 and NUMBER.match(pieces[-1]) and NUMBER.match(pieces[-2]):
        return ":".join(pieces[:-2]), pieces[-2], pieces[-1]
    if len(pieces) >= 2 and NUMBER.match(pieces[-1]):
        return ":".join(pieces[:-1]), pieces[-1], None
    return raw, None, None


def parse_prompt(prompt: str) -> list[PromptPart]:
    """`text[:weight[:stop]]` parts separated by `|`. Raises SpecError on bad parts."""
    raw_parts = prompt.split("|")
    if len(raw_parts) > MAX_PROMPT_PARTS:
        raise SpecError("prompt", f"at most {MAX_PROMPT_PARTS} '|'-separated parts, got {len(raw_parts)}")
    parts = []
    for i, raw in enumerate(raw_parts, 1):
        text, weight_text, stop_text = _split_part(raw)
        weight = 1.0 if weight_text is None else float(weight_text)
        stop = -math.inf if stop_text is None else float(stop_text)
        text = clean_text(text)
        if not text:
            raise SpecError("prompt", f"part {i} has no text")
        # The refused number is quoted as written: "10.0000001" printed with :g read "10", which
        # looked inside the range it was refused for.
        if not (WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]) or math.isnan(weight):
            raise SpecError("prompt", f"part {i} weight {shown(weight_text.strip(), quoted=False)} is outside "
                                      f"[{WEIGHT_RANGE[0]:g}, {WEIGHT_RANGE[1]:g}]")
        if stop != -math.inf and not (STOP_RANGE[0] <= stop <= STOP_RANGE[1]):
            raise SpecError("prompt", f"part {i} stop {shown(stop_text.strip(), quoted=False)} is outside "
                                      f"[{STOP_RANGE[0]:g}, {STOP_RANGE[1]:g}]")
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


def cut_prompt(prompt: str) -> tuple[str, int]:
    """The prompt as make_spec will store it, cut to MAX_PROMPT_CHARS, and its cleaned length before
    the cut. For the Generate page: a pasted text over the limit is cut and the visitor told, so that
    they see what was kept, rather than refused whole or (the browser's way) dropped."""
    # Cleaning only removes characters, so the first few times the limit in raw text are enough to fill
    # the limit, and a pasted megabyte is not cleaned character by character.
    raw = prompt[:MAX_PROMPT_CHARS * 8]
    cleaned = "|".join(clean_text(p) for p in raw.split("|"))
    length = len(cleaned) if len(raw) == len(prompt) else max(len(cleaned), len(prompt))
    return cleaned[:MAX_PROMPT_CHARS].rstrip(), length


def check_search(text: str) -> str:
    """A gallery search, trimmed; refused with one line when longer than any prompt can be."""
    text = text.strip()
    if len(text) > MAX_SEARCH_CHARS:
        raise SpecError("search", f"is {len(text)} characters; prompts are at most {MAX_SEARCH_CHARS}, "
                                  "so search for a shorter part of one")
    return text


# --- sizes --------------------------------------------------------------------------------------

def round_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Round a validated size down to the generator's factor (the used size is reported)."""
    return max(factor, width // factor * factor), max(factor, height // factor * factor)


# --- images -------------------------------------------------------------------------------------

def check_image(name: str, data: bytes) -> bytes:
    """Type, bytes and pixels checked before the image is decoded or stored."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise SpecError(name, "is empty")
    if len(data) > MAX_IMAGE_BYTES:
        # In bytes when megabytes to one decimal would read as the limit itself ("is 10.0 MB").
        size = len(data) / 2**20
        size = f"{size:.1f} MB" if size >= MAX_IMAGE_BYTES / 2**20 + 0.05 else f"{len(data):,} bytes"
        raise SpecError(name, f"is {size}; the limit is {MAX_IMAGE_BYTES // 2**20} MB ({MAX_IMAGE_BYTES:,} bytes)")
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
        # Say which types are wanted: an SVG or a PDF lands here, not in the format check above.
        raise SpecError(name, f"is not a readable image (PNG, JPEG or WebP; {type(e).__name__})") from None
    return bytes(data)


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


# --- post-steps -----------------------------------------------------------------------------------

def check_upscale(value, default: tuple[str, ...]) -> tuple[str, ...]:
    """The upscalers a job runs after its family's steps: names of the weights registry's upscaler
    entries, a comma-separated text or a list (None or "": the preset's `post`; "none" or an empty
    list: no upscaler), checked against t2i.upscale.names() (torch-free). The size they make is
    checked with the preset (t2i/service/caps.py): a GAN asked for 512x512 draws 64x64, and a grid of
    samples is larger than one."""
    from . import upscale

    if value is None or value == "":
        value = default
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SpecError("upscale", f"must be upscaler names, got {shown(value)}")
    names = [v.strip() for v in value if v.strip()]
    if upscale.NONE in (n.lower() for n in names):
        if len(names) > 1:
            raise SpecError("upscale", f"'{upscale.NONE}' cannot be combined with upscalers ({', '.join(names)})")
        return ()
    if len(names) > upscale.MAX_UPSCALERS:
        raise SpecError("upscale", f"at most {upscale.MAX_UPSCALERS} upscalers, got {len(names)}")
    return tuple(upscale.check(n) for n in names)


# --- the one entry point ------------------------------------------------------------------------

DEFAULTS = dict(width=300, height=300, save_every=10)  # the common fields' defaults; families add theirs


def make_spec(prompt, preset: str, *, family: str = DEFAULT_FAMILY, width=None, height=None, save_every=None,
              seed=None, init_image: bytes | None = None, image_prompts=(), limits: Limits = Limits(),
              defaults: dict | None = None, upscale=None, post: tuple[str, ...] = (), **options) -> JobSpec:
    """Validate raw input (strings or numbers) into a JobSpec. `family`, `defaults` and `post` (the
    upscalers `upscale` defaults to) come from the preset; `options` are the family's own fields
    (None or "" means the default). A field of another family is refused with one line saying so,
    rather than silently ignored."""
    d = {**DEFAULTS, **(defaults or {})}
    pick = lambda v, k: d[k] if v is None or v == "" else v  # noqa: E731
    if not isinstance(preset, str) or not preset.strip():
        raise SpecError("preset", "is empty")
    record = family_of(family)
    cls, own = record.options, option_names(family)
    for name, value in options.items():
        if name not in own and value is not None and value != "":
            raise SpecError(name, f"does not apply to {family} presets ({preset}); their options are "
                                  + ", ".join(own))
    save_every = whole("save_every", pick(save_every, "save_every"), 1, MAX_ITERATIONS)
    image_prompts = tuple(image_prompts or ())
    if not record.takes_images:
        for name, value in (("init_image", init_image), ("image_prompts", image_prompts)):
            if value:
                raise SpecError(name, f"does not apply to {family} presets ({preset})")
    if len(image_prompts) > MAX_IMAGE_PROMPTS:
        raise SpecError("image_prompts", f"at most {MAX_IMAGE_PROMPTS}, got {len(image_prompts)}")
    max_side = min(limits.max_side, SIDE_RANGE[1])
    min_side = record.min_side
    # The family's defaults, and what the preset allows of them (e.g. the samplers correct for its model).
    family_defaults = {k: v for k, v in d.items() if k in own or k in getattr(cls, "PRESET_LIMITS", ())}
    width = whole("width", pick(width, "width"), min_side, max_side)
    height = whole("height", pick(height, "height"), min_side, max_side)
    return JobSpec(
        prompt=clean_prompt(prompt),
        preset=preset.strip(),
        width=width,
        height=height,
        save_every=save_every,
        options=cls.parse({k: v for k, v in options.items() if k in own}, limits, family_defaults),
        family=family,
        seed=None if seed is None or seed == "" else whole("seed", seed, 0, MAX_SEED),
        init_image=None if init_image is None else check_image("init_image", init_image),
        image_prompts=tuple(check_image(f"image_prompt {i}", b) for i, b in enumerate(image_prompts, 1)),
        upscale=check_upscale(upscale, tuple(post)),
    )
