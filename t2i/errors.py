"""Errors whose message is shown to a user as one line (CLI, queue, pages)."""

import re

# torch.load(weights_only=True)'s refusal: paragraphs of advice (among them: load with
# weights_only off, which lets the file run code) around the reason, which follows this.
_SAFE_LOADER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s+Please|\n\s*\n|$)", re.S)


def load_failure(err: BaseException, limit: int = 200) -> str:
    """Why a weights file did not load, in one line for a user. For torch's safe loader only its
    reason: its advice to turn weights_only off is not ours to give (weights load with
    weights_only=True, always: a file from a mirror must not run code when opened)."""
    found = _SAFE_LOADER_REASON.search(str(err))
    text = f"the safe loader refuses it: {found.group(1)}" if found else str(err).strip()
    text = (text.splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


class T2IError(Exception):
    """Base: str(e) is a one-line message a user can act on."""


class WeightsMissing(T2IError):
    """A weights file is absent; the message names the file and the download command."""


class BrokenWeights(WeightsMissing):
    """A weights file or folder exists but does not load (missing keys, truncated, wrong shapes)."""


class PresetError(T2IError):
    """Unknown or malformed preset."""


class Cancelled(T2IError):
    """The run was stopped between steps at the caller's request."""


class OutOfMemory(T2IError):
    """The device ran out of memory; the message says which settings to lower."""


class SpecError(ValueError):
    """Bad user input. str(e) is a one-line message naming the field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
