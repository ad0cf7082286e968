"""Frames, results and uploads in a BlobStore (t2i/store/blobs.py) instead of the database: a mixin of
SQLStore (t2i/store/sql.py), used when the store has `blobs` ($T2I_BLOBS, set by open_store). Without
it every helper here does nothing and the bytes stay in their columns (the default: one file or one
URL is all a host needs).

The database holds references (frames.ref, results.gif_ref / png_ref, uploads.ref: schema version 9),
the columns of the bytes an empty value. The order of writes is what keeps rows and blobs in step:

- A blob is written (atomically: a temporary file renamed into place) before the row that refers to
  it, so a committed row never points at a blob not yet written. A crash or a failed write between
  the two leaves a blob nobody refers to: clean_blobs() removes those, once older than a writer
  could still be about to commit.
- Keys carry the lease (frames/<job>/<attempt>/<step>.png, results/<job>/<attempt>.gif): a worker
  presumed dead writes only blobs no row refers to. Fencing stays one WHERE clause in the database.
- A blob is deleted only after its row is gone (a finished job's frames, a deleted job), except a
  requeued attempt's frames, deleted inside the requeue's transaction: should it roll back, a frame
  row points at nothing, and frame reads skip such rows (a frame is a preview; a result never is).
- A result whose blob was deleted from under a finished job reads with `gone` set to one line the
  pages show; nothing raises.
"""

from __future__ import annotations

import logging
import os
import time

from .blobs import BlobError, content_key

log = logging.getLogger("t2i.store")
ORPHAN_AGE = 3600.0  # seconds: a younger blob may belong to a write whose row is about to commit


class BlobRefs:
    blobs = None  # a BlobStore (FileBlobStore), or None: bytes in the database

    def _put_blob(self, key: str, data: bytes) -> str | None:
        """The ref of `data` stored under `key`, or None when this store keeps bytes in the database."""
        return None if self.blobs is None else self.blobs.put(key, data)

    def _frame_ref(self, lease, step: int, png: bytes) -> str | None:
        return self._put_blob(f"frames/{lease.job_id}/{lease.attempt}/{step:06d}.png", png)

    def _result_refs(self, lease, gif: bytes, png: bytes) -> tuple[str | None, str | None]:
        base = f"results/{lease.job_id}/{lease.attempt}"
        return self._put_blob(base + ".gif", gif), self._put_blob(base + ".png", png)

    def _upload_ref(self, data: bytes) -> str | None:
        return self._put_blob(content_key(data, "uploads"), data)

    def _forget(self, *refs: str | None) -> None:
        """Delete blobs whose rows are gone; a failure is logged (clean_blobs() retries it), never raised:
        the database write that matters has happened."""
        for ref in refs:
            if ref and self.blobs is not None:
                try:
                    self.blobs.delete(ref)
                except BlobError as e:
                    log.warning("%s (clean_blobs() will retry)", e)

    def _forget_frames(self, job_id: int, attempt: int | None = None) -> None:
        """A job's frame blobs (one attempt's, or all), once their rows are deleted."""
        if self.blobs is not None:
            try:
                self.blobs.delete_prefix(f"frames/{job_id}" + (f"/{attempt}" if attempt is not None else ""))
            except BlobError as e:
                log.warning("%s (clean_blobs() will retry)", e)

    def _bytes(self, data, ref: str | None) -> bytes | None:
        """A row's bytes: from the blob when it has a ref (None when that blob is gone)."""
        if not ref:
            return bytes(data) if data is not None else None
        if self.blobs is None:
            raise BlobError(f"blob {ref} is referred to, but this store has no blob folder: set T2I_BLOBS")
        return self.blobs.get(ref)

    def _frames(self, job_id: int, order: str) -> list[tuple[int, bytes]]:
        """A job's frames, from their blobs or their rows; a row whose blob is gone is skipped."""
        rows = self._all(f"SELECT step, png, ref FROM frames WHERE job_id = ? ORDER BY step {order}", (job_id,))
        return [(int(s), data) for s, png, ref in rows if (data := self._bytes(png, ref)) is not None]

    def delete_job(self, job_id: int) -> bool:
        """Delete a finished job with everything of it: its frames, result, votes and links (rows
        first, in one transaction), then its blobs. False when there is no such finished job."""
        with self.transaction():
            row = self._one("SELECT status FROM jobs WHERE id = ?", (job_id,))
            if row is None or row[0] not in ("done", "failed", "cancelled"):
                return False
            self._execute("DELETE FROM votes WHERE left_job = ? OR right_job = ?", (job_id, job_id))
            self._execute("UPDATE jobs SET retry_of = NULL WHERE retry_of = ?", (job_id,))
            self._execute("DELETE FROM jobs WHERE id = ?", (job_id,))  # frames, results, links: ON DELETE CASCADE
        if self.blobs is not None:
            for prefix in (f"frames/{job_id}", f"results/{job_id}"):
                try:
                    self.blobs.delete_prefix(prefix)
                except BlobError as e:
                    log.warning("%s (clean_blobs() will retry)", e)
        return True

    def clean_blobs(self, older_than: float = ORPHAN_AGE) -> int:
        """Remove blobs no row refers to (a writer that crashed or failed between its blob and its
        row; a delete that failed), once older than `older_than` seconds, and temporary files left by
        writers killed mid-write. Returns how many. Reads every blob's name: run it at an executor's
        start or from a timer, not per job."""
        if self.blobs is None:
            return 0
        removed, cutoff = self.blobs.clean(older_than), time.time() - older_than
        refs = {r[0] for r in self._all("SELECT ref FROM frames WHERE ref IS NOT NULL")}
        refs |= {r[0] for r in self._all("SELECT ref FROM uploads WHERE ref IS NOT NULL")}
        for gif, png in self._all("SELECT gif_ref, png_ref FROM results WHERE gif_ref IS NOT NULL"):
            refs |= {gif, png}
        for ref, mtime in self.blobs.listing():
            if ref not in refs and mtime <= cutoff:
                removed += self.blobs.delete(ref)
        return removed


def blob_store_from_env():
    """$T2I_BLOBS: a folder for frames, results and uploads (every host's executors and pages must
    see the same one: a shared filesystem); unset, the bytes stay in the database."""
    folder = os.environ.get("T2I_BLOBS")
    if not folder:
        return None
    from .blobs import FileBlobStore

    return FileBlobStore(folder)
