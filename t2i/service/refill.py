"""The Generate form's values from a job's record: an opened PNG's (t2i.output.render.read_parameters:
ours, or another tool's infotext) or a finished job's ("Generate again with these settings").

Total: an opened PNG is a visitor's file, and its JSON may hold anything (`upscale: 5`, `size: 5`,
`"width": "x"`, text with lone surrogates, an object where text belongs). Each such field is left out
with a note naming it, the rest still fills the form, and nothing here raises on a dict of JSON values.
Torch- and Streamlit-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import upscale
from ..checks import shown
from ..families import options_class
from ..output.infotext import our_prompt
from ..presets import get_preset
from ..spec import MAX_PROMPT_CHARS, cut_prompt

# What each kind of field must be, for the notes.
_WANTS = {"text": "not text", "int": "not a whole number", "float": "not a number", "size": "not two whole numbers",
          "upscale": "not a list of upscaler names", "choice": "not one of its choices"}


@dataclass
class Filled:
    values: dict = field(default_factory=dict)   # the form's session-state keys and their values
    left_out: dict = field(default_factory=dict)  # field -> why it was left out
    other_preset: str | None = None              # the record's preset when this host does not offer it (shortened)
    prompt_length: int | None = None             # the record's prompt length when it was cut to the limit

    def note(self) -> str | None:
        """One line naming every field left out, or None."""
        if not self.left_out:
            return None
        fields = "; ".join(f"{name} ({why})" for name, why in self.left_out.items())
        return f"Left out of the PNG's parameters: {fields}."


def _text(value) -> str | None:
    """Text the page can show and send: a str with no lone surrogate (JSON's "\\ud800" makes one, and
    the page's protocol cannot encode it)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _number(value, kind: str) -> str | None:
    """A number as the form's text box holds it; bools (JSON's true) and NaN or infinities are none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind == "int" and not isinstance(value, int):
        return None
    return str(value) if isinstance(value, int) or math.isfinite(value) else None


def _size(value) -> tuple[str, str] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    sides = [_number(v, "int") for v in value]
    return (sides[0], sides[1]) if None not in sides else None


def _upscale(value) -> str | None:
    if not isinstance(value, list) or not all(_text(v) and "," not in v for v in value):
        return None
    return ",".join(value) or upscale.NONE


def _prompt(params: dict, filled: Filled) -> None:
    """The prompt, with another tool's negative prompt as a part of ours, cut to the prompt limit as a
    typed one is."""
    prompt, negative = _text(params.get("prompt")), params.get("negative")
    if prompt is None:
        filled.left_out["prompt"] = _WANTS["text"]
        return
    if "Negative prompt" in params:  # another tool's (A1111's)
        if negative is not None and _text(negative) is None:
            filled.left_out["negative"], negative = _WANTS["text"], ""
        prompt = our_prompt(prompt, negative or "")
    kept, length = cut_prompt(prompt)  # as the page's _fit_prompt does with a typed one: only when too long
    filled.values["prompt"] = kept if length > MAX_PROMPT_CHARS else prompt
    if length > MAX_PROMPT_CHARS:
        filled.prompt_length = length


def _preset(params: dict, offered: list[str], filled: Filled) -> None:
    if params.get("preset") is None:
        return
    name = _text(params["preset"])
    if name is None:
        filled.left_out["preset"] = _WANTS["text"]
    elif name in offered:
        filled.values["preset"] = name
    elif name:
        filled.other_preset = shown(name, quoted=False)  # not here: the form keeps the chosen preset


def _width_height(params: dict, filled: Filled) -> None:
    """The size asked for (`requested_size`), else the size made, else another tool's width and height."""
    for key in ("requested_size", "size"):
        if params.get(key) is None:
            continue
        sides = _size(params[key])
        if sides is None:
            filled.left_out[key] = _WANTS["size"]
        elif "width" not in filled.values:
            filled.values["width"], filled.values["height"] = sides
    for key in ("width", "height"):
        if key not in filled.values and params.get(key) is not None:
            value = _number(params[key], "int")
            if value is None:
                filled.left_out[key] = _WANTS["int"]
            else:
                filled.values[key] = value


def _options(params: dict, family: str, filled: Filled) -> None:
    """The family's form fields of the record's family (another tool names none: its steps, guidance,
    sampler... fill the fields of those names)."""
    named = params.get("family")
    named = family if named is None else named
    if _text(named) is None:
        filled.left_out["family"] = _WANTS["text"]
        return
    if named != family:
        return
    for f in options_class(family).FORM:
        if params.get(f.name) is None:
            continue
        value = params[f.name]
        if f.kind == "choice":
            value = value if _text(value) in f.choices else None
        else:
            value = _number(value, f.kind)
        if value is None:
            filled.left_out[f.name] = _WANTS[f.kind]
        else:
            filled.values[f.name] = value


def form_values(params: dict, offered: list[str], current: str | None) -> Filled:
    """The form's values from a record (`offered`: the presets this host runs, best first; `current`:
    the one chosen now). A field of the wrong type is left out and named in `left_out`."""
    filled = Filled()
    if not isinstance(params, dict):
        return filled
    _prompt(params, filled)
    _preset(params, offered, filled)
    chosen = filled.values.get("preset") or (current if current in offered else offered[0])
    _width_height(params, filled)
    seed = params.get("seed")
    if seed is not None:
        if _number(seed, "int") is None:
            filled.left_out["seed"] = _WANTS["int"]
        else:
            filled.values["seed"] = str(seed)
    _options(params, get_preset(chosen).family, filled)
    if params.get("upscale") is not None:  # results from before post-steps say nothing: the preset's default stays
        chain = _upscale(params["upscale"])
        if chain is None:
            filled.left_out["upscale"] = _WANTS["upscale"]
        else:
            filled.values["upscale"] = chain
    return filled
