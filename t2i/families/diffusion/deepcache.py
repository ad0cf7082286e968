"""Step caching for a diffusers UNet2DConditionModel, row by row (DeepCache, Ma, Fang and Wang, CVPR 2024).

DeepCache's observation: between neighbouring denoising steps the UNet's deep features (what the
lower levels hand up to the shallowest up block) barely change, while the shallow branch (the first
down block's skip connections into the last up block) carries what does. So a *full* step runs the
whole UNet and keeps the input of the last up block (the output of the one before it, already at full
resolution); each *cached* step after it runs only the shallow branch: the timestep embedding,
`conv_in`, the first down block without its downsampler, the last up block fed the kept features and
the fresh skips, and the output head. With interval N a job takes one full step, then N - 1 cached
ones, and so on; N of 0 or 1 is the plain UNet.

Where it lives: the cache is a job's own state (`DiffusionJob.deep`, `since_full`), not the model's.
In continuous batching each row sits at its own timestep and jobs join and leave between steps, so
each job keeps its own refresh counter: a batch step makes one UNet call for the rows due for a full
step and one shallow call for the rest. The alternative, admitting a job only at the batch's refresh
steps so that every row is full or cached together (one call per step), gives each job exactly the
same steps (its full steps are its own steps 0, N, 2N... either way), so the pictures are the same;
what it would save is the second call, and what it costs is a free slot left idle for up to N - 1
steps and an executor that must time its claims. The measurement (BENCHMARKS.md, "Step caching")
found the second call cheap, so the counters are per job, which also keeps a job's image independent
of when its batch-mates came (tests/test_families.py's batch identity).

Why not the `DeepCache` package: it wraps a diffusers pipeline object and keeps one cache and one step
counter for the whole batch, so a row joining mid-way would be given another row's features.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

# Configurations the shallow path reproduces (it re-implements the head of the UNet's forward: the time
# embedding, conv_in, and the output head); a UNet with class labels, image or time added embeddings or
# a time-conditioning projection is refused by name rather than run wrong. The pooled-text added
# embedding ("text": the digits UNet's) needs only the text states, which every call has.
_UNSUPPORTED = ("class_embed_type", "time_cond_proj_dim", "encoder_hid_dim_type")
_ADDED = (None, "text")


def unsupported(unet) -> str | None:
    """Why this UNet cannot be cached (None: it can)."""
    config = unet.config
    for key in _UNSUPPORTED:
        if config.get(key) is not None:
            return f"a UNet with {key} {config.get(key)!r}"
    if config.get("addition_embed_type") not in _ADDED:
        return f"a UNet with addition_embed_type {config.get('addition_embed_type')!r}"
    if len(unet.up_blocks) < 2:
        return "a UNet of one level"
    return None


def full(unet, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain UNet call (exactly: the same forward), and the deep features it fed the last up block."""
    kept: list[torch.Tensor] = []
    hook = unet.up_blocks[-2].register_forward_hook(lambda _module, _args, out: kept.append(out))
    try:
        out = unet(x, t, encoder_hidden_states=states).sample
    finally:
        hook.remove()
    return out, kept[0]


def shallow(unet, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """The UNet's output for rows whose deep features are `deep` (kept from their last full step): only the
    shallowest level runs. Follows UNet2DConditionModel.forward (diffusers 0.42) for the configurations
    `unsupported` lets through."""
    if unet.config.center_input_sample:
        x = 2 * x - 1.0
    emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
    added = unet.get_aug_embed(emb=emb, encoder_hidden_states=states, added_cond_kwargs={})
    if added is not None:
        emb = emb + added
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    states = unet.process_encoder_hidden_states(encoder_hidden_states=states, added_cond_kwargs=None)
    h = unet.conv_in(x)
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    cross = dict(encoder_hidden_states=states) if getattr(first, "has_cross_attention", False) else {}
    with _no_downsampler(first):  # its downsampled output feeds only the deep levels
        _, skips = first(hidden_states=h, temb=emb, **cross)
    skips = (h, *skips)
    assert len(skips) == len(last.resnets), "the last up block takes conv_in's and the first block's outputs"
    cross = dict(encoder_hidden_states=states) if getattr(last, "has_cross_attention", False) else {}
    out = last(hidden_states=deep.to(h.dtype), temb=emb, res_hidden_states_tuple=skips, upsample_size=None, **cross)
    if unet.conv_norm_out is not None:
        out = unet.conv_act(unet.conv_norm_out(out))
    return unet.conv_out(out)


@contextmanager
def _no_downsampler(block):
    """Run a down block without its downsampler: diffusers' blocks skip it when it is None. Set and
    restored here rather than re-writing each block type's loop of resnets and attentions."""
    saved, block.downsamplers = block.downsamplers, None
    try:
        yield
    finally:
        block.downsamplers = saved


def is_full(interval: int, deep, since_full: int) -> bool:
    """Whether a job's next step runs the whole UNet: always without caching, when nothing is kept yet,
    and every `interval`-th step after its last full one."""
    return interval <= 1 or deep is None or since_full >= interval
