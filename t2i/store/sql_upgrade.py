"""The upgrade steps that need more than SQL (t2i/store/schema.py's AFTER names them): a mixin of
SQLStore (t2i/store/sql.py), which gives it the statement helpers and `_put_uploads`. Each step runs
in the migration's transaction, one job at a time, so a database that took a gigabyte to list is not
read into memory at once.

A row a step cannot read (damaged before the upgrade: a spec cut short, not JSON, JSON that is not an
object, an inline image that is not base64) does not stop the upgrade: one bad row would otherwise
keep the whole service from starting, and every later open would fail the same way. The row is left
exactly as it was (nothing half-moved; an operator can still repair it by hand), marked with one line
in its `error` (and failed, if it had not finished: it could never run), and named in one line of
the log. The other rows are upgraded as usual.
"""

from __future__ import annotations

import json
import logging

from .uploads import inline_images

log = logging.getLogger("t2i.store")
UNFINISHED = ("queued", "running")   # a damaged one of these becomes failed: no executor could read it


class Upgrades:
    def _uploads_from_specs(self) -> None:
        """Schema version 5: the base64 images of older specs move to `uploads` (once per content) and
        the specs refer to them. Older specs were written by json.dumps, so an inline image reads
        `"init_image": "` or `"image_prompts": ["`."""
        ids = [int(r[0]) for r in self._all("SELECT id FROM jobs WHERE spec LIKE ? OR spec LIKE ? ORDER BY id",
                                            ('%"init_image": "%', '%"image_prompts": ["%'))]
        for job_id in ids:
            text, submitter, address = self._one("SELECT spec, submitter, address FROM jobs WHERE id = ?", (job_id,))
            try:
                spec, uploads = inline_images(_spec_object(text))
            except (ValueError, TypeError) as e:   # json's and base64's errors are ValueErrors
                self._mark_damaged(job_id, 5, _reason(e))
                continue
            if not uploads:
                continue
            self._put_uploads(uploads, submitter, address)
            self._execute("UPDATE jobs SET spec = ? WHERE id = ?", (json.dumps(spec), job_id))
            for upload in uploads:
                self._execute("INSERT INTO job_uploads (job_id, sha256) VALUES (?, ?)", (job_id, upload.sha256))

    def _mark_damaged(self, job_id: int, version: int, reason: str) -> None:
        """One damaged row, inside the upgrade's transaction: its line in `error` (before any error it
        had), failed if it was queued or running; logged once."""
        status, error = self._one("SELECT status, error FROM jobs WHERE id = ?", (job_id,))
        line = f"the upgrade to schema version {version} could not read this job's spec ({reason}); left as it was"
        failed = status in UNFINISHED
        ended = ", status = 'failed', finished_at = {now}, lease_expires_at = NULL" if failed else ""
        self._execute(f"UPDATE jobs SET error = ?{ended} WHERE id = ?",
                      (line if not error else f"{line}; before: {error}"[:2000], job_id))
        log.warning("upgrading the job database to schema version %d: job %d (%s) is damaged, %s; left as it "
                    "was and %s", version, job_id, status, reason, "marked failed" if failed else "its error says so")


def _spec_object(text) -> dict:
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError(f"JSON {type(spec).__name__}, not an object")
    return spec


def _reason(error: Exception) -> str:
    """The error as a short phrase: the spec's text is not repeated (it may be megabytes of base64)."""
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON: {error.msg} at character {error.pos}"
    if type(error).__name__ == "Error":   # binascii.Error, from base64
        return f"an inline image is not base64: {error}"
    return " ".join(str(error).split())[:200]
