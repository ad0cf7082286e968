"""Per-token text states of an open_clip model: what a latent diffusion UNet's cross-attention reads.

`Perceptor.encode_text` pools a caption to one vector (the end-of-text token, projected); LDM's
cross-attention instead reads every token's state after the text transformer's final LayerNorm.
`ClipTokenStates` reproduces open_clip's `encode_text` up to `ln_final` (token embedding, positional
embedding, the causal transformer under the model's own attention mask, ln_final) and stops there.
The unconditional states are zeros, the condition that training drops captions to.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .perceptor import load_perceptor


def _text_tower(model: nn.Module) -> nn.Module:
    """The module holding token_embedding / positional_embedding / transformer / ln_final: the CLIP
    itself (open_clip's CLIP class) or its `.text` (CustomTextCLIP with open_clip's TextTransformer)."""
    for tower in (model, getattr(model, "text", None)):
        if tower is not None and all(hasattr(tower, a) for a in ("token_embedding", "positional_embedding",
                                                                    "transformer", "ln_final")):
            if getattr(tower, "cls_emb", None) is not None:
                raise ValueError(f"{type(model).__name__}: text towers with a class token are not supported")
            return tower
    raise ValueError(f"{type(model).__name__} has no open_clip text transformer (token_embedding ... ln_final)")


class ClipTokenStates(nn.Module):
    """Frozen open_clip text tower -> (n, L, W) token states after ln_final."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.tower = _text_tower(model)
        self.length = int(self.tower.positional_embedding.shape[0])
        self.dim = int(self.tower.ln_final.weight.shape[0])

    @property
    def device(self) -> torch.device:
        return self.tower.positional_embedding.device

    def tokens(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts)).to(self.device)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, L) token ids -> (n, L, W) float states (the steps of open_clip's encode_text to ln_final)."""
        t = self.tower
        transformer = t.transformer
        cast_dtype = transformer.get_cast_dtype()
        x = t.token_embedding(tokens).to(cast_dtype) + t.positional_embedding.to(cast_dtype)
        # open_clip >= 2.24 transposes inside Transformer.forward according to its batch_first flag;
        # older releases had no flag and expected (L, n, W) from the caller.
        sequence_first = not hasattr(transformer, "batch_first")
        if sequence_first:
            x = x.permute(1, 0, 2)
        x = transformer(x, attn_mask=getattr(t, "attn_mask", None))
        if sequence_first:
            x = x.permute(1, 0, 2)
        return t.ln_final(x).float()

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokens(prompts))

    def null(self, n: int) -> torch.Tensor:
        """The unconditional states: zeros, what training drops a caption to."""
        return torch.zeros(n, self.length, self.dim, device=self.device)

    @torch.no_grad()
    def pooled(self, tokens: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """open_clip's encode_text (unnormalised) from states: the end-of-text token's state (the
        highest token id), projected. Ties the states to the embedding the CLIP was trained on."""
        from open_clip.transformer import text_global_pool

        pool_type = getattr(self.tower, "text_pool_type", getattr(self.tower, "pool_type", "argmax"))
        x = text_global_pool(states, tokens, pool_type, eos_token_id=getattr(self.tower, "text_eos_id", None))
        x = x[0] if isinstance(x, tuple) else x
        proj = self.tower.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def load_clip_tokens(model_name: str, pretrained: str | None, device="cpu", cache_dir: Path | None = None,
                     download_hint: str = "") -> ClipTokenStates:
    """Through the perceptor loader (one place that finds CLIP weights; a missing file is the same
    WeightsMissing). pretrained=None: random weights (untrained presets)."""
    from ..paths import MODEL_CONFIG_DIR, clip_cache_dir
    from .perceptor import register_model_configs

    register_model_configs(MODEL_CONFIG_DIR)
    perceptor = load_perceptor(model_name, pretrained, cache_dir or clip_cache_dir(), device=device,
                               download_hint=download_hint)
    return ClipTokenStates(perceptor.model, perceptor.tokenizer).to(device)
