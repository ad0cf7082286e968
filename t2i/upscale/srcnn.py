"""SRCNN (Dong et al. 2014) in the layout of the widely used PyTorch port, yjn870/SRCNN-pytorch, whose
published srcnn_x2/x3/x4.pth files are plain state dicts of this module (conv1/conv2/conv3 weights
and biases). The network sharpens only the luma of an image already enlarged by bicubic
interpolation; chroma is kept from the bicubic image, as the port's test.py does.

The colour conversions are the port's (BT.601 with the 16-235 / 16-240 studio offsets, on 0-255
values): the weights were trained on Y computed this way, so another Y (full-range, say) would feed
the network inputs shifted from what it learnt.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import BrokenWeights, SpecError, WeightsMissing, load_failure
from .sizes import FACTORS
from .sizes import TILE as TILES
from .tiles import tiled

# The bicubic image's luma goes through the network 512x512 pixels at a time (about 0.2 GB of fp32
# activations, measured: t2i/upscale/__init__.py; conv1's 64 channels dominate) instead of whole: a
# 4096x4096 result would need 13 GB. The 9-5-5 network sees 8 pixels to each side, so 8 pixels of
# overlap make tiling exact.
TILE = TILES["srcnn"]
OVERLAP = 8


class SRCNN(nn.Module):
    """9-5-5 SRCNN on one channel; attribute names are the state-dict keys of the published files."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(32, channels, kernel_size=5, padding=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x)))))


def load_srcnn(path: str | Path, device="cpu", download_hint: str = "") -> SRCNN:
    """The network in a published .pth (a plain state dict), in eval mode. A missing file, one that
    does not unpickle (truncated, corrupted, not a tensor file) or the state dict of another model
    raise one line naming the file."""
    path = Path(path)
    hint = f": run `{download_hint}`" if download_hint else ""
    if not path.is_file():
        raise WeightsMissing(f"SRCNN weights {path} are missing{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        first = load_failure(e)
        raise BrokenWeights(f"SRCNN weights {path} do not load ({first}){hint}") from None
    net = SRCNN()
    expected = {k: v.shape for k, v in net.state_dict().items()}
    if not isinstance(state, dict):
        raise BrokenWeights(f"SRCNN weights {path} hold a {type(state).__name__}, not a state dict{hint}")
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(map(str, state.keys() - expected.keys()))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise BrokenWeights(f"SRCNN weights {path} are not a 9-5-5 SRCNN state dict "
                            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {what}){hint}")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BrokenWeights(f"SRCNN weights {path}: {key} is {got}, expected {tuple(shape)}{hint}")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False).to(device)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB in 0-255 -> (..., 3) YCbCr in 0-255 (Y 16-235), the port's convert_rgb_to_ycbcr."""
    r, g, b = rgb.unbind(-1)
    y = 16.0 + (64.738 * r + 129.057 * g + 25.064 * b) / 256.0
    cb = 128.0 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256.0
    cr = 128.0 + (112.439 * r - 94.154 * g - 18.285 * b) / 256.0
    return torch.stack([y, cb, cr], -1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """The inverse of rgb_to_ycbcr (the port's convert_ycbcr_to_rgb); not clipped."""
    y, cb, cr = ycbcr.unbind(-1)
    r = 298.082 * y / 256.0 + 408.583 * cr / 256.0 - 222.921
    g = 298.082 * y / 256.0 - 100.291 * cb / 256.0 - 208.120 * cr / 256.0 + 135.576
    b = 298.082 * y / 256.0 + 516.412 * cb / 256.0 - 276.836
    return torch.stack([r, g, b], -1)


def check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor not in FACTORS:
        raise SpecError("upscale", f"factor must be one of {', '.join(map(str, FACTORS))}, not {factor!r}")
    return factor


@torch.no_grad()
def upscale(image: Image.Image, model: SRCNN, factor: int, tile: int = TILE) -> Image.Image:
    """The image enlarged `factor` times: bicubic, then the network's luma with the bicubic chroma.
    The model should be the one trained for this factor (the port publishes one file per factor)."""
    check_factor(factor)
    image = image.convert("RGB")
    big = image.resize((image.width * factor, image.height * factor), resample=Image.Resampling.BICUBIC)
    big_rgb = torch.from_numpy(np.asarray(big, dtype=np.float32))
    ycbcr = rgb_to_ycbcr(big_rgb)
    device = next(model.parameters()).device
    y = (ycbcr[..., 0] / 255.0)[None, None]
    luma = tiled(y, lambda t: model(t.to(device)).clamp(0.0, 1.0), 1, tile, OVERLAP)[0, 0] * 255.0
    # The port's two conversions are not exact inverses (its Y takes 64.738 R where BT.601 has
    # 65.738; the network was trained on that Y, so it is kept), so converting (luma, Cb, Cr) back
    # would tint every image by up to a level. Only the change of luma is converted back, onto the
    # bicubic RGB: a network that returns its input returns the bicubic image, and Cb/Cr stay put
    # (the inverse adds a luma change to R, G and B alike, and grey has no chroma).
    out = torch.stack([luma, ycbcr[..., 1], ycbcr[..., 2]], -1)
    rgb = big_rgb + ycbcr_to_rgb(out) - ycbcr_to_rgb(ycbcr)
    # Rounded rather than truncated (the port's astype(uint8)): truncation darkens by half a level.
    return Image.fromarray(rgb.round().clamp(0, 255).to(torch.uint8).numpy())
