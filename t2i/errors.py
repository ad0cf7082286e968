"""Errors whose message is shown to a user as one line (CLI, queue, pages)."""


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
