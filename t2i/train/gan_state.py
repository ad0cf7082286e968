"""GAN-INT-CLS training's files (t2i/train/gan.py's output folder): the resumable checkpoint, written
so that a kill mid-write leaves the last good one, the served generator, the sample grids and the
loss plot of each epoch, and the check that stops a diverged run before its checkpoint is written."""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from ..assets.fp16 import save_checkpoint
from ..bench.plot import loss_plot
from ..errors import T2IError
from .ema import Ema


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def resume(path: Path, config, g, d, opt_g, opt_d, gen, ema: Ema | None) -> tuple[int, list[dict]]:
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Fields added since a checkpoint was written count at their defaults (the recipe it was made with).
    saved = asdict(type(config)()) | state["config"]
    if saved != asdict(config):
        field = next(k for k in asdict(config) if saved.get(k) != asdict(config)[k])
        raise T2IError(f"{path} was trained with {field}={saved.get(field)!r}, not "
                       f"{getattr(config, field)!r}: use the same settings, or another output folder")
    g.load_state_dict(state["g"])
    d.load_state_dict(state["d"])
    opt_g.load_state_dict(state["opt_g"])
    opt_d.load_state_dict(state["opt_d"])
    if ema is not None:
        ema.net.load_state_dict(state["g_ema"])
        ema.updates = state["step"]
    gen.set_state(state["rng"])
    return state["step"], state["history"]


def save_atomic(obj, path: Path) -> None:
    """torch.save through a temporary file and os.replace: a write that fails or is killed leaves the
    previous file as it was (and no temporary behind, when it fails in Python)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_epoch(out: Path, epoch: int, g, d, opt_g, opt_d, gen, step: int, history: list[dict],
                config, sample_embeds, sample_z, sample_images, ema: Ema | None) -> None:
    state = {"config": asdict(config), "step": step, "history": history, "rng": gen.get_state(),
             "g": g.state_dict(), "d": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}
    if ema is not None:
        state["g_ema"] = ema.net.state_dict()
    save_atomic(state, out / "checkpoint.pt")
    drawn = ema.net if ema is not None else g
    save_checkpoint(drawn, out / "generator.pt")
    drawn.eval()
    with torch.no_grad():
        fakes = drawn(sample_embeds, sample_z)
    # Real images first row, then the generator's for the same texts.
    picture = make_grid(torch.cat([sample_images[:4], fakes]).add(1).div(2).clamp(0, 1), nrow=4, padding=2)
    Image.fromarray(picture.mul(255).round().byte().permute(1, 2, 0).numpy()).save(
        out / "samples" / f"epoch-{epoch + 1:03d}.png")
    steps_per_epoch = step // (epoch + 1)
    per_epoch = [(mean(history[i:i + steps_per_epoch], "d_total"), mean(history[i:i + steps_per_epoch], "g_total"))
                 for i in range(0, len(history), steps_per_epoch)]
    loss_plot(per_epoch, f"GAN-INT-CLS ({config.type}), mean loss per epoch").save(out / "losses.png")


def check_finite(values: dict[str, float], step: int, nets) -> None:
    """A diverged run stops here, before its epoch's checkpoint is written: the last good one stays."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if not bad:
        bad = [f"{name} weight {k}" for name, net in nets for k, p in net.state_dict().items()
               if p.is_floating_point() and not torch.isfinite(p).all()][:1]
    if bad:
        what = f"{bad[0]} is {values[bad[0]]}" if bad[0] in values else f"{bad[0]} is not finite"
        raise T2IError(f"training diverged at step {step}: {what} (lower --lr, or try --type hinge "
                       "--d-arch projection); the last epoch's checkpoint is kept")
