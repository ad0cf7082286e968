"""The number checks every input goes through: one line naming the field, the rejected value shown short.

A leaf (it imports only the errors): t2i/spec.py checks the common fields with it, each family's
Options (t2i/families/<family>/options.py) its own, and the upscalers their names.
"""

from __future__ import annotations

from .errors import SpecError

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
