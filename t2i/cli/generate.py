"""`python -m t2i generate`: one image from a prompt, here and now, through the Runner."""

from __future__ import annotations

import sys
from pathlib import Path

from ..spec import SpecError
from .common import add_spec_options, default_preset, resolve_device, slug, spec_fields, write_atomic


def add_generate(sub) -> None:
    g = sub.add_parser("generate", help="make one image from a prompt, here and now")
    add_spec_options(g)
    g.add_argument("--out", default="outputs", help="directory for the PNG and GIF")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from ..engine import run
    from ..families import build_pipeline
    from ..presets import get_preset
    from ..service import caps
    from ..spec import make_spec

    preset = get_preset(args.preset or default_preset())
    spec = make_spec(args.prompt, preset.name, family=preset.family, defaults=preset.defaults, post=preset.post,
                     **spec_fields(args))
    caps.check(spec, preset)  # the final image's size, the upscalers' files: as submit checks them
    if (ignored := caps.ignored_size(spec, preset)) is not None:
        print(f"note: {ignored}", file=sys.stderr)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError("out", f"{out} exists and is not a directory")
    pipeline = build_pipeline(preset, device=resolve_device(args.device))
    if preset.untrained:
        print(f"note: {preset.name} has random weights; its images mean nothing", file=sys.stderr)

    with tqdm(total=spec.total_steps, desc="generating", unit="step", disable=args.quiet) as bar:
        def on_step(step):
            if step.loss is not None:
                bar.set_postfix(loss=f"{step.loss:.4f}")
            bar.update(1)
        result = run(spec, pipeline, on_step)
    _write_outputs(out, spec, result, preset, pipeline)
    return 0


def _write_outputs(out: Path, spec, result, preset, pipeline) -> None:
    """The PNG (a grid when several samples), each sample's PNG and the GIF, then what was made."""
    from ..output import render

    params = render.parameters(spec, result, preset)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{slug(spec.prompt)}-{result.seed}"
    png, gif = out / f"{stem}.png", out / f"{stem}.gif"
    samples = [out / f"{stem}-{i:02d}.png" for i in range(1, len(result.samples) + 1)]
    write_atomic(gif, render.gif_bytes(result.frames))
    for path, image in zip(samples, result.samples):
        write_atomic(path, render.png_bytes(image, params))
    write_atomic(png, render.png_bytes(result.image, params))
    made = result.upscaled_from or (result.width, result.height)
    resized = "" if made == (spec.width, spec.height) else \
        (f" (asked for {spec.width}x{spec.height}; {preset.name} draws at {made[0]}x{made[1]} only)"
         if preset.fixed_size else
         f" (asked for {spec.width}x{spec.height}; the generator works in multiples of {pipeline.factor})")
    upscaled = f", upscaled by {' and '.join(spec.upscale)} to {result.width}x{result.height}" \
        if result.upscaled_from else ""
    loss = f", final loss {result.losses[-1]:.4f}" if result.losses else ""
    print(f"size {made[0]}x{made[1]}{resized}{upscaled}, seed {result.seed}{loss}")
    print(f"wrote {png}" + (f" (a grid of {len(samples)} samples)" if samples else ""))
    if samples:
        print(f"wrote {samples[0]} ... {samples[-1].name} (each sample)")
    print(f"wrote {gif} ({len(result.frames)} frames)")
