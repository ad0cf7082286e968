"""`train-demo`'s work per offline world: train its models, write them where the built-in presets read
them (t2i.paths.builtin_dir(): checkpoints/ in the repository, or $T2I_BUILTIN), prove they load
through the real loaders, and print what was made. The CLI (t2i/cli/train.py) only parses flags.

A steps argument of None means the trainer's own default."""

from __future__ import annotations

import os

from ..families import build_pipeline
from ..paths import builtin_dir
from ..presets import get_preset
from ..spec import SpecError


def train_shapes(seed: int = 0, clip_steps: int | None = None, sketch_steps: int | None = None,
                 vqgan_steps: int | None = None, refine_steps: int | None = None, progress: bool = True) -> None:
    """The shapes world's CLIP, sketch net and VQGAN (the `shapes` preset's models)."""
    from ..assets.fp16 import fp16_state_dict
    from ..engine.sketch import save_sketch
    from . import clip as clip_training
    from . import sketch as sketch_training
    from . import vqgan as vqgan_training

    out = builtin_dir() / "shapes"
    out.mkdir(parents=True, exist_ok=True)
    clip, clip_losses = clip_training.train(steps=clip_steps or clip_training.STEPS, seed=seed, progress=progress)
    attrs = clip_training.attribute_accuracy(clip)
    print(f"shapes CLIP: loss {clip_losses[0]:.3f} -> {clip_losses[-1]:.3f}, held-out retrieval "
          f"{clip_training.retrieval_accuracy(clip):.0%}, attributes "
          + ", ".join(f"{k} {v:.0%}" for k, v in attrs.items()))
    # The sketch net learns from the CLIP as the preset serves it (fp16 on disk, fp32 in use), not from
    # the unrounded one in memory: the embeddings it reads at run time are the ones it was trained on.
    clip.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in fp16_state_dict(clip).items()})
    sketch, sketch_losses = sketch_training.train(clip, clip_training.tokenizer(),
                                                  steps=sketch_steps or sketch_training.STEPS, seed=seed,
                                                  progress=progress)
    # Its second and third phases (the third on canonical targets) each start from the net as it would
    # be served (fp16-rounded), as the CLIP above.
    refine_losses = []
    for canonical in (False, True):
        sketch.load_state_dict({k: v.float() for k, v in fp16_state_dict(sketch).items()})
        refine_losses += sketch_training.refine(sketch, clip, clip_training.tokenizer(),
                                                steps=refine_steps or sketch_training.REFINE_STEPS, seed=seed,
                                                progress=progress, canonical=canonical)
    sketch_acc = sketch_training.heldout_accuracy(sketch, clip)
    print(f"shapes sketch net: loss {sketch_losses[0]:.3f} -> {sketch_losses[-1]:.3f}, refined "
          f"{refine_losses[0]:.3f} -> {refine_losses[-1]:.3f}; its own held-out images judged by the checker: "
          + ", ".join(f"{k} {v:.0%}" for k, v in sketch_acc.items()))
    vq, vq_losses = vqgan_training.train(steps=vqgan_steps or vqgan_training.STEPS, seed=seed, progress=progress)
    print(f"shapes VQGAN: reconstruction L1 {vq_losses[0]:.3f} -> {vqgan_training.reconstruction_l1(vq):.3f}")
    # Written last, each through a temporary name: an interrupted run leaves the old files intact.
    tmp_clip, tmp_ckpt, tmp_sketch = (out / ".shapes-clip.pt.tmp", out / ".shapes-vqgan.ckpt.tmp",
                                      out / ".shapes-sketch.pt.tmp")
    try:
        clip_training.save(clip, tmp_clip)
        save_sketch(sketch, tmp_sketch)
        vqgan_training.save(vq, out / "shapes-vqgan.yaml", tmp_ckpt)
    except BaseException:
        # checkpoints/shapes/ is tracked: a stray temporary file would dirty the checkout.
        for tmp in (tmp_clip, tmp_ckpt, tmp_sketch):
            tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp_clip, out / "shapes-clip.pt")
    os.replace(tmp_sketch, out / "shapes-sketch.pt")
    os.replace(tmp_ckpt, out / "shapes-vqgan.ckpt")
    build_pipeline(get_preset("shapes"))  # proves the files load through the real loaders
    print(f"wrote {out}/shapes-clip.pt, shapes-sketch.pt, shapes-vqgan.yaml, shapes-vqgan.ckpt (loaded back: ok)")


def train_shapes_ldm(seed: int = 0, unet_steps: int | None = None, progress: bool = True) -> None:
    """Latent diffusion over the committed shapes VQGAN, conditioned on the shapes CLIP's token states."""
    from .shapes_ldm import train_shapes_ldm as train

    figures = train(builtin_dir(), seed=seed, steps=unet_steps, progress=progress)
    build_pipeline(get_preset("shapes-ldm"))  # proves the files load through the real loaders
    print(f"shapes LDM: loss {figures['loss_first']:.3f} -> {figures['loss_last']:.3f}, latent scale "
          f"{figures['scale']}, {figures['seconds'] / 60:.1f} min; wrote {builtin_dir() / 'shapes-ldm'} (loaded back: ok)")


def train_digits(seed: int = 0, clip_steps: int | None = None, unet_steps: int | None = None,
                 classifier_steps: int | None = None, mnist: str | None = None, progress: bool = True) -> None:
    """The digits world: char-level CLIP, the bench's classifier, the pixel DDPM (or on real MNIST
    IDX files in the folder `mnist`)."""
    from .digits import train_digits as train

    data = None
    if mnist:
        from ..data.idx import load_mnist, mnist_sampler

        data = mnist_sampler(*load_mnist(mnist, "train"))
    out = builtin_dir() / "digits"
    f = train(out, seed=seed, clip_steps=clip_steps, unet_steps=unet_steps, classifier_steps=classifier_steps,
              progress=progress, data=data)
    build_pipeline(get_preset("digits"))  # proves the files load through the real loaders
    print(f"digits CLIP: loss {f['clip_loss_first']:.3f} -> {f['clip_loss_last']:.3f}, zero-shot digit "
          f"{f['clip_zero_shot']:.0%}; classifier: held-out {f['classifier_held_out']:.2%}; DDPM: loss "
          f"{f['unet_loss_first']:.3f} -> {f['unet_loss_last']:.3f}; {f['seconds'] / 60:.1f} min")
    print(f"wrote {out}/digits-clip.pt, digits-classifier.pt, unet/, scheduler/ (loaded back: ok)")


def train_flowers(seed: int = 0, text_steps: int | None = None, gan_steps: int | None = None,
                  srcnn_steps: int | None = None, classifier_steps: int | None = None, progress: bool = True) -> None:
    """The flowers world: caption encoder, GAN-INT-CLS, SRCNN x2/x3/x4, FlowersBench's classifier."""
    from ..upscale import build as build_upscaler
    from .flowers import STEPS_PER_EPOCH, train_flowers as train

    if gan_steps and gan_steps % STEPS_PER_EPOCH:
        raise SpecError("--gan-steps", f"a multiple of {STEPS_PER_EPOCH} (whole epochs), got {gan_steps}")
    out = builtin_dir() / "flowers"
    f = train(out, seed=seed, text_steps=text_steps, gan_steps=gan_steps, srcnn_steps=srcnn_steps,
              classifier_steps=classifier_steps, progress=progress)
    build_pipeline(get_preset("flowers-gan"))  # proves the files load through the real loaders
    for scale in (2, 3, 4):
        build_upscaler(f"flowers-srcnn-x{scale}")
    c = f["classifier"]
    print(f"flowers caption encoder: loss {f['text_loss_first']:.3f} -> {f['text_loss_last']:.3f}, held-out "
          f"caption->image {f['text_retrieval']:.0%}; GAN: last D {f['gan_d_last']:.3f}, G {f['gan_g_last']:.3f}; "
          f"classifier: colour {c['colour']:.0%}, centre {c['centre']:.0%}, petals {c['petals']:.0%}; "
          f"{f['seconds'] / 60:.1f} min")
    print(f"wrote {out}/flowers-text.pt, generator.pt, srcnn_x2/x3/x4.pth, flowers-classifier.pt (loaded back: ok)")
