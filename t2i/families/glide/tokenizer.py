"""GLIDE's text tokens: the release's GPT-2 byte-level BPE (encoder.json + vocab.bpe) through transformers'
GPT2Tokenizer, lower-cased first as the release does, cut to text_ctx and padded with the end token
(50256 in the release's vocabulary) with a mask that is False on padding.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import BrokenWeights, WeightsMissing

FILES = ("encoder.json", "vocab.bpe")
END_TOKEN = "<|endoftext|>"


class GlideTokenizer:
    def __init__(self, folder: str | Path, text_ctx: int, hint: str = "python -m t2i download glide-base-64"):
        from transformers import GPT2Tokenizer

        folder = Path(folder)
        for name in FILES:
            if not (folder / name).is_file():
                raise WeightsMissing(f"missing GLIDE tokenizer file {folder / name}: run `{hint}`")
        try:
            # Paths given as `vocab`/`merges`: the release's file names are not transformers' own
            # (vocab.json, merges.txt), so from_pretrained would not find them.
            self.bpe = GPT2Tokenizer(vocab=str(folder / "encoder.json"), merges=str(folder / "vocab.bpe"))
        except Exception as e:  # a damaged JSON or merges file: one line, not a parser traceback
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise BrokenWeights(f"GLIDE tokenizer files in {folder} do not load ({first}): run `{hint}`") from None
        self.end = self.bpe.convert_tokens_to_ids(END_TOKEN)
        if not isinstance(self.end, int) or self.end < 0 or len(self.bpe) < 2:
            raise BrokenWeights(f"GLIDE tokenizer files in {folder} have no {END_TOKEN} token: run `{hint}`")
        self.text_ctx = text_ctx
        self.vocab_size = len(self.bpe)

    def encode(self, text: str) -> list[int]:
        return self.bpe(text.lower(), add_special_tokens=False)["input_ids"]

    def padded(self, text: str) -> tuple[list[int], list[bool]]:
        """(tokens, mask) of length text_ctx; the empty text is all padding (the unconditional input)."""
        tokens = self.encode(text)[:self.text_ctx] if text else []
        pad = self.text_ctx - len(tokens)
        return tokens + [self.end] * pad, [True] * len(tokens) + [False] * pad

    def batch(self, text: str, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self.padded(text)
        return (torch.tensor([tokens] * n, device=device), torch.tensor([mask] * n, device=device))
