"""Fetching one large file (e.g. model weights) over HTTP(S) from a list of mirrors, or from a
Hugging Face hub repository through huggingface_hub.

This module owns the transfer mechanics only: mirror fallback, resuming from a
``<dest>.part`` file, length verification (against the length the caller expects,
when it knows one, and the length the server announces), atomic placement and the
progress bar. It does not know which files exist or where they are hosted; callers
pass the mirror URLs (or hub repository and endpoints) and the destination path.
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

from ..errors import T2IError

USER_AGENT = "t2i-downloader/0.1"  # some mirrors reject urllib's default agent
TRIES_PER_MIRROR = 3
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(T2IError):
    """One-line, user-actionable message (str(e) is shown to users as-is)."""


class _Dropped(Exception):
    """The transfer ended early; the same mirror is worth another try from the .part."""


class _WrongFile(Exception):
    """The mirror serves a file of another length than expected: another try there cannot help."""


def fetch(urls: list[str], dest: Path, *, size: int | None = None, progress: bool = True,
          timeout: float = 30.0, chunk_size: int = 1 << 20) -> Path:
    """Download dest from the first mirror that works; returns dest. With `size`, a file of any other
    length is refused (the mirror after it is tried) and never gets the real name."""
    dest = Path(dest)
    if dest.exists():
        _check_existing(dest, size)
        return dest
    if not urls:
        raise DownloadError(f"could not download {dest.name}: no mirror URLs given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = "unknown error"
    for url in urls:
        for _ in range(TRIES_PER_MIRROR):
            try:
                _transfer(url, part, dest.name, progress, timeout, chunk_size, size)
            except _Dropped as e:
                last = f"{e} from {url}"
                continue
            except _WrongFile as e:
                last = f"{e} from {url}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} from {url}"
            except urllib.error.URLError as e:
                last = f"{_describe(e.reason)} from {url}"
            except (OSError, http.client.HTTPException) as e:
                # Timeouts and resets here mean a sick mirror; a different one is a better bet.
                last = f"{_describe(e)} from {url}"
            else:
                if size is None or part.stat().st_size == size:
                    os.replace(part, dest)  # only a verified-complete file ever gets the real name
                    return dest
                last = f"{part.stat().st_size} bytes received, {size} expected from {url}"
                part.unlink()  # the whole of a file of the wrong length: no use as a prefix
            break
    n = len(urls)
    kept = "; partial data kept, re-run to resume" if part.exists() else ""
    raise DownloadError(f"could not download {dest.name} from {n} mirror{'s' * (n != 1)} "
                        f"(last: {last}){kept}")


def _check_existing(dest: Path, size: int | None) -> None:
    """A file already at the real name: kept when its length is right (or unknown), else refused,
    not deleted: it was put there by hand or by an older registry, and may be someone's only copy."""
    have = dest.stat().st_size
    if size is not None and have != size:
        raise DownloadError(f"{dest} has {have} bytes, not the {size} expected: move it away and run again")


def _transfer(url: str, part: Path, name: str, progress: bool, timeout: float,
              chunk_size: int, size: int | None = None) -> None:
    """One attempt against one mirror; returns normally only when part is complete."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()  # longer than the file we want, so it cannot be a prefix of it
        have = 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            start, total = _parse_range(e.headers.get("Content-Range"))
            if size is not None and total is not None and total != size:
                raise _WrongFile(f"{total} bytes offered, {size} expected") from None
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
        if size is not None and total is not None and total != size:
            # Another file (an error page, another release): refused before a byte is written.
            raise _WrongFile(f"{total} bytes offered, {size} expected")
        total = size if total is None else total  # no announced length: the expected one decides
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


def fetch_hub(repo: str, files: dict[str, int | None], local_dir: Path, *, endpoints: list[str],
              revision: str = "main", progress: bool = True) -> list[Path]:
    """Files of a hub repository (path in the repo -> expected length or None) into local_dir through
    huggingface_hub, each from the first endpoint that works; returns their paths. huggingface_hub
    downloads into a temporary .incomplete file and renames it only when complete, checks the length
    the hub announces, resumes within a run after a dropped connection (not across runs: a file cut
    short starts again) and reuses an HF_HOME/HF_HUB_CACHE copy; with a length, a file of another
    length is refused here as well."""
    endpoints = list(endpoints)
    if not endpoints:
        raise DownloadError(f"could not download {repo}: no hub endpoints given")
    paths = []
    for filename, size in files.items():
        dest, served = _fetch_hub_file(repo, filename, Path(local_dir), endpoints, revision, size, progress)
        if served is not None:
            # huggingface_hub retries a dead endpoint for about 20 s per file: the one that worked goes first.
            endpoints.remove(served)
            endpoints.insert(0, served)
        paths.append(dest)
    return paths


def _fetch_hub_file(repo: str, filename: str, local_dir: Path, endpoints: list[str], revision: str,
                    size: int | None, progress: bool) -> tuple[Path, str | None]:
    from huggingface_hub import hf_hub_download

    dest = local_dir / filename
    if dest.exists():
        _check_existing(dest, size)  # present: no request at all, as for fetch()
        return dest, None
    last = "unknown error"
    for endpoint in endpoints:
        try:
            hf_hub_download(repo, filename, revision=revision, local_dir=local_dir, endpoint=endpoint.rstrip("/"),
                            tqdm_class=None if progress else _Silent)
        except Exception as e:  # noqa: BLE001 - any failure of one endpoint (HTTP, network, consistency) means: next
            while e.__cause__ is not None:  # "cannot find the file in the local cache" hides the network's reason
                e = e.__cause__
            last = f"{type(e).__name__}: {_first_line(e)} from {endpoint}"
            continue
        have = dest.stat().st_size if dest.is_file() else None
        if have is not None and size in (None, have):
            return dest, endpoint
        last = f"{have} bytes received, {size} expected from {endpoint}"
        dest.unlink(missing_ok=True)  # the wrong file must not stand at the real name
    n = len(endpoints)
    raise DownloadError(f"could not download {filename} of {repo} from {n} endpoint{'s' * (n != 1)} (last: {last})")


class _Silent(tqdm):
    """huggingface_hub's progress bar, switched off (`progress=False`)."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _first_line(err: BaseException) -> str:
    return _describe((str(err).strip().splitlines() or [type(err).__name__])[0])[:300]


def _parse_range(header: str | None) -> tuple[int | None, int | None]:
    m = _CONTENT_RANGE.match(header or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total.isdigit() else None)


def _describe(err: object) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())  # the message must stay on one line
