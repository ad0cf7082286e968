"""`python -m t2i train-demo`: remake the built-in offline worlds' models (t2i/train/demo.py)."""

from __future__ import annotations

from ..spec import SpecError
from .common import require_positive

WORLDS = ("shapes", "shapes-ldm", "digits", "flowers")


def add_train_demo(sub) -> None:
    t = sub.add_parser("train-demo", help="train the built-in offline worlds' models (CPU; shapes about 22 minutes, "
                                          "shapes-ldm about 21, digits about 7, flowers about 51)")
    t.add_argument("--world", choices=[*WORLDS, "all"], default="all",
                   help="shapes: CLIP, sketch net, VQGAN; shapes-ldm: latent diffusion on those; digits: "
                        "char-level CLIP, classifier, pixel DDPM; flowers: caption encoder, GAN-INT-CLS, SRCNN, "
                        "classifier (default: all, in that order)")
    t.add_argument("--clip-steps", type=int, help="default: the trainer's (shapes or digits CLIP)")
    t.add_argument("--vqgan-steps", type=int, help="default: t2i.train.vqgan.STEPS")
    t.add_argument("--sketch-steps", type=int, help="default: t2i.train.sketch.STEPS")
    t.add_argument("--refine-steps", type=int, help="shapes: the sketch net's second and third phases (each); "
                                                    "default: t2i.train.sketch.REFINE_STEPS")
    t.add_argument("--unet-steps", type=int, help="diffusion UNets (shapes-ldm, digits); default: the trainer's")
    t.add_argument("--classifier-steps", type=int, help="the digits or flowers classifier; default: the trainer's")
    t.add_argument("--gan-steps", type=int, help="flowers: GAN-INT-CLS steps (a multiple of 50); default: the trainer's")
    t.add_argument("--srcnn-steps", type=int, help="flowers: SRCNN steps per factor; default: the trainer's")
    t.add_argument("--mnist", help="digits: train on real MNIST IDX files in this folder "
                                   "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz])")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train_demo)


def cmd_train_demo(args) -> int:
    from ..train import demo

    require_positive(args, "clip_steps", "vqgan_steps", "sketch_steps", "refine_steps", "unet_steps", "classifier_steps",
                     "gan_steps", "srcnn_steps")
    worlds = WORLDS if args.world == "all" else (args.world,)
    if args.mnist and "digits" not in worlds:
        raise SpecError("--mnist", "trains the digits world: add --world digits")
    progress = not args.quiet
    for world in worlds:
        if world == "shapes":
            demo.train_shapes(seed=args.seed, clip_steps=args.clip_steps, sketch_steps=args.sketch_steps,
                              vqgan_steps=args.vqgan_steps, refine_steps=args.refine_steps, progress=progress)
        elif world == "shapes-ldm":
            demo.train_shapes_ldm(seed=args.seed, unet_steps=args.unet_steps, progress=progress)
        elif world == "digits":
            demo.train_digits(seed=args.seed, clip_steps=args.clip_steps, unet_steps=args.unet_steps,
                              classifier_steps=args.classifier_steps, mnist=args.mnist, progress=progress)
        else:
            demo.train_flowers(seed=args.seed, text_steps=args.clip_steps, gan_steps=args.gan_steps,
                               srcnn_steps=args.srcnn_steps, classifier_steps=args.classifier_steps,
                               progress=progress)
    return 0
