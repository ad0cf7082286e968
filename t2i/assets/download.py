"""Fetching one large file (e.g. model weights) over HTTP(S) from a list of mirrors, or from a
Hugging Face hub repository through huggingface_hub.

This module owns the transfer mechanics only: mirror fallback, resuming from a
``<dest>.part`` file, length verification (against the length the caller expects,
when it knows one, and the length the server announces), a byte cap where no length is
listed, the proof of what arrived (t2i/assets/proof.py: format, sha256), atomic placement
and the progress bar. A file takes its real name only once proved; one that fails its proof
is deleted, so running the download again starts clean. It does not know which files exist or
where they are hosted; callers pass the mirror URLs (or hub repository and endpoints) and the
destination path.
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import T2IError
from .proof import NotTheFile, prove, unlisted_cap

USER_AGENT = "t2i-downloader/0.1"  # some mirrors reject urllib's default agent
TRIES_PER_MIRROR = 3
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
HUB_STAGING = ".incoming"  # under a hub entry's folder: where huggingface_hub writes before the proof


class DownloadError(T2IError):
    """One-line, user-actionable message (str(e) is shown to users as-is)."""


class _Dropped(Exception):
    """The transfer ended early; the same mirror is worth another try from the .part."""


class _WrongFile(Exception):
    """The mirror serves another file (another length, too long, failing its proof): another try
    there cannot help."""


def fetch(urls: list[str], dest: Path, *, size: int | None = None, sha256: str | None = None,
          cap: int | None = None, progress: bool = True, timeout: float = 30.0, chunk_size: int = 1 << 20) -> Path:
    """Download dest from the first mirror that works; returns dest. The file gets the real name only
    once proved: of length `size` when given (else of at most `cap` bytes, by default
    proof.unlisted_cap(its name)), of the format its name says and of `sha256` when given. A mirror
    serving anything else is refused (the next one is tried) and what it sent is deleted."""
    dest = Path(dest)
    if dest.exists():
        _check_existing(dest, size)
        return dest
    if not urls:
        raise DownloadError(f"could not download {dest.name}: no mirror URLs given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    limit = size if size is not None else cap if cap is not None else unlisted_cap(dest.name)
    last = "unknown error"
    for url in urls:
        for _ in range(TRIES_PER_MIRROR):
            try:
                _transfer(url, part, dest.name, progress, timeout, chunk_size, size, limit)
                _place(part, dest, size, sha256)
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
                return dest
            break
    n = len(urls)
    kept = "; partial data kept, re-run to resume" if part.exists() else ""
    raise DownloadError(f"could not download {dest.name} from {n} mirror{'s' * (n != 1)} "
                        f"(last: {last}){kept}")


def _place(part: Path, dest: Path, size: int | None, sha256: str | None) -> None:
    """Give the complete .part the real name once proved; else delete it (a whole file that is not
    the one asked for is no use as a prefix either) and raise _WrongFile saying what it was."""
    have = part.stat().st_size
    try:
        if size is not None and have != size:
            raise NotTheFile(f"{have} bytes received, {size} expected")
        prove(part, dest.name, sha256)
    except NotTheFile as e:
        part.unlink()
        raise _WrongFile(str(e)) from None
    os.replace(part, dest)


def _check_existing(dest: Path, size: int | None) -> None:
    """A file already at the real name: kept when its length is right (or unknown), else refused,
    not deleted: it was put there by hand or by an older registry, and may be someone's only copy."""
    have = dest.stat().st_size
    if size is not None and have != size:
        raise DownloadError(f"{dest} has {have} bytes, not the {size} expected: move it away and run again")


def _transfer(url: str, part: Path, name: str, progress: bool, timeout: float,
              chunk_size: int, size: int | None, limit: int) -> None:
    """One attempt against one mirror; returns normally only when part is complete (as far as
    lengths tell: `_place` proves it). `limit`: the most bytes part may reach (size, or the cap)."""
    have = part.stat().st_size if part.exists() else 0
    if have > limit:
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
        if total is not None and total > limit:
            raise _WrongFile(f"{total} bytes offered, more than the {limit} a file of unlisted length may have")
        total = size if total is None else total  # no announced length: the expected one decides
        if total is not None and have >= total:
            return
        got = _receive(resp, part, mode, have, total, limit, name, progress, chunk_size)
    if got > limit:
        part.unlink()  # an endless body or another file: none of it is worth keeping
        raise _WrongFile(f"more than {size} bytes sent, {size} expected" if size is not None
                         else f"more than {limit} bytes sent for a file of unlisted length (the cap)")
    # http.client returns a silent short read when the peer closes early.
    if total is not None and got < total:
        raise _Dropped(f"connection dropped after {got} of {total} bytes")


def _receive(resp, part: Path, mode: str, have: int, total: int | None, limit: int, name: str,
             progress: bool, chunk_size: int) -> int:
    """Append the body to part; returns the length reached, stopping one chunk past `limit`."""
    got = have
    with open(part, mode) as f, tqdm(total=total, initial=have, desc=name, unit="B", unit_scale=True,
                                     unit_divisor=1024, file=sys.stderr, disable=not progress, leave=False) as bar:
        try:
            while got <= limit and (chunk := resp.read(min(chunk_size, limit + 1 - got))):
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        except (http.client.IncompleteRead, ConnectionError):
            pass  # whatever arrived is kept; the length check decides
    return got


def fetch_hub(repo: str, files: dict[str, int | None], local_dir: Path, *, endpoints: list[str],
              revision: str = "main", cap: int | None = None, progress: bool = True) -> list[Path]:
    """Files of a hub repository (path in the repo -> expected length or None) into local_dir through
    huggingface_hub, each from the first endpoint that works; returns their paths. huggingface_hub
    downloads into a temporary .incomplete file and renames it only when complete, checks the length
    the hub announces, resumes within a run after a dropped connection (not across runs: a file cut
    short starts again) and reuses an HF_HOME/HF_HUB_CACHE copy. It writes into local_dir/.incoming;
    a file moves to its real name only once proved as fetch() proves one (another length than listed,
    over `cap` (default: proof.unlisted_cap of its name) for an unlisted length, not of its format:
    refused and deleted)."""
    endpoints = list(endpoints)
    if not endpoints:
        raise DownloadError(f"could not download {repo}: no hub endpoints given")
    paths = []
    for filename, size in files.items():
        limit = size if size is not None else cap if cap is not None else unlisted_cap(filename)
        dest, served = _fetch_hub_file(repo, filename, Path(local_dir), endpoints, revision, size, limit, progress)
        if served is not None:
            # huggingface_hub retries a dead endpoint for about 20 s per file: the one that worked goes first.
            endpoints.remove(served)
            endpoints.insert(0, served)
        paths.append(dest)
    return paths


def _fetch_hub_file(repo: str, filename: str, local_dir: Path, endpoints: list[str], revision: str,
                    size: int | None, limit: int, progress: bool) -> tuple[Path, str | None]:
    from huggingface_hub import hf_hub_download

    dest = local_dir / filename
    if dest.exists():
        _check_existing(dest, size)  # present: no request at all, as for fetch()
        return dest, None
    stage = local_dir / HUB_STAGING
    bar = _capped_bar(limit, size is not None, progress)
    last = "unknown error"
    for endpoint in endpoints:
        shutil.rmtree(stage, ignore_errors=True)  # nothing refused before, not even its metadata, is reused
        try:
            got = Path(hf_hub_download(repo, filename, revision=revision, local_dir=stage,
                                       endpoint=endpoint.rstrip("/"), tqdm_class=bar))
            have = got.stat().st_size
            if size is not None and have != size:
                raise NotTheFile(f"{have} bytes received, {size} expected")
            prove(got, filename)
        except NotTheFile as e:
            last = f"{e} from {endpoint}"
            continue
        except Exception as e:  # noqa: BLE001 - any failure of one endpoint (HTTP, network, consistency) means: next
            while e.__cause__ is not None and not isinstance(e, _TooLong):
                e = e.__cause__  # "cannot find the file in the local cache" hides the network's reason
            reason = str(e) if isinstance(e, _TooLong) else f"{type(e).__name__}: {_first_line(e)}"
            last = f"{reason} from {endpoint}"
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, dest)
        shutil.rmtree(stage, ignore_errors=True)
        return dest, endpoint
    shutil.rmtree(stage, ignore_errors=True)  # what failed its proof, and huggingface_hub's .incomplete
    n = len(endpoints)
    raise DownloadError(f"could not download {filename} of {repo} from {n} endpoint{'s' * (n != 1)} (last: {last})")


class _TooLong(Exception):
    """A hub file past its listed length or the cap for an unlisted one (raised inside huggingface_hub)."""


class _CappedBar(tqdm):
    """huggingface_hub's progress bar (switched off with progress=False) that stops the transfer at
    `limit` bytes: huggingface_hub has no cap of its own, and a body without a length never ends."""
    limit = 0
    listed = False
    quiet = False

    def __init__(self, *args, **kwargs):
        if self.quiet:
            kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self.received = kwargs.get("initial") or 0  # counted here: a disabled tqdm counts nothing
        if self.total and self.total > self.limit:
            self.close()
            raise _TooLong(f"{self.total} bytes offered, " + (f"{self.limit} expected" if self.listed else
                           f"more than the {self.limit} a file of unlisted length may have"))

    def update(self, n=1):
        self.received += n or 0
        if self.received > self.limit:
            raise _TooLong(f"more than {self.limit} bytes sent" + (f", {self.limit} expected" if self.listed
                                                                   else " for a file of unlisted length (the cap)"))
        return super().update(n)


def _capped_bar(limit: int, listed: bool, progress: bool) -> type[_CappedBar]:
    return type("CappedBar", (_CappedBar,), {"limit": limit, "listed": listed, "quiet": not progress})


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
