"""MNIST's IDX files (plain or gzipped) and a sampler that lets the digits trainers take real MNIST.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the data in C order. MNIST uses uint8 images (0x00000803: n x 28 x 28) and
uint8 labels (0x00000801: n). Anything malformed raises IdxError, one line naming the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import T2IError
from . import digits

# IDX type code -> numpy big-endian dtype.
_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class IdxError(T2IError):
    """A malformed or missing IDX file; the message names it."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip's BadGzipFile is an OSError
        raise IdxError(f"{path}: not a readable gzip file ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (native byte order)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES or data[3] == 0:
        raise IdxError(f"{path}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{path}: {len(data)} bytes, the header {shape} says {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as IDX (gzipped when the name ends in .gz), through a temporary file."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"{path}: IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"{path}: IDX needs 1..255 dimensions, got {array.ndim}")
    payload = (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
               + np.ascontiguousarray(array, _TYPES[code]).tobytes())
    if path.suffix == ".gz":
        # mtime=0: the same array gives the same bytes.
        payload = gzip.compress(payload, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise IdxError(f"{directory / name}[.gz]: no such file")


def load_mnist(source: str | os.PathLike | tuple, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images uint8 (n, 28, 28) and labels int64 (n,), from a folder holding the standard file
    names (plain or .gz) or from an (images_path, labels_path) pair."""
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}: use train or test")
    if isinstance(source, (tuple, list)):
        image_path, label_path = (Path(p) for p in source)
    else:
        image_path, label_path = (_find(Path(source), name) for name in FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxError(f"{image_path}: expected uint8 images (n, rows, cols), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IdxError(f"{label_path}: expected uint8 labels (n,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise IdxError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
    if labels.size and labels.max() > 9:
        raise IdxError(f"{label_path}: label {labels.max()} is not a digit")
    return images, labels.astype(np.int64)


def pad_to(images: np.ndarray, size: int = digits.SIZE) -> np.ndarray:
    """Centre (n, h, w) images on a black size x size canvas (MNIST's 28 -> the world's 32)."""
    n, h, w = images.shape
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} do not fit in {size}x{size}")
    out = np.zeros((n, size, size), images.dtype)
    top, left = (size - h) // 2, (size - w) // 2
    out[:, top:top + h, left:left + w] = images
    return out


def mnist_sampler(images: np.ndarray, labels: np.ndarray) -> digits.Sampler:
    """A data source like `digits.sample`: (n, rng) -> (images uint8 (n, 32, 32), labels, captions),
    drawing with replacement from the given MNIST images, each with a fresh random caption."""
    padded = pad_to(np.asarray(images, np.uint8))
    labels = np.asarray(labels, np.int64)
    if len(padded) != len(labels) or len(labels) == 0:
        raise ValueError(f"mnist_sampler needs as many labels as images (got {len(labels)} and {len(padded)})")

    def sample(n: int, rng: np.random.Generator):
        i = rng.integers(0, len(labels), n)
        return padded[i], labels[i], [digits.caption(int(d), rng) for d in labels[i]]

    return sample
