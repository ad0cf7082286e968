"""Training the digits world's model set: CharCLIP, the judge (digit classifier) and the pixel DDPM.

The DDPM is a diffusers UNet2DConditionModel from configs/models/digits-unet.json, trained with the
shared epsilon objective (t2i/train/denoiser.py, with its condition dropout for classifier-free
guidance) on images in [-1, 1], conditioned on the frozen CharCLIP's text embedding of each caption
(`CharClipText.encode`: one token). The config feeds that token to the UNet in two ways: pooled into
the timestep embedding (`addition_embed_type: "text"`, so every ResNet block is modulated by the
prompt through its scale-shift norm) and through the cross-attention of the 4x4 middle block.
Cross-attention at the larger scales cost 2-3x the training time on the CPU for one token that
carries no spatial information. The UNet has four levels (16, 32, 64, 128 channels at 32, 16, 8, 4
pixels): at the same cost per step, three levels of (32, 64, 64) or (16, 32, 64) drew far less
legible digits, and the time budget (the whole world in about ten minutes on 2 cores) is spent on
steps rather than on width at 32x32.

Everything is written to a staging folder inside `out_dir` first and moved into place with
os.replace at the end, so an interrupted run (KeyboardInterrupt) leaves the old files as they were
and no temporary file behind. Every random draw comes from generators seeded by `seed`: two runs
on one machine (same thread count) write byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import digits
from ..engine.charclip import CharClipText, save_char_clip
from ..paths import MODEL_CONFIG_DIR
from .charclip import STEPS as CLIP_STEPS, retrieval_accuracy, train_char_clip
from .denoiser import denoiser_loss
from .digit_classifier import STEPS as CLASSIFIER_STEPS, held_out_accuracy, save_classifier, train_classifier
from .schedule import optimise
from .threads import THREADS, torch_threads

UNET_CONFIG = MODEL_CONFIG_DIR / "digits-unet.json"
# Measured on the 2-core machine (bench figures: DDIM 50 steps, guidance 3): at this compute, batch
# 32 beat 64, a peak learning rate of 1e-3 beat 2e-3 and 4e-3, the cosine schedule beat the linear
# one (greyer backgrounds), and an EMA of the weights (0.99-0.999) was no better than the annealed
# one-cycle weights, so there is none.
UNET_STEPS = 900
UNET_BATCH = 32
UNET_LR = 1e-3
CLIP_FILE = "digits-clip.pt"
CLASSIFIER_FILE = "digits-classifier.pt"


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")


def build_unet(config_path: Path = UNET_CONFIG, seed: int = 0):
    from diffusers import UNet2DConditionModel

    config = json.loads(Path(config_path).read_text())
    torch.manual_seed(seed)  # the initial weights
    return UNet2DConditionModel.from_config(config)


def train_unet(text: CharClipText, steps: int = UNET_STEPS, seed: int = 0, data: digits.Sampler | None = None,
               batch: int = UNET_BATCH, lr: float = UNET_LR, progress: bool = True):
    """(UNet, scheduler, losses): the DDPM on batches from `data`, conditioned on `text`."""
    data = data or digits.sampler("train")
    rng = np.random.default_rng([seed, 3])
    gen = torch.Generator().manual_seed(seed * 1000 + 3)
    unet = build_unet(seed=seed * 1000 + 3)
    scheduler = make_scheduler()

    def step_loss():
        images, _, captions = data(batch, rng)
        x0 = torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1)[:, None]
        return denoiser_loss(unet, scheduler, x0, text.encode(captions), text.null(batch), gen)

    losses = optimise(unet.parameters(), step_loss, steps, lr, 0.0, "digits DDPM", progress, clip_norm=1.0)
    return unet.eval().requires_grad_(False), scheduler, losses


def _stage_then_commit(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Run write(stage) into a fresh folder inside out_dir, then move every file it made to the same
    relative path in out_dir. An interruption while writing leaves out_dir as it was; one during the
    moves is held back until they are done (a handful of renames), then raised."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".digits-staging-", dir=out_dir))
    try:
        write(stage)
        moves = [(p, out_dir / p.relative_to(stage)) for p in sorted(stage.rglob("*")) if p.is_file()]
        interrupted = None
        while moves:
            try:
                while moves:
                    src, dst = moves[0]
                    if src.exists():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
                    moves.pop(0)
            except KeyboardInterrupt as e:
                interrupted = e
        if interrupted is not None:
            raise interrupted
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def train_digits(out_dir: Path, seed: int = 0, clip_steps: int | None = None, unet_steps: int | None = None,
                 classifier_steps: int | None = None, progress: bool = True, data: digits.Sampler | None = None,
                 on_saved: Callable[[str], None] | None = None, eval_n: int = 2000, threads: int = THREADS) -> dict:
    """Train the three models and write digits-clip.pt, digits-classifier.pt, unet/ and scheduler/
    (diffusers format, fp16) into out_dir. `data`: a sampler like digits.sampler() (the default) or
    idx.mnist_sampler(...). `on_saved(name)` is called after each artefact is staged (progress
    reporting; a test interrupts there). eval_n: held-out renders for the figures. threads: torch's
    intra-op threads while training (see t2i/train/threads.py). Returns the figures to print."""
    with torch_threads(threads):
        return _train_digits(Path(out_dir), seed, clip_steps, unet_steps, classifier_steps, progress, data,
                             on_saved, eval_n)


def _train_digits(out_dir, seed, clip_steps, unet_steps, classifier_steps, progress, data, on_saved, eval_n):
    t0 = time.perf_counter()
    clip, clip_losses = train_char_clip(CLIP_STEPS if clip_steps is None else clip_steps, seed, data,
                                        progress=progress)
    t_clip = time.perf_counter()
    classifier, cls_losses = train_classifier(CLASSIFIER_STEPS if classifier_steps is None else classifier_steps,
                                              seed, data, progress=progress)
    t_cls = time.perf_counter()
    text = CharClipText(clip)
    unet, scheduler, unet_losses = train_unet(text, UNET_STEPS if unet_steps is None else unet_steps, seed, data,
                                              progress=progress)
    t_unet = time.perf_counter()

    def write(stage: Path) -> None:
        notify = on_saved or (lambda name: None)
        save_char_clip(clip, stage / CLIP_FILE)
        notify(CLIP_FILE)
        save_classifier(classifier, stage / CLASSIFIER_FILE)
        notify(CLASSIFIER_FILE)
        unet.half().save_pretrained(stage / "unet")  # config.json + diffusion_pytorch_model.safetensors
        unet.float()
        notify("unet")
        scheduler.save_pretrained(stage / "scheduler")
        notify("scheduler")

    _stage_then_commit(out_dir, write)

    def ends(losses, k=20):
        return (float(np.mean(losses[:k])) if losses else float("nan"),
                float(np.mean(losses[-k:])) if losses else float("nan"))

    clip_eval = retrieval_accuracy(clip, n=eval_n)
    return {
        "clip_loss_first": ends(clip_losses)[0], "clip_loss_last": ends(clip_losses)[1],
        "clip_zero_shot": clip_eval["zero_shot"], "clip_caption_to_image": clip_eval["caption_to_image"],
        "classifier_loss_first": ends(cls_losses)[0], "classifier_loss_last": ends(cls_losses)[1],
        "classifier_held_out": held_out_accuracy(classifier, n=eval_n),
        "unet_loss_first": ends(unet_losses)[0], "unet_loss_last": ends(unet_losses)[1],
        "seconds_clip": t_clip - t0, "seconds_classifier": t_cls - t_clip, "seconds_unet": t_unet - t_cls,
        "seconds": time.perf_counter() - t0,
    }
