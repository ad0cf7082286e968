"""What a job really makes, checked before it is queued or run: the final image's size against the
cap, the upscalers' files, and the size a preset draws at when it is not the one asked for.

A job's PNG is its family's image at the used size (`Options.used_size`: a GAN draws 64x64 whatever
was asked), as a grid when it has several samples (t2i/output/render.py's layout, which the families'
grid draws), then enlarged by each upscaler in turn. make_spec knows neither the preset's used size
nor the grid, so these checks run where the preset is known: at submit (t2i/service/queue.py, for the
CLI and the pages) and in `python -m t2i generate`.

    made_size(spec, preset)          (width, height) of the final image
    check(spec, preset)              SpecError: the final image is over spec.MAX_UPSCALED_SIDE;
                                     WeightsMissing: an upscaler's file is absent (the download line)
    ignored_size(spec, preset)       "flowers-gan draws 64x64; the asked 512x512 is ignored", or None
    asked_size_note(preset, w, h)    the same from a page's or the CLI's raw size fields

Torch-free (the pages and the queue import it).
"""

from __future__ import annotations

import math

from ..errors import SpecError
from ..families import family
from ..output.render import GRID_PADDING, grid_layout
from ..spec import MAX_UPSCALED_SIDE
from ..upscale import require, scale_hint


def samples(spec) -> int:
    """Images a job makes (families without the option make one)."""
    return getattr(spec.options, "num_samples", 1)


def grid_size(n: int, cell: tuple[int, int]) -> tuple[int, int]:
    """The size of n samples of `cell` laid out as the families' grid (make_grid with render's layout
    and padding); one sample is itself."""
    if n < 2:
        return cell
    columns, rows = grid_layout(n)
    return columns * (cell[0] + GRID_PADDING) + GRID_PADDING, rows * (cell[1] + GRID_PADDING) + GRID_PADDING


def factor(spec) -> int:
    """How many times the upscalers enlarge, from their names (t2i.upscale.scale_hint): an ESRGAN file
    whose name says nothing is taken as x4, the largest published factor, so the cap errs on the safe side."""
    return math.prod(scale_hint(name) for name in spec.upscale)


def made_size(spec, preset) -> tuple[int, int]:
    width, height = grid_size(samples(spec), spec.options.used_size(spec, preset))
    return width * factor(spec), height * factor(spec)


def ignores_size(spec, preset) -> bool:
    """The preset draws at one size whatever is asked (a GAN, GLIDE, a BigGAN, a fixed-size diffusion model)."""
    return spec.options.used_size(spec.with_(width=1, height=1), preset) == \
        spec.options.used_size(spec.with_(width=4096, height=4096), preset)


def check(spec, preset) -> None:
    """Refuse, in one line, what would be made too large or could not be upscaled here."""
    check_made(spec, preset)
    require(spec.upscale)


def check_made(spec, preset) -> None:
    """SpecError naming what would be made, its size and the cap, when the final image's longer side
    is over MAX_UPSCALED_SIDE (the image is held, encoded and stored whole: each x4 is 16 times the pixels)."""
    cap = MAX_UPSCALED_SIDE
    width, height = made_size(spec, preset)
    if max(width, height) <= cap:
        return
    n, cell, times = samples(spec), spec.options.used_size(spec, preset), factor(spec)
    what = f"{cell[0]}x{cell[1]}"
    if n > 1:
        columns, rows = grid_layout(n)
        grid = grid_size(n, cell)
        what = f"{n} samples of {what} (a grid of {columns} by {rows}, {grid[0]}x{grid[1]})"
    if spec.upscale:
        what += f" through {' and '.join(spec.upscale)} (x{times})"
    fits = [k for k in range(1, n) if max(grid_size(k, cell)) * times <= cap]
    advice = [f"at most {fits[-1]} samples"] if fits else []
    most = _largest_cell(n, cap // times)
    if not ignores_size(spec, preset) and min(most) >= family(preset.family).min_side:
        advice.insert(0, f"at most {most[0]}x{most[1]}")
    if spec.upscale:
        advice.append("fewer upscalers")
    raise SpecError("upscale" if spec.upscale else "num_samples",
                    f"{what} would make {width}x{height}; the largest image here is {cap} pixels a side: "
                    f"ask for {', or '.join(advice)}")


def _largest_cell(n: int, side: int) -> tuple[int, int]:
    """The largest sample size whose grid of n fits `side` pixels a side."""
    if n < 2:
        return side, side
    columns, rows = grid_layout(n)
    return (side - GRID_PADDING) // columns - GRID_PADDING, (side - GRID_PADDING) // rows - GRID_PADDING


def ignored_size(spec, preset) -> str | None:
    """One line when the preset draws at its own size and the spec asked for another; else None."""
    used = spec.options.used_size(spec, preset)
    if (spec.width, spec.height) == used or not ignores_size(spec, preset):
        return None
    return f"{preset.name} draws {used[0]}x{used[1]}; the asked {spec.width}x{spec.height} is ignored"


def asked_size_note(preset, width, height) -> str | None:
    """ignored_size for raw width and height (text or numbers, None or "": the preset's default), as a
    page's form or the CLI holds them; None also when they are not a valid size (submit says why)."""
    from ..spec import make_spec

    try:
        spec = make_spec("x", preset.name, family=preset.family, defaults=preset.defaults, width=width,
                         height=height, upscale="none")
    except SpecError:
        return None
    return ignored_size(spec, preset)
