"""Fetching one large file (e.g. model weights) over HTTP(S) from a list of mirrors.

This module owns the transfer mechanics only: mirror fallback, resuming from a
``<dest>.part`` file, length verification, atomic placement and the progress
bar. It does not know which files exist or where they are hosted; callers pass
the mirror URLs and the destination path.
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import T2IError

USER_AGENT = "t2i-downloader/0.1"  # some mirrors reject urllib's default agent
TRIES_PER_MIRROR = 3
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(T2IError):
    """One-line, user-actionable message (str(e) is shown to users as-is)."""


class _Dropped(Exception):
    """The transfer ended early; the same mirror is worth another try from the .part."""


def fetch(urls: list[str], dest: Path, *, progress: bool = True, timeout: float = 30.0,
          chunk_size: int = 1 << 20) -> Path:
    """Download dest from the first mirror that works; returns dest."""
    dest = Path(dest)
    if dest.exists():
        return dest
    if not urls:
        raise DownloadError(f"could not download {dest.name}: no mirror URLs given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = "unknown error"
    for url in urls:
        for _ in range(TRIES_PER_MIRROR):
            try:
                _transfer(url, part, dest.name, progress, timeout, chunk_size)
            except _Dropped as e:
                last = f"{e} from {url}"
                continue
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} from {url}"
            except urllib.error.URLError as e:
                last = f"{_describe(e.reason)} from {url}"
            except (OSError, http.client.HTTPException) as e:
                # Timeouts and resets here mean a sick mirror; a different one is a better bet.
                last = f"{_describe(e)} from {url}"
            else:
                os.replace(part, dest)  # only a verified-complete file ever gets the real name
                return dest
            break
    n = len(urls)
    kept = "; partial data kept, re-run to resume" if part.exists() else ""
    raise DownloadError(f"could not download {dest.name} from {n} mirror{'s' * (n != 1)} "
                        f"(last: {last}){kept}")


def _transfer(url: str, part: Path, name: str, progress: bool, timeout: float,
              chunk_size: int) -> None:
    """One attempt against one mirror; returns normally only when part is complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            start, total = _parse_range(e.headers.get("Content-Range"))
            if total == have:
                return  # nothing past what we hold: the .part is already the whole file
            if total is not None and have > total:
                part.unlink()  # longer than the real file, so it cannot be a prefix of it
                raise _Dropped(f"stale partial file ({have} > {total} bytes)") from None
        raise
    with resp:
        if resp.status == 206:
            start, total = _parse_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink()  # appending at the wrong offset would corrupt; start clean
                raise _Dropped(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            # A 200 means the server ignored Range and sends the whole file again.
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and have >= total:
            return
        got = have
        with open(part, mode) as f, tqdm(total=total, initial=have, desc=name, unit="B",
                                         unit_scale=True, unit_divisor=1024, file=sys.stderr,
                                         disable=not progress, leave=False) as bar:
            try:
                while chunk := resp.read(chunk_size):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, ConnectionError):
                pass  # whatever arrived is kept; the length check below decides
    # http.client returns a silent short read when the peer closes early.
    if total is not None and got < total:
        raise _Dropped(f"connection dropped after {got} of {total} bytes")


def _parse_range(header: str | None) -> tuple[int | None, int | None]:
    m = _CONTENT_RANGE.match(header or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total.isdigit() else None)


def _describe(err: object) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())  # the message must stay on one line
