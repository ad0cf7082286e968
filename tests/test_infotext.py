"""PNG info the ecosystem reads: A1111's infotext written and parsed, our JSON beside it, old files read."""

import io
import json
import random
import re

import pytest
from PIL import Image, PngImagePlugin

from t2i.output import render
from t2i.engine import Generation
from t2i.output.infotext import _pairs, our_prompt, parse_infotext, split_prompt, to_infotext
from t2i.presets import get_preset
from t2i.spec import make_spec, parse_prompt

# One tiny preset of each family, with a prompt in our syntax (weights, a negative part, a stop).
FAMILIES = {
    "guided": ("tiny-vqgan-untrained", dict(iterations=7, cutn=4, lr=0.05)),
    "diffusion": ("tiny-ldm-text2im-untrained", dict(sampler="plms", steps=6, guidance=5.5, eta=0.0, num_samples=2)),
    "gan": ("tiny-gan-untrained", dict(steps=3, num_samples=1, noise_scale=0.7)),
}
PROMPT = "a lighthouse: at dusk | oil painting:0.5 | blurry:-0.5:-1"


def png(image: Image.Image, **chunks) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def family_params(family: str) -> tuple[dict, object]:
    """The PNG's parameters as the executor and the CLI build them (render.parameters)."""
    name, options = FAMILIES[family]
    preset = get_preset(name)
    assert preset.family == family
    spec = make_spec(PROMPT, name, family=family, defaults=preset.defaults, post=preset.post, seed=1234,
                     width=64, height=64, **options)
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    result = Generation(image=image, frames=[image], frame_steps=[1], seed=1234, width=64, height=64)
    return render.parameters(spec, result, preset), image


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_round_trips_through_the_png(family):
    params, image = family_params(family)
    data = render.png_bytes(image, params)
    assert render.read_parameters(data) == params
    # The A1111 text carries the fields other tools know, and ours after them.
    with Image.open(io.BytesIO(data)) as im:
        text = im.text[render.PARAMETERS_KEY]
    lines = text.split("\n")
    assert lines[0] == "a lighthouse: at dusk, (oil painting:0.5)"
    assert lines[1] == "Negative prompt: (blurry:0.5)"
    assert lines[2].startswith("Steps: ")
    read = parse_infotext(text)
    assert read["prompt"] == lines[0] and read["negative"] == "(blurry:0.5)"
    assert (read["seed"], read["width"], read["height"], read["preset"]) == (1234, 64, 64, params["preset"])
    assert read["family"] == family
    steps = params["iterations"] if family == "guided" else params["steps"]
    assert read["iterations" if family == "guided" else "steps"] == steps
    for key in ("cutn", "lr", "noise_scale", "num_samples", "guidance", "eta", "sampler", "generated_size",
                "versions", "untrained"):
        if key in params:
            assert read[key] == params[key], key


def test_diffusion_fields_by_a1111s_names():
    params, _ = family_params("diffusion")
    line = to_infotext(params).split("\n")[-1]
    assert line.startswith("Steps: 6, Sampler: PLMS, CFG scale: 5.5, Seed: 1234, Size: 64x64, "
                           "Model: tiny-ldm-text2im-untrained, Eta: 0.0, Batch size: 2, family: diffusion, ")
    guided = to_infotext(family_params("guided")[0]).split("\n")[-1]
    assert guided.startswith("Steps: 7, Seed: 1234, Size: 64x64, Model: tiny-vqgan-untrained, family: guided, ")
    assert "Sampler" not in guided  # the guided family optimises: no sampler to name


def test_text_is_stable_and_quotes_what_needs_it():
    params = {"prompt": "x", "seed": 1, "preset": "p", "size": [8, 8], "steps": 2, "zeta": "a, b", "alpha": "c"}
    text = to_infotext(params)
    assert text == to_infotext(dict(reversed(params.items())))
    assert text.endswith('Model: p, alpha: c, zeta: "a, b"')


A1111 = (
    "masterpiece, best quality, (a red fox:1.2) in the snow, [forest], \\(detailed\\)\n"
    "a second line of the prompt\n"
    "Negative prompt: lowres, bad anatomy, (blurry:1.4)\n"
    "watermark\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3141592653, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.35, "
    'Lora hashes: "fox: 1a2b3c, snow: 4d5e6f", Hires upscale: 2, Hires upscaler: Latent, '
    'TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)


def test_a1111_infotext_parses_to_its_keys_and_ours():
    read = parse_infotext(A1111)
    assert read["Prompt"] == read["prompt"] == ("masterpiece, best quality, (a red fox:1.2) in the snow, [forest], "
                                                "\\(detailed\\)\na second line of the prompt")
    assert read["negative"] == "lowres, bad anatomy, (blurry:1.4)\nwatermark"
    assert read["Steps"] == "28" and read["steps"] == 28
    assert read["Sampler"] == "DPM++ 2M" and read["sampler"] == "dpm++"
    assert read["Schedule type"] == "Karras"
    assert read["guidance"] == 7.5
    assert read["seed"] == 3141592653
    assert (read["width"], read["height"]) == (512, 768)
    assert read["Model hash"] == "6ce0161689"
    assert read["preset"] == read["Model"] == "v1-5-pruned-emaonly"
    assert read["Lora hashes"] == "fox: 1a2b3c, snow: 4d5e6f"
    assert read["TI hashes"] == "easynegative: c74b4e810b03"
    assert read["Hires upscale"] == "2" and read["Version"] == "v1.10.1"


def test_a1111_sampler_of_no_family_of_ours_is_not_mapped():
    read = parse_infotext("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
    assert read["Sampler"] == "Euler a" and "sampler" not in read
    assert read["negative"] == "" and read["prompt"] == "a cat"


def test_short_last_line_is_prompt():
    # A1111's rule: fewer than three pairs on the last line and it is part of the prompt.
    read = parse_infotext("a portrait\nlighting: soft")
    assert read["prompt"] == "a portrait\nlighting: soft"
    assert "steps" not in read


def test_a1111_png_reads_through_read_parameters():
    read = render.read_parameters(png(Image.new("RGB", (8, 8)), parameters=A1111))
    assert read["seed"] == 3141592653 and read["sampler"] == "dpm++"


def test_old_json_only_png_still_reads():
    old = {"prompt": "a cat", "seed": 5, "preset": "tiny-vqgan-untrained", "size": [64, 64], "iterations": 20}
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", json.dumps(old, sort_keys=True))  # as png_bytes wrote it before issue 19
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    assert render.read_parameters(buf.getvalue()) == old


def test_absent_or_bad_chunks():
    image = Image.new("RGB", (8, 8))
    assert render.read_parameters(png(image)) is None
    assert render.read_parameters(png(image, parameters="   ")) is None
    assert render.read_parameters(b"") is None
    # A broken JSON chunk falls back to the text; a text of no pairs is a prompt only.
    read = render.read_parameters(png(image, t2i="{broken", parameters="just words"))
    assert read["prompt"] == "just words" and "seed" not in read


def test_prompt_split_and_joined_again():
    assert split_prompt("a (b):2 | c:-1 | d:0") == ("(a \\(b\\):2), (d:0)", "c")
    assert split_prompt("bad:99") == ("bad:99", "")  # not our syntax: written as it is
    joined = our_prompt("photo, 4:3 | crop", "blurry:1.4")
    assert [(p.text, p.weight) for p in parse_prompt(joined)] == [("photo, 4:3 / crop", 1.0), ("blurry:1.4", -1.0)]
    assert our_prompt("a cat") == "a cat" and our_prompt("", "x") == "x:-1"


# A1111's own pattern (modules/infotext_utils.py, re_param_code): the reference the linear scanner
# must agree with. Only ever run here on short lines, where its quadratic worst case costs nothing.
A1111_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def test_the_pairs_of_the_last_line_are_exactly_a1111s():
    """The one-pass scanner (issue 28: the regex was quadratic on a colon-less line) finds what
    A1111's regex finds, on every kind of character its pattern treats apart, Unicode word
    characters and spaces included."""
    rng = random.Random(28)
    alphabet = ["a", "Z", "_", "7", " ", " ", ":", ":", ",", ",", '"', '"', "\\", "-", "/", "\t", "\n", "é", "٣",
                "\u3000", "x"]
    lines = [A1111.split("\n")[-1], 'Steps: "a, b", Seed: 1, x: ""', 'k: "\\"", j: "a\\', "a b: c"]
    lines += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(5000)]
    for line in lines:
        assert _pairs(line) == A1111_PAIR.findall(line), line
