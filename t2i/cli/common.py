"""What the commands share: the device check, reading an image file within the limit, the spec flags
`generate` and `submit` both take, the store of --db, file names from prompts and atomic writes."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import T2IError
from ..spec import MAX_IMAGE_BYTES, SpecError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 141  # the reader of standard output went away (128 + SIGPIPE, as a shell reports it)


def resolve_device(name: str | None) -> str:
    """cpu, cuda or cuda:N, checked here: torch would otherwise fail later, with a traceback."""
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise T2IError(f"--device {name}: use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise T2IError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise T2IError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return name


def read_image_file(path: str | None, field: str) -> bytes | None:
    """The file's bytes, read up to one byte past the image limit: a larger file (or an endless one,
    /dev/zero) is refused without being read in full."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise SpecError(field, f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise SpecError(field, f"{path} is larger than the limit of {MAX_IMAGE_BYTES // 2**20} MB "
                               f"({MAX_IMAGE_BYTES:,} bytes)")
    return data


FAMILY_FLAGS = ("iterations", "cutn", "lr", "sampler", "steps", "guidance", "eta", "num_samples", "noise_scale", "cache")


def add_spec_options(sp) -> None:
    """The job's fields, as `generate` and `submit` take them (checked by make_spec, not here)."""
    sp.add_argument("prompt", help="text[:weight[:stop]] parts separated by '|', e.g. 'a red fox|blurry:-0.5'")
    sp.add_argument("--preset", help="default: the first ready preset (see `presets`)")
    sp.add_argument("--size", nargs=2, metavar=("W", "H"), help="default from the preset (300 300)")
    sp.add_argument("--iterations", help="guided presets: optimisation steps")
    sp.add_argument("--cutn", help="guided presets: cutouts per step")
    sp.add_argument("--lr", help="guided presets: Adam learning rate")
    sp.add_argument("--sampler", help="diffusion presets: ddpm, ddim, dpm++ or plms (a preset may allow fewer)")
    sp.add_argument("--steps", help="diffusion presets: sampling steps; gan presets: frames of the noise walk")
    sp.add_argument("--guidance", help="diffusion presets: classifier-free guidance scale (0: unconditional)")
    sp.add_argument("--eta", help="diffusion presets, ddim: noise per step (0: deterministic)")
    sp.add_argument("--num-samples", dest="num_samples", help="diffusion and gan presets: 1..64 images, as a grid")
    sp.add_argument("--noise-scale", dest="noise_scale",
                    help="gan presets: 0..2, the spread of the noise walk (0: one image per prompt)")
    sp.add_argument("--cache", help="diffusion presets: step caching, the whole UNet every N-th step and its "
                                    "shallow part between (0 or 1: off; default: the preset's)")
    sp.add_argument("--seed", help="0..2**63-1; random when omitted (the used seed is reported)")
    sp.add_argument("--init-image", help="PNG/JPEG/WebP to start from")
    sp.add_argument("--image-prompt", action="append", help="image to steer towards (repeatable)")
    sp.add_argument("--save-every", help="a GIF frame every K steps")
    sp.add_argument("--upscale", action="append", metavar="NAME",
                    help="upscaler(s) run on the finished image, in order (repeatable or a comma list; "
                         "`none`: not even the preset's); default: the preset's post-steps")


def spec_fields(args) -> dict:
    """The raw job fields shared by `generate` and `submit` (validated by make_spec). Family options
    are passed only when given, so that make_spec can refuse one that does not apply to the preset."""
    size = args.size or (None, None)
    given = {name: getattr(args, name) for name in FAMILY_FLAGS if getattr(args, name) is not None}
    # --upscale, repeatable or a comma list; absent: the preset's post-steps (make_spec checks the names)
    upscale = ",".join(args.upscale) if args.upscale is not None else None
    return dict(width=size[0], height=size[1], save_every=args.save_every, seed=args.seed, upscale=upscale,
                init_image=read_image_file(args.init_image, "init_image"),
                image_prompts=[read_image_file(p, "image_prompt") for p in args.image_prompt or []], **given)


def add_db_options(sp) -> None:
    from ..store import default_url

    sp.add_argument("--db", default=default_url(), help="store URL (default: $T2I_DB, else sqlite:///t2i.db)")
    sp.add_argument("--create", action="store_true",
                    help="make a new SQLite database when none is at --db (otherwise refused)")


def open_store(args):
    """The store of --db. A missing SQLite file is refused unless --create: a mistyped path must not
    quietly start an empty queue (the service start, job_executor.py and the web app, creates it)."""
    from ..store import StoreMissing, open_store as open_url

    try:
        return open_url(args.db, create=args.create)
    except StoreMissing as e:
        raise StoreMissing(f"{e} (start the service there, or add --create to make a new one)") from None


def job_id(args) -> int:
    from ..store import MAX_ID

    if not 1 <= args.job <= MAX_ID:
        raise SpecError("job", f"no job has the number {args.job} (job numbers run from 1 to {MAX_ID})")
    return args.job


def require_positive(args, *names: str) -> None:
    """Counts a command takes (steps, captions) must be at least 1 when given: 0 would otherwise
    train nothing or divide by zero, after minutes of work."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SpecError(f"--{name.replace('_', '-')}", f"must be at least 1, got {value}")


def default_preset() -> str:
    from ..assets.weights import default_preset as first_ready

    return first_ready()


def slug(text: str, limit: int = 48) -> str:
    """A prompt made safe as a file name: lowercase ASCII words joined by '-'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "image"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
