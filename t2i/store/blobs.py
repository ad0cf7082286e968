"""Blobs (progress frames, GIFs, PNGs) outside the job database: a small contract and a filesystem backend.

Wired into the JobStore by t2i/store/sql_blobs.py when $T2I_BLOBS names a folder: the JobStore keeps
rows and a `ref` per frame, result and upload; the bytes go here (docs/SCALING.md says why: frame and
result bytes are most of what a fleet writes to the database).

A ref is the key the blob was put under: '/'-separated segments of letters, digits, '.', '_' and
'-' ("frames/42/0010.png", "results/42.gif"), never absolute, never '..'. Keyed rather than content-
addressed so that a job's frames can be found and deleted by their prefix; content_key() gives a
content-addressed key for callers that want deduplication (uploads).

The filesystem backend writes each blob to a temporary file in the target folder, fsyncs it and
renames it over the final name (os.replace is atomic on POSIX), then fsyncs the folder: a reader sees
the whole old blob or the whole new one, never a partial file, even after a crash or a power loss. A
crash mid-write can leave a temporary file (named .tmp-*), which no read ever returns and clean()
removes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Protocol

from .errors import StoreError

MAX_KEY = 512
TEMP_PREFIX = ".tmp-"
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class BlobError(StoreError):
    """A blob could not be written or read (one line), or a ref is not one this store hands out."""


class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key` (replacing what was there), atomically: a reader sees the old
        blob or the new one, never part of one. Returns the ref to keep (get, delete, exists)."""

    def get(self, ref: str) -> bytes | None:
        """The blob's bytes, or None when there is none under `ref`."""

    def delete(self, ref: str) -> bool:
        """Remove the blob; False when there was none."""

    def exists(self, ref: str) -> bool:
        """Whether a blob is stored under `ref`."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose ref starts with `prefix` + '/' (a job's frames); how many."""

    def listing(self):
        """(ref, modification time) of every blob, for the orphan sweep."""

    def clean(self, older_than: float) -> int:
        """Remove what writers that died mid-write left; how many."""


def check_key(key: str) -> str:
    """The key itself when it is a valid ref; BlobError (one line) otherwise. Refuses what could
    leave the store's root: absolute paths, '..', empty segments, hidden names, odd characters."""
    if not isinstance(key, str) or not key:
        raise BlobError(f"bad blob reference {key!r}: it must be a non-empty string")
    if len(key) > MAX_KEY:
        raise BlobError(f"bad blob reference {key[:40]!r}...: longer than {MAX_KEY} characters")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment):
            raise BlobError(f"bad blob reference {key[:80]!r}: use '/'-separated names of letters, digits, "
                            "'.', '_' and '-' (no leading '/' or '.', no '..')")
    return key


def content_key(data: bytes, prefix: str = "sha256") -> str:
    """A content-addressed key: prefix/ab/abcdef... (the SHA-256), two levels so no folder grows huge."""
    digest = hashlib.sha256(data).hexdigest()
    return check_key(f"{prefix}/{digest[:2]}/{digest}")


class FileBlobStore:
    """Blobs as files under `root` (a local disk, or a shared filesystem mounted on every host)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BlobError(f"cannot use {self.root} for blobs: {e.strerror or e}") from None
        if not self.root.is_dir():
            raise BlobError(f"cannot use {self.root} for blobs: not a folder")

    def _path(self, ref: str) -> Path:
        path = self.root.joinpath(*check_key(ref).split("/"))
        # check_key already refuses '..'; a symlinked folder inside the root must not lead out of it either.
        if not path.resolve().is_relative_to(self.root):
            raise BlobError(f"bad blob reference {ref[:80]!r}: it leads outside {self.root}")
        return path

    def put(self, key: str, data: bytes) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BlobError(f"blob {key[:80]!r}: data must be bytes, not {type(data).__name__}")
        path = self._path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)  # the rename itself survives a power loss
        except OSError as e:
            raise BlobError(f"cannot write blob {key!r} under {self.root}: {e.strerror or e}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass  # the first error is the one to report; clean() removes what is left
        return key

    def get(self, ref: str) -> bytes | None:
        path = self._path(ref)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            return None  # a prefix of other blobs ("frames/42"), not a blob
        except OSError as e:
            raise BlobError(f"cannot read blob {ref!r} under {self.root}: {e.strerror or e}") from None

    def delete(self, ref: str) -> bool:
        path = self._path(ref)
        try:
            path.unlink()
            return True
        except (FileNotFoundError, IsADirectoryError):
            return False
        except OSError as e:
            raise BlobError(f"cannot delete blob {ref!r} under {self.root}: {e.strerror or e}") from None

    def exists(self, ref: str) -> bool:
        return self._path(ref).is_file()

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix)
        removed = 0
        try:
            for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
                    removed += not path.name.startswith(TEMP_PREFIX)
            folder.rmdir()
        except FileNotFoundError:
            pass  # nothing there, or another deleter was first
        except OSError as e:
            raise BlobError(f"cannot delete blobs {prefix!r} under {self.root}: {e.strerror or e}") from None
        return removed

    def listing(self):
        for path in self.root.rglob("*"):
            if path.name.startswith(TEMP_PREFIX):
                continue
            try:
                if path.is_file():
                    yield path.relative_to(self.root).as_posix(), path.stat().st_mtime
            except FileNotFoundError:
                pass  # deleted while listed

    def clean(self, older_than: float = 3600.0) -> int:
        """Remove temporary files left by writers that crashed mid-write, once older than
        `older_than` seconds (a younger one may be a write in progress). Returns how many."""
        removed, cutoff = 0, time.time() - older_than
        for tmp in self.root.rglob(TEMP_PREFIX + "*"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # another cleaner took it
        return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
