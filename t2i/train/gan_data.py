"""Where GAN-INT-CLS's training batches come from: `BatchSource`s, callables batch(n, gen) -> (images,
embeddings) with every random draw from the trainer's generator (t2i/train/gan.py).

    captioned(sample, encode, extras, classes)  a captioned world's sampler and a text encoder (the flowers world)
    shapes_source(dim)          the shapes world with the untrained random-text encoder (smoke runs)
    hdf5_source(path, split)    a seed-layout HDF5 file with its own embeddings (a converted flowers.hd5)
"""

from __future__ import annotations

import os
import random
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import T2IError

BatchSource = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def captioned(sample: Callable[[int, int], tuple], encode: Callable[[list[str]], torch.Tensor],
              extras: Callable[..., dict[str, torch.Tensor]] | None = None, classes: tuple[int, ...] = (),
              blind: tuple[bool, ...] = (),
              negatives: Callable[..., list[str]] | None = None) -> BatchSource:
    """A BatchSource from a captioned world's sampler, sample(seed, n) -> (uint8 images, NCHW or NHWC,
    captions, ...), and a text encoder's encode(captions) -> (n, d). The seed is drawn from the
    trainer's generator, so the world's own RNG (random.Random, numpy) follows it. With `extras`,
    extras(captions, *the sampler's further items) -> {name: tensor} is the batch's third item, what
    the optional terms read: "match" (captions x images, which captions describe which images: the
    semantic term), "true" and "asked" (attribute classes of each image and of what each caption
    names, -1 where unnamed: the auxiliary classifier, whose head sizes are `classes`, and `blind` the
    heads whose attribute does not depend on colour). With `negatives`, negatives(captions, *the
    sampler's further items) -> one hard-negative caption per image, whose embeddings the extras hold
    as "negative" (the trainer's `hard_negatives`). The flowers world: captioned(lambda seed, n:
    flowers.sample(n, seed), encoder.encode, flowers_text.gan_extras, flowers_text.CLASSES,
    flowers_text.BLIND, flowers_text.hard_negatives)."""
    def batch(n: int, gen: torch.Generator):
        images, texts, *rest = sample(int(torch.randint(2**62, (1,), generator=gen)), n)
        images = torch.as_tensor(images)
        images = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        if not (extras or negatives):
            return images, encode(texts)
        more = extras(texts, *rest) if extras else {}
        if negatives:
            more["negative"] = encode(negatives(texts, *rest))
        return images, encode(texts), more
    batch.classes, batch.blind, batch.negatives = classes, blind, negatives is not None
    return batch


def shapes_source(dim: int = 256) -> BatchSource:
    """The shapes world (t2i/data/shapes.py) with the untrained random-text encoder: a real source
    available offline, for smoke runs and tests until the flowers world and its encoder land."""
    from ..data import shapes
    from ..families.gan.components import RandomText

    return captioned(lambda seed, n: shapes.batch(random.Random(seed), n), RandomText(dim).encode)


def hdf5_source(path: str | os.PathLike, split: str = "train") -> BatchSource:
    """A seed-layout HDF5 file (t2i/data/hdf5.py: a converted flowers.hd5, or the world exported) as a
    BatchSource: random (image, caption embedding) records of `split`, images resized to 64x64 as the
    port's loader does. The file's embeddings are used as they are (the seed's: 1024-dim char-CNN-RNN)."""
    from ..data import hdf5

    data = hdf5.read(path, split)
    if not data.width:
        data.close()
        raise T2IError(f"{path}: {split} has no embeddings (export it with a text encoder)")

    def batch(n: int, gen: torch.Generator):
        picks = torch.randint(len(data), (n,), generator=gen).tolist()
        records = [data[i] for i in picks]
        images = torch.stack([torch.from_numpy(np.array(Image.fromarray(r.image).resize((64, 64), Image.BICUBIC)))
                              for r in records]).permute(0, 3, 1, 2)
        return images, torch.from_numpy(np.stack([r.embedding for r in records]))
    batch.width = data.width
    return batch
