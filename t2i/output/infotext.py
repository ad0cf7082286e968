"""AUTOMATIC1111's "infotext": the text other tools read from a PNG's `parameters` chunk.

The form: the prompt on the first line(s); optionally a line `Negative prompt: ...`; then one line of
`Key: value` pairs separated by ", ", a value holding a comma, colon or newline written as a JSON
string. We write the fields such tools know (Steps, Sampler, CFG scale, Seed, Size, Model, Eta, Batch
size) first, then this project's own keys, under their own names, in a fixed order.

The text is for other tools and people: it loses our prompt syntax (parts with weights and stops) and
some fields' types, so our PNGs carry the complete JSON too (t2i/output/render.py). `parse_infotext` reads
any tool's infotext, ours or A1111's, into its keys as written plus, where they map, our field names,
so a form can be filled from it. Torch-free.
"""

from __future__ import annotations

import json
import math
import re

from ..errors import SpecError
from ..families import FAMILIES
from ..spec import NUMBER, parse_prompt

NEGATIVE = "Negative prompt:"
# Our diffusion samplers by the names A1111 gives them. The guided family optimises (Adam) and the GAN
# draws in one pass: neither has a sampler, so they write none rather than a name no tool could use.
SAMPLER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM", "dpm++": "DPM++ 2M", "plms": "PLMS"}
_SAMPLERS_BACK = {name.lower(): ours for ours, name in SAMPLER_NAMES.items()}
# This project's keys after A1111's, in this order; any others (a later field) follow, sorted.
OWN_KEYS = ("family", "models", "untrained", "iterations", "cutn", "lr", "noise_scale", "upsample_steps", "cache",
            "save_every", "upscale", "generated_size", "requested_size", "init_image", "image_prompts",
            "init_image_sha256", "image_prompts_sha256", "versions")
# Our keys that A1111's names carry (steps and iterations both become Steps; size becomes Size).
_MAPPED = ("prompt", "steps", "sampler", "guidance", "seed", "size", "preset", "eta", "num_samples")
# At most this many digits a side: a longer "Size" is no size (and int() refuses over 4300 digits).
_SIZE = re.compile(r"^(\d{1,6})x(\d{1,6})$")


# --- writing ------------------------------------------------------------------------------------

def quote(value) -> str:
    """A value as A1111 writes it: text as is unless it holds a comma, colon or newline (then a JSON
    string); numbers and booleans as JSON; lists and objects as their JSON, quoted."""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    if any(ch in value for ch in ',:\n') or value.startswith('"'):
        return json.dumps(value, ensure_ascii=False)
    return value


def _emphasis(text: str, weight: float) -> str:
    # A1111's attention syntax: brackets in the text are literal only escaped; a weight is (text:w).
    text = re.sub(r"([()\[\]\\])", r"\\\1", text)
    return text if weight == 1 else f"({text}:{weight:g})"


def split_prompt(prompt: str) -> tuple[str, str]:
    """Our prompt (`text[:weight[:stop]]` parts separated by `|`) as A1111's positive and negative
    prompts: parts with a negative weight go to the negative one, at the opposite weight. Stops have
    no A1111 form and are left out. A prompt that does not parse is written as it is."""
    try:
        parts = parse_prompt(prompt)
    except SpecError:
        return prompt, ""
    positive = [_emphasis(p.text, p.weight) for p in parts if p.weight >= 0]
    negative = [_emphasis(p.text, -p.weight) for p in parts if p.weight < 0]
    return ", ".join(positive), ", ".join(negative)


def _size(value) -> str | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return None


def _steps_field(family, params: dict | None = None) -> str:
    """The option a family's steps are (iterations for a guided job); for a family not registered here,
    steps, else iterations where only those were written."""
    if family in FAMILIES:
        return FAMILIES[family].steps_field
    return "iterations" if params is not None and "steps" not in params and "iterations" in params else "steps"


def to_infotext(params: dict) -> str:
    """The A1111 text of a PNG's parameters (render.parameters' dict); fields absent or None are left out."""
    positive, negative = split_prompt(str(params.get("prompt", "")))
    pairs = {}
    field = _steps_field(params.get("family"), params)
    steps = params.get(field)
    if steps is not None:
        pairs["Steps"] = steps
    if params.get("sampler") is not None:
        pairs["Sampler"] = SAMPLER_NAMES.get(params["sampler"], params["sampler"])
    for ours, theirs in (("guidance", "CFG scale"), ("seed", "Seed")):
        if params.get(ours) is not None:
            pairs[theirs] = params[ours]
    if _size(params.get("size")):
        pairs["Size"] = _size(params["size"])
    for ours, theirs in (("preset", "Model"), ("eta", "Eta"), ("num_samples", "Batch size")):
        if params.get(ours) is not None:
            pairs[theirs] = params[ours]
    rest = [k for k in OWN_KEYS if k in params] + sorted(k for k in params if k not in OWN_KEYS and k not in _MAPPED)
    for key in rest:
        value = params[key]
        if key == field:
            continue  # written as Steps
        if value is None or value == [] or (key in ("init_image", "image_prompts") and not value):
            continue
        pairs[key] = _size(value) if key.endswith("_size") and _size(value) else value
    line = ", ".join(f"{k}: {quote(v)}" for k, v in pairs.items())
    head = positive + (f"\n{NEGATIVE} {negative}" if negative else "")
    return f"{head}\n{line}" if line else head


# --- reading ------------------------------------------------------------------------------------

def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _number(value: str, kind):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        return None
    return number if kind is int or math.isfinite(number) else None


def _json(value: str):
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the interpreter's depth
        return value


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # the regex `\w` (CPython's sre tests the same Unicode classes)


def _quoted_end(line: str, at: int) -> int | None:
    """Where the JSON-style string opening at line[at] (a `"`) closes, as A1111's `"(?:\\.|[^\\"])+"`
    reads it: a backslash takes the next character whatever it is, and at least one is inside."""
    i, n = at + 1, len(line)
    while i < n:
        if line[i] == "\\":
            if i + 1 == n or line[i + 1] == "\n":
                return None
            i += 2
        elif line[i] == '"':
            return i if i > at + 1 else None
        else:
            i += 1
    return None


def _pairs(line: str) -> list[tuple[str, str]]:
    """The `Key: value` pairs of infotext's last line, exactly as A1111's pattern finds them
    (`re.findall(r'\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)', line)`,
    modules/infotext_utils.py), in one pass. The regex, tried at every position of a line without a
    colon, rescans the rest of the line's key characters from each: quadratic (a 64 KB line held the
    web server ~30 s). Here a key that is not followed by ':' fails for every start inside it at
    once, so the scan goes on after it; each character is looked at a bounded number of times."""
    pairs, pos, n = [], 0, len(line)
    while pos < n:
        start = pos
        while pos < n and line[pos].isspace():
            pos += 1
        if pos == n or not _word(line[pos]):
            pos += 1
            continue
        key_at = pos
        pos += 1
        while pos < n and (_word(line[pos]) or line[pos] in " -/"):
            pos += 1
        if pos - key_at < 2 or pos == n or line[pos] != ":":
            pos = max(pos, start + 1)  # every start up to the key's end fails the same way
            continue
        value_at = pos + 1
        while value_at < n and line[value_at].isspace():
            value_at += 1
        close = _quoted_end(line, value_at) if value_at < n and line[value_at] == '"' else None
        after = None if close is None else close + 1
        if after is not None and (after == n or line[after] == "," or (line[after] == "\n" and after + 1 == n)):
            pairs.append((line[key_at:pos], line[value_at:after]))
            pos = after + (after < n and line[after] == ",")
            continue
        comma = line.find(",", value_at)
        end = n if comma < 0 else comma
        pairs.append((line[key_at:pos], line[value_at:end]))
        pos = end + (comma >= 0)
    return pairs


def parse_infotext(text: str) -> dict:
    """A1111's infotext as a dict: its keys as written (string values, quotes removed; "Prompt" and
    "Negative prompt" too), plus our field names where they map: prompt, negative, steps (under its
    family's name for them: iterations for a guided preset), sampler (one of ours only), guidance,
    seed, width, height, preset, eta, num_samples, and this project's own keys with their JSON values."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    pairs = _pairs(last)
    # A1111's rule: a last line with fewer than three pairs is part of the prompt.
    if len(pairs) < 3:
        pairs = []
    else:
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative, line = True, line[len(NEGATIVE):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict = {"Prompt": "\n".join(prompt).strip(), "Negative prompt": "\n".join(negative).strip()}
    for key, value in pairs:
        out[key.strip()] = _unquote(value.strip())

    out["prompt"], out["negative"] = out["Prompt"], out["Negative prompt"]
    for theirs, ours, kind in (("Steps", "steps", int), ("CFG scale", "guidance", float), ("Seed", "seed", int),
                               ("Eta", "eta", float), ("Batch size", "num_samples", int)):
        if theirs in out and _number(out[theirs], kind) is not None:
            out[ours] = _number(out[theirs], kind)
    if out.get("Sampler", "").lower() in _SAMPLERS_BACK:
        out["sampler"] = _SAMPLERS_BACK[out["Sampler"].lower()]
    size = _SIZE.match(out.get("Size", ""))
    if size:
        out["width"], out["height"] = int(size[1]), int(size[2])
    if out.get("Model"):
        out["preset"] = out["Model"]
    for key in OWN_KEYS:
        if key in out:
            value = out[key]
            sized = _SIZE.match(value) if key.endswith("_size") else None
            out[key] = [int(sized[1]), int(sized[2])] if sized else _json(value)
    field = _steps_field(out.get("family"))
    if field != "steps" and "steps" in out:
        out[field] = out.pop("steps")
    return out


def our_prompt(prompt: str, negative: str = "") -> str:
    """A positive and a negative prompt (from another tool) as one prompt of ours: the negative as a
    part of weight -1. `|` separates our parts, so one inside either text becomes `/`; a text that
    ends in `:number` ("4:3") gets its weight and stop written, so the number stays text."""
    def part(text: str, weight: str) -> str:
        text = " ".join(text.replace("|", "/").split())
        if NUMBER.match(text.rsplit(":", 1)[-1]) and ":" in text:
            return f"{text}:{weight}:-inf"
        return text if weight == "1" else f"{text}:{weight}"
    parts = [part(prompt, "1")] if prompt.strip() else []
    if negative.strip():
        parts.append(part(negative, "-1"))
    return " | ".join(parts)
