"""CharCLIP: the digits world's small CLIP, and the text encoder the digits DDPM is conditioned on;
also the flowers world's text encoder (t2i/train/flowers_text.py: 64x64 RGB images, longer captions).

A character-level text encoder (embedding over lower-cased printable ASCII, a bidirectional LSTM over
the packed sequence, mean-pooled, projected) and a small CNN image encoder (32x32 grey in [0, 1], or
64x64 RGB through a strided stem), each giving L2-normalised embeddings of `dim`, with CLIP's
learnable temperature. Characters, not words: "6", "six" and "a handwritten 6" all arrive as plain
strings, with no vocabulary to outgrow.

The checkpoint is `{"config": {build_char_clip arguments}, "state_dict": ...}`, fp16 on disk (the
repository's committed weights) and fp32 once loaded. `CharClipText` is the diffusion family's text
encoder component: a prompt's embedding as a one-token sequence (the UNet's encoder_hidden_states),
and zeros as the unconditional states (what training drops conditions to).
"""

from __future__ import annotations

import math
import os
import string
import zipfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import T2IError, WeightsMissing
from ..assets.fp16 import save_checkpoint

# Index 0 pads, 1 stands for any character outside the vocabulary.
PAD, UNKNOWN = 0, 1
CHARS = sorted(set(string.printable.lower()) - set("\t\n\r\x0b\x0c"))
_INDEX = {c: i + 2 for i, c in enumerate(CHARS)}
VOCAB = len(CHARS) + 2
MAX_LENGTH = 32


class CheckpointError(T2IError):
    """A weights file that exists but cannot be loaded; the message names it."""


def tokenize(prompts: list[str], max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (n, max_length) int64, lengths (n,)): lower-cased, clipped to max_length characters,
    unknown characters -> UNKNOWN. An empty prompt becomes one UNKNOWN (an LSTM needs a step)."""
    ids = torch.full((len(prompts), max_length), PAD, dtype=torch.long)
    lengths = torch.ones(len(prompts), dtype=torch.long)
    for i, p in enumerate(prompts):
        chars = [_INDEX.get(c, UNKNOWN) for c in p.lower()[:max_length]] or [UNKNOWN]
        ids[i, :len(chars)] = torch.tensor(chars)
        lengths[i] = len(chars)
    return ids, lengths


class TextEncoder(nn.Module):
    def __init__(self, dim: int, char_dim: int, hidden: int, layers: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.embed = nn.Embedding(VOCAB, char_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(char_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Packed: each prompt's states depend on its own characters only, never on padding or batch-mates.
        packed = pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        mask = (torch.arange(out.shape[1], device=ids.device)[None] < lengths.to(ids.device)[:, None]).float()
        pooled = (out * mask[..., None]).sum(1) / lengths.to(out)[:, None]
        return F.normalize(self.proj(pooled), dim=-1)


class ImageEncoder(nn.Module):
    """32x32 -> three conv stages (32 -> 16 -> 8 -> 4) -> a linear projection. Larger images (32 * 2^k:
    the flowers world's 64x64 RGB) first pass k strided convolutions down to 32x32 (the stem, cheap
    next to full-resolution stages); at 32x32 the stem is empty and holds no weights, so the digits
    world's checkpoints (grey 32x32, no stem) load unchanged."""

    def __init__(self, dim: int, width: int, channels: int = 1, image_size: int = 32):
        super().__init__()
        k = math.log2(image_size / 32) if image_size >= 32 else -1
        if k != int(k):
            raise ValueError(f"image_size must be 32 times a power of two, got {image_size}")
        stem, cin = [], channels
        for _ in range(int(k)):
            stem += [nn.Conv2d(cin, width, 4, stride=2, padding=1), nn.GroupNorm(8, width), nn.GELU()]
            cin = width
        self.stem = nn.Sequential(*stem)
        chans = (cin, width, 2 * width, 4 * width)
        layers = []
        for cin, cout in zip(chans, chans[1:]):
            # GroupNorm, not BatchNorm: an image's embedding never depends on its batch-mates.
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(), nn.AvgPool2d(2)]
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(4 * width * 16, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.net(self.stem(images)).flatten(1)), dim=-1)


class CharCLIP(nn.Module):
    def __init__(self, dim: int = 64, char_dim: int = 32, hidden: int = 128, layers: int = 1,
                 image_width: int = 32, max_length: int = MAX_LENGTH, channels: int = 1, image_size: int = 32):
        super().__init__()
        self.config = {"dim": dim, "char_dim": char_dim, "hidden": hidden, "layers": layers,
                       "image_width": image_width, "max_length": max_length}
        if (channels, image_size) != (1, 32):  # the digits world's configs stay as they were written
            self.config.update(channels=channels, image_size=image_size)
        self.dim = dim
        self.text = TextEncoder(dim, char_dim, hidden, layers, max_length)
        self.image = ImageEncoder(dim, image_width, channels, image_size)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids, lengths = tokenize(prompts, self.config["max_length"])
        return self.text(ids.to(self.device), lengths)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(n, channels, image_size, image_size) floats in [0, 1] -> (n, dim) unit embeddings."""
        return self.image(images)

    def logits(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(n_images, n_prompts) scaled cosine similarities."""
        return self.scale * self.encode_image(images) @ self.encode_text(prompts).T

    @property
    def scale(self) -> torch.Tensor:
        """The learnt inverse temperature, under CLIP's cap of 100."""
        return self.logit_scale.clamp(max=math.log(100)).exp()


def matched_infonce(logits: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over (n_images, n_captions) logits where `match` (captions x images, 1 where
    the caption describes the image, each pair's own included) shares each row's target mass among
    its matches, in both directions: the plain CLIP target (only the diagonal) would push a caption
    away from other images it describes just as well."""
    to_images = match / match.sum(1, keepdim=True)  # per caption, over images
    to_captions = match.T / match.T.sum(1, keepdim=True)  # per image, over captions
    return 0.5 * (torch.sum(-to_images * F.log_softmax(logits.T, 1), 1).mean()
                  + torch.sum(-to_captions * F.log_softmax(logits, 1), 1).mean())


def build_char_clip(**params) -> CharCLIP:
    try:
        return CharCLIP(**params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad CharCLIP config: {e}") from None


def save_char_clip(model: CharCLIP, path: str | os.PathLike) -> None:
    save_checkpoint(model, path)


def load_checkpoint(path: str | os.PathLike, what: str, hint: str = "") -> dict:
    """{"config", "state_dict"} from a torch checkpoint; one-line errors naming the file."""
    if not os.path.isfile(path):
        raise WeightsMissing(f"{what} weights {path} are missing" + (f": run `{hint}`" if hint else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable {what} checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a {what} checkpoint (no config and state_dict)")
    return ckpt


def load_state(model: nn.Module, state: dict, path, what: str) -> None:
    """Strict load, fp16 -> fp32; missing or unexpected keys become one line naming the file."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else "")] if unexpected else [])
        raise CheckpointError(f"{path}: {what} checkpoint does not match its config ({'; '.join(parts)})")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{path}: {what} checkpoint has wrong shapes ({', '.join(bad[:3])})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def load_model(cls, path: str | os.PathLike, what: str, device="cpu", hint: str = "") -> nn.Module:
    """A `cls(**config)` module from a {"config", "state_dict"} checkpoint (the format save_checkpoint
    writes), strictly, in eval mode without gradients; one-line errors naming the file."""
    ckpt = load_checkpoint(path, what, hint)
    try:
        model = cls(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad {what} config ({e})") from None
    load_state(model, ckpt["state_dict"], path, what)
    return model.eval().requires_grad_(False).to(device)


def load_char_clip(path: str | os.PathLike, device="cpu", hint: str = "") -> CharCLIP:
    return load_model(CharCLIP, path, "CharCLIP", device, hint)


class CharClipText(nn.Module):
    """The diffusion family's text encoder over a (frozen) CharCLIP."""

    def __init__(self, clip: CharCLIP):
        super().__init__()
        self.clip = clip
        self.dim = clip.dim

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(n, 1, dim): each prompt's unit text embedding as a one-token sequence."""
        return self.clip.encode_text(list(prompts))[:, None]

    def null(self, n: int) -> torch.Tensor:
        """(n, 1, dim) zeros: the unconditional states (no unit embedding is zero)."""
        return torch.zeros(n, 1, self.dim, device=self.clip.device)
