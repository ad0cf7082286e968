"""SRCNN x2 / x3 / x4 trained on the flowers world, and their PSNR against bicubic on held-out renders.

    train(scale, steps=STEPS, seed=0, progress=True) -> state dict in the published layout
    save_srcnn(state, path)                         -> the file t2i/upscale/srcnn.py's load_srcnn reads
    psnr_table(models, n=16, seed=1)                -> {scale: {"bicubic": dB, "srcnn": dB}}

The data follow the yjn870/SRCNN-pytorch port's prepare.py: a high-resolution image (a flowers render,
HR_SIZE pixels square, a multiple of 2, 3 and 4 so no crop is needed) is shrunk `scale` times by PIL's
bicubic, enlarged back by PIL's bicubic, and both go to the port's Y (t2i.upscale.srcnn.rgb_to_ycbcr,
16-235, then / 255). The network (9-5-5, zero padding, as the port's models.py) maps PATCH x PATCH
patches of the enlarged Y to the high-resolution Y under MSE. PSNR is the port's calc_psnr
(10 log10(1 / MSE) on Y in [0, 1]), with `scale` pixels cropped from every border as the SR papers do.

Two departures from the port, both for a budget of well under a minute per factor on one CPU thread
(the port trains 400 epochs of 91 images on a GPU):
- initialisation: the port starts from PyTorch's default init and must first learn to copy its
  input. Here one path through the three layers starts as the identity (a centred delta in channel 0
  of each conv; Y >= 0, so the ReLUs pass it) and the other channels' contributions to the output
  start at zero, so step 0 already returns the bicubic image and every step refines it;
- optimiser: AdamW under the shared one-cycle schedule (t2i/train/schedule.py) at a higher rate,
  instead of Adam at 1e-4 with conv3 at a tenth.
The saved file is still a plain state dict of exactly the published keys and shapes.

Renders come from seeds of the "train" split for training and of the "heldout" split (new
combinations of colours and counts, other scene seeds) for the table, so no test image was seen.
"""

from __future__ import annotations

import math
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import flowers
from ..upscale import FACTORS
from ..upscale.srcnn import SRCNN, check_factor, rgb_to_ycbcr
from .schedule import optimise
from .threads import torch_threads

HR_SIZE = 192     # divisible by 2, 3 and 4: the low-res image is exactly 96, 64 or 48 pixels
IMAGES = 48       # high-resolution renders per training pool (about 0.2 s to draw)
PATCH = 33        # the port's patch size
BATCH = 64
STEPS = 100       # about 33 s a factor on one thread (0.33 s a step of 64 33x33 patches)
LR = 1e-3


def y_pair(hr_rgb: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(bicubic-enlarged low-res Y, high-res Y), float32 in [0, 1], of a uint8 (h, w, 3) image whose
    sides are multiples of `scale`: the port's prepare.py."""
    hr = Image.fromarray(hr_rgb)
    w, h = hr.size
    lr = hr.resize((w // scale, h // scale), resample=Image.Resampling.BICUBIC)
    lr = lr.resize((w, h), resample=Image.Resampling.BICUBIC)

    def luma(image):
        return rgb_to_ycbcr(torch.from_numpy(np.asarray(image, dtype=np.float32)))[..., 0].numpy() / 255.0
    return luma(lr), luma(hr)


@lru_cache(maxsize=4)
def _pool(scale: int, seed: int, split: str, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) enlarged low-res Y and high-res Y of n renders of `split` (cached: the
    table and a test reuse the same renders)."""
    images, _, _ = flowers.sample(n, np.random.default_rng([seed, 23, 0 if split == "train" else 1]), split, size)
    pairs = [y_pair(im.transpose(1, 2, 0), scale) for im in images]
    return (torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None],
            torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None])


def identity_init(net: SRCNN) -> SRCNN:
    """Make the network return its input (see the module docstring): channel 0 of conv1 and conv2 a
    centred delta on channel 0, conv3 reads only channel 0; the other channels keep their random
    init, so their gradients are not zero once conv3 starts reading them."""
    with torch.no_grad():
        net.conv1.weight[0].zero_()
        net.conv1.weight[0, 0, 4, 4] = 1.0
        net.conv1.bias[0] = 0.0
        net.conv2.weight[0].zero_()
        net.conv2.weight[0, 0, 2, 2] = 1.0
        net.conv2.bias[0] = 0.0
        net.conv3.weight.zero_()
        net.conv3.weight[0, 0, 2, 2] = 1.0
        net.conv3.bias.zero_()
    return net


def train(scale: int, steps: int = STEPS, seed: int = 0, progress: bool = True, images: int = IMAGES,
          batch: int = BATCH, lr: float = LR) -> dict[str, torch.Tensor]:
    """SRCNN for `scale` (2, 3 or 4) trained `steps` steps on random PATCH-pixel patches of `images`
    train-split renders; one thread, so the same seed gives the same tensors on one machine. Returns
    a plain fp32 state dict of the published keys (conv1/conv2/conv3 weight and bias)."""
    check_factor(scale)
    with torch_threads():
        low, high = _pool(scale, seed, "train", images, HR_SIZE)
        gen = torch.Generator().manual_seed(seed * 1000 + 30 + scale)
        torch.manual_seed(seed * 1000 + 30 + scale)  # the random part of the initial weights
        net = identity_init(SRCNN())
        span = HR_SIZE - PATCH + 1

        def step_loss():
            # Patches anywhere, as the port's stride-14 grid covers every image evenly.
            which = torch.randint(len(low), (batch,), generator=gen)
            ys, xs = torch.randint(span, (2, batch), generator=gen)
            rows = (ys[:, None] + torch.arange(PATCH))[:, :, None]
            cols = (xs[:, None] + torch.arange(PATCH))[:, None, :]
            x = low[which, 0][torch.arange(batch)[:, None, None], rows, cols][:, None]
            y = high[which, 0][torch.arange(batch)[:, None, None], rows, cols][:, None]
            return F.mse_loss(net(x), y)

        optimise(net.parameters(), step_loss, steps, lr, 0.0, f"srcnn x{scale}", progress)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def save_srcnn(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """The state dict as the port saves it (torch.save of the plain dict, fp32: 230 kB), written
    through a temporary name so that an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({k: v.float().contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def psnr(a: torch.Tensor, b: torch.Tensor, crop: int = 0) -> float:
    """The port's calc_psnr, 10 log10(1 / MSE) on values in [0, 1], with `crop` pixels taken off every
    border (the bicubic enlargement and zero padding are worst there; the SR papers crop the scale)."""
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    return float(10 * math.log10(1.0 / float(((a.double() - b.double()) ** 2).mean())))


def _as_net(model) -> SRCNN:
    if isinstance(model, SRCNN):
        return model.eval()
    net = SRCNN()
    net.load_state_dict({k: v.float() for k, v in model.items()})
    return net.eval()


@torch.no_grad()
def evaluate(model, scale: int, n: int = 16, seed: int = 1, split: str = "heldout",
             size: int = HR_SIZE) -> dict[str, float]:
    """{"bicubic": dB, "srcnn": dB}: the mean PSNR over n renders of `split` at `size`, Y channel,
    `scale` pixels cropped; the network's output clamped to [0, 1] as t2i.upscale.srcnn does."""
    low, high = _pool(check_factor(scale), seed, split, n, size)
    net = _as_net(model)
    with torch_threads():
        out = torch.cat([net(low[i:i + 4]).clamp(0, 1) for i in range(0, n, 4)])
    return {"bicubic": float(np.mean([psnr(low[i], high[i], scale) for i in range(n)])),
            "srcnn": float(np.mean([psnr(out[i], high[i], scale) for i in range(n)]))}


def psnr_table(models: dict, n: int = 16, seed: int = 1) -> dict[int, dict[str, float]]:
    """{scale: {"bicubic": dB, "srcnn": dB}} for each scale -> model (an SRCNN or its state dict) in
    `models`, on n held-out renders (see evaluate)."""
    return {scale: evaluate(model, scale, n, seed) for scale, model in sorted(models.items())}


def format_table(table: dict[int, dict[str, float]]) -> str:
    lines = ["scale  bicubic  SRCNN   gain (dB, Y, held-out flowers renders)"]
    lines += [f"x{s}     {r['bicubic']:6.2f}  {r['srcnn']:6.2f}  {r['srcnn'] - r['bicubic']:+.2f}"
              for s, r in sorted(table.items())]
    return "\n".join(lines)


def main(out_dir: str | os.PathLike = "checkpoints/flowers", steps: int = STEPS, seed: int = 0) -> dict:
    """Train x2, x3 and x4, save them as out_dir/srcnn_x{s}.pth and print the PSNR table."""
    states = {}
    for scale in FACTORS:
        start = time.perf_counter()
        states[scale] = train(scale, steps, seed)
        save_srcnn(states[scale], Path(out_dir) / f"srcnn_x{scale}.pth")
        print(f"srcnn x{scale}: {time.perf_counter() - start:.1f} s")
    table = psnr_table(states)
    print(format_table(table))
    return table


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
