"""Waiting for a state a test cannot be told about (another process's progress, a server's start):
ask again every `interval` seconds until it holds or the deadline passes. Polling with a deadline,
not a sleep standing in for synchronisation."""

from __future__ import annotations

import time


def wait_for(condition, what: str = "a condition", timeout: float = 60.0, interval: float = 0.05):
    """condition()'s first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"waited {timeout} s for {what}")
