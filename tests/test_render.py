"""Output files: the PNG with its parameters chunk, the animated GIF, and the recorded parameters."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from t2i import __version__
from t2i.output import render
from t2i.engine import Generation as Result
from t2i.presets import get_preset
from t2i.spec import make_spec

PRESET = "tiny-vqgan-untrained"


def pattern_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


def distinct_frames(n: int, size=(32, 24)) -> list[Image.Image]:
    # Distinct solid colours: GIF palettes hold them exactly, and no two consecutive frames match.
    return [Image.new("RGB", size, (20 + 30 * i, 230 - 30 * i, (70 * i) % 256)) for i in range(n)]


# --- PNG ----------------------------------------------------------------------------------------

def test_png_round_trips_parameters_and_pixels():
    image = pattern_image(40, 30)
    params = {"prompt": "ein Fuchs — 狐 🦊", "seed": 2**63 - 1, "size": [40, 30], "lr": 0.1,
              "untrained": True, "versions": {"t2i": "0.1.0"}, "nested": {"a": [1, 2.5, None]}}
    data = render.png_bytes(image, params)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert render.read_parameters(data) == params
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        assert im.size == (40, 30)
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(image))
        assert json.loads(im.text[render.JSON_KEY])["prompt"] == "ein Fuchs — 狐 🦊"
        # Other tools' text, in A1111's form (non-Latin-1, so an iTXt chunk, as A1111 writes it).
        assert im.text[render.PARAMETERS_KEY].startswith("ein Fuchs — 狐 🦊\nSeed: 9223372036854775807, ")


def test_read_parameters_without_chunk_is_none():
    buf = io.BytesIO()
    pattern_image(8, 8).save(buf, format="PNG")
    assert render.read_parameters(buf.getvalue()) is None
    assert render.read_parameters(b"not a png") is None
    assert render.read_parameters(buf.getvalue()[:40]) is None  # truncated


# --- GIF ----------------------------------------------------------------------------------------

def _open_gif(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    assert im.format == "GIF"
    return im


def _durations(im: Image.Image) -> list[float]:
    out = []
    for k in range(im.n_frames):
        im.seek(k)
        out.append(im.info.get("duration"))
    return out


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_gif_frames_loop_and_hold_last(n):
    frames = distinct_frames(n)
    im = _open_gif(render.gif_bytes(frames, fps=10.0, hold_last=1.0))
    assert im.n_frames == n
    assert im.is_animated == (n > 1)
    assert im.info.get("loop") == 0
    assert im.size == (32, 24)
    durations = _durations(im)
    assert durations[-1] == pytest.approx(1000, abs=10)
    for d in durations[:-1]:
        assert d == pytest.approx(100, abs=10)
        assert durations[-1] > d
    # Frame contents survive (solid colours are exact in a GIF palette).
    for k, frame in enumerate(frames):
        im.seek(k)
        assert np.array_equal(np.asarray(im.convert("RGB"))[0, 0], np.asarray(frame)[0, 0])


def test_gif_resizes_frames_to_last_frame_size():
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (48, 20), (0, 255, 0)),
              Image.new("L", (10, 30), 128), Image.new("RGB", (40, 24), (0, 0, 255))]
    im = _open_gif(render.gif_bytes(frames))
    assert im.n_frames == 4
    assert im.size == (40, 24)
    for k in range(im.n_frames):
        im.seek(k)
        assert im.convert("RGB").size == (40, 24)
    im.seek(0)
    assert tuple(np.asarray(im.convert("RGB"))[12, 20]) == (255, 0, 0)


# --- parameters ---------------------------------------------------------------------------------

def test_versions_include_t2i_and_torch():
    v = render.versions()
    assert v["t2i"] == __version__
    assert "torch" in v and v["torch"]
    assert all(isinstance(k, str) and isinstance(val, str) for k, val in v.items())


def test_parameters_from_real_spec_result_and_preset():
    preset = get_preset(PRESET)
    spec = make_spec("a cat", PRESET, defaults=preset.defaults, seed=42, width=70, height=90)
    image = pattern_image(64, 80)
    result = Result(image=image, frames=[image, image], frame_steps=[5, 10], seed=42,
                    width=64, height=80, losses=[1.0, 0.5])
    params = render.parameters(spec, result, preset)

    for key in ("prompt", "preset", "seed", "size", "requested_size", "iterations", "cutn", "lr",
                "versions", "untrained"):
        assert key in params, key
    assert params["prompt"] == "a cat"
    assert params["preset"] == PRESET
    assert params["seed"] == 42
    assert params["size"] == [64, 80]
    assert params["requested_size"] == [70, 90]
    assert params["iterations"] == preset.defaults["iterations"] == spec.options.iterations
    assert params["cutn"] == preset.defaults["cutn"] == spec.options.cutn
    assert params["lr"] == pytest.approx(preset.defaults["lr"])
    assert params["untrained"] is True
    assert params["init_image"] is False
    assert params["image_prompts"] == 0
    assert "t2i" in params["versions"] and "torch" in params["versions"]

    text = json.dumps(params)
    assert json.loads(text) == params
    # And it survives the PNG chunk.
    assert render.read_parameters(render.png_bytes(image, params)) == params
