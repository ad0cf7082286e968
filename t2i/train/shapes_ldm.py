"""Training the shapes world's latent diffusion model (`shapes-ldm`): the LDM method at small scale.

A diffusers UNet2DConditionModel (configs/models/shapes-ldm-unet.json) learns to predict the noise
added to latents of training renders, reading the captions' per-token states from the frozen shapes
CLIP through cross-attention (t2i/engine/clip_tokens.py). The latent space is the frozen shapes
VQGAN's pre-quantisation latent, scaled to about unit std (t2i/engine/vq_codec.py): 64x64 images
become 32x16x16 latents. The objective is t2i/train/denoiser.py's (epsilon MSE, captions dropped
to the zero states one time in ten, for classifier-free guidance).

The training renders are drawn once (train split: one or two shapes, held-out combinations never
appear) and encoded into an in-memory latent cache; each step picks a batch of cached latents and
one of each scene's ten captions. The weights saved are an exponential moving average of the
trained ones. Writes, under out_dir/shapes-ldm/:

- unet/: config.json + diffusion_pytorch_model.safetensors (diffusers format, fp16);
- scheduler/: the DDPMScheduler config the model was trained under (samplers take it with
  `DDIMScheduler.from_config`);
- codec.json: the latent scale (and the VQGAN it belongs to).

Note on the config: diffusers' UNet2DConditionModel reads `attention_head_dim` as the number of
heads (a documented naming slip kept for compatibility); [2, 4] means 32-wide heads at 64 and 128
channels. The default, 8, would give 8-wide heads, which on the CPU cost twice the time.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import shapes
from ..engine.clip_tokens import ClipTokenStates, load_clip_tokens
from ..engine.vq_codec import VQLatentCodec, load_vq_codec, principal_basis
from ..paths import MODEL_CONFIG_DIR, builtin_dir
from .denoiser import denoiser_loss
from .ema import Ema
from .schedule import optimise
from .threads import THREADS, torch_threads

ARCH = MODEL_CONFIG_DIR / "shapes-ldm-unet.json"
NAME = "shapes-ldm"
# Measured on the 2-core machine, one thread, ShapesBench-style at DDIM 50 (BENCHMARKS.md has the
# table): batch 32 for 1200 steps (about 8 minutes) at a peak learning rate of 2e-3 (1e-3: colour
# 72%, shape 82% at the same budget), with an EMA of the weights. The noise schedule
# mattered most: with the cosine schedule ("squaredcos_cap_v2") or the linear 1e-4..0.02 one, colour
# stayed at 40-60% and shape at 50-68%; LDM's own scaled-linear 0.00085..0.012 (the schedule of the
# LAION latent diffusion models) reached colour 91%, shape 86% at guidance 5. Latents of unit std
# keep much of the image at the cosine schedule's small noise levels, so the model learned little
# about layout; the scaled-linear schedule spends more of training at high noise. 3000 steps rather
# than 1200 (issue 29): the squares and triangles drawn with rounded corners (shape 89% at both
# seeds) became 95% and 99%, colour 96 -> 100% (about 21 minutes on a quiet core).
STEPS, BATCH, LR = 3000, 32, 2e-3
SCENES = 2048  # renders in the latent cache
# The share of training scenes with one shape (the rest draw one or two). At half, colour reached
# 64% and shape 71% on ShapesBench (its captions describe one shape), 72% and 82% at three quarters
# (both at a learning rate of 1e-3).
SINGLE = 0.75
EMA_DECAY = 0.995
BETA_SCHEDULE, BETA_START, BETA_END = "scaled_linear", 0.00085, 0.012
TRAIN_TIMESTEPS = 1000


def scheduler_config() -> dict:
    """The DDPM schedule of training. clip_sample off: the latents have unit std, not a [-1, 1] range."""
    return dict(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE, beta_start=BETA_START,
                beta_end=BETA_END, prediction_type="epsilon", clip_sample=False)


def build_unet(config: dict | Path = ARCH, seed: int = 0):
    from diffusers import UNet2DConditionModel

    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    torch.manual_seed(seed)
    return UNet2DConditionModel.from_config(config)


def load_frozen(base: Path | None = None, device="cpu") -> tuple[ClipTokenStates, VQLatentCodec]:
    """The committed shapes CLIP (token states) and VQGAN (codec, scale 1 until measured)."""
    base = (base or builtin_dir()) / "shapes"
    hint = "python -m t2i train-demo"
    text = load_clip_tokens("shapes-clip", str(base / "shapes-clip.pt"), device=device, download_hint=hint)
    codec = load_vq_codec(base / "shapes-vqgan.yaml", base / "shapes-vqgan.ckpt", 1.0, download_hint=hint)
    return text, codec.to(device)


def render_scenes(rng: random.Random, n: int, single: float = SINGLE) -> tuple[torch.Tensor, list[list[str]]]:
    """n training scenes: images (n, 3, 64, 64) in [0, 1] and every caption of each. single: the
    fraction with one shape (sample_scene alone draws one or two shapes at even odds)."""
    extra = max(0.0, 2 * single - 1)  # the share forced to one shape; the rest draw one or two evenly
    scenes = [shapes.sample_scene(rng, "train", max_shapes=1 if rng.random() < extra else 2) for _ in range(n)]
    images = np.stack([np.asarray(shapes.render(s)) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255), [shapes.captions(s) for s in scenes]


@torch.no_grad()
def latent_cache(codec: VQLatentCodec, text: ClipTokenStates, images: torch.Tensor, captions: list[list[str]],
                 batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Code-space latents (n, C, h, w) of the images and token ids (n, k, L) of their k captions."""
    latents = torch.cat([codec.encode_code_space(images[i:i + batch]) for i in range(0, len(images), batch)])
    k = len(captions[0])
    tokens = text.tokens([c for scene in captions for c in scene]).view(len(captions), k, -1)
    return latents, tokens


def train(unet, scheduler, text: ClipTokenStates, latents: torch.Tensor, tokens: torch.Tensor, steps: int,
          batch: int = BATCH, lr: float = LR, seed: int = 0, ema_decay: float = EMA_DECAY,
          progress: bool = True) -> tuple[torch.nn.Module, list[float]]:
    """latents: scaled (n, C, h, w); tokens: (n, k, L) caption ids. Returns the EMA model (the trained
    one when ema_decay is 0) and every step's loss."""
    gen = torch.Generator().manual_seed(seed)
    ema = Ema(unet, ema_decay) if ema_decay > 0 else None
    unet.train().requires_grad_(True)
    null = text.null(batch)

    def step_loss():
        idx = torch.randint(len(latents), (batch,), generator=gen)
        which = torch.randint(tokens.shape[1], (batch,), generator=gen)
        cond = text.encode_tokens(tokens[idx, which])
        return denoiser_loss(unet, scheduler, latents[idx], cond, null, gen)

    losses = optimise(unet.parameters(), step_loss, steps, lr, 0.01, "training the shapes LDM", progress,
                      after_step=None if ema is None else lambda: ema.update(unet))
    unet.eval().requires_grad_(False)
    return (ema.net if ema is not None else unet), losses


def fit_codec(vq, h: torch.Tensor, channels: int) -> tuple[VQLatentCodec, dict]:
    """The diffusion latent for a UNet with `channels` inputs: the leading principal axes of the
    code-space latents h (all of them, as they are, when channels is the full width), scaled to unit
    std. Returns the codec and its codec.json contents."""
    basis, mean, axis_std = principal_basis(h, channels)
    if channels == h.shape[1]:
        basis = mean = None
    codec = VQLatentCodec(vq, 1.0, basis, mean)
    # Rounded so the stored figure is the one used, whatever the float formatting.
    codec.scale = round(1.0 / float(codec.project(h).std()), 4)
    meta = {"scale": codec.scale, "axis_std": [round(float(s), 4) for s in axis_std],
            "basis": None if basis is None else basis.tolist(), "mean": None if mean is None else mean.tolist()}
    return codec, meta


def save(dest: Path, unet, scheduler, codec_meta: dict, on_written: Callable[[], None] | None = None) -> None:
    """Write unet/, scheduler/ and codec.json under dest. Everything is written into a temporary
    folder first and moved into place file by file only at the end, so an interruption while writing
    leaves the old files as they were and no temporary files behind. on_written: called once all is
    written, before anything is moved (tests interrupt there)."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".tmp-{os.getpid()}"
    try:
        copy.deepcopy(unet).half().save_pretrained(tmp / "unet")  # fp16 on disk; the caller's model stays
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / "codec.json").write_text(json.dumps(codec_meta, indent=1) + "\n")
        if on_written is not None:
            on_written()
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = dest / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.chmod(0o644)  # safetensors writes owner-only files; these are committed
            os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train_shapes_ldm(out_dir: Path, seed: int = 0, steps: int | None = None, progress: bool = True,
                     scenes: int = SCENES, batch: int = BATCH, unet_config: dict | Path = ARCH,
                     on_written: Callable[[], None] | None = None, threads: int = THREADS) -> dict:
    """Train on the committed shapes CLIP and VQGAN (under builtin_dir()) and write out_dir/shapes-ldm/.
    Returns figures: first/last loss (mean of the first/last 50 steps), the latent scale, seconds.
    threads: torch's intra-op threads while training (see t2i/train/threads.py)."""
    with torch_threads(threads):
        return _train_shapes_ldm(Path(out_dir), seed, steps, progress, scenes, batch, unet_config, on_written)


def _train_shapes_ldm(out_dir, seed, steps, progress, scenes, batch, unet_config, on_written) -> dict:
    from diffusers import DDPMScheduler

    start = time.perf_counter()
    steps = STEPS if steps is None else steps
    text, codec = load_frozen()
    rng = random.Random(seed)
    images, captions = render_scenes(rng, scenes)
    h, tokens = latent_cache(codec, text, images, captions)
    unet = build_unet(unet_config, seed)
    codec, meta = fit_codec(codec.model, h, unet.config.in_channels)
    scheduler = DDPMScheduler(**scheduler_config())
    latents = codec.project(h) * codec.scale
    model, losses = train(unet, scheduler, text, latents, tokens, steps, batch=batch, seed=seed, progress=progress)
    meta |= {"vqgan": "shapes/shapes-vqgan.ckpt", "clip": "shapes/shapes-clip.pt", "clip_model": "shapes-clip"}
    save(Path(out_dir) / NAME, model, scheduler, meta, on_written=on_written)
    k = max(1, min(50, len(losses) // 4))
    return {"loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
            "scale": meta["scale"], "axis_std": meta["axis_std"], "steps": steps,
            "seconds": time.perf_counter() - start, "losses": losses}


