"""Peak memory of one job, each in a fresh process: the figures t2i/service/memory.py's estimates are fitted to.

    python scripts/measure_memory.py shapes 64 256 384 --cutn 16
    python scripts/measure_memory.py tiny-diffusion-untrained 32 128 --num-samples 8
    python scripts/measure_memory.py --one shapes 256 ...        (the child: one job, then its figures)

Each job runs in a child process (`--one`) that builds the preset, takes its RSS (the fixed part:
libraries and models), runs the job for a few steps with a frame at every step, and prints its own
peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`). The parent prints one line per size, with the
estimate t2i/service/memory.py makes for the same job. Keep the predicted peaks well below the machine's
free memory: nothing here stops the kernel from killing a child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2**30


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def job_fields(preset, side: int, args) -> dict:
    from t2i.families import family, option_names

    fields = dict(width=side, height=side, save_every=1, seed=1)
    fields[family(preset.family).steps_field] = args.steps
    given = dict(cutn=args.cutn or preset.defaults.get("cutn", 8), num_samples=args.num_samples,
                 guidance=args.guidance)
    fields.update((k, v) for k, v in given.items() if k in option_names(preset.family))
    return fields


def one(args) -> None:
    import resource

    import torch

    from t2i.engine import run
    from t2i.families import build_pipeline
    from t2i.presets import get_preset
    from t2i.spec import make_spec

    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    spec = make_spec("a red circle on the left", preset.name, family=preset.family, defaults=preset.defaults,
                     **job_fields(preset, args.sides[0], args))
    pipeline = build_pipeline(preset)
    fixed = rss_bytes()
    start = time.monotonic()
    run(spec, pipeline)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"fixed": fixed, "peak": peak, "seconds": time.monotonic() - start,
                      "used": list(pipeline.used_size(spec))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("sides", type=int, nargs="+", help="square sizes to measure, one process each")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cutn", type=int, default=None)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)

    try:
        from t2i.service import memory
    except ImportError:
        memory = None
    from t2i.presets import get_preset
    from t2i.spec import make_spec

    preset = get_preset(args.preset)
    for side in args.sides:
        fields = job_fields(preset, side, args)
        spec = make_spec("a red circle on the left", preset.name, family=preset.family, defaults=preset.defaults,
                         **fields)
        try:
            estimate = memory.estimate(spec, preset)
            said = f"estimate {estimate.total / GIB:.2f} GiB (job {estimate.job / GIB:.2f})"
        except Exception as error:  # noqa: BLE001 - measuring before the estimates existed
            said = f"no estimate ({error})"
        child = [sys.executable, __file__, "--one", args.preset, str(side), "--steps", str(args.steps),
                 "--num-samples", str(args.num_samples), "--guidance", str(args.guidance),
                 "--threads", str(args.threads)] + (["--cutn", str(args.cutn)] if args.cutn else [])
        out = subprocess.run(child, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS":
                                                                         str(args.threads)})
        if out.returncode != 0:
            print(f"{args.preset} {side}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        got = json.loads(out.stdout.strip().splitlines()[-1])
        load = {k: v for k, v in fields.items() if k not in ("width", "height", "save_every", "seed")}
        print(f"{args.preset} {side}x{side} used {got['used'][0]}x{got['used'][1]} {load}: "
              f"fixed {got['fixed'] / GIB:.2f} GiB, peak {got['peak'] / GIB:.2f} GiB "
              f"(job {(got['peak'] - got['fixed']) / GIB:.2f} GiB), {said}, {got['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
