"""The benchmark commands: `bench` (speed and memory, any family) and the worlds' quality benches
`shapesbench`, `digitsbench`, `flowersbench` (t2i/bench/)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SpecError, T2IError
from .common import require_positive, resolve_device


def _add_device_seed_quiet(p) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true")


def add_shapesbench(sub) -> None:
    sb = sub.add_parser("shapesbench", help="quality benchmark on held-out shapes captions")
    sb.add_argument("--preset", default="shapes")
    sb.add_argument("--n", type=int, default=100)
    sb.add_argument("--iterations", type=int, help="default: the preset's")
    sb.add_argument("--batch", type=int, default=16, help="jobs optimised together (default 16)")
    sb.add_argument("--cache", help="diffusion presets: step caching interval (0: off); default: the preset's")
    sb.add_argument("--sheet", metavar="PNG", help="also write the first 16 images as a 4x4 grid (and their "
                                                  "captions and verdicts beside it, .txt): the README's examples")
    _add_device_seed_quiet(sb)
    sb.set_defaults(func=cmd_shapesbench)


def cmd_shapesbench(args) -> int:
    require_positive(args, "n", "batch")
    if args.sheet and not Path(args.sheet).resolve().parent.is_dir():  # before the bench's minutes, not after
        raise SpecError("--sheet", f"no folder {Path(args.sheet).resolve().parent} to write {Path(args.sheet).name} in")
    from ..bench.shapes import report, shapesbench, write_sheet

    result = shapesbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed,
                         iterations=args.iterations, progress=not args.quiet, batch=args.batch,
                         cache=args.cache)
    for line in report(result):
        print(line)
    if args.sheet:
        print("wrote " + ", ".join(str(p) for p in write_sheet(result, args.sheet)))
    return 0


def add_digitsbench(sub) -> None:
    db = sub.add_parser("digitsbench", help="quality benchmark of the digits preset: the asked digit, and diversity")
    db.add_argument("--preset", default="digits")
    db.add_argument("--n", type=int, default=20, help="samples per digit (default 20)")
    db.add_argument("--steps", help="default: the preset's")
    db.add_argument("--guidance", help="default: the preset's")
    db.add_argument("--sampler", help="default: the preset's")
    db.add_argument("--cache", help="step caching interval (0: off); default: the preset's")
    _add_device_seed_quiet(db)
    db.set_defaults(func=cmd_digitsbench)


def cmd_digitsbench(args) -> int:
    require_positive(args, "n")
    from ..bench.digits import digitsbench, report

    result = digitsbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed, steps=args.steps,
                         guidance=args.guidance, sampler=args.sampler, progress=not args.quiet,
                         cache=args.cache)
    for line in report(result):
        print(line)
    return 0


def add_flowersbench(sub) -> None:
    fb = sub.add_parser("flowersbench", help="quality benchmark of a gan preset on held-out flowers captions "
                                             "(petal colour, centre colour, petal count; IS-like, diversity)")
    fb.add_argument("--preset", default="flowers-gan")
    fb.add_argument("--n", type=int, default=200, help="held-out captions, one sample each (default 200)")
    fb.add_argument("--batch", type=int, default=16, help="jobs run together (default 16)")
    fb.add_argument("--noise-scale", dest="noise_scale", help="default: the preset's")
    _add_device_seed_quiet(fb)
    fb.set_defaults(func=cmd_flowersbench)


def cmd_flowersbench(args) -> int:
    require_positive(args, "n", "batch")
    from ..bench.flowers import flowersbench, report

    result = flowersbench(args.preset, n=args.n, device=resolve_device(args.device), seed=args.seed, batch=args.batch,
                          noise_scale=args.noise_scale, progress=not args.quiet)
    for line in report(result):
        print(line)
    return 0


def add_bench(sub) -> None:
    from ..presets import DEFAULT_PRESET

    b = sub.add_parser("bench", help="steps/s and peak memory with random weights of a preset's architecture")
    b.add_argument("--preset", default=DEFAULT_PRESET)
    b.add_argument("--device")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--size", type=int, nargs=2, metavar=("W", "H"))
    b.add_argument("--cutn", type=int)
    b.add_argument("--batch", default="1", help="jobs optimised together; several: 1,2,4,8")
    b.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32")
    b.add_argument("--plot", help="write a PNG of job-steps/s against batch size here")
    b.add_argument("--cache", help="diffusion presets: step caching interval (0: off; default: the preset's); "
                                    "several (0,2,3): one table of them, taken in turn")
    b.add_argument("--rounds", type=int, default=1, help="with several --cache values: runs of each, the median kept")
    b.add_argument("--stagger", action="store_true", help="jobs join one per step (continuous batching) "
                                                          "rather than all at once")
    b.add_argument("--reference", action="store_true",
                   help="also run the common per-cutout loop with kornia (pip install -r requirements-bench.txt)")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from ..bench.speed import bench

    require_positive(args, "rounds")
    batches = list(_numbers(args.batch, "--batch"))
    cache = _numbers(args.cache, "--cache") if args.cache is not None else None
    if cache is not None and len(cache) == 1:
        cache = cache[0]
    device = resolve_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    for line in bench(args.preset, device=device, steps=args.steps, size=args.size, cutn=args.cutn,
                      precision=precision, batches=batches, reference=args.reference, plot=args.plot,
                      cache=cache, stagger=args.stagger, rounds=args.rounds):
        print(line)
    return 0


def _numbers(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise T2IError(f"{flag} {text}: use numbers separated by commas, e.g. 1,2,4") from None
