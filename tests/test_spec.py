"""Unit tests for t2i/spec.py: the one place that validates user input."""

import hashlib
import io
import json
import math
import os

import pytest
from PIL import Image, ImageFile

from t2i import spec as spec_mod
from t2i.families.guided.options import DEFAULTS as GUIDED
from t2i.spec import (
    DEFAULTS,
    MAX_SEED,
    JobSpec,
    Limits,
    PromptPart,
    SpecError,
    check_image,
    make_spec,
    parse_prompt,
    round_size,
)


def assert_spec_error(excinfo, field):
    """Every SpecError is one line, names its field, and its message starts with that field."""
    e = excinfo.value
    msg = str(e)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.strip(), "empty message"
    assert e.field == field, (e.field, msg)
    assert msg.startswith(f"{field}:"), msg
    return msg


# --- parse_prompt -----------------------------------------------------------------------------------

def test_single_part_defaults():
    assert parse_prompt("a cat") == [PromptPart("a cat", 1.0, -math.inf)]


@pytest.mark.parametrize("prompt, weight, stop", [
    ("a cat:2", 2.0, -math.inf),
    ("a cat:-1.5:0.3", -1.5, 0.3),
    ("a cat:-1", -1.0, -math.inf),
    ("a cat:+2.5", 2.5, -math.inf),
    ("a cat:.5", 0.5, -math.inf),
    ("a cat:1e1", 10.0, -math.inf),
    ("a cat:10", 10.0, -math.inf),
    ("a cat:-10", -10.0, -math.inf),
    ("a cat:1:-5", 1.0, -5.0),
    ("a cat:1:5", 1.0, 5.0),
])
def test_weights_and_stops(prompt, weight, stop):
    (part,) = parse_prompt(prompt)
    assert part.text == "a cat"
    assert part.weight == weight
    assert part.stop == stop


def test_negative_weight_part_alongside_positive():
    parts = parse_prompt("a red fox|blurry:-0.5")
    assert parts == [PromptPart("a red fox", 1.0, -math.inf), PromptPart("blurry", -0.5, -math.inf)]


@pytest.mark.parametrize("text", ["ratio 4:3 photo", "a: b", "http://x.y/z", "time 12:30 pm", "a:b:c"])
def test_colon_text_that_is_not_a_number_stays_text(text):
    assert parse_prompt(text) == [PromptPart(text, 1.0, -math.inf)]


def test_colon_text_with_a_trailing_weight_keeps_the_colons_in_the_text():
    assert parse_prompt("ratio 4:3 photo:2") == [PromptPart("ratio 4:3 photo", 2.0, -math.inf)]
    assert parse_prompt("http://x.y/z:0.5:1") == [PromptPart("http://x.y/z", 0.5, 1.0)]


def test_odd_spacing_is_collapsed():
    parts = parse_prompt("  a   red\tfox  |  blue  sky :  0.5 ")
    assert parts == [PromptPart("a red fox", 1.0, -math.inf), PromptPart("blue sky", 0.5, -math.inf)]


@pytest.mark.parametrize("text", [
    "a fox 🦊 at sunset 🌅",
    "富士山と桜",
    "café crème brûlée, Ærøskøbing",
    "e\u0301t\u0301e\u0301",  # combining accents (category Mn) are kept
    "שלום עולם",
    "مرحبا بالعالم",
])
def test_unicode_preserved(text):
    assert parse_prompt(text) == [PromptPart(text, 1.0, -math.inf)]
    assert make_spec(text, "p").prompt == text


def test_control_characters_removed():
    (part,) = parse_prompt("a\x00 red\x07 f\u200box\x1b")
    assert part.text == "a red fox"
    assert make_spec("a\x00 red\x07 f\u200box\x1b", "p").prompt == "a red fox"


def test_newlines_become_spaces():
    assert parse_prompt("a red\nfox\r\non\rgrass")[0].text == "a red fox on grass"
    assert make_spec("a red\nfox", "p").prompt == "a red fox"


def test_eight_parts_ok_nine_rejected():
    eight = "|".join(f"p{i}" for i in range(8))
    assert [p.text for p in parse_prompt(eight)] == [f"p{i}" for i in range(8)]
    assert make_spec(eight, "p").parts == parse_prompt(eight)
    nine = "|".join(f"p{i}" for i in range(9))
    with pytest.raises(SpecError) as ei:
        parse_prompt(nine)
    assert "9" in assert_spec_error(ei, "prompt")
    with pytest.raises(SpecError) as ei:
        make_spec(nine, "p")
    assert_spec_error(ei, "prompt")


@pytest.mark.parametrize("prompt, part_no", [
    ("a||b", 2), ("|a", 1), ("a|", 2), ("a| \t |b", 2), ("a|:2", 2), ("a|\x00|b", 2),
])
def test_empty_part_rejected_naming_the_part(prompt, part_no):
    for fn in (parse_prompt, lambda p: make_spec(p, "p")):
        with pytest.raises(SpecError) as ei:
            fn(prompt)
        msg = assert_spec_error(ei, "prompt")
        assert f"part {part_no}" in msg


@pytest.mark.parametrize("prompt", ["a cat:11", "a cat:-10.5", "a cat:10.0001", "a cat:inf", "a cat:-inf",
                                    "ok|a cat:1e3"])
def test_weight_out_of_range_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        parse_prompt(prompt)
    assert "weight" in assert_spec_error(ei, "prompt")


@pytest.mark.parametrize("prompt", ["a cat:nan", "a cat:NaN", "a cat:nan:0.3"])
def test_nan_weight_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        parse_prompt(prompt)
    assert_spec_error(ei, "prompt")


@pytest.mark.parametrize("prompt", ["a:0", "a:0|b:0", "a:0|b:-0|c:0.0:1"])
def test_all_zero_weights_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        parse_prompt(prompt)
    assert "non-zero" in assert_spec_error(ei, "prompt")


def test_some_zero_weights_ok():
    assert [p.weight for p in parse_prompt("a:0|b:1")] == [0.0, 1.0]


@pytest.mark.parametrize("prompt", ["a:1:6", "a:1:-5.01", "a:-1:100", "a:1:inf"])
def test_stop_out_of_range_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        parse_prompt(prompt)
    assert "stop" in assert_spec_error(ei, "prompt")


# --- make_spec ------------------------------------------------------------------------------------

def test_global_defaults_applied():
    s = make_spec("a cat", "some-preset")
    assert (s.width, s.height, s.options.iterations, s.options.cutn, s.options.lr, s.save_every) == (
        DEFAULTS["width"], DEFAULTS["height"], GUIDED["iterations"], GUIDED["cutn"], GUIDED["lr"],
        DEFAULTS["save_every"])
    assert s.seed is None and s.init_image is None and s.image_prompts == ()
    assert s.preset == "some-preset" and s.prompt == "a cat"


def test_preset_defaults_override_global_ones():
    from t2i.presets import get_preset

    preset = get_preset("tiny-vqgan-untrained")
    s = make_spec("a cat", preset.name, defaults=preset.defaults)
    assert (s.width, s.height, s.options.iterations, s.options.cutn, s.save_every) == (64, 64, 20, 8, 5)
    # Partial defaults: only the named keys change.
    s = make_spec("a cat", "p", defaults={"width": 128, "cutn": 4})
    assert (s.width, s.height, s.options.cutn, s.options.iterations) == (128, DEFAULTS["height"], 4,
                                                                       GUIDED["iterations"])
    # Explicit values beat both; "" means "use the default".
    s = make_spec("a cat", "p", width=96, iterations="", defaults={"width": 128, "iterations": 7})
    assert (s.width, s.options.iterations) == (96, 7)


def test_strings_accepted_for_numbers():
    s = make_spec("a cat", "p", width="64", height=" 128 ", iterations="10", cutn="4", lr="0.05",
                  save_every="3", seed="42")
    o = s.options
    assert (s.width, s.height, o.iterations, o.cutn, o.lr, s.save_every, s.seed) == (64, 128, 10, 4, 0.05, 3, 42)
    assert all(isinstance(v, int) for v in (s.width, s.height, o.iterations, o.cutn, s.save_every, s.seed))


BOUNDS = [
    ("width", 64, 1024),
    ("height", 64, 1024),
    ("iterations", 1, 5000),
    ("cutn", 1, 256),
    ("seed", 0, MAX_SEED),
]


def read(spec, name):
    """A common field of the spec, or one of its family's options."""
    return getattr(spec, name) if name in JobSpec.__dataclass_fields__ else getattr(spec.options, name)


@pytest.mark.parametrize("name, lo, hi", BOUNDS)
@pytest.mark.parametrize("as_str", [False, True])
def test_numeric_bounds(name, lo, hi, as_str):
    conv = str if as_str else (lambda v: v)
    for ok in (lo, hi):
        assert read(make_spec("a cat", "p", **{name: conv(ok)}), name) == ok
    for bad in (lo - 1, hi + 1):
        with pytest.raises(SpecError) as ei:
            make_spec("a cat", "p", **{name: conv(bad)})
        msg = assert_spec_error(ei, name)
        assert str(lo) in msg and str(hi) in msg


@pytest.mark.parametrize("name", ["width", "height", "iterations", "cutn", "seed", "save_every"])
def test_non_integral_floats_rejected_integral_accepted(name):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", **{name: 64.5})
    assert "whole number" in assert_spec_error(ei, name)
    assert read(make_spec("a cat", "p", **{name: 64.0}), name) == 64
    assert type(read(make_spec("a cat", "p", **{name: 64.0}), name)) is int


@pytest.mark.parametrize("name", ["width", "height", "iterations", "cutn", "seed", "save_every"])
@pytest.mark.parametrize("value", [True, False])
def test_bool_rejected(name, value):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", **{name: value})
    assert_spec_error(ei, name)


@pytest.mark.parametrize("name", ["width", "iterations", "cutn", "seed"])
@pytest.mark.parametrize("value", ["abc", "12abc", "1.5", "6\n4", float("nan"), float("inf"), [64], "0x40"])
def test_junk_numbers_rejected(name, value):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", **{name: value})
    assert_spec_error(ei, name)


@pytest.mark.parametrize("value", ["abc", "nan", float("nan"), 0, 100, "-1", [0.1]])
def test_lr_rejected(value):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", lr=value)
    assert_spec_error(ei, "lr")


def test_lr_bounds_accepted():
    assert make_spec("a cat", "p", lr="1e-5").options.lr == 1e-5
    assert make_spec("a cat", "p", lr=10).options.lr == 10.0


def test_seed_empty_or_none_means_random():
    assert make_spec("a cat", "p", seed="").seed is None
    assert make_spec("a cat", "p", seed=None).seed is None
    assert make_spec("a cat", "p", seed=0).seed == 0


def test_prompt_length_limit():
    assert make_spec("a" * 1000, "p").prompt == "a" * 1000
    # The limit applies after trimming and removing control characters.
    assert make_spec("  " + "a" * 1000 + " \n", "p").prompt == "a" * 1000
    assert make_spec("a" * 999 + "\x00\x07" + "a", "p").prompt == "a" * 1000
    with pytest.raises(SpecError) as ei:
        make_spec("a" * 1001, "p")
    msg = assert_spec_error(ei, "prompt")
    assert "1001" in msg and "1000" in msg


@pytest.mark.parametrize("prompt", ["", " ", "   \t\n ", "\x00\x07", "|", " | "])
def test_empty_prompt_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        make_spec(prompt, "p")
    assert_spec_error(ei, "prompt")


@pytest.mark.parametrize("prompt", [None, 42, b"a cat", ["a cat"]])
def test_non_text_prompt_rejected(prompt):
    with pytest.raises(SpecError) as ei:
        make_spec(prompt, "p")
    assert_spec_error(ei, "prompt")


@pytest.mark.parametrize("preset", ["", "   ", None, 3])
def test_bad_preset_rejected(preset):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", preset)
    assert_spec_error(ei, "preset")


def test_limits_lower_the_caps():
    lim = Limits(max_side=512, max_iterations=100, max_cutn=16)
    s = make_spec("a cat", "p", width=512, height=512, iterations=100, cutn=16, limits=lim)
    assert (s.width, s.height, s.options.iterations, s.options.cutn) == (512, 512, 100, 16)
    ok = dict(width=64, height=64, iterations=1, cutn=1)
    for name, bad, cap in [("width", 513, 512), ("height", 1024, 512), ("iterations", 101, 100),
                           ("cutn", 17, 16)]:
        with pytest.raises(SpecError) as ei:
            make_spec("a cat", "p", limits=lim, **{**ok, name: bad})
        assert str(cap) in assert_spec_error(ei, name)


def test_limits_cannot_raise_the_hard_caps():
    lim = Limits(max_side=4096, max_iterations=10**6, max_cutn=10**4)
    for name, bad in [("width", 1025), ("iterations", 5001), ("cutn", 257)]:
        with pytest.raises(SpecError) as ei:
            make_spec("a cat", "p", limits=lim, **{name: bad})
        assert_spec_error(ei, name)


def test_default_outside_lowered_limits_is_rejected():
    # A preset default above an operator's cap is still checked, not waved through.
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", limits=Limits(max_side=256))  # global default is 300
    assert_spec_error(ei, "width")


# --- images ---------------------------------------------------------------------------------------

def _encode(fmt, size=(16, 12), mode="RGB", **kw):
    buf = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 1).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise_png(size=(64, 64)):
    buf = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def load_spy(monkeypatch):
    """Records every pixel decode (ImageFile.load) so tests can tell header checks from decoding."""
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_small_png_jpeg_webp_accepted(fmt, load_spy):
    data = _encode(fmt)
    assert check_image("init_image", data) == data
    assert load_spy, "a valid image is decoded fully (proves the spy sees decoding)"
    s = make_spec("a cat", "p", init_image=data, image_prompts=[data, bytearray(data)])
    assert s.init_image == data and s.image_prompts == (data, data)
    assert all(type(b) is bytes for b in s.image_prompts)


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_gif_and_bmp_rejected_naming_the_format(fmt):
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", init_image=_encode(fmt))
    msg = assert_spec_error(ei, "init_image")
    assert fmt in msg


def test_image_prompt_error_names_which_one():
    good = _encode("PNG")
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", image_prompts=[good, _encode("BMP")])
    assert "BMP" in assert_spec_error(ei, "image_prompt 2")


def test_too_many_image_prompts_rejected():
    good = _encode("PNG")
    assert len(make_spec("a cat", "p", image_prompts=[good] * 4).image_prompts) == 4
    with pytest.raises(SpecError) as ei:
        make_spec("a cat", "p", image_prompts=[good] * 5)
    assert_spec_error(ei, "image_prompts")


@pytest.mark.parametrize("data", [os.urandom(4096), b"hello, this is text\n" * 10, b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
def test_junk_bytes_rejected(data):
    with pytest.raises(SpecError) as ei:
        check_image("init_image", data)
    assert "not a readable image" in assert_spec_error(ei, "init_image")


@pytest.mark.parametrize("data", [b"", bytearray(), None, "a string"])
def test_empty_or_non_bytes_rejected(data):
    with pytest.raises(SpecError) as ei:
        check_image("init_image", data)
    assert_spec_error(ei, "init_image")


def test_over_10_mb_rejected_before_decoding(monkeypatch):
    opened = []
    real_open = spec_mod.Image.open
    monkeypatch.setattr(spec_mod.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    data = _encode("PNG") + b"\0" * (11 * 1024 * 1024)
    with pytest.raises(SpecError) as ei:
        check_image("init_image", data)
    msg = assert_spec_error(ei, "init_image")
    assert "10 MB" in msg
    assert opened == [], "the size check must come before PIL sees the bytes"
    # Exactly at the limit is not rejected for its size (it is a valid PNG with trailing bytes).
    at_limit = _encode("PNG")
    at_limit += b"\0" * (10 * 1024 * 1024 - len(at_limit))
    assert check_image("init_image", at_limit) == at_limit


def test_huge_dimensions_rejected_without_decoding(load_spy):
    buf = io.BytesIO()
    Image.new("1", (5000, 5000), 0).save(buf, format="PNG")
    data = buf.getvalue()
    assert len(data) < 1024 * 1024  # small on disk: only the header says it is big
    with pytest.raises(SpecError) as ei:
        check_image("init_image", data)
    msg = assert_spec_error(ei, "init_image")
    assert "4096" in msg and "5000x5000" in msg
    assert load_spy == [], "pixels were decoded before the size check"


@pytest.mark.parametrize("size", [(4097, 8), (8, 4097)])
def test_one_side_over_4096_rejected(size):
    buf = io.BytesIO()
    Image.new("P", size, 0).save(buf, format="PNG")
    with pytest.raises(SpecError) as ei:
        check_image("init_image", buf.getvalue())
    assert "4096" in assert_spec_error(ei, "init_image")


def test_4096_square_accepted():
    buf = io.BytesIO()
    Image.new("1", (4096, 4096), 0).save(buf, format="PNG")
    assert check_image("init_image", buf.getvalue()) == buf.getvalue()


def test_truncated_png_rejected():
    data = _noise_png()
    check_image("init_image", data)  # the whole file is fine
    with pytest.raises(SpecError) as ei:
        check_image("init_image", data[: len(data) // 2])
    assert "not a readable image" in assert_spec_error(ei, "init_image")


# --- JobSpec round trip ---------------------------------------------------------------------------

def test_to_dict_from_dict_round_trip_with_images():
    png, jpg = _encode("PNG"), _encode("JPEG")
    s = make_spec("a red fox|blurry:-0.5:0.2", "tiny-vqgan-untrained", width=64, height=96, iterations=7,
                  cutn=3, lr=0.2, save_every=2, seed=MAX_SEED, init_image=png, image_prompts=[jpg, png])
    d = s.to_dict()
    text = json.dumps(d)
    # The spec refers to its images by hash (each stored once, by the store); loading resolves them.
    stored = {u.sha256: u.data for u in s.uploads()}
    assert len(stored) == 2 and len(text) < 2000
    back = JobSpec.from_dict(json.loads(text), load=stored.get)
    assert back == s
    assert back.init_image == png and back.image_prompts == (jpg, png)
    assert d["init_image"] == {"upload": hashlib.sha256(png).hexdigest()}
    assert d["image_prompts"] == [{"upload": hashlib.sha256(jpg).hexdigest()}, d["init_image"]]
    assert back.parts == s.parts


def test_to_dict_from_dict_round_trip_without_images():
    s = make_spec("a cat", "p")
    d = s.to_dict()
    assert d["init_image"] is None and d["image_prompts"] == [] and d["seed"] is None
    assert JobSpec.from_dict(json.loads(json.dumps(d))) == s


# --- round_size -----------------------------------------------------------------------------------

@pytest.mark.parametrize("w, h, factor, expected", [
    (300, 300, 16, (288, 288)),
    (70, 64, 16, (64, 64)),
    (64, 64, 16, (64, 64)),
    (1024, 65, 16, (1024, 64)),
    (100, 100, 8, (96, 96)),
    (10, 10, 16, (16, 16)),
])
def test_round_size(w, h, factor, expected):
    assert round_size(w, h, factor) == expected


def test_zero_width_joiner_kept_so_emoji_sequences_survive():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    (part,) = parse_prompt(f"a {family} at the beach")
    assert part.text == f"a {family} at the beach"
