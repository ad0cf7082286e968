"""Text-image datasets in the GAN-INT-CLS seed's HDF5 layout (its converted flowers.hd5), read and written.

The seed's converter writes, for each image and each of 5 of its captions, one group:

    /<split>/<example name>_<c>/   split: train | valid | test
        name        the image's name (string)
        img         the encoded image file's bytes, as a numpy void scalar (np.void(open(jpg).read()))
        embeddings  the caption's text embedding, float32 (d,) (Reed et al.'s char-CNN-RNN: d = 1024)
        class       the image's class (string, "class_00001")
        txt         the caption (variable-length string)

and its trainer opens `img` with PIL, so any format PIL reads works there; we write JPEG (as the seed)
or PNG (lossless: what round-trip tests compare). A group whose `embeddings` is (k, d) with `txt`
holding k strings is read as k examples. Anything malformed (not HDF5, truncated, a split or field
missing or empty, a field of the wrong type or beyond the bounds below, embeddings of another size
than the rest, an image that does not decode) raises HDF5Error, one line naming the file and the
field, as idx.py does for MNIST. Opening checks every group's declared shapes and types against those
bounds and the file's size before a byte of data is read: HDF5 lets a 10 kB file declare an 8 GiB
dataset (read back as fill values). `write` goes through a temporary file: a failed write leaves the
old file (or none) in place.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from ..errors import T2IError
from . import flowers

SPLITS = ("train", "valid", "test")
FIELDS = ("name", "img", "embeddings", "class", "txt")
CAPTIONS_PER_IMAGE = 5  # the seed keeps 5 of each Oxford-102 image's 10 captions
# The flowers world's split behind each of the seed's: valid draws train combinations with other
# seeds; test holds the held-out combinations.
WORLD_SPLITS = {"train": "train", "valid": "train", "test": "heldout"}

# What one example group may declare, checked before anything is read. The seed's file: embeddings of
# 1024 values, 5 captions per image, JPEGs of 10-300 kB (Oxford-102's largest side is about 1000 px).
MAX_EMBEDDING_WIDTH = 8192
MAX_CAPTIONS_PER_GROUP = 1024
MAX_IMAGE_BYTES = 32 << 20  # an encoded image file
MAX_IMAGE_PIXELS = 4096 * 4096  # a decoded one (48 MiB as RGB), checked from its header before decoding
MAX_TEXT_BYTES = 1 << 20  # name, class, txt as declared (variable-length strings live in the file itself)
# A dataset declaring more than this many times the whole file's size holds mostly fill values or
# compresses suspiciously well; the seed's files are not compressed at all.
MAX_EXPANSION = 64


class HDF5Error(T2IError):
    """A malformed or missing dataset file; the message names it and the field."""


@dataclass(frozen=True)
class Example:
    """One image with its captions: what `write` takes. `image` is uint8 (h, w, 3) or encoded bytes;
    `embeddings` float32 (len(captions), d)."""
    name: str
    image: np.ndarray | bytes
    captions: Sequence[str]
    embeddings: np.ndarray
    cls: str


@dataclass(frozen=True)
class Record:
    """One (image, caption) pair as read: the unit the seed's trainer samples."""
    name: str
    image: np.ndarray  # uint8 (h, w, 3)
    embedding: np.ndarray  # float32 (d,)
    caption: str
    cls: str


def _text(value) -> str:
    """A string field as h5py 3 returns it (bytes, str or a 0-d object array) -> str. A stray
    non-UTF-8 byte becomes U+FFFD: the trainer reads embeddings, not captions, so it must not stop
    hours of training."""
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def encode_image(image: np.ndarray, image_format: str = "jpeg") -> bytes:
    """uint8 (h, w, 3) -> JPEG (quality 95, as the Oxford files are stored) or PNG bytes."""
    buf = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buf, "JPEG", quality=95)
    elif image_format == "png":
        Image.fromarray(image).save(buf, "PNG")
    else:
        raise ValueError(f"image_format must be jpeg or png, got {image_format!r}")
    return buf.getvalue()


# --------------------------------------------------------------------------- writing


def _check_examples(path: Path, split: str, examples: Sequence[Example]) -> int | None:
    """The examples' embedding width (None for no examples); HDF5Error naming the first bad one."""
    width = None
    for ex in examples:
        emb = np.asarray(ex.embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(ex.captions):
            raise HDF5Error(f"{path}: {split}/{ex.name}: embeddings must be (captions={len(ex.captions)}, d), "
                            f"got {emb.shape}")
        if width is not None and emb.shape[1] != width:
            raise HDF5Error(f"{path}: {split}/{ex.name}: embeddings of {emb.shape[1]} values, earlier examples "
                            f"have {width}")
        width = emb.shape[1]
    return width


def write(path: str | os.PathLike, split: str, examples: Sequence[Example], image_format: str = "jpeg") -> None:
    """Write (or replace) `split` of the file at `path` in the seed's layout, keeping its other splits;
    through a temporary file renamed into place, so nothing is ever half-written."""
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"{path}: unknown split {split!r}: use one of {', '.join(SPLITS)}")
    width = _check_examples(path, split, examples)
    if path.exists() and width is not None:
        for other in SPLITS:  # the splits of one file feed one model: one embedding width
            if other != split:
                theirs = _first_width(path, other)
                if theirs is not None and theirs != width:
                    raise HDF5Error(f"{path}: {split}: embeddings of {width} values, the file's {other} split "
                                    f"has {theirs}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a" if path.exists() else "w") as f:
            if split in f:
                del f[split]
            group = f.create_group(split)
            text = h5py.string_dtype("utf-8")
            for ex in examples:
                data = ex.image if isinstance(ex.image, bytes) else encode_image(np.asarray(ex.image), image_format)
                for c, (caption, emb) in enumerate(zip(ex.captions, np.asarray(ex.embeddings, np.float32))):
                    g = group.create_group(f"{ex.name}_{c}")
                    g.create_dataset("name", data=ex.name, dtype=text)
                    g.create_dataset("img", data=np.void(data))
                    g.create_dataset("embeddings", data=emb)
                    g.create_dataset("class", data=ex.cls, dtype=text)
                    g.create_dataset("txt", data=caption, dtype=text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _first_width(path: Path, split: str) -> int | None:
    with _open(path) as f:
        if split not in f or not len(f[split]):
            return None
        first = f[split][next(iter(f[split]))]
        return int(first["embeddings"].shape[-1]) if "embeddings" in first else None


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> h5py.File:
    if path.is_dir():
        raise HDF5Error(f"{path}: is a directory, not an HDF5 file")
    if not path.exists():
        raise HDF5Error(f"{path}: no such file")
    if not path.is_file():
        raise HDF5Error(f"{path}: not a regular file")
    try:
        return h5py.File(path, "r")
    except OSError as e:  # h5py: "file signature not found", "truncated file: eof = ..."
        raise HDF5Error(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]})") from None


class Dataset:
    """The (image, caption) records of one split, read lazily (images decoded on access). Opening
    checks every group's fields and embedding sizes, so a bad file fails at once, in one line."""

    def __init__(self, path: str | os.PathLike, split: str):
        self.path, self.split = Path(path), split
        self.file = _open(self.path)
        try:
            self.width, self._index = self._check()
        except Exception:
            self.file.close()
            raise

    def _check(self) -> tuple[int | None, list[tuple[str, int]]]:
        index, width, limit = [], None, self.path.stat().st_size * MAX_EXPANSION
        try:
            group = self._split_group()
            for key in sorted(group):
                where = f"{self.path}: {self.split}/{key}"
                k, d = _check_group(where, group.id, key, limit)
                if width is not None and d != width:
                    raise HDF5Error(f"{where}: embeddings of {d} values, other examples have {width}")
                width = d
                index += [(key, c) for c in range(k)]
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:  # a truncated file can open and fail here
            raise HDF5Error(f"{self.path}: {self.split}: unreadable ({_first_line(e)})") from None
        if not index:
            raise HDF5Error(f"{self.path}: split {self.split!r} is empty (no examples)")
        return width, index

    def _split_group(self) -> h5py.Group:
        # A plain name only: h5py reads "." or "train/" as a path, which would find the wrong group.
        plain = self.split and "/" not in self.split and self.split not in (".", "..")
        if not plain or self.split not in self.file:
            raise HDF5Error(f"{self.path}: no split {self.split!r} (has: {', '.join(sorted(self.file)) or 'none'})")
        group = self.file[self.split]
        if not isinstance(group, h5py.Group):
            raise HDF5Error(f"{self.path}: {self.split} is not a group of examples")
        return group

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> Record:
        key, c = self._index[i]
        try:
            g = self.file[self.split][key]
            data = g["img"][()]
            raw = data.tobytes() if isinstance(data, (np.void, np.ndarray)) else bytes(data)
            emb = np.asarray(g["embeddings"][()], np.float32)
            txt = g["txt"][()]
            caption = _text(txt[c] if np.ndim(txt) else txt)
            name, cls = _text(g["name"][()]), _text(g["class"][()])
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise HDF5Error(f"{self.path}: {self.split}/{key}: unreadable ({_first_line(e)})") from None
        image = _decode(f"{self.path}: {self.split}/{key}", raw)
        return Record(name, image, emb[c] if emb.ndim == 2 else emb, caption.strip(), cls)

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(len(self)))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_group(where: str, parent: h5py.h5g.GroupID, key: str, limit: int) -> tuple[int, int]:
    """(examples, embedding width) of one example group, from its metadata alone: every field a
    dataset of the right kind, no larger than its bound nor than `limit` (the file's size times
    MAX_EXPANSION)."""
    meta = _field_meta(where, parent, key)
    for field, (dtype, shape, nbytes) in meta.items():
        if nbytes > limit:
            raise HDF5Error(f"{where}: {field} declares {_size(nbytes)} ({dtype} {shape}) in a file "
                            f"of {_size(limit // MAX_EXPANSION)}")
    dtype, shape, _ = meta["embeddings"]
    if len(shape) not in (1, 2) or dtype.kind != "f" or dtype.itemsize > 8:
        raise HDF5Error(f"{where}: embeddings must be float (d,) or (k, d), got {dtype} {shape}")
    k = 1 if len(shape) == 1 else shape[0]
    if shape[-1] > MAX_EMBEDDING_WIDTH or k > MAX_CAPTIONS_PER_GROUP:
        raise HDF5Error(f"{where}: embeddings {shape}: at most {MAX_CAPTIONS_PER_GROUP} of at most "
                        f"{MAX_EMBEDDING_WIDTH} values")
    captions = math.prod(meta["txt"][1])
    if k != (captions if len(shape) == 2 else 1):
        raise HDF5Error(f"{where}: {k} embeddings for {captions} captions in txt")
    dtype, shape, nbytes = meta["img"]
    if not (dtype.kind in "VS" and shape == () or dtype in (np.uint8, np.int8) and len(shape) == 1):
        raise HDF5Error(f"{where}: img must be an encoded image's bytes (void, bytes or uint8 (n,)), got {dtype} {shape}")
    if nbytes > MAX_IMAGE_BYTES:
        raise HDF5Error(f"{where}: img of {_size(nbytes)}, more than the {_size(MAX_IMAGE_BYTES)} an image may have")
    for field in ("name", "class", "txt"):
        dtype, shape, nbytes = meta[field]
        if dtype.kind != "S" and h5py.check_string_dtype(dtype) is None or nbytes > MAX_TEXT_BYTES:
            raise HDF5Error(f"{where}: {field} must be text of at most {_size(MAX_TEXT_BYTES)}, got {dtype} {shape}")
    return k, meta["embeddings"][1][-1]


def _field_meta(where: str, parent: h5py.h5g.GroupID, key: str) -> dict[str, tuple[np.dtype, tuple, int]]:
    """Each field's (dtype, shape, declared bytes), through h5py's low-level objects: its Dataset
    wrappers made opening the seed's 41k groups five times slower (BENCHMARKS.md)."""
    g = h5py.h5o.open(parent, key.encode())
    if not isinstance(g, h5py.h5g.GroupID):
        raise HDF5Error(f"{where}: not an example group")
    meta = {}
    for field in FIELDS:
        try:
            ds = h5py.h5o.open(g, field.encode())
        except KeyError:
            raise HDF5Error(f"{where}: no field {field!r}") from None
        if not isinstance(ds, h5py.h5d.DatasetID):
            kind = "group" if isinstance(ds, h5py.h5g.GroupID) else type(ds).__name__
            raise HDF5Error(f"{where}: {field} is a {kind}, not a dataset")
        dtype, shape = ds.dtype, ds.shape
        shape = (0,) if shape is None else shape  # an HDF5 null dataspace: no values at all
        meta[field] = (dtype, shape, math.prod(shape) * dtype.itemsize)
    return meta


def _decode(where: str, raw: bytes) -> np.ndarray:
    """An encoded image -> uint8 (h, w, 3), its size checked from the header before decoding."""
    try:
        with warnings.catch_warnings():
            # PIL only warns of an image up to twice its own bomb limit: that would be a second line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise HDF5Error(f"{where}: img of {im.width}x{im.height} pixels, more than {MAX_IMAGE_PIXELS}")
                return np.asarray(im.convert("RGB"))
    except HDF5Error:
        raise
    except Exception as e:  # noqa: BLE001 - PIL's decoders fail in many ways (OSError, SyntaxError, bombs...)
        raise HDF5Error(f"{where}: img is not an image ({_first_line(e)})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def read(path: str | os.PathLike, split: str) -> Dataset:
    """The split's records (Record: name, image uint8 HWC, embedding (d,), caption, cls); close it
    (or use `with`) when done."""
    return Dataset(path, split)


# --------------------------------------------------------------------------- the flowers world


TextEncoder = Callable[[list[str]], np.ndarray]


def _encoder(text_encoder) -> TextEncoder | None:
    if text_encoder is None or not hasattr(text_encoder, "encode_text"):
        return text_encoder
    import torch

    def encode(captions: list[str]) -> np.ndarray:  # a CharCLIP: its unit text embeddings
        with torch.no_grad():
            return text_encoder.encode_text(captions).float().cpu().numpy()
    return encode


def world_examples(n: int, split: str, seed: int = 0, text_encoder=None,
                   captions_per_image: int = CAPTIONS_PER_IMAGE) -> list[Example]:
    """n flowers-world images of the seed's `split` (WORLD_SPLITS), each with captions_per_image
    captions of different templates and their embeddings ((k, 0) without a text encoder)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 102])
    encode = _encoder(text_encoder)
    out = []
    for i in range(n):
        scene = flowers.sample_scene(rng, WORLD_SPLITS[split])
        templates = rng.choice(len(flowers.TEMPLATES), captions_per_image, replace=False)
        captions = [flowers.caption(scene, int(t), rng) for t in templates]
        emb = np.asarray(encode(captions), np.float32) if encode else np.zeros((len(captions), 0), np.float32)
        f = scene.flower
        out.append(Example(f"flower_{split}_{i:05d}", flowers.render(scene), captions, emb,
                           f"{f.colour}-{f.centre}-{f.petals}-{f.shape}"))
    return out


def export_world(path: str | os.PathLike, n_per_split: int | dict, text_encoder=None, seed: int = 0,
                 image_format: str = "jpeg") -> None:
    """The flowers world as a seed-layout file: train, valid and test splits (n_per_split images each,
    or a {split: n} dict), embeddings from text_encoder (a CharCLIP, or captions -> (k, d) array)
    when given, else (0,)-sized (a trainer then encodes txt itself). Classes name the species
    ("pink-yellow-5-round"): the seed's trainer draws its mismatched images from another class."""
    counts = n_per_split if isinstance(n_per_split, dict) else {s: n_per_split for s in SPLITS}
    for split in SPLITS:
        if split in counts:
            write(path, split, world_examples(counts[split], split, seed, text_encoder), image_format)
