"""ESRGAN / Real-ESRGAN files through spandrel, the loader the big UIs use.

spandrel reads the .pth with a restricted unpickler (tensors and dicts only, no code), unwraps the
usual containers (`params_ema` of Real-ESRGAN's releases, `state_dict`, ...), recognises the
architecture by the state dict's keys (the original ESRGAN `model.N...` layout and the RRDBNet
`conv_first`/`body.N.rdbM` one of basicsr alike) and reads the scale, block and feature counts from
the tensors' shapes. We accept what it loads as a single-image RGB upscaler; anything else (a
truncated download, an HTML error page saved as .pth, a model of another purpose) is one line
naming the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..errors import BrokenWeights, WeightsMissing, load_failure
from .sizes import TILE as TILES
from .tiles import tiled

# The largest input piece run at once: for a 64-feature x4 RRDBNet (Real-ESRGAN x4plus) a 256x256
# tile holds about 1 GB of fp32 activations (measured: t2i/upscale/__init__.py; its 4x-upsampled
# tail dominates); a whole 1024x1024 image would need sixteen times that.
TILE = TILES["esrgan"]
OVERLAP = 16  # input pixels of context around each tile (Real-ESRGAN's own tiler uses 10)


def load_esrgan(path: str | Path, device="cpu", download_hint: str = ""):
    """The spandrel ImageModelDescriptor of the file, in eval mode on `device`; WeightsMissing or
    BrokenWeights (one line naming the file) when it is absent or is not an RGB upscaler."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    path = Path(path)
    hint = f": run `{download_hint}`" if download_hint else ""
    if not path.is_file():
        raise WeightsMissing(f"upscaler weights {path} are missing{hint}")
    loader = ModelLoader(device="cpu")  # moved to the device once checked
    try:
        state = loader.load_state_dict_from_file(path)
    except Exception as e:  # noqa: BLE001 - torch.load and the unpickler raise many types for junk
        raise BrokenWeights(f"upscaler weights {path} do not load ({_first_line(e)}){hint}") from None
    if not isinstance(state, dict) or not state:
        raise BrokenWeights(f"upscaler weights {path} hold a {type(state).__name__}, not a state dict{hint}")
    try:
        model = loader.load_from_state_dict(state)
    except UnsupportedModelError:
        raise BrokenWeights(f"upscaler weights {path} are not a model spandrel recognises "
                            f"(not ESRGAN / Real-ESRGAN: {len(state)} keys, e.g. {next(iter(state))}){hint}") from None
    except Exception as e:  # noqa: BLE001 - a recognised layout with missing or misshapen tensors
        raise BrokenWeights(f"upscaler weights {path} look like an upscaler but do not load "
                            f"({_first_line(e)}){hint}") from None
    if not isinstance(model, ImageModelDescriptor) or (model.input_channels, model.output_channels) != (3, 3):
        raise BrokenWeights(f"upscaler weights {path} are a {model.architecture.name} model with "
                            f"{model.input_channels} input and {model.output_channels} output channels, "
                            f"not an RGB upscaler{hint}")
    return model.eval().to(torch.device(device))


def _first_line(error: BaseException) -> str:
    # Whitespace collapsed rather than the first line kept: load_state_dict's first line is only
    # "Error(s) in loading state_dict for RRDBNet:", the reason follows on the next.
    if "WeightsUnpickler error" in str(error):
        return load_failure(error)  # torch's safe loader: its reason, without its advice
    text = " ".join(str(error).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def upscale(image: Image.Image, model, tile: int = TILE, overlap: int = OVERLAP) -> Image.Image:
    """The image enlarged by the model's scale, `tile` input pixels square at a time."""
    x = TF.to_tensor(image.convert("RGB"))[None]
    out = tiled(x, lambda t: model(t.to(model.device, model.dtype)), model.scale, tile, overlap)
    # Rounded to whole levels (to_pil_image would truncate, darkening by half a level).
    return Image.fromarray(out[0].clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy())
