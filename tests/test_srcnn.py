"""SRCNN upscaler (t2i/upscale/srcnn.py): files in the published layout load and upscale; chroma is
the bicubic image's; broken files and bad factors are one line naming what is wrong. CPU, seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.errors import SpecError, WeightsMissing
from t2i.upscale.srcnn import SRCNN, load_srcnn, rgb_to_ycbcr, upscale

PUBLISHED_SHAPES = {
    "conv1.weight": (64, 1, 9, 9), "conv1.bias": (64,),
    "conv2.weight": (32, 64, 5, 5), "conv2.bias": (32,),
    "conv3.weight": (1, 32, 5, 5), "conv3.bias": (1,),
}


def _affine(scale: float, shift: float) -> dict:
    """Weights whose network returns scale * Y + shift: each conv a centred delta on channel 0
    (Y >= 0, so the ReLUs pass it)."""
    state = {k: torch.zeros(s) for k, s in PUBLISHED_SHAPES.items()}
    state["conv1.weight"][0, 0, 4, 4] = 1.0
    state["conv2.weight"][0, 0, 2, 2] = 1.0
    state["conv3.weight"][0, 0, 2, 2] = scale
    state["conv3.bias"][0] = shift
    return state


def _published(seed=0) -> dict:
    """A state dict as the port saves it (plain tensors under exactly these keys, no module): the
    pass-through network below with every weight and bias perturbed, so that it changes the luma by
    some levels while mostly staying inside the RGB cube."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * 0.02 for k, v in _affine(1.0, 0.0).items()}


def _image(w=13, h=9, seed=0) -> Image.Image:
    # Mid-tones, so that a moderate change of luma stays inside the RGB cube (no clipping).
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(70, 180, (h, w, 3), dtype=np.uint8))


def _ycbcr(image: Image.Image) -> torch.Tensor:
    return rgb_to_ycbcr(torch.from_numpy(np.asarray(image, dtype=np.float32)))


def _bicubic(image: Image.Image, factor: int) -> Image.Image:
    return image.resize((image.width * factor, image.height * factor), resample=Image.Resampling.BICUBIC)


def _save(tmp_path, state, name="srcnn_x2.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_published_layout_loads_and_upscales_keeping_chroma(tmp_path, factor):
    state = _published(factor)
    model = load_srcnn(_save(tmp_path, state))
    assert isinstance(model, SRCNN) and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    image = _image()
    out = upscale(image, model, factor)
    assert out.mode == "RGB" and out.size == (13 * factor, 9 * factor)
    got, ref = _ycbcr(out), _ycbcr(_bicubic(image, factor))
    assert (got[..., 0] - ref[..., 0]).abs().max() > 5          # the network did change the luma
    # Chroma is the bicubic image's, up to rounding RGB to whole levels (and clipping where the
    # random network's luma leaves the RGB cube, so compare where it does not).
    inside = (got[..., 0] > 20) & (got[..., 0] < 230)
    assert inside.float().mean() > 0.5
    assert (got[..., 1:] - ref[..., 1:])[inside].abs().max() <= 1.0


def test_identity_network_returns_the_bicubic_image(tmp_path):
    model = load_srcnn(_save(tmp_path, _affine(1.0, 0.0)))
    image = _image(seed=1)
    assert np.array_equal(np.asarray(upscale(image, model, 3)), np.asarray(_bicubic(image, 3)))


def test_network_changes_only_luma(tmp_path):
    model = load_srcnn(_save(tmp_path, _affine(0.9, 0.2)))   # Y' = 0.9 Y + 0.2 on [0, 1]
    image = _image(seed=2)
    got, ref = _ycbcr(upscale(image, model, 2)), _ycbcr(_bicubic(image, 2))
    assert torch.allclose(got[..., 0], 0.9 * ref[..., 0] + 51.0, atol=1.0)
    assert (got[..., 1:] - ref[..., 1:]).abs().max() <= 1.0
    assert (got[..., 0] - ref[..., 0]).abs().min() > 5


def test_non_rgb_input_is_converted(tmp_path):
    model = load_srcnn(_save(tmp_path, _affine(1.0, 0.0)))
    out = upscale(_image().convert("RGBA"), model, 2)
    assert out.mode == "RGB" and out.size == (26, 18)


def _one_line_naming(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message


def test_missing_file(tmp_path):
    path = tmp_path / "srcnn_x4.pth"
    with pytest.raises(WeightsMissing) as e:
        load_srcnn(path, download_hint="python -m t2i download srcnn")
    _one_line_naming(e, path)
    assert "python -m t2i download srcnn" in str(e.value)


def test_truncated_file(tmp_path):
    path = _save(tmp_path, _published())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsMissing) as e:   # BrokenWeights is a WeightsMissing
        load_srcnn(path)
    assert type(e.value).__name__ == "BrokenWeights"
    _one_line_naming(e, path)


def test_garbage_file(tmp_path):
    path = tmp_path / "srcnn_x2.pth"
    path.write_bytes(b"<html>404 Not Found</html>\n" * 10)
    with pytest.raises(WeightsMissing) as e:
        load_srcnn(path)
    _one_line_naming(e, path)


@pytest.mark.parametrize("state", [
    pytest.param(SRCNN(channels=3).state_dict(), id="rgb-srcnn-shapes"),
    pytest.param(torch.nn.Sequential(torch.nn.Conv2d(1, 64, 9), torch.nn.Conv2d(64, 1, 5)).state_dict(),
                 id="other-keys"),
    pytest.param({**_published(), "conv4.weight": torch.zeros(1)}, id="extra-key"),
    pytest.param({"state_dict": _published()}, id="nested"),
    pytest.param([torch.zeros(3)], id="not-a-dict"),
])
def test_state_dict_of_another_model(tmp_path, state):
    path = _save(tmp_path, state)
    with pytest.raises(WeightsMissing) as e:
        load_srcnn(path)
    assert type(e.value).__name__ == "BrokenWeights"
    _one_line_naming(e, path)


@pytest.mark.parametrize("factor", [5, 1, 0, 2.0, True])
def test_other_factors_refused(factor):
    with pytest.raises(SpecError) as e:
        upscale(_image(), SRCNN(), factor)
    assert "\n" not in str(e.value) and "upscale" in str(e.value)


def test_tiles_give_the_whole_images_result(tmp_path):
    # The 9-5-5 network sees 8 pixels to each side; 8 pixels of overlap make tiling exact.
    model = load_srcnn(_save(tmp_path, _published(5)))
    image = _image(40, 33, seed=5)
    whole, tiled = upscale(image, model, 3, tile=4096), upscale(image, model, 3, tile=20)
    assert tiled.size == (120, 99)
    assert np.abs(np.asarray(whole, dtype=np.int16) - np.asarray(tiled, dtype=np.int16)).max() <= 1
