"""Uploaded images (init images, image prompts): stored once, by content, outside the job rows.

A job's spec refers to an image as {"upload": "<sha256 hex>"}; the bytes are a row of `uploads`,
written in the transaction that inserts the first job using them, and `job_uploads` says which jobs
use which (the per-address storage quota, retries, and what may ever be deleted). Specs written
before schema version 5 held the images in base64; `inline_images` turns one into references (the
version 5 migration). A leaf module: spec.py and the store both import it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

UPLOAD_WINDOW = 24 * 3600  # seconds: the uploads of an address's jobs of the last day count against its quota
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def media_type(data: bytes) -> str:
    """The type of a checked image (t2i/spec.py check_image lets PNG, JPEG and WebP through)."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass(frozen=True)
class Upload:
    """An image a job brings: its bytes, keyed by their SHA-256."""

    sha256: str
    data: bytes
    media_type: str

    @classmethod
    def of(cls, data: bytes) -> "Upload":
        return cls(hashlib.sha256(data).hexdigest(), bytes(data), media_type(data))


@dataclass(frozen=True)
class UploadRef:
    """An image known by its hash only: a spec read without loading its images (enough for the
    preset, batch key, size and load; the executor loads the bytes before running the job)."""

    sha256: str


def ref(image: bytes | UploadRef) -> dict:
    """What a spec stores for an image."""
    sha = image.sha256 if isinstance(image, UploadRef) else hashlib.sha256(image).hexdigest()
    return {"upload": sha}


def inline_images(spec: dict) -> tuple[dict, list[Upload]]:
    """A spec from before schema version 5 with its base64 images replaced by references, and the
    images as uploads. A spec without inline images comes back unchanged (and no uploads)."""
    spec, found = dict(spec), {}

    def move(value):
        if not isinstance(value, str) or not value:
            return value
        upload = Upload.of(base64.b64decode(value))
        found.setdefault(upload.sha256, upload)
        return {"upload": upload.sha256}

    if "init_image" in spec:
        spec["init_image"] = move(spec["init_image"])
    if isinstance(spec.get("image_prompts"), list):
        spec["image_prompts"] = [move(v) for v in spec["image_prompts"]]
    return spec, list(found.values())
