"""Small filesystems for fault tests: a tmpfs to fill to the last byte, or to remount read-only.
Mounting needs privileges a machine may not grant; then the test is skipped, in one line."""

from __future__ import annotations

import os
import subprocess

import pytest


def mount_or_skip(*args: str) -> None:
    """mount(8) as given, or skip: mounting needs privileges this machine may not grant."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount(8) here: cannot make a small filesystem to fill or a read-only one")
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root or CAP_SYS_ADMIN")


def umount(path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder) -> str:
    """Fill the filesystem with one file; returns its path (remove it to free the space)."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return path
