"""Loading the official GLIDE state dicts (base.pt, upsample.pt) into our networks, strictly.

Every failure is one line naming the file and the first offending key, raised as BrokenWeights so
callers show it as they show any other damaged weights file.
"""

from pathlib import Path

import torch

from ...errors import BrokenWeights, WeightsMissing, load_failure
from .model import Text2ImUNet, glide_base, glide_upsample

KINDS = {"base": glide_base, "upsample": glide_upsample}
_FIRST_CONV = "input_blocks.0.0.weight"


def check_state_dict(model: Text2ImUNet, state: dict, source: str = "state dict") -> None:
    """Raise BrokenWeights unless `state` has exactly the model's keys with its shapes."""
    expected = model.state_dict()
    conv = state.get(_FIRST_CONV)
    if conv is not None and conv.ndim == 4 and conv.shape[1] != model.in_channels:
        # 3 input channels is the base model, 6 the upsampler (noisy image + upsampled low-res image).
        kinds = {3: "the GLIDE base model", 6: "the GLIDE upsampler"}
        got = kinds.get(conv.shape[1], f"{conv.shape[1]} input channels")
        want = "the upsampler" if model.in_channels == 6 else "the base model"
        raise BrokenWeights(f"{source} is {got} ({_FIRST_CONV} takes {conv.shape[1]} channels), "
                            f"offered as {want} ({model.in_channels})")
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & state.keys() if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing:
        raise BrokenWeights(f"{source}: {len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        raise BrokenWeights(f"{source}: {len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if mismatched:
        k = mismatched[0]
        raise BrokenWeights(f"{source}: {len(mismatched)} tensors of the wrong shape (e.g. {k}: "
                            f"{tuple(state[k].shape)}, want {tuple(expected[k].shape)})")


def load_into(model: Text2ImUNet, state: dict, source: str = "state dict") -> Text2ImUNet:
    """Check, then copy `state` (any float dtype; the release stores much of it as fp16) into `model`."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def load(path: str | Path, kind: str, **overrides) -> Text2ImUNet:
    """Build the `kind` ("base" or "upsample") model with default options (or overrides) and load `path`."""
    if kind not in KINDS:
        raise ValueError(f"GLIDE model kind {kind!r}: base or upsample")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsMissing(f"missing {path}") from None
    except Exception as e:  # truncated or not a torch file: one line, not a pickle traceback
        first = load_failure(e)
        raise BrokenWeights(f"{path} does not load as a GLIDE state dict ({first})") from None
    if not isinstance(state, dict):
        raise BrokenWeights(f"{path} holds a {type(state).__name__}, not a state dict")
    return load_into(KINDS[kind](**overrides), state, str(path))
