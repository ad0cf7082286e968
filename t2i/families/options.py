"""What every family's torch-free Options provides, and the number checks they share.

A family's Options (t2i/families/<family>/options.py) owns its job fields: names, defaults, limits,
validation, the batch key (which jobs can share a batch), the total step count and the form fields
the pages show. Pages and the queue import only these modules, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import SpecError


@dataclass(frozen=True)
class FormField:
    """One advanced option on the Generate page (and a --flag on the CLI)."""

    name: str
    label: str
    kind: str                  # "int" | "float" | "choice"
    step: float | None = None  # number inputs
    choices: tuple = ()        # "choice" fields
    help: str = ""


class Options(Protocol):
    FAMILY: str
    FORM: tuple[FormField, ...]
    LIGHTER: str               # what to lower after running out of memory, in words

    @classmethod
    def parse(cls, raw: dict, limits, defaults: dict) -> "Options":
        """Validate raw values (strings or numbers; None or "" = the default) into Options; raise
        SpecError naming the field."""

    def batch_key(self, spec) -> str:
        """Jobs with equal keys can share a batch (same shapes through the model)."""

    def total_steps(self, spec) -> int:
        """The number of steps the job's progress counts to."""

    def describe(self, spec) -> str:
        """The job's load in words, for one-line errors ("64x64, 8 cutouts")."""


SHOWN_CHARS = 40  # longest echo of a rejected value: a pasted page of digits must not become the message


def shown(value, quoted: bool = True) -> str:
    """A rejected value for a one-line message: numbers bare, text quoted (unless `quoted` is False:
    a number as the visitor wrote it), long ones cut (with their length)."""
    text = repr(value) if isinstance(value, str) and quoted else str(value)
    if len(text) <= SHOWN_CHARS:
        return text
    keep = SHOWN_CHARS - 10
    if isinstance(value, str):
        cut = f"{repr(value[:keep])[:-1]}...'" if quoted else f"{value[:keep]}..."
        return f"{cut} ({len(value)} characters)"
    return f"{text[:keep]}... ({len(text)} {'digits' if isinstance(value, int) else 'characters'})"


def whole(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise SpecError(name, f"must be a whole number, got {shown(value)}")
    if isinstance(value, str):
        text = value.strip()
        # A digit string far longer than the bounds is out of range whatever its value; saying so
        # spares int() (which refuses over 4300 digits anyway) and names the real problem.
        if text.lstrip("+-").isdigit() and len(text.lstrip("+-0")) > len(str(max(abs(lo), abs(hi)))) + 1:
            raise SpecError(name, f"must be between {lo} and {hi}, got {shown(text, quoted=False)}")
        try:
            number = int(text)
        except ValueError:
            raise SpecError(name, f"must be a whole number, got {shown(value)}") from None
    else:
        number = value
    if not isinstance(number, int):
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        else:
            raise SpecError(name, f"must be a whole number, got {shown(value)}")
    if not lo <= number <= hi:
        raise SpecError(name, f"must be between {lo} and {hi}, got {shown(number)}")
    return number


def real(name: str, value, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(name, f"must be a number, got {shown(value)}") from None
    if not lo <= number <= hi:  # also rejects NaN
        raise SpecError(name, f"must be between {lo:g} and {hi:g}, got {shown(value)}")
    return number


def choice(name: str, value, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise SpecError(name, f"must be one of {', '.join(choices)}, got {shown(value)}")
    return text


def given(raw: dict, defaults: dict, name: str):
    """The raw value, or the default when it is missing, None or empty."""
    value = raw.get(name)
    return defaults[name] if value is None or value == "" else value
