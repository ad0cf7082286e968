"""What a downloaded file must be before it takes its real name (t2i/assets/download.py calls `prove`).

A server can answer 200 with an HTML error or sign-in page, cut a body short while announcing a
shorter length, or stream without end; when configs/weights.yaml lists no length for the file,
nothing but the bytes themselves can tell. So every file is proved, cheaply (headers and
directories, never a whole unpickling), by what its name says it is:

    .bin .pt .pth .ckpt   a torch.save file: a zip whose directory parses and holds data.pkl, or the
                          legacy pickle format (its magic number)
    .safetensors          the JSON header parses and its tensors end exactly at the file's end
    .json                 parses as JSON
    .txt .bpe .yaml .yml  UTF-8 text
    anything              not an HTML page; its sha256, when the caller knows it

and no file of unlisted length is taken beyond `unlisted_cap(name)` bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
TEXT_SUFFIXES = (".txt", ".bpe", ".yaml", ".yml")
# torch.save's legacy (pre-1.6) format opens with its magic number pickled at protocol 2.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
SAFETENSORS_MAX_HEADER = 100 << 20  # the format's own limit on its JSON header
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--")

# Most bytes taken from a server for a file whose length configs/weights.yaml does not list, by what
# the file is. Weights: the largest unlisted files are ldm-text2im-large-256's unet (3.49 GB) and
# bert (2.33 GB) and GLIDE's base.pt and upsample.pt (about 1.6 GB each): 8 GiB leaves room and still
# stops an endless body before it fills a disk. Configs and tokenizer files are kilobytes to a few
# megabytes (GLIDE's encoder.json, the largest, is 1 MB).
UNLISTED_CAPS = {".json": 16 << 20, ".yaml": 16 << 20, ".yml": 16 << 20, ".txt": 64 << 20, ".bpe": 64 << 20}
UNLISTED_WEIGHTS_CAP = 8 << 30


class NotTheFile(Exception):
    """The bytes are not the file asked for; str(e) says what they are instead, in one line."""


def unlisted_cap(name: str) -> int:
    """The most bytes a file called `name` may have when no length is listed for it."""
    return UNLISTED_CAPS.get(Path(name).suffix.lower(), UNLISTED_WEIGHTS_CAP)


def prove(path: Path, name: str, sha256: str | None = None) -> None:
    """Raise NotTheFile unless the file at `path` is plausibly the file `name` (see the module's list)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if looks_like_html(head):
        raise NotTheFile("an HTML page (an error or sign-in page?), not the file")
    suffix = Path(name).suffix.lower()
    if suffix in TORCH_SUFFIXES:
        _torch_file(path, head)
    elif suffix == ".safetensors":
        _safetensors(path)
    elif suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except (UnicodeDecodeError, ValueError) as e:
            raise NotTheFile(f"not JSON ({_line(e)})") from None
    elif suffix in TEXT_SUFFIXES:
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotTheFile(f"not UTF-8 text (byte {e.start})") from None
    if sha256 is not None:
        got = _sha256(path)
        if got != sha256.lower():
            raise NotTheFile(f"sha256 {got}, expected {sha256.lower()}")


def looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(HTML_STARTS)


def _torch_file(path: Path, head: bytes) -> None:
    if head.startswith(LEGACY_TORCH_MAGIC):
        return  # the legacy format has no directory to check; the loader's proof reads it whole
    if not head.startswith(b"PK"):
        raise NotTheFile(f"not a torch.save file (starts with {head[:8]!r})")
    try:
        with zipfile.ZipFile(path) as z:  # the directory sits at the end: a cut file has none
            names = z.namelist()
            end = max((i.header_offset + i.compress_size for i in z.infolist()), default=0)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise NotTheFile(f"a damaged or cut torch.save file ({_line(e)})") from None
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise NotTheFile("a zip file without data.pkl, not a torch.save file")
    if end > path.stat().st_size:
        raise NotTheFile("a cut torch.save file (its members run past the end)")


def _safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < n <= min(SAFETENSORS_MAX_HEADER, size - 8):
            raise NotTheFile("not a safetensors file (no header)")
        try:
            header = json.loads(f.read(n))
            end = int(max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0))
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError) as e:
            raise NotTheFile(f"not a safetensors file ({_line(e)})") from None
    if 8 + n + end != size:
        raise NotTheFile(f"a cut or padded safetensors file ({size} bytes, its header says {8 + n + end})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]
